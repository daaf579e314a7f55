"""The proxy's edges: refusals, close codes, odd frames, limits, subprotocols, REST, concurrency."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from rtproxy.store import Store
from tests.conftest import RunningProxy, start_proxy
from tests.test_close_shapes import CLOSE, TEXT, RawUpstream, code_of, raw_client
from tests.upstream import ScriptedUpstream

#: A WebSocket upgrade request, by hand (plain HTTP client: to see the proxy's answer as it is).
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def ws(
    proxy: RunningProxy, query: str = "model=gpt-realtime", **kwargs: object
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    sock = await http.ws_connect(f"{proxy.ws_base}/realtime?{query}", max_msg_size=0, **kwargs)  # type: ignore[arg-type]
    return http, sock


def session(db: Path, sid: str) -> dict[str, object]:
    with Store(db) as store:
        return store.session(sid)


async def test_refusal_status_and_body_reach_the_client(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """An upstream 401 comes back to the client with its JSON body; the attempt is a `rejected` session."""
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{proxy.ws_base}/realtime?model=x&reject=401")
        assert info.value.status == 401
        async with http.get(
            f"{proxy.http_base}/v1/realtime?model=x&reject=401",
            headers=UPGRADE,
        ) as resp:
            body = await resp.json()
            assert resp.status == 401 and body["error"]["message"] == "rejected with 401"
    await asyncio.to_thread(proxy.recorder.flush)
    with Store(proxy.db) as store:
        rows = store.sessions()
    assert len(rows) == 2 and all(r["status"] == "rejected" for r in rows)
    assert "401" in str(rows[0]["reason"]) and "rejected with 401" in str(rows[0]["reason"])


async def test_unreachable_upstream_is_a_clear_502(tmp_path: Path) -> None:
    """With nothing listening upstream the client gets 502 and a JSON error naming the upstream."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    running, runner = await start_proxy(tmp_path / "rt.db", f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{running.http_base}/v1/realtime?model=x",
                headers=UPGRADE,
            ) as resp:
                body = await resp.json()
        assert resp.status == 502
        assert f"127.0.0.1:{port}" in body["error"]["message"]
        await asyncio.to_thread(running.recorder.flush)
        with Store(running.db) as store:
            (row,) = store.sessions()
        assert row["status"] == "rejected" and "cannot reach upstream" in row["reason"]
    finally:
        await runner.cleanup()
        running.recorder.close()


async def test_upstream_close_code_reaches_client(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """The upstream's close code and reason are passed to the client and stored on the session."""
    http, sock = await ws(proxy, "model=x&close_after=1&close_code=4001&close_reason=go+away")
    try:
        await sock.send_str('{"type":"session.update","session":{}}')
        while (msg := await sock.receive()).type is WSMsgType.TEXT:
            pass
        assert msg.type is WSMsgType.CLOSE and msg.data == 4001 and msg.extra == "go away"
    finally:
        await sock.close()
        await http.close()
    (sid,) = await proxy.settle()
    s = session(proxy.db, sid)
    assert s["closed_by"] == "upstream" and s["server_close_code"] == 4001 and s["client_close_code"] == 4001
    assert s["server_close_reason"] == "go away"


async def test_client_close_code_reaches_upstream(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """A client's close code crosses to the upstream and is stored on the session."""
    http, sock = await ws(proxy)
    await sock.receive()  # session.created
    await sock.close(code=4321, message=b"bye now")
    await http.close()
    (sid,) = await proxy.settle()
    await asyncio.wait_for(upstream.connections[0].closed.wait(), 5)
    assert upstream.connections[0].close_code == 4321
    s = session(proxy.db, sid)
    assert s["closed_by"] == "client" and s["client_close_code"] == 4321 and s["client_close_reason"] == "bye now"


async def test_upstream_vanishing_closes_client_with_1011(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """An upstream that drops TCP without a close frame gets the client closed with 1011, session `error`."""
    http, sock = await ws(proxy, "model=x&vanish_after=1")
    try:
        await sock.send_str('{"type":"session.update","session":{}}')
        while (msg := await sock.receive()).type is WSMsgType.TEXT:
            pass
        assert msg.type is WSMsgType.CLOSE and msg.data == 1011
    finally:
        await http.close()
    (sid,) = await proxy.settle()
    s = session(proxy.db, sid)
    assert s["status"] == "error" and s["server_close_code"] == 1006 and s["client_close_code"] == 1011
    assert "vanished" in str(s["reason"])


async def test_odd_frames_are_forwarded_and_recorded_as_sent(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """Non-JSON text, JSON that is not an object and binary frames pass unchanged and are recorded with no type."""
    http, sock = await ws(proxy)
    try:
        await sock.receive()
        await sock.send_str("this is not json {")
        await sock.send_str("[1, 2, 3]")
        await sock.send_bytes(b"\x00\x01binary\xff")
        echoed = None
        while echoed is None:
            msg = await sock.receive()
            if msg.type is WSMsgType.BINARY:
                echoed = msg.data
        assert echoed == b"\x00\x01binary\xff"
    finally:
        await sock.close()
        await http.close()
    (sid,) = await proxy.settle()
    assert upstream.connections[0].received[:3] == ["this is not json {", "[1, 2, 3]", b"\x00\x01binary\xff"]
    with Store(proxy.db) as store:
        rows = store.event_rows(sid)
        frames = list(store.frames(sid))
    client_rows = [r for r in rows if r["direction"] == "client"]
    assert [r["type"] for r in client_rows[:3]] == [None, None, None]
    assert [f.data for f in frames if f.direction == "client"][:3] == upstream.connections[0].received[:3]


async def test_16_mib_frame_passes_and_a_larger_one_is_refused_with_1009(
    proxy: RunningProxy, upstream: ScriptedUpstream
) -> None:
    """A 16 MiB message is relayed whole; one byte more closes the client with 1009 and marks the session."""
    audio = "A" * (16 * 1024 * 1024 - 60)
    big = orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode()
    assert len(big) <= 16 * 1024 * 1024
    http, sock = await ws(proxy)
    try:
        await sock.receive()
        await sock.send_str(big)
        await sock.send_str('{"type":"input_audio_buffer.clear"}')
        while (msg := await sock.receive()).type is WSMsgType.TEXT:
            if '"input_audio_buffer.cleared"' in msg.data:
                break
        assert upstream.connections[0].received[0] == big
        try:  # the proxy refuses from the frame header, possibly before the client has written it all
            await sock.send_str(big + " " * (16 * 1024 * 1024 - len(big) + 1))
        except ConnectionError:
            pass
        while (msg := await sock.receive()).type is WSMsgType.TEXT:
            pass
        assert msg.type is not WSMsgType.CLOSE or msg.data == 1009
    finally:
        await http.close()
    (sid,) = await proxy.settle()
    s = session(proxy.db, sid)
    assert s["status"] == "error" and s["client_close_code"] == 1009
    with Store(proxy.db) as store:
        first = next(store.frames(sid, after_seq=0))
    assert first.data == big


async def test_browser_subprotocols_are_relayed_and_echoed(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """A browser offers `realtime` plus a key subprotocol: the upstream sees both, the client gets `realtime`,
    and no key reaches the disk."""
    key = "sk-browser-" + secrets.token_urlsafe(20)
    protocols = ("realtime", f"openai-insecure-api-key.{key}", "openai-beta.realtime-v1")
    http, sock = await ws(proxy, protocols=protocols)
    try:
        assert sock.protocol == "realtime"
        await sock.receive()
    finally:
        await sock.close()
        await http.close()
    (sid,) = await proxy.settle()
    up = upstream.connections[0]
    assert [p.strip() for p in up.headers["Sec-WebSocket-Protocol"].split(",")] == list(protocols)
    s = session(proxy.db, sid)
    assert s["dialect"] == "beta" and s["subprotocol"] == "realtime"
    blob = b"".join(p.read_bytes() for p in proxy.db.parent.glob("rt.db*"))
    assert key.encode() not in blob


async def test_azure_query_key_is_relayed_but_not_recorded(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """An Azure path with `api-key` in the query reaches the upstream intact; the database keeps it masked."""
    key = secrets.token_hex(16)
    http, sock = await ws(proxy, f"api-version=2025-04-01-preview&deployment=gpt-rt&api-key={key}")
    await sock.receive()
    await sock.close()
    await http.close()
    (sid,) = await proxy.settle()
    assert upstream.connections[0].query["api-key"] == key
    s = session(proxy.db, sid)
    assert s["model"] == "gpt-rt" and key not in str(s["query"]) and key[-4:] in str(s["query"])
    blob = b"".join(p.read_bytes() for p in proxy.db.parent.glob("rt.db*"))
    assert key.encode() not in blob


async def test_rest_calls_are_relayed_and_recorded_without_secrets(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str
) -> None:
    """A client_secrets POST reaches the upstream; its ephemeral key reaches the client but not the database."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=api_key, base_url=f"{proxy.http_base}/v1")
    secret = await client.realtime.client_secrets.create(session={"type": "realtime", "model": "gpt-realtime"})
    assert secret.value.startswith("ek_")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{proxy.http_base}/v1/stream") as resp:
            assert await resp.text() == "chunk 0\nchunk 1\nchunk 2\n"
    await asyncio.to_thread(proxy.recorder.flush)
    assert upstream.http_requests[0]["path"] == "/v1/realtime/client_secrets"
    assert orjson.loads(upstream.http_requests[0]["body"])["session"]["model"] == "gpt-realtime"
    with Store(proxy.db) as store:
        exchanges = store.http_exchanges()
    assert [(e["method"], e["path"], e["status"]) for e in exchanges] == [
        ("POST", "/v1/realtime/client_secrets", 200),
        ("GET", "/v1/stream", 200),
    ]
    blob = b"".join(p.read_bytes() for p in proxy.db.parent.glob("rt.db*"))
    assert secret.value.encode() not in blob and api_key.encode() not in blob
    assert secret.value[-4:] in exchanges[0]["response_body"]


async def test_many_concurrent_sessions_are_isolated(proxy: RunningProxy, upstream: ScriptedUpstream) -> None:
    """Twenty sessions at once, one of them failing, each recorded completely and separately."""

    async def one(i: int) -> None:
        query = "model=x&vanish_after=1" if i == 0 else f"model=m{i}"
        http, sock = await ws(proxy, query)
        try:
            await sock.receive()
            for n in range(5):
                update = {"type": "session.update", "session": {"instructions": f"{i}-{n}"}}
                await sock.send_str(orjson.dumps(update).decode())
            got = 0
            while got < 5:
                msg = await sock.receive()
                if msg.type is not WSMsgType.TEXT:
                    break
                got += '"session.updated"' in msg.data
        finally:
            await sock.close()
            await http.close()

    await asyncio.gather(*(one(i) for i in range(20)))
    await proxy.settle(20)
    with Store(proxy.db) as store:
        rows = store.sessions()
        assert len(rows) == 20
        healthy = [r for r in rows if r["model"] != "x"]
        assert len(healthy) == 19 and all(r["status"] == "closed" for r in healthy)
        for r in healthy:
            frames = list(store.frames(r["id"]))
            assert [f.seq for f in frames] == list(range(len(frames)))
            assert sum(f.direction == "client" for f in frames) == 5 == r["client_events"]
            ours = [orjson.loads(f.data)["session"]["instructions"] for f in frames if f.direction == "client"]
            assert {o.split("-")[0] for o in ours} == {r["model"][1:]}


# --- a side whose connection fails under a flood ----------------------------------------------

BIG = 200_000


def big_frame(i: int) -> str:
    """A 200 KB audio delta, numbered so each one can be told apart."""
    return orjson.dumps({"type": "response.output_audio.delta", "n": i, "delta": "A" * BIG}).decode()


@asynccontextmanager
async def raw_upstream_proxy(db: Path) -> AsyncIterator[tuple[RawUpstream, RunningProxy]]:
    async with RawUpstream() as up:
        running, runner = await start_proxy(db, up.url)
        try:
            yield up, running
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()


async def ended_session(proxy: RunningProxy, timeout: float = 10.0) -> dict[str, object]:
    """The one session's row once it is no longer `open` (the database polled, bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.to_thread(proxy.recorder.flush)
        with Store(proxy.db) as store:
            rows = store.sessions()
        if len(rows) == 1 and rows[0]["status"] != "open":
            return rows[0]
        assert time.monotonic() < deadline, f"the session is still open: {rows}"
        await asyncio.sleep(0.05)  # polling the database, bounded above by the deadline


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)  # polling a counter the flood task bumps, bounded above


async def test_client_that_stops_reading_then_resets_ends_its_session(tmp_path: Path) -> None:
    """A client that stops reading while 200 KB frames flow and then resets its connection (RST) ends its
    session as `error` (client 1006, upstream closed with 1011), and only frames the proxy forwarded are
    recorded."""
    async with raw_upstream_proxy(tmp_path / "rt.db") as (up, proxy):
        client = await raw_client(proxy.port)
        server = await up.next_peer()
        written = 0

        async def flood() -> None:
            nonlocal written
            for i in range(400):
                await server.send(TEXT, big_frame(i).encode())
                written += 1

        flooding = asyncio.ensure_future(flood())
        assert (await client.recv())[0] == TEXT  # the flow has started; the client reads nothing more
        await wait_until(lambda: written >= 20, "the upstream could not push 4 MB")
        client.reset()
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)

        async def upstream_side() -> bytes:
            payload = await server.recv_close()
            await server.send(CLOSE, payload[:2])
            return payload

        closed, row = await asyncio.gather(upstream_side(), ended_session(proxy))
        assert code_of(closed) == 1011  # the other pump was not orphaned: the upstream was closed
    assert row["status"] == "error" and row["ended_at"] and row["closed_by"] == "client"
    assert row["client_close_code"] == 1006 and row["server_close_code"] == 1011
    with Store(proxy.db) as store:
        frames = [f for f in store.frames(str(row["id"])) if f.direction == "server"]
    assert len(frames) == row["server_events"] and 1 <= len(frames) <= written
    assert [orjson.loads(f.data)["n"] for f in frames] == list(range(len(frames)))


async def test_upstream_that_stops_reading_then_resets_ends_the_session(tmp_path: Path) -> None:
    """An upstream that stops reading while a client sends 200 KB frames and then resets its connection ends the
    session as `error` (upstream 1006, the client closed with 1011), and the recorded client frames are the ones
    forwarded, in order."""
    async with raw_upstream_proxy(tmp_path / "rt.db") as (up, proxy):
        http = aiohttp.ClientSession()
        try:
            sock = await http.ws_connect(f"{proxy.ws_base}/realtime?model=x")
            server = await up.next_peer()
            sent = 0

            async def flood() -> None:
                nonlocal sent
                for i in range(400):
                    try:
                        await sock.send_str(big_frame(i))
                    except (ConnectionError, aiohttp.ClientError):
                        return
                    sent += 1

            flooding = asyncio.ensure_future(flood())
            await wait_until(lambda: sent >= 20, "the client could not push 4 MB")
            server.reset()
            msg = await asyncio.wait_for(sock.receive(), 10)
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)
            assert msg.type is WSMsgType.CLOSE and msg.data == 1011
            row = await ended_session(proxy)
        finally:
            await http.close()
    assert row["status"] == "error" and row["ended_at"] and row["closed_by"] == "upstream"
    assert row["server_close_code"] == 1006 and row["client_close_code"] == 1011
    with Store(proxy.db) as store:
        frames = [f for f in store.frames(str(row["id"])) if f.direction == "client"]
    assert len(frames) == row["client_events"] and len(frames) <= sent
    assert [orjson.loads(f.data)["n"] for f in frames] == list(range(len(frames)))
