"""Replay rules for the Responses API's WebSocket mode (``/v1/responses``).

The client's ``response.create`` (and ``response.steer``) are the triggers, each answered with the stream recorded
after it. ``ordered`` matches each ``response.create`` to the next recorded one and compares what the agent
decided: its ``input`` items (the user's messages, the tools' outputs it sends back), ``instructions``, the tools
it offers and ``previous_response_id``; ``strict`` compares the whole body (:data:`VOLATILE` fields aside). The
ids the client sends back (``previous_response_id``, a function call's ``call_id``) are the server's, and the
replay sends the recording's, so they line up as they are. The one id the client makes is its ``stream_id``
lane: learnt and echoed as this run's. A mismatch is the WebSocket mode's ``error`` event
(``openai.types.responses.responses_server_event.ResponseWsError``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..conversation.model import clip
from ..protocols.wire import parse_event, skeleton

if TYPE_CHECKING:
    from .script import Reply, Step

API = "responses"
#: Responses has no input audio stream (the name is never a client event type).
AUDIO_APPEND = "<responses: no input audio>"
AUDIO_STREAM = False
#: Every request waits for its answer.
TURN_ENDS = frozenset({"response.create", "response.steer"})
#: What ``ordered`` compares of a ``response.create`` (``strict`` compares everything).
ORDERED_FIELDS = ("type", "input", "instructions", "tools", "previous_response_id")
#: Fields ``strict`` leaves out: routing and cache hints that change from run to run without changing the ask.
VOLATILE = frozenset({"event_id", "prompt_cache_key", "safety_identifier", "user"})


def client_ids(event: Mapping[str, Any] | None) -> list[Any]:
    """A request's ``stream_id`` (its lane, which every event of its response echoes)."""
    return [event.get("stream_id")] if isinstance(event, Mapping) else []


def compared(event: Mapping[str, Any], policy: str) -> dict[str, Any]:
    """The part of a client event a policy compares."""
    if policy == "strict":
        return {k: v for k, v in event.items() if k not in VOLATILE}
    return {k: event[k] for k in ORDERED_FIELDS if k in event}


def error_event(number: int, message: str, client_event_id: Any) -> dict[str, Any]:
    """The WebSocket mode's ``error`` event, naming the lane when the request had one."""
    event: dict[str, Any] = {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "rtproxy_replay_mismatch",
            "message": f"rtproxy replay: {message}",
            "param": None,
        },
    }
    if isinstance(client_event_id, str):
        event["stream_id"] = clip(client_event_id)
    return event


# --- lanes (``stream_id``) ------------------------------------------------------------------------------


#: Server events that end a lane's current response.
_ENDS = frozenset({"response.completed", "response.failed", "response.incomplete", "response.cancelled"})


def lane(event: Mapping[str, Any] | None) -> str | None:
    """The lane a client request (or a server event) is on; None: the socket's one default lane."""
    value = event.get("stream_id") if isinstance(event, Mapping) else None
    return value if isinstance(value, str) else None


def regroup(steps: Sequence[Step]) -> tuple[Step, ...]:
    """Steps whose replies are those of their own lane's response: with several lanes, what the server streamed
    on lane A after the client had sent a request on lane B belongs to A's request (each lane's requests are
    answered first in, first out, from ``response.created`` on). A recording without lanes is left as it is."""
    if not any(lane(s.event) is not None for s in steps if s.type == "response.create"):
        return tuple(steps)
    waiting: dict[str | None, deque[int]] = {}
    current: dict[str | None, int] = {}
    owned: list[list[Reply]] = [[] for _ in steps]
    for i, step in enumerate(steps):
        if step.type == "response.create":
            waiting.setdefault(lane(step.event), deque()).append(i)
        for reply in step.replies:
            event = parse_event(skeleton(reply.data)) if isinstance(reply.data, str) else None
            key = lane(event)
            kind = event.get("type") if event is not None else None
            q = waiting.get(key)
            if kind == "response.created" and q:
                owner = current[key] = q.popleft()
            elif kind == "error" and key not in current and q:
                owner = q.popleft()  # a request refused before any response: the error is its answer
            else:
                owner = current.get(key, i)
            if kind in _ENDS and current.get(key) == owner:
                current.pop(key)
            owned[owner].append(reply)
    return tuple(replace(s, replies=tuple(owned[i])) for i, s in enumerate(steps))
