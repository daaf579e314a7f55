"""The replay server: a recording served as a fake server of its API (the I/O around :mod:`rtproxy.replay.player`).

Any path and query is accepted the way the real server accepts them, and the
``realtime`` subprotocol is echoed when offered (browsers need it). Each
connection gets a :class:`~rtproxy.replay.player.Player` over a script: what
the client sends goes in, what the player answers goes out, at once
(``instant``) or at the recorded offsets scaled by ``speed`` (``recorded``).

A recording of several connections serves the k-th connection with the k-th
recorded one (where the recorded ones differ in path and query, with the first
not yet served that has this connection's path and query); once all are served,
later connections get the last. A recording of one connection serves every
connection with it. A connection the recorded server closed (or dropped: 1006)
is closed the same way once its script has played, so a client that reconnects
after a drop goes on to the next recorded connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from ..errors import ReplayError
from ..protocols.secrets import redact_query
from ..recording import iter_connections
from ..store import Store
from .player import Player, Send
from .script import Report, Script, build_script

PACES = ("instant", "recorded")
DROPPED = 1006
MAX_MESSAGE = 64 * 1024 * 1024


def load_script(path: str | Path) -> Script:
    """The script of a JSONL recording's first connection (RecordingError names file and line; ReplayError if
    empty)."""
    return load_scripts(path)[0]


def load_scripts(path: str | Path) -> list[Script]:
    """One script per connection of a JSONL recording, in order (ReplayError if none has a server event)."""
    scripts = [
        build_script(frames, session=session, source=f"{path} connection {k}", empty_ok=True)
        for k, (session, frames) in enumerate(iter_connections(path), 1)
    ]
    if len(scripts) == 1 and scripts[0].server_events:
        return [replace(scripts[0], source=str(path))]
    if all(s.server_events == 0 for s in scripts):
        raise ReplayError(f"{path}: no server events to replay")
    return scripts


def load_script_from_db(db: str | Path, ref: str) -> Script:
    """The script of a recorded session (SessionNotFound for an unknown SESSION)."""
    with Store(db) as store:
        sid = store.resolve(ref)
        return build_script(store.frames(sid), session=store.session(sid), source=f"{db}#{sid}")


class _Sender:
    """Ships a player's frames: inline for instant pacing, from a timed queue for recorded pacing."""

    def __init__(self, ws: web.WebSocketResponse, t0: float, pace: str, speed: float, transport: Any = None) -> None:
        self.ws, self.t0, self.speed, self.transport = ws, t0, speed, transport
        self.queue: asyncio.Queue[tuple[float, str | bytes | tuple[int, str]]] | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_due = 0.0
        if pace == "recorded":
            self.queue = asyncio.Queue()
            self.task = asyncio.ensure_future(self._drain())

    async def send(self, sends: list[Send], at: float) -> None:
        """Send (or schedule, relative to `at` s after connect) a batch of frames."""
        if self.queue is None:
            for s in sends:
                await self._ship(s.data)
            return
        for s in sends:
            self.last_due = max(self.last_due, at + s.delay / self.speed)
            self.queue.put_nowait((self.last_due, s.data))

    async def close(self, code: int, reason: str) -> None:
        """Close as the recorded server did, once everything before is sent."""
        if self.queue is None:
            await self._close(code, reason)
        else:
            self.queue.put_nowait((self.last_due, (code, reason)))

    async def _close(self, code: int, reason: str) -> None:
        if code == DROPPED:  # no close frame: the connection just ends, as the recorded one did
            if self.transport is not None:
                self.transport.abort()
            return
        try:
            await self.ws.close(code=code, message=reason.encode()[:123])
        except (ConnectionError, RuntimeError):
            pass

    async def _ship(self, data: str | bytes) -> None:
        try:
            if isinstance(data, str):
                await self.ws.send_str(data)
            else:
                await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError):  # the client left; its close ends the session
            pass

    async def _drain(self) -> None:
        assert self.queue is not None
        while True:
            due, data = await self.queue.get()
            wait = self.t0 + due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if isinstance(data, tuple):
                await self._close(*data)
                return
            await self._ship(data)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class ReplayServer:
    """The aiohttp application serving one script to every connection."""

    def __init__(
        self,
        script: Script | Sequence[Script],
        *,
        policy: str = "ordered",
        pace: str = "instant",
        speed: float = 1.0,
        keep_received: bool = False,
    ) -> None:
        if pace not in PACES:
            raise ValueError(f"unknown pace {pace!r}; expected one of {', '.join(PACES)}")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.scripts = [script] if isinstance(script, Script) else list(script)
        if not self.scripts:
            raise ValueError("nothing to replay")
        self.script = self.scripts[0]
        self.policy, self.pace, self.speed = policy, pace, speed
        self.keep_received = keep_received
        source = self.script.source.removesuffix(" connection 1")
        self.report = Report(source, policy, pace, speed, recorded=[_where(s) for s in self.scripts])
        self.served: set[int] = set()
        self.players: list[Player] = []
        self.open: set[web.WebSocketResponse] = set()
        self.closed = 0
        self._changed: asyncio.Condition | None = None

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_MESSAGE)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._play(request)
        return web.json_response(
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "rtproxy_replay_rest",
                    "message": f"rtproxy replay serves Realtime WebSocket sessions only, not {request.method} "
                    f"{request.path}",
                }
            },
            status=404,
        )

    async def _play(self, request: web.Request) -> web.StreamResponse:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        ws = web.WebSocketResponse(
            protocols=("realtime",) if "realtime" in offered else (), max_msg_size=MAX_MESSAGE, compress=False
        )
        await ws.prepare(request)
        t0 = time.monotonic()
        k = self._pick(request.path, request.query_string)
        script = self.scripts[k]
        player = Player(script, self.policy, number=len(self.players) + 1, keep_received=self.keep_received)
        player.report.recorded = k + 1
        query = redact_query(request.query_string)
        player.report.path = request.path + (f"?{query}" if query else "")
        player.report.subprotocol = ws.ws_protocol
        self.players.append(player)
        self.report.connections.append(player.report)
        self.open.add(ws)
        sender = _Sender(ws, t0, self.pace, self.speed, request.transport)
        closing = script.server_close
        try:
            await sender.send(player.start(), 0.0)
            if closing and player.closable:
                player.report.server_close = closing[0]
                await sender.close(*closing)
                closing = None
            async for msg in ws:
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    t = time.monotonic() - t0
                    out = player.receive(msg.data, t)
                    if out:
                        await sender.send(out, t)
                    if closing and player.closable:
                        player.report.server_close = closing[0]
                        await sender.close(*closing)
                        closing = None
                else:
                    break
        finally:
            await sender.stop()
            player.close(time.monotonic() - t0, ws.close_code)
            self.open.discard(ws)
            async with self.changed:
                self.closed += 1
                self.changed.notify_all()
        return ws

    def _pick(self, path: str, query: str) -> int:
        """The recorded connection to serve a new one with (see the module docstring)."""
        n = len(self.scripts)
        unserved = [i for i in range(n) if i not in self.served]
        if not unserved:
            return n - 1
        choice = unserved[0]
        if len({_where(s) for s in self.scripts}) > 1:
            same = [i for i in unserved if _where(self.scripts[i]) == _where_of(path, query)]
            same = same or [i for i in unserved if _where(self.scripts[i]).split("?")[0] == path]
            choice = same[0] if same else choice
        self.served.add(choice)
        return choice

    async def wait_closed(self, count: int = 1, timeout: float | None = None) -> None:
        """Wait until `count` connections have ended."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.closed >= count), timeout)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is open; False on timeout."""
        try:
            async with self.changed:
                await asyncio.wait_for(self.changed.wait_for(lambda: not self.open), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return False
        return True

    async def shutdown(self) -> None:
        """Close every open connection with 1001."""
        for ws in list(self.open):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=1001, message=b"rtproxy replay shutting down")

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.shutdown()


def _where(script: Script) -> str:
    """A recorded connection's path and query (as :func:`_where_of` makes them of a live one)."""
    path, query = script.session.get("path"), script.session.get("query")
    return _where_of(path if isinstance(path, str) else "", query if isinstance(query, str) else "")


def _where_of(path: str, query: str) -> str:
    query = redact_query(query)
    return path + (f"?{query}" if query else "")


async def start(
    server: ReplayServer, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Listen; the runner (``await runner.cleanup()`` to stop) and the bound port."""
    runner = web.AppRunner(server.make_app(), handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    sockets: Any = site._server.sockets if site._server is not None else []  # type: ignore[attr-defined]
    return runner, int(sockets[0].getsockname()[1]) if sockets else port
