"""A GPT-Live session as the API-neutral :class:`~rtproxy.conversation.summary.Summary` (for diff, cost, traces).

Turns are the speech turns (seconds on the session timeline); each delegation is a
:class:`~rtproxy.conversation.summary.ToolUse` of kind ``delegation.<target>`` on the assistant turn that
spoke over it (the one whose span holds its ``offset_ms``, else the next, else the last before; one with no
assistant turn at all gets an empty one), the backend's tool calls under it. ``usage`` holds the session's
billed seconds (``seconds``, ``active_seconds``, ``paused_seconds``) and the delegations' Responses backend tokens,
prefixed ``backend_`` (``backend_input_tokens``, ``backend_cached_tokens``, ``backend_output_tokens``,
``backend_reasoning_tokens``, ``backend_total_tokens``: another model, priced apart).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..protocols.wire import Frame
from .live import LiveSession, assemble_live
from .live_model import ASSISTANT, Delegation, SpeechTurn
from .summary import Summary, ToolUse, Turn

__all__ = ["summarize_live", "summary_of"]


#: Responses output item types as ToolUse kinds (others lose their ``_call``: ``web_search``, ``file_search``, …).
_KINDS = {"function_call": "function", "custom_tool_call": "custom", "mcp_call": "mcp"}


def _parsed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _tool_use(d: Delegation) -> ToolUse:
    results = {r.call_id: r for r in d.tool_results}
    tools = []
    for resp in d.responses:
        for call in resp.tool_calls:
            kind = _KINDS.get(call.type) or call.type.removesuffix("_call")
            result = results.get(call.call_id or "")
            tools.append(
                ToolUse(
                    kind=kind,
                    name=call.name,
                    arguments=_parsed(call.arguments) if call.arguments else None,
                    output=_parsed(result.output) if result is not None else _parsed(call.output),
                    t_start=call.t_first,
                    t_end=result.t if result is not None else call.t_done,
                )
            )
    t_start = d.offset_ms / 1000.0 if d.offset_ms is not None else d.t_created
    duration = d.duration_ms
    name = next((c.name for r in d.responses for c in r.tool_calls if c.name), None)
    return ToolUse(
        kind=f"delegation.{d.target}",
        name=name,
        arguments=d.asked,
        output=d.returned() or None,
        t_start=t_start,
        t_end=None if duration is None else t_start + duration / 1000.0,
        tools=tools,
    )


def _host(turns: list[SpeechTurn], d: Delegation) -> SpeechTurn | None:
    """The assistant turn a delegation belongs to."""
    assistant = [t for t in turns if t.speaker == ASSISTANT]
    if not assistant:
        return None
    at = d.offset_ms
    if at is None:
        later = [t for t in assistant if t.t_first is not None and t.t_first >= d.t_created]
        return later[0] if later else assistant[-1]
    for t in assistant:
        if t.start_ms <= at <= t.end_ms:
            return t
    later = [t for t in assistant if t.start_ms >= at]
    if later:
        return min(later, key=lambda t: t.start_ms)
    return max(assistant, key=lambda t: t.start_ms)


def summary_of(live: LiveSession, session: dict[str, Any] | None = None) -> Summary:
    """The Summary of a reduced Live session."""
    turns = sorted(live.finish(), key=lambda t: (t.start_ms, t.index))
    out: dict[int, Turn] = {}
    for t in turns:
        out[t.index] = Turn(
            speaker=t.speaker,
            text=t.text or None,
            t_start=t.start_ms / 1000.0,
            t_end=t.end_ms / 1000.0,
            latency_ms=t.latency_ms,
            audio_ms=round(t.audio_ms, 3) if t.audio_bytes else None,
            interrupted=t.interrupted,
            overlaps=bool(t.overlaps),
        )
    summary_turns = [out[t.index] for t in turns]
    for d in live.delegations:
        host = _host(turns, d)
        use = _tool_use(d)
        if host is None:
            extra = Turn(speaker=ASSISTANT, t_start=use.t_start, tools=[use])
            summary_turns.append(extra)
        else:
            out[host.index].tools.append(use)
    summary_turns.sort(key=lambda t: t.t_start if t.t_start is not None else 0.0)
    usage = dict(live.usage)
    for r in live.book.responses:  # the delegations' backend, another model: its tokens kept apart
        for key, value in r.usage.items():
            usage[f"backend_{key}"] = usage.get(f"backend_{key}", 0.0) + value
    errors = [" ".join(b for b in (e.code or e.type or "error", e.message or "") if b).strip() for e in live.errors]
    s = session if session is not None else live.session or {}
    return Summary(
        api="live",
        variant=s.get("variant") if isinstance(s.get("variant"), str) else None,
        model=live.model or (s.get("model") if isinstance(s.get("model"), str) else None),
        turns=summary_turns,
        errors=errors,
        usage=usage,
        anomalies=len(live.anomalies),
    )


def summarize_live(frames: Iterable[Frame], session: dict[str, Any] | None = None) -> Summary:
    """The API-neutral Summary of a GPT-Live recording (its frames in order; ``session`` its row or header)."""
    return summary_of(assemble_live(frames, session, keep_audio=False), session)
