"""The conversation's items: identity, order, content merging, function-call links.

Items are announced (``conversation.item.created/added/done``,
``response.output_item.added/done``, ``response.done``), grow through deltas
and are removed. :class:`ItemBook` keeps them by id, keeps the conversation
order given by ``previous_item_id``, merges announced content into what the
deltas built (the announced final value wins; a difference is flagged), and
links each ``function_call`` to the ``function_call_output`` answering it.
Pure, no I/O; owned by :class:`rtproxy.conversation.realtime.Conversation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .model import MAX_PARTS, Item, short

__all__ = ["ItemBook"]

Flag = Callable[[int, str, str], None]  # (seq, kind, message)
_KNOWN_TYPES = ("message", "function_call", "function_call_output")


class ItemBook:
    """Items by id and in conversation order; deleted ones set aside."""

    def __init__(self, flag: Flag) -> None:
        self.flag = flag
        self.items: dict[str, Item] = {}
        self.order: list[str] = []
        self.placed: set[str] = set()
        self.deleted: dict[str, Item] = {}
        self._calls: dict[str, Item] = {}  # call_id -> function_call item
        self._outputs: dict[str, str | None] = {}  # call_id -> output of the function_call_output

    def in_order(self) -> list[Item]:
        items = self.items
        return [items[i] for i in self.order]

    def touch(self, item_id: str, seq: int, t: float) -> Item:
        """The item with this id, created (not yet in the order) if never seen."""
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = Item(item_id, first_seq=seq, last_seq=seq, t_start=t)
        elif seq > item.last_seq:
            item.last_seq = seq
        return item

    def place(self, item: Item, ev: dict[str, Any]) -> None:
        """Put an item in order after the event's previous_item_id (root/null: first; absent: last)."""
        order, placed = self.order, self.placed
        has_prev = "previous_item_id" in ev
        prev = ev.get("previous_item_id") if has_prev else None
        if prev is not None and not isinstance(prev, str):
            self.flag(item.last_seq, "malformed", f"item {short(item.id)}: previous_item_id {short(prev, 40)}")
            has_prev, prev = False, None
        if has_prev:
            item.previous_item_id = prev
        if item.id in placed:  # moved only behind a known item: a late null must not reorder what is placed
            if prev is None or prev == item.id or prev not in placed:
                return
            i = order.index(item.id)
            if i > 0 and order[i - 1] == prev:
                return
            order.pop(i)
        else:
            placed.add(item.id)
        if has_prev and prev in (None, "root"):
            order.insert(0, item.id)
        elif not has_prev or prev not in placed or (order and order[-1] == prev):
            order.append(item.id)
        else:
            order.insert(order.index(prev) + 1, item.id)

    def place_if_new(self, item: Item, ev: dict[str, Any]) -> None:
        if item.id not in self.placed:
            self.place(item, ev)

    def delete(self, item_id: str) -> None:
        item = self.items.pop(item_id, None)
        if item is None:
            return
        self.deleted[item_id] = item
        if item_id in self.placed:
            self.placed.discard(item_id)
            self.order.remove(item_id)

    def upsert(self, data: Any, t: float, seq: int) -> Item | None:
        """Merge an announced item object into the model; None if it is not one."""
        if not isinstance(data, dict):
            self.flag(seq, "malformed", f"an item that is not an object: {short(data, 40)}")
            return None
        item_id = data.get("id")
        if not isinstance(item_id, str):
            self.flag(seq, "malformed", f"an item without a string id: {short(item_id, 40)}")
            return None
        if item_id in self.deleted:
            return None
        item = self.touch(item_id, seq, t)
        item.data = data
        kind = data.get("type")
        if isinstance(kind, str):
            item.type = kind
        for key in ("role", "status", "name"):
            value = data.get(key)
            if isinstance(value, str):
                setattr(item, key, value)
        content = data.get("content")
        if isinstance(content, list):
            if len(content) > MAX_PARTS:
                self.flag(seq, "bad_index", f"item {short(item_id)}: {len(content)} parts, {MAX_PARTS} kept")
            for i, c in enumerate(content[:MAX_PARTS]):
                if isinstance(c, dict):
                    self.merge_part(item, i, c, seq)
        elif content is not None:
            self.flag(seq, "malformed", f"item {short(item_id)}: content is not a list: {short(content, 40)}")
        args = data.get("arguments")
        if isinstance(args, str):
            current = item.arguments
            if current and args and args != current:
                self.flag(seq, "done_mismatch", f"item {item_id}: arguments differ from their deltas")
            if args or current is None:
                item.arguments = args
        self._link(item, data)
        return item

    def _link(self, item: Item, data: dict[str, Any]) -> None:
        """Tie a function call and its output together by call_id, whichever comes first."""
        call_id = data.get("call_id")
        out = data.get("output")
        if not isinstance(call_id, str):
            if item.type not in _KNOWN_TYPES and isinstance(out, str):
                item.output = out  # e.g. mcp_call
            return
        item.call_id = call_id
        if item.type == "function_call_output":
            item.output = out if isinstance(out, str) else item.output
            self._outputs[call_id] = item.output
            call = self._calls.get(call_id)
            if call is not None:
                call.output = item.output
        elif item.type == "function_call":
            self._calls[call_id] = item
            if call_id in self._outputs:
                item.output = self._outputs[call_id]
        elif isinstance(out, str):
            item.output = out

    def merge_part(self, item: Item, index: int, c: dict[str, Any], seq: int) -> None:
        """Announced content for part ``index``: fills what is empty, wins (flagged) where it differs."""
        kind = c.get("type")
        part = item.part(index, kind if isinstance(kind, str) else "text")
        if isinstance(kind, str):
            part.type = kind
        for attr in ("text", "transcript"):
            value = c.get(attr)
            if not isinstance(value, str) or not value:
                continue
            if attr == "transcript" and part.truncated_ms is not None:
                continue  # a truncated part's transcript stays dropped
            current = getattr(part, attr)
            if current != value:
                if current:
                    self.flag(seq, "done_mismatch", f"item {item.id} part {index}: final {attr} differs")
                setattr(part, attr, value)
