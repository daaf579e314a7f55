"""GPT-Live (``/v1/live/sessions``): paths, catalogue, detection, model, secrets and ids.

Facts from the ``openai`` SDK (3.57): ``client.live.connect()`` opens ``/live/sessions`` (the primary),
``client.live.sideband.connect(session_id=…)`` opens ``/live/sessions/{id}/attach`` (an observer/controller of a
WebRTC or SIP session), ``client.live.forks.connect(session_id=…)`` opens ``/live/sessions/{id}/fork`` (a new session
from a stored one). Each connection's client and server unions are ``ClientEvent``/``ServerEvent``,
``ConnectClientEvent``/``ConnectServerEvent`` (sideband) and ``ForkClientEvent``/``ForkServerEvent``; the
catalogue below is their union, pinned to the SDK by ``tests/test_protocols.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

API = "live"

PRIMARY, SIDEBAND, FORK = "primary", "sideband", "fork"

#: Upgrade paths after any prefix (``/v1``, a gateway's own); ``{id}`` is the Live session id (``sess_…``).
PATHS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"(?:/.*)?/live/sessions"), PRIMARY),
    (re.compile(r"(?:/.*)?/live/sessions/[^/]+/attach"), SIDEBAND),
    (re.compile(r"(?:/.*)?/live/sessions/[^/]+/fork"), FORK),
)
_SESSION_ID_RE = re.compile(r"/live/sessions/([^/]+)/(?:attach|fork)$")

CLIENT_EVENTS: frozenset[str] = frozenset(
    {
        "session.start",
        "session.update",
        "session.close",
        "session.input_audio.append",
        "session.input_audio.mute",
        "session.input_audio.unmute",
        "session.output_audio.fixture.play",
        "session.instructions.append",
        "session.thinking.append",
        "session.commentary.append",
        "decision.create",
        "decision.item.create",
        "decision.item.delete",
        "response.item.create",
        "response.create",
        "transport.dtmf.send",  # sideband only (a SIP keypress)
    }
)

SERVER_EVENTS: frozenset[str] = frozenset(
    {
        "session.started",
        "session.updated",
        "session.closed",
        "session.resumed",  # sideband only
        "session.paused",  # sideband only
        "session.usage.updated",
        "session.input_audio.append",  # sideband: the primary's input audio reflected
        "session.input_audio.muted",
        "session.input_audio.unmuted",
        "session.output_audio.delta",
        "session.output_audio.fixture.playing",
        "session.output_audio.fixture.played",
        "session.instructions.appended",
        "session.thinking.appended",
        "session.commentary.appended",
        "session.input_transcript.delta",
        "session.output_transcript.delta",
        "session.delegation.created",
        "decision.event",
        "decision.item.created",
        "decision.item.deleted",
        "response.event",
        "error",
        "info",
        "transport.dtmf.received",
        "transport.dtmf.send",  # legacy delivery notification
        "transport.dtmf.sent",
        "transport.ringing",
        "transport.answered",
        "transport.failed",
    }
)

#: Events only a sideband connection sees or sends.
SIDEBAND_CLIENT_EVENTS = frozenset({"transport.dtmf.send"})
SIDEBAND_SERVER_EVENTS = frozenset({"session.resumed", "session.paused"})

#: Where the model is: ``session.model`` of these events (not the URL; ``session.start`` of a fork has none).
MODEL_CLIENT_EVENTS = frozenset({"session.start"})
MODEL_SERVER_EVENTS = frozenset({"session.started", "session.updated", "session.closed"})

#: A client command's optional ``event_id`` comes back as the server event's ``client_event_id`` (and an
#: error's ``error.client_event_id``): a replay must echo this run's, not the recording's.
CLIENT_EVENT_ID_FIELD = "client_event_id"
ID_FIELDS = (
    "event_id",
    "client_event_id",
    "delegation_id",
    "response_id",
    "call_id",
    "item_id",
    "session_id",
    "trigger_id",
    "source_event_id",
)
#: The Live session id: ``session.id`` of ``session.started``/``updated``/``closed``; in the path for a sideband
#: or a fork (:func:`session_id_from_path`); ``session_id`` of ``transport.*`` events.
SESSION_ID_FIELD = ("session", "id")
#: Secrets: the ``Authorization`` header (an API key or an ephemeral ``ek_…`` key), and MCP tools' ``authorization``
#: and ``headers`` inside a delegation's tool configuration.
SECRET_FIELDS = ("authorization", "headers")
#: Audio: ``session.audio.format`` (``audio/pcm`` at 16 or 24 kHz, ``audio/pcmu``, ``audio/pcma``); reflected
#: sideband input is PCM16LE at 24 kHz.
AUDIO_FORMAT_FIELD = ("session", "audio", "format")


def session_id_from_path(path: str) -> str | None:
    """The Live session id a sideband or fork path names."""
    if not isinstance(path, str):
        return None
    m = _SESSION_ID_RE.search(path.partition("?")[0].rstrip("/"))
    return m.group(1) if m else None


#: Server events whose ``session.id`` is the Live session id.
SESSION_ID_EVENTS = MODEL_SERVER_EVENTS


def api_session_id_from_path(path: str) -> str | None:
    """The Live session a sideband or fork connection names in its path (its primary's id)."""
    return session_id_from_path(path)


def api_session_id_from_event(direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """``session.id`` of ``session.started`` (and of the later snapshots a sideband may see first)."""
    if direction != "server" or event is None or event_type not in SESSION_ID_EVENTS:
        return None
    session = event.get("session")
    sid = session.get("id") if isinstance(session, Mapping) else None
    return sid if isinstance(sid, str) and sid else None


def handshake_variant(
    variant: str | None, query: str, headers: Mapping[str, str], subprotocols: Sequence[str]
) -> str | None:
    """The path alone says which connection this is."""
    return variant


def refine_variant(variant: str | None, direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """Only a session found Live from its events (on an unknown path) learns its variant from them:
    ``session.start`` with a model is a primary, without one a fork; sideband-only events make a sideband."""
    if variant is not None:
        return None
    if direction == "client" and event_type == "session.start" and event is not None:
        session = event.get("session")
        if isinstance(session, Mapping):
            return PRIMARY if isinstance(session.get("model"), str) else FORK
        return None
    if (direction == "client" and event_type in SIDEBAND_CLIENT_EVENTS) or (
        direction == "server" and event_type in SIDEBAND_SERVER_EVENTS
    ):
        return SIDEBAND
    return None


def claims(direction: str, event_type: str, event: Mapping[str, Any] | None) -> bool:
    """Is an event whose name other APIs share plainly Live by its shape? A server ``session.updated`` whose
    session is a Live ``SessionResource`` (``status`` and ``expires_at`` beside ``model``) is."""
    if event is None or direction != "server" or event_type != "session.updated":
        return False
    session = event.get("session")
    return isinstance(session, Mapping) and session.get("status") == "active" and "expires_at" in session


def settled(variant: str | None) -> bool:
    return variant is not None


def model_from_event(direction: str, event_type: str, event: Mapping[str, Any] | None) -> str | None:
    """``session.model`` of ``session.start`` (client) and of ``session.started``/``updated``/``closed`` (server)."""
    wanted = MODEL_CLIENT_EVENTS if direction == "client" else MODEL_SERVER_EVENTS
    if event is None or event_type not in wanted:
        return None
    session = event.get("session")
    model = session.get("model") if isinstance(session, Mapping) else None
    return model if isinstance(model, str) and model else None


def model_from_query(query: str) -> str | None:
    """Live names no model in the URL."""
    return None
