"""A Responses WebSocket mode session (``/v1/responses``) into requests and responses: the pure reducer.

Feed frames in order, read the state at any time::

    book = ResponsesSession()
    for frame in store.frames(sid):
        book.feed(frame)
    book.requests      # every response.create: its lane, model, instructions, input items, tools offered
    book.streams       # the ResponseStreams reducer (the same one GPT-Live's nested delegation events use)
    book.to_json()     # the `rtproxy show --json` model

The client sends ``response.create`` (the body of ``POST /v1/responses`` plus the WebSocket-only ``stream_id``
lane) and ``response.steer``; the server streams the Responses events back, each echoing its ``stream_id``.
Requests of one lane are answered first in, first out: a lane's next ``response.created`` belongs to its
oldest request not yet answered, which gives each response its request and its latency (request → created →
first token → done). Bad input never raises: it becomes an :class:`~rtproxy.conversation.model.Anomaly`; every
list from the wire is bounded (:data:`MAX_REQUESTS`, :data:`MAX_INPUT_ITEMS`, :data:`MAX_TOOLS`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..protocols.wire import Direction, Frame
from .model import MAX_MESSAGE, Anomaly, clip, short, str_or_none
from .responses import OutputItem, ResponseStreams, StreamedResponse
from .summary import ASSISTANT, USER, Summary, ToolUse, Turn

__all__ = ["Request", "ResponsesSession", "assemble_responses", "summarize_responses"]

#: Requests one session keeps (later ones are an anomaly).
MAX_REQUESTS = 10_000
#: Input items and tools one request keeps (their count is kept whole).
MAX_INPUT_ITEMS = 256
MAX_TOOLS = 128
#: Steers and steer results kept.
MAX_STEERS = 1_000
#: Characters of instructions and input text kept per request.
MAX_TEXT = 4_000
#: Lanes whose unanswered requests are tracked.
MAX_LANES = 1_000

_KINDS = {"function_call": "function", "custom_tool_call": "custom", "mcp_call": "mcp"}
_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output", "mcp_call_output"})


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """The text of a message's content: a string, or the text of its ``input_text``/``output_text`` parts."""
    if isinstance(value, str):
        out = value
    elif isinstance(value, list):
        out = "".join(
            p["text"] for p in value[:MAX_INPUT_ITEMS] if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    else:
        out = ""
    return out if len(out) <= limit else out[: limit - 1] + "…"


@dataclass(slots=True)
class InputItem:
    """One input item of a request, as a view shows it: a message (role, text), a tool's output, a call echoed."""

    type: str
    role: str | None = None
    text: str = ""
    call_id: str | None = None
    name: str | None = None
    output: Any = None  # a tool output's text (or parts), as the client sent it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for key in ("role", "call_id", "name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.text:
            out["text"] = self.text
        if self.output is not None:
            out["output"] = self.output
        return out


def _input_item(raw: Any) -> InputItem | None:
    if isinstance(raw, str):
        return InputItem("message", "user", _text(raw))
    if not isinstance(raw, dict):
        return None
    kind = str_or_none(raw.get("type")) or ("message" if "role" in raw else "unknown")
    item = InputItem(kind, str_or_none(raw.get("role")), _text(raw.get("content")))
    item.call_id = str_or_none(raw.get("call_id"))
    item.name = str_or_none(raw.get("name"))
    if kind in _OUTPUTS:
        output = raw.get("output")
        item.output = output[:MAX_TEXT] if isinstance(output, str) else clip(output, 4)
    elif kind in _KINDS:
        args = raw.get("arguments") if "arguments" in raw else raw.get("input")
        item.text = _text(args) if isinstance(args, str) else ""
    return item


@dataclass(eq=False)
class Request:
    """One ``response.create``: what the client asked for, on which lane, and the response that answered it."""

    index: int
    seq: int
    t: float
    stream_id: str | None = None
    model: str | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    input: list[InputItem] = field(default_factory=list)
    input_count: int = 0
    tools: list[str] = field(default_factory=list)  # the tools offered, by name (or type for hosted ones)
    tools_count: int = 0
    response: StreamedResponse | None = None

    @property
    def latency_ms(self) -> dict[str, float | None]:
        """Milliseconds from the request to created, to the first output token and to done."""
        r = self.response

        def since(t: float | None) -> float | None:
            return None if t is None else round((t - self.t) * 1000.0, 3)

        if r is None:
            return {"created": None, "first_token": None, "done": None}
        return {"created": since(r.t_created), "first_token": since(r.t_first_token), "done": since(r.t_done)}

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seq": self.seq,
            "t": self.t,
            "stream_id": self.stream_id,
            "model": self.model,
            "instructions": self.instructions,
            "previous_response_id": self.previous_response_id,
            "input": [i.to_json() for i in self.input],
            "input_count": self.input_count,
            "tools": list(self.tools),
            "tools_count": self.tools_count,
            "response_id": self.response.id if self.response is not None else None,
            "latency_ms": self.latency_ms,
        }


def _tool_name(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    return str_or_none(raw.get("name")) or str_or_none(raw.get("server_label")) or str_or_none(raw.get("type"))


class ResponsesSession:
    """Incremental reducer of a Responses WebSocket mode connection."""

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        self.session = session
        self.anomalies: list[Anomaly] = []
        self.streams = ResponseStreams(self._flag)
        self.requests: list[Request] = []
        self.steers: list[dict[str, Any]] = []  # client steers and the server's accepted/pending/failed
        self.lanes: list[str | None] = []  # in order of first sight
        self._waiting: dict[str | None, deque[Request]] = {}
        self._answered: dict[str, Request] = {}  # response id -> its request
        self.frames = 0

    def _flag(self, seq: int, kind: str, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        self.anomalies.append(Anomaly(seq, kind, message))

    @property
    def responses(self) -> list[StreamedResponse]:
        return self.streams.responses

    def request_of(self, response_id: str) -> Request | None:
        return self._answered.get(response_id)

    def _lane(self, lane: str | None) -> deque[Request] | None:
        q = self._waiting.get(lane)
        if q is None:
            if len(self._waiting) >= MAX_LANES:
                return None
            q = self._waiting[lane] = deque()
            self.lanes.append(lane)
        return q

    # --- feeding --------------------------------------------------------------------

    def feed(self, frame: Frame) -> None:
        """Take one frame (binary or non-JSON frames are an anomaly)."""
        self.frames += 1
        event = frame.event
        if event is None:
            self._flag(frame.seq, "malformed", f"{frame.direction.value} frame is not a JSON object")
            return
        if frame.direction is Direction.CLIENT:
            self.feed_client(frame.t, event, frame.seq)
        else:
            self.feed_server(frame.t, event, frame.seq)

    def feed_client(self, t: float, ev: dict[str, Any], seq: int = -1) -> None:
        kind = ev.get("type")
        if kind == "response.create":
            self._on_create(t, ev, seq)
        elif kind in ("response.steer", "response.inject"):
            if len(self.steers) < MAX_STEERS:
                self.steers.append(
                    {"t": t, "seq": seq, "type": kind, "response_id": clip(ev.get("response_id"), 1), "from": "client"}
                )
        else:
            self._flag(seq, "unknown_type", f"unknown client event type {short(kind)!r}")

    def _on_create(self, t: float, ev: dict[str, Any], seq: int) -> None:
        if len(self.requests) >= MAX_REQUESTS:
            self._flag(seq, "bad_index", f"more than {MAX_REQUESTS} requests")
            return
        req = Request(len(self.requests), seq, t)
        req.stream_id = str_or_none(ev.get("stream_id"))
        req.model = str_or_none(ev.get("model"))
        instructions = ev.get("instructions")
        req.instructions = _text(instructions) if isinstance(instructions, str | list) else None
        req.previous_response_id = str_or_none(ev.get("previous_response_id"))
        raw_input = ev.get("input")
        items = [raw_input] if isinstance(raw_input, str) else raw_input if isinstance(raw_input, list) else []
        req.input_count = len(items)
        for raw in items[:MAX_INPUT_ITEMS]:
            item = _input_item(raw)
            if item is None:
                self._flag(seq, "malformed", f"request {req.index + 1}: input item is {type(raw).__name__}")
            else:
                req.input.append(item)
        tools = ev.get("tools")
        if isinstance(tools, list):
            req.tools_count = len(tools)
            req.tools = [n for n in (_tool_name(x) for x in tools[:MAX_TOOLS]) if n is not None]
        self.requests.append(req)
        lane = self._lane(req.stream_id)
        if lane is None:
            self._flag(seq, "bad_index", f"more than {MAX_LANES} stream_id lanes")
        else:
            lane.append(req)

    def feed_server(self, t: float, ev: dict[str, Any], seq: int = -1) -> None:
        kind = ev.get("type")
        lane = str_or_none(ev.get("stream_id"))
        if (
            isinstance(kind, str)
            and kind.startswith("response.steer.")
            or kind
            in (
                "response.inject.created",
                "response.inject.failed",
            )
        ):
            if len(self.steers) < MAX_STEERS:
                self.steers.append({"t": t, "seq": seq, "type": kind, "from": "server", "stream_id": lane})
            return
        before = len(self.streams.responses)
        resp = self.streams.feed_event(t, ev, seq, key=lane)
        if resp is None:
            if kind == "error":
                self._fail_waiting(lane)
            return
        if resp.id not in self._answered and (len(self.streams.responses) > before or kind == "response.created"):
            q = self._waiting.get(lane)
            if q:
                req = q.popleft()
                req.response = resp
                self._answered[resp.id] = req

    def _fail_waiting(self, lane: str | None) -> None:
        """A stream-level ``error`` with no response streaming: it answers the lane's oldest waiting request."""
        q = self._waiting.get(lane)
        if q:
            q.popleft()

    # --- reading ----------------------------------------------------------------------

    def usage(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self.responses:
            for k, v in r.usage.items():
                total[k] = total.get(k, 0) + v
        return total

    def to_json(self) -> dict[str, Any]:
        out_responses = []
        for r in self.responses:
            body = r.to_json()
            req = self._answered.get(r.id)
            body["stream_id"] = r.key
            body["request"] = req.index if req is not None else None
            body["latency_ms"] = {**body["latency_ms"], **({"request": req.latency_ms} if req else {})}
            out_responses.append(body)
        return {
            "requests": [r.to_json() for r in self.requests],
            "responses": out_responses,
            "lanes": list(self.lanes),
            "steers": list(self.steers),
            "errors": [{"seq": s, "t": t, **e} for s, t, e in self.streams.errors],
            "usage": self.usage(),
            "anomalies": [a._asdict() for a in self.anomalies],
        }


def assemble_responses(frames: Iterable[Frame], session: dict[str, Any] | None = None) -> ResponsesSession:
    """A Responses WebSocket session from a whole recording (a loop over :meth:`ResponsesSession.feed`)."""
    book = ResponsesSession(session)
    for frame in frames:
        book.feed(frame)
    return book


# --- the API-neutral summary ------------------------------------------------------------------


def _parsed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return clip(orjson.loads(value), 8)
        except orjson.JSONDecodeError:
            return value
    return value


def _tool(call: OutputItem) -> ToolUse:
    kind = _KINDS.get(call.type) or call.type.removesuffix("_call")
    args = _parsed(call.arguments) if call.arguments else None
    return ToolUse(kind, call.name, args, _parsed(call.output), call.t_first, call.t_done)


def summarize_responses(frames: Iterable[Frame], session: dict[str, Any] | None = None) -> Summary:
    """A Responses WebSocket session as a :class:`Summary`.

    Each request's new user messages are user turns (a request that repeats the conversation so far, as a
    stateless agent does, adds only what is new); each response is an assistant turn: its messages' text, its
    tool calls as :class:`ToolUse` with the output a later request sent back for their ``call_id``. Latency is
    from the request to the first output token; usage is summed over the responses.
    """
    book = assemble_responses(frames, session)
    row = session or {}
    model = row.get("model") if isinstance(row.get("model"), str) else None
    model = model or next((r.model for r in book.responses if r.model), None)
    variant = row.get("variant")
    out = Summary("responses", variant if isinstance(variant, str) else None, model)
    calls: dict[str, ToolUse] = {}
    seen_users = 0  # user messages already turned into turns (a stateless agent sends them all again)
    for req in book.requests:
        users = [i for i in req.input if i.type == "message" and i.role == "user"]
        fresh = users if req.previous_response_id else users[seen_users:]
        seen_users = len(users) if not req.previous_response_id else seen_users
        for item in fresh:
            out.turns.append(Turn(USER, item.text or None, req.t, req.t))
        for item in req.input:
            if item.type in _OUTPUTS and item.call_id in calls:
                tool = calls[item.call_id]
                if tool.output is None:
                    tool.output, tool.t_end = _parsed(item.output), req.t
        resp = req.response
        if resp is None:
            continue
        turn = Turn(ASSISTANT, resp.text or None, resp.t_created, resp.t_done)
        turn.interrupted = resp.status in ("cancelled", "incomplete")
        if resp.t_first_token is not None:
            turn.latency_ms = round(max(0.0, resp.t_first_token - req.t) * 1000.0, 3)
        for call in resp.tool_calls:
            tool = _tool(call)
            if call.call_id is not None:
                calls[call.call_id] = tool
            turn.tools.append(tool)
        out.turns.append(turn)
    for r in book.responses:
        for name, n in r.usage.items():
            out.usage[name] = out.usage.get(name, 0.0) + n
        if r.error is not None and r.status == "failed":
            what = [str(x)[:200] for x in (r.error.get("code"), r.error.get("message")) if x]
            out.errors.append(": ".join(["response failed", *what]))
    for _, _, e in book.streams.errors:
        out.errors.append(f"{e.get('code') or 'error'}: {e.get('message') or ''}".strip())
    out.anomalies = len(book.anomalies)
    return out
