"""How delegations and appended context fill a GPT-Live session: the client's, a Responses backend's, Decisions'.

A mixin of :class:`rtproxy.conversation.live.LiveSession` (kept apart only for size). ``session.delegation.created``
opens a delegation; ``response.event`` feeds its nested Responses stream to
:class:`rtproxy.conversation.responses.ResponseStreams` (keyed by the delegation; an event naming none follows
the delegation whose ``response_id`` it carries); the client's ``response.item.create`` with a
``function_call_output`` returns a backend tool call's result; ``decision.event`` carries a Decisions answer
(with no delegation: a transcript trigger's); the client's ``session.{instructions,thinking,commentary}.append``
naming a delegation is its reply, the others general context, acknowledged by the ``…appended`` events that
place them on the timeline. Every list is bounded; what cannot be used is an anomaly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .live_model import Appended, Delegation, ToolResult
from .model import MAX_AUDIO_MS, MAX_MESSAGE, clip, short, str_or_none
from .responses import ResponseStreams

__all__ = ["DelegationRules", "MAX_DELEGATIONS", "MAX_APPENDS"]

Event = dict[str, Any]

MAX_DELEGATIONS = 10_000
MAX_APPENDS = 10_000
#: Tool results per delegation, decision triggers, call ids and pending acks kept.
MAX_KEPT = 1_000
MAX_IDS = 100_000


class DelegationRules:
    """Delegation and appended-context handlers; the state they use is set up by LiveSession."""

    appended: list[Appended]
    delegations: list[Delegation]
    triggers: list[dict[str, Any]]
    book: ResponseStreams
    _appends: dict[str, Appended]
    _delegations: dict[str, Delegation]
    _by_response_id: dict[str, Delegation]
    _calls: dict[str, Delegation]
    _flag: Callable[[int, str, str], None]
    _malformed: Callable[[int, Event, str], None]
    _answer: Callable[[Event, int], None]
    _span: Callable[[Event, int], tuple[float, float] | None]

    # --- appended context --------------------------------------------------------------------

    def _on_append(self, t: float, ev: Event, seq: int, conn: str) -> None:
        content, did = ev.get("content"), ev.get("delegation_id")
        if not isinstance(content, str):
            self._malformed(seq, ev, "content")
            return
        if did is not None and not isinstance(did, str):
            self._malformed(seq, ev, "delegation_id")
            did = None
        if len(self.appended) >= MAX_APPENDS:
            self._flag(seq, "bad_index", f"more than {MAX_APPENDS} appends, content dropped")
            return
        kind = str(ev.get("type")).split(".")[1]
        entry = Appended(kind, content, did, t, seq, str_or_none(ev.get("event_id")))
        self.appended.append(entry)
        if entry.event_id is not None and len(self._appends) < MAX_IDS:
            self._appends[entry.event_id] = entry
        delegation = self._delegations.get(did) if did is not None else None
        if did is not None and delegation is None:
            self._flag(seq, "unknown_delegation", f"{kind} append names unknown delegation {short(did)}")
        if delegation is not None:
            delegation.replies.append(entry)
            self._touch(delegation, t, seq, result=True)

    def _on_appended(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._answer(ev, seq)
        cid = ev.get("client_event_id")
        entry = self._appends.pop(cid, None) if isinstance(cid, str) else None
        if entry is None:
            return
        span = self._span(ev, seq)
        entry.t_acked = t
        if span is not None:
            entry.start_ms, entry.end_ms = span

    # --- delegations ---------------------------------------------------------------------------

    def _on_delegation(self, t: float, ev: Event, seq: int, conn: str) -> None:
        obj = ev.get("delegation")
        did = obj.get("id") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(did, str):
            self._malformed(seq, ev, "delegation")
            return
        self._answer(ev, seq)
        if did in self._delegations:
            self._flag(seq, "duplicate_delegation", f"delegation {short(did)} created twice")
            return
        if len(self.delegations) >= MAX_DELEGATIONS:
            self._flag(seq, "bad_index", f"more than {MAX_DELEGATIONS} delegations, {short(did)} dropped")
            return
        offset = ev.get("offset_ms")
        ok = isinstance(offset, int | float) and not isinstance(offset, bool) and 0 <= offset <= MAX_AUDIO_MS
        if not ok and offset is not None:
            self._flag(seq, "bad_index", f"delegation {short(did)}: offset_ms {short(offset)} unusable")
        target = short(obj.get("target"), 40) if obj.get("target") is not None else "client"
        d = Delegation(did[:MAX_MESSAGE], target, float(offset) if ok else None, t, seq)  # type: ignore[arg-type]
        d.response_id = str_or_none(obj.get("response_id"))
        if d.response_id is not None:
            self._by_response_id[d.response_id] = d
        self._delegations[did] = d
        self.delegations.append(d)

    def _delegation_for(self, ev: Event, seq: int) -> Delegation | None:
        did = ev.get("delegation_id")
        if did is None:
            return None
        d = self._delegations.get(did) if isinstance(did, str) else None
        if d is None:
            self._flag(seq, "unknown_delegation", f"{short(ev.get('type'))} names unknown delegation {short(did)}")
        return d

    def _touch(self, d: Delegation, t: float, seq: int, *, result: bool) -> None:
        d.t_last = t
        d.last_seq = seq
        if result and d.t_first_result is None:
            d.t_first_result = t

    def _on_response_event(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._answer(ev, seq)
        d = self._delegation_for(ev, seq)
        inner = ev.get("event")
        if d is None and ev.get("delegation_id") is None and isinstance(inner, dict):
            d = self._by_response(inner)
        resp = self.book.feed_event(t, inner, seq, key=d.id if d is not None else None)
        if d is None or resp is None:
            return
        if (not d.responses or d.responses[-1] is not resp) and resp not in d.responses:
            d.responses.append(resp)
        for item in resp.items[-2:]:
            if item.call_id is not None and item.call_id not in self._calls and len(self._calls) < MAX_IDS:
                self._calls[item.call_id] = d
        self._touch(d, t, seq, result=resp.t_first_token is not None)

    def _by_response(self, inner: Event) -> Delegation | None:
        """The delegation of a nested event that names none: the one whose ``response_id`` it carries."""
        obj = inner.get("response")
        rid = obj.get("id") if isinstance(obj, dict) else inner.get("response_id")
        if not isinstance(rid, str):
            return None
        return self._by_response_id.get(rid)

    def _on_item_create(self, t: float, ev: Event, seq: int, conn: str) -> None:
        item = ev.get("item")
        if not isinstance(item, dict):
            self._malformed(seq, ev, "item")
            return
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or "output" not in item:
            return  # a message or other input item for the backend
        d = self._calls.get(call_id)
        if d is None:
            self._flag(seq, "unknown_call", f"tool result for unknown call {short(call_id)}")
            return
        if len(d.tool_results) < MAX_KEPT:
            d.tool_results.append(ToolResult(call_id[:MAX_MESSAGE], clip(item.get("output"), 8), t, seq))
        self._touch(d, t, seq, result=False)

    def _on_decision(self, t: float, ev: Event, seq: int, conn: str) -> None:
        inner = ev.get("event")
        decision = inner.get("decision") if isinstance(inner, dict) else None
        if not isinstance(decision, dict):
            self._malformed(seq, ev, "event")
            return
        kept = clip(decision, 8)
        if ev.get("delegation_id") is None:
            if len(self.triggers) < MAX_KEPT:
                self.triggers.append({"t": t, "seq": seq, "trigger_id": str_or_none(ev.get("trigger_id")), **kept})
            return
        d = self._delegation_for(ev, seq)
        if d is not None and len(d.decisions) < MAX_KEPT:
            d.decisions.append(kept)
            self._touch(d, t, seq, result=True)
