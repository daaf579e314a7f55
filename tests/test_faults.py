"""Faults around the proxy: upstreams that fail, clients that vanish, a killed proxy, a full disk, two proxies.

Each test runs the real proxy (in-process, or the `rtproxy proxy` command)
against a loopback upstream it controls; misbehaving upstreams are small
aiohttp handlers written here, and clients that vanish reset their TCP
connection (SO_LINGER 0) instead of closing it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import signal
import socket
import sqlite3
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web

from rtproxy.store import Store
from tests.conftest import ProxyProcess, RunningProxy, spawn_proxy, start_proxy
from tests.upstream import ScriptedUpstream

Script = Callable[[web.WebSocketResponse, web.Request], Awaitable[None]]
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


# --- helpers -----------------------------------------------------------------------------------


@asynccontextmanager
async def ws_upstream(script: Script) -> AsyncIterator[str]:
    """A loopback upstream whose every WebSocket connection runs `script`; yields its base URL."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await script(ws, request)
        return ws

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running(db: Path, upstream_url: str, **kwargs: Any) -> AsyncIterator[RunningProxy]:
    """The proxy in-process on port 0, torn down afterwards."""
    proxy, runner = await start_proxy(db, upstream_url, **kwargs)
    try:
        yield proxy
    finally:
        await proxy.proxy.shutdown()
        await runner.cleanup()
        proxy.recorder.close()


def reset(transport: asyncio.BaseTransport | None) -> None:
    """Drop a TCP connection with a reset (RST), no FIN and no close frame."""
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def event(kind: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()


async def receive_until_close(sock: aiohttp.ClientWebSocketResponse, limit: int = 10_000) -> tuple[list[str], Any]:
    """Text frames received until the close (bounded); the closing message."""
    texts: list[str] = []
    for _ in range(limit):
        msg = await asyncio.wait_for(sock.receive(), 10)
        if msg.type is not WSMsgType.TEXT:
            return texts, msg
        texts.append(msg.data)
    raise AssertionError("no close within the frame limit")


def db_rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a cheap condition (a row count, a process state) until it holds, bounded in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        await asyncio.sleep(0.02)


async def raw_handshake(
    port: int, path: str = "/v1/realtime?model=x", extra: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A WebSocket client speaking raw bytes: the upgrade request, and the response head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode("latin-1")
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """One client (masked) WebSocket frame."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of the next unmasked server frame."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return b0 & 0x0F, await asyncio.wait_for(reader.readexactly(n), 10)


def session_row(db: Path, sid: str | None = None) -> dict[str, Any]:
    with Store(db) as store:
        return store.session(sid or store.resolve("latest"))


# --- upstream faults ---------------------------------------------------------------------------


async def test_upstream_1011_mid_response_reaches_client_and_is_recorded(tmp_path: Path) -> None:
    """An upstream that closes with 1011 halfway through a response: the client gets 1011, every frame before it
    is recorded, and the session stores the code on both sides."""

    async def script(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_str(event("session.created", session={"type": "realtime"}))
        await ws.receive()  # response.create
        await ws.send_str(event("response.created", response={"id": "resp_1"}))
        for i in range(3):
            await ws.send_str(event("response.output_text.delta", response_id="resp_1", item_id="it", delta=f"w{i}"))
        await ws.close(code=1011, message=b"internal server error")

    async with ws_upstream(script) as url, running(tmp_path / "rt.db", url) as proxy:
        async with aiohttp.ClientSession() as http:
            sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
            await sock.send_str(event("response.create"))
            texts, msg = await receive_until_close(sock)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1011 and msg.extra == "internal server error"
        assert len(texts) == 5
        (sid,) = await proxy.settle()
        s = session_row(proxy.db, sid)
        assert (s["closed_by"], s["server_close_code"], s["client_close_code"]) == ("upstream", 1011, 1011)
        assert s["server_close_reason"] == "internal server error"
        with Store(proxy.db) as store:
            assert [f.data for f in store.frames(sid) if f.direction == "server"] == texts


async def test_upstream_tcp_reset_mid_stream_gives_client_1011_and_session_error(tmp_path: Path) -> None:
    """An upstream whose TCP connection is reset (no close frame) while streaming deltas: the client gets 1011,
    the session is `error` with a reason, and what crossed before the reset is recorded."""

    async def script(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_str(event("session.created", session={"type": "realtime"}))
        await ws.receive()
        chunk = base64.b64encode(bytes(480)).decode()
        for i in range(20):
            await ws.send_str(event("response.output_audio.delta", item_id="it", delta=chunk, event_id=f"e{i}"))
        reset(request.transport)

    async with ws_upstream(script) as url, running(tmp_path / "rt.db", url) as proxy:
        async with aiohttp.ClientSession() as http:
            sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
            await sock.send_str(event("response.create"))
            texts, msg = await receive_until_close(sock)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1011
        (sid,) = await proxy.settle()
        s = session_row(proxy.db, sid)
        assert s["status"] == "error" and s["client_close_code"] == 1011 and "vanished" in str(s["reason"])
        with Store(proxy.db) as store:
            recorded = [f.data for f in store.frames(sid) if f.direction == "server"]
        assert recorded == texts and len(texts) >= 1


def nameservers_off_loopback() -> list[str]:
    """Nameservers in /etc/resolv.conf that are not loopback addresses (where a DNS query would go)."""
    import ipaddress

    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return []
    servers = [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]
    return [s for s in servers if not ipaddress.ip_address(s.split("%")[0]).is_loopback]


async def test_dns_failure_at_connect_is_a_clear_502(tmp_path: Path) -> None:
    """An upstream whose name does not resolve (a `.invalid` host) gets the client a JSON 502 naming it,
    and a `rejected` session."""
    host = "rtproxy-no-such-host.invalid"
    remote = nameservers_off_loopback()
    if remote:  # glibc would still ask that server about .invalid: a packet leaving the machine
        pytest.skip(f"the resolver ({', '.join(remote)}) is not on loopback; a lookup would leave the machine")
    loop = asyncio.get_running_loop()
    try:  # RFC 6761: .invalid never resolves; skip if this machine's resolver is slow to say so
        await asyncio.wait_for(loop.getaddrinfo(host, 80), 2.0)
        pytest.skip(f"{host} resolved on this machine")
    except TimeoutError:
        pytest.skip("the resolver does not fail fast here")
    except socket.gaierror:
        pass
    async with running(tmp_path / "rt.db", f"http://{host}") as proxy:
        async with aiohttp.ClientSession() as http:
            headers = {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": WS_KEY,
            }
            async with http.get(f"{proxy.http_base}/v1/realtime?model=x", headers=headers) as resp:
                body = await resp.json()
        assert resp.status == 502
        assert body["error"]["type"] == "upstream_unreachable" and host in body["error"]["message"]
        await asyncio.to_thread(proxy.recorder.flush)
        s = session_row(proxy.db)
        assert s["status"] == "rejected" and host in str(s["reason"])


async def test_stalled_handshake_gets_504_within_connect_timeout(
    tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """An upstream that accepts TCP but never answers the upgrade: `--connect-timeout 0.5` answers 504 in time."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    db = tmp_path / "rt.db"
    p = spawn_proxy(["--db", str(db), "--upstream", f"http://127.0.0.1:{port}", "--connect-timeout", "0.5"])
    proxy_process.append(p)
    try:
        async with aiohttp.ClientSession() as http:
            headers = {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": WS_KEY,
            }
            t0 = time.monotonic()
            async with http.get(f"http://127.0.0.1:{p.port}/v1/realtime?model=x", headers=headers) as resp:
                body = await resp.json()
            elapsed = time.monotonic() - t0
        assert resp.status == 504 and body["error"]["type"] == "upstream_timeout"
        assert "0.5 s" in body["error"]["message"]
        assert 0.4 <= elapsed < 3.0, elapsed
        assert held, "the upstream saw the connection"
    finally:
        for w in held:
            w.close()
        server.close()
    code, _, err = p.stop()
    assert code == 0
    assert "did not answer the handshake within 0.5 s" in err
    ((status,),) = db_rows(db, "SELECT status FROM sessions")
    assert status == "rejected"


# --- client faults -----------------------------------------------------------------------------


async def test_client_vanishing_mid_stream_closes_upstream_and_marks_session(tmp_path: Path) -> None:
    """A client whose TCP connection resets while the upstream streams audio to it: the upstream connection is
    closed (1011), and the session ends `error`, closed by the client, with the frames that crossed."""
    upstream_closed = asyncio.Event()
    close_codes: list[int | None] = []
    got: list[str] = []

    async def script(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_str(event("session.created", session={"type": "realtime"}))
        chunk = base64.b64encode(bytes(4800)).decode()

        async def stream() -> None:  # 100 ms audio chunks, bounded; far more than the test needs
            for i in range(2000):
                await ws.send_str(event("response.output_audio.delta", item_id="it", delta=chunk, event_id=f"e{i}"))
                await asyncio.sleep(0.002)

        sending = asyncio.ensure_future(stream())
        try:
            for _ in range(100):  # reading meanwhile, as a real server does: the proxy's close frame ends this
                msg = await ws.receive()
                if msg.type is not WSMsgType.TEXT:
                    break
                got.append(msg.data)
        finally:
            sending.cancel()
        close_codes.append(ws.close_code)
        upstream_closed.set()

    async with ws_upstream(script) as url, running(tmp_path / "rt.db", url) as proxy:
        reader, writer, head = await raw_handshake(proxy.port)
        try:
            assert head.startswith(b"HTTP/1.1 101")
            for _ in range(5):
                await read_server_frame(reader)
            writer.write(ws_frame(0x1, event("input_audio_buffer.append", audio="AAAA").encode()))
            await writer.drain()
            await wait_until(lambda: len(got) == 1, what="the client frame crossing")
        finally:
            reset(writer.transport)
        await asyncio.wait_for(upstream_closed.wait(), 10)
        (sid,) = await proxy.settle()
        s = session_row(proxy.db, sid)
        assert s["status"] == "error" and s["closed_by"] == "client", s
        assert s["client_close_code"] == 1006 and s["server_close_code"] == 1011
        assert close_codes == [1011]
        with Store(proxy.db) as store:
            assert sum(1 for f in store.frames(sid) if f.direction == "client") == 1


# --- the proxy killed under load ---------------------------------------------------------------


async def test_sigkill_under_load_then_restart(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """Eight sessions streaming audio when the proxy gets SIGKILL: the database passes integrity_check, each
    session holds a gap-free prefix of what crossed including everything committed before the kill, and the
    restarted proxy marks all eight `interrupted`."""
    db = tmp_path / "rt.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url])
    proxy_process.append(p)
    n_sessions = 8
    chunk = base64.b64encode(bytes(2400)).decode()  # 50 ms of PCM16
    http = aiohttp.ClientSession()
    socks = [await http.ws_connect(f"ws://127.0.0.1:{p.port}/v1/realtime?model=s{i}") for i in range(n_sessions)]
    for sock in socks:
        await sock.receive()  # session.created
    sent: list[list[str]] = [[] for _ in range(n_sessions)]

    async def stream(i: int, n: int) -> None:
        for _ in range(n):
            text = event("input_audio_buffer.append", audio=chunk, event_id=f"evt_{i}_{len(sent[i])}")
            sent[i].append(text)
            await socks[i].send_str(text)

    await asyncio.gather(*(stream(i, 40) for i in range(n_sessions)))
    # all of the first batch reaches the disk with no shutdown: the commit window holds under load
    total = n_sessions * 41
    await wait_until(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] >= total, 5.0, "first batch on disk")
    load = [asyncio.ensure_future(stream(i, 400)) for i in range(n_sessions)]
    await wait_until(
        lambda: sum(len(c.received) for c in upstream.connections) >= n_sessions * 120, what="streaming under way"
    )
    helpers = descendants(p.proc.pid)
    p.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(p.proc.wait, 15)
    await asyncio.gather(*load, return_exceptions=True)
    await http.close()
    await wait_until(lambda: not any(alive(pid) for pid in helpers), what="the proxy's helper processes gone")

    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    sessions = db_rows(db, "SELECT id, model, status FROM sessions")
    assert len(sessions) == n_sessions and {s[2] for s in sessions} == {"open"}
    for sid, model, _ in sessions:
        rows = db_rows(db, "SELECT seq, direction, text FROM events WHERE session_id = ? ORDER BY seq", sid)
        assert [r[0] for r in rows] == list(range(len(rows)))
        client = [r[2] for r in rows if r[1] == "client"]
        assert client == sent[int(model[1:])][: len(client)]  # a prefix of what was sent, in order
        assert len(client) >= 40

    again = spawn_proxy(["--db", str(db), "--upstream", upstream.url])
    proxy_process.append(again)
    await serving(again)
    code, out, _ = again.stop()
    assert code == 0 and f"marked {n_sessions} session(s) left open by a stopped proxy as interrupted" in out
    for sid, status, events in db_rows(db, "SELECT id, status, client_events FROM sessions"):
        assert status == "interrupted"
        assert events == db_rows(db, "SELECT count(*) FROM events WHERE session_id=? AND direction='client'", sid)[0][0]
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]


def descendants(pid: int) -> list[int]:
    """Live child processes of pid (a proxy's recorder, if it runs one)."""
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def alive(pid: int) -> bool:
    """Is pid a running process (not gone, not a zombie)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def serving(p: ProxyProcess) -> None:
    """Wait until a started proxy answers a request (its 'listening' line comes before its signal handlers)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{p.port}/v1/models") as resp:
            await resp.read()


# --- the disk ----------------------------------------------------------------------------------


def writer_pid(db: Path) -> int:
    """The process writing `db` for an in-process proxy: the recorder's writer child, else this process."""
    me = os.getpid()
    for tid in os.listdir(f"/proc/{me}/task"):
        for child in Path(f"/proc/{me}/task/{tid}/children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"rtproxy" in cmdline and str(db).encode() in cmdline:
                return int(child)
    pytest.skip("the recorder writes from this process; a file size limit here would hit the test runner too")


def fill_database(db: Path) -> None:
    """Make the disk 'full' for the recorder: its process may not grow any file past the database's size now."""
    sizes = [p.stat().st_size for p in db.parent.glob(db.name + "*")]
    pid = writer_pid(db)
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (max(sizes) + 8192, hard))


def unfill_database(db: Path) -> None:
    pid = writer_pid(db)
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


async def updates(sock: aiohttp.ClientWebSocketResponse, n: int, size: int = 20_000) -> int:
    """Send n session.update events with large instructions; the number of session.updated answers."""
    got = 0
    for i in range(n):
        await sock.send_str(event("session.update", session={"instructions": f"{i}" + "x" * size}))
        msg = await asyncio.wait_for(sock.receive(), 10)
        got += msg.type is WSMsgType.TEXT and '"session.updated"' in msg.data
    return got


async def test_full_database_keeps_forwarding_reports_and_loses_nothing_recorded(
    proxy: RunningProxy, upstream: ScriptedUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    """When the database cannot grow any more mid-session, frames keep flowing both ways, the failure is
    reported on stderr, and every frame recorded before it stays intact."""
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
        await sock.receive()
        assert await updates(sock, 3) == 3
        await asyncio.to_thread(proxy.recorder.flush)
        before = db_rows(proxy.db, "SELECT seq, text FROM events ORDER BY seq")
        assert len(before) == 7
        fill_database(proxy.db)
        try:
            assert await updates(sock, 10) == 10  # forwarding goes on
            await wait_until(lambda: bool(proxy.recorder.stats.errors), what="the failure reported")
        finally:
            unfill_database(proxy.db)
        await sock.close()
    await proxy.settle()
    assert "recording failed, frames not written" in capfd.readouterr().err
    assert proxy.recorder.stats.dropped > 0
    assert db_rows(proxy.db, "SELECT seq, text FROM events ORDER BY seq")[:7] == before
    assert db_rows(proxy.db, "PRAGMA integrity_check") == [("ok",)]
    assert len(upstream.connections[0].received) == 13


async def test_session_that_lost_frames_to_a_full_disk_says_so(
    proxy: RunningProxy, upstream: ScriptedUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    """Frames lost while the disk was full are counted on their session once it can be written again."""
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
        await sock.receive()
        await asyncio.to_thread(proxy.recorder.flush)
        fill_database(proxy.db)
        try:
            assert await updates(sock, 5) == 5
            await wait_until(lambda: bool(proxy.recorder.stats.errors), what="the failure reported")
        finally:
            unfill_database(proxy.db)
        await sock.close()
    (sid,) = await proxy.settle()
    recorded = db_rows(proxy.db, "SELECT count(*) FROM events WHERE session_id = ?", sid)[0][0]
    s = session_row(proxy.db, sid)
    assert s["unrecorded"] == s["client_events"] + s["server_events"] - recorded > 0


async def test_flush_returns_promptly_while_the_disk_is_full(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """A flush while the database cannot be written returns at once (with the failure counted), not after a timeout."""
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
        await sock.receive()
        await asyncio.to_thread(proxy.recorder.flush)
        fill_database(proxy.db)
        try:
            assert await updates(sock, 2) == 2
            assert await asyncio.to_thread(proxy.recorder.flush, 2.0)
        finally:
            unfill_database(proxy.db)
        await sock.close()
    await proxy.settle()


# --- two proxies, one database -----------------------------------------------------------------


async def test_two_proxies_share_one_database(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """Two proxies recording to the same file at once: the second does not mark the first's open session
    interrupted, and sessions through both are recorded completely."""
    db = tmp_path / "rt.db"
    a = spawn_proxy(["--db", str(db), "--upstream", upstream.url, "--label", "A"])
    proxy_process.append(a)
    async with aiohttp.ClientSession() as http:
        held = await http.ws_connect(f"ws://127.0.0.1:{a.port}/v1/realtime?model=held")
        await held.receive()
        await wait_until(lambda: db_rows(db, "SELECT count(*) FROM sessions")[0][0] == 1, what="session row")
        b = spawn_proxy(["--db", str(db), "--upstream", upstream.url, "--label", "B"])
        proxy_process.append(b)
        assert "interrupted" not in b.output

        async def talk(port: int, model: str) -> None:
            sock = await http.ws_connect(f"ws://127.0.0.1:{port}/v1/realtime?model={model}")
            await sock.receive()
            assert await updates(sock, 10, size=2000) == 10
            await sock.close()

        await asyncio.gather(*(talk(p.port, f"{p is a and 'a' or 'b'}{i}") for p in (a, b) for i in range(3)))
        assert await updates(held, 2, size=10) == 2
        await held.close()
    for p in (a, b):
        code, _, err = p.stop()
        assert code == 0, err
        assert "WARNING" not in err
    rows = db_rows(db, "SELECT id, model, label, status, client_events, server_events FROM sessions")
    assert len(rows) == 7 and {r[3] for r in rows} == {"closed"}
    assert {r[2] for r in rows if r[1].startswith("a")} == {"A"}
    assert {r[2] for r in rows if r[1].startswith("b")} == {"B"}
    for sid, model, _, _, cev, sev in rows:
        n = db_rows(db, "SELECT count(*), max(seq) FROM events WHERE session_id = ?", sid)[0]
        assert n == (cev + sev, cev + sev - 1), model
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert os.stat(db).st_mode & 0o777 == 0o600


# --- many sessions at once ---------------------------------------------------------------------


async def test_more_than_a_hundred_sessions_at_once(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """A hundred and ten sessions open at the same time are all relayed (none waits for another to end)."""
    async with running(tmp_path / "rt.db", upstream.url, connect_timeout=1.0) as proxy:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def one(i: int) -> aiohttp.ClientWebSocketResponse:
                sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=m{i}")
                msg = await asyncio.wait_for(sock.receive(), 10)
                assert "session.created" in msg.data
                return sock

            socks = await asyncio.gather(*(one(i) for i in range(110)), return_exceptions=True)
            failed = [s for s in socks if isinstance(s, BaseException)]
            held = [s for s in socks if not isinstance(s, BaseException)]
            assert len(upstream.connections) == len(held)  # every one held open at once, at the upstream too
            await asyncio.gather(*(s.close() for s in held))
        assert failed == [], f"{len(failed)} of 110 refused, e.g. {failed[:1]}"


# --- load, in miniature (the full run is benchmarks/load.py) -----------------------------------


@pytest.mark.slow
def test_load_smoke_run_loses_no_frame(tmp_path: Path) -> None:
    """A few voice sessions at real-time rate, idle connections and a stalled client through the real proxy: every
    frame sent in each direction is recorded, and the stalled client's flood is held back by backpressure."""
    import subprocess
    import sys

    out = tmp_path / "load.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "load.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--sessions",
            "5",
            "--duration",
            "1",
            "--idle",
            "10",
            "--slow-seconds",
            "0.5",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = orjson.loads(out.read_bytes())
    load = result["load"]
    assert load["up"]["sent"] == load["up"]["upstream_received"] == load["up"]["recorded"] > 5 * 10
    assert load["down"]["sent"] == load["down"]["recorded"] > 5 * 10
    assert load["lost"] == 0 and load["unrecorded"] == 0 and load["failures"] == []
    assert result["idle"]["connections"] == 10
    assert 0 < result["slow"]["flood_sent"]["at_end"] < 200_000


@pytest.mark.slow
def test_recorder_breakdown_stages_do_what_they_say(tmp_path: Path) -> None:
    """benchmarks/recorder_breakdown.py in miniature, both paths: each stage's database holds what the stage
    promises (every frame through `full`, none through `unrecorded` and `unstored`), so its figures measure
    what they are said to measure."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "recorder_breakdown.py"
    done = subprocess.run(
        [sys.executable, str(script), "--reps", "1", "-n", "20", "--portable"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every stage's database held what the stage promises" in done.stdout
    for name in ("relay", "unrecorded", "unsent", "unstored", "full", "unstored-portable", "full-portable"):
        assert f"\n{name} " in done.stdout, done.stdout
