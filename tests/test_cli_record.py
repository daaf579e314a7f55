"""The real `rtproxy proxy` and `rtproxy sessions` commands, run as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import WSMsgType
from openai import AsyncOpenAI

from tests.conftest import ProxyProcess, RunningProxy, rtproxy_exe, spawn_proxy
from tests.upstream import ScriptedUpstream


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rtproxy_exe(), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def db_rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll a cheap condition (a database count, a process state) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_banner_names_listen_address_database_and_client_settings(
    tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """On start the proxy prints where it listens, where it records, and the exact client settings."""
    db = tmp_path / "rec.db"
    p = spawn_proxy(["--db", str(db), "--upstream", "http://127.0.0.1:9"])
    proxy_process.append(p)
    code, out, err = p.stop(signal.SIGTERM)
    assert code == 0, err
    assert f"listening on ws://127.0.0.1:{p.port}" in out
    assert f"recording to {db}" in out
    assert f'websocket_base_url="ws://127.0.0.1:{p.port}/v1"' in out
    assert f"OPENAI_BASE_URL=http://127.0.0.1:{p.port}/v1" in out
    assert "relaying to http://127.0.0.1:9" in out
    assert (db.stat().st_mode & 0o777) == 0o600


async def test_sigterm_closes_open_sessions_with_1001_and_flushes(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """SIGTERM closes an open session with 1001 on both sides, writes everything, and exits 0."""
    db = tmp_path / "rec.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url])
    proxy_process.append(p)
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(f"ws://127.0.0.1:{p.port}/v1/realtime?model=gpt-realtime")
        assert (await sock.receive()).type is WSMsgType.TEXT  # session.created
        await sock.send_str('{"type":"session.update","session":{"instructions":"be brief"}}')
        assert "session.updated" in (await sock.receive()).data
        p.proc.send_signal(signal.SIGTERM)
        msg = await sock.receive()
        assert msg.type is WSMsgType.CLOSE and msg.data == 1001
    code = await asyncio.to_thread(p.proc.wait, 15)
    assert code == 0
    await asyncio.wait_for(upstream.connections[0].closed.wait(), 5)
    assert upstream.connections[0].close_code == 1001
    ((status, closed_by, ccode, scode, cev, sev),) = db_rows(
        db, "SELECT status, closed_by, client_close_code, server_close_code, client_events, server_events FROM sessions"
    )
    assert (status, closed_by, ccode, scode) == ("closed", "proxy", 1001, 1001)
    assert (cev, sev) == (1, 2)
    assert db_rows(db, "SELECT count(*) FROM events") == [(3,)]


async def test_sigkill_mid_stream_leaves_a_sound_database_marked_interrupted(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """A proxy killed with SIGKILL while streaming leaves an intact database holding every frame
    committed before the kill, in order; the next proxy on it marks the session `interrupted`."""
    db = tmp_path / "rec.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url])
    proxy_process.append(p)
    http = aiohttp.ClientSession()
    sock = await http.ws_connect(f"ws://127.0.0.1:{p.port}/v1/realtime?model=gpt-realtime")
    await sock.receive()
    sent = 0

    async def send_batch(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            await sock.send_str(
                orjson.dumps(
                    {"type": "input_audio_buffer.append", "audio": "AAAA" * 200, "event_id": f"evt_{sent}"}
                ).decode()
            )
            sent += 1

    await send_batch(50)
    # every frame of the first batch reaches the disk without any shutdown: the commit window works
    await wait_for(lambda: db_rows(db, "SELECT count(*) FROM events")[0][0] >= 51)
    await send_batch(200)
    await wait_for(lambda: len(upstream.connections[0].received) >= 250)
    p.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(p.proc.wait, 15)
    await http.close()

    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    rows = db_rows(db, "SELECT seq, direction, text FROM events ORDER BY seq")
    assert [r[0] for r in rows] == list(range(len(rows)))  # gap-free
    client = [r[2] for r in rows if r[1] == "client"]
    assert client == upstream.connections[0].received[: len(client)]  # a prefix of what crossed, in order
    assert len(client) >= 50
    assert db_rows(db, "SELECT status FROM sessions") == [("open",)]

    again = spawn_proxy(["--db", str(db), "--upstream", upstream.url])
    proxy_process.append(again)
    code, out, _ = again.stop(signal.SIGTERM)
    assert code == 0
    assert "marked 1 session(s) left open by a stopped proxy as interrupted" in out
    ((status, events),) = db_rows(db, "SELECT status, client_events FROM sessions")
    assert status == "interrupted" and events == len(client)


async def test_tls_serves_wss_with_a_leaf_of_a_reused_local_ca(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """--tls serves wss:// with a leaf of a local CA made once and reused; the hint's NODE_EXTRA_CA_CERTS is the CA."""
    env = {"RTPROXY_HOME": str(tmp_path / "home")}
    p = spawn_proxy(["--db", str(tmp_path / "rec.db"), "--upstream", upstream.url, "--tls"], env=env)
    proxy_process.append(p)
    ca, cert = tmp_path / "home" / "tls" / "ca.pem", tmp_path / "home" / "tls" / "localhost.pem"
    first = ca.read_bytes(), cert.read_bytes()
    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession() as http:
        for host in ("localhost", "127.0.0.1"):
            sock = await http.ws_connect(f"wss://{host}:{p.port}/v1/realtime?model=gpt-realtime", ssl=ctx)
            msg = await sock.receive()
            assert msg.type is WSMsgType.TEXT and "session.created" in msg.data
            await sock.close()
    code, out, _ = p.stop()
    assert code == 0 and f"NODE_EXTRA_CA_CERTS={ca} " in out
    again = spawn_proxy(["--db", str(tmp_path / "rec.db"), "--upstream", upstream.url, "--tls"], env=env)
    proxy_process.append(again)
    again.stop()
    assert (ca.read_bytes(), cert.read_bytes()) == first
    assert (tmp_path / "home" / "tls" / "ca-key.pem").stat().st_mode & 0o777 == 0o600


def test_bad_flags_get_one_line_and_exit_2(tmp_path: Path) -> None:
    """A bad flag value is refused with a one-line reason and exit 2, never a traceback."""
    for args, words in (
        (["proxy", "--port", "abc"], "abc"),
        (["proxy", "--upstream", "ftp://example.invalid"], "--upstream"),
        (["proxy", "--port", "99999"], "99999"),
        (["sessions", "--db", str(tmp_path / "missing.db")], "no database"),
        (["nosuchcommand"], "nosuchcommand"),
    ):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """Asking for a port another program holds gets one line naming it, exit 2."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        r = await asyncio.to_thread(run, "proxy", "--port", str(port), "--db", str(tmp_path / "x.db"))
    finally:
        server.close()
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


async def test_sessions_lists_newest_first_as_table_and_json(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str
) -> None:
    """`rtproxy sessions` lists recorded sessions newest first, as a table and as JSON, keys masked."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    for model in ("gpt-realtime", "gpt-realtime-mini"):
        async with client.realtime.connect(model=model) as conn:
            await conn.session.update(session={"type": "realtime", "instructions": "hi"})
            async for event in conn:
                if event.type == "session.updated":
                    break
    ids = await proxy.settle(2)
    r = await asyncio.to_thread(run, "sessions", "--db", str(proxy.db))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:6] == ["ID", "START", "DURATION", "MODEL", "API", "STATUS"]
    assert sorted(ln.split()[0] for ln in lines[1:]) == sorted(ids)
    assert "gpt-realtime-mini" in lines[1] and " realtime/ga " in lines[1] and "closed" in lines[1]
    r = await asyncio.to_thread(run, "sessions", "--db", str(proxy.db), "--api", "realtime")
    assert sorted(ln.split()[0] for ln in r.stdout.splitlines()[1:]) == sorted(ids)
    r = await asyncio.to_thread(run, "sessions", "--db", str(proxy.db), "--api", "live")
    assert r.returncode == 0 and r.stdout.strip() == f"no live sessions in {proxy.db}"
    r = await asyncio.to_thread(run, "sessions", "--db", str(proxy.db), "--json")
    data = orjson.loads(r.stdout)
    assert [s["model"] for s in data] == ["gpt-realtime-mini", "gpt-realtime"]
    assert data[0]["client_events"] == 1 and data[0]["server_events"] == 2
    assert data[0]["request_headers"]["Authorization"] == f"Bearer ****{api_key[-4:]}"
    assert api_key not in r.stdout


def test_sessions_on_an_empty_database_says_so(tmp_path: Path) -> None:
    """An empty database lists no sessions, in words, and exits 0."""
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    r = run("sessions", "--db", str(db))
    assert r.returncode == 0 and "no sessions" in r.stdout
