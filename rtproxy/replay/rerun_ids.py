"""Ids and function calls the server made, as a rerun follows them (pure, no I/O).

A server-made id that a later client event names (an item, a call, a response, a GPT-Live delegation) is mapped
by kind and order (:class:`IdLedger`): the recording's third assistant message is this run's third assistant
message. :func:`function_calls` finds the calls a server event shows whole; :func:`outputs_of` the outputs a
client event returns. Every walk is bounded (``MAX_DEPTH``, ``MAX_IDS``, ``MAX_CALLS``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..conversation.model import MAX_DEPTH
from . import rerun_live as live

#: Server events that show a function call whole (name and all its arguments).
CALL_EVENTS = frozenset({"response.output_item.done", "response.done", "response.completed"})
#: Keys whose string values may name an object the server made.
REF_KEYS = frozenset(
    {"id", "item_id", "previous_item_id", "call_id", "response_id", "previous_response_id", "delegation_id"}
)
#: Ids remembered per kind, and function calls per session; past these a session teaches nothing more.
MAX_IDS = 10_000
MAX_CALLS = 1_000


@dataclass(frozen=True, slots=True)
class Call:
    """A function call a model made: its name and arguments (JSON text as sent)."""

    call_id: str
    name: str
    arguments: str

    def same_as(self, other: Call) -> bool:
        """The same function with JSON-equal arguments (text compared if either is not JSON)."""
        return self.name == other.name and json_or_text(self.arguments) == json_or_text(other.arguments)

    def shown(self) -> str:
        args = self.arguments if len(self.arguments) <= 120 else self.arguments[:119] + "…"
        return f"{self.name}({args})"


class IdLedger:
    """Server-made ids in order of first appearance, by kind (``response``, ``call``, ``item:TYPE:ROLE``).

    Ids first seen in a client event are the client's own and are never mapped. Fed both directions in order.
    """

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = {}
        self.where: dict[str, tuple[str, int]] = {}
        self.client_made: set[str] = set()

    def _add(self, kind: str, value: Any) -> None:
        if not isinstance(value, str) or not value or value in self.where or value in self.client_made:
            return
        ids = self.by_kind.setdefault(kind, [])
        if len(ids) >= MAX_IDS or len(self.by_kind) > 64:
            return
        self.where[value] = (kind, len(ids))
        ids.append(value)

    def feed_client(self, event: Mapping[str, Any]) -> None:
        for value in ref_values(event):
            if value not in self.where and len(self.client_made) < MAX_IDS:
                self.client_made.add(value)

    def feed_server(self, event: Mapping[str, Any]) -> None:
        delegation = live.delegation_of(event)
        if delegation is not None:
            self._add(f"delegation:{delegation[1]}", delegation[0])
        event = live.nested(event) or event  # a Live delegation's backend event: its ids are the backend's
        kind = event.get("type")
        response = event.get("response")
        if kind == "response.created" and isinstance(response, Mapping):
            self._add("response", response.get("id"))
        for item in _items_of(event):
            self._add(_item_kind(item), item.get("id"))
            if item.get("type") in ("function_call", "function_call_output") and "call_id" in item:
                self._add("call", item.get("call_id"))
        if kind == "input_audio_buffer.committed":
            self._add("item:message:user", event.get("item_id"))

    def forget(self, value: str) -> None:
        """Drop an id (a call the recording never made): the ones after it move up."""
        where = self.where.pop(value, None)
        if where is None:
            return
        ids = self.by_kind[where[0]]
        ids.remove(value)
        for i, v in enumerate(ids[where[1] :], start=where[1]):
            self.where[v] = (where[0], i)

    def counterpart(self, recorded_id: str, other: IdLedger) -> str | None:
        """The id `other` (this run's ledger) has where this one (the recording's) has `recorded_id`."""
        where = self.where.get(recorded_id)
        if where is None:
            return None
        ids = other.by_kind.get(where[0], [])
        return ids[where[1]] if where[1] < len(ids) else None

    def describe(self, recorded_id: str) -> str:
        kind, n = self.where.get(recorded_id, ("object", 0))
        nth = _ordinal(n + 1)
        if kind.startswith("item:"):
            _, itype, role = kind.split(":", 2)
            return f"the {nth} {role + ' ' if role != '-' else ''}{itype} item"
        if kind.startswith("delegation:"):
            return f"the {nth} {kind.partition(':')[2]} delegation"
        return f"the {nth} {kind}"


def _item_kind(item: Mapping[str, Any]) -> str:
    itype, role = item.get("type"), item.get("role")
    return f"item:{itype if isinstance(itype, str) else '-'}:{role if isinstance(role, str) else '-'}"


def _items_of(event: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    item = event.get("item")
    if isinstance(item, Mapping):
        yield item
    response = event.get("response")
    output = response.get("output") if isinstance(response, Mapping) else None
    if isinstance(output, list):
        for it in output[:MAX_CALLS]:
            if isinstance(it, Mapping):
                yield it


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _walk(value: Any) -> Iterable[tuple[str, Any, dict[str, Any]]]:
    """(key, value, the dict holding it) for every key of every dict in a JSON value, to MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue
        if isinstance(node, dict):
            for k, v in node.items():
                yield k, v, node
                if isinstance(v, dict | list):
                    stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def ref_values(event: Mapping[str, Any]) -> list[str]:
    return [v for k, v, _ in _walk(event) if k in REF_KEYS and isinstance(v, str) and v]


def rewrite_ids(event: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a client event with the recorded server ids it names replaced by this run's."""
    out = copy.deepcopy(event)
    for k, v, holder in list(_walk(out)):
        if k in REF_KEYS and isinstance(v, str) and v in mapping:
            holder[k] = mapping[v]
    return out


def json_or_text(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def function_calls(event: Mapping[str, Any]) -> Iterable[Call]:
    """Function calls a server event shows complete (an output item done, or a finished response's output; in
    GPT-Live, those of a delegation's backend)."""
    event = live.nested(event) or event
    if event.get("type") not in CALL_EVENTS:
        return
    for item in _items_of(event):
        if item.get("type") != "function_call":
            continue
        call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
        if isinstance(call_id, str) and isinstance(name, str) and isinstance(args, str):
            yield Call(call_id, name, args)


def outputs_of(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The function_call_output items a client event carries (Realtime's item, Responses' input list)."""
    return [
        holder
        for k, v, holder in _walk(event)
        if k == "type" and v == "function_call_output" and isinstance(holder.get("call_id"), str)
    ]
