"""The conversation model the reducer builds: parts, items, responses, errors, anomalies.

Plain mutable dataclasses owned by :class:`rtproxy.conversation.realtime.Conversation`,
which fills them in as events arrive. Streamed text is kept as a list of
chunks and joined when read; audio is kept as the base64 chunks it arrived
in and decoded only when :meth:`Part.pcm16` is asked for, so feeding an hour
of audio costs no more than counting it.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ..protocols.formats import AudioFormat
from . import audio

__all__ = [
    "Part",
    "Item",
    "Response",
    "ErrorInfo",
    "Anomaly",
    "b64_size",
    "MAX_PARTS",
    "MAX_OUTPUT_ITEMS",
    "MAX_AUDIO_MS",
    "MAX_DEPTH",
]

#: Content parts an item may have: a ``content_index`` at or past this (or a longer ``content`` list) is an
#: anomaly, never a list that size. Real items have one or two parts.
MAX_PARTS = 256
#: Output items a response may list: more (in ``response.done``'s ``output`` or ``output_item.added``
#: events) are an anomaly. Real responses have a handful.
MAX_OUTPUT_ITEMS = 256
#: Audio offsets from the wire (``audio_start_ms``, ``audio_end_ms``) past this, negative or not numbers
#: are an anomaly: a day of audio.
MAX_AUDIO_MS = 24 * 3600 * 1000.0
#: JSON objects the model keeps as they came (``status_details``, ``usage``) are cut below this depth,
#: so every view (and ``orjson.dumps``, which stops at 255) can walk them.
MAX_DEPTH = 16
#: Sample rates the model accepts from a session config; others are an anomaly (the format is not used).
#: The API speaks 24 kHz PCM and 8 kHz G.711; the bound keeps resampling between parts within 6x.
RATES = range(8000, 48_001)
#: Anomaly messages are cut to this many characters (ids and values from the wire can be megabytes).
MAX_MESSAGE = 200


def b64_size(data: str) -> int:
    """Bytes a base64 string decodes to, from its length alone."""
    n = len(data) * 3 // 4
    if data.endswith("="):
        n -= 2 if data.endswith("==") else 1
    return n


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def ms_or_none(value: Any) -> float | None:
    """A number of milliseconds from an event field (None if it is not a number)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def index_of(value: Any, limit: int = MAX_PARTS) -> int | None:
    """An index from an event field: 0 if missing (None), the int if in [0, limit), else None (unusable)."""
    if value is None:
        return 0
    if type(value) is int and 0 <= value < limit:
        return value
    return None


def audio_ms_of(value: Any) -> float | None:
    """Milliseconds of audio from an event field, None unless a number in [0, MAX_AUDIO_MS]."""
    ms = ms_or_none(value)
    return ms if ms is not None and 0.0 <= ms <= MAX_AUDIO_MS else None


def short(value: Any, limit: int = 60) -> str:
    """Any JSON value as at most ``limit`` characters of text (strings as they are, containers as JSON)."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**100 else "<huge int>"
    else:
        try:
            text = orjson.dumps(clip(value, 4)).decode()
        except (orjson.JSONEncodeError, TypeError):
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip(value: Any, depth: int = MAX_DEPTH) -> Any:
    """A JSON value with whatever lies deeper than ``depth`` replaced by ``"…"`` (no recursion past it)."""
    if isinstance(value, dict):
        if depth <= 0:
            return "…"
        return {str(k): clip(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if depth <= 0:
            return "…"
        return [clip(v, depth - 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value) if abs(value) < 10**300 else "…"  # what orjson.dumps can write
    return value


def too_deep(value: Any, depth: int = MAX_DEPTH) -> bool:
    """Whether a JSON value nests deeper than ``depth`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            if d >= depth:
                return True
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def _decode_chunk(chunk: str | bytes) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    try:
        return binascii.a2b_base64(chunk)
    except (binascii.Error, ValueError):
        return b""


def _decode_chunks(chunks: list[str | bytes]) -> bytes:
    """Base64 chunks decoded and joined: in one call when only the last one is padded (the usual case)."""
    if all(type(c) is str for c in chunks):
        text = "".join(chunks)  # type: ignore[arg-type]
        pad = text.find("=")
        if pad == -1 or pad >= len(text) - 2:
            try:
                return binascii.a2b_base64(text)
            except (binascii.Error, ValueError):
                pass
    return b"".join(map(_decode_chunk, chunks))


def _joined(chunks: list[str]) -> str:
    if len(chunks) > 1:
        chunks[:] = ["".join(chunks)]
    return chunks[0] if chunks else ""


@dataclass(eq=False)
class Part:
    """One content part of an item: text, transcript and/or audio."""

    index: int
    type: str
    audio_format: AudioFormat | None = None
    truncated_ms: float | None = None
    done: bool = False
    _text: list[str] = field(default_factory=list, repr=False)
    _transcript: list[str] = field(default_factory=list, repr=False)
    _chunks: list[str | bytes] = field(default_factory=list, repr=False)
    _head: int = field(default=0, repr=False)  # encoded bytes to skip at the start of the joined chunks
    _nbytes: int = field(default=0, repr=False)  # encoded bytes of audio this part holds

    @property
    def text(self) -> str:
        return _joined(self._text)

    @text.setter
    def text(self, value: str) -> None:
        self._text[:] = [value] if value else []

    @property
    def transcript(self) -> str:
        return _joined(self._transcript)

    @transcript.setter
    def transcript(self, value: str) -> None:
        self._transcript[:] = [value] if value else []

    @property
    def audio_rate(self) -> int:
        return self.audio_format.rate if self.audio_format is not None else 24000

    @property
    def audio_bytes(self) -> int:
        """Encoded bytes of audio kept, after truncation."""
        if self.audio_format is None:
            return 0
        n = self._nbytes
        if self.truncated_ms is not None:
            bps = self.audio_format.bytes_per_sample
            n = min(n, int(self.truncated_ms * self.audio_format.rate / 1000) * bps)
        return max(0, n)

    @property
    def audio_ms(self) -> float:
        fmt = self.audio_format
        return fmt.duration_ms(self.audio_bytes) if fmt is not None else 0.0

    def pcm16(self) -> bytes:
        """The part's audio decoded to PCM16 at ``audio_rate``; b"" if none was kept."""
        fmt = self.audio_format
        if fmt is None or not self._chunks:
            return b""
        raw = _decode_chunks(self._chunks)[self._head : self._head + self.audio_bytes]
        return audio.decode(raw, fmt)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "type": self.type,
            "text": self.text,
            "transcript": self.transcript,
            "audio_ms": round(self.audio_ms, 3),
            "audio_format": None if self.audio_format is None else self.audio_format.encoding,
            "audio_rate": self.audio_rate if self.audio_format is not None else None,
            "truncated_ms": self.truncated_ms,
        }


@dataclass(eq=False)
class Item:
    """A conversation item: a message, a function call or its output, or anything newer."""

    id: str
    type: str = "message"
    role: str | None = None
    status: str | None = None
    parts: list[Part] = field(default_factory=list)
    name: str | None = None
    call_id: str | None = None
    output: str | None = None
    response_id: str | None = None
    first_seq: int = -1
    last_seq: int = -1
    t_start: float | None = None
    truncated_ms: float | None = None
    previous_item_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False)  # the item as last announced, for newer types
    _args: list[str] | None = field(default=None, repr=False)
    _audio_placed: bool = field(default=False, repr=False)

    @property
    def arguments(self) -> str | None:
        return None if self._args is None else _joined(self._args)

    @arguments.setter
    def arguments(self, value: str | None) -> None:
        self._args = None if value is None else [value]

    @property
    def text(self) -> str:
        return "\n".join(t for t in (p.text for p in self.parts) if t)

    @property
    def transcript(self) -> str:
        return "\n".join(t for t in (p.transcript for p in self.parts) if t)

    @property
    def audio_ms(self) -> float:
        return sum(p.audio_ms for p in self.parts)

    @property
    def audio_rate(self) -> int:
        for p in self.parts:
            if p.audio_format is not None:
                return p.audio_rate
        return 24000

    def pcm16(self) -> bytes:
        """All the item's audio as PCM16 at ``audio_rate`` (parts at other rates resampled)."""
        rate = self.audio_rate
        out = []
        for p in self.parts:
            if p.audio_format is not None:
                pcm = p.pcm16()
                out.append(pcm if p.audio_rate == rate else audio.resample(pcm, p.audio_rate, rate))
        return b"".join(out)

    def part(self, index: int, kind: str) -> Part:
        """The part at ``index``, created (with any missing before it) if absent; at most MAX_PARTS."""
        parts = self.parts
        if not 0 <= index < MAX_PARTS:
            raise ValueError(f"content index {index} out of range")
        while len(parts) <= index:
            parts.append(Part(len(parts), kind))
        return parts[index]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "role": self.role,
            "status": self.status,
            "text": self.text,
            "transcript": self.transcript,
            "audio_ms": round(self.audio_ms, 3),
            "response_id": self.response_id,
            "t_start": None if self.t_start is None else round(self.t_start, 6),
            "truncated_ms": self.truncated_ms,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "parts": [p.to_json() for p in self.parts],
        }
        if self.type in ("function_call", "function_call_output") or self.call_id is not None:
            out.update(name=self.name, call_id=self.call_id, arguments=self.arguments, output=self.output)
        elif self._args is not None:
            out.update(name=self.name, arguments=self.arguments, output=self.output)
        return out


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 3)


@dataclass(eq=False)
class Response:
    """A model response: status, usage, what it produced and how long it took."""

    id: str
    status: str | None = None
    status_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    output_item_ids: list[str] = field(default_factory=list)
    trigger_seq: int | None = None
    trigger_type: str | None = None
    t_trigger: float | None = None
    t_created: float | None = None
    t_first_delta: float | None = None
    t_first_audio: float | None = None
    t_done: float | None = None
    created_seq: int = -1
    done_seq: int | None = None
    audio_format: AudioFormat | None = None
    _audio_bytes: int = field(default=0, repr=False)

    @property
    def audio_ms(self) -> float:
        """Duration of the audio the response produced."""
        fmt = self.audio_format
        return fmt.duration_ms(self._audio_bytes) if fmt is not None else 0.0

    @property
    def latency_ms(self) -> dict[str, float | None]:
        """Milliseconds from the trigger to created, first delta, first audio and done (None if unknown)."""
        t0 = self.t_trigger
        return {
            "created": _ms(t0, self.t_created),
            "first_delta": _ms(t0, self.t_first_delta),
            "first_audio": _ms(t0, self.t_first_audio),
            "done": _ms(t0, self.t_done),
        }

    @property
    def playback_ratio(self) -> float | None:
        """Seconds of audio produced per second from first audio to done (> 1: generation kept ahead)."""
        if self.t_first_audio is None or self.t_done is None or self.t_done <= self.t_first_audio:
            return None
        return round(self.audio_ms / 1000.0 / (self.t_done - self.t_first_audio), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "status_details": self.status_details,
            "usage": self.usage,
            "output_item_ids": list(self.output_item_ids),
            "trigger": {"type": self.trigger_type, "seq": self.trigger_seq} if self.trigger_type else None,
            "latency_ms": self.latency_ms,
            "audio_ms": round(self.audio_ms, 3),
            "playback_ratio": self.playback_ratio,
            "t_created": self.t_created,
            "t_done": self.t_done,
        }


@dataclass(eq=False)
class ErrorInfo:
    """A server ``error`` event, linked to the client event it names when that was recorded."""

    seq: int
    t: float
    type: str | None
    code: str | None
    message: str | None
    param: str | None
    event_id: str | None  # the client event the error names
    client_seq: int | None = None
    client_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "t": self.t,
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": self.event_id,
            "client_seq": self.client_seq,
            "client_type": self.client_type,
        }


class Anomaly(NamedTuple):
    """Something in the stream that does not add up (never fatal)."""

    seq: int
    kind: str  # done_mismatch | unknown_item | unknown_type | malformed | bad_index | transcription_failed
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}
