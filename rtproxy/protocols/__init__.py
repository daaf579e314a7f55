"""What rtproxy knows of each WebSocket API it records, and how a session is told apart (pure: no I/O).

Each API is one module in :data:`MODULES` (as mitmproxy's contentviews are): its upgrade paths, its event
catalogue (client and server), its detection rules, where it carries the model, and where its secrets and ids
are. This package turns what a module says (plain strings and mappings) into :class:`Kind` values, and guards
every input: anything from the wire that is not what it should be teaches nothing, and never raises.

A new API is a new module with the same names (``API``, ``PATHS``, ``CLIENT_EVENTS``, ``SERVER_EVENTS``,
``handshake_variant``, ``refine_variant``, ``claims``, ``settled``, ``model_from_event``, ``model_from_query``,
``SESSION_ID_EVENTS``, ``api_session_id_from_path``, ``api_session_id_from_event``)
plus one line in :data:`MODULES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from re import Pattern
from typing import Any, Protocol

from . import live, realtime, responses


class ApiModule(Protocol):
    """What every API module defines (mypy checks each registered module against it)."""

    API: str
    PATHS: tuple[tuple[Pattern[str], str | None], ...]
    CLIENT_EVENTS: frozenset[str]
    SERVER_EVENTS: frozenset[str]
    SESSION_ID_EVENTS: frozenset[str]

    def handshake_variant(
        self, variant: str | None, query: str, headers: Mapping[str, str], subprotocols: Sequence[str]
    ) -> str | None: ...
    def refine_variant(
        self, variant: str | None, direction: str, event_type: str, event: Mapping[str, Any] | None
    ) -> str | None: ...
    def claims(self, direction: str, event_type: str, event: Mapping[str, Any] | None) -> bool: ...
    def settled(self, variant: str | None) -> bool: ...
    def model_from_event(self, direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None: ...
    def model_from_query(self, query: str) -> str | None: ...
    def api_session_id_from_path(self, path: str) -> str | None: ...
    def api_session_id_from_event(
        self, direction: str, event_type: str, event: Mapping[str, Any] | None
    ) -> str | None: ...


#: The API modules, in the order their paths are tried; one line per API.
MODULES: tuple[ApiModule, ...] = (realtime, live, responses)


class Api(str, Enum):
    REALTIME = "realtime"
    LIVE = "live"
    RESPONSES = "responses"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Kind:
    """Which API a session speaks and, within it, the variant.

    Realtime: ``"beta"``, ``"ga"`` or None (not known yet); Live: ``"primary"``, ``"sideband"`` or ``"fork"``
    (None only when guessed from events on an unknown path and not known yet); Responses: None, or ``"beta"`` once
    the multi-agent beta's own events (``response.inject``) show.
    """

    api: Api
    variant: str | None = None


UNKNOWN = Kind(Api.UNKNOWN, None)
_BY_API: dict[Api, ApiModule] = {Api(m.API): m for m in MODULES}
_MAX_PATH = 8192
_MAX_ID = 256

#: Event types only one API defines: seeing one on an unknown path names the API.
_OWN: dict[Api, frozenset[str]] = {
    api: frozenset(
        (m.CLIENT_EVENTS | m.SERVER_EVENTS).difference(
            *(o.CLIENT_EVENTS | o.SERVER_EVENTS for o in MODULES if o is not m)
        )
    )
    for api, m in _BY_API.items()
}


def _split_target(path: Any, query: Any) -> tuple[str, str]:
    """(path without trailing slashes, query) from a path that may carry its own query or be junk."""
    if not isinstance(path, str) or len(path) > _MAX_PATH:
        return "", query if isinstance(query, str) else ""
    path, _, own_query = path.partition("?")
    path = path.partition("#")[0]
    q = query if isinstance(query, str) and query else own_query
    return "/" + path.strip("/"), q.lstrip("?")


def classify_handshake(
    path: str, query: str = "", headers: Mapping[str, str] | None = None, subprotocols: Sequence[str] = ()
) -> Kind:
    """The API and variant an upgrade request names (path with any prefix: ``/v1``, Azure's ``/openai``…)."""
    clean, q = _split_target(path, query)
    hdrs: dict[str, str] = {}
    if isinstance(headers, Mapping):
        try:
            hdrs = {str(k): str(v) for k, v in headers.items()}
        except Exception:  # a hostile mapping: its headers teach nothing
            hdrs = {}
    protos: list[str] = []
    if isinstance(subprotocols, (list, tuple)):
        protos = [p for p in subprotocols if isinstance(p, str)]
    for module in MODULES:
        for pattern, variant in module.PATHS:
            if pattern.fullmatch(clean):
                return Kind(Api(module.API), module.handshake_variant(variant, q, hdrs, protos))
    return UNKNOWN


def _clean(direction: Any, event_type: Any, event: Any) -> tuple[str, str, Mapping[str, Any] | None] | None:
    if direction not in ("client", "server"):
        return None
    if not isinstance(event_type, str):
        event_type = event.get("type") if isinstance(event, Mapping) else None
        if not isinstance(event_type, str):
            return None
    return str(direction), event_type, event if isinstance(event, Mapping) else None


def refine(kind: Kind, direction: str, event_type: str | None, event: Mapping[str, Any] | None) -> Kind | None:
    """What one frame confirms or corrects about a session's kind; None when it teaches nothing new.

    On a known API the module refines the variant (Realtime's dialect from event names and shapes, Live's
    variant on an unknown path, the Responses beta). On an unknown path an event only one API defines, or a
    shared name in a shape only one API uses, makes the session that API.
    """
    if not isinstance(kind, Kind):
        return None
    cleaned = _clean(direction, event_type, event)
    if cleaned is None:
        return None
    d, etype, ev = cleaned
    try:
        module = _BY_API.get(kind.api)
        if module is not None:
            variant = module.refine_variant(kind.variant, d, etype, ev)
            return Kind(kind.api, variant) if variant is not None and variant != kind.variant else None
        for api, own in _OWN.items():
            m = _BY_API[api]
            if etype in own or m.claims(d, etype, ev):
                return Kind(api, m.refine_variant(None, d, etype, ev))
    except Exception:  # the rules are written not to raise; a hostile mapping still must not break a session
        return None
    return None


def settled(kind: Kind) -> bool:
    """Is there nothing more to learn about this session's kind (so callers can stop looking at frames)?"""
    module = _BY_API.get(kind.api) if isinstance(kind, Kind) else None
    return module is not None and bool(module.settled(kind.variant))


def model_from_event(kind: Kind, direction: str, event_type: str | None, event: Mapping[str, Any] | None) -> str | None:
    """The model a frame names, where the session's API carries it; None if it names none."""
    module = _BY_API.get(kind.api) if isinstance(kind, Kind) else None
    cleaned = _clean(direction, event_type, event)
    if module is None or cleaned is None or cleaned[2] is None:
        return None
    try:
        model = module.model_from_event(*cleaned)
    except Exception:
        return None
    return model if isinstance(model, str) and model else None


def model_from_handshake(kind: Kind, query: str) -> str | None:
    """The model an upgrade request's query names (Realtime: ``model=``, Azure's ``deployment=``)."""
    module = _BY_API.get(kind.api) if isinstance(kind, Kind) else None
    if module is None or not isinstance(query, str):
        return None
    try:
        model = module.model_from_query(query.lstrip("?"))
    except Exception:
        return None
    return model if isinstance(model, str) and model else None


def api_session_id_from_handshake(kind: Kind, path: str) -> str | None:
    """The API's own session id an upgrade path names (a Live sideband's or fork's primary), if any."""
    module = _BY_API.get(kind.api) if isinstance(kind, Kind) else None
    clean, _ = _split_target(path, "")
    if module is None or not clean:
        return None
    try:
        sid = module.api_session_id_from_path(clean)
    except Exception:
        return None
    return sid if isinstance(sid, str) and sid and len(sid) <= _MAX_ID else None


def names_api_session_ids(kind: Kind) -> bool:
    """Do this API's server events name the session by an id of the API's own (worth looking for)?"""
    module = _BY_API.get(kind.api) if isinstance(kind, Kind) else None
    return module is not None and bool(module.SESSION_ID_EVENTS)


def api_session_id_from_event(
    kind: Kind, direction: str, event_type: str | None, event: Mapping[str, Any] | None
) -> str | None:
    """The API's own id of the session a frame names (Live's ``session.started``, Realtime's
    ``session.created``); None if it names none."""
    module = _BY_API.get(kind.api) if isinstance(kind, Kind) else None
    cleaned = _clean(direction, event_type, event)
    if module is None or cleaned is None or cleaned[2] is None:
        return None
    try:
        sid = module.api_session_id_from_event(*cleaned)
    except Exception:
        return None
    return sid if isinstance(sid, str) and sid and len(sid) <= _MAX_ID else None


def client_event_types(api: Api) -> frozenset[str]:
    """Every event type a client of this API may send."""
    module = _BY_API.get(api)
    return frozenset(module.CLIENT_EVENTS) if module is not None else frozenset()


def server_event_types(api: Api) -> frozenset[str]:
    """Every event type this API's server may send."""
    module = _BY_API.get(api)
    return frozenset(module.SERVER_EVENTS) if module is not None else frozenset()


def event_types(api: Api) -> frozenset[str]:
    """Every event type this API defines, both directions."""
    return client_event_types(api) | server_event_types(api)


__all__ = [
    "MODULES",
    "ApiModule",
    "UNKNOWN",
    "Api",
    "api_session_id_from_event",
    "api_session_id_from_handshake",
    "Kind",
    "classify_handshake",
    "client_event_types",
    "event_types",
    "model_from_event",
    "model_from_handshake",
    "names_api_session_ids",
    "refine",
    "server_event_types",
    "settled",
]
