"""Replay's per-API trigger rules, registered in one place (as :mod:`rtproxy.protocols` registers its APIs).

Each API is one module (:mod:`.realtime`, :mod:`.live`, :mod:`.responses`) with the same names: ``API``;
``AUDIO_APPEND`` (the client event that streams input audio); ``AUDIO_STREAM`` (False: a run of appends is one
step, as Realtime's buffer is committed in turns; True: the input audio is a position on the session's timeline
that runs under the client's commands, as in a full-duplex Live session); ``TURN_ENDS`` (client events that end
a turn, for ``loose``); ``client_ids(event)`` (the values a client event carries that the client made itself, in
a fixed order, the first naming the event, so the recording's and this run's line up);
``error_event(number, message, client_event_id)`` (the API's own ``error`` event telling the client of a
mismatch); optionally ``compared(event, policy)`` (the part of a payload ``ordered`` and ``strict`` compare, for
an API whose ``ordered`` compares more than the type), ``new_causes()``, a :class:`Causality` telling which
recorded client event caused each server event (without it, the latest client event before it did), and
``GREETING_ANSWERS`` (client event types that may answer the greeting before the client's opening events: see
:mod:`rtproxy.replay.script`, ``ordered``). A new API is a module and one line in :data:`MODULES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..protocols import Api, classify_handshake
from . import live, realtime, responses


class TriggerRules(Protocol):
    """What every replay rules module defines (mypy checks each registered module against it)."""

    API: str
    AUDIO_APPEND: str
    AUDIO_STREAM: bool
    TURN_ENDS: frozenset[str]

    def client_ids(self, event: Mapping[str, Any] | None) -> list[Any]: ...
    def error_event(self, number: int, message: str, client_event_id: Any) -> dict[str, Any]: ...


class Causality(Protocol):
    """Which client step (its index in the script) caused a server event, fed the recording in order."""

    def client(self, index: int, kind: str, event: Mapping[str, Any] | None) -> None: ...
    def server(self, event: Mapping[str, Any] | None) -> int | None: ...


class Latest:
    """The fallback :class:`Causality`: a server event belongs to the latest client step before it."""

    def __init__(self) -> None:
        self.latest: int | None = None

    def client(self, index: int, kind: str, event: Mapping[str, Any] | None) -> None:
        self.latest = index

    def server(self, event: Mapping[str, Any] | None) -> int | None:
        return self.latest


def causes_for(rules: TriggerRules) -> Causality:
    """A fresh causality of an API's rules (:class:`Latest` for rules that define none)."""
    make = getattr(rules, "new_causes", None)
    return make() if callable(make) else Latest()


#: The APIs replay knows the rules of; any other (unknown) is played by Realtime's (a reply follows
#: the latest client event).
MODULES: tuple[TriggerRules, ...] = (realtime, live, responses)
_BY_API: dict[str, TriggerRules] = {m.API: m for m in MODULES}
DEFAULT: TriggerRules = realtime


def rules_for(session: Mapping[str, Any] | None) -> TriggerRules:
    """The rules of a recorded session: by its ``api`` field, else by its upgrade path."""
    session = session if isinstance(session, Mapping) else {}
    api = session.get("api")
    if not isinstance(api, str) or api not in _BY_API:
        path = session.get("path")
        api = classify_handshake(path).api.value if isinstance(path, str) else Api.UNKNOWN.value
    return _BY_API.get(api, DEFAULT)
