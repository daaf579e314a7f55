"""JSONL recordings: the portable, reviewable form of a session (or of several connections).

The first line is a header, ``{"rtproxy": 1, "session": {...}}``; then one
line per frame in seq order::

    {"t": 0.0123, "dir": "client", "event": {...}}   a JSON object frame
    {"t": 0.0200, "dir": "server", "text": "..."}    any other text frame
    {"t": 0.0300, "dir": "server", "binary": "..."}  a binary frame, base64

JSON object frames are kept as objects, keys in their order, so a recording
reads well in a diff; whitespace inside them is normalised. ``t`` is seconds
since the session started: finite, from 0 to ``MAX_T`` (7 days), and never
smaller than the line before's (a recording is in time order); the reader
refuses any other with the file and line, as it does a malformed line. The format has a
version number of its own (``FORMAT_VERSION``), independent of the package.

A recording may hold several connections in the order they were opened (an app that opens one per call, or an
SDK that reconnects after a drop): each starts with a header line of its own, its frames' ``t`` counting from
its own start. Such a file says ``"rtproxy": 2`` (a reader of format 1 refuses it rather than misread it); a
file of one connection is written as format 1, as before. :func:`iter_recording` and :func:`read_recording` read
the first connection; :func:`iter_connections` and :func:`read_connections` read them all.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from .errors import RecordingError
from .protocols.secrets import redact_bytes
from .protocols.wire import Direction, Frame, parse_event

FORMAT_VERSION = 2
#: The version a file of one connection is written with (what every reader of format 1 reads).
SINGLE_VERSION = 1

#: The latest frame time a recording may carry (seconds; 7 days). A frame's
#: ``t`` sizes buffers downstream (``export --audio`` lays audio out on a
#: timeline of ``t`` x rate samples), so an absurd one is refused on reading.
MAX_T = 7 * 24 * 3600.0

#: Session columns a recording's header carries (the rest are per-database).
HEADER_FIELDS = (
    "id",
    "started_at",
    "ended_at",
    "path",
    "query",
    "model",
    "dialect",
    "api",
    "variant",
    "upstream",
    "request_headers",
    "response_headers",
    "subprotocol",
    "status",
    "reason",
    "closed_by",
    "client_close_code",
    "client_close_reason",
    "server_close_code",
    "server_close_reason",
    "client_events",
    "server_events",
    "client_bytes",
    "server_bytes",
    "unrecorded",
    "duration",
    "label",
    "api_session_id",
)


@dataclass
class Recording:
    """A session's metadata and its frames."""

    session: dict[str, Any]
    frames: list[Frame] = field(default_factory=list)
    path: str = "<memory>"


def session_header(session: dict[str, Any]) -> dict[str, Any]:
    """The header's session object: known fields, JSON columns decoded."""
    out: dict[str, Any] = {}
    for key in HEADER_FIELDS:
        value = session.get(key)
        if value is None:
            continue
        if key in ("request_headers", "response_headers") and isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        out[key] = value
    return out


def frame_line(frame: Frame) -> bytes:
    """One JSONL line (without the newline) for a frame."""
    t = round(frame.t, 6)
    data = frame.data
    if isinstance(data, bytes):
        return orjson.dumps({"t": t, "dir": frame.direction.value, "binary": base64.b64encode(data).decode()})
    event = parse_event(data)
    if event is not None:
        try:
            return orjson.dumps({"t": t, "dir": frame.direction.value, "event": event})
        except orjson.JSONEncodeError:  # e.g. an integer too large for orjson: keep the text
            pass
    return orjson.dumps({"t": t, "dir": frame.direction.value, "text": data})


def write_recording(target: str | Path | IO[bytes], session: dict[str, Any], frames: Iterable[Frame]) -> int:
    """Write a recording of one connection; returns the number of frames written.

    Writing to a path goes through a temporary file and a rename, so a
    recording is never left half-written.
    """
    return write_connections(target, [(session, frames)])


def write_connections(
    target: str | Path | IO[bytes],
    connections: Iterable[tuple[dict[str, Any], Iterable[Frame]]],
    *,
    several: bool | None = None,
) -> int:
    """Write a recording of several connections, in order (one header line each); the frames written.

    `connections` may be lazy (as :func:`iter_connections` gives them) if `several` says whether there is more
    than one; else it must be a sequence."""
    if several is None:
        assert isinstance(connections, Sequence), "give several= with a lazy iterable of connections"
        several = len(connections) > 1
    version = FORMAT_VERSION if several else SINGLE_VERSION
    if not isinstance(target, str | Path):
        return _write(target, version, connections)
    path = str(target)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            n = _write(fh, version, connections)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


def _write(fh: IO[bytes], version: int, connections: Iterable[tuple[dict[str, Any], Iterable[Frame]]]) -> int:
    n = 0
    for session, frames in connections:
        header = orjson.dumps({"rtproxy": version, "session": session_header(session)})
        fh.write(redact_bytes(header) + b"\n")
        for frame in frames:
            fh.write(redact_bytes(frame_line(frame)) + b"\n")
            n += 1
    return n


def iter_recording(path: str | Path) -> tuple[dict[str, Any], Iterator[Frame]]:
    """The first connection's session and a lazy iterator of its frames.

    Raises RecordingError (file and line) for the header at once, and for a
    bad frame line when the iterator reaches it.
    """
    reader = _Reader(str(path))
    session, reader.next = reader.next, None
    assert session is not None
    return session, reader._frames(first_only=True)


def iter_connections(path: str | Path) -> Iterator[tuple[dict[str, Any], Iterator[Frame]]]:
    """Each connection's session and a lazy iterator of its frames, in order (the first header is checked at
    once). Moving to the next connection skips what is left of the one before (still checking it)."""
    reader = _Reader(str(path))
    return reader.connections()


class _Reader:
    """Reads a recording line by line; a header line ends the connection before it."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fh: IO[bytes] = open(path, "rb")
        except FileNotFoundError as e:
            raise RecordingError(path, None, "no such file") from e
        except IsADirectoryError as e:
            raise RecordingError(path, None, "is a directory, not a recording") from e
        except OSError as e:
            raise RecordingError(path, None, f"cannot read: {e.strerror}") from e
        first = self.fh.readline()
        if not first.strip():
            self.fh.close()
            raise RecordingError(path, 1, 'empty file; expected a header line {"rtproxy": 1, "session": {...}}')
        try:
            self.next: dict[str, Any] | None = self._header(1, _load(path, 1, first))
        except RecordingError:
            self.fh.close()
            raise
        self.lineno = 1

    def _header(self, lineno: int, header: dict[str, Any]) -> dict[str, Any]:
        version = header.get("rtproxy")
        if not isinstance(version, int) or "session" not in header:
            raise RecordingError(
                self.path, lineno, 'not an rtproxy recording (the header needs "rtproxy" and "session")'
            )
        if version > FORMAT_VERSION:
            raise RecordingError(
                self.path,
                lineno,
                f"recording format {version} is newer than this rtproxy reads ({FORMAT_VERSION}); upgrade rtproxy",
            )
        session = header["session"]
        if not isinstance(session, dict):
            raise RecordingError(self.path, lineno, '"session" must be an object')
        return session

    def connections(self) -> Iterator[tuple[dict[str, Any], Iterator[Frame]]]:
        current: Iterator[Frame] | None = None
        while True:
            if current is not None:
                for _ in current:  # the caller moved on: skip (and check) the rest
                    pass
            if self.next is None:
                return
            session, self.next = self.next, None
            current = self._frames()
            yield session, current

    def _frames(self, first_only: bool = False) -> Iterator[Frame]:
        seq = 0
        last_t = 0.0
        for line in self.fh:
            self.lineno += 1
            if not line.strip():
                continue
            obj = _load(self.path, self.lineno, line)
            if "rtproxy" in obj:
                if first_only:
                    self.fh.close()
                else:
                    self.next = self._header(self.lineno, obj)
                return
            frame = _frame(self.path, self.lineno, obj, seq)
            if frame.t < last_t:
                raise RecordingError(self.path, self.lineno, f"time goes backwards ({frame.t} after {last_t})")
            last_t = frame.t
            seq += 1
            yield frame
        self.fh.close()


def count_connections(path: str | Path) -> int:
    """How many connections a recording holds, by its header lines (a quick scan; the readers check them)."""
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if b'"rtproxy"' in line[:24])  # a frame's line starts with "t"
    except OSError:
        return 0


def read_recording(path: str | Path) -> Recording:
    """The first connection of a recording, validated; RecordingError names the file and line."""
    session, frames = iter_recording(path)
    return Recording(session=session, frames=list(frames), path=str(path))


def read_connections(path: str | Path) -> list[Recording]:
    """Every connection of a recording, validated, in order."""
    return [Recording(session=s, frames=list(f), path=str(path)) for s, f in iter_connections(path)]


def _load(path: str, lineno: int, line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise RecordingError(path, lineno, f"not valid JSON ({e.msg})") from e
    if not isinstance(value, dict):
        raise RecordingError(path, lineno, f"expected a JSON object, got {type(value).__name__}")
    return value


def _frame(path: str, lineno: int, obj: dict[str, Any], seq: int) -> Frame:
    t = obj.get("t")
    if not isinstance(t, int | float) or isinstance(t, bool):
        raise RecordingError(path, lineno, '"t" must be a number of seconds ≥ 0')
    t = float(t)
    if not math.isfinite(t) or t < 0:
        raise RecordingError(path, lineno, f'"t" must be a finite number of seconds ≥ 0, got {t!r}')
    if t > MAX_T:
        raise RecordingError(path, lineno, f'"t" is {t:g} s, more than {MAX_T / 86400:g} days into the session')
    try:
        direction = Direction(str(obj.get("dir")))
    except ValueError as e:
        raise RecordingError(path, lineno, f'"dir" must be "client" or "server", got {obj.get("dir")!r}') from e
    data: str | bytes
    if "event" in obj:
        if not isinstance(obj["event"], dict):
            raise RecordingError(path, lineno, '"event" must be a JSON object')
        data = orjson.dumps(obj["event"]).decode()
    elif "text" in obj:
        if not isinstance(obj["text"], str):
            raise RecordingError(path, lineno, '"text" must be a string')
        data = obj["text"]
    elif "binary" in obj:
        try:
            data = base64.b64decode(obj["binary"], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise RecordingError(path, lineno, '"binary" must be base64') from e
    else:
        raise RecordingError(path, lineno, 'a frame needs "event", "text" or "binary"')
    return Frame(seq, t, direction, data)
