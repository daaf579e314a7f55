"""A scripted fake Responses WebSocket server for tests: it answers ``response.create`` as ``/v1/responses`` does.

Shapes are those the ``openai`` package's models require (``ResponsesServerEvent``, the streaming events with the
WebSocket mode's ``stream_id``); ``tests/test_responses_e2e.py`` validates every event sent with the SDK's own
``TypeAdapter``. The script, per ``response.create``:

- The agent's plan is to call each function tool it offers once, in order (arguments: every required string
  parameter set to the last capitalised word of the user's first message, else ``Paris``); a tool already answered
  (a ``function_call_output`` in the input, or earlier in the ``previous_response_id`` chain) is not called again.
- The first response of a conversation starts with a reasoning item and its streamed summary.
- A function call streams its arguments in two deltas; a text answer (once every tool is answered) streams in words
  and quotes the tools' outputs; ``response.completed`` carries usage (cached and reasoning tokens too).
- A user message containing ``fail`` gets the WebSocket mode's ``error`` event instead (a stream error, status 400).
- Requests with a ``stream_id`` are answered on their lane: every event echoes it. Requests are answered in order.

Every frame received and sent is kept (``received``, ``sent``).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

MODEL = "gpt-5-agent"


def _user_text(items: list[Any]) -> str:
    for raw in items:
        if isinstance(raw, str):
            return raw
        if isinstance(raw, dict) and raw.get("role") == "user":
            content = raw.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class ResponsesUpstream:
    """The fake server; ``url`` is its address (the proxy's upstream), ``ws_url`` the SDK's ``websocket_base_url``."""

    def __init__(self, *, words_per_delta: int = 1) -> None:
        self.received: list[str | bytes] = []
        self.sent: list[str] = []
        self.connections = 0
        self.handshakes: list[dict[str, Any]] = []
        self.words_per_delta = words_per_delta
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._answered: dict[str, set[str]] = {}  # response id -> tool names answered up to it
        self._call_names: dict[str, str] = {}  # call id -> the tool it called
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._prefix}{next(self._ids):04d}"

    async def __aenter__(self) -> ResponsesUpstream:
        app = web.Application()
        app.router.add_get("/v1/responses", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.connections += 1
        self.handshakes.append({"path": request.path, "query": request.query_string})
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.received.append(msg.data)
                await self.handle(ws, msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.received.append(msg.data)
            else:
                break
        return ws

    # --- the script ----------------------------------------------------------------

    async def handle(self, ws: web.WebSocketResponse, text: str) -> None:
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.send(ws, self.error("invalid_json", "not JSON", None))
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind != "response.create":
            await self.send(ws, self.error("unknown_event", f"unsupported event {kind!r}", None))
            return
        await self.answer(ws, event)

    def error(self, code: str, message: str, lane: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "error",
            "status": 400,
            "error": {"type": "invalid_request_error", "code": code, "message": message, "param": None},
        }
        if lane is not None:
            out["stream_id"] = lane
        return out

    async def send(self, ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
        text = orjson.dumps(event).decode()
        self.sent.append(text)
        await ws.send_str(text)

    def response(self, rid: str, model: str, status: str, output: list[Any], usage: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "status": status,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if usage is not None:
            out["usage"] = usage
        return out

    async def answer(self, ws: web.WebSocketResponse, req: dict[str, Any]) -> None:
        lane = req.get("stream_id") if isinstance(req.get("stream_id"), str) else None
        raw_input = req.get("input")
        items: list[Any] = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
        user = _user_text(items)
        if "fail" in user.lower():
            await self.send(ws, self.error("server_error", "the scripted upstream was asked to fail", lane))
            return
        prev = req.get("previous_response_id")
        answered = set(self._answered.get(prev, set())) if isinstance(prev, str) else set()
        names_by_call: dict[str, str] = {}
        outputs: list[str] = []
        for raw in items:
            if isinstance(raw, dict) and raw.get("type") == "function_call":
                names_by_call[str(raw.get("call_id"))] = str(raw.get("name"))
            if isinstance(raw, dict) and raw.get("type") == "function_call_output":
                call_id = str(raw.get("call_id"))
                answered.add(names_by_call.get(call_id) or self._call_names.get(call_id, call_id))
                outputs.append(str(raw.get("output")))
        tools = [t for t in req.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
        todo = next((t for t in tools if t.get("name") not in answered), None)
        model = req.get("model") if isinstance(req.get("model"), str) else MODEL
        rid = self.new_id("resp")
        seq = itertools.count()
        out: list[dict[str, Any]] = []

        async def emit(kind: str, **fields: Any) -> None:
            event = {"type": kind, "sequence_number": next(seq), **fields}
            if lane is not None:
                event["stream_id"] = lane
            await self.send(ws, event)

        await emit("response.created", response=self.response(rid, model, "in_progress", []))
        await emit("response.in_progress", response=self.response(rid, model, "in_progress", []))
        first = not answered and not isinstance(prev, str)
        if first:
            await self.reasoning(emit, out, "Plan: call the tools one by one, then answer.")
        if todo is not None:
            await self.call(emit, out, todo, user)
            self._call_names[out[-1]["call_id"]] = str(todo.get("name"))
        else:
            await self.text(emit, out, "Done. " + " ".join(outputs) if outputs else f"You said: {user}")
        self._answered[rid] = answered
        usage = {
            "input_tokens": 40 + 10 * len(items),
            "input_tokens_details": {"cached_tokens": 16 if prev or len(items) > 1 else 0, "cache_write_tokens": 0},
            "output_tokens": 12 + 3 * len(out),
            "output_tokens_details": {"reasoning_tokens": 8 if first else 0},
            "total_tokens": 52 + 10 * len(items) + 3 * len(out),
        }
        await emit("response.completed", response=self.response(rid, model, "completed", out, usage))

    async def reasoning(self, emit: Any, out: list[dict[str, Any]], summary: str) -> None:
        iid, index = self.new_id("rs"), len(out)
        await emit(
            "response.output_item.added", output_index=index, item={"id": iid, "type": "reasoning", "summary": []}
        )
        part = {"type": "summary_text", "text": ""}
        await emit("response.reasoning_summary_part.added", item_id=iid, output_index=index, summary_index=0, part=part)
        half = len(summary) // 2
        for delta in (summary[:half], summary[half:]):
            await emit(
                "response.reasoning_summary_text.delta", item_id=iid, output_index=index, summary_index=0, delta=delta
            )
        await emit(
            "response.reasoning_summary_text.done", item_id=iid, output_index=index, summary_index=0, text=summary
        )
        done_part = {"type": "summary_text", "text": summary}
        await emit(
            "response.reasoning_summary_part.done", item_id=iid, output_index=index, summary_index=0, part=done_part
        )
        item = {"id": iid, "type": "reasoning", "summary": [done_part]}
        await emit("response.output_item.done", output_index=index, item=item)
        out.append(item)

    async def call(self, emit: Any, out: list[dict[str, Any]], tool: dict[str, Any], user: str) -> None:
        iid, call_id, index = self.new_id("fc"), self.new_id("call"), len(out)
        words = re.findall(r"\b[A-Z][a-z]+\b", user)
        value = words[-1] if words else "Paris"
        params = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else {}
        props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
        required = params.get("required") if isinstance(params.get("required"), list) else list(props)
        args = orjson.dumps({k: value for k in required}).decode()
        name = str(tool.get("name"))
        item = {
            "id": iid,
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": "",
            "status": "in_progress",
        }
        await emit("response.output_item.added", output_index=index, item=dict(item))
        half = len(args) // 2
        for delta in (args[:half], args[half:]):
            await emit("response.function_call_arguments.delta", item_id=iid, output_index=index, delta=delta)
        await emit("response.function_call_arguments.done", item_id=iid, output_index=index, arguments=args, name=name)
        item.update(arguments=args, status="completed")
        await emit("response.output_item.done", output_index=index, item=item)
        out.append(item)

    async def text(self, emit: Any, out: list[dict[str, Any]], text: str) -> None:
        iid, index = self.new_id("msg"), len(out)
        message = {"id": iid, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        await emit("response.output_item.added", output_index=index, item=message)
        empty = {"type": "output_text", "text": "", "annotations": []}
        await emit("response.content_part.added", item_id=iid, output_index=index, content_index=0, part=empty)
        words = text.split(" ")
        n = self.words_per_delta
        for i in range(0, len(words), n):
            delta = " ".join(words[i : i + n]) + (" " if i + n < len(words) else "")
            await emit(
                "response.output_text.delta", item_id=iid, output_index=index, content_index=0, delta=delta, logprobs=[]
            )
        await emit(
            "response.output_text.done", item_id=iid, output_index=index, content_index=0, text=text, logprobs=[]
        )
        part = {"type": "output_text", "text": text, "annotations": []}
        await emit("response.content_part.done", item_id=iid, output_index=index, content_index=0, part=part)
        done = {**message, "status": "completed", "content": [part]}
        await emit("response.output_item.done", output_index=index, item=done)
        out.append(done)
