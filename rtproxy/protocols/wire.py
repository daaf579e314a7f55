"""The wire's shared vocabulary: who sent a frame, a frame as it crossed the wire, and parsing it.

Pure data and functions, no I/O; every API module, reducer and view speaks in these terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class Direction(StrEnum):
    """Who sent a frame."""

    CLIENT = "client"
    SERVER = "server"


CLIENT = Direction.CLIENT
SERVER = Direction.SERVER


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


#: A frame longer than this is described from its skeleton: its bulk, a long "audio" or "delta" string (base64
#: audio, most of every voice session's bytes), cut out first, so it is not copied into a Python string.
BULK = 2048
_BULK_KEYS = ('"audio":"', '"delta":"')


def skeleton(data: str) -> str:
    """`data` with the value of its first long "audio" or "delta" string emptied (when that value holds no
    escape, so its end is the next quote): the same JSON but for that one value, whose type and ids are the
    frame's. Anything else comes back unchanged."""
    if len(data) < BULK:
        return data
    for key in _BULK_KEYS:
        i = data.find(key)
        if i != -1:
            start = i + len(key)
            end = data.find('"', start)
            if end - start >= BULK // 2 and data.find("\\", start, end) == -1:
                return data[:start] + data[end:]
    return data
