"""A scripted fake Realtime server for tests: it answers like the real one.

It speaks both dialects (beta when the client sends ``OpenAI-Beta:
realtime=v1`` or the ``openai-beta.realtime-v1`` subprotocol, GA otherwise),
emits realistic event sequences with real PCM16 audio (tones shaped like
syllables), function calls when the session has tools, and records every
frame it received and sent so tests can compare them with the database.

Tests steer failure behaviour through the query string, which the proxy
relays unchanged: ``reject=401`` refuses the upgrade with that status and a
JSON body; ``close_after=N&close_code=C`` closes after N client events;
``vanish_after=N`` drops the TCP connection without a close frame. With ``close_once=1`` only the first
connection so asked closes after N client events, once the response under way is done (a drop between
turns: the client's reconnection stays up).

``chunk_delay`` (seconds) paces audio deltas and answers ``response.create``
from a task of its own, so a ``response.cancel`` arriving mid-response
interrupts it (status ``cancelled``), as on the real server.
``exact=True`` shapes events exactly as the openai package's models require
(GA item content parts ``output_audio``/``output_text`` while
``response.content_part.*`` parts stay ``audio``/``text``; ``usage`` on
transcription events); openai-agents drops events that do not validate. The
default keeps the original shapes.

``greet_after=N`` sends ``session.created`` only once N client events have come (the real server can take
a while to greet, and a client that does not wait for it streams its microphone first); they are handled after
it, in order.

``new_model="NAME"`` makes a connection whose query says ``model=NAME`` behave
like another model: its answers say ``new_text`` (when given) and its tool
calls ask for ``"unit": "fahrenheit"``; every other connection is unchanged.

``echo_metadata=True`` echoes a ``response.create``'s ``response.metadata`` in the response's
``response.created`` and ``response.done``, as the real server does (clients such as LiveKit Agents
correlate a reply with the request that asked for it by an id they put there).
``vad=True`` turns on server turn detection as the real server does it: by default (server VAD), or as a
``session.update`` sets it (``turn_detection`` with a ``type``: ``server_vad`` or ``semantic_vad``; null turns
it off): the input audio is cut into 20 ms frames, speech found by amplitude; speech starting sends
``input_audio_buffer.speech_started`` (and, while a response is under way and ``interrupt_response`` is not
false, cancels it: status ``cancelled``, reason ``turn_detected``); ``silence_duration_ms`` (200 if unset;
``vad_silence_ms`` overrides it) of silence ends the turn: ``speech_stopped``, the commit's events, and
(unless ``create_response`` is false) a response. A manual ``input_audio_buffer.commit`` then brings no
speech events, as on the real server. Without ``vad`` (the default) speech events come with every commit,
as before.
``azure_beta=True`` makes a connection on Azure's legacy path (``/openai/realtime`` with an
``api-version`` query) speak the beta dialect, as Azure's dated API versions do (they send no
``OpenAI-Beta`` header).
``retrieve=True`` answers ``conversation.item.retrieve`` with
``conversation.item.retrieved`` carrying the item as it stands (a user audio
item with its transcript once transcribed), or an ``item_not_found`` error, as
the real server does; OpenAI's Agents SDK for JS retrieves every transcribed
item. Without it the event is unknown (an error), as before.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

RATE = 24000


def tone(ms: int, freq: float = 220.0, rate: int = RATE, amplitude: float = 0.3) -> bytes:
    """PCM16 mono audio: a tone with a syllable-like envelope."""
    n = rate * ms // 1000
    out = bytearray()
    for i in range(n):
        env = math.sin(math.pi * (i % (rate // 5)) / (rate // 5))  # five "syllables" a second
        sample = amplitude * env * math.sin(2 * math.pi * freq * i / rate)
        out += struct.pack("<h", int(sample * 32767))
    return bytes(out)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Connection:
    """What one client connection sent and received, as the upstream saw it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    dialect: str
    subprotocol: str | None
    received: list[str | bytes] = field(default_factory=list)
    sent: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedUpstream:
    """An aiohttp app on 127.0.0.1, port 0. ``async with ScriptedUpstream() as up``."""

    def __init__(
        self,
        *,
        text: str = "Hello! How can I help you today?",
        audio_ms: int = 600,
        chunk_delay: float = 0.0,
        exact: bool = True,
        new_model: str | None = None,
        new_text: str | None = None,
        echo_metadata: bool = False,
        azure_beta: bool = False,
        vad: bool = False,
        vad_silence_ms: int | None = None,
        greet_after: int = 0,
        retrieve: bool = False,
    ) -> None:
        self.vad = vad
        self.reply_text = text
        self.vad_silence_ms = vad_silence_ms
        self.greet_after = greet_after
        self.echo_metadata = echo_metadata
        self.azure_beta = azure_beta
        self.retrieve = retrieve
        self.new_model = new_model
        self.new_text = new_text
        self.audio_ms = audio_ms
        self.chunk_delay = chunk_delay
        self.exact = exact
        self.connections: list[Connection] = []
        self.http_requests: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.closed_once = False  # a close_once connection was closed
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ScriptedUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}{secrets.token_hex(4)}"

    # -- REST --

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        body = await request.read()
        self.http_requests.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
        )
        if request.path.endswith("/realtime/client_secrets"):
            secret = "ek_" + secrets.token_hex(16)
            return web.json_response({"value": secret, "expires_at": 1890000000, "session": {"type": "realtime"}})
        if request.path.endswith("/realtime/sessions"):
            secret = "ek_" + secrets.token_hex(16)
            return web.json_response({"id": self.new_id("sess"), "client_secret": {"value": secret}})
        if request.path.endswith("/stream"):
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            for i in range(3):
                await resp.write(f"chunk {i}\n".encode())
            await resp.write_eof()
            return resp
        return web.json_response({"error": {"message": f"no route {request.path}"}}, status=404)

    # -- WebSocket --

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        if "reject" in query:
            status = int(query["reject"])
            return web.json_response(
                {"error": {"type": "invalid_request_error", "code": "rejected", "message": f"rejected with {status}"}},
                status=status,
            )
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "") or "openai-beta.realtime-v1" in offered
        if self.azure_beta and request.path.rstrip("/") == "/openai/realtime" and "api-version" in query:
            beta = True
        ws = web.WebSocketResponse(protocols=("realtime",) if "realtime" in offered else (), max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(request.path, query, dict(request.headers), "beta" if beta else "ga", ws.ws_protocol)
        self.connections.append(conn)
        self.connected.set()
        session = Session(self, conn, ws)
        try:
            await session.run()
        finally:
            if session.responding is not None:
                session.responding.cancel()
                await asyncio.gather(session.responding, return_exceptions=True)
            conn.close_code = ws.close_code
            conn.closed.set()
        return ws


class Session:
    """One scripted conversation."""

    def __init__(self, up: ScriptedUpstream, conn: Connection, ws: web.WebSocketResponse) -> None:
        self.up, self.conn, self.ws = up, conn, ws
        self.beta = conn.dialect == "beta"
        self.config: dict[str, Any] = self._initial_config()
        self.last_item: str | None = None
        self.items: dict[str, dict[str, Any]] = {}  # retrieve=True: each item as it stands now
        self.buffer = bytearray()
        self.audio_start_ms = 0
        self.cancelled = False
        self.cancel_reason = "client_cancelled"
        self.responding: asyncio.Task[None] | None = None
        self.vad_pending = b""  # server VAD: input audio not yet cut into frames
        self.vad_ms = 0  # server VAD: the input audio's clock
        self.speech: tuple[str, int] | None = None  # server VAD: the item id and start of the speech under way
        self.quiet_ms = 0
        self.new_model = up.new_model is not None and conn.query.get("model") == up.new_model
        self.turn_detection_named = False  # has a session.update said what the turn detection is?

    def _initial_config(self) -> dict[str, Any]:
        if self.beta:
            return {
                "id": self.up.new_id("sess"),
                "object": "realtime.session",
                "model": "gpt-4o-realtime-preview",
                "modalities": ["text", "audio"],
                "voice": "alloy",
                "instructions": "",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "tools": [],
                "turn_detection": None,
            }
        return {
            "id": self.up.new_id("sess"),
            "object": "realtime.session",
            "type": "realtime",
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "alloy"},
            },
        }

    async def send(self, event: dict[str, Any]) -> None:
        event = {"type": event.pop("type"), "event_id": self.up.new_id("event"), **event}
        text = orjson.dumps(event).decode()
        self.conn.sent.append(text)
        await self.ws.send_str(text)

    def name(self, ga: str) -> str:
        beta = {
            "response.output_text.delta": "response.text.delta",
            "response.output_text.done": "response.text.done",
            "response.output_audio.delta": "response.audio.delta",
            "response.output_audio.done": "response.audio.done",
            "response.output_audio_transcript.delta": "response.audio_transcript.delta",
            "response.output_audio_transcript.done": "response.audio_transcript.done",
        }
        return beta.get(ga, ga) if self.beta else ga

    async def run(self) -> None:
        held: list[str] = []  # client events that came before the greeting, handled after it
        if not self.up.greet_after:
            await self.send({"type": "session.created", "session": dict(self.config)})
        close_after = int(self.conn.query.get("close_after", "0") or 0)
        once = self.conn.query.get("close_once") == "1"
        if once and self.up.closed_once:
            close_after = 0
        vanish_after = int(self.conn.query.get("vanish_after", "0") or 0)
        count = 0
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                self.conn.received.append(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.conn.received.append(msg.data)
                await self.ws.send_bytes(msg.data)  # binary frames are echoed
                self.conn.sent.append(msg.data)
                continue
            else:
                break
            count += 1
            if self.up.greet_after and count <= self.up.greet_after:
                held.append(msg.data)
                if count < self.up.greet_after:
                    continue
                await self.send({"type": "session.created", "session": dict(self.config)})
                for data in held[:-1]:
                    await self.handle(data)
            if vanish_after and count >= vanish_after:
                assert self.ws._req is not None and self.ws._req.transport is not None
                self.ws._req.transport.abort()
                return
            await self.handle(msg.data)
            if close_after and count >= close_after:
                if once:
                    self.up.closed_once = True
                    if self.responding is not None:
                        await self.responding
                await self.ws.close(
                    code=int(self.conn.query.get("close_code", "1000")),
                    message=self.conn.query.get("close_reason", "scripted close").encode(),
                )
                return

    async def handle(self, text: str) -> None:
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.send(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_json",
                        "message": "not JSON",
                        "event_id": None,
                    },
                }
            )
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "session.update":
            patch = event.get("session") or {}
            self._merge(self.config, patch)
            detection = ((patch.get("audio") or {}).get("input") or {}) if isinstance(patch, dict) else {}
            if "turn_detection" in detection or "turn_detection" in patch:
                self.turn_detection_named = True
            await self.send({"type": "session.updated", "session": dict(self.config)})
        elif kind == "conversation.item.create":
            item = dict(event.get("item") or {})
            item.setdefault("id", self.up.new_id("item"))
            item.setdefault("object", "realtime.item")
            item.setdefault("status", "completed")
            await self.item_added(item)
        elif kind == "input_audio_buffer.append":
            audio = base64.b64decode(event.get("audio", ""))
            self.buffer += audio
            detection = self._turn_detection()
            if detection is not None:
                await self.detect(audio, detection)
        elif kind == "input_audio_buffer.clear":
            self.buffer.clear()
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "input_audio_buffer.commit":
            await self.commit(speech=not self.up.vad)
        elif kind == "response.create":
            if self.up.chunk_delay:
                self.responding = asyncio.ensure_future(self.respond(event.get("response") or {}))
            else:
                await self.respond(event.get("response") or {})
        elif kind == "response.cancel":
            self.cancelled, self.cancel_reason = True, "client_cancelled"
        elif kind == "conversation.item.truncate":
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": event.get("item_id"),
                    "content_index": event.get("content_index", 0),
                    "audio_end_ms": event.get("audio_end_ms", 0),
                }
            )
        elif kind == "conversation.item.delete":
            await self.send({"type": "conversation.item.deleted", "item_id": event.get("item_id")})
        elif kind == "conversation.item.retrieve" and self.up.retrieve:
            await self.retrieved(event)
        else:
            await self.send(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "unknown_event",
                        "message": f"unknown event {kind!r}",
                        "event_id": event.get("event_id"),
                    },
                }
            )

    def _merge(self, into: dict[str, Any], patch: dict[str, Any]) -> None:
        for k, v in patch.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                self._merge(into[k], v)
            else:
                into[k] = v

    async def retrieved(self, event: dict[str, Any]) -> None:
        item = self.items.get(str(event.get("item_id")))
        if item is not None:
            await self.send({"type": "conversation.item.retrieved", "item": item})
            return
        error = {
            "type": "invalid_request_error",
            "code": "item_not_found",
            "message": f"no item {event.get('item_id')!r}",
            "event_id": event.get("event_id"),
        }
        await self.send({"type": "error", "error": error})

    async def item_added(self, item: dict[str, Any]) -> None:
        prev, self.last_item = self.last_item, item["id"]
        self.items[item["id"]] = item
        if self.beta:
            await self.send({"type": "conversation.item.created", "previous_item_id": prev, "item": item})
        else:
            await self.send({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
            await self.send({"type": "conversation.item.done", "previous_item_id": prev, "item": item})
        self.last_role = item.get("role")
        self.last_type = item.get("type")

    def _turn_detection(self) -> dict[str, Any] | None:
        """The session's server turn detection, when the upstream does it (``vad``): what the session asked for
        (``turn_detection`` with a ``type``; null turns it off), else the real server's default, server VAD."""
        if not self.up.vad:
            return None
        if not self.turn_detection_named:
            return {"type": "server_vad"}
        audio_in = (self.config.get("audio") or {}).get("input") or {}
        detection = self.config.get("turn_detection") if self.beta else audio_in.get("turn_detection")
        return detection if isinstance(detection, dict) and detection.get("type") else None

    async def detect(self, audio: bytes, detection: dict[str, Any]) -> None:
        """Server VAD over 20 ms frames of the input audio."""
        self.vad_pending += audio
        size = RATE * 2 * 20 // 1000
        while len(self.vad_pending) >= size:
            frame, self.vad_pending = self.vad_pending[:size], self.vad_pending[size:]
            loud = max((abs(v) for (v,) in struct.iter_unpack("<h", frame)), default=0) > 800
            self.vad_ms += 20
            if loud and self.speech is None:
                item_id = self.up.new_id("item")
                self.speech, self.quiet_ms = (item_id, self.vad_ms - 20), 0
                if self.responding is not None and not self.responding.done():
                    if detection.get("interrupt_response", True):
                        self.cancelled, self.cancel_reason = True, "turn_detected"
                event = {"type": "input_audio_buffer.speech_started", "audio_start_ms": self.vad_ms - 20}
                await self.send({**event, "item_id": item_id})
            elif loud:
                self.quiet_ms = 0
            elif self.speech is not None:
                self.quiet_ms += 20
                silence = self.up.vad_silence_ms or int(detection.get("silence_duration_ms") or 200)
                if self.quiet_ms >= silence:
                    item_id, _ = self.speech
                    self.speech = None
                    end = {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.vad_ms - self.quiet_ms}
                    await self.send({**end, "item_id": item_id})
                    await self.commit(item_id)
                    if detection.get("create_response", True):
                        if self.responding is not None:
                            await self.responding  # the interrupted response ends first
                        if self.up.chunk_delay:
                            self.responding = asyncio.ensure_future(self.respond({}))
                        else:
                            await self.respond({})

    async def commit(self, detected: str | None = None, *, speech: bool = True) -> None:
        """The buffer committed (`detected`: by server VAD, its speech events already sent for this item; a manual
        commit brings speech events unless `speech` is false: under server VAD, as on the real server, it does not)."""
        item_id = detected or self.up.new_id("item")
        ms = len(self.buffer) // 2 * 1000 // RATE
        if detected is None and speech:
            await self.send(
                {"type": "input_audio_buffer.speech_started", "audio_start_ms": self.audio_start_ms, "item_id": item_id}
            )
            await self.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": self.audio_start_ms + ms,
                    "item_id": item_id,
                }
            )
        self.audio_start_ms += ms
        self.buffer.clear()
        await self.send(
            {"type": "input_audio_buffer.committed", "previous_item_id": self.last_item, "item_id": item_id}
        )
        await self.item_added(
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            }
        )
        words = ["What's", " the", " weather", " in", " Paris?"]
        for w in words:
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": w,
                }
            )
        completed = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": "".join(words),
        }
        if self.up.exact:
            completed["usage"] = {"type": "duration", "seconds": round(ms / 1000, 3)}
        self.items[item_id] = {
            **self.items[item_id],
            "content": [{"type": "input_audio", "transcript": "".join(words)}],
        }
        await self.send(completed)

    def _modalities(self, override: dict[str, Any]) -> list[str]:
        mods = override.get("output_modalities") or override.get("modalities")
        if mods is None:
            mods = self.config.get("modalities") if self.beta else self.config.get("output_modalities")
        return list(mods or ["text"])

    async def respond(self, override: dict[str, Any]) -> None:
        self.cancelled = False
        rid = self.up.new_id("resp")
        metadata = override.get("metadata") if self.up.echo_metadata else None
        base = {"id": rid, "object": "realtime.response", "output": [], "usage": None, "metadata": metadata}
        await self.send(
            {"type": "response.created", "response": {**base, "status": "in_progress", "status_details": None}}
        )
        tools = override.get("tools") or self.config.get("tools") or []
        if tools and getattr(self, "last_type", None) != "function_call_output":
            item = await self.function_call(rid, tools[0].get("name", "tool"))
        else:
            item = await self.message(rid, self._modalities(override))
        status = "cancelled" if self.cancelled else "completed"
        usage = {
            "total_tokens": 187,
            "input_tokens": 120,
            "output_tokens": 67,
            "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 64},
            "output_token_details": {"text_tokens": 17, "audio_tokens": 50},
        }
        details = {"type": "cancelled", "reason": self.cancel_reason} if self.cancelled else None
        await self.send(
            {
                "type": "response.done",
                "response": {**base, "status": status, "status_details": details, "output": [item], "usage": usage},
            }
        )

    async def function_call(self, rid: str, name: str) -> dict[str, Any]:
        item_id, call_id = self.up.new_id("item"), self.up.new_id("call")
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
        await self.item_added(dict(item))
        args = '{"location": "Paris", "unit": "%s"}' % ("fahrenheit" if self.new_model else "celsius")
        for i in range(0, len(args), 7):
            await self.send(
                {
                    "type": "response.function_call_arguments.delta",
                    "response_id": rid,
                    "item_id": item_id,
                    "output_index": 0,
                    "call_id": call_id,
                    "delta": args[i : i + 7],
                }
            )
        await self.send(
            {
                "type": "response.function_call_arguments.done",
                "response_id": rid,
                "item_id": item_id,
                "output_index": 0,
                "call_id": call_id,
                "name": name,
                "arguments": args,
            }
        )
        done = {**item, "status": "completed", "arguments": args}
        self.items[item_id] = done
        await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": done})
        self.last_type = "function_call"
        return done

    async def message(self, rid: str, modalities: list[str]) -> dict[str, Any]:
        item_id = self.up.new_id("item")
        audio = "audio" in modalities
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
        await self.item_added(dict(item))
        exact = self.up.exact and not self.beta
        kind = "audio" if audio else ("text" if self.beta or exact else "output_text")
        part: dict[str, Any] = {"type": kind, "transcript": ""} if audio else {"type": kind, "text": ""}
        await self.send(
            {
                "type": "response.content_part.added",
                "response_id": rid,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": dict(part),
            }
        )
        text = self.up.new_text if self.new_model and self.up.new_text else self.up.reply_text
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        ids = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        if audio:
            pcm = tone(self.up.audio_ms, 330.0)
            chunk = RATE * 2 // 10  # 100 ms per delta
            n_chunks = max(1, math.ceil(len(pcm) / chunk))
            for i in range(n_chunks):
                if self.cancelled:
                    break
                if i < len(words):
                    await self.send(
                        {"type": self.name("response.output_audio_transcript.delta"), **ids, "delta": words[i]}
                    )
                await self.send(
                    {
                        "type": self.name("response.output_audio.delta"),
                        **ids,
                        "delta": b64(pcm[i * chunk : (i + 1) * chunk]),
                    }
                )
                await asyncio.sleep(self.up.chunk_delay)  # let a response.cancel in
            for w in words[n_chunks:]:
                await self.send({"type": self.name("response.output_audio_transcript.delta"), **ids, "delta": w})
            await self.send({"type": self.name("response.output_audio.done"), **ids})
            transcript = "".join(words)
            await self.send(
                {"type": self.name("response.output_audio_transcript.done"), **ids, "transcript": transcript}
            )
            part = {"type": "audio", "transcript": transcript}
        else:
            for w in words:
                await self.send({"type": self.name("response.output_text.delta"), **ids, "delta": w})
            text = "".join(words)
            await self.send({"type": self.name("response.output_text.done"), **ids, "text": text})
            part = {"type": kind, "text": text}
        await self.send({"type": "response.content_part.done", **ids, "part": part})
        if exact:
            part = {**part, "type": "output_audio" if audio else "output_text"}
        done = {**item, "status": "incomplete" if self.cancelled else "completed", "content": [part]}
        self.items[item_id] = done
        await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": done})
        self.last_type = "message"
        return done
