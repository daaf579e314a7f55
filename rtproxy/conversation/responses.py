"""Responses API streaming events into responses: the pure, incremental reducer of one or many streams.

Feed the events of a Responses stream (``response.created`` … ``response.completed``, with the output
deltas between) in order, read each response's state at any time::

    book = ResponseStreams()
    for t, event in stream:
        book.feed_event(t, event, seq)
    book.responses       # in order of first sight: status, output items, usage, timings, errors

Not tied to a transport: GPT-Live nests these events in ``response.event`` (one stream per delegation), the
Responses WebSocket mode sends them bare. Events name their response by ``response.id`` (lifecycle events) or
``response_id``; the output events of the Responses stream carry neither, only ``item_id`` and
``output_index``, so they go to the response the item belongs to, else to the latest response fed. Bad input
never raises: it becomes an :class:`~rtproxy.conversation.model.Anomaly`; every list from the wire is bounded
(:data:`~rtproxy.conversation.model.MAX_OUTPUT_ITEMS` items per response, :data:`MAX_RESPONSES` responses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .model import MAX_MESSAGE, MAX_OUTPUT_ITEMS, Anomaly, clip, short, str_or_none

__all__ = ["OutputItem", "StreamedResponse", "ResponseStreams", "MAX_RESPONSES", "usage_numbers"]

#: Responses one book keeps; later ones are an anomaly (a Live session delegates a few hundred times at most).
MAX_RESPONSES = 10_000
#: Stream-level ``error`` events kept (later ones still mark their response).
MAX_ERRORS = 1_000
#: Reasoning summary parts one item keeps.
MAX_SUMMARIES = 64

Event = dict[str, Any]

#: Lifecycle events: they carry the whole ``response`` object (its status, usage, error).
_LIFECYCLE = {
    "response.created": "in_progress",
    "response.queued": "queued",
    "response.in_progress": "in_progress",
    "response.completed": "completed",
    "response.failed": "failed",
    "response.incomplete": "incomplete",
    "response.cancelled": "cancelled",
}
_TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})
#: Output deltas: event type -> (field of the event, what it fills on the item).
_DELTAS = {
    "response.output_text.delta": "text",
    "response.refusal.delta": "refusal",
    "response.function_call_arguments.delta": "arguments",
    "response.custom_tool_call_input.delta": "arguments",
    "response.mcp_call_arguments.delta": "arguments",
    "response.reasoning_summary_text.delta": "summary",
    "response.reasoning_text.delta": "reasoning",
}
_DONES = {
    "response.output_text.done": ("text", "text"),
    "response.refusal.done": ("refusal", "refusal"),
    "response.function_call_arguments.done": ("arguments", "arguments"),
    "response.custom_tool_call_input.done": ("input", "arguments"),
    "response.mcp_call_arguments.done": ("arguments", "arguments"),
    "response.reasoning_summary_text.done": ("text", "summary"),
    "response.reasoning_text.done": ("text", "reasoning"),
}
#: Known events that need nothing of their own.
_IGNORED = frozenset(
    {
        "response.content_part.added",
        "response.content_part.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.output_text.annotation.added",
        "response.audio.delta",
        "response.audio.done",
        "response.audio.transcript.delta",
        "response.audio.transcript.done",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.completed",
        "response.image_generation_call.partial_image",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_list_tools.failed",
    }
)


def usage_numbers(usage: Any) -> dict[str, int]:
    """A Responses ``usage`` object as flat counts: input, cached, output, reasoning, total (missing ones 0)."""
    if not isinstance(usage, dict):
        return {}

    def num(obj: Any, key: str) -> int:
        v = obj.get(key) if isinstance(obj, dict) else None
        return int(v) if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 else 0

    return {
        "input_tokens": num(usage, "input_tokens"),
        "cached_tokens": num(usage.get("input_tokens_details"), "cached_tokens"),
        "output_tokens": num(usage, "output_tokens"),
        "reasoning_tokens": num(usage.get("output_tokens_details"), "reasoning_tokens"),
        "total_tokens": num(usage, "total_tokens"),
    }


@dataclass(eq=False)
class OutputItem:
    """One output item of a response: a message (text, refusal), a tool call (arguments), reasoning (summary)."""

    id: str
    type: str = "message"
    status: str | None = None
    name: str | None = None
    call_id: str | None = None
    server_label: str | None = None  # an MCP call's server
    output: Any = None  # what a hosted tool returned (an MCP call's output), as the wire gave it
    t_first: float | None = None
    t_done: float | None = None
    _text: list[str] = field(default_factory=list, repr=False)
    _refusal: list[str] = field(default_factory=list, repr=False)
    _arguments: list[str] = field(default_factory=list, repr=False)
    _summary: list[str] = field(default_factory=list, repr=False)
    _reasoning: list[str] = field(default_factory=list, repr=False)

    def _get(self, what: str) -> str:
        chunks: list[str] = getattr(self, "_" + what)
        if len(chunks) > 1:
            chunks[:] = ["".join(chunks)]
        return chunks[0] if chunks else ""

    def _set(self, what: str, value: str) -> None:
        chunks: list[str] = getattr(self, "_" + what)
        chunks[:] = [value] if value else []

    @property
    def text(self) -> str:
        return self._get("text")

    @property
    def refusal(self) -> str:
        return self._get("refusal")

    @property
    def arguments(self) -> str:
        return self._get("arguments")

    @property
    def summary(self) -> str:
        return self._get("summary")

    @property
    def reasoning(self) -> str:
        return self._get("reasoning")

    @property
    def is_tool_call(self) -> bool:
        return self.type.endswith("_call") and self.type != "reasoning"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "status": self.status}
        for key in ("name", "call_id", "server_label"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("text", "refusal", "arguments", "summary", "reasoning"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.output is not None:
            out["output"] = self.output
        return out


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000.0, 3)


@dataclass(eq=False)
class StreamedResponse:
    """A response as its stream told it: status, output items, usage, error and timings."""

    id: str
    key: str | None = None  # what the caller grouped it under (a Live delegation id)
    status: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    incomplete_reason: str | None = None
    items: list[OutputItem] = field(default_factory=list)
    t_created: float | None = None
    t_first_token: float | None = None
    t_done: float | None = None
    first_seq: int = -1
    last_seq: int = -1

    @property
    def text(self) -> str:
        return "\n".join(i.text for i in self.items if i.text)

    @property
    def tool_calls(self) -> list[OutputItem]:
        return [i for i in self.items if i.is_tool_call]

    @property
    def done(self) -> bool:
        return self.status in _TERMINAL

    @property
    def latency_ms(self) -> dict[str, float | None]:
        """Milliseconds from created to the first output token and to done."""
        return {"first_token": _ms(self.t_created, self.t_first_token), "done": _ms(self.t_created, self.t_done)}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "model": self.model,
            "usage": dict(self.usage),
            "error": self.error,
            "incomplete_reason": self.incomplete_reason,
            "output": [i.to_json() for i in self.items],
            "latency_ms": self.latency_ms,
            "t_created": self.t_created,
            "t_done": self.t_done,
        }


class ResponseStreams:
    """Incremental reducer of Responses streaming events; ``flag`` receives anomalies (else kept here)."""

    def __init__(self, flag: Callable[[int, str, str], None] | None = None) -> None:
        self.anomalies: list[Anomaly] = []
        self.flag = flag or self._keep
        self.responses: list[StreamedResponse] = []
        self.errors: list[tuple[int, float, dict[str, Any]]] = []  # stream-level ``error`` events
        self._by_id: dict[str, StreamedResponse] = {}
        self._item_owner: dict[str, tuple[StreamedResponse, OutputItem]] = {}
        self._latest: dict[str | None, StreamedResponse] = {}  # per key, the response being streamed

    def _keep(self, seq: int, kind: str, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        self.anomalies.append(Anomaly(seq, kind, message))

    def response(self, response_id: str) -> StreamedResponse | None:
        return self._by_id.get(response_id)

    def for_key(self, key: str | None) -> list[StreamedResponse]:
        return [r for r in self.responses if r.key == key]

    # --- feeding --------------------------------------------------------------------

    def feed_event(self, t: float, event: Any, seq: int = -1, key: str | None = None) -> StreamedResponse | None:
        """Take one streaming event (``key`` groups responses, e.g. by Live delegation); the response it touched."""
        if not isinstance(event, dict):
            self.flag(seq, "malformed", f"responses event is {type(event).__name__}, not an object")
            return None
        etype = event.get("type")
        if not isinstance(etype, str):
            self.flag(seq, "malformed", f"responses event without a type: {short(etype)}")
            return None
        try:
            return self._dispatch(t, etype, event, seq, key)
        except Exception as e:  # noqa: BLE001 - bad input becomes an anomaly, never an exception
            self.flag(seq, "malformed", f"{short(etype)}: {type(e).__name__}: {short(str(e), 100)}")
            return None

    def _dispatch(self, t: float, etype: str, ev: Event, seq: int, key: str | None) -> StreamedResponse | None:
        if etype in _LIFECYCLE:
            return self._on_lifecycle(t, etype, ev, seq, key)
        if etype in _DELTAS:
            return self._on_delta(t, _DELTAS[etype], ev, seq, key)
        if etype in _DONES:
            return self._on_done(t, etype, ev, seq, key)
        if etype in ("response.output_item.added", "response.output_item.done"):
            return self._on_item(t, etype.endswith(".done"), ev, seq, key)
        if etype == "error":
            body = ev["error"] if isinstance(ev.get("error"), dict) else ev  # the WebSocket mode nests it
            error = {k: clip(body.get(k), 4) for k in ("code", "message", "param")}
            if len(self.errors) < MAX_ERRORS:
                self.errors.append((seq, t, error))
            resp = self._latest.get(key)
            if resp is not None and resp.error is None:
                resp.error = error
            return resp
        if etype in _IGNORED or etype.startswith("response."):
            return self._latest.get(key)
        self.flag(seq, "unknown_type", f"unknown responses event type {short(etype)!r}")
        return None

    def _new(self, rid: str, key: str | None, t: float, seq: int) -> StreamedResponse | None:
        if len(self.responses) >= MAX_RESPONSES:
            self.flag(seq, "bad_index", f"more than {MAX_RESPONSES} responses, {short(rid)} dropped")
            return None
        resp = StreamedResponse(rid, key, first_seq=seq)
        self._by_id[rid] = resp
        self.responses.append(resp)
        return resp

    def _resolve(self, ev: Event, t: float, seq: int, key: str | None) -> StreamedResponse | None:
        """The response an output event belongs to: its response_id, its item's, else the latest for the key."""
        rid = str_or_none(ev.get("response_id"))
        if rid is not None:
            resp = self._by_id.get(rid) or self._new(rid, key, t, seq)
        else:
            item_id = ev.get("item_id")
            owner = self._item_owner.get(item_id) if isinstance(item_id, str) else None
            resp = owner[0] if owner is not None else self._latest.get(key)
            if resp is None:
                resp = self._new(f"<unnamed {len(self.responses) + 1}>", key, t, seq)
        if resp is not None:
            resp.last_seq = seq
            self._latest[key] = resp
        return resp

    def _on_lifecycle(self, t: float, etype: str, ev: Event, seq: int, key: str | None) -> StreamedResponse | None:
        obj = ev.get("response")
        if not isinstance(obj, dict):
            self.flag(seq, "malformed", f"{etype}: unusable response {short(obj, 40)}")
            return None
        rid = str_or_none(obj.get("id"))
        if rid is None:
            self.flag(seq, "malformed", f"{etype}: response without an id")
            return None
        resp = self._by_id.get(rid) or self._new(rid, key, t, seq)
        if resp is None:
            return None
        self._latest[key] = resp
        resp.last_seq = seq
        status = str_or_none(obj.get("status")) or _LIFECYCLE[etype]
        if resp.status not in _TERMINAL or status in _TERMINAL:
            resp.status = status
        resp.model = str_or_none(obj.get("model")) or resp.model
        if resp.t_created is None:
            resp.t_created = t
        if isinstance(obj.get("usage"), dict):
            resp.usage = usage_numbers(obj["usage"])
        if isinstance(obj.get("error"), dict):
            resp.error = {k: clip(obj["error"].get(k), 4) for k in ("code", "message")}
        details = obj.get("incomplete_details")
        if isinstance(details, dict):
            resp.incomplete_reason = str_or_none(details.get("reason"))
        if status in _TERMINAL:
            resp.t_done = t
            output = obj.get("output")
            if isinstance(output, list):
                for raw in output[:MAX_OUTPUT_ITEMS]:
                    self._upsert(resp, raw, t, seq, done=True)
        return resp

    def _upsert(self, resp: StreamedResponse, raw: Any, t: float, seq: int, *, done: bool) -> OutputItem | None:
        if not isinstance(raw, dict):
            self.flag(seq, "malformed", f"response {short(resp.id)}: output item is not an object")
            return None
        item_id = str_or_none(raw.get("id")) or str_or_none(raw.get("call_id"))
        if item_id is None:
            item_id = f"<item {len(resp.items)}>"
        owner = self._item_owner.get(item_id)
        if owner is not None and owner[0] is resp:
            item = owner[1]
        else:
            if len(resp.items) >= MAX_OUTPUT_ITEMS:
                self.flag(seq, "bad_index", f"response {short(resp.id)}: more than {MAX_OUTPUT_ITEMS} output items")
                return None
            item = OutputItem(item_id)
            resp.items.append(item)
            self._item_owner[item_id] = (resp, item)
        item.type = str_or_none(raw.get("type")) or item.type
        item.status = str_or_none(raw.get("status")) or item.status
        for attr in ("name", "call_id", "server_label"):
            value = str_or_none(raw.get(attr))
            if value is not None:
                setattr(item, attr, value)
        if done:
            item.t_done = item.t_done or t
            self._take_final(item, raw)
        return item

    def _take_final(self, item: OutputItem, raw: Event) -> None:
        """An item's final text, arguments and summaries, as ``output_item.done``/``response.completed`` give them."""
        args = raw.get("arguments") if "arguments" in raw else raw.get("input")
        if isinstance(args, str):
            item._set("arguments", args)
        if "output" in raw and raw["output"] is not None:
            item.output = clip(raw["output"], 8)
        content = raw.get("content")
        if isinstance(content, list):
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "output_text"]
            refusals = [p.get("refusal") for p in content if isinstance(p, dict) and p.get("type") == "refusal"]
            if texts and all(isinstance(x, str) for x in texts):
                item._set("text", "".join(texts))  # type: ignore[arg-type]
            if refusals and all(isinstance(x, str) for x in refusals):
                item._set("refusal", "".join(refusals))  # type: ignore[arg-type]
        summary = raw.get("summary")
        if isinstance(summary, list) and summary:
            parts = [p.get("text") for p in summary[:MAX_SUMMARIES] if isinstance(p, dict)]
            if all(isinstance(x, str) for x in parts):
                item._set("summary", "\n".join(parts))  # type: ignore[arg-type]

    def _on_item(self, t: float, done: bool, ev: Event, seq: int, key: str | None) -> StreamedResponse | None:
        resp = self._resolve(ev, t, seq, key)
        if resp is not None:
            self._upsert(resp, ev.get("item"), t, seq, done=done)
        return resp

    def _item_for(self, resp: StreamedResponse, ev: Event, t: float, seq: int) -> OutputItem | None:
        item_id = ev.get("item_id")
        if not isinstance(item_id, str):
            self.flag(seq, "malformed", f"{short(ev.get('type'))}: unusable item_id {short(item_id, 40)}")
            return None
        owner = self._item_owner.get(item_id)
        if owner is not None:
            return owner[1]
        return self._upsert(resp, {"id": item_id}, t, seq, done=False)

    def _on_delta(self, t: float, what: str, ev: Event, seq: int, key: str | None) -> StreamedResponse | None:
        delta = ev.get("delta")
        if not isinstance(delta, str):
            self.flag(seq, "malformed", f"{short(ev.get('type'))}: unusable delta {short(delta, 40)}")
            return None
        resp = self._resolve(ev, t, seq, key)
        if resp is None:
            return None
        item = self._item_for(resp, ev, t, seq)
        if item is None:
            return resp
        if what == "arguments" and item.type == "message":
            item.type = "function_call" if ev.get("type") == "response.function_call_arguments.delta" else item.type
        getattr(item, "_" + what).append(delta)
        if item.t_first is None:
            item.t_first = t
        if resp.t_first_token is None:
            resp.t_first_token = t
        return resp

    def _on_done(self, t: float, etype: str, ev: Event, seq: int, key: str | None) -> StreamedResponse | None:
        fieldname, what = _DONES[etype]
        resp = self._resolve(ev, t, seq, key)
        if resp is None:
            return None
        item = self._item_for(resp, ev, t, seq)
        value = ev.get(fieldname)
        if item is None:
            return resp
        if isinstance(value, str):
            if what == "summary" and item.summary and item.summary != value and value not in item.summary:
                item._set(what, item.summary + "\n" + value)
            elif what != "summary" or not item.summary:
                item._set(what, value)
        if isinstance(ev.get("name"), str):
            item.name = ev["name"]
        return resp

    # --- reading ----------------------------------------------------------------------

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.responses]
