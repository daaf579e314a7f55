"""How one event reads in the detail pane: pretty JSON, audio shown by its length.

Pure. A 15 MiB ``input_audio_buffer.append`` becomes a few lines, with
``"audio": "<base64 audio, 960000 bytes, 20000 ms>"`` where the base64 was.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..cli.render import b64_len
from ..conversation.model import too_deep
from ..protocols.formats import PCM16, AudioFormat
from ..protocols.wire import Direction

#: Server events whose ``delta`` is base64 audio.
AUDIO_DELTA_TYPES = frozenset({"response.audio.delta", "response.output_audio.delta"})
#: Keys that hold base64 audio wherever they appear (client appends, input_audio content parts).
AUDIO_KEYS = frozenset({"audio"})
#: A string shorter than this is shown as it is.
MIN_AUDIO_CHARS = 64
#: JSON nested deeper than this is shown as the text it came as (orjson writes at most 255 levels).
MAX_PRETTY_DEPTH = 100


def audio_placeholder(b64: str, fmt: AudioFormat | None) -> str:
    n = b64_len(b64)
    ms = (fmt or PCM16).duration_ms(n)
    return f"<base64 audio, {n} bytes, {ms:.0f} ms>"


def strip_audio(value: Any, fmt: AudioFormat | None, *, delta_is_audio: bool = False) -> Any:
    """A copy of a JSON value with base64 audio strings replaced by a placeholder."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, v in value.items():
            audio_key = key in AUDIO_KEYS or (delta_is_audio and key == "delta")
            if audio_key and isinstance(v, str) and len(v) >= MIN_AUDIO_CHARS:
                out[key] = audio_placeholder(v, fmt)
            else:
                out[key] = strip_audio(v, fmt)
        return out
    if isinstance(value, list):
        return [strip_audio(v, fmt) for v in value]
    return value


def render_payload(
    data: str | bytes, direction: Direction, formats: tuple[AudioFormat | None, AudioFormat | None] = (None, None)
) -> tuple[str, str]:
    """(text, lexer) for an event: indented JSON with audio summarised, else the text or a binary summary.

    ``formats`` is the session's (input, output) audio format: client audio
    is input audio, server audio is output audio.
    """
    if isinstance(data, bytes):
        head = data[:64].hex(" ")
        more = f" … (+{len(data) - 64} bytes)" if len(data) > 64 else ""
        return f"<binary frame, {len(data)} bytes>\n{head}{more}", "text"
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data, "text"
    if too_deep(event, MAX_PRETTY_DEPTH):
        return data, "text"
    fmt = formats[0] if direction is Direction.CLIENT else formats[1]
    delta_is_audio = isinstance(event, dict) and event.get("type") in AUDIO_DELTA_TYPES
    clean = strip_audio(event, fmt, delta_is_audio=delta_is_audio)
    return orjson.dumps(clean, option=orjson.OPT_INDENT_2).decode(), "json"
