"""A scripted fake GPT-Live server for tests: it answers like ``/v1/live/sessions`` does.

Shapes are those the ``openai`` package's models require (``openai.types.live``; the nested Responses events of a
delegation are ``openai.types.responses`` stream events); ``tests/test_live_e2e.py`` validates every event sent with
the SDK's own ``TypeAdapter``.

The session timeline is the client's input audio: the server cuts what it receives into 20 ms frames (so the
chunking of the appends changes nothing), finds speech by amplitude, and ends a user turn after
``END_SILENCE_MS`` of silence. Then, per the session's ``delegation``:

- none: the assistant answers at once;
- ``responses``: ``session.delegation.created`` (target ``responses``), then nested ``response.event``s of a
  backend response that calls ``get_weather``; the client answers with ``response.item.create`` (the call's output)
  and ``response.create``; a second backend response streams text, with usage; the assistant speaks it;
- ``client``: ``session.delegation.created`` (target ``client``); the client answers with
  ``session.instructions.append`` or ``session.commentary.append`` naming the delegation (acknowledged with
  ``session.instructions.appended`` / ``session.commentary.appended``); the assistant speaks.

The assistant's speech (``session.output_audio.delta`` with ``session.output_transcript.delta``, 100 ms each) is
paced by the input clock, as a real full-duplex server speaks while the microphone streams: one 100 ms chunk per
100 ms of input audio. User speech while the assistant speaks is a barge-in: the speech stops there. Each answer
spoken ends with ``session.usage.updated``; ``session.close`` ends with ``session.closed`` and the final usage.

``drop_first=True`` drops the first primary connection (close 1011) at the first client event after its first
spoken answer ended, as a server restart would; a client that reconnects gets a new session.

``/v1/live/sessions/{id}/attach`` is the sideband: it receives what the primary's session does from the moment it
attaches, as the real API reflects it (input audio as ``session.input_audio.append`` without an event id, output
audio with ``start_ms``/``end_ms``), and is closed when the session closes. Every frame received and sent, per
connection, is kept (``connections``).

Opt-in, to stand for a new model (``rtproxy rerun --model``): a session started with ``new_model`` answers with
``new_replies``, when delegating to Responses calls ``get_weather`` with ``new_arguments``, and delegates as
``new_delegation`` says instead of as its session does (each when given).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

RATE = 24000
FRAME_MS = 20
END_SILENCE_MS = 200
CHUNK_MS = 100
THRESHOLD = 800
MODEL = "gpt-live-1"


def tone(ms: int, freq: float = 200.0, rate: int = RATE) -> bytes:
    """PCM16 mono speech-like audio (a tone with five syllables a second)."""
    n = rate * ms // 1000
    out = bytearray()
    for i in range(n):
        env = 0.3 + 0.7 * abs(math.sin(math.pi * (i % (rate // 5)) / (rate // 5)))
        out += struct.pack("<h", int(0.3 * env * math.sin(2 * math.pi * freq * i / rate) * 32767))
    return bytes(out)


def silence(ms: int, rate: int = RATE) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Connection:
    """One WebSocket connection as the upstream saw it."""

    path: str
    kind: str  # primary | sideband
    headers: dict[str, str]
    received: list[str | bytes] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class LiveUpstream:
    """``async with LiveUpstream(user=[…], replies=[…]) as up``: an aiohttp app on 127.0.0.1, port 0."""

    def __init__(
        self,
        *,
        user: tuple[str, ...] = ("What's the weather in Paris?",),
        replies: tuple[str, ...] = ("It is 18 degrees and sunny in Paris.",),
        new_model: str | None = None,
        new_replies: tuple[str, ...] | None = None,
        new_arguments: str | None = None,
        new_delegation: dict[str, Any] | None = None,
        drop_first: bool = False,
    ) -> None:
        self.user, self.replies = user, replies
        self.new_model, self.new_replies, self.new_arguments = new_model, new_replies, new_arguments
        self.new_delegation = new_delegation
        self.drop_first, self.dropped = drop_first, False
        self.connections: list[Connection] = []
        self.sessions: dict[str, LiveSession] = {}
        self.attached = asyncio.Event()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}{secrets.token_hex(4)}"

    async def __aenter__(self) -> LiveUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("GET", "/v1/live/sessions", self._primary)
        app.router.add_route("GET", "/v1/live/sessions/{sid}/attach", self._sideband)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _open(self, request: web.Request, kind: str) -> tuple[web.WebSocketResponse, Connection]:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, compress=False)
        await ws.prepare(request)
        conn = Connection(request.path_qs, kind, dict(request.headers))
        self.connections.append(conn)
        return ws, conn

    async def _primary(self, request: web.Request) -> web.StreamResponse:
        ws, conn = await self._open(request, "primary")
        session = LiveSession(self, ws, conn)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                conn.received.append(msg.data)
                await session.handle(msg.data)
        finally:
            await session.detach_all()
            conn.closed.set()
        return ws

    async def _sideband(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request.match_info["sid"])
        if session is None:
            return web.json_response(
                {"error": {"type": "invalid_request_error", "code": "session_not_found", "message": "no such session"}},
                status=404,
            )
        ws, conn = await self._open(request, "sideband")
        session.sidebands.append((ws, conn))
        self.attached.set()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                conn.received.append(msg.data)
                await session.handle_sideband(ws, conn, msg.data)
        finally:
            conn.closed.set()
        return ws


class LiveSession:
    """One primary connection's session: the timeline, the turn detector, the assistant's speech."""

    def __init__(self, up: LiveUpstream, ws: web.WebSocketResponse, conn: Connection) -> None:
        self.up, self.ws, self.conn = up, ws, conn
        self.id = up.new_id("sess")
        self.config: dict[str, Any] = {}
        self.sidebands: list[tuple[web.WebSocketResponse, Connection]] = []
        self.bytes_per_ms = RATE * 2 // 1000
        self.pending = b""
        self.pos_ms = 0
        self.in_speech = False
        self.speech_start = 0
        self.silent_ms = 0
        self.turn = 0
        self.speech: list[tuple[bytes, str]] = []  # the assistant's chunks still to say
        self.speaking_ms = 0  # input clock since the last chunk said
        self.out_ms = 0
        self.waiting: dict[str, Any] | None = None  # a delegation waiting for the client
        self.backend_model = "gpt-5.5"
        self.drop_next = False  # drop_first: the connection is dropped at the next client event

    # -- sending --

    async def send(self, event: dict[str, Any], *, reflect: bool = True) -> None:
        text = orjson.dumps(event).decode()
        self.conn.sent.append(text)
        await self.ws.send_str(text)
        if reflect:
            await self.reflect(event)

    async def reflect(self, event: dict[str, Any]) -> None:
        for ws, conn in list(self.sidebands):
            if ws.closed:
                continue
            text = orjson.dumps(event).decode()
            conn.sent.append(text)
            await ws.send_str(text)

    def event(self, kind: str, client_event_id: Any = None, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind, "event_id": self.up.new_id("event"), **fields}
        if isinstance(client_event_id, str):
            out["client_event_id"] = client_event_id
        return out

    def resource(self) -> dict[str, Any]:
        session = {
            "id": self.id,
            "expires_at": int(time.time()) + 3600,
            "model": self.config.get("model", MODEL),
            "status": "active",
            "audio": self.config.get("audio")
            or {"format": {"type": "audio/pcm", "rate": RATE}, "output": {"voice": "marin"}},
            "instructions": self.config.get("instructions", ""),
        }
        if self.config.get("delegation") is not None:
            session["delegation"] = self.config["delegation"]
        return session

    def usage(self) -> dict[str, Any]:
        return {"seconds": float(self.pos_ms // 1000)}

    async def error(self, message: str, client_event_id: Any, code: str = "invalid_request") -> None:
        err = {"type": "invalid_request_error", "code": code, "message": message, "param": None}
        if isinstance(client_event_id, str):
            err["client_event_id"] = client_event_id
        await self.send(self.event("error", client_event_id, error=err))

    # -- client commands --

    async def handle(self, text: str) -> None:
        if self.drop_next:
            self.drop_next = False
            await self.ws.close(code=1011, message=b"scripted drop")
            return
        event = orjson.loads(text)
        kind, ceid = event.get("type"), event.get("event_id")
        if kind == "session.start":
            self.config = dict(event.get("session") or {})
            fmt = (self.config.get("audio") or {}).get("format") or {}
            rate = fmt.get("rate", RATE) if fmt.get("type", "audio/pcm") == "audio/pcm" else RATE
            self.bytes_per_ms = rate * 2 // 1000
            self.up.sessions[self.id] = self
            await self.send(self.event("session.started", ceid, session=self.resource()))
        elif kind == "session.update":
            for key, value in (event.get("session") or {}).items():
                self.config[key] = value
            await self.send(self.event("session.updated", ceid, session=self.resource()))
        elif kind == "session.input_audio.append":
            audio = base64.b64decode(event.get("audio", ""))
            await self.reflect({"type": "session.input_audio.append", "audio": event.get("audio", "")})
            await self.audio(audio)
        elif kind in ("session.instructions.append", "session.commentary.append"):
            ack = (
                "session.instructions.appended"
                if kind == "session.instructions.append"
                else "session.commentary.appended"
            )
            await self.send(self.event(ack, ceid, start_ms=self.pos_ms, end_ms=self.pos_ms))
            if self.waiting and self.waiting["target"] == "client":
                if event.get("delegation_id") != self.waiting["id"]:
                    await self.error("delegation_id names no open client delegation", ceid, "unknown_delegation")
                    return
                self.waiting = None
                self.say(str(event.get("content") or self.reply()))
        elif kind == "response.item.create":
            if self.waiting and self.waiting["target"] == "responses":
                self.waiting.setdefault("items", []).append(event.get("item"))
        elif kind == "response.create":
            if not (self.waiting and self.waiting["target"] == "responses" and self.waiting.get("items")):
                await self.error("no delegated response is waiting for tool results", ceid)
                return
            await self.backend_answer(ceid)
        elif kind == "session.close":
            await self.send(
                self.event(
                    "session.closed", ceid, reason="close_requested", session=self.resource(), usage=self.usage()
                )
            )
            await self.ws.close()
        else:
            await self.error(f"unsupported event {kind!r}", ceid, "unknown_event")

    async def handle_sideband(self, ws: web.WebSocketResponse, conn: Connection, text: str) -> None:
        event = orjson.loads(text)
        if event.get("type") == "session.update":
            for key, value in (event.get("session") or {}).items():
                self.config[key] = value
            answer = orjson.dumps(self.event("session.updated", event.get("event_id"), session=self.resource()))
            conn.sent.append(answer.decode())
            await ws.send_str(answer.decode())

    async def detach_all(self) -> None:
        for ws, _ in self.sidebands:
            await ws.close()

    # -- the timeline --

    async def audio(self, data: bytes) -> None:
        self.pending += data
        frame = FRAME_MS * self.bytes_per_ms
        while len(self.pending) >= frame:
            chunk, self.pending = self.pending[:frame], self.pending[frame:]
            loud = max((abs(s) for (s,) in struct.iter_unpack("<h", chunk)), default=0) > THRESHOLD
            await self.frame(loud)

    async def frame(self, loud: bool) -> None:
        start = self.pos_ms
        self.pos_ms += FRAME_MS
        if loud and not self.in_speech:
            self.in_speech, self.speech_start = True, start
            if self.speech:  # barge-in: the user speaks over the assistant
                self.speech = []
        if loud:
            self.silent_ms = 0
        elif self.in_speech:
            self.silent_ms += FRAME_MS
            if self.silent_ms >= END_SILENCE_MS:
                self.in_speech = False
                await self.end_of_turn(self.speech_start, self.pos_ms - self.silent_ms)
        if self.speech:
            self.speaking_ms += FRAME_MS
            if self.speaking_ms >= CHUNK_MS:
                self.speaking_ms = 0
                await self.say_chunk()

    async def end_of_turn(self, start: int, end: int) -> None:
        words = self.user_words()
        span = max(1, (end - start) // max(1, len(words)))
        for i, w in enumerate(words):
            a = start + i * span
            await self.send(
                self.event("session.input_transcript.delta", delta=w, start_ms=a, end_ms=min(end, a + span))
            )
        self.turn += 1
        delegation = self.config.get("delegation") or {}
        if self.is_new_model() and self.up.new_delegation is not None:
            delegation = self.up.new_delegation
        target = delegation.get("type") if isinstance(delegation, dict) else None
        if target == "responses":
            await self.delegate_to_responses()
        elif target == "client":
            did = self.up.new_id("deleg")
            self.waiting = {"id": did, "target": "client"}
            await self.send(
                self.event(
                    "session.delegation.created",
                    delegation={"id": did, "target": "client", "type": "delegation"},
                    offset_ms=self.pos_ms,
                )
            )
        else:
            self.say(self.reply())

    def user_words(self) -> list[str]:
        text = self.up.user[min(self.turn, len(self.up.user) - 1)]
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        return words

    def is_new_model(self) -> bool:
        return self.up.new_model is not None and self.config.get("model") == self.up.new_model

    def reply(self) -> str:
        replies = self.up.new_replies if self.is_new_model() and self.up.new_replies else self.up.replies
        return replies[min(self.turn - 1, len(replies) - 1)]

    # -- speech --

    def say(self, text: str) -> None:
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        n = max(len(words), 3)
        pcm = tone(CHUNK_MS * n, 330.0, self.bytes_per_ms * 500)
        size = CHUNK_MS * self.bytes_per_ms
        self.speech = [(pcm[i * size : (i + 1) * size], words[i] if i < len(words) else "") for i in range(n)]
        self.speaking_ms, self.out_ms = 0, self.pos_ms

    async def say_chunk(self) -> None:
        audio, word = self.speech.pop(0)
        a = self.out_ms
        self.out_ms += CHUNK_MS
        delta = self.event("session.output_audio.delta", delta=b64(audio))
        del delta["event_id"]  # OutputAudioDeltaEvent carries no event id
        await self.send(delta, reflect=False)
        await self.reflect({**delta, "start_ms": a, "end_ms": self.out_ms})
        if word:
            await self.send(self.event("session.output_transcript.delta", delta=word, start_ms=a, end_ms=self.out_ms))
        if not self.speech:
            await self.send(
                self.event("session.usage.updated", usage=self.usage(), context_window={"usage_ratio": 0.01})
            )
            if self.up.drop_first and not self.up.dropped:
                self.up.dropped = self.drop_next = True

    # -- Responses delegation --

    def response(self, rid: str, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "model": self.backend_model,
            "status": status,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if usage is not None:
            out["usage"] = usage
        return out

    async def nested(self, did: str, events: list[dict[str, Any]], ceid: Any = None) -> None:
        for i, e in enumerate(events):
            await self.send(self.event("response.event", ceid, delegation_id=did, event={**e, "sequence_number": i}))

    async def delegate_to_responses(self) -> None:
        did, rid = self.up.new_id("deleg"), self.up.new_id("resp")
        item_id, call_id = self.up.new_id("fc"), self.up.new_id("call")
        await self.send(
            self.event(
                "session.delegation.created",
                delegation={"id": did, "target": "responses", "type": "delegation", "response_id": rid},
                offset_ms=self.pos_ms,
            )
        )
        args = '{"location": "Paris", "unit": "celsius"}'
        if self.is_new_model() and self.up.new_arguments is not None:
            args = self.up.new_arguments
        call = {
            "type": "function_call",
            "id": item_id,
            "call_id": call_id,
            "name": "get_weather",
            "arguments": "",
            "status": "in_progress",
        }
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.response(rid, "in_progress")},
            {"type": "response.output_item.added", "output_index": 0, "item": call},
        ]
        for i in range(0, len(args), 9):
            events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "delta": args[i : i + 9],
                }
            )
        events += [
            {
                "type": "response.function_call_arguments.done",
                "item_id": item_id,
                "output_index": 0,
                "name": "get_weather",
                "arguments": args,
            },
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {**call, "arguments": args, "status": "completed"},
            },
            {"type": "response.completed", "response": self.response(rid, "completed", self.tokens(82, 19))},
        ]
        await self.nested(did, events)
        self.waiting = {"id": did, "target": "responses", "call_id": call_id}

    def tokens(self, inp: int, out: int) -> dict[str, Any]:
        return {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out,
        }

    async def backend_answer(self, ceid: Any) -> None:
        assert self.waiting is not None
        did = self.waiting["id"]
        self.waiting = None
        rid, mid = self.up.new_id("resp"), self.up.new_id("msg")
        text = self.reply()
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        message = {"type": "message", "id": mid, "role": "assistant", "status": "in_progress", "content": []}
        part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        ids = {"item_id": mid, "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.response(rid, "in_progress")},
            {"type": "response.output_item.added", "output_index": 0, "item": message},
            {"type": "response.content_part.added", **ids, "part": part},
        ]
        events += [{"type": "response.output_text.delta", **ids, "delta": w, "logprobs": []} for w in words]
        done_part = {**part, "text": text}
        events += [
            {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **ids, "part": done_part},
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {**message, "status": "completed", "content": [done_part]},
            },
            {"type": "response.completed", "response": self.response(rid, "completed", self.tokens(131, 12))},
        ]
        await self.nested(did, events, ceid)
        self.say(text)
