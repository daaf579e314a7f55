"""What a rerun knows of GPT-Live (pure, no I/O): what a Live client waits for, and how it answers delegations.

A Live session is full duplex: the client's microphone streams ``session.input_audio.append`` on the session's
timeline while the server speaks, so a rerun does not wait for finished responses as in Realtime. A client step
waits for the *milestones* (:data:`MILESTONES`: ``session.started``, a delegation created, a backend response
finished, an append acknowledged, an answer's ``session.usage.updated``…) the recorded client received between
its previous frame and this one, each as many times as the recording had by then; a run of appends streams on
unpaused once its first one went out. A backend (Responses) response nested in ``response.event`` counts as a
response, as Realtime's do, so function calls a delegation's backend makes are compared and answered by the same
rules (:mod:`rtproxy.replay.rerun_state`): the same name and JSON-equal arguments get the recorded
``response.item.create`` output. A client delegation (``session.delegation.created`` with target ``client``)
carries no task text, only its target: the run's n-th client delegation stands for the recording's n-th, and the
recorded reply (``session.instructions.append`` naming it) is sent with this run's delegation id. One the
recording never had is answered by a ``--tools`` function named :data:`DELEGATION_HANDLER`, called with
``transcript=`` (what the user said since the delegation before), or stops the rerun.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..conversation.model import MAX_MESSAGE

PRIMARY, SIDEBAND, FORK = "primary", "sideband", "fork"
AUDIO_APPEND = "session.input_audio.append"
RESPONSE_EVENT = "response.event"
#: The key of a nested backend event: ``response.event:`` and the nested Responses event's type.
NESTED = RESPONSE_EVENT + ":"
FINISHED = frozenset({NESTED + "response.completed", NESTED + "response.failed", NESTED + "response.incomplete"})
CREATED = NESTED + "response.created"
DELEGATION_CREATED = "session.delegation.created"
APPENDED = "session.instructions.appended"
#: Server events a Live client may wait for (keys as :func:`event_key` gives them); deltas are never waited for.
MILESTONES = frozenset(
    {
        "session.started",
        "session.updated",
        "session.closed",
        DELEGATION_CREATED,
        APPENDED,
        "session.thinking.appended",
        "session.commentary.appended",
        "session.usage.updated",
        "session.input_audio.muted",
        "session.input_audio.unmuted",
        "session.output_audio.fixture.played",
        "decision.event",
        "decision.item.created",
        "decision.item.deleted",
        "transport.answered",
        "transport.dtmf.sent",
        CREATED,
        *FINISHED,
    }
)
#: The --tools function that answers a client delegation the recording never had.
DELEGATION_HANDLER = "delegation"
#: Client delegations and transcript words followed per session.
MAX_DELEGATIONS = 1_000
MAX_TRANSCRIPT = 4_000


def nested(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Responses event a ``response.event`` carries."""
    if event.get("type") != RESPONSE_EVENT:
        return None
    inner = event.get("event")
    return inner if isinstance(inner, Mapping) else None


def event_key(event: Mapping[str, Any]) -> str | None:
    """The event's type, a nested backend event's as ``response.event:TYPE``."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return None
    inner = nested(event)
    inner_kind = inner.get("type") if inner is not None else None
    if isinstance(inner_kind, str):
        return NESTED + inner_kind
    return kind


def delegation_of(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """(id, target) of a ``session.delegation.created``."""
    if event.get("type") != DELEGATION_CREATED:
        return None
    obj = event.get("delegation")
    did = obj.get("id") if isinstance(obj, Mapping) else None
    if not isinstance(obj, Mapping) or not isinstance(did, str) or not did:
        return None
    target = obj.get("target")
    return did, target if isinstance(target, str) else "client"


def edit_start(event: dict[str, Any], instructions: str | None, model: str | None) -> dict[str, Any] | None:
    """``session.start`` with --instructions / --model applied (a fork's start names no model: kept so)."""
    if event.get("type") != "session.start" or (instructions is None and model is None):
        return None
    session = event.get("session")
    session = dict(session) if isinstance(session, dict) else {}
    if instructions is not None:
        session["instructions"] = instructions
    if model is not None:
        session["model"] = model
    return {**event, "session": session}


def edit_server_model(event: dict[str, Any], model: str) -> dict[str, Any] | None:
    """A server snapshot of the session (``session.started``/``updated``/``closed``) naming `model`: what an
    unchanged server asked for that model would say."""
    session = event.get("session")
    if event.get("type") not in ("session.started", "session.updated", "session.closed") or not isinstance(
        session, dict
    ):
        return None
    return {**event, "session": {**session, "model": model}}


def refusal(variant: str | None) -> str | None:
    """Why a Live connection of this variant is not rerun by itself (None: a primary reruns)."""
    if variant == SIDEBAND:
        return (
            "a GPT-Live sideband watches another connection's session: rerun its primary (the sideband attaches to "
            "a session id the new server does not have)"
        )
    if variant == FORK:
        return "a GPT-Live fork starts from a stored session the new server does not have"
    return None


class Transcript:
    """What the user said (``session.input_transcript.delta``) since the latest delegation, bounded."""

    def __init__(self) -> None:
        self.text = ""

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("type") == "session.input_transcript.delta":
            delta = event.get("delta")
            if isinstance(delta, str) and len(self.text) < MAX_TRANSCRIPT:
                self.text = (self.text + delta)[:MAX_TRANSCRIPT]
        elif event.get("type") == DELEGATION_CREATED:
            self.text = ""


def delegation_reply(delegation_id: str, content: str) -> str:
    """The frame that answers a client delegation: ``session.instructions.append`` naming it."""
    event = {
        "type": "session.instructions.append",
        "content": content[: MAX_MESSAGE * 16],
        "delegation_id": delegation_id,
    }
    return orjson.dumps(event).decode()


def call_output_frames(call_id: str, output: str) -> list[str]:
    """The frames that return a backend call's output: ``response.item.create``, then ``response.create``."""
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return [
        orjson.dumps({"type": "response.item.create", "item": item}).decode(),
        orjson.dumps({"type": "response.create"}).decode(),
    ]
