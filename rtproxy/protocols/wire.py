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
