"""Replay rules for the Realtime API: a reply follows the client event that caused it (:class:`Causes`); input
audio comes in runs of ``input_audio_buffer.append`` (one step each, matched by total length); a mismatch is
Realtime's ``error``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..conversation.model import clip

API = "realtime"
AUDIO_APPEND = "input_audio_buffer.append"
AUDIO_STREAM = False
TURN_ENDS = frozenset({"response.create", "input_audio_buffer.commit"})
#: Client events that answer the greeting (``session.created``) by configuring the session it describes.
GREETING_ANSWERS = frozenset({"session.update", "transcription_session.update"})
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


#: Client events the server acknowledges with one event of its own, in the order it receives them.
ACKS = {
    "session.update": "session.updated",
    "transcription_session.update": "transcription_session.updated",
    "input_audio_buffer.commit": "input_audio_buffer.committed",
    "input_audio_buffer.clear": "input_audio_buffer.cleared",
    "output_audio_buffer.clear": "output_audio_buffer.cleared",
    "conversation.item.truncate": "conversation.item.truncated",
    "conversation.item.delete": "conversation.item.deleted",
    "conversation.item.retrieve": "conversation.item.retrieved",
    "response.create": "response.created",
}
_ITEM_EVENTS = frozenset({"conversation.item.created", "conversation.item.added", "conversation.item.done"})
#: At most this many ids (event, response, item) are followed per recording.
MAX_TRACKED = 4096


class Causes:
    """Which recorded client event caused each server event (for :func:`rtproxy.replay.script.build_script`).

    ``response.*`` events (and the ``conversation.item.*`` of a response's output) belong to the
    ``response.create`` that started the response (under server VAD: the commit or audio run before it);
    an acknowledgement (``session.updated``, ``input_audio_buffer.committed``…) to the oldest client event of
    its kind not yet acknowledged; a client item's ``conversation.item.*`` to its ``conversation.item.create``;
    an ``error`` to the client event its ``error.event_id`` names. Anything else, or anything unknown,
    belongs to the latest client event before it.
    """

    def __init__(self) -> None:
        self.latest: int | None = None
        self.audio: int | None = None  # the latest commit or audio run (server VAD starts responses from it)
        self.waiting: dict[str, list[int]] = {}  # server ack type -> client steps not yet acknowledged
        self.events: dict[str, int] = {}  # client event_id -> step
        self.responses: dict[str, int] = {}  # response id -> step
        self.items: dict[str, int] = {}  # item id -> step
        self.response: int | None = None  # the step of the latest response started

    def client(self, index: int, kind: str, event: Mapping[str, Any] | None) -> None:
        """A client step (a run of audio appends is one, fed once)."""
        self.latest = index
        if kind in (AUDIO_APPEND, "input_audio_buffer.commit"):
            self.audio = index
        if kind in ACKS:
            waiting = self.waiting.setdefault(ACKS[kind], [])
            if len(waiting) < MAX_TRACKED:
                waiting.append(index)
        if event is None:
            return
        _bind(self.events, event.get("event_id"), index)
        if kind == "conversation.item.create":
            item = event.get("item")
            if isinstance(item, Mapping) and not _bind(self.items, item.get("id"), index):
                waiting = self.waiting.setdefault("conversation.item", [])
                if len(waiting) < MAX_TRACKED:
                    waiting.append(index)

    def server(self, event: Mapping[str, Any] | None) -> int | None:
        """The step that caused this server event (None before any client event: the greeting)."""
        if self.latest is None or event is None:
            return self.latest
        kind = event.get("type")
        if not isinstance(kind, str):
            return self.latest
        if kind == "error":
            error = event.get("error")
            named = self.events.get(_text(error.get("event_id"))) if isinstance(error, Mapping) else None
            return self.latest if named is None else named
        if kind == "response.created":
            step = self._ack(kind, self.audio)
            self.response = step
            response = event.get("response")
            if isinstance(response, Mapping):
                _bind(self.responses, response.get("id"), step)
            return step
        if kind.startswith("response."):
            return self._response_event(event)
        if kind == "input_audio_buffer.committed":
            step = self._ack(kind, self.audio)
            _bind(self.items, event.get("item_id"), step)
            return step
        if kind in ACKS.values():
            return self._ack(kind, self.latest)
        if kind in _ITEM_EVENTS:
            item = event.get("item")
            item_id = _text(item.get("id")) if isinstance(item, Mapping) else ""
            if item_id in self.items:
                return self.items[item_id]
            waiting = self.waiting.get("conversation.item")
            if waiting and kind != "conversation.item.done":
                step = waiting.pop(0)
                _bind(self.items, item_id, step)
                return step
            return self.latest
        if kind.startswith("conversation.item.") or kind.startswith("input_audio_buffer.speech"):
            named = self.items.get(_text(event.get("item_id")))
            if named is not None:
                return named
            return self.audio if kind.startswith("input_audio_buffer.") and self.audio is not None else self.latest
        return self.latest

    def _ack(self, kind: str, otherwise: int | None) -> int:
        waiting = self.waiting.get(kind)
        if waiting:
            return waiting.pop(0)
        return otherwise if otherwise is not None else self.latest or 0

    def _response_event(self, event: Mapping[str, Any]) -> int:
        response = event.get("response")
        rid = _text(event.get("response_id")) or (_text(response.get("id")) if isinstance(response, Mapping) else "")
        step = self.responses.get(rid, self.response if self.response is not None else self.latest)
        assert step is not None
        item = event.get("item")
        if isinstance(item, Mapping):
            _bind(self.items, item.get("id"), step)
        _bind(self.items, event.get("item_id"), step)
        return step


def new_causes() -> Causes:
    """A fresh :class:`Causes` for one recording."""
    return Causes()


def _text(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= 256 else ""


def _bind(table: dict[str, int], key: Any, step: int) -> bool:
    """Remember `key` (a short non-empty string) -> step; False if it is no usable key."""
    key = _text(key)
    if not key:
        return False
    if key in table or len(table) < MAX_TRACKED:
        table[key] = step
    return True
