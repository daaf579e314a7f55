"""Replay's player: one client connection matched against a script, h11-style (no I/O).

``start()`` and ``receive(data, t)`` return the frames to send; see :mod:`rtproxy.replay.script` for the
match policies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ..conversation.model import clip
from .script import (
    AUDIO_APPEND,
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
        self.absorbing: Mismatch | None = None  # an unexpected audio run, counted once
        self._errors = 0

    @property
    def finished(self) -> bool:
        """Every step played or missed, and every reply sent."""
        if self.pending:
            return False
        return self.run is None or self.run_sent == len(self.run.replies)

    def start(self) -> list[Send]:
        return self._replies(self.script.greeting)

    def receive(self, data: str | bytes, t: float) -> list[Send]:
        """Match one client frame; the frames to send in answer."""
        self.report.events_received += 1
        kind, event = classify(data)
        if self.keep_received:
            self.received.append(event if event is not None else data)
        if kind == AUDIO_APPEND:
            return self._append(event, t)
        out = self._end_run(t)
        self.absorbing = None
        j = self._find(kind)
        if j is None:
            return out + self._unexpected(kind, event, t)
        out += self._skip_to(j, kind, event, t)
        step = self.script.steps[j]
        if self.policy == "strict" and step.event is not None and event is not None:
            diffs = differences(normalise(step.event), normalise(event))
            if diffs:
                out += self._mismatch(
                    Mismatch(
                        "payload", f"{kind}: payload differs from the recording", t, j, step.summary(), event, diffs
                    ),
                    event,
                )
        self._play(j)
        return out + self._replies(step.replies)

    def close(self, t: float, code: int | None = None) -> None:
        """The client left: steps never played are a mismatch."""
        self._end_run(t)
        self.report.closed, self.report.close_code, self.report.duration = True, code, t
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
        return [i for i in behind if self.state[i] == PENDING]

    def _find(self, kind: str) -> int | None:
        steps = self.script.steps
        return next((i for i in self._candidates() if steps[i].type == kind), None)

    def _skip_to(self, j: int, kind: str, event: dict[str, Any] | None, t: float) -> list[Send]:
        """Ordered and strict: the steps jumped over are missing."""
        if self.policy == "loose" or j <= self.frontier:
            return []
        skipped = [i for i in range(self.frontier, j) if self.state[i] == PENDING]
        for i in skipped:
            self.state[i] = MISSED
        self.pending -= len(skipped)
        names = ", ".join(self.script.steps[i].type for i in skipped)
        first = self.script.steps[skipped[0]]
        return self._mismatch(
            Mismatch(
                "missing",
                f"expected {first.type}, got {kind}: the client skipped "
                f"{len(skipped)} recorded event{'s' if len(skipped) > 1 else ''} ({names})",
                t,
                skipped[0],
                first.summary(),
                event or {"type": kind},
            ),
            event,
        )

    def _play(self, j: int) -> None:
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
                Mismatch("after_end", f"unexpected {kind} after the script ended", t, None, None, received), event
            )
        if not nxt:
            return self._mismatch(
                Mismatch("unexpected", f"unexpected {kind}: nothing more is expected", t, None, None, received), event
            )
        exp = self.script.steps[nxt[0]]
        return self._mismatch(
            Mismatch("unexpected", f"expected {exp.type}, got {kind}", t, nxt[0], exp.summary(), received), event
        )

    # -- audio runs --

    def _append(self, event: dict[str, Any] | None, t: float) -> list[Send]:
        n = b64_len(event.get("audio") if event else None)
        if self.run is None:
            if self.absorbing is not None:
                self.absorbing.count += 1
                self.absorbing.received = {
                    "type": AUDIO_APPEND,
                    "audio_bytes": (self.absorbing.received or {}).get("audio_bytes", 0) + n,
                    "appends": self.absorbing.count,
                }
                return []
            j = self._find(AUDIO_APPEND)
            if j is None:
                out = self._unexpected(AUDIO_APPEND, {"type": AUDIO_APPEND, "audio_bytes": n, "appends": 1}, t)
                self.absorbing = self.report.mismatches[-1]
                return out
            out = self._skip_to(j, AUDIO_APPEND, {"type": AUDIO_APPEND, "audio_bytes": n}, t)
            self._play(j)
            self.run, self.run_bytes, self.run_sent = self.script.steps[j], 0, 0
        else:
            out = []
        self.run_bytes += n
        replies = self.run.replies
        k = self.run_sent
        while k < len(replies) and replies[k].at_bytes <= self.run_bytes:
            k += 1
        out += self._replies(replies[self.run_sent : k])
        self.run_sent = k
        return out

    def _end_run(self, t: float) -> list[Send]:
        run = self.run
        if run is None:
            return []
        self.run = None
        out = self._replies(run.replies[self.run_sent :])
        if self.policy == "strict" and self.run_bytes != run.audio_bytes:
            ms = _ms(run.audio_bytes), _ms(self.run_bytes)
            out = (
                self._mismatch(
                    Mismatch(
                        "audio",
                        f"audio length differs: recorded {run.audio_bytes} bytes "
                        f"(~{ms[0]:.0f} ms), received {self.run_bytes} bytes (~{ms[1]:.0f} ms)",
                        t,
                        run.index,
                        run.summary(),
                        {"type": AUDIO_APPEND, "audio_bytes": self.run_bytes},
                    )
                )
                + out
            )
        return out

    # -- output --

    def _replies(self, replies: Iterable[Reply]) -> list[Send]:
        out = [Send(r.data, r.delay) for r in replies]
        self.report.events_sent += len(out)
        return out

    def _mismatch(self, m: Mismatch, event: dict[str, Any] | None = None) -> list[Send]:
        """Record a mismatch; the Realtime `error` event that tells the client."""
        self.report.mismatches.append(m)
        self.report.errors_sent += 1
        self._errors += 1
        error = {
            "type": "error",
            "event_id": f"event_rtproxy_replay_{self._errors}",
            "error": {
                "type": "invalid_request_error",
                "code": "rtproxy_replay_mismatch",
                "message": f"rtproxy replay: {m.message}",
                "param": None,
                "event_id": clip((event or {}).get("event_id")),
            },
        }
        return [Send(orjson.dumps(error).decode())]


def _ms(n_bytes: int) -> float:
    """Milliseconds of PCM16 at 24 kHz (a hint for people; lengths are compared in bytes)."""
    return n_bytes / 48.0
