"""Replay's player: one client connection matched against a script, h11-style (no I/O).

``start()`` and ``receive(data, t)`` return the frames to send; see :mod:`rtproxy.replay.script` for the
match policies and the two ways input audio is matched (runs, or a streamed position).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from .script import (
    MAX_DETAILS,
    MAX_ID,
    MAX_IDS,
    MAX_PREVIOUS,
    POLICIES,
    ConnectionReport,
    Mismatch,
    Reply,
    Script,
    Step,
    b64_len,
    classify,
    differences,
    normalise,
    substitute,
)

# --- the player --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """A frame to send ``delay`` seconds (recorded time, before --speed) from now."""

    data: str | bytes
    delay: float = 0.0


PENDING, PLAYED, MISSED = 0, 1, 2


class Player:
    """One client connection played against a script (no I/O)."""

    def __init__(
        self, script: Script, policy: str = "ordered", *, number: int = 1, keep_received: bool = False
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown match policy {policy!r}; expected one of {', '.join(POLICIES)}")
        self.script, self.policy, self.keep_received = script, policy, keep_received
        self.report = ConnectionReport(number, len(script.steps))
        self.received: list[Any] = []
        self.state = [PENDING] * len(script.steps)
        self.frontier = 0  # one past the last step played or missed
        self.behind: list[int] = []  # loose: pending steps before the frontier (jumped over)
        self.pending = len(script.steps)
        self.run: Step | None = None  # the audio run being received
        self.run_bytes = 0
        self.run_sent = 0
        self.heard = 0  # audio runs: all the audio this client appended in the session
        self.buffer: list[int] = [0, 0]  # audio runs, strict: (recorded, received) bytes since the buffer began
        self.buffer_run: Step | None = None  # the latest run of that buffer
        self.absorbing: Mismatch | None = None  # an unexpected audio run, counted once
        self._errors = 0
        self.rules = script.rules
        self.audio_type = script.rules.AUDIO_APPEND
        self.streamed = script.rules.AUDIO_STREAM
        self.audio = 0  # streamed audio: what this client streamed
        self.floor = 0  # streamed audio: the recorded position the client's commands have reached
        self.gated: deque[Reply] = deque()  # streamed audio: replies released, waiting for their audio
        self.ids: dict[str, str] = {}  # recorded client-made id -> this run's
        lane_of = getattr(script.rules, "lane", None)  # an API whose requests run on lanes (Responses' stream_id)
        lanes = {lane_of(s.event) for s in script.steps} if lane_of is not None else set()
        self.lane_of = lane_of if lanes - {None} else None
        self.recorded_lanes = lanes
        self.lane_map: dict[str | None, str | None] = {}  # this run's lane -> the recording's
        self.missed: dict[int, Mismatch] = {}  # ordered, strict: skipped steps that may still come in their turn
        self.matched: deque[dict[str, Any]] = deque(maxlen=MAX_PREVIOUS)  # the latest steps played, for reports
        self.opened = False  # a step was played in its turn (the client's first recorded event has come)

    @property
    def finished(self) -> bool:
        """Every step played or missed, and every reply sent."""
        if self.pending or self.gated:
            return False
        return self.run is None or self.run_sent == len(self.run.replies)

    @property
    def closable(self) -> bool:
        """Finished, and this client has sent all the input audio the recorded one had sent when its server
        closed: a recorded close (it comes after every recorded client frame) is on the input audio's timeline
        like every reply (streamed: the session's audio; runs: the whole of the last run)."""
        if not self.finished:
            return False
        if self.streamed:
            return self.audio >= self.script.audio_total
        return self.run is None or self.run_bytes >= self.run.audio_bytes

    def start(self) -> list[Send]:
        if self.streamed:
            return self._release(self.script.greeting)
        return self._replies(self.script.greeting)

    def receive(self, data: str | bytes, t: float) -> list[Send]:
        """Match one client frame; the frames to send in answer."""
        self.report.events_received += 1
        kind, event = classify(data)
        if self.keep_received:
            self.received.append(event if event is not None else data)
        if kind == self.audio_type:
            if self.streamed:
                self.audio += b64_len(event.get("audio") if event else None)
                return self._flush()
            return self._append(event, t)
        out = self._end_run(t, kind)
        self.absorbing = None
        early = self._greeting_reaction(kind, event, data)
        if early is not None:
            step = self.script.steps[early]
            self._learn_ids(step.event, event)
            self._play_early(early)
            return out + (self._release(step.replies) if self.streamed else self._replies(step.replies))
        j = self._find(kind) if self.lane_of is None else self._find_on_lane(kind, event)
        if j is None:
            return out + self._unexpected(kind, event, t)
        late = self.state[j] == MISSED
        out += self._skip_to(j, kind, event, t)
        step = self.script.steps[j]
        self._learn_ids(step.event, event)
        compare = getattr(self.rules, "compared", None)  # an API whose `ordered` compares part of the payload
        measured: tuple[str, str] | None = getattr(self.rules, "MEASURED", {}).get(kind)  # (field, its echo)
        checked = self.policy == "strict" or (self.policy == "ordered" and compare is not None)
        if checked and step.event is not None and event is not None:
            expected, got = step.event, self._as_recorded(event, data)
            if compare is not None and isinstance(got, dict):
                expected, got = compare(expected, self.policy), compare(got, self.policy)
            if measured is not None and isinstance(got, dict):
                expected, got = _without(expected, measured[0]), _without(got, measured[0])
            diffs = differences(normalise(expected), normalise(got))
            if diffs:
                out += self._mismatch(
                    Mismatch(
                        "payload",
                        f"{kind}: payload differs from the recording ({diffs[0]})",
                        t,
                        j,
                        step.summary(),
                        event,
                        diffs,
                        next="sent an error event, then this event's recorded replies",
                    ),
                    event,
                )
        if late:
            self._play_late(j, kind, t)
        else:
            self._play(j)
        if self.streamed:
            return out + self._caught_up(step, event, t) + self._release(step.replies)
        replies = step.replies if measured is None else _echo(step.replies, measured, step.event, event)
        return out + self._replies(replies)

    def close(self, t: float, code: int | None = None) -> None:
        """The client left: steps never played are a mismatch (strict: so is other streamed audio in total)."""
        self._end_run(t)
        self._buffer_ended(t)
        self.report.closed, self.report.close_code, self.report.duration = True, code, t
        if self.streamed and self.policy == "strict" and self.audio != self.script.audio_total:
            rec, got = self.script.audio_total, self.audio
            self.report.mismatches.append(
                Mismatch(
                    "audio",
                    f"streamed audio differs: recorded {rec} bytes (~{_ms(rec):.0f} ms), "
                    f"received {got} bytes (~{_ms(got):.0f} ms)",
                    t,
                    None,
                    {"type": self.audio_type, "audio_bytes": rec},
                    {"type": self.audio_type, "audio_bytes": got},
                    next="nothing: the client had left",
                )
            )
        left = [i for i, s in enumerate(self.state) if s == PENDING]
        if left:
            first = self.script.steps[left[0]]
            self.report.mismatches.append(
                Mismatch(
                    "closed_early",
                    f"connection closed before the script ended: {len(left)} recorded client "
                    f"event{'s' if len(left) > 1 else ''} never came (next: {first.type})",
                    t,
                    left[0],
                    first.summary(),
                    next="nothing: the client had left",
                    previous=list(self.matched),
                )
            )

    # -- matching --

    def _candidates(self) -> list[int]:
        steps = self.script.steps
        if self.frontier >= len(steps):
            behind: list[int] = []
        else:
            end = self.script.turn_end(self.frontier)
            if self.policy == "loose" and end + 1 < len(steps):
                end = self.script.turn_end(end + 1)
            behind = list(range(self.frontier, end + 1))
        if self.policy == "loose":
            behind = self.behind + behind
        else:  # a skipped event may still come (out of order) until the client has left its turn
            ends = {i: self.script.turn_end(i) for i in self.missed}
            open_ = [i for i in self.missed if self.frontier <= ends[i]]
            # once the turn's last event was played, what the next turn expects is the next turn's: a skipped
            # event matches late only if nothing ahead does (else it stays missing from its closed turn)
            closed = [i for i in self.missed if self.frontier == ends[i] + 1]
            return open_ + [i for i in behind if self.state[i] == PENDING] + closed
        return [i for i in behind if self.state[i] == PENDING]

    def _find(self, kind: str) -> int | None:
        steps = self.script.steps
        return next((i for i in self._candidates() if steps[i].type == kind), None)

    def _find_on_lane(self, kind: str, event: dict[str, Any] | None) -> int | None:
        """With lanes: the next pending step of this type on the recorded lane this run's lane stands for (a lane
        met for the first time stands for the first recorded lane not yet claimed that has such a step)."""
        assert self.lane_of is not None
        lane_of, steps = self.lane_of, self.script.steps
        mine = lane_of(event)
        if mine not in self.lane_map:
            claimed = set(self.lane_map.values())
            if mine in self.recorded_lanes and mine not in claimed:
                self.lane_map[mine] = mine
            else:
                free = (
                    lane_of(steps[i].event)
                    for i in range(len(steps))
                    if self.state[i] == PENDING and steps[i].type == kind and lane_of(steps[i].event) not in claimed
                )
                self.lane_map[mine] = next(free, mine)
        recorded = self.lane_map[mine]
        return next(
            (
                i
                for i in range(len(steps))
                if self.state[i] == PENDING and steps[i].type == kind and lane_of(steps[i].event) == recorded
            ),
            None,
        )

    def _skip_to(self, j: int, kind: str, event: dict[str, Any] | None, t: float) -> list[Send]:
        """Ordered and strict: the steps jumped over are missing (with lanes: those of the same lane)."""
        if self.policy == "loose" or (j <= self.frontier and self.lane_of is None):
            return []
        if self.lane_of is not None:
            on = self.lane_of(self.script.steps[j].event)
            steps = self.script.steps
            skipped = [i for i in range(j) if self.state[i] == PENDING and self.lane_of(steps[i].event) == on]
            if not skipped:
                return []
        else:
            skipped = [i for i in range(self.frontier, j) if self.state[i] == PENDING]
            if not skipped:  # what lies between was played early (the client's answer to the greeting)
                return []
        for i in skipped:
            self.state[i] = MISSED
        self.pending -= len(skipped)
        names = ", ".join(self.script.steps[i].type for i in skipped)
        first = self.script.steps[skipped[0]]
        m = Mismatch(
            "missing",
            f"expected {first.type}, got {kind}: the client skipped "
            f"{len(skipped)} recorded event{'s' if len(skipped) > 1 else ''} ({names})",
            t,
            skipped[0],
            first.summary(),
            event or {"type": kind},
            next=f"sent an error event and played {kind} with its replies; the skipped events' replies are "
            "sent if they come later in this turn",
            skipped=skipped,
        )
        for i in skipped:
            self.missed[i] = m
        return self._mismatch(m, event)

    def _play_late(self, j: int, kind: str, t: float) -> None:
        """Ordered, strict: a skipped step came after all (out of order): played; its mismatch says so once
        every step it skipped has come."""
        m = self.missed.pop(j)
        self.state[j] = PLAYED
        self.report.turns_played += 1
        self.matched.append({"turn": j + 1, "event": self.script.steps[j].summary()})
        if any(i in self.missed for i in m.skipped):
            return
        recorded = [self.script.steps[i].type for i in m.skipped]
        m.kind = "reordered"
        m.message = (
            f"out of order: {(m.received or {}).get('type')} came before {', '.join(recorded)} "
            f"(recorded order: {', '.join(recorded)}, {(m.received or {}).get('type')})"
        )
        m.next = "played every event with its recorded replies as it came (the error event was sent at the first)"

    def _greeting_reaction(self, kind: str, event: dict[str, Any] | None, data: str | bytes) -> int | None:
        """Before the client's first recorded event has come: the step this event is if it is the client's
        answer to the greeting, read before the client's own opening events (ordered, strict).

        The greeting (``session.created``) is the only server output a client can have seen before it sends
        anything, and a client that sends events when its socket opens and answers ``session.created`` by
        configuring the session (the API's ``GREETING_ANSWERS``; OpenAI's Agents SDK: a tracing
        ``session.update``) sends that answer before or after its opening events depending on whether it read
        the greeting together with the handshake, which the network decides, not the client. Such an event is
        the next pending step of its type after the one it would otherwise match, when that one has another
        payload and this one the event's (client-made ids aside); it is played at once, out of turn, and is no
        mismatch. (Two of the client's own ``session.update`` swapped as it opens look the same, and pass too.)
        """
        steps = self.script.steps
        answers: frozenset[str] = getattr(self.rules, "GREETING_ANSWERS", frozenset())
        if self.opened or kind not in answers or self.policy == "loose" or event is None:
            return None
        if not self.script.greeting or self.lane_of is not None:
            return None
        got = self._as_recorded(event, data)
        usual = self._find(kind)
        if usual is not None and self._same(steps[usual].event, got):
            return None
        start = 0 if usual is None else usual + 1
        later = next((i for i in range(start, len(steps)) if self.state[i] == PENDING and steps[i].type == kind), None)
        return later if later is not None and self._same(steps[later].event, got) else None

    def _same(self, recorded: dict[str, Any] | None, got: Any) -> bool:
        """Whether this run's event (its client-made ids as recorded) has the recorded payload, volatile fields
        aside (the API's compared part, if it has one)."""
        if recorded is None or not isinstance(got, dict):
            return False
        compare = getattr(self.rules, "compared", None)
        if compare is not None:
            recorded, got = compare(recorded, "strict"), compare(got, "strict")
        return bool(normalise(recorded) == normalise(got))

    def _play_early(self, j: int) -> None:
        """A step played ahead of its turn (the client's answer to the greeting): the turns stay where they are."""
        self.matched.append({"turn": j + 1, "event": self.script.steps[j].summary()})
        self.state[j] = PLAYED
        self.pending -= 1
        self.report.turns_played += 1

    def _play(self, j: int) -> None:
        self.opened = True
        self.matched.append({"turn": j + 1, "event": self.script.steps[j].summary()})
        self.state[j] = PLAYED
        self.pending -= 1
        if j < self.frontier:
            self.behind.remove(j)
        else:
            self.behind += [i for i in range(self.frontier, j) if self.state[i] == PENDING]
            self.frontier = j + 1
        self.report.turns_played += 1

    def _unexpected(self, kind: str, event: dict[str, Any] | None, t: float) -> list[Send]:
        received = event if event is not None else {"type": kind}
        nxt = self._candidates()
        if not nxt and self.frontier >= len(self.script.steps):
            return self._mismatch(
                Mismatch(
                    "after_end",
                    f"unexpected {kind} after the script ended",
                    t,
                    None,
                    None,
                    received,
                    next="sent an error event; nothing is left to play",
                ),
                event,
            )
        if not nxt:
            return self._mismatch(
                Mismatch(
                    "unexpected",
                    f"unexpected {kind}: nothing more is expected",
                    t,
                    None,
                    None,
                    received,
                    next="sent an error event; the replay waits for the client to close",
                ),
                event,
            )
        exp = self.script.steps[next((i for i in nxt if self.state[i] == PENDING), nxt[0])]
        return self._mismatch(
            Mismatch(
                "unexpected",
                f"expected {exp.type}, got {kind}",
                t,
                exp.index,
                exp.summary(),
                received,
                next=f"sent an error event and ignored {kind}; the replay still waits for {exp.type}",
            ),
            event,
        )

    # -- audio runs --

    def _append(self, event: dict[str, Any] | None, t: float) -> list[Send]:
        n = b64_len(event.get("audio") if event else None)
        self.heard += n
        audio_type = self.audio_type
        if self.run is None:
            if self.absorbing is not None:
                self.absorbing.count += 1
                self.absorbing.received = {
                    "type": audio_type,
                    "audio_bytes": (self.absorbing.received or {}).get("audio_bytes", 0) + n,
                    "appends": self.absorbing.count,
                }
                return []
            j = self._find(audio_type)
            if j is None:
                out = self._unexpected(audio_type, {"type": audio_type, "audio_bytes": n, "appends": 1}, t)
                self.absorbing = self.report.mismatches[-1]
                return out
            out = self._skip_to(j, audio_type, {"type": audio_type, "audio_bytes": n}, t)
            self._play(j)
            self.run, self.run_bytes, self.run_sent = self.script.steps[j], 0, 0
        else:
            out = []
        self.run_bytes += n
        # a reply waits for its place in the session's audio (the run's recorded start, plus its offset in the
        # run), not in this run: a command sent while audio streams splits the stream where timing has it
        replies, position = self.run.replies, self.heard - self.run.at_bytes
        k = self.run_sent
        while k < len(replies) and replies[k].at_bytes <= position:
            k += 1
        out += self._replies(replies[self.run_sent : k])
        self.run_sent = k
        return out

    def _end_run(self, t: float, kind: str | None = None) -> list[Send]:
        """The run of appends ended (by a client event of type `kind`; None: the client left)."""
        run = self.run
        if run is None:
            return []
        self.run = None
        out = self._replies(run.replies[self.run_sent :])
        self.buffer[0] += run.audio_bytes
        self.buffer[1] += self.run_bytes
        self.buffer_run = run
        ends = getattr(self.rules, "BUFFER_ENDS", None)  # an API whose appends fill a buffer until these
        if ends is None or kind is None or kind in ends:
            out = self._buffer_ended(t) + out
        return out

    def _buffer_ended(self, t: float) -> list[Send]:
        """Strict: the audio appended since the buffer began must be as long as recorded, however commands sent
        meanwhile split it into runs."""
        (rec, got), run = self.buffer, self.buffer_run
        self.buffer, self.buffer_run = [0, 0], None
        if self.policy != "strict" or run is None or rec == got:
            return []
        ms = _ms(rec), _ms(got)
        return self._mismatch(
            Mismatch(
                "audio",
                f"audio length differs: recorded {rec} bytes (~{ms[0]:.0f} ms), received {got} bytes (~{ms[1]:.0f} ms)",
                t,
                run.index,
                run.summary() if rec == run.audio_bytes else {"type": self.audio_type, "audio_bytes": rec},
                {"type": self.audio_type, "audio_bytes": got},
                next="sent an error event, then the replies recorded for the run",
            )
        )

    # -- streamed audio (full duplex) --

    def _release(self, replies: Iterable[Reply]) -> list[Send]:
        """Replies of a step played: each goes once this client has streamed the audio recorded before it."""
        self.gated.extend(replies)
        return self._flush()

    def _flush(self) -> list[Send]:
        position = max(self.audio, self.floor)
        ready: list[Reply] = []
        while self.gated and self.gated[0].at_bytes <= position:
            ready.append(self.gated.popleft())
        return self._replies(ready)

    def _caught_up(self, step: Step, event: dict[str, Any] | None, t: float) -> list[Send]:
        """A command recorded after more audio than this client streamed before it: what was recorded up to
        the command is sent now (strict: a mismatch)."""
        if step.at_bytes <= self.audio:
            return []
        self.floor = max(self.floor, step.at_bytes)
        if self.policy != "strict":
            return []
        rec, got = step.at_bytes, self.audio
        return self._mismatch(
            Mismatch(
                "audio",
                f"{step.type} came after {got} bytes of streamed audio (~{_ms(got):.0f} ms); "
                f"the recording had {rec} (~{_ms(rec):.0f} ms)",
                t,
                step.index,
                step.summary(),
                event,
                next="sent an error event, then the replies recorded up to this command",
            ),
            event,
        )

    # -- ids the client makes --

    def _learn_ids(self, recorded: dict[str, Any] | None, event: dict[str, Any] | None) -> None:
        """Pair the recorded event's client-made ids with this run's, to echo this run's from now on."""
        if recorded is None or event is None:
            return
        for old, new in zip(self.rules.client_ids(recorded), self.rules.client_ids(event), strict=False):
            if (
                isinstance(old, str)
                and isinstance(new, str)
                and old != new
                and len(new) <= MAX_ID
                and (old in self.ids or len(self.ids) < MAX_IDS)
            ):
                self.ids[old] = new

    def _as_recorded(self, event: dict[str, Any], text: str | bytes) -> Any:
        """This run's event (parsed from `text`) with its client-made ids as the recording's, so strict compares
        the rest."""
        if not self.ids or not isinstance(text, str):
            return event
        back = {new: old for old, new in self.ids.items()}
        if not any(orjson.dumps(n).decode() in text for n in back):
            return event
        try:
            return orjson.loads(substitute(text, back))
        except orjson.JSONDecodeError:
            return event

    # -- output --

    def _replies(self, replies: Iterable[Reply]) -> list[Send]:
        out = []
        for r in replies:
            data = r.data
            if r.ids and isinstance(data, str):
                known = {i: self.ids[i] for i in r.ids if i in self.ids}
                if known:
                    data = substitute(data, known)
            out.append(Send(data, r.delay))
        self.report.events_sent += len(out)
        return out

    def _mismatch(self, m: Mismatch, event: dict[str, Any] | None = None) -> list[Send]:
        """Record a mismatch (with the events matched before it and, if missing, the paths that differ); the
        API's `error` event that tells the client."""
        if not m.previous:
            m.previous = list(self.matched)
        if not m.details and m.expected is not None and m.received is not None:
            m.details = differences(normalise(m.expected), normalise(m.received), limit=MAX_DETAILS)
        self.report.mismatches.append(m)
        self.report.errors_sent += 1
        self._errors += 1
        ids = self.rules.client_ids(event) if event is not None else []  # the first names the event
        error = self.rules.error_event(self._errors, m.message, ids[0] if ids else None)
        return [Send(orjson.dumps(error).decode())]


def _without(event: Any, key: str) -> Any:
    return {k: v for k, v in event.items() if k != key} if isinstance(event, dict) else event


def _echo(
    replies: tuple[Reply, ...], measured: tuple[str, str], recorded: dict[str, Any] | None, event: dict[str, Any] | None
) -> tuple[Reply, ...]:
    """`replies` with the recorded value of a measured number (a field, echoed in server events of a type) in
    those events as this run's."""
    key, echo = measured
    old, new = (recorded or {}).get(key), (event or {}).get(key)
    numbers = (int, float)
    if not isinstance(old, numbers) or not isinstance(new, numbers) or isinstance(new, bool) or old == new:
        return replies
    token = re.compile(rf'("{re.escape(key)}"\s*:\s*){re.escape(orjson.dumps(old).decode())}(?![0-9.eE])')
    kind = orjson.dumps(echo).decode()
    out = []
    for r in replies:
        if isinstance(r.data, str) and kind in r.data:
            r = replace(r, data=token.sub(lambda m: m.group(1) + orjson.dumps(new).decode(), r.data, count=1))
        out.append(r)
    return tuple(out)


def _ms(n_bytes: int) -> float:
    """Milliseconds of PCM16 at 24 kHz (a hint for people; lengths are compared in bytes)."""
    return n_bytes / 48.0
