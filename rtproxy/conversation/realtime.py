"""Events into a conversation: the pure, incremental reducer every view shares.

Feed frames (or parsed events) in seq order, read the state at any time::

    conv = Conversation()
    for frame in store.frames(sid):
        conv.feed(frame)
    conv.items        # conversation order (previous_item_id), deleted items gone
    conv.responses    # status, usage, output items, trigger and latency
    conv.to_json()    # the `rtproxy show --json` model

Both dialects are understood, even mixed in one recording: event names go
through :func:`rtproxy.protocols.canonical_type` once per distinct type. The
rules (which event fills what, how user audio is cut from the client's own
``input_audio_buffer.append`` stream, what counts as a trigger) are in
``realtime-protocol.md``. The model's classes live in
:mod:`rtproxy.conversation.model`, item bookkeeping (order, merging, call links)
in :mod:`rtproxy.conversation.realtime_items`, the user's microphone stream in
:mod:`rtproxy.conversation.realtime_mic`; this module routes events to them. Bad input
never raises: it becomes an :class:`Anomaly`, a count in ``unknown_types``,
``non_json`` or ``binary_frames``. A field of the wrong shape is a
``malformed`` anomaly; an index or offset that would size something
(``content_index``, ``output_index``, ``audio_*_ms``, a ``content`` or
``output`` list) outside the bounds in :mod:`rtproxy.conversation.model`
(``MAX_PARTS``, ``MAX_OUTPUT_ITEMS``, ``MAX_AUDIO_MS``) is a ``bad_index``
anomaly and the content it carries is dropped: nothing is ever allocated
from a number on the wire.

Speed: one ``orjson.loads`` per frame, one dict lookup to find the handler,
text kept as lists of chunks and audio as the base64 strings it arrived in
(decoded only when :meth:`Part.pcm16` is called; with ``keep_audio=False``
not even kept, durations come from the base64 length).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ..protocols.formats import PCM16, AudioFormat, session_audio_formats
from ..protocols.realtime import canonical_type, dialect_from_event
from ..protocols.wire import CLIENT, Direction, Frame
from .model import (
    MAX_MESSAGE,
    RATES,
    Anomaly,
    ErrorInfo,
    Item,
    Part,
    Response,
    audio_ms_of,
    index_of,
    short,
    str_or_none,
)
from .realtime_items import ItemBook
from .realtime_mic import Microphone
from .realtime_responses import ResponseRules

__all__ = ["Conversation", "assemble", "Item", "Part", "Response", "ErrorInfo", "Anomaly"]

Event = dict[str, Any]
Handler = Callable[[float, Event, int], None]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

#: server events that need no state of their own (known, not counted as unknown)
_IGNORED_SERVER = frozenset(
    {
        "conversation.created",
        "rate_limits.updated",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "conversation.item.input_audio_transcription.segment",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.output_audio.done",
    }
)
_IGNORED_CLIENT = frozenset(
    {
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)


class Conversation(ResponseRules):
    """Incremental reducer: feed frames in seq order, read state at any time."""

    def __init__(self, *, keep_audio: bool = True, session: dict[str, Any] | None = None) -> None:
        self.keep_audio = keep_audio
        self.session = session
        self.configs: list[tuple[float, dict[str, Any]]] = []
        self.errors: list[ErrorInfo] = []
        self.anomalies: list[Anomaly] = []
        self.unknown_types: Counter[str] = Counter()
        self.dialect: str | None = None
        self.dialects: set[str] = set()
        self.events_fed = 0
        self.non_json = 0
        self.binary_frames = 0
        self.input_format: AudioFormat = PCM16
        self.output_format: AudioFormat = PCM16
        self._book = ItemBook(self._flag)
        self._items = self._book.items  # the same dicts, for the hot paths
        self._placed = self._book.placed
        self.deleted: dict[str, Item] = self._book.deleted
        self._mic = Microphone(keep_audio=keep_audio)
        self._responses: dict[str, Response] = {}
        self._response_order: list[Response] = []
        self._client_events: dict[str, tuple[int, str]] = {}  # event_id -> (seq, type)
        # triggers: queued response.create events, and the latest speech_stopped / commit
        self._creates: deque[tuple[str | None, int, float, AudioFormat | None]] = deque()
        self._turn_trigger: tuple[str, int, float] | None = None
        self._handlers: tuple[dict[str, Handler], dict[str, Handler]] = ({}, {})  # client, server, by raw type
        self._server_table: dict[str, Handler] = self._server_handlers()
        self._client_table: dict[str, Handler] = {
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "response.create": self._on_response_create,
            "session.update": self._on_session_update,
            "transcription_session.update": self._on_session_update,
        }

    def _server_handlers(self) -> dict[str, Handler]:
        return {
            "session.created": self._on_session,
            "session.updated": self._on_session,
            "transcription_session.updated": self._on_session,
            "conversation.item.created": self._on_item_added,
            "conversation.item.added": self._on_item_added,
            "conversation.item.done": self._on_item_done,
            "conversation.item.retrieved": self._on_item_done,
            "conversation.item.deleted": self._on_item_deleted,
            "conversation.item.truncated": self._on_item_truncated,
            "conversation.item.input_audio_transcription.delta": self._on_input_transcript_delta,
            "conversation.item.input_audio_transcription.completed": self._on_input_transcript_done,
            "conversation.item.input_audio_transcription.failed": self._on_input_transcript_failed,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "input_audio_buffer.committed": self._on_committed,
            "input_audio_buffer.cleared": self._noop,
            "response.created": self._on_response_created,
            "response.done": self._on_response_done,
            "response.output_item.added": self._on_output_item_added,
            "response.output_item.done": self._on_output_item_done,
            "response.content_part.added": self._on_content_part,
            "response.content_part.done": self._on_content_part,
            "response.output_text.delta": self._on_text_delta,
            "response.output_text.done": self._on_text_done,
            "response.output_audio_transcript.delta": self._on_transcript_delta,
            "response.output_audio_transcript.done": self._on_transcript_done,
            "response.output_audio.delta": self._on_audio_delta,
            "response.function_call_arguments.delta": self._on_args_delta,
            "response.function_call_arguments.done": self._on_args_done,
            "response.mcp_call_arguments.delta": self._on_args_delta,
            "response.mcp_call_arguments.done": self._on_args_done,
            "error": self._on_error,
        }

    # --- reading -------------------------------------------------------------------

    @property
    def items(self) -> list[Item]:
        """Items in conversation order (previous_item_id), deleted ones removed."""
        return self._book.in_order()

    def item(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    @property
    def responses(self) -> list[Response]:
        """Responses in order of response.created."""
        return list(self._response_order)

    def response(self, response_id: str) -> Response | None:
        return self._responses.get(response_id)

    def to_json(self) -> dict[str, Any]:
        """The model `rtproxy show --json` prints."""
        out: dict[str, Any] = {}
        if self.session is not None:
            s = self.session
            out["session"] = {k: s.get(k) for k in ("id", "model", "dialect", "status", "started_at", "label")}
            if out["session"].get("dialect") is None:
                out["session"]["dialect"] = self.dialect
        out["dialect"] = self.dialect
        out["items"] = [item.to_json() for item in self.items]
        out["responses"] = [r.to_json() for r in self._response_order]
        out["errors"] = [e.to_json() for e in self.errors]
        out["anomalies"] = [a.to_json() for a in self.anomalies]
        out["unknown_types"] = dict(self.unknown_types)
        out["events"] = self.events_fed
        return out

    def audio_tracks(self) -> tuple[list[tuple[float, Item]], list[tuple[float, Item]]]:
        """(user, assistant) items with audio, each with the session time it was heard."""
        user: list[tuple[float, Item]] = []
        assistant: list[tuple[float, Item]] = []
        for item in self.items:
            if item.t_start is None or item.audio_ms <= 0:
                continue
            (user if item.role == "user" else assistant).append((item.t_start, item))
        return user, assistant

    # --- feeding -------------------------------------------------------------------

    def feed(self, frame: Frame) -> None:
        """Take one frame of any kind; non-JSON and binary frames are only counted."""
        self.events_fed += 1
        data = frame.data
        if type(data) is not str:
            self.binary_frames += 1
            return
        try:
            event = _loads(data)
        except _JSONDecodeError:
            self.non_json += 1
            return
        if type(event) is not dict:
            self.non_json += 1
            return
        self._dispatch(frame.direction, frame.t, event, frame.seq)

    def feed_event(self, direction: Direction, t: float, event: dict[str, Any], seq: int = -1) -> None:
        """Take one already-parsed event."""
        self.events_fed += 1
        if not isinstance(event, dict):
            self.non_json += 1
            return
        self._dispatch(direction, t, event, seq)

    def _dispatch(self, direction: Direction, t: float, event: Event, seq: int) -> None:
        etype = event.get("type")
        client = direction is CLIENT or direction == "client"
        table = self._handlers[0 if client else 1]
        handler = table.get(etype) if type(etype) is str else None
        if handler is None:
            handler = self._resolve(client, etype, seq)
            if type(etype) is str:
                table[etype] = handler
        if client:
            eid = event.get("event_id")
            if type(eid) is str:
                self._client_events[eid] = (seq, etype if type(etype) is str else "")
        try:
            handler(t, event, seq)
        except Exception as e:  # noqa: BLE001 - bad input becomes an anomaly, never an exception
            self._flag(seq, "malformed", f"{short(etype)}: {type(e).__name__}: {short(str(e), 100)}")

    def _resolve(self, client: bool, etype: Any, seq: int) -> Handler:
        """The handler for a type seen for the first time (remembered by the caller)."""
        if type(etype) is not str:
            return self._unknown
        dialect = dialect_from_event(etype)
        if dialect is not None:
            self._saw_dialect(dialect.value)
        name = canonical_type(etype)
        if client:
            handler = self._client_table.get(name)
            return handler or (self._noop if name in _IGNORED_CLIENT else self._unknown)
        handler = self._server_table.get(name)
        return handler or (self._noop if name in _IGNORED_SERVER else self._unknown)

    def _saw_dialect(self, dialect: str) -> None:
        self.dialects.add(dialect)
        if self.dialect is None:
            self.dialect = dialect

    def _noop(self, t: float, ev: Event, seq: int) -> None:
        pass

    def _unknown(self, t: float, ev: Event, seq: int) -> None:
        etype = ev.get("type")
        name = etype if isinstance(etype, str) else "<no type>"
        if name not in self.unknown_types:
            self.anomalies.append(Anomaly(seq, "unknown_type", f"unknown event type {name!r}"))
        self.unknown_types[name] += 1

    def _flag(self, seq: int, kind: str, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        self.anomalies.append(Anomaly(seq, kind, message))

    def _malformed(self, seq: int, ev: Event, field: str) -> None:
        """An event field the reducer cannot use (missing, or of the wrong shape)."""
        self._flag(seq, "malformed", f"{short(ev.get('type'))}: unusable {field} {short(ev.get(field), 40)}")

    def _index(self, ev: Event, seq: int, key: str = "content_index") -> int | None:
        """The content index an event names (0 if absent); None, flagged, if unusable."""
        value = ev.get(key)
        index = index_of(value)
        if index is None:
            self._flag(seq, "bad_index", f"{short(ev.get('type'))}: {key} {short(value, 40)} unusable, content dropped")
        return index

    def _format_ok(self, fmt: AudioFormat | None, seq: int) -> AudioFormat | None:
        """An audio format from the wire, None (flagged) if its sample rate is out of range."""
        if fmt is not None and fmt.rate not in RATES:
            self._flag(seq, "bad_index", f"sample rate {short(fmt.rate)} out of range, format ignored")
            return None
        return fmt

    # --- session config --------------------------------------------------------------

    def _on_session(self, t: float, ev: Event, seq: int) -> None:
        session = ev.get("session")
        if not isinstance(session, dict):
            self._malformed(seq, ev, "session")
            return
        self.configs.append((t, session))
        dialect = dialect_from_event(ev.get("type", ""), ev)
        if dialect is not None:
            self._saw_dialect(dialect.value)
        inp, out = (self._format_ok(f, seq) for f in session_audio_formats(session, any_rate=True))
        if inp is not None:
            self.input_format = inp
        if out is not None:
            self.output_format = out

    def _on_session_update(self, t: float, ev: Event, seq: int) -> None:
        """The server reads the appends after a session.update in its input format: so do we."""
        session = ev.get("session")
        if not isinstance(session, dict):
            self._malformed(seq, ev, "session")
            return
        inp = self._format_ok(session_audio_formats(session, any_rate=True)[0], seq)
        if inp is not None:
            self.input_format = inp

    # --- items -------------------------------------------------------------------------

    def _on_item_added(self, t: float, ev: Event, seq: int) -> None:
        item = self._book.upsert(ev.get("item"), t, seq)
        if item is not None:
            self._book.place(item, ev)

    def _on_item_done(self, t: float, ev: Event, seq: int) -> None:
        item = self._book.upsert(ev.get("item"), t, seq)
        if item is not None:
            self._book.place_if_new(item, ev)

    def _on_item_deleted(self, t: float, ev: Event, seq: int) -> None:
        item_id = ev.get("item_id")
        if isinstance(item_id, str):
            self._book.delete(item_id)
        else:
            self._malformed(seq, ev, "item_id")

    def _on_item_truncated(self, t: float, ev: Event, seq: int) -> None:
        item_id = ev.get("item_id")
        if not isinstance(item_id, str):
            self._malformed(seq, ev, "item_id")
            return
        if item_id in self.deleted:
            return
        end_ms = audio_ms_of(ev.get("audio_end_ms"))
        if end_ms is None:
            end = short(ev.get("audio_end_ms"))
            self._flag(seq, "bad_index", f"truncation of {short(item_id)}: audio_end_ms {end} unusable, ignored")
            return
        index = self._index(ev, seq)
        if index is None:
            return
        item = self._book.touch(item_id, seq, t)
        part = item.part(index, "audio")
        part.truncated_ms = end_ms
        part.transcript = ""
        item.truncated_ms = end_ms

    # --- user transcripts ---------------------------------------------------------------

    def _on_input_transcript_delta(self, t: float, ev: Event, seq: int) -> None:
        item_id, delta = ev.get("item_id"), ev.get("delta")
        if not isinstance(item_id, str) or not isinstance(delta, str):
            self._malformed(seq, ev, "item_id" if not isinstance(item_id, str) else "delta")
            return
        index = self._index(ev, seq)
        if index is not None and item_id not in self.deleted:
            item = self._book.touch(item_id, seq, t)
            item.part(index, "input_audio")._transcript.append(delta)

    def _on_input_transcript_done(self, t: float, ev: Event, seq: int) -> None:
        item_id, final = ev.get("item_id"), ev.get("transcript")
        if not isinstance(item_id, str) or not isinstance(final, str):
            self._malformed(seq, ev, "item_id" if not isinstance(item_id, str) else "transcript")
            return
        index = self._index(ev, seq)
        if index is None or item_id in self.deleted:
            return
        part = self._book.touch(item_id, seq, t).part(index, "input_audio")
        current = part.transcript
        if current and current != final:
            self._flag(seq, "done_mismatch", f"item {item_id}: transcript differs from its deltas")
        part.transcript = final
        part.done = True

    def _on_input_transcript_failed(self, t: float, ev: Event, seq: int) -> None:
        err = ev.get("error")
        message = str_or_none(err.get("message")) if isinstance(err, dict) else None
        self._flag(seq, "transcription_failed", f"item {short(ev.get('item_id'))}: {message or 'transcription failed'}")

    # --- user audio: the client's microphone stream ------------------------------------

    def _on_append(self, t: float, ev: Event, seq: int) -> None:
        data = ev.get("audio")
        if type(data) is str:
            self._mic.append(t, data, self.input_format)
        else:
            self._malformed(seq, ev, "audio")

    def _on_commit(self, t: float, ev: Event, seq: int) -> None:
        self._mic.commit(str_or_none(ev.get("event_id")))
        self._turn_trigger = ("input_audio_buffer.commit", seq, t)

    def _on_clear(self, t: float, ev: Event, seq: int) -> None:
        self._mic.clear()

    def _on_speech_started(self, t: float, ev: Event, seq: int) -> None:
        item_id = ev.get("item_id")
        if isinstance(item_id, str):
            self._mic.speech_started(item_id, self._offset(ev, seq, "audio_start_ms"))
        else:
            self._malformed(seq, ev, "item_id")

    def _on_speech_stopped(self, t: float, ev: Event, seq: int) -> None:
        item_id = ev.get("item_id")
        if isinstance(item_id, str):
            self._mic.speech_stopped(item_id, self._offset(ev, seq, "audio_end_ms"))
        else:
            self._malformed(seq, ev, "item_id")
        self._turn_trigger = ("input_audio_buffer.speech_stopped", seq, t)

    def _offset(self, ev: Event, seq: int, key: str) -> float | None:
        """An audio offset (ms) an event gives; None if absent, None and flagged if unusable."""
        value = ev.get(key)
        ms = audio_ms_of(value)
        if ms is None and value is not None:
            self._flag(seq, "bad_index", f"{short(ev.get('type'))}: {key} {short(value, 40)} unusable, ignored")
        return ms

    def _on_committed(self, t: float, ev: Event, seq: int) -> None:
        item_id = str_or_none(ev.get("item_id"))
        if item_id is None:
            self._malformed(seq, ev, "item_id")
        start, end = self._mic.committed(item_id)
        if item_id is not None and item_id not in self.deleted:
            item = self._book.touch(item_id, seq, t)
            item.role = item.role or "user"
            self._mic.attach(item, start, end, self.input_format)
            self._book.place_if_new(item, ev)

    # --- errors --------------------------------------------------------------------------

    def _on_error(self, t: float, ev: Event, seq: int) -> None:
        err = ev.get("error")
        if not isinstance(err, dict):
            self._malformed(seq, ev, "error")
            err = {}
        eid = str_or_none(err.get("event_id"))
        field = [str_or_none(err.get(k)) for k in ("type", "code", "message", "param")]
        info = ErrorInfo(seq, t, field[0], field[1], field[2], field[3], eid)
        if eid is not None and eid in self._client_events:
            info.client_seq, info.client_type = self._client_events[eid]
            self._forget_refused(eid)
        self.errors.append(info)

    def _forget_refused(self, event_id: str) -> None:
        """A refused response.create or commit must not be taken as a later trigger or buffer."""
        for entry in list(self._creates):
            if entry[0] == event_id:
                self._creates.remove(entry)
        self._mic.refused(event_id)


def assemble(
    frames: Iterable[Frame], *, keep_audio: bool = True, session: dict[str, Any] | None = None
) -> Conversation:
    """A conversation from a whole recording (a loop over :meth:`Conversation.feed`)."""
    conv = Conversation(keep_audio=keep_audio, session=session)
    feed = conv.feed
    for frame in frames:
        feed(frame)
    return conv
