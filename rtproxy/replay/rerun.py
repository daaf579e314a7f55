"""Rerun planning: a recorded session becomes its client side, to be played against a new server (pure, no I/O).

A :class:`Plan` is what ``rtproxy rerun`` sends and when. Its :class:`Step` s are the recording's client frames
in order (``--instructions`` and ``--model`` applied), each with what the recorded client had seen of the server
before sending it: so many ``response.created`` and ``response.done`` (Responses: ``response.completed``, ``.failed``
or ``.incomplete``) events. A rerun sends a step once the new server has produced as many, and then after the
step's recorded delay from that moment (or from the step before, whichever came later). The steps between two
waits for a finished response are a :class:`Turn`. Only the first append of a run of ``input_audio_buffer.append``
waits: a microphone's stream goes on while the model speaks.

Ids the server made (items, calls, responses, delegations) that later client events name are mapped by kind and
order: the recording's third assistant message is this run's third (:mod:`rtproxy.replay.rerun_ids`). Function
calls are compared at the step that answers one (:mod:`rtproxy.replay.rerun_state`): the same name and JSON-equal
arguments get the recorded output; another call needs a handler (``--tools``), or the rerun stops with a divergence.

GPT-Live primaries are planned by the same walk with :mod:`rtproxy.replay.rerun_live`'s rules: a step waits for the
milestones the recorded client had just received (:attr:`Step.waits`), a delegation's backend responses count as
responses, and client delegations are mapped by order.

Everything from the wire is bounded: ids per kind and calls (:mod:`rtproxy.replay.rerun_ids`), steps' nesting
(``WRITE_DEPTH``), delegations (``rerun_live.MAX_DELEGATIONS``); junk teaches nothing and never raises.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from ..conversation.model import too_deep
from ..protocols import Api, classify_handshake, refine
from ..protocols.secrets import SECRET_HEADERS, SECRET_PROTOCOL_PREFIXES, SECRET_QUERY_PARAMS
from ..protocols.wire import Direction, Frame, parse_event
from . import rerun_live as live
from .rerun_ids import MAX_CALLS, Call, IdLedger, function_calls, outputs_of, ref_values

AUDIO_APPEND = "input_audio_buffer.append"
#: The server events that say a response is over, per API.
FINISHED = {
    Api.REALTIME: frozenset({"response.done"}),
    Api.RESPONSES: frozenset({"response.completed", "response.failed", "response.incomplete"}),
    Api.LIVE: live.FINISHED,
}
CREATED = "response.created"
#: The key (:func:`event_key`) of the event that says a response started, per API.
CREATED_KEY = {Api.REALTIME: CREATED, Api.RESPONSES: CREATED, Api.LIVE: live.CREATED}
MAX_ERRORS = 20
#: An event nested deeper than this is sent exactly as recorded (orjson writes at most 254 levels).
WRITE_DEPTH = 200
#: The longest recorded pause a rerun reproduces (seconds, before --speed).
MAX_DELAY = 300.0
#: Request headers never repeated: one hop's, the WebSocket handshake's own, and every credential.
DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        *SECRET_HEADERS,
    }
)


class PlanError(ValueError):
    """A recording that cannot be rerun (the message is one line for a person)."""


# --- what is played ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One client frame to send, and what the recorded client had seen before sending it."""

    index: int  # among the recording's client frames
    t: float  # recorded time
    delay: float  # seconds after its anchor (the step before, or the event it waited for)
    type: str
    data: str | bytes  # as recorded, with --instructions / --model applied
    after_done: int  # finished responses the recorded client had seen
    after_created: int  # created responses likewise
    refs: tuple[str, ...] = ()  # server-made ids (of the recording) it names
    answers: tuple[str, ...] = ()  # recorded call ids whose output it carries
    calls_before: int = 0  # function calls the recording had made before it
    waits: tuple[tuple[str, int], ...] = ()  # Live: (milestone, how many the recording had) received just before
    delegations_before: int = 0  # Live: client delegations the recording had before it
    delegations_by_wait: int = 0  # Live: ... before the next step that waits (this one, if it waits), or the end

    @property
    def event(self) -> dict[str, Any] | None:
        return parse_event(self.data)


@dataclass(frozen=True, slots=True)
class Turn:
    number: int  # 1-based
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Plan:
    api: Api
    dialect: str | None
    path: str
    query: str
    headers: dict[str, str]
    subprotocols: tuple[str, ...]
    auth_header: str  # where the API key goes: "Authorization" (Bearer), or Azure's "api-key" if recorded so
    model: str | None
    turns: tuple[Turn, ...]
    greeting: bool  # the server spoke first (session.created): wait for it
    final_done: int  # finished responses the recording had in all
    final_type: str | None  # the recording's last server event, when it came after the last client frame
    calls: tuple[Call, ...]  # the recording's function calls, in order
    outputs: dict[str, Any]  # recorded call id -> the output the client sent
    ids: IdLedger
    expected: tuple[Frame, ...]  # the recording with the edits applied: what an unchanged server would give
    final_waits: tuple[tuple[str, int], ...] = ()  # Live: the milestones received after the last client frame
    delegations: tuple[tuple[str, str], ...] = ()  # Live: the recording's delegations, (id, target) in order

    @property
    def steps(self) -> list[Step]:
        return [s for turn in self.turns for s in turn.steps]

    def call_index(self, call_id: str) -> int | None:
        return next((i for i, c in enumerate(self.calls) if c.call_id == call_id), None)


# --- building a plan ------------------------------------------------------------------------


def event_key(api: Api, event: Mapping[str, Any]) -> str | None:
    """What a server event counts as: its type (GPT-Live: a nested backend event's as ``response.event:TYPE``)."""
    if api is Api.LIVE:
        return live.event_key(event)
    kind = event.get("type")
    return kind if isinstance(kind, str) else None


def detect_api(session: Mapping[str, Any], frames: Sequence[Frame]) -> tuple[Api, str | None]:
    """The API and variant: the header's, else from the path and the first events."""
    api = session.get("api")
    variant = session.get("variant") or session.get("dialect")
    if api in (Api.REALTIME.value, Api.RESPONSES.value, Api.LIVE.value):
        kind_api = Api(api)
        if kind_api is not Api.REALTIME or variant in ("beta", "ga"):
            return kind_api, variant if isinstance(variant, str) else None
    headers = session.get("request_headers")
    kind = classify_handshake(
        str(session.get("path") or ""), str(session.get("query") or ""), headers if isinstance(headers, dict) else {}
    )
    for frame in frames[:200]:
        event = frame.event
        if event is None or not isinstance(event.get("type"), str):
            continue
        new = refine(kind, frame.direction.value, event["type"], event)
        if new is not None:
            kind = new
    return kind.api, kind.variant


def _query(query: str, model: str | None) -> str:
    """The recorded query without its (masked) credentials; ``model=`` replaced when asked (Azure's
    ``deployment=`` when that is what names the model)."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() not in SECRET_QUERY_PARAMS]
    if model is not None:
        names = {k for k, _ in pairs}
        key = "deployment" if "deployment" in names and "model" not in names else "model"
        pairs = [(k, model if k == key else v) for k, v in pairs] if key in names else [("model", model), *pairs]
    return urlencode(pairs)


def _headers(session: Mapping[str, Any]) -> dict[str, str]:
    headers = session.get("request_headers")
    if isinstance(headers, str):
        try:
            headers = orjson.loads(headers)
        except orjson.JSONDecodeError:
            headers = None
    if not isinstance(headers, dict):
        return {}
    return {
        str(k): str(v)
        for k, v in headers.items()
        if isinstance(k, str) and isinstance(v, str) and k.lower() not in DROPPED_HEADERS
    }


def _auth_header(session: Mapping[str, Any]) -> str:
    headers = session.get("request_headers")
    if isinstance(headers, str):
        try:
            headers = orjson.loads(headers)
        except orjson.JSONDecodeError:
            headers = None
    names = {str(k).lower() for k in headers} if isinstance(headers, dict) else set()
    return "api-key" if "api-key" in names and "authorization" not in names else "Authorization"


def _subprotocols(session: Mapping[str, Any]) -> tuple[str, ...]:
    value = session.get("subprotocol")
    if not isinstance(value, str):
        return ()
    offered = (p.strip() for p in value.split(","))
    return tuple(p for p in offered if p and not p.startswith(SECRET_PROTOCOL_PREFIXES))


def _edit(api: Api, event: dict[str, Any], instructions: str | None, model: str | None) -> dict[str, Any] | None:
    """The event with --instructions / --model applied; None if unchanged (or too deep to write back)."""
    kind = event.get("type")
    if too_deep(event, WRITE_DEPTH):
        return None
    if api is Api.LIVE:
        return live.edit_start(event, instructions, model)
    if instructions is not None and api is Api.REALTIME and kind == "session.update":
        session = event.get("session")
        session = dict(session) if isinstance(session, dict) else {}
        session["instructions"] = instructions
        return {**event, "session": session}
    if api is Api.RESPONSES and kind == "response.create":
        edited = dict(event)
        if instructions is not None:
            edited["instructions"] = instructions
        if model is not None and "model" in edited:
            edited["model"] = model
        return edited if edited != event else None
    return None


def _session_update(dialect: str | None, instructions: str) -> dict[str, Any]:
    session: dict[str, Any] = {"instructions": instructions}
    if dialect != "beta":
        session = {"type": "realtime", **session}
    return {"type": "session.update", "session": session}


class _Builder:
    """Walks a recording once: client frames become steps, server frames the counts they wait for."""

    def __init__(self, api: Api, dialect: str | None, instructions: str | None, model: str | None) -> None:
        self.api, self.dialect, self.instructions, self.model = api, dialect, instructions, model
        self.finished, self.created_key = FINISHED[api], CREATED_KEY[api]
        self.ledger = IdLedger()
        self.calls: list[Call] = []
        self.outputs: dict[str, Any] = {}
        self.steps: list[Step] = []
        self.expected: list[Frame] = []
        self.done = self.created = 0
        self.last_client_t: float | None = None
        self.anchor_t = 0.0  # when the latest awaited server event was recorded
        self.greeting = False
        self.in_audio_run = False
        self.run_counts = (0, 0)  # what the first append of the current run of appends waited for
        self.final_type: str | None = None
        self.pending_update: dict[str, Any] | None = None  # a session.update to send first (--instructions)
        self.milestones: Counter[str] = Counter()  # Live: milestones received so far
        self.since: set[str] = set()  # Live: the milestones received since the latest client frame
        self.delegations: list[tuple[str, str]] = []

    def server(self, frame: Frame) -> None:
        event = frame.event
        if event is not None and self.api is Api.LIVE and self.model is not None:
            edited = live.edit_server_model(event, self.model)
            if edited is not None:
                frame = Frame(frame.seq, frame.t, frame.direction, orjson.dumps(edited).decode())
        self.expected.append(frame)
        kind = event.get("type") if event is not None else None
        self.final_type = kind if isinstance(kind, str) else None
        if event is None:
            return
        if self.last_client_t is None:
            self.greeting = True
        self.ledger.feed_server(event)
        for call in function_calls(event):
            if len(self.calls) < MAX_CALLS and all(c.call_id != call.call_id for c in self.calls):
                self.calls.append(call)
        key = event_key(self.api, event)
        if self.api is Api.LIVE and key in live.MILESTONES:  # a fixed set: the counter stays small
            self.milestones[key] += 1
            self.since.add(key)
            self.anchor_t = frame.t
        delegation = live.delegation_of(event)
        if delegation is not None and len(self.delegations) < live.MAX_DELEGATIONS:
            self.delegations.append(delegation)
        if key in self.finished:
            self.done += 1
            self.anchor_t = frame.t
        elif key == self.created_key:
            self.created += 1
            self.anchor_t = frame.t

    def client(self, frame: Frame) -> None:
        self.final_type = None
        event, data = frame.event, frame.data
        if event is not None:
            self.ledger.feed_client(event)
            for out in outputs_of(event):
                self.outputs.setdefault(out["call_id"], out.get("output"))
            edited = _edit(self.api, event, self.instructions, self.model)
            if edited is not None:
                event, data = edited, orjson.dumps(edited).decode()
        if self.pending_update is not None:
            update, self.pending_update = self.pending_update, None
            self.add(frame.t, orjson.dumps(update).decode(), update)
        self.add(frame.t, data, event)

    def add(self, t: float, data: str | bytes, event: dict[str, Any] | None) -> None:
        kind = event.get("type") if event is not None else None
        kind = kind if isinstance(kind, str) else "<frame>"
        previous_t = self.last_client_t if self.last_client_t is not None else 0.0
        append = live.AUDIO_APPEND if self.api is Api.LIVE else AUDIO_APPEND
        in_run = kind == append and self.in_audio_run
        if in_run:
            (after_done, after_created), base = self.run_counts, previous_t
        else:
            (after_done, after_created), base = (self.done, self.created), max(previous_t, self.anchor_t)
        if kind == append and not self.in_audio_run:
            self.run_counts = (after_done, after_created)
        self.in_audio_run = kind == append
        waits: tuple[tuple[str, int], ...] = ()
        if self.api is Api.LIVE:  # full duplex: what was just received, not every response before
            after_done = after_created = 0
            waits = () if in_run else tuple((k, self.milestones[k]) for k in sorted(self.since))
            self.since = set()
        refs = tuple(v for v in ref_values(event) if v in self.ledger.where) if event is not None else ()
        answers = tuple(o["call_id"] for o in outputs_of(event)) if event is not None else ()
        step = Step(
            index=len(self.steps),
            t=t,
            delay=min(MAX_DELAY, max(0.0, t - base)),
            type=kind,
            data=data,
            after_done=after_done,
            after_created=after_created,
            refs=refs,
            answers=answers,
            calls_before=len(self.calls),
            waits=waits,
            delegations_before=sum(1 for _, target in self.delegations if target == "client"),
        )
        self.steps.append(step)
        self.expected.append(Frame(len(self.expected), t, Direction.CLIENT, data))
        self.last_client_t = t

    def turns(self) -> tuple[Turn, ...]:
        """The steps cut where the next one waits for one more finished response (GPT-Live: for anything)."""
        turns: list[Turn] = []
        current: list[Step] = []
        for step in self.steps:
            cut = step.waits if self.api is Api.LIVE else current and step.after_done > current[-1].after_done
            if current and cut:
                turns.append(Turn(len(turns) + 1, tuple(current)))
                current = []
            current.append(step)
        turns.append(Turn(len(turns) + 1, tuple(current)))
        return tuple(turns)

    def mark_delegations(self) -> None:
        """Live: each step learns how many client delegations the recording had by the next step that waits."""
        by = sum(1 for _, target in self.delegations if target == "client")
        for i in range(len(self.steps) - 1, -1, -1):
            step = self.steps[i]
            if step.waits:
                by = step.delegations_before
            self.steps[i] = replace(step, delegations_by_wait=by)


def build_plan(
    session: Mapping[str, Any],
    frames: Sequence[Frame],
    *,
    model: str | None = None,
    instructions: str | None = None,
) -> Plan:
    """The rerun of a recording. Raises PlanError for one that cannot be rerun (another API, a GPT-Live sideband
    or fork, no client events)."""
    api, dialect = detect_api(session, frames)
    if api not in FINISHED:
        raise PlanError(f"an {api.value} session cannot be rerun (Realtime, GPT-Live and Responses WebSocket can)")
    if api is Api.LIVE:
        refused = live.refusal(dialect)
        if refused is not None:
            raise PlanError(refused)
    default = "/v1/live/sessions" if api is Api.LIVE else "/v1/realtime"
    path = session.get("path")
    path = path if isinstance(path, str) and path.startswith("/") else default
    query = _query(str(session.get("query") or ""), model if api is Api.REALTIME else None)
    builder = _Builder(api, dialect, instructions, model)
    has_update = any((e := f.event) is not None and e.get("type") == "session.update" for f in frames)
    if instructions is not None and api is Api.REALTIME and not has_update:
        builder.pending_update = _session_update(dialect, instructions)
    for frame in frames:
        (builder.server if frame.direction is Direction.SERVER else builder.client)(frame)
    if not builder.steps:
        raise PlanError("the recording has no client events to send")
    builder.mark_delegations()
    header_model = model if model is not None else session.get("model")
    is_live = api is Api.LIVE
    return Plan(
        api=api,
        dialect=dialect,
        path=path,
        query=query,
        headers=_headers(session),
        subprotocols=_subprotocols(session),
        auth_header=_auth_header(session),
        model=header_model if isinstance(header_model, str) else None,
        turns=builder.turns(),
        greeting=builder.greeting,
        final_done=0 if is_live else builder.done,
        final_type=None if is_live or builder.final_type in builder.finished else builder.final_type,
        calls=tuple(builder.calls),
        outputs=builder.outputs,
        ids=builder.ledger,
        expected=tuple(Frame(i, f.t, f.direction, f.data) for i, f in enumerate(builder.expected)),
        final_waits=tuple((k, builder.milestones[k]) for k in sorted(builder.since)),
        delegations=tuple(builder.delegations),
    )
