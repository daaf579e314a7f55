"""Speech turns on one timeline: transcript fragments into turns; overlaps, latency, what a delegation was asked.

:class:`TurnRules` (a mixin of :class:`rtproxy.conversation.live.LiveSession`, kept apart only for size) turns
``session.input_transcript.delta`` / ``session.output_transcript.delta`` fragments into turns as they arrive;
:func:`link_turns` then works out, from scratch each time it is called (O(n log n) in the turns), the overlaps
(barge-in, backchannel), the latency of each answer and the words each delegation was made from.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from .live_model import ASSISTANT, USER, AudioStream, Delegation, Overlap, SpeechTurn
from .model import MAX_AUDIO_MS, short

__all__ = ["TurnRules", "link_turns", "TURN_GAP_MS", "MAX_TURNS"]

Event = dict[str, Any]

#: A fragment starting more than this after its speaker's turn ended starts a new turn.
TURN_GAP_MS = 700.0
MAX_TURNS = 100_000


class TurnRules:
    """Transcript-fragment handlers; the state they use is set up by LiveSession."""

    turns: list[SpeechTurn]
    input: AudioStream
    output: AudioStream
    _current: dict[str, SpeechTurn | None]
    _out_mark: int
    _flag: Callable[[int, str, str], None]
    _malformed: Callable[[int, Event, str], None]
    _answer: Callable[[Event, int], None]

    # --- speech turns ---------------------------------------------------------------------

    def _on_user_transcript(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._fragment(USER, t, ev, seq)

    def _on_assistant_transcript(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._fragment(ASSISTANT, t, ev, seq)

    def _span(self, ev: Event, seq: int) -> tuple[float, float] | None:
        start, end = ev.get("start_ms"), ev.get("end_ms")
        ok = all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= MAX_AUDIO_MS for v in (start, end)
        )
        if not ok:
            self._flag(
                seq, "bad_index", f"{short(ev.get('type'))}: start_ms/end_ms {short(start)}/{short(end)} unusable"
            )
            return None
        a, b = float(start), float(end)  # type: ignore[arg-type]
        return (a, b) if a <= b else (b, a)

    def _fragment(self, speaker: str, t: float, ev: Event, seq: int) -> None:
        delta = ev.get("delta")
        if not isinstance(delta, str):
            self._malformed(seq, ev, "delta")
            return
        span = self._span(ev, seq)
        if span is None:
            return
        start, end = span
        self._answer(ev, seq)
        turn = self._current[speaker]
        if turn is None or self._starts_turn(turn, speaker, start):
            if len(self.turns) >= MAX_TURNS:
                self._flag(seq, "bad_index", f"more than {MAX_TURNS} turns, transcript dropped")
                return
            turn = SpeechTurn(len(self.turns), speaker, start, end, first_seq=seq, t_first=t)
            if speaker is ASSISTANT:
                turn.audio_format = self.output.format
                turn.audio_start = self._out_mark
                previous = self._current[ASSISTANT]
                if previous is not None:
                    previous.audio_end = self._out_mark
            else:
                turn.audio_format = self.input.format
            self.turns.append(turn)
            self._current[speaker] = turn
        turn.start_ms = min(turn.start_ms, start)
        turn.end_ms = max(turn.end_ms, end)
        turn.last_seq = seq
        turn.fragments += 1
        turn._text.append(delta)
        if speaker is ASSISTANT:
            self._out_mark = self.output.nbytes

    def _starts_turn(self, turn: SpeechTurn, speaker: str, start: float) -> bool:
        if start - turn.end_ms > TURN_GAP_MS:
            return True
        other = self._current[ASSISTANT if speaker is USER else USER]
        # the other speaker took a turn in the gap: began after this turn ended, finished before this fragment
        # (speech over this turn, a backchannel, leaves it whole)
        return other is not None and other.start_ms >= turn.end_ms and start >= other.end_ms


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
        if other is not None and other.end_ms >= turn.start_ms:
            # speech over the other's, or starting the moment the other's stopped (where a barge-in cuts it)
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
