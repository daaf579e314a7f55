"""Audio formats the APIs name (PCM16 at 8-48 kHz, G.711 u-law and A-law), and base64 audio from events."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Sample rates a PCM16 format may have; one outside them is an anomaly, never a duration.
RATES = range(8000, 48_001)


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

    A GA ``rate`` outside 8-48 kHz (:data:`RATES`) makes the format
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
