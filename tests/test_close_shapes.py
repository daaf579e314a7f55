"""Every close shape, both ways, with a client and an upstream that speak raw WebSocket frames.

aiohttp cannot send a close frame without a status code, nor an invalid code, so the peers here write
RFC 6455 framing by hand over plain asyncio streams: the exact close payload each side receives is checked,
and so is the session row in the SQLite file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rtproxy.store import Store
from tests.conftest import RunningProxy, start_proxy

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
TIMEOUT = 5.0


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def encode_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One final frame: FIN, opcode, length, the mask key and masked payload when `masked` (a client's)."""
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([0x80 | opcode, bit | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


@dataclass
class RawPeer:
    """One end of a WebSocket connection, framed by hand; `masked` for a client."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    masked: bool
    received: list[tuple[int, bytes]] = field(default_factory=list)

    async def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(encode_frame(opcode, payload, self.masked))
        await self.writer.drain()

    async def recv(self) -> tuple[int, bytes]:
        """The next frame (opcode, unmasked payload)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        key = await self.reader.readexactly(4) if second & 0x80 else b""
        payload = await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)
        if key:
            stream = (key * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
        self.received.append((first & 0x0F, payload))
        return first & 0x0F, payload

    async def recv_close(self, limit: int = 1000) -> bytes:
        """The payload of the first close frame, skipping (at most `limit`) data and ping frames."""
        for _ in range(limit):
            opcode, payload = await self.recv()
            if opcode == CLOSE:
                return payload
        raise AssertionError(f"no close frame in {limit} frames")

    async def at_eof(self) -> bool:
        """Does the other end close the TCP connection (within the timeout)?"""
        try:
            rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError, ConnectionError):
            return False
        return rest == b""

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0, then close)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def raw_client(port: int, path: str = "/v1/realtime?model=x") -> RawPeer:
    """A WebSocket client over a plain TCP stream: the handshake by hand, then masked frames."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).decode()
    assert head.startswith("HTTP/1.1 101"), head
    assert f"sec-websocket-accept: {accept_key(key)}".lower() in head.lower()
    return RawPeer(reader, writer, masked=True)


class RawUpstream:
    """A WebSocket server over plain asyncio streams: each accepted connection is queued for the test."""

    def __init__(self) -> None:
        self.peers: asyncio.Queue[RawPeer] = asyncio.Queue()
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        while not self.peers.empty():
            self.peers.get_nowait().writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).decode()
        self.requests.append(head)
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
        )
        await writer.drain()
        await self.peers.put(RawPeer(reader, writer, masked=False))

    async def next_peer(self) -> RawPeer:
        return await asyncio.wait_for(self.peers.get(), TIMEOUT)


@pytest.fixture
async def raw_rig(tmp_path: Path) -> AsyncIterator[tuple[RawUpstream, RunningProxy]]:
    """A raw-frame upstream and the proxy in-process in front of it."""
    async with RawUpstream() as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            yield up, running
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()


async def connect(up: RawUpstream, proxy: RunningProxy) -> tuple[RawPeer, RawPeer]:
    """A raw client through the proxy and the upstream's end of the same session."""
    client = await raw_client(proxy.port)
    return client, await up.next_peer()


def session_row(db: Path, sid: str) -> dict[str, object]:
    with Store(db) as store:
        return store.session(sid)


INVALID_CODES = (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)


@dataclass(frozen=True)
class Shape:
    """A close frame one side sends, and what the proxy makes of it."""

    name: str
    sent: bytes
    relayed: bytes | None  # the other side's close payload exactly; None: only its code is checked
    relayed_code: int | None  # the code in the other side's close frame (None: no code at all)
    echoed_code: int | None  # the code in the close frame the sender gets back
    recorded: tuple[int, int]  # (sender's, other side's) close code in the session row
    status: str


SHAPES = [
    Shape("no status code", b"", b"", None, None, (1005, 1005), "closed"),
    Shape("code only", close_payload(1000), close_payload(1000), 1000, 1000, (1000, 1000), "closed"),
    Shape("going away", close_payload(1001), close_payload(1001), 1001, 1001, (1001, 1001), "closed"),
    Shape(
        "code and reason",
        close_payload(4321, b"bye now"),
        close_payload(4321, b"bye now"),
        4321,
        4321,
        (4321, 4321),
        "closed",
    ),
    Shape(
        "utf-8 reason",
        close_payload(3000, "ciao ✓".encode()),
        close_payload(3000, "ciao ✓".encode()),
        3000,
        3000,
        (3000, 3000),
        "closed",
    ),
    *(
        Shape(f"invalid code {code}", close_payload(code, b"x"), None, 1002, 1002, (1002, 1002), "error")
        for code in INVALID_CODES
    ),
    Shape("one-byte payload", b"\x03", None, 1002, 1002, (1002, 1002), "error"),
    Shape("reason not utf-8", close_payload(1000, b"\xff\xfe"), None, 1007, 1007, (1007, 1007), "error"),
]


def code_of(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if payload else None


@pytest.mark.parametrize("closer", ["client", "upstream"])
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
async def test_close_shape_crosses_the_proxy(
    raw_rig: tuple[RawUpstream, RunningProxy], closer: str, shape: Shape
) -> None:
    """A close frame of each shape, sent by either side, reaches the other side as a valid close frame (no code
    for no code, the same code and reason for a valid one, 1002/1007 for a broken one), the sender gets a valid
    close back, both TCP connections end, and the session row holds the codes each side's close frame carried."""
    up, proxy = raw_rig
    client, server = await connect(up, proxy)
    sender, other = (client, server) if closer == "client" else (server, client)
    await sender.send(TEXT, b'{"type":"session.update","session":{}}')
    assert (await other.recv()) == (TEXT, b'{"type":"session.update","session":{}}')
    await sender.send(CLOSE, shape.sent)

    async def sender_side() -> bytes:
        got = await sender.recv_close()
        sender.close()
        return got

    async def other_side() -> bytes:
        got = await other.recv_close()
        try:
            await other.send(CLOSE, got[:2])
        except ConnectionError:
            pass  # the proxy may close TCP right after its close frame
        eof = await other.at_eof()
        other.close()
        assert eof, "the proxy left the connection open"
        return got

    echoed, relayed = await asyncio.gather(sender_side(), other_side())
    assert code_of(relayed) == shape.relayed_code
    if shape.relayed is not None:
        assert relayed == shape.relayed
    else:
        assert b"broke the protocol" in relayed
        relayed[2:].decode("utf-8")  # a reason the peer can read
    assert code_of(echoed) == shape.echoed_code
    if shape.relayed is not None:
        assert echoed == shape.sent  # a valid close is echoed as it came

    (sid,) = await proxy.settle()
    row = session_row(proxy.db, sid)
    mine, theirs = ("client", "server") if closer == "client" else ("server", "client")
    assert (row[f"{mine}_close_code"], row[f"{theirs}_close_code"]) == shape.recorded
    assert row["closed_by"] == closer and row["status"] == shape.status and row["ended_at"]
    if shape.status == "closed":
        reason = shape.sent[2:].decode()
        assert row[f"{mine}_close_reason"] == reason and row[f"{theirs}_close_reason"] == reason
    elif shape.name.startswith("invalid code"):
        assert f"Invalid close code: {code_of(shape.sent)}" in str(row["reason"])
    assert row["client_events"] == (1 if closer == "client" else 0)
    assert row["server_events"] == (1 if closer == "upstream" else 0)


@pytest.mark.parametrize("closer", ["client", "upstream"])
async def test_vanishing_side_gets_the_other_closed_with_1011(
    raw_rig: tuple[RawUpstream, RunningProxy], closer: str
) -> None:
    """A side that resets its connection without a close frame gets the other side a 1011 close with a readable
    reason; the session is `error` with 1006 for the side that vanished."""
    up, proxy = raw_rig
    client, server = await connect(up, proxy)
    gone, other = (client, server) if closer == "client" else (server, client)
    gone.reset()
    payload = await other.recv_close()
    assert code_of(payload) == 1011
    assert f"{closer} ".encode() in payload and len(payload) <= 125
    payload[2:].decode("utf-8")
    other.close()
    (sid,) = await proxy.settle()
    row = session_row(proxy.db, sid)
    mine, theirs = ("client", "server") if closer == "client" else ("server", "client")
    assert row[f"{mine}_close_code"] == 1006 and row[f"{theirs}_close_code"] == 1011
    assert row["status"] == "error" and row["closed_by"] == closer and row["ended_at"]


async def test_a_key_in_a_close_reason_crosses_but_is_not_stored(raw_rig: tuple[RawUpstream, RunningProxy]) -> None:
    """A close reason that quotes a key reaches the upstream unchanged, and the session row keeps it masked."""
    up, proxy = raw_rig
    client, server = await connect(up, proxy)
    key = "sk-proj-" + base64.urlsafe_b64encode(os.urandom(24)).decode()
    sent = close_payload(4000, f"bad key {key}".encode())
    assert len(sent) <= 125
    await client.send(CLOSE, sent)
    assert await server.recv_close() == sent
    await server.send(CLOSE, sent[:2])
    assert await client.recv_close() == sent
    client.close()
    (sid,) = await proxy.settle()
    row = session_row(proxy.db, sid)
    assert row["client_close_code"] == 4000 and row["client_close_reason"] == f"bad key ****{key[-4:]}"
    blob = b"".join(p.read_bytes() for p in proxy.db.parent.glob("rt.db*"))
    assert key[:-4].encode() not in blob
