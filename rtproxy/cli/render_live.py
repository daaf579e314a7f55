"""A GPT-Live session as text for people: turns on the session timeline, delegations, usage, latency.

Pure, like :mod:`rtproxy.cli.render` (whose formatters it shares): takes a reduced
:class:`~rtproxy.conversation.live.LiveSession` and the session row, yields lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..conversation.live import LiveSession
from ..conversation.live_model import Appended, Delegation, SpeechTurn
from ..conversation.model import short
from ..conversation.responses import StreamedResponse
from .render import INDENT, MAX_LISTED, Styler, _status, _wrap, clock, error_text, preview, seconds, session_title

__all__ = ["live_conversation"]

_COLOUR = {"user": "yellow", "assistant": "cyan"}


def _ms(ms: float | None) -> str:
    return "?" if ms is None else f"{ms:.0f} ms"


def turn_lines(turn: SpeechTurn, style: Styler) -> list[str]:
    """A speech turn: where it sits on the timeline, how long, its audio, latency and overlaps; its transcript."""
    who = style(turn.speaker.upper(), fg=_COLOUR.get(turn.speaker, "white"), bold=True)
    notes = [f"{turn.start_ms / 1000:.1f}–{turn.end_ms / 1000:.1f} s"]
    if turn.audio_bytes:
        notes.append(f"audio {seconds(turn.audio_ms / 1000)}")
    if turn.latency_ms is not None:
        notes.append(f"latency {_ms(turn.latency_ms)}")
    for o in turn.overlaps:
        what = "barge-in" if o.kind == "barge_in" else "backchannel"
        notes.append(style(f"{what} with turn {o.turn + 1} ({_ms(o.ms)})", fg="magenta"))
    if turn.interrupted:
        notes.append(style("interrupted", fg="red"))
    lines = [f"{clock(turn.start_ms / 1000)}  {who} #{turn.index + 1}  ({', '.join(notes)})"]
    lines += _wrap(turn.text) if turn.text else [INDENT + style("(no transcript)", dim=True)]
    return lines


def _usage_text(usage: Mapping[str, int]) -> str:
    if not usage:
        return "no usage"
    bits = [f"in {usage.get('input_tokens', 0)}"]
    if usage.get("cached_tokens"):
        bits[-1] += f" (cached {usage['cached_tokens']})"
    bits.append(f"out {usage.get('output_tokens', 0)}")
    if usage.get("reasoning_tokens"):
        bits[-1] += f" (reasoning {usage['reasoning_tokens']})"
    return f"{usage.get('total_tokens', 0)} tokens ({' · '.join(bits)})"


def response_line(resp: StreamedResponse, style: Styler) -> str:
    """``╰ resp_1 completed · 150 tokens (…) · first token 250 ms · done 1050 ms``."""
    bits = [f"╰ {short(resp.id, 60)}", _status(resp.status or "in_progress", style)]
    if resp.model:
        bits.append(short(resp.model, 40))
    bits += ["·", _usage_text(resp.usage)]
    ms = resp.latency_ms
    if ms["first_token"] is not None:
        bits.append(f"· first token {_ms(ms['first_token'])}")
    if ms["done"] is not None:
        bits.append(f"· done {_ms(ms['done'])}")
    if resp.error:
        bits.append(style(f"· error {short(resp.error.get('code') or resp.error.get('message'), 60)}", fg="red"))
    if resp.incomplete_reason:
        bits.append(f"({short(resp.incomplete_reason, 40)})")
    return INDENT[:-2] + style(" ".join(bits), dim=True)


def delegation_lines(d: Delegation, style: Styler) -> list[str]:
    """A delegation: target, status, duration; what was asked, what the backend did, what came back."""
    at = d.offset_ms / 1000 if d.offset_ms is not None else None
    notes = [_status(d.status, style)]
    if d.duration_ms is not None:
        notes.append(f"took {seconds(d.duration_ms / 1000)}")
    if d.first_result_ms is not None:
        notes.append(f"first result {_ms(d.first_result_ms)}")
    head = style("DELEGATION", fg="magenta", bold=True)
    lines = [f"{clock(at)}  {head} {short(d.id, 60)} → {short(d.target, 20)}  ({', '.join(notes)})"]
    if d.asked:
        lines += _wrap(f"asked: {preview(d.asked, 200)}")
    results = {r.call_id: r.output for r in d.tool_results}
    for resp in d.responses:
        for item in resp.items:
            if item.summary:
                lines += _wrap(f"reasoning: {item.summary}", style, dim=True)
            if item.is_tool_call:
                lines += _wrap(f"→ {item.name or item.type}({item.arguments})")
                if item.call_id in results:
                    lines += _wrap(f"← {short(results[item.call_id], 300)}")
                elif item.output is not None:
                    lines += _wrap(f"← {short(item.output, 300)}")
                else:
                    lines.append(INDENT + style("(no result)", dim=True))
            if item.refusal:
                lines += _wrap(f"refused: {item.refusal}", style, fg="red")
        lines.append(response_line(resp, style))
    for reply in d.replies:
        lines += _wrap(f"← {reply.kind}: {reply.content}")
    returned = d.returned() if d.target != "client" else ""
    if returned:
        lines += _wrap(f"returned: {returned}")
    if not (d.responses or d.replies or d.decisions):
        lines.append(INDENT + style("(nothing came back)", dim=True))
    return lines


def appended_lines(a: Appended, style: Styler) -> list[str]:
    at = a.start_ms / 1000 if a.start_ms is not None else None
    ack = "" if a.t_acked is not None else style("  (not acknowledged)", dim=True)
    return [f"{clock(at)}  {style(a.kind.upper(), fg='blue', bold=True)}{ack}", *_wrap(a.content)]


def live_conversation(
    live: LiveSession, session: Mapping[str, Any] | None = None, *, color: bool = False
) -> Iterator[str]:
    """The session as a person reads it: turns, delegations and appended context in timeline order."""
    style = Styler(color)
    if session:
        yield from session_title(session, style)
        yield ""
    turns = live.finish()
    blocks: list[tuple[float, int, list[str]]] = []
    for turn in turns:
        blocks.append((turn.start_ms, 1, turn_lines(turn, style)))
    for d in live.delegations:
        blocks.append((d.offset_ms if d.offset_ms is not None else d.t_created * 1000, 2, delegation_lines(d, style)))
    for a in live.appended:
        if a.delegation_id is None:
            blocks.append((a.start_ms if a.start_ms is not None else a.t * 1000, 0, appended_lines(a, style)))
    blocks.sort(key=lambda b: (b[0], b[1]))
    for _, _, lines in blocks:
        yield from lines
    yield from live_footer(live, style)


def live_footer(live: LiveSession, style: Styler) -> Iterator[str]:
    """Totals (turns, delegations, billed seconds, audio), latency, close, then errors and anomalies."""
    turns = live.turns
    users = sum(1 for t in turns if t.speaker == "user")
    usage = live.usage
    billed = f"billed {short(usage.get('seconds'), 20)} s" if "seconds" in usage else "no usage reported"
    extra = [f"{k.removesuffix('_seconds')} {short(v, 20)} s" for k, v in usage.items() if k != "seconds"]
    if extra:
        billed += f" ({', '.join(extra)})"
    yield ""
    yield style(
        f"{len(turns)} turns ({users} user, {len(turns) - users} assistant) · {len(live.delegations)} delegations · "
        f"{billed} · user audio {seconds(live.input.ms / 1000)} · assistant audio {seconds(live.output.ms / 1000)}",
        bold=True,
    )
    lat = sorted(t.latency_ms for t in turns if t.latency_ms is not None)
    firsts = sorted(d.first_result_ms for d in live.delegations if d.first_result_ms is not None)
    if lat or firsts:
        bits = []
        if lat:
            bits.append(f"user → assistant median {_ms(lat[len(lat) // 2])}, worst {_ms(lat[-1])} over {len(lat)}")
        if firsts:
            bits.append(f"first delegated result median {_ms(firsts[len(firsts) // 2])}")
        yield "latency: " + " · ".join(bits)
    overlaps = sum(1 for t in turns for o in t.overlaps if o.kind == "barge_in") // 2
    if overlaps:
        yield f"barge-ins: {overlaps}"
    updates = sum(1 for _, kind, _ in live.configs if kind in ("session.update", "session.updated"))
    if updates:
        yield f"session updates: {updates} (sent and confirmed; details in `show --json`)"
    if live.mutes:
        yield f"mic muted/unmuted {len(live.mutes)} times"
    if live.pauses:
        paused = sum(1 for _, state in live.pauses if state == "paused")
        yield f"inference paused {paused} times (idle timeout), resumed {len(live.pauses) - paused}"
    if live.triggers:
        yield f"decision triggers fired: {len(live.triggers)} (their answers in `show --json`)"
    unanswered = live.unanswered()
    if unanswered:
        listed = ", ".join(f"{short(u['type'], 40)} {short(u['event_id'], 40)}" for u in unanswered[:5])
        more = f" and {len(unanswered) - 5} more" if len(unanswered) > 5 else ""
        yield style(f"client commands no server event named (client_event_id): {listed}{more}", dim=True)
    if live.closed is not None:
        yield f"closed: {live.closed.get('reason') or '?'} at {clock(live.closed.get('t')).strip()}"
    if live.errors:
        yield style(f"{len(live.errors)} error(s):", fg="red", bold=True)
        for err in live.errors:
            yield "  " + style(error_text(err), fg="red")
    for _, t, code, message in live.infos[:MAX_LISTED]:
        yield style(f"info {clock(t).strip()}  {code}: {message}", dim=True)
    if live.anomalies:
        n = len(live.anomalies)
        yield style(f"{n} anomal{'y' if n == 1 else 'ies'}:", fg="magenta")
        for a in live.anomalies[:MAX_LISTED]:
            yield f"  seq {a.seq}  {a.kind}: {a.message}"
        if n > MAX_LISTED:
            yield f"  … and {n - MAX_LISTED} more (all of them in `show --json`)"
    if live.unknown_types:
        listed = ", ".join(f"{short(k, 60)} ×{v}" for k, v in live.unknown_types.most_common(MAX_LISTED))
        yield style(f"unknown event types: {listed}", fg="magenta")
