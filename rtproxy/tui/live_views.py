"""A GPT-Live session as the TUI's conversation snapshot (:class:`~rtproxy.tui.views.ConversationView`).

The Conversation and Timeline tabs read one shape whatever the API: a Live speech turn becomes an item
(``turn-N``, its transcript, audio and waveform), a delegation an item of type ``delegation`` (what was asked,
the backend's tool calls with their results, what came back), context the client appended a system line, and
the latency of each answer and each delegation a response row (``first audio`` = end of the user's speech →
start of the answer; a delegation's ``first delta`` = its first result), so the Timeline tab draws them as
bars. Pure: no Textual, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..conversation.live import LiveSession
from ..conversation.live_model import Appended, Delegation, SpeechTurn
from .views import ConversationView, ItemView, ResponseView, ViewBuilder, fast_peaks

__all__ = ["LiveViewBuilder", "turn_id"]


def turn_id(turn: SpeechTurn) -> str:
    return f"turn-{turn.index + 1}"


def _turn_response(turn: SpeechTurn) -> ResponseView | None:
    if turn.latency_ms is None:
        return None
    done = turn.latency_ms + (turn.end_ms - turn.start_ms)
    return ResponseView(
        id=f"{turn_id(turn)} answer",
        status="interrupted" if turn.interrupted else "completed",
        status_details=None,
        usage=None,
        output_item_ids=(turn_id(turn),),
        trigger_type="end of user speech",
        t_trigger=(turn.start_ms - turn.latency_ms) / 1000,
        t_created=None,
        t_first_audio=turn.start_ms / 1000,
        t_first_delta=None,
        t_done=turn.end_ms / 1000,
        latency_ms={"created": None, "first_audio": turn.latency_ms, "first_delta": None, "done": round(done, 3)},
        audio_ms=turn.audio_ms,
    )


def _delegation_response(d: Delegation) -> ResponseView:
    usage: dict[str, Any] = {}
    for r in d.responses:
        for key, value in r.usage.items():
            usage[key] = usage.get(key, 0) + value
    return ResponseView(
        id=f"{d.id} ({d.target})",
        status=d.status,
        status_details=None,
        usage=usage or None,
        output_item_ids=(d.id,),
        trigger_type="delegation",
        t_trigger=d.t_created,
        t_created=None,
        t_first_audio=None,
        t_first_delta=d.t_first_result,
        t_done=d.t_last,
        latency_ms={"created": None, "first_audio": None, "first_delta": d.first_result_ms, "done": d.duration_ms},
        audio_ms=0.0,
    )


def _delegation_item(d: Delegation) -> ItemView:
    results = {r.call_id: r.output for r in d.tool_results}
    tools = [
        {"name": c.name or c.type, "arguments": c.arguments, "result": results.get(c.call_id or "")}
        for r in d.responses
        for c in r.tool_calls
    ]
    asked: dict[str, Any] = {"asked": d.asked}
    if tools:
        asked["tools"] = tools
    try:
        arguments = orjson.dumps(asked).decode()
    except (orjson.JSONEncodeError, TypeError):
        arguments = str(asked)
    names = sorted({str(t["name"]) for t in tools})
    return ItemView(
        id=d.id,
        type="delegation",
        role=None,
        status=d.status,
        text="",
        transcript="",
        name=f"→ {d.target}" + (f": {', '.join(names)}" if names else ""),
        call_id=d.id,
        arguments=arguments,
        output=d.returned() or None,
        audio_ms=0.0,
        peaks=(),
        truncated_ms=None,
        response_id=f"{d.id} ({d.target})",
        first_seq=d.seq,
        last_seq=d.last_seq,
        t_start=d.offset_ms / 1000 if d.offset_ms is not None else None,
    )


def _appended_item(a: Appended) -> ItemView:
    """Context the client appended outside any delegation (instructions, thinking, commentary): a system line."""
    return ItemView(
        id=f"{a.kind}-{a.seq}",
        type="message",
        role="system",
        status=None if a.t_acked is not None else "not acknowledged",
        text=f"{a.kind}: {a.content}",
        transcript="",
        name=None,
        call_id=None,
        arguments=None,
        output=None,
        audio_ms=0.0,
        peaks=(),
        truncated_ms=None,
        response_id=None,
        first_seq=a.seq,
        last_seq=a.seq,
        t_start=a.start_ms / 1000 if a.start_ms is not None else None,
    )


class LiveViewBuilder:
    """Snapshots of a :class:`LiveSession`, reusing unchanged item views (as :class:`ViewBuilder` does)."""

    def __init__(self) -> None:
        self._items: dict[str, ItemView] = {}
        self._responses: dict[str, ResponseView] = {}
        self._peaks: dict[str, tuple[int, tuple[tuple[int, int], ...]]] = {}

    def _turn_peaks(self, live: LiveSession, turn: SpeechTurn) -> tuple[tuple[int, int], ...]:
        key, n = turn_id(turn), turn.audio_bytes
        hit = self._peaks.get(key)
        if hit is not None and hit[0] == n:
            return hit[1]
        stream = live.input if turn.speaker == "user" else live.output
        value = tuple(fast_peaks(stream.pcm16(turn.audio_start, turn.audio_end), 48)) if n else ()
        self._peaks[key] = (n, value)
        return value

    def _turn_item(self, live: LiveSession, turn: SpeechTurn) -> ItemView:
        return ItemView(
            id=turn_id(turn),
            type="message",
            role=turn.speaker,
            status="interrupted" if turn.interrupted else None,
            text="",
            transcript=turn.text,
            name=None,
            call_id=None,
            arguments=None,
            output=None,
            audio_ms=turn.audio_ms,
            peaks=self._turn_peaks(live, turn),
            truncated_ms=None,
            response_id=f"{turn_id(turn)} answer" if turn.latency_ms is not None else None,
            first_seq=turn.first_seq,
            last_seq=turn.last_seq,
            t_start=turn.start_ms / 1000,
        )

    def build(self, live: LiveSession) -> ConversationView:
        """Snapshot the reducer's state (call it on the thread that feeds it)."""
        turns = sorted(live.finish(), key=lambda t: (t.start_ms, t.index))
        entries: list[tuple[float, ItemView, ResponseView | None]] = []
        for turn in turns:
            entries.append((turn.start_ms, self._turn_item(live, turn), _turn_response(turn)))
        for d in live.delegations:
            at = d.offset_ms if d.offset_ms is not None else d.t_created * 1000
            entries.append((at, _delegation_item(d), _delegation_response(d)))
        for a in live.appended:
            if a.delegation_id is None:
                at = a.start_ms if a.start_ms is not None else a.t * 1000
                entries.append((at, _appended_item(a), None))
        entries.sort(key=lambda e: e[0])
        reuse = ViewBuilder._reuse
        items = tuple(reuse(self._items, item) for _, item, _ in entries)
        responses = tuple(reuse(self._responses, r) for _, _, r in entries if r is not None)
        return ConversationView(
            items=items,
            responses=responses,
            formats=(live.input.format, live.output.format),
            errors=len(live.errors),
            anomalies=len(live.anomalies),
            events_fed=live.events_fed,
            dialect="live",
            by_id={i.id: i for i in items},
            by_response={r.id: r for r in responses},
        )
