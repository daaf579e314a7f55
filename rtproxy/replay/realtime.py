"""Replay rules for the Realtime API: a reply follows the latest client event; input audio comes in runs of
``input_audio_buffer.append`` (one step each, matched by total length); a mismatch is Realtime's ``error``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..conversation.model import clip

API = "realtime"
AUDIO_APPEND = "input_audio_buffer.append"
AUDIO_STREAM = False
TURN_ENDS = frozenset({"response.create", "input_audio_buffer.commit"})
_MAX_METADATA = 16


def client_ids(event: Mapping[str, Any] | None) -> list[Any]:
    """``event_id`` (an error's ``error.event_id`` names it), a ``conversation.item.create``'s ``item.id``, and
    the values of a ``response.create``'s ``response.metadata`` (they come back in the response), by key."""
    if not isinstance(event, Mapping):
        return []
    out: list[Any] = [event.get("event_id")]
    kind = event.get("type")
    if kind == "conversation.item.create":
        item = event.get("item")
        out.append(item.get("id") if isinstance(item, Mapping) else None)
    elif kind == "response.create":
        response = event.get("response")
        metadata = response.get("metadata") if isinstance(response, Mapping) else None
        if isinstance(metadata, Mapping):
            keys = sorted(k for k in metadata if isinstance(k, str))[:_MAX_METADATA]
            out += [metadata[k] for k in keys]
    return out


def error_event(number: int, message: str, client_event_id: Any) -> dict[str, Any]:
    """Realtime's ``error`` event (``error.event_id`` names the client event)."""
    return {
        "type": "error",
        "event_id": f"event_rtproxy_replay_{number}",
        "error": {
            "type": "invalid_request_error",
            "code": "rtproxy_replay_mismatch",
            "message": f"rtproxy replay: {message}",
            "param": None,
            "event_id": clip(client_event_id),
        },
    }
