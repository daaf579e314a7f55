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


#: At most this many command ids are followed per recording.
MAX_TRACKED = 4096


class Causes:
    """Which recorded command caused each server event: the one whose ``event_id`` it echoes as
    ``client_event_id`` (or ``error.client_event_id``); else the latest command before it."""

    def __init__(self) -> None:
        self.latest: int | None = None
        self.events: dict[str, int] = {}

    def client(self, index: int, kind: str, event: Mapping[str, Any] | None) -> None:
        self.latest = index
        eid = event.get("event_id") if isinstance(event, Mapping) else None
        if isinstance(eid, str) and eid and len(eid) <= 256 and (eid in self.events or len(self.events) < MAX_TRACKED):
            self.events[eid] = index

    def server(self, event: Mapping[str, Any] | None) -> int | None:
        if self.latest is None or not isinstance(event, Mapping):
            return self.latest
        ceid = event.get("client_event_id")
        error = event.get("error")
        if not isinstance(ceid, str) and isinstance(error, Mapping):
            ceid = error.get("client_event_id")
        named = self.events.get(ceid) if isinstance(ceid, str) else None
        return self.latest if named is None else named


def new_causes() -> Causes:
    """A fresh :class:`Causes` for one recording."""
    return Causes()
