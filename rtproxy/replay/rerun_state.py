"""What a rerun's new server has said so far, and what to send next (pure, no I/O).

:class:`RunState` is fed every server frame of the run in order. It tells the player when a
:class:`~rtproxy.replay.rerun.Step` is :meth:`~RunState.ready` (the server has said what the recorded client had
seen), when it never will be (:meth:`~RunState.stuck`), and the frame to send for it (:meth:`~RunState.answer`:
ids mapped to this run's, function outputs answered from the recording or a handler), or the
:class:`Divergence` that stops the rerun. A call the recording never made can be answered by a handler
(:meth:`~RunState.extra_answer`): the responses that provokes are not counted against the recording's. GPT-Live
adds milestones (:attr:`~rtproxy.replay.rerun.Step.waits`) and client delegations
(:mod:`rtproxy.replay.rerun_live`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..conversation.model import short, too_deep
from ..protocols import Api
from ..protocols.wire import parse_event
from . import rerun_live as live
from .rerun import CREATED_KEY, FINISHED, MAX_ERRORS, WRITE_DEPTH, Plan, Step, event_key
from .rerun_ids import (
    MAX_CALLS,
    Call,
    IdLedger,
    function_calls,
    json_or_text,
    outputs_of,
    ref_values,
    rewrite_ids,
)

Handler = Callable[..., Any]
#: Calls the recording never made that handlers may answer in a row before the rerun stops.
MAX_EXTRA_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class Divergence:
    """Why a rerun stopped early (one line for a person)."""

    turn: int
    message: str

    def format(self) -> str:
        return f"turn {self.turn}: {self.message}"


def call_handler(handler: Handler, arguments: str) -> str:
    """Run a --tools handler on a call's JSON arguments; its result as the output text (a dict as JSON)."""
    args = json_or_text(arguments)
    return as_text(handler(**args) if isinstance(args, dict) else handler(args))


def as_text(result: Any) -> str:
    """A handler's result as sent: a str as it is, anything else as JSON (or its str() if not JSON-able)."""
    if isinstance(result, str):
        return result
    try:
        return orjson.dumps(result).decode()
    except TypeError:
        return str(result)


class RunState:
    """What the new server has said so far, as the plan needs it."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.finished, self.created_key = FINISHED[plan.api], CREATED_KEY[plan.api]
        self.ids = IdLedger()
        self.calls: list[Call] = []  # the run's calls that stand for the recording's, in order
        self.done = 0
        self.created = 0
        self.extra = 0  # responses asked for to answer calls the recording never made
        self.frames = 0
        self.types_since_send: set[str] = set()
        self.handled: list[tuple[Call, str]] = []  # calls a --tools handler answered, and what it said
        self.errors: list[str] = []  # the server's error events (their messages, the first MAX_ERRORS)
        self._extra_ids: set[str] = set()
        self.milestones: Counter[str] = Counter()  # Live: the milestones received
        self.acks_extra: Counter[str] = Counter()  # Live: milestones provoked by answers the recording never sent
        self.delegations: list[tuple[str, str, str]] = []  # Live: (id, target, what the user had said before it)
        self.delegations_extra: set[str] = set()  # Live: client delegations a handler answered
        self._transcript = live.Transcript()

    # -- what the server said --

    def feed_server(self, data: str | bytes) -> None:
        self.frames += 1
        event = parse_event(data)
        if event is None:
            return
        kind = event.get("type")
        if isinstance(kind, str) and len(self.types_since_send) < 256:
            self.types_since_send.add(kind)
        key = event_key(self.plan.api, event)
        if self.plan.api is Api.LIVE:
            self._feed_live(event, key)
        self.ids.feed_server(event)
        for call in function_calls(event):
            known = call.call_id in self._extra_ids or any(c.call_id == call.call_id for c in self.calls)
            if len(self.calls) < MAX_CALLS and not known:
                self.calls.append(call)
        if key in self.finished:
            self.done += 1
        elif key == self.created_key:
            self.created += 1
        elif kind == "error" and len(self.errors) < MAX_ERRORS:
            error = event.get("error")
            message = error.get("message") if isinstance(error, Mapping) else None
            self.errors.append(short(message if isinstance(message, str) else error, 200))

    def _feed_live(self, event: Mapping[str, Any], key: str | None) -> None:
        if key in live.MILESTONES:
            self.milestones[key] += 1
        delegation = live.delegation_of(event)
        if delegation is not None and len(self.delegations) < live.MAX_DELEGATIONS:
            self.delegations.append((*delegation, self._transcript.text))
        self._transcript.feed(event)

    def sent(self, event: dict[str, Any] | None) -> None:
        if event is not None:
            self.ids.feed_client(event)
        self.types_since_send.clear()

    @property
    def idle(self) -> bool:
        """No response in progress: nothing more is coming unless the client asks."""
        return self.created <= self.done

    @property
    def counted_done(self) -> int:
        """Finished responses that count against the recording's (the extra ones left out)."""
        return self.done - self.extra

    @property
    def counted_created(self) -> int:
        return self.created - self.extra

    # -- when to send --

    def count(self, key: str) -> int:
        """How many of a milestone this run has received that stand for the recording's."""
        extra = self.extra if key in self.finished or key == self.created_key else 0
        return self.milestones[key] - extra - self.acks_extra[key]

    def _unmet(self, waits: tuple[tuple[str, int], ...]) -> tuple[str, int] | None:
        return next(((k, n) for k, n in waits if self.count(k) < n), None)

    def _counts_reached(self, step: Step) -> bool:
        if self._unmet(step.waits) is not None:
            return False
        return self.counted_done >= step.after_done and self.counted_created >= step.after_created

    def _missing(self, step: Step) -> list[str]:
        return [r for r in step.refs if self.plan.ids.counterpart(r, self.ids) is None]

    def ready(self, step: Step) -> bool:
        """Has the server said what the recorded client had seen before sending `step`?"""
        if self.plan.greeting and self.frames == 0:
            return False
        return self._counts_reached(step) and not self._missing(step)

    def stuck(self, step: Step) -> str | None:
        """Why `step` can never become ready: the server is idle, has done what was waited for, and still lacks
        an object the step names."""
        other = self.delegation_mismatch()
        if other is not None:
            return other
        if not self.idle or not self._counts_reached(step):
            return None
        missing = self._missing(step)
        if not missing:
            return None
        r = missing[0]
        idx = self.plan.call_index(r)
        if idx is not None:
            return f"the recording answered {self.plan.calls[idx].shown()} here; the new model made no such call"
        return f"this run has no counterpart of {self.plan.ids.describe(r)} ({r}) that step {step.index + 1} names"

    def waiting_for(self, step: Step) -> str:
        if self.plan.greeting and self.frames == 0:
            return "the server's first event"
        unmet = self._unmet(step.waits)
        if unmet is not None:
            return f"{unmet[0]} #{unmet[1]}"
        if self.counted_done < step.after_done:
            return f"finished response #{step.after_done}"
        if self.counted_created < step.after_created:
            return f"response #{step.after_created} to start"
        missing = self._missing(step)
        return self.plan.ids.describe(missing[0]) if missing else "nothing"

    def final_ready(self) -> bool:
        """After the last step: the responses the recording finished, and its last server event, are in."""
        if self.counted_done < self.plan.final_done or self._unmet(self.plan.final_waits) is not None:
            return False
        return self.plan.final_type is None or self.plan.final_type in self.types_since_send

    def final_waiting_for(self) -> str:
        if self.counted_done < self.plan.final_done:
            return f"finished response #{self.plan.final_done}"
        unmet = self._unmet(self.plan.final_waits)
        if unmet is not None:
            return f"{unmet[0]} #{unmet[1]}"
        return self.plan.final_type or "the end"

    # -- GPT-Live delegations --

    def delegation_mismatch(self) -> str | None:
        """The run delegated elsewhere than the recording did at the same place (the n-th delegation of each)."""
        for (_, recorded), (_, target, _) in zip(self.plan.delegations, self._live_run(), strict=False):
            if recorded != target:
                return f"the new model delegated to {target} where the recording delegated to {recorded}"
        return None

    def _live_run(self) -> list[tuple[str, str, str]]:
        return [d for d in self.delegations if d[0] not in self.delegations_extra]

    def extra_delegation(self, step: Step | None) -> tuple[str, str, str] | None:
        """A client delegation, still unanswered, past those the recording had by the next step that waited for the
        server (or by the end)."""
        if self.plan.api is not Api.LIVE:
            return None
        recorded = (
            step.delegations_by_wait if step is not None else sum(t == "client" for _, t in self.plan.delegations)
        )
        run = [d for d in self._live_run() if d[1] == "client"]
        return run[recorded] if len(run) > recorded else None

    def delegation_answer(
        self, delegation: tuple[str, str, str], handlers: Mapping[str, Handler], turn: int
    ) -> str | Divergence:
        """The frame that answers a client delegation the recording never had (a --tools ``delegation`` function
        given what the user said before it), or why it cannot be answered."""
        did, _, transcript = delegation
        handler = handlers.get(live.DELEGATION_HANDLER)
        said = f" (after the user said {orjson.dumps(transcript[:80]).decode()})" if transcript else ""
        stop = f"the new model delegated to the client{said} where the recording had no delegation"
        if handler is None:
            return Divergence(turn, f"{stop}; no --tools handler named {live.DELEGATION_HANDLER}")
        if len(self.delegations_extra) >= MAX_EXTRA_ROUNDS:
            return Divergence(turn, f"{stop}; {MAX_EXTRA_ROUNDS} delegations answered already")
        try:
            result = handler(transcript=transcript)
        except Exception as e:  # the user's handler: its failure is reported, never a traceback
            return Divergence(turn, f"--tools handler {live.DELEGATION_HANDLER} raised {type(e).__name__}: {e}")
        content = as_text(result)
        self.delegations_extra.add(did)
        self.ids.forget(did)
        self.acks_extra[live.APPENDED] += 1
        self.handled.append(
            (Call(did, live.DELEGATION_HANDLER, orjson.dumps({"transcript": transcript}).decode()), content)
        )
        return live.delegation_reply(did, content)

    # -- function calls --

    def extra_call(self, step: Step | None) -> Call | None:
        """A call the new model made where the recording made none, once the server is idle (before a step, or
        at the end; GPT-Live: before a step that waited for the server)."""
        if self.plan.api is Api.LIVE and step is not None and not step.waits:
            return None  # full duplex: a call may come a few appends earlier than recorded; judged where the
            # recorded client reacted to the server
        recorded = step.calls_before if step is not None else len(self.plan.calls)
        if self.idle and len(self.calls) > recorded:
            return self.calls[recorded]
        return None

    def extra_answer(self, call: Call, handlers: Mapping[str, Handler], turn: int) -> list[str] | Divergence:
        """The frames that answer a call the recording never made (its output, then a response.create), or why
        it cannot be answered. The response they provoke is not counted against the recording's."""
        handler = handlers.get(call.name)
        stop = f"the new model called {call.shown()} where the recording made no call"
        if handler is None:
            return Divergence(turn, f"{stop}; no --tools handler for {call.name}")
        if self.plan.api is Api.RESPONSES:
            return Divergence(turn, f"{stop}; answering a call the recording never made is Realtime and GPT-Live only")
        if self.extra >= MAX_EXTRA_ROUNDS:
            return Divergence(turn, f"{stop}; {MAX_EXTRA_ROUNDS} calls answered in a row already")
        try:
            output = call_handler(handler, call.arguments)
        except Exception as e:  # the user's handler: its failure is reported, never a traceback
            return Divergence(turn, f"--tools handler {call.name} raised {type(e).__name__}: {e}")
        self.calls.remove(call)
        self._extra_ids.add(call.call_id)
        self.ids.forget(call.call_id)
        self.handled.append((call, output))
        self.extra += 1
        if self.plan.api is Api.LIVE:
            return live.call_output_frames(call.call_id, output)
        item = {"type": "function_call_output", "call_id": call.call_id, "output": output}
        return [
            orjson.dumps({"type": "conversation.item.create", "item": item}).decode(),
            orjson.dumps({"type": "response.create"}).decode(),
        ]

    def answer(self, step: Step, turn: int, handlers: Mapping[str, Handler]) -> tuple[str | bytes, Divergence | None]:
        """The frame to send for `step`: ids mapped, function outputs answered; or why the rerun stops."""
        event = step.event
        if event is None or too_deep(event, WRITE_DEPTH):  # not JSON, or nested past what is walked: as recorded
            return step.data, None
        mapping: dict[str, str] = {}
        for ref in ref_values(event):
            other = self.plan.ids.counterpart(ref, self.ids)
            if other is not None:
                mapping[ref] = other
        out = rewrite_ids(event, mapping)
        for holder in outputs_of(out):
            recorded_id = next((r for r, new in mapping.items() if new == holder["call_id"]), holder["call_id"])
            idx = self.plan.call_index(recorded_id)
            if idx is None:
                continue  # a call the recording never showed: sent as recorded
            if idx >= len(self.calls):
                return step.data, Divergence(
                    turn, f"the recording answered {self.plan.calls[idx].shown()} here; the new model made no call"
                )
            recorded, new = self.plan.calls[idx], self.calls[idx]
            holder["call_id"] = new.call_id
            if recorded.same_as(new):
                continue
            handler = handlers.get(new.name)
            if handler is None:
                return step.data, Divergence(
                    turn,
                    f"the new model called {new.shown()} where the recording called {recorded.shown()}; "
                    f"no --tools handler for {new.name}",
                )
            try:
                result = call_handler(handler, new.arguments)
            except Exception as e:  # the user's handler: its failure is reported, never a traceback
                return step.data, Divergence(turn, f"--tools handler {new.name} raised {type(e).__name__}: {e}")
            holder["output"] = result
            self.handled.append((new, result))
        return orjson.dumps(out).decode(), None
