"""How responses fill the conversation: triggers, lifecycle, deltas and their .done values.

A mixin of :class:`rtproxy.conversation.realtime.Conversation` (kept apart only for
size): ``response.create`` / ``.created`` / ``.done``, output items and
content parts, and the hot path, the text, transcript, audio and
function-call-argument deltas with their ``.done`` reconciliation (the done
value wins; a difference is an anomaly). Latency is measured from the
response's trigger: the client's ``response.create`` (first in, first
served), else the latest ``input_audio_buffer.commit`` or ``speech_stopped``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..protocols.formats import AudioFormat, audio_format
from .model import (
    MAX_OUTPUT_ITEMS,
    MAX_PARTS,
    Item,
    Part,
    Response,
    b64_size,
    clip,
    index_of,
    short,
    str_or_none,
    too_deep,
)
from .realtime_items import ItemBook

Event = dict[str, Any]


def _response_format(response: dict[str, Any]) -> AudioFormat | None:
    """The output audio format a response object names (beta string or GA object), if any."""
    fmt = audio_format(response.get("output_audio_format"))
    a = response.get("audio")
    if fmt is None and isinstance(a, dict) and isinstance(a.get("output"), dict):
        fmt = audio_format(a["output"].get("format"))
    return fmt


class ResponseRules:
    """Response and delta handlers; the state they use is set up by Conversation."""

    keep_audio: bool
    output_format: AudioFormat
    _book: ItemBook
    _items: dict[str, Item]
    deleted: dict[str, Item]
    _responses: dict[str, Response]
    _response_order: list[Response]
    _creates: deque[tuple[str | None, int, float, AudioFormat | None]]
    _turn_trigger: tuple[str, int, float] | None
    _flag: Callable[[int, str, str], None]
    _malformed: Callable[[int, Event, str], None]
    _index: Callable[..., int | None]
    _format_ok: Callable[[AudioFormat | None, int], AudioFormat | None]

    def _response_of(self, ev: Event, seq: int) -> tuple[str, dict[str, Any]] | None:
        """(id, object) of the response a response.created/.done carries; None, flagged, if unusable."""
        data = ev.get("response")
        rid = data.get("id") if isinstance(data, dict) else None
        if not isinstance(rid, str) or not isinstance(data, dict):
            self._malformed(seq, ev, "response")
            return None
        return rid, data

    def _kept(self, value: Any, seq: int, what: str, old: dict[str, Any] | None) -> dict[str, Any] | None:
        """An object the model keeps as it came (status_details, usage): cut if too deep; else the old one."""
        if value is None:
            return old
        if not isinstance(value, dict):
            self._flag(seq, "malformed", f"response {what} is not an object: {short(value, 40)}")
            return old
        if too_deep(value):
            self._flag(seq, "malformed", f"response {what} nests too deep, cut")
        kept: dict[str, Any] = clip(value)
        return kept

    def _on_response_create(self, t: float, ev: Event, seq: int) -> None:
        resp = ev.get("response")
        if resp is not None and not isinstance(resp, dict):
            self._malformed(seq, ev, "response")
        override = self._format_ok(_response_format(resp), seq) if isinstance(resp, dict) else None
        self._creates.append((str_or_none(ev.get("event_id")), seq, t, override))

    def _on_response_created(self, t: float, ev: Event, seq: int) -> None:
        found = self._response_of(ev, seq)
        if found is None:
            return
        rid, data = found
        r = self._responses.get(rid)
        if r is None:
            r = self._responses[rid] = Response(rid)
            self._response_order.append(r)
        r.t_created, r.created_seq = t, seq
        r.status = str_or_none(data.get("status")) or r.status
        override: AudioFormat | None = None
        if self._creates:
            _, tseq, tt, override = self._creates.popleft()
            r.trigger_type, r.trigger_seq, r.t_trigger = "response.create", tseq, tt
            if self._turn_trigger is not None and self._turn_trigger[1] < tseq:
                self._turn_trigger = None
        elif self._turn_trigger is not None:
            r.trigger_type, r.trigger_seq, r.t_trigger = self._turn_trigger
            self._turn_trigger = None
        r.audio_format = override or self._format_ok(_response_format(data), seq) or self.output_format

    def _on_response_done(self, t: float, ev: Event, seq: int) -> None:
        found = self._response_of(ev, seq)
        if found is None:
            return
        rid, data = found
        r = self._responses.get(rid)
        if r is None:  # created was not recorded
            r = self._responses[rid] = Response(rid, audio_format=self.output_format)
            self._response_order.append(r)
        r.t_done, r.done_seq = t, seq
        r.status = str_or_none(data.get("status")) or r.status
        r.status_details = self._kept(data.get("status_details"), seq, "status_details", r.status_details)
        r.usage = self._kept(data.get("usage"), seq, "usage", r.usage)
        output = data.get("output")
        if isinstance(output, list):
            if len(output) > MAX_OUTPUT_ITEMS:
                self._flag(seq, "bad_index", f"response {short(rid)}: {len(output)} outputs, {MAX_OUTPUT_ITEMS} kept")
            for obj in output[:MAX_OUTPUT_ITEMS]:
                item = self._book.upsert(obj, t, seq)
                if item is None:
                    continue
                item.response_id = item.response_id or rid
                self._add_output(r, item.id, seq)
                self._book.place_if_new(item, {})
        elif output is not None:
            self._malformed(seq, data, "output")

    def _add_output(self, r: Response, item_id: str, seq: int) -> None:
        """List an item as an output of a response (at most MAX_OUTPUT_ITEMS of them)."""
        ids = r.output_item_ids
        if item_id in ids:
            return
        if len(ids) >= MAX_OUTPUT_ITEMS:
            self._flag(seq, "bad_index", f"response {short(r.id)}: more than {MAX_OUTPUT_ITEMS} output items")
            return
        ids.append(item_id)

    def _output_index_ok(self, ev: Event, seq: int) -> bool:
        """Whether an event's output_index (if any) is usable; an unusable one is flagged."""
        value = ev.get("output_index")
        if index_of(value, MAX_OUTPUT_ITEMS) is None:
            self._flag(seq, "bad_index", f"{short(ev.get('type'))}: output_index {short(value, 40)} unusable")
            return False
        return True

    def _on_output_item_added(self, t: float, ev: Event, seq: int) -> None:
        self._output_index_ok(ev, seq)
        item = self._book.upsert(ev.get("item"), t, seq)
        if item is None:
            return
        rid = ev.get("response_id")
        if isinstance(rid, str):
            item.response_id = rid
            r = self._responses.get(rid)
            if r is not None:
                self._add_output(r, item.id, seq)
        if item.role is None and item.type == "message":
            item.role = "assistant"
        self._book.place_if_new(item, {})

    def _on_output_item_done(self, t: float, ev: Event, seq: int) -> None:
        self._output_index_ok(ev, seq)
        item = self._book.upsert(ev.get("item"), t, seq)
        if item is not None:
            self._book.place_if_new(item, {})

    def _on_content_part(self, t: float, ev: Event, seq: int) -> None:
        part_data = ev.get("part")
        if not isinstance(part_data, dict):
            self._malformed(seq, ev, "part")
            return
        index = self._content_index(ev, seq)
        item = self._delta_item(ev, seq, t) if index is not None else None
        if item is not None and index is not None:
            self._book.merge_part(item, index, part_data, seq)

    def _delta_item(self, ev: Event, seq: int, t: float) -> Item | None:
        """The item a response event is about; an unknown one is created, placed and flagged."""
        item_id = ev.get("item_id")
        if type(item_id) is not str:
            self._malformed(seq, ev, "item_id")
            return None
        item = self._items.get(item_id)
        if item is not None:
            item.last_seq = seq
            return item
        if item_id in self.deleted:
            return None
        self._flag(seq, "unknown_item", f"{ev.get('type')} for unknown item {item_id}")
        item = self._book.touch(item_id, seq, t)
        item.role = "assistant"
        rid = ev.get("response_id")
        item.response_id = rid if isinstance(rid, str) else None
        self._book.place(item, {})
        return item

    def _delta_part(self, ev: Event, seq: int, t: float, kind: str) -> Part | None:
        index = self._content_index(ev, seq)
        if index is None:
            return None
        item = self._delta_item(ev, seq, t)
        if item is None:
            return None
        self._first_delta(ev, t)
        return _part(item, index, kind)

    def _first_delta(self, ev: Event, t: float) -> Response | None:
        """The response a delta belongs to, its first-delta time noted."""
        rid = ev.get("response_id")
        r = self._responses.get(rid) if type(rid) is str else None
        if r is not None and r.t_first_delta is None:
            r.t_first_delta = t
        return r

    def _on_text_delta(self, t: float, ev: Event, seq: int) -> None:
        delta = ev.get("delta")
        if type(delta) is str:
            part = self._delta_part(ev, seq, t, "text")
            if part is not None:
                part._text.append(delta)
        else:
            self._malformed(seq, ev, "delta")

    def _on_transcript_delta(self, t: float, ev: Event, seq: int) -> None:
        delta = ev.get("delta")
        if type(delta) is str:
            part = self._delta_part(ev, seq, t, "audio")
            if part is not None and part.truncated_ms is None:
                part._transcript.append(delta)
        else:
            self._malformed(seq, ev, "delta")

    def _on_text_done(self, t: float, ev: Event, seq: int) -> None:
        self._reconcile(ev, seq, t, "text")

    def _on_transcript_done(self, t: float, ev: Event, seq: int) -> None:
        self._reconcile(ev, seq, t, "transcript")

    def _reconcile(self, ev: Event, seq: int, t: float, attr: str) -> None:
        """A .done event's final value wins over the concatenated deltas; a difference is flagged."""
        final = ev.get(attr)
        if not isinstance(final, str):
            self._malformed(seq, ev, attr)
            return
        index = self._content_index(ev, seq)
        item = self._delta_item(ev, seq, t) if index is not None else None
        if item is None or index is None:
            return
        part = _part(item, index, "text" if attr == "text" else "audio")
        part.done = True
        if attr == "transcript" and part.truncated_ms is not None:
            return
        if getattr(part, attr) != final:
            self._flag(seq, "done_mismatch", f"item {item.id} part {part.index}: {attr} differs from its deltas")
            setattr(part, attr, final)

    def _on_audio_delta(self, t: float, ev: Event, seq: int) -> None:
        delta = ev.get("delta")
        if type(delta) is not str:
            self._malformed(seq, ev, "delta")
            return
        index = self._content_index(ev, seq)
        if index is None:
            return
        item = self._delta_item(ev, seq, t)
        if item is None:
            return
        part = _part(item, index, "audio")
        n = b64_size(delta)
        r = self._first_delta(ev, t)
        if r is not None:
            if r.t_first_audio is None:
                r.t_first_audio = t
            r._audio_bytes += n
            fmt = r.audio_format or self.output_format
        else:
            fmt = self.output_format
        if part.audio_format is None:
            part.audio_format = fmt
        part._nbytes += n
        if self.keep_audio:
            part._chunks.append(delta)
        if not item._audio_placed:
            item._audio_placed = True
            item.t_start = t

    def _on_args_delta(self, t: float, ev: Event, seq: int) -> None:
        delta = ev.get("delta")
        if type(delta) is not str:
            self._malformed(seq, ev, "delta")
            return
        item = self._delta_item(ev, seq, t)
        if item is None:
            return
        self._first_delta(ev, t)
        if item._args is None:
            item._args = [delta]
        else:
            item._args.append(delta)

    def _on_args_done(self, t: float, ev: Event, seq: int) -> None:
        item = self._delta_item(ev, seq, t)
        final = ev.get("arguments")
        if not isinstance(final, str):
            self._malformed(seq, ev, "arguments")
            return
        if item is None:
            return
        name = ev.get("name")
        if isinstance(name, str):
            item.name = name
        if (item.arguments or "") != final:
            self._flag(seq, "done_mismatch", f"item {item.id}: arguments differ from their deltas")
        item.arguments = final

    def _content_index(self, ev: Event, seq: int) -> int | None:
        """The content_index of a delta (0 if absent): checked before anything is looked up or made."""
        ci = ev.get("content_index", 0)
        if type(ci) is int and 0 <= ci < MAX_PARTS:
            return ci
        return self._index(ev, seq)


def _part(item: Item, index: int, kind: str) -> Part:
    """The content part at a checked index (made, with those before it, if new)."""
    parts = item.parts
    return parts[index] if index < len(parts) else item.part(index, kind)
