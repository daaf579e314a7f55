"""Replay rules for GPT-Live: full duplex.

The client's commands (``session.start``, ``session.update``, ``session.instructions.append``,
``response.create``, decision and item commands, ``session.close``…) are the triggers, and so is the position of
its input-audio stream (``session.input_audio.append``): a server event recorded after the client had streamed N
bytes of audio is sent once this client has streamed N bytes, however it chunks them. Each command's optional
``event_id`` is echoed by the server as ``client_event_id`` (and ``error.client_event_id``): the replay sends this
run's. A mismatch is Live's own ``ErrorEvent``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..conversation.model import clip

API = "live"
AUDIO_APPEND = "session.input_audio.append"
AUDIO_STREAM = True
#: Commands after which the client waits for an answer.
TURN_ENDS = frozenset({"response.create", "decision.create", "session.close"})


def client_ids(event: Mapping[str, Any] | None) -> list[Any]:
    """The command's ``event_id``."""
    return [event.get("event_id")] if isinstance(event, Mapping) else []


def error_event(number: int, message: str, client_event_id: Any) -> dict[str, Any]:
    """Live's ``error`` event (``openai.types.live.ErrorEvent``), naming the client command when it had an id."""
    ceid = clip(client_event_id) if isinstance(client_event_id, str) else None
    error: dict[str, Any] = {
        "type": "invalid_request_error",
        "code": "rtproxy_replay_mismatch",
        "message": f"rtproxy replay: {message}",
        "param": None,
    }
    event: dict[str, Any] = {"type": "error", "event_id": f"event_rtproxy_replay_{number}", "error": error}
    if ceid is not None:
        error["client_event_id"] = ceid
        event["client_event_id"] = ceid
    return event
