"""Turns on one timeline: overlaps (barge-in, backchannel), latency as users hear it, what a delegation was asked.

Pure, O(n log n) in the turns; run again after more events arrive (it recomputes from scratch).
"""

from __future__ import annotations

from bisect import bisect_right

from .live_model import ASSISTANT, USER, Delegation, Overlap, SpeechTurn

__all__ = ["link_turns"]


def link_turns(turns: list[SpeechTurn], delegations: list[Delegation]) -> None:
    """Fill each turn's ``overlaps``, ``interrupted``, ``latency_ms``/``answers`` and each delegation's ``asked``."""
    order = sorted(turns, key=lambda t: (t.start_ms, t.index))
    for turn in order:
        turn.overlaps = []
        turn.interrupted = False
        turn.latency_ms = None
        turn.answers = None
    reach: dict[str, SpeechTurn | None] = {USER: None, ASSISTANT: None}  # the turn of each speaker ending last
    last_user: SpeechTurn | None = None
    answered = False
    for turn in order:
        other = reach[ASSISTANT if turn.speaker == USER else USER]
        if other is not None and other.end_ms > turn.start_ms:
            ms = min(other.end_ms, turn.end_ms) - turn.start_ms
            kind = "backchannel" if turn.end_ms <= other.end_ms else "barge_in"
            turn.overlaps.append(Overlap(other.index, kind, ms))
            other.overlaps.append(Overlap(turn.index, kind, ms))
            if kind == "barge_in" and other.speaker == ASSISTANT and turn.speaker == USER:
                other.interrupted = True
        mine = reach[turn.speaker]
        if mine is None or turn.end_ms >= mine.end_ms:
            reach[turn.speaker] = turn
        if turn.speaker == USER:
            if not any(o.kind == "backchannel" for o in turn.overlaps):
                last_user, answered = turn, False
        elif last_user is not None and not answered:
            if not any(o.kind == "backchannel" for o in turn.overlaps if o.turn == last_user.index):
                turn.answers = last_user.index
                gap = turn.start_ms - last_user.end_ms
                turn.latency_ms = round(gap, 3) if gap >= 0 else None
                answered = True
    _asks(order, delegations)


def _asks(order: list[SpeechTurn], delegations: list[Delegation]) -> None:
    users = [t for t in order if t.speaker == USER]
    starts = [t.start_ms for t in users]
    for d in delegations:
        d.asked = None
        if d.offset_ms is not None:
            i = bisect_right(starts, d.offset_ms) - 1
            if i >= 0:
                d.asked = users[i].text or None
        else:
            before = [t for t in users if t.t_first is not None and t.t_first <= d.t_created]
            if before:
                d.asked = before[-1].text or None
