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

from collections.abc import Mapping
from typing import Any

from ..conversation.model import clip

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
