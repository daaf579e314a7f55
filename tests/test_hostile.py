"""Hostile and malformed input: bad frames, odd JSON, floods, malicious handshakes and paths, bad files, new schemas.

tests/test_proxy_edges.py covers non-JSON text, JSON arrays, binary frames
and the 16 MiB limit from the client; this file covers the rest.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import write_recording
from rtproxy.store import Store
from tests.conftest import ProxyProcess, RunningProxy, rtproxy_exe, spawn_proxy
from tests.test_faults import (
    db_rows,
    raw_handshake,
    read_server_frame,
    receive_until_close,
    running,
    session_row,
    wait_until,
    ws_frame,
    ws_upstream,
)
from tests.upstream import ScriptedUpstream

MiB = 1024 * 1024


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=60)


def one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, one line on stderr holding every word, no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


async def raw_request(port: int, raw: bytes) -> bytes:
    """Send raw bytes as an HTTP request; the response (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


# --- frames ------------------------------------------------------------------------------------


async def test_invalid_utf8_text_frame_closes_with_1007_and_is_recorded(
    proxy: RunningProxy, upstream: ScriptedUpstream
) -> None:
    """A text frame that is not UTF-8 closes the client with 1007 (and the upstream too); the session is `error`
    with the reason, and the frames before it are recorded."""
    reader, writer, head = await raw_handshake(proxy.port)
    assert head.startswith(b"HTTP/1.1 101")
    await read_server_frame(reader)  # session.created
    writer.write(ws_frame(0x1, b'{"type":"input_audio_buffer.clear"}'))
    assert b"cleared" in (await read_server_frame(reader))[1]
    writer.write(ws_frame(0x1, b'{"type":"x","text":"\xff\xfe"}'))
    await writer.drain()
    opcode, payload = await read_server_frame(reader)
    writer.close()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1007
    (sid,) = await proxy.settle()
    await asyncio.wait_for(upstream.connections[0].closed.wait(), 5)
    assert upstream.connections[0].close_code == 1007
    s = session_row(proxy.db, sid)
    assert s["status"] == "error" and s["client_close_code"] == 1007 and "UTF-8" in str(s["reason"])
    with Store(proxy.db) as store:
        assert [f.data for f in store.frames(sid) if f.direction == "client"] == ['{"type":"input_audio_buffer.clear"}']


async def test_upstream_frame_under_16_mib_passes_and_one_over_closes_with_1009(tmp_path: Path) -> None:
    """Downstream, a message just under 16 MiB reaches the client whole; one over 16 MiB closes both sides with
    1009 and the session records it."""
    big = "A" * (16 * MiB - 64)

    async def script(ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_str(big)
        try:
            await ws.send_str("B" * (16 * MiB + 1))
            await ws.receive()
        except ConnectionError:  # the proxy may refuse from the frame header, before all of it is written
            pass

    async with ws_upstream(script) as url, running(tmp_path / "rt.db", url) as proxy:
        async with aiohttp.ClientSession() as http:
            sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x", max_msg_size=0)
            texts, msg = await receive_until_close(sock)
        assert len(texts) == 1 and texts[0] == big, (len(texts), msg)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1009
        (sid,) = await proxy.settle()
        s = session_row(proxy.db, sid)
        assert s["status"] == "error" and s["server_close_code"] == 1009 and s["client_close_code"] == 1009
        with Store(proxy.db) as store:
            (frame,) = store.frames(sid)
        assert frame.data == big and frame.direction == "server"


@pytest.mark.parametrize("direction", ["client", "server"])
async def test_a_message_of_exactly_16_mib_passes(direction: str, tmp_path: Path) -> None:
    """A message of exactly 16 MiB, the documented limit, is relayed whole in each direction."""
    exact = "A" * (16 * MiB)
    got: list[str] = []

    async def script(ws: web.WebSocketResponse, request: web.Request) -> None:
        if direction == "server":
            await ws.send_str(exact)
        msg = await ws.receive()
        if msg.type is WSMsgType.TEXT:
            got.append(msg.data)
            await ws.send_str("ok")

    async with ws_upstream(script) as url, running(tmp_path / "rt.db", url) as proxy:
        async with aiohttp.ClientSession() as http:
            sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x", max_msg_size=0)
            if direction == "client":
                await sock.send_str(exact)
                msg = await asyncio.wait_for(sock.receive(), 10)
                assert msg.data == "ok" and got == [exact]
            else:
                msg = await asyncio.wait_for(sock.receive(), 10)
                assert msg.type is WSMsgType.TEXT and msg.data == exact
            await sock.close()


async def test_deeply_nested_json_is_forwarded_and_recorded(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """JSON nested far beyond any parser's recursion limit is relayed byte for byte and recorded (with no type),
    and the session goes on recording normally after it."""
    depth = 100_000
    nested = '{"type":"conversation.item.create","item":' + '{"a":' * depth + "1" + "}" * depth + "}"
    arrays = "[" * depth + "]" * depth
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
        await sock.receive()
        await sock.send_str(nested)
        await sock.send_str(arrays)
        await sock.send_str('{"type":"input_audio_buffer.clear"}')
        for _ in range(20):
            msg = await asyncio.wait_for(sock.receive(), 10)
            if msg.type is not WSMsgType.TEXT or "input_audio_buffer.cleared" in msg.data:
                break
        assert "input_audio_buffer.cleared" in msg.data
        await sock.close()
    (sid,) = await proxy.settle()
    assert upstream.connections[0].received == [nested, arrays, '{"type":"input_audio_buffer.clear"}']
    with Store(proxy.db) as store:
        rows = [r for r in store.event_rows(sid) if r["direction"] == "client"]
        frames = [f.data for f in store.frames(sid) if f.direction == "client"]
    assert frames == upstream.connections[0].received
    assert [r["type"] for r in rows] == [None, None, "input_audio_buffer.clear"]
    assert session_row(proxy.db, sid)["status"] == "closed"


async def test_a_flood_of_tiny_frames_is_forwarded_and_recorded_completely(tmp_path: Path) -> None:
    """Twenty thousand one-byte frames sent as fast as possible all reach the upstream and are recorded gap-free."""
    n = 20_000
    received: list[str] = []

    async def script(ws: web.WebSocketResponse, request: web.Request) -> None:
        for _ in range(n + 1):
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                return
            received.append(msg.data)
            if len(received) == n:
                await ws.send_str("all here")

    async with ws_upstream(script) as url, running(tmp_path / "rt.db", url) as proxy:
        async with aiohttp.ClientSession() as http:
            sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
            for i in range(n):
                await sock.send_str(chr(33 + i % 90))
            msg = await asyncio.wait_for(sock.receive(), 30)
            assert msg.data == "all here"
            await sock.close()
        (sid,) = await proxy.settle()
        assert received == [chr(33 + i % 90) for i in range(n)]
        s = session_row(proxy.db, sid)
        assert (s["client_events"], s["unrecorded"] or 0) == (n, 0)
        assert db_rows(proxy.db, "SELECT count(*), min(seq), max(seq) FROM events WHERE direction='client'") == [
            (n, 0, n - 1)
        ]


# --- handshakes and paths ----------------------------------------------------------------------

UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
HOSTILE = {
    "a 100 KB header": b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n"
    + UPGRADE
    + b"X-Big: "
    + b"a" * 100_000
    + b"\r\n\r\n",
    "500 headers of 1 KB": b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n"
    + UPGRADE
    + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(500))
    + b"\r\n",
    "a NUL in a header": b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"X-Evil: a\x00b\r\n\r\n",
    "a space in a header name": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
    "an obsolete folded header": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "Content-Length with chunked": b"POST /v1/realtime/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "a 100 KB path": b"GET /v1/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "an absolute-form target": b"GET http://elsewhere.invalid/v1/realtime HTTP/1.1\r\nHost: elsewhere.invalid\r\n"
    + UPGRADE
    + b"\r\n",
    "an absolute-form REST target": b"GET http://elsewhere.invalid/v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
}


async def test_malicious_handshakes_get_a_clear_4xx_and_never_reach_elsewhere(
    proxy: RunningProxy, upstream: ScriptedUpstream
) -> None:
    """Oversized, malformed and smuggling requests get an error status, nothing reaches the upstream or any other
    host, and the proxy goes on serving a normal session afterwards."""
    for name, raw in HOSTILE.items():
        answer = await raw_request(proxy.port, raw)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 600 and status != 101, (name, answer[:200])
        if b"elsewhere" not in raw:
            assert 400 <= status < 500, (name, answer[:200])
    assert upstream.connections == [] and upstream.http_requests == []
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
        assert "session.created" in (await sock.receive()).data
        await sock.close()
    await proxy.settle()


async def test_a_host_header_cannot_choose_the_upstream(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """Host and X-Forwarded-Host naming another server change nothing: the request goes to --upstream only."""
    answer = await raw_request(
        proxy.port,
        b"GET /v1/nothing HTTP/1.1\r\nHost: elsewhere.invalid\r\nX-Forwarded-Host: elsewhere.invalid\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 404") and b"no route" in answer
    assert [r["path"] for r in upstream.http_requests] == ["/v1/nothing"]
    assert upstream.http_requests[0]["headers"]["Host"] == f"127.0.0.1:{upstream.port}"


async def test_malicious_handshakes_leave_no_traceback_in_the_proxy_log(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """The real command answers malformed requests without writing tracebacks to its log."""
    p = spawn_proxy(["--db", str(tmp_path / "rt.db"), "--upstream", upstream.url])
    proxy_process.append(p)
    for raw in HOSTILE.values():
        await raw_request(p.port, raw)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{p.port}/v1/models") as resp:
            assert resp.status == 404
    code, _, err = p.stop()
    assert code == 0
    assert "Traceback" not in err, err[:2000]


TRAVERSALS = ("/v1/../../etc/passwd", "/v1/%2e%2e/%2e%2e/etc/passwd", "/v1/..%2f..%2fetc%2fpasswd")


async def test_traversal_paths_only_ever_reach_the_upstream(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """Paths with `..` are relayed to the upstream (REST and WebSocket) and answered by it; no local file is read."""
    for path in TRAVERSALS:
        answer = await raw_request(proxy.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 404") and b"no route" in answer and b"root:" not in answer, answer
    assert len(upstream.http_requests) == len(TRAVERSALS)
    for path in TRAVERSALS:
        reader, writer, head = await raw_handshake(proxy.port, f"{path}?model=x")
        assert head.startswith(b"HTTP/1.1 101")
        assert b"session.created" in (await read_server_frame(reader))[1]
        writer.write(ws_frame(0x8, (1000).to_bytes(2, "big")))
        await writer.drain()
        await read_server_frame(reader)
        writer.close()
    await proxy.settle(len(TRAVERSALS))
    assert len(upstream.connections) == len(TRAVERSALS)
    with Store(proxy.db) as store:  # recorded as aiohttp's request.path shows it: percent-decoded
        assert sorted(r["path"] for r in store.sessions()) == sorted(unquote(p) for p in TRAVERSALS)


async def test_traversal_paths_are_relayed_verbatim(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """The upstream sees exactly the path the client sent, dot segments and all."""
    path = "/v1/../../etc/passwd"
    await raw_request(proxy.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    reader, writer, head = await raw_handshake(proxy.port, f"{path}?model=x")
    writer.close()
    await wait_until(lambda: bool(upstream.connections), what="the upstream connection")
    assert upstream.http_requests[0]["path"] == path
    assert upstream.connections[0].path == path


# --- files and databases -----------------------------------------------------------------------


def good_recording(path: Path) -> list[bytes]:
    frames = [Frame(0, 0.0, Direction.SERVER, '{"type":"session.created","session":{}}')]
    for i in range(1, 40):
        frames.append(
            Frame(
                i,
                i / 100,
                Direction.CLIENT if i % 2 else Direction.SERVER,
                orjson.dumps(
                    {"type": "session.update" if i % 2 else "session.updated", "session": {"instructions": f"turn {i}"}}
                ).decode(),
            )
        )
    write_recording(path, {"id": "20260101-000000-aaaaaa", "model": "m"}, frames)
    return path.read_bytes().splitlines()


TAMPERED = {
    "invalid UTF-8": (30, lambda line: line.replace(b"turn", b"t\xffrn"), "not valid JSON"),
    "bad base64": (25, lambda line: b'{"t": 0.3, "dir": "client", "binary": "not*base64"}', '"binary" must be base64'),
    "event not an object": (
        20,
        lambda line: b'{"t": 0.3, "dir": "client", "event": [1]}',
        '"event" must be a JSON object',
    ),
    "no payload": (35, lambda line: b'{"t": 0.4, "dir": "server"}', 'a frame needs "event", "text" or "binary"'),
    "time as text": (12, lambda line: b'{"t": "soon", "dir": "server", "text": "x"}', '"t" must be a number'),
    "a NUL byte": (39, lambda line: line[:10] + b"\x00" + line[10:], "not valid JSON"),
}


def test_tampered_recordings_are_refused_by_import_and_replay_with_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tampered line deep in a recording: `import` and `replay` name file and line in one line, exit 2, and the
    database holds exactly what it held before."""
    from rtproxy.cli import run as cli

    def inproc(*args: str) -> subprocess.CompletedProcess[str]:
        code = cli(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    db = tmp_path / "rt.db"
    for n, (case, (lineno, change, reason)) in enumerate(sorted(TAMPERED.items())):
        path = tmp_path / f"rec{n}.jsonl"
        lines = good_recording(path)
        assert inproc("import", str(path), "--db", str(db)).returncode == 0
        before = db_rows(db, "SELECT count(*) FROM events"), db_rows(db, "SELECT count(*) FROM sessions")
        lines[lineno - 1] = change(lines[lineno - 1])
        path.write_bytes(b"\n".join(lines) + b"\n")
        real = n == 0  # one case through the real console script, the rest in-process (same code path)
        for args in (("import", str(path), "--db", str(db)), ("replay", str(path), "--port", "0", "--once")):
            one_line_error(run(*args) if real else inproc(*args), f"{path}:{lineno}:", reason)
        after = db_rows(db, "SELECT count(*) FROM events"), db_rows(db, "SELECT count(*) FROM sessions")
        assert after == before, case


def test_a_database_from_a_future_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    """A database written by a newer rtproxy (higher user_version) is refused by `sessions`, `proxy`, `show` and
    `redact` with one line naming it, exit 2, and is left as it was."""
    db = tmp_path / "future.db"
    with Store(db, create=True):
        pass
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    snapshot = db.read_bytes()
    for args in (("sessions",), ("show", "latest"), ("redact", "latest"), ("proxy", "--port", "0")):
        r = run(*args, "--db", str(db))
        one_line_error(r, str(db), "newer rtproxy")
    assert db.read_bytes() == snapshot
    assert db_rows(db, "PRAGMA user_version") == [(99,)]
