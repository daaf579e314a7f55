"""A Responses WebSocket mode session as the TUI's conversation snapshot (:class:`~rtproxy.tui.views.ConversationView`).

The Conversation and Timeline tabs read one shape whatever the API: each ``response.create`` becomes a user item
(``request-N``: the new user messages it carries, else what it sends back, with its lane), each output item of the
response that answered it an item (a message's text, a reasoning summary as a system line, a tool call with its
arguments and the output a later request sent back), and each response a response row (trigger: its lane, or
``response.create``; latency from the request), so the Timeline tab draws one row per response. Pure: no Textual,
no I/O.
"""

from __future__ import annotations

from ..conversation.model import short
from ..conversation.responses import OutputItem, StreamedResponse
from ..conversation.responses_ws import Request, ResponsesSession
from .views import ConversationView, ItemView, ResponseView, ViewBuilder

__all__ = ["ResponsesViewBuilder"]

_OUTPUTS = ("function_call_output", "custom_tool_call_output", "mcp_call_output")


def _request_text(req: Request, seen_users: int) -> str:
    users = [i.text for i in req.input if i.type == "message" and i.role == "user"]
    fresh = users if req.previous_response_id else users[seen_users:]
    lane = f"[lane {short(req.stream_id, 30)}] " if req.stream_id is not None else ""
    if fresh:
        return lane + "\n".join(fresh)
    outputs = [i for i in req.input if i.type in _OUTPUTS]
    what = f"{len(outputs)} tool output{'s' if len(outputs) != 1 else ''}" if outputs else f"{req.input_count} items"
    return f"{lane}request #{req.index + 1}: {what}"


def _request_item(req: Request, text: str) -> ItemView:
    return ItemView(
        id=f"request-{req.index + 1}",
        type="message",
        role="user",
        status=None,
        text=text,
        transcript="",
        name=None,
        call_id=None,
        arguments=None,
        output=None,
        audio_ms=0.0,
        peaks=(),
        truncated_ms=None,
        response_id=None,
        first_seq=req.seq,
        last_seq=req.seq,
        t_start=req.t,
    )


def _output_item(resp: StreamedResponse, item: OutputItem, outputs: dict[str, str]) -> ItemView:
    tool = item.is_tool_call
    if item.type == "reasoning":
        role, text = "system", "reasoning: " + (item.summary or item.reasoning or "(no summary)")
    else:
        role, text = "assistant", item.text or (f"refusal: {item.refusal}" if item.refusal else "")
    name = item.name if item.type == "function_call" else f"{item.type.removesuffix('_call')} {item.name or ''}".strip()
    output = outputs.get(item.call_id or "") if item.call_id else None
    if output is None and item.output is not None:
        output = str(item.output)
    return ItemView(
        id=item.id,
        type="function_call" if tool else "message",
        role=None if tool else role,
        status=item.status,
        text="" if tool else text,
        transcript="",
        name=name if tool else None,
        call_id=item.call_id or (item.id if tool else None),
        arguments=item.arguments if tool else None,
        output=output if tool else None,
        audio_ms=0.0,
        peaks=(),
        truncated_ms=None,
        response_id=resp.id,
        first_seq=resp.first_seq,
        last_seq=resp.last_seq,
        t_start=item.t_first if item.t_first is not None else resp.t_created,
    )


def _response_view(req: Request, resp: StreamedResponse) -> ResponseView:
    lat = req.latency_ms
    return ResponseView(
        id=resp.id,
        status=resp.status,
        status_details={"error": resp.error} if resp.error else None,
        usage=dict(resp.usage) or None,
        output_item_ids=tuple(i.id for i in resp.items),
        trigger_type=f"lane {short(req.stream_id, 12)}" if req.stream_id is not None else "response.create",
        t_trigger=req.t,
        t_created=resp.t_created,
        t_first_audio=None,
        t_first_delta=resp.t_first_token,
        t_done=resp.t_done,
        latency_ms={
            "created": lat["created"],
            "first_audio": None,
            "first_delta": lat["first_token"],
            "done": lat["done"],
        },
        audio_ms=0.0,
    )


class ResponsesViewBuilder:
    """Snapshots of a :class:`ResponsesSession`, reusing unchanged item views (as :class:`ViewBuilder` does)."""

    def __init__(self) -> None:
        self._items: dict[str, ItemView] = {}
        self._responses: dict[str, ResponseView] = {}

    def build(self, book: ResponsesSession) -> ConversationView:
        """Snapshot the reducer's state (call it on the thread that feeds it)."""
        outputs = {
            i.call_id: str(i.output)
            for r in book.requests
            for i in r.input
            if i.type in _OUTPUTS and i.call_id is not None and i.output is not None
        }
        reuse = ViewBuilder._reuse
        items: list[ItemView] = []
        responses: list[ResponseView] = []
        seen_users = 0
        for req in book.requests:
            items.append(reuse(self._items, _request_item(req, _request_text(req, seen_users))))
            if not req.previous_response_id:
                seen_users = sum(1 for i in req.input if i.type == "message" and i.role == "user")
            resp = req.response
            if resp is None:
                continue
            items += [reuse(self._items, _output_item(resp, i, outputs)) for i in resp.items]
            responses.append(reuse(self._responses, _response_view(req, resp)))
        return ConversationView(
            items=tuple(items),
            responses=tuple(responses),
            errors=len(book.streams.errors),
            anomalies=len(book.anomalies),
            events_fed=book.frames,
            dialect="responses",
            by_id={i.id: i for i in items},
            by_response={r.id: r for r in responses},
        )
