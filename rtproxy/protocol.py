"""What rtproxy knows of the Realtime protocol, as pure data and functions.

The event catalogue of both dialects (beta and GA), the mapping between their
names, dialect detection, audio formats, and the rules that keep secrets off
the disk. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson


class Direction(StrEnum):
    """Who sent a frame."""

    CLIENT = "client"
    SERVER = "server"


CLIENT = Direction.CLIENT
SERVER = Direction.SERVER


class Dialect(StrEnum):
    BETA = "beta"
    GA = "ga"


@dataclass(frozen=True, slots=True)
class Frame:
    """One WebSocket message exactly as it crossed the wire.

    ``data`` is ``str`` for a text frame and ``bytes`` for a binary frame;
    ``t`` is seconds since the session started (monotonic clock).
    """

    seq: int
    t: float
    direction: Direction
    data: str | bytes

    @property
    def event(self) -> dict[str, Any] | None:
        """The frame parsed as a JSON object, or None if it is not one."""
        return parse_event(self.data)


def parse_event(data: str | bytes) -> dict[str, Any] | None:
    """A text frame's JSON object, or None (binary, not JSON, not an object)."""
    if not isinstance(data, str):
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


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


# --- audio formats --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """How audio bytes are encoded: ``pcm16``, ``g711_ulaw`` or ``g711_alaw``."""

    encoding: str
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    def duration_ms(self, n_bytes: int) -> float:
        return n_bytes / self.bytes_per_sample / self.rate * 1000.0


PCM16 = AudioFormat("pcm16", 24000)
ULAW = AudioFormat("g711_ulaw", 8000)
ALAW = AudioFormat("g711_alaw", 8000)


def audio_format(value: Any, *, any_rate: bool = False) -> AudioFormat | None:
    """An audio format from a beta string (``"pcm16"``) or a GA object
    (``{"type": "audio/pcm", "rate": 24000}``); None if unrecognised.

    A GA ``rate`` outside 8-48 kHz (``assemble_model.RATES``) makes the format
    unrecognised, so a hostile session config cannot skew the durations
    computed from it; a missing or non-integer one means 24 kHz. With
    ``any_rate`` any positive integer rate is taken as it is (the reducer
    does, to record an out-of-range one as an anomaly).
    """
    if isinstance(value, str):
        return {"pcm16": PCM16, "g711_ulaw": ULAW, "g711_alaw": ALAW}.get(value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "audio/pcm":
            rate = value.get("rate")
            if not isinstance(rate, int) or isinstance(rate, bool):
                return PCM16
            if any_rate:
                return AudioFormat("pcm16", rate if rate > 0 else 24000)
            from .assemble_model import RATES  # here: assemble_model imports this module

            return AudioFormat("pcm16", rate) if rate in RATES else None
        if kind == "audio/pcmu":
            return ULAW
        if kind == "audio/pcma":
            return ALAW
    return None


def session_audio_formats(
    session: Mapping[str, Any], *, any_rate: bool = False
) -> tuple[AudioFormat | None, AudioFormat | None]:
    """(input, output) formats named by a session config of either dialect (``any_rate``: see :func:`audio_format`)."""
    audio = session.get("audio")
    if isinstance(audio, Mapping):
        inp, out = audio.get("input"), audio.get("output")
        return (
            audio_format(inp.get("format"), any_rate=any_rate) if isinstance(inp, Mapping) else None,
            audio_format(out.get("format"), any_rate=any_rate) if isinstance(out, Mapping) else None,
        )
    return (
        audio_format(session.get("input_audio_format"), any_rate=any_rate),
        audio_format(session.get("output_audio_format"), any_rate=any_rate),
    )


def decode_b64(value: Any) -> bytes:
    """Base64 audio from an event field; bad or missing data decodes to nothing."""
    if not isinstance(value, str) or not value:
        return b""
    try:
        return base64.b64decode(value)
    except (ValueError, TypeError):
        return b""


# --- secrets --------------------------------------------------------------------

SECRET_HEADERS = frozenset(
    {"authorization", "api-key", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-rtproxy-token"}
)
SECRET_QUERY_PARAMS = frozenset({"api-key", "api_key", "key", "token", "access_token", "rtproxy_token"})
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."
#: Subprotocols that carry a secret after their prefix (the browser's key; rtproxy's own access token).
SECRET_PROTOCOL_PREFIXES = (INSECURE_KEY_PROTOCOL, "rtproxy-token.")
_SECRET_RE = re.compile(r"(?<![A-Za-z0-9_])(?:sk-|ek_)[A-Za-z0-9_\-]{12,}")
_SECRET_BYTES_RE = re.compile(rb"(?<![A-Za-z0-9_])(?:sk-|ek_)[A-Za-z0-9_\-]{12,}")
_SECRET_MARKERS = ("sk-", "ek_")


def mask(secret: str) -> str:
    """A secret shown so keys can be told apart: ``****abcd`` (last four kept)."""
    tail = secret[-4:] if len(secret) > 12 else ""
    return f"****{tail}"


def redact_header_value(name: str, value: str) -> str:
    lname = name.lower()
    if lname in SECRET_HEADERS:
        scheme, _, token = value.partition(" ")
        if token and scheme.lower() in ("bearer", "basic", "token"):
            return f"{scheme} {mask(token)}"
        return mask(value)
    if lname == "sec-websocket-protocol":
        return ", ".join(redact_subprotocols(p.strip() for p in value.split(",")))
    return redact_text(value)


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict, secret values masked (repeated headers joined)."""
    out: dict[str, str] = {}
    for name, value in headers:
        name, value = str(name), str(value)  # multidict keys are a str subclass JSON encoders refuse
        clean = redact_header_value(name, value)
        out[name] = f"{out[name]}, {clean}" if name in out else clean
    return out


def redact_query(query: str) -> str:
    """A query string with secret parameters masked."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_QUERY_PARAMS for k, _ in pairs) and not has_secret(query):
        return query
    return urlencode([(k, mask(v) if k.lower() in SECRET_QUERY_PARAMS else redact_text(v)) for k, v in pairs])


def redact_subprotocols(protocols: Iterable[str]) -> list[str]:
    """Subprotocols with the secret part of key-carrying ones masked."""
    out = []
    for p in protocols:
        prefix = next((x for x in SECRET_PROTOCOL_PREFIXES if p.startswith(x)), None)
        out.append(prefix + mask(p[len(prefix) :]) if prefix else p)
    return out


def has_secret(text: str) -> bool:
    """Does this text hold something shaped like a key (``sk-…``, ``ek_…``)?"""
    return any(m in text for m in _SECRET_MARKERS) and _SECRET_RE.search(text) is not None


def redact_text(text: str) -> str:
    """Mask anything in free text that looks like an API or ephemeral key."""
    if not any(m in text for m in _SECRET_MARKERS):
        return text
    return _SECRET_RE.sub(lambda m: mask(m.group(0)), text)


def redact_bytes(data: bytes) -> bytes:
    if not any(m.encode() in data for m in _SECRET_MARKERS):
        return data
    try:
        return redact_text(data.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return _SECRET_BYTES_RE.sub(lambda m: mask(m.group(0).decode()).encode(), data)


def url_credentials(url: str) -> list[str]:
    """The secrets a URL's userinfo carries (``https://user:token@gw``), raw and percent-decoded, longest first;
    [] if none. A user name counts from 8 characters on (a key can be the user name), so that scrubbing free text
    of them does not mangle words."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    found = {
        part for raw in (userinfo, password, user if len(user) >= 8 else "") if raw for part in (raw, unquote(raw))
    }
    return sorted(found, key=len, reverse=True)  # longest first, so a replace never leaves a piece behind


def redact_url(url: str) -> str:
    """A URL with its userinfo masked like any credential (``https://****:****abcd@gw``); the user too, which
    can carry a key (``https://KEY@gw``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return redact_text(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    shown = mask(unquote(user)) + (f":{mask(unquote(password))}" if colon else "")
    return redact_text(urlunsplit(parts._replace(netloc=f"{shown}@{hostport}")))
