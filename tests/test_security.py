"""Security: where the proxy listens, its own access token, and keys that never reach a file or a log.

The property test drives the real `rtproxy proxy` command (one process for
every example) with generated keys in every place the protocol carries one,
then searches the database, its WAL, the proxy's stdout and stderr, exports,
`sessions --json`, `show --json` and a replay report for every 8-character
window of each key (a key split by a partial mask leaks as surely as a whole
one). A second property puts the key in the upstream URL's userinfo.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtproxy.protocols.secrets import mask
from tests.conftest import ProxyProcess, RunningProxy, spawn_proxy, start_proxy
from tests.test_faults import db_rows, serving
from tests.upstream import ScriptedUpstream

WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) with a listening socket on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, _, hexport = fields[1].partition(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(addr)
    return found


def everything_on_disk(*paths: Path) -> bytes:
    """The bytes of every file under the given files' directories that belong to them (db, -wal, -shm)."""
    return b"".join(p.read_bytes() for path in paths for p in path.parent.glob(path.name + "*") if p.is_file())


# --- where it listens --------------------------------------------------------------------------


async def test_the_proxy_listens_on_loopback_only_by_default(tmp_path: Path, proxy_process: list[ProxyProcess]) -> None:
    """Without --host the proxy binds 127.0.0.1 alone and prints no exposure warning."""
    p = spawn_proxy(["--db", str(tmp_path / "rt.db"), "--upstream", "http://127.0.0.1:9"])
    proxy_process.append(p)
    assert listening_addresses(p.port) == {"0100007F"}  # 127.0.0.1
    await serving(p)
    code, out, err = p.stop()
    assert code == 0 and f"listening on ws://127.0.0.1:{p.port}" in out and "WARNING" not in err


async def test_binding_all_interfaces_warns(tmp_path: Path, proxy_process: list[ProxyProcess]) -> None:
    """`--host 0.0.0.0` prints a warning that names the exposure and suggests --auth-token; with a token, no hint."""
    p = spawn_proxy(["--db", str(tmp_path / "rt.db"), "--upstream", "http://127.0.0.1:9", "--host", "0.0.0.0"])
    proxy_process.append(p)
    assert listening_addresses(p.port) == {"00000000"}
    await serving(p)
    code, _, err = p.stop()
    assert code == 0
    (warning,) = [line for line in err.splitlines() if "WARNING" in line]
    assert "0.0.0.0" in warning and "reachable from other machines" in warning and "--auth-token" in warning
    token = secrets.token_urlsafe(16)
    q = spawn_proxy(
        [
            "--db",
            str(tmp_path / "rt.db"),
            "--upstream",
            "http://127.0.0.1:9",
            "--host",
            "0.0.0.0",
            "--auth-token",
            token,
        ]
    )
    proxy_process.append(q)
    await serving(q)
    code, out, err = q.stop()
    assert code == 0 and "reachable from other machines" in err and "consider --auth-token" not in err
    assert token not in out + err


# --- the proxy's own access token --------------------------------------------------------------


async def test_auth_token_is_required_and_accepted_in_each_place(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """With --auth-token, requests without it (or with a wrong one) get 401 and never reach the upstream; the
    header, the query parameter and the subprotocol each let a client in, and none of them goes upstream."""
    token = secrets.token_urlsafe(24)
    db = tmp_path / "rt.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url], env={"RTPROXY_AUTH_TOKEN": token})
    proxy_process.append(p)
    base = f"http://127.0.0.1:{p.port}"
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Rtproxy-Token": "wrong"}, {"X-Rtproxy-Token": token[:-1]}):
            async with http.get(f"{base}/v1/realtime?model=x", headers={**WS_HEADERS, **headers}) as resp:
                body = await resp.json()
            assert resp.status == 401 and body["error"]["type"] == "rtproxy_unauthorized"
            async with http.get(f"{base}/v1/models", headers=headers) as resp:
                assert resp.status == 401
        assert upstream.connections == [] and upstream.http_requests == []

        ways: list[dict[str, Any]] = [
            {"headers": {"X-Rtproxy-Token": token}},
            {"query": f"&rtproxy_token={quote(token)}"},
            {"protocols": ("realtime", f"rtproxy-token.{token}")},
        ]
        for way in ways:
            url = f"ws://127.0.0.1:{p.port}/v1/realtime?model=x{way.get('query', '')}"
            sock = await http.ws_connect(url, headers=way.get("headers"), protocols=way.get("protocols", ()))
            assert "session.created" in (await sock.receive()).data
            await sock.close()
        async with http.get(f"{base}/v1/models?rtproxy_token={quote(token)}&a=1") as resp:
            assert resp.status == 404  # the upstream's answer
    assert len(upstream.connections) == 3
    for conn in upstream.connections:
        assert token not in str(conn.headers) and token not in str(conn.query)
        assert "rtproxy_token" not in conn.query and "X-Rtproxy-Token" not in conn.headers
    assert [p.strip() for p in upstream.connections[2].headers["Sec-WebSocket-Protocol"].split(",")] == ["realtime"]
    assert upstream.http_requests[0]["path"] == "/v1/models" and token not in str(upstream.http_requests[0])
    code, out, err = p.stop()
    assert code == 0 and token not in out + err


async def test_auth_token_never_reaches_the_database(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """The proxy's access token, sent in any of its three places, appears nowhere in the database files."""
    token = secrets.token_urlsafe(24)
    db = tmp_path / "rt.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url, "--auth-token", token])
    proxy_process.append(p)
    async with aiohttp.ClientSession() as http:
        for headers, query, protocols in (
            ({"X-Rtproxy-Token": token}, "", ()),
            ({}, f"&rtproxy_token={quote(token)}", ()),
            ({}, "", ("realtime", f"rtproxy-token.{token}")),
        ):
            sock = await http.ws_connect(
                f"ws://127.0.0.1:{p.port}/v1/realtime?model=x{query}", headers=headers, protocols=protocols
            )
            await sock.receive()
            await sock.close()
        async with http.get(f"http://127.0.0.1:{p.port}/v1/models?rtproxy_token={quote(token)}") as resp:
            await resp.read()
        async with http.get(f"http://127.0.0.1:{p.port}/v1/models", headers={"X-Rtproxy-Token": token}) as resp:
            await resp.read()
    await serving(p)
    code, _, _ = p.stop()
    assert code == 0
    assert db_rows(db, "SELECT count(*) FROM sessions") == [(3,)] and db_rows(db, "SELECT count(*) FROM http") == [(2,)]
    assert token.encode() not in everything_on_disk(db)


# --- keys never written anywhere: a property ---------------------------------------------------

WINDOW = 8


def key_body(seed: bytes, size: int, alphabet: str = "b64") -> str:
    """`size` key characters as random as a real key's, whatever bytes Hypothesis drew (a key of one repeated
    character would find its 8-character windows in any database by chance, not by a leak)."""
    out = ""
    counter = 0
    while len(out) < size:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        out += digest.hex() if alphabet == "hex" else base64.urlsafe_b64encode(digest).decode().rstrip("=")
        counter += 1
    out = out[:size]
    return out.replace("-", "x") if alphabet == "b64-no-dash" else out


seeds = st.binary(min_size=1, max_size=16)
sk_keys = st.builds(
    lambda kind, seed, n: f"sk-{kind}{key_body(seed, n)}",
    st.sampled_from(["", "proj-", "svcacct-", "test-"]),
    seeds,
    st.integers(24, 64),
)
azure_keys = st.builds(lambda seed: key_body(seed, 32, "hex"), seeds)
ephemeral = st.builds(lambda seed, n: f"ek_{key_body(seed, n, 'b64-no-dash')}", seeds, st.integers(20, 48))
any_key = st.one_of(sk_keys, azure_keys, ephemeral)


def windows(key: str) -> set[str]:
    """Every substring of `key` of length WINDOW (the key itself if shorter)."""
    return {key[i : i + WINDOW] for i in range(max(1, len(key) - WINDOW + 1))}


def leaked(key: str, haystack: bytes) -> list[str]:
    """The windows of `key` found in `haystack`, raw or percent-encoded."""
    return sorted(w for w in windows(key) if w.encode() in haystack or quote(w, safe="").encode() in haystack)


class KeyUpstream:
    """A loopback upstream on a thread of its own: records handshakes, answers REST with a given ek_ secret."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.handshakes: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.secret = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> KeyUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.handshakes.append({"headers": dict(request.headers), "query": request.query_string})
            ws = web.WebSocketResponse(protocols=("realtime",))
            await ws.prepare(request)
            await ws.send_str('{"type":"session.created","session":{"type":"realtime"}}')
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str('{"type":"session.updated","session":{"type":"realtime"}}')
            return ws
        body = await request.read()
        self.requests.append({"headers": dict(request.headers), "query": request.query_string, "body": body})
        return web.json_response({"value": self.secret, "expires_at": 1890000000, "session": {"type": "realtime"}})


@pytest.fixture(scope="module")
def key_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeyUpstream, ProxyProcess, Path]]:
    """One upstream and one `rtproxy proxy` process for every example of the property."""
    db = tmp_path_factory.mktemp("keys") / "rt.db"
    with KeyUpstream() as up:
        p = spawn_proxy(["--db", str(db), "--upstream", f"http://127.0.0.1:{up.port}"])
        try:
            yield up, p, db
        finally:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()


async def _use_keys(port: int, keys: dict[str, str], number: int) -> None:
    """One WebSocket session and two REST calls through the proxy, keys in every place they travel."""
    base = f"127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(
            f"ws://{base}/v1/realtime?model=m{number}&api-key={quote(keys['query'])}",
            headers={"Authorization": f"Bearer {keys['authorization']}", "api-key": keys["api-key"]},
            protocols=("realtime", f"openai-insecure-api-key.{keys['subprotocol']}"),
        )
        await sock.receive()
        await sock.send_str('{"type":"session.update","session":{"type":"realtime"}}')
        await sock.receive()
        await sock.close()
        async with http.post(
            f"http://{base}/v1/realtime/client_secrets?api-key={quote(keys['query'])}",
            headers={"Authorization": f"Bearer {keys['authorization']}", "api-key": keys["api-key"]},
            json={"session": {"type": "realtime", "model": "gpt-realtime"}},
        ) as resp:
            assert (await resp.json())["value"] == keys["ephemeral"]
        async with http.post(
            f"http://{base}/v1/realtime/calls",
            data=b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n",
            headers={"Authorization": f"Bearer {keys['ephemeral']}", "Content-Type": "application/sdp"},
        ) as resp:
            await resp.read()


def _outputs(db: Path, sid: str, tmp: Path) -> bytes:
    """What rtproxy shows or writes of a session: export, sessions --json, show --json, a replay report."""
    from rtproxy.cli import run as cli
    from rtproxy.recording import read_recording
    from rtproxy.replay.player import Player
    from rtproxy.replay.script import build_script

    export = tmp / f"{sid}.jsonl"
    assert cli(["export", sid, "--db", str(db), "-o", str(export)]) == 0
    rec = read_recording(export)
    player = Player(build_script(rec.frames, session=rec.session), "strict", keep_received=True)
    player.start()
    for f in rec.frames:
        if f.direction == "client":
            player.receive(f.data, f.t)
    player.close(1.0, 1000)
    return export.read_bytes() + orjson.dumps(player.report.to_json())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.fixed_dictionaries({place: any_key for place in ("authorization", "api-key", "query", "subprotocol")}),
    ephemeral_key=ephemeral,
)
def test_keys_never_reach_disk_logs_exports_or_reports(
    key_rig: tuple[KeyUpstream, ProxyProcess, Path],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, str],
    ephemeral_key: str,
) -> None:
    """For generated keys in the Authorization and api-key headers, the api-key query, the insecure-key subprotocol
    and ek_ secrets in REST bodies and headers, no 8-character window of any key reaches the database, its WAL,
    the proxy's logs, an export, `sessions --json`, `show --json` or a replay report; each key did reach the
    upstream."""
    from rtproxy.cli import run as cli

    up, p, db = key_rig
    keys = {**keys, "ephemeral": ephemeral_key}
    up.secret = ephemeral_key
    number = len(up.handshakes)
    asyncio.run(_use_keys(p.port, keys, number))

    def settled() -> bool:  # the recorder commits at least every 100 ms: poll the database, bounded
        closed = db_rows(db, "SELECT count(*) FROM sessions WHERE model = ? AND status = 'closed'", f"m{number}")
        return closed == [(1,)] and db_rows(db, "SELECT count(*) FROM http") == [(2 * (number + 1),)]

    deadline = time.monotonic() + 10
    while not settled():
        assert time.monotonic() < deadline, "the proxy did not record the example in time"
        time.sleep(0.02)  # polling the database for the commit, bounded above
    ((sid,),) = db_rows(db, "SELECT id FROM sessions WHERE model = ?", f"m{number}")

    hs = up.handshakes[number]
    assert hs["headers"]["Authorization"] == f"Bearer {keys['authorization']}"
    assert f"openai-insecure-api-key.{keys['subprotocol']}" in hs["headers"]["Sec-WebSocket-Protocol"]
    assert up.requests[-1]["headers"]["Authorization"] == f"Bearer {ephemeral_key}"

    capsys.readouterr()
    assert cli(["sessions", "--db", str(db), "--json"]) == 0
    assert cli(["show", sid, "--db", str(db), "--json"]) == 0
    shown = capsys.readouterr().out.encode()
    haystack = b"\n".join(
        [
            everything_on_disk(db),
            p.out_path.read_bytes(),
            p.err_path.read_bytes(),
            shown,
            _outputs(db, sid, tmp_path_factory.mktemp("out")),
        ]
    )
    for place, key in keys.items():
        assert not leaked(key, haystack), place


# --- credentials in the upstream URL -----------------------------------------------------------


@pytest.fixture(scope="module")
def userinfo_upstream() -> Iterator[KeyUpstream]:
    with KeyUpstream() as up:
        yield up


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.one_of(st.just(""), any_key), password=any_key, client_key=sk_keys)
def test_upstream_userinfo_never_reaches_disk_or_exports(
    userinfo_upstream: KeyUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    user: str,
    password: str,
    client_key: str,
) -> None:
    """With `--upstream http://USER:KEY@host`, the upstream gets the userinfo as Basic authorization (in place of
    the client's), and no 8-character window of the user or the key reaches the database, its WAL, the proxy's
    stdout and stderr, an export, `sessions --json` or `show --json`; the session row shows the upstream masked."""
    from rtproxy.cli import run as cli

    up = userinfo_upstream
    up.secret = "ek_" + key_body(password.encode(), 24, "b64-no-dash")
    tmp = tmp_path_factory.mktemp("userinfo")
    db = tmp / "rt.db"
    url = f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{up.port}"
    p = spawn_proxy(["--db", str(db), "--upstream", url])
    try:
        number = len(up.handshakes)
        keys = dict.fromkeys(("authorization", "api-key", "query", "subprotocol"), client_key)
        asyncio.run(_use_keys(p.port, {**keys, "ephemeral": up.secret}, number))
        code, out, err = p.stop()
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
    assert code == 0
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert up.handshakes[number]["headers"]["Authorization"] == basic
    assert up.requests[-2]["headers"]["Authorization"] == basic
    ((sid, shown, status),) = db_rows(db, "SELECT id, upstream, status FROM sessions")
    assert status == "closed"
    assert shown == f"http://{mask(user)}:{mask(password)}@127.0.0.1:{up.port}"

    capsys.readouterr()
    assert cli(["sessions", "--db", str(db), "--json"]) == 0
    assert cli(["show", sid, "--db", str(db), "--json"]) == 0
    export = tmp / "out.jsonl"
    assert cli(["export", sid, "--db", str(db), "-o", str(export)]) == 0
    printed = [err.encode(), out.encode(), capsys.readouterr().out.encode()]  # the proxy's banner included
    haystack = b"\n".join([everything_on_disk(db), *printed, export.read_bytes()])
    for place, secret in (("user", user), ("password", password)):
        if secret:
            assert not leaked(secret, haystack), place


async def test_unreachable_upstream_with_userinfo_keeps_it_out_of_errors_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening at an upstream URL that carries credentials, the 502 answers (WebSocket and REST),
    the `rejected` session row, the http row and the log lines name the upstream with its userinfo masked."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    user, password = "gateway-" + secrets.token_hex(8), "gw-" + secrets.token_urlsafe(24)
    running, runner = await start_proxy(tmp_path / "rt.db", f"http://{user}:{password}@127.0.0.1:{port}")
    proxy: RunningProxy = running
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{proxy.http_base}/v1/realtime?model=x", headers=WS_HEADERS) as resp:
                ws_answer = await resp.read()
                assert resp.status == 502
            async with http.post(f"{proxy.http_base}/v1/realtime/client_secrets", json={}) as resp:
                rest_answer = await resp.read()
                assert resp.status == 502
        await asyncio.to_thread(proxy.recorder.flush)
    finally:
        await runner.cleanup()
        proxy.recorder.close()
    assert f"127.0.0.1:{port}".encode() in ws_answer and f"127.0.0.1:{port}".encode() in rest_answer
    ((reason, shown),) = db_rows(proxy.db, "SELECT reason, upstream FROM sessions")
    assert "cannot reach upstream" in reason and shown == f"http://{mask(user)}:{mask(password)}@127.0.0.1:{port}"
    ((error,),) = db_rows(proxy.db, "SELECT error FROM http")
    assert "cannot reach upstream" in error
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot reach upstream" in logged
    haystack = b"\n".join([ws_answer, rest_answer, logged.encode(), everything_on_disk(proxy.db)])
    assert not leaked(user, haystack) and not leaked(password, haystack)
