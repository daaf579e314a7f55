"""The Realtime API (``/v1/realtime``, beta and GA dialects): paths, catalogue, detection, model, secrets and ids.

The catalogue and the dialect rules live in :mod:`rtproxy.protocol` (the Realtime reducer's own module); this
module re-exports them in the shape every API module has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .. import protocol
from ..protocol import (
    BETA_TO_GA,
    GA_TO_BETA,
    INSECURE_KEY_PROTOCOL,
    SECRET_HEADERS,
    SECRET_PROTOCOL_PREFIXES,
    SECRET_QUERY_PARAMS,
    Dialect,
    dialect_from_event,
    dialect_from_handshake,
)

API = "realtime"

#: The upgrade path (``client.realtime.connect()`` and ``client.beta.realtime.connect()`` open ``/realtime``
#: under the base URL), after any prefix: ``/v1``, Azure's ``/openai`` or ``/openai/v1``, a gateway's own.
#: ``/realtime/translations`` is another protocol and does not match.
PATHS: tuple[tuple[re.Pattern[str], str | None], ...] = ((re.compile(r"(?:/.*)?/realtime"), None),)

CLIENT_EVENTS: frozenset[str] = protocol.CLIENT_EVENTS
SERVER_EVENTS: frozenset[str] = protocol.SERVER_EVENTS

#: Where the model is: the query at the handshake, ``session.model`` in these server events.
MODEL_EVENTS = frozenset({"session.created", "session.updated"})
MODEL_QUERY_PARAMS = ("model", "deployment")

#: Ids the events carry (``event_id`` is the client's or the server's own; the rest name conversation objects).
ID_FIELDS = ("event_id", "item_id", "previous_item_id", "response_id", "call_id", "conversation_id")
#: Where secrets travel: headers, query parameters, subprotocols (the browser's key), and the ephemeral key
#: (``ek_…``) a session's ``client_secret`` holds.
SECRET_FIELDS = ("client_secret",)

__all__ = [
    "API",
    "BETA_TO_GA",
    "CLIENT_EVENTS",
    "GA_TO_BETA",
    "ID_FIELDS",
    "INSECURE_KEY_PROTOCOL",
    "MODEL_EVENTS",
    "MODEL_QUERY_PARAMS",
    "PATHS",
    "SECRET_FIELDS",
    "SECRET_HEADERS",
    "SECRET_PROTOCOL_PREFIXES",
    "SECRET_QUERY_PARAMS",
    "SERVER_EVENTS",
    "Dialect",
    "claims",
    "handshake_variant",
    "model_from_event",
    "model_from_query",
    "refine_variant",
    "settled",
]


def handshake_variant(
    variant: str | None, query: str, headers: Mapping[str, str], subprotocols: Sequence[str]
) -> str | None:
    """Beta if the client asked for it (``OpenAI-Beta: realtime=v1`` or an ``openai-beta.realtime`` subprotocol);
    otherwise not known until the first events (GA clients send no marker)."""
    dialect = dialect_from_handshake(headers, subprotocols)
    return dialect.value if dialect is not None else variant


def refine_variant(variant: str | None, direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """The dialect a frame betrays, when it is new: it fills an unknown one, and a server frame corrects a
    handshake's guess (the server speaks the dialect it speaks)."""
    dialect = dialect_from_event(event_type, event)
    if dialect is None or dialect.value == variant:
        return None
    if variant is None or direction == "server":
        return dialect.value
    return None


def claims(direction: str, event_type: str, event: Mapping[str, Any] | None) -> bool:
    """Is an event whose name other APIs share plainly Realtime by its shape?"""
    if event is None:
        return False
    if event_type == "response.create" and direction == "client":
        return isinstance(event.get("response"), Mapping)  # Live's has no body, Responses' has its fields on top
    if event_type in ("session.created", "session.updated") and direction == "server":
        return dialect_from_event(event_type, event) is not None
    if event_type == "session.update" and direction == "client":
        session = event.get("session")
        return isinstance(session, Mapping) and (
            session.get("type") in ("realtime", "transcription")
            or "modalities" in session
            or "input_audio_format" in session
            or "turn_detection" in session
        )
    return False


def settled(variant: str | None) -> bool:
    return variant is not None


def model_from_event(direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """``session.model`` of ``session.created`` / ``session.updated``."""
    if direction != "server" or event_type not in MODEL_EVENTS or event is None:
        return None
    session = event.get("session")
    model = session.get("model") if isinstance(session, Mapping) else None
    return model if isinstance(model, str) and model else None


def model_from_query(query: str) -> str | None:
    """``model=`` (OpenAI) or ``deployment=`` (Azure)."""
    return protocol.model_from_query(query)
