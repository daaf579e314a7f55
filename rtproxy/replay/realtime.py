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
#: The client events that end the input audio buffer: the appends before one are one stream, however other
#: client events sent meanwhile split them into runs (``strict`` compares the stream's length).
BUFFER_ENDS = frozenset({"input_audio_buffer.commit", "input_audio_buffer.clear"})
#: Client events that answer the greeting (``session.created``) by configuring the session it describes.
GREETING_ANSWERS = frozenset({"session.update", "transcription_session.update"})
_MAX_METADATA = 16
#: Values a client event measures on this run's clock rather than chooses, and the server event that echoes each:
#: a truncate's ``audio_end_ms`` is how much of the answer this run's user heard. ``strict`` does not compare
#: them; the echo carries this run's value.
MEASURED = {"conversation.item.truncate": ("audio_end_ms", "conversation.item.truncated")}


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
#: What the server sends on its own as a connection opens ("emitted automatically … as the first server event"):
#: the greeting, even when a slow server sent it after the client's first events (a voice client streams its
#: microphone at once), so a replay sends it first, on connect.
GREETING = frozenset({"session.created", "conversation.created"})
_ITEM_EVENTS = frozenset({"conversation.item.created", "conversation.item.added", "conversation.item.done"})
#: At most this many ids (event, response, item) are followed per recording.
MAX_TRACKED = 4096


class Causes:
    """Which recorded client event caused each server event (for :func:`rtproxy.replay.script.build_script`).

    ``response.*`` events (and the ``conversation.item.*`` of a response's output) belong to the
    ``response.create`` that started the response (under server VAD: the commit or audio run before it);
    an acknowledgement (``session.updated``, ``input_audio_buffer.committed``…) to the oldest client event of
    its kind not yet acknowledged; a client item's ``conversation.item.*`` to its ``conversation.item.create``;
    an ``error`` to the client event its ``error.event_id`` names. A ``response.cancel`` sent while a response
    was in progress (the one its ``response_id`` names, else the latest one not done) takes over that response:
    its events after the cancel (the rest of its output, ``response.done`` with status ``cancelled``) are what
    the cancel caused. Anything else, or anything unknown, belongs to the latest client event before it.
    """

    def __init__(self) -> None:
        self.latest: int | None = None
        self.audio: int | None = None  # the latest commit or audio run (server VAD starts responses from it)
        self.waiting: dict[str, list[int]] = {}  # server ack type -> client steps not yet acknowledged
        self.events: dict[str, int] = {}  # client event_id -> step
        self.responses: dict[str, int] = {}  # response id -> step
        self.items: dict[str, int] = {}  # item id -> step
        self.response: int | None = None  # the step of the latest response started
        self.running: list[str] = []  # ids of the responses created and not done, oldest first
        self.cancels: dict[str, int] = {}  # response id -> the response.cancel step that took it over
        self.output: dict[str, str] = {}  # a response's output item id -> the response's id

    def client(self, index: int, kind: str, event: Mapping[str, Any] | None) -> None:
        """A client step (a run of audio appends is one, fed once)."""
        self.latest = index
        if kind in (AUDIO_APPEND, "input_audio_buffer.commit"):
            self.audio = index
        if kind == "response.cancel":
            named = _text(event.get("response_id")) if event is not None else ""
            target = named or (self.running[-1] if self.running else "")
            if target in self.running:
                _bind(self.cancels, target, index)
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
        """The step that caused this server event (None: the greeting, before any client event or not)."""
        if self.latest is None or event is None:
            return self.latest
        kind = event.get("type")
        if not isinstance(kind, str):
            return self.latest
        if kind in GREETING:
            return None
        if kind == "error":
            error = event.get("error")
            named = self.events.get(_text(error.get("event_id"))) if isinstance(error, Mapping) else None
            return self.latest if named is None else named
        if kind == "response.created":
            step = self._ack(kind, self.audio)
            self.response = step
            response = event.get("response")
            rid = _text(response.get("id")) if isinstance(response, Mapping) else ""
            if _bind(self.responses, rid, step) and len(self.running) < MAX_TRACKED:
                self.running.append(rid)
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
                return self.cancels.get(self.output.get(item_id, ""), self.items[item_id])
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
        for value in (item.get("id") if isinstance(item, Mapping) else None, event.get("item_id")):
            item_id = _text(value)
            if _bind(self.items, item_id, step) and rid and (item_id in self.output or len(self.output) < MAX_TRACKED):
                self.output[item_id] = rid
        if event.get("type") == "response.done" and rid in self.running:
            self.running.remove(rid)
        return self.cancels.get(rid, step)


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
