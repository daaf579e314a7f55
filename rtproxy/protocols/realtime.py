"""The Realtime API (``/v1/realtime``, beta and GA dialects): paths, catalogue, detection, model, secrets and ids.

Its event catalogue (both dialects and the mapping between their names), how a session's dialect is detected,
where the model, ids and secrets are. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

from .secrets import INSECURE_KEY_PROTOCOL, SECRET_HEADERS, SECRET_PROTOCOL_PREFIXES, SECRET_QUERY_PARAMS
from .wire import CLIENT, Direction


class Dialect(StrEnum):
    BETA = "beta"
    GA = "ga"


# --- the event catalogue ----------------------------------------------------

CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
        "transcription_session.update",
    }
)

_COMMON_SERVER = {
    "error",
    "session.created",
    "session.updated",
    "conversation.created",
    "conversation.item.created",
    "conversation.item.deleted",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "rate_limits.updated",
    "response.created",
    "response.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
}

#: beta name -> GA name, for the events that were renamed.
BETA_TO_GA = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
}
GA_TO_BETA = {ga: beta for beta, ga in BETA_TO_GA.items()}

GA_ONLY_SERVER = frozenset(
    {
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        *GA_TO_BETA,
    }
)
BETA_ONLY_SERVER = frozenset({"transcription_session.updated", *BETA_TO_GA})
SERVER_EVENTS = frozenset(_COMMON_SERVER | GA_ONLY_SERVER | BETA_ONLY_SERVER)
KNOWN_EVENTS = CLIENT_EVENTS | SERVER_EVENTS


def canonical_type(event_type: str) -> str:
    """The GA name of an event type (beta names mapped, others unchanged)."""
    return BETA_TO_GA.get(event_type, event_type)


def is_known(event_type: str, direction: Direction) -> bool:
    return event_type in (CLIENT_EVENTS if direction is CLIENT else SERVER_EVENTS)


# --- dialect detection ---------------------------------------------------------


def dialect_from_handshake(headers: Mapping[str, str], subprotocols: Iterable[str] = ()) -> Dialect | None:
    """Beta if the client asked for it in a header or subprotocol, else unknown."""
    for name, value in headers.items():
        if name.lower() == "openai-beta" and "realtime" in value.lower():
            return Dialect.BETA
    if any(p.lower().startswith("openai-beta.realtime") for p in subprotocols):
        return Dialect.BETA
    return None


def dialect_from_event(event_type: str, event: Mapping[str, Any] | None = None) -> Dialect | None:
    """The dialect an event's name or shape betrays, if any."""
    if event_type in BETA_TO_GA or event_type == "transcription_session.updated":
        return Dialect.BETA
    if event_type in GA_ONLY_SERVER:
        return Dialect.GA
    if event is not None and event_type in ("session.created", "session.updated"):
        session = event.get("session")
        if isinstance(session, Mapping):
            if "audio" in session or session.get("type") in ("realtime", "transcription"):
                return Dialect.GA
            if "modalities" in session or "input_audio_format" in session:
                return Dialect.BETA
    return None


def model_from_query(query: str) -> str | None:
    """The model named by a connection's query (`model=` or Azure's `deployment=`)."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    return params.get("model") or params.get("deployment") or None


API = "realtime"

#: The upgrade path (``client.realtime.connect()`` and ``client.beta.realtime.connect()`` open ``/realtime``
#: under the base URL), after any prefix: ``/v1``, Azure's ``/openai`` or ``/openai/v1``, a gateway's own.
#: ``/realtime/translations`` is another protocol and does not match.
PATHS: tuple[tuple[re.Pattern[str], str | None], ...] = ((re.compile(r"(?:/.*)?/realtime"), None),)


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
    "SESSION_ID_EVENTS",
    "Dialect",
    "claims",
    "handshake_variant",
    "model_from_event",
    "model_from_query",
    "api_session_id_from_event",
    "api_session_id_from_path",
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


#: Server events whose ``session.id`` is the server's id of the session.
SESSION_ID_EVENTS = frozenset({"session.created"})


def api_session_id_from_path(path: str) -> str | None:
    """A Realtime connection names no session in its path."""
    return None


def api_session_id_from_event(direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """``session.id`` of ``session.created`` (the server's name for the session)."""
    if direction != "server" or event_type not in SESSION_ID_EVENTS or event is None:
        return None
    session = event.get("session")
    sid = session.get("id") if isinstance(session, Mapping) else None
    return sid if isinstance(sid, str) and sid else None
