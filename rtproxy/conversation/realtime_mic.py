"""User audio: the client's own microphone stream, cut into the items it became.

The server never echoes user audio. The client sends it in
``input_audio_buffer.append`` events; this keeps those chunks (or, with
``keep_audio=False``, only their durations) on one timeline, in ms since the
session's first appended audio, and hands each committed user item its
slice: the buffer between two manual commits or a clear, or, with server
VAD, the span between ``speech_started.audio_start_ms`` and
``speech_stopped.audio_end_ms``. Pure, no I/O; owned by
:class:`rtproxy.conversation.realtime.Conversation`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque

from ..protocols.formats import AudioFormat
from .model import Item, b64_size

__all__ = ["Microphone"]


class Microphone:
    """The appended audio of a session, its buffer boundaries and VAD bounds."""

    def __init__(self, *, keep_audio: bool = True) -> None:
        self.keep_audio = keep_audio
        self.ms = 0.0  # audio appended so far
        self._chunks: list[str | None] = []
        self._end: list[float] = []  # cumulative end (ms) of each chunk
        self._t: list[float] = []  # session time each chunk arrived
        self._fmt: list[AudioFormat] = []
        self._buffer_start = 0.0  # where the uncommitted buffer begins (ms)
        self._pending: deque[tuple[str | None, float, float]] = deque()  # client commits not yet confirmed
        self._speech: dict[str, list[float | None]] = {}  # item_id -> [audio_start_ms, audio_end_ms]

    def append(self, t: float, data: str, fmt: AudioFormat) -> None:
        """One ``input_audio_buffer.append`` (base64 audio in ``fmt``), arrived at ``t``."""
        self.ms += b64_size(data) / fmt.bytes_per_sample * 1000.0 / fmt.rate
        self._end.append(self.ms)
        self._t.append(t)
        self._fmt.append(fmt)
        self._chunks.append(data if self.keep_audio else None)

    def commit(self, event_id: str | None) -> None:
        """The client's ``input_audio_buffer.commit``: the buffer so far becomes the next committed item."""
        self._pending.append((event_id, self._buffer_start, self.ms))
        self._buffer_start = self.ms

    def clear(self) -> None:
        """The client's ``input_audio_buffer.clear``: what was appended so far is discarded."""
        self._buffer_start = self.ms

    def speech_started(self, item_id: str, start_ms: float | None) -> None:
        self._speech[item_id] = [start_ms, None]

    def speech_stopped(self, item_id: str, end_ms: float | None) -> None:
        self._speech.setdefault(item_id, [None, None])[1] = end_ms

    def committed(self, item_id: str | None) -> tuple[float, float]:
        """The span (ms) the server's ``input_audio_buffer.committed`` for ``item_id`` covers."""
        if self._pending:
            _, start, end = self._pending.popleft()
        else:  # server VAD committed it: the speech bounds, else the whole buffer
            bounds = self._speech.pop(item_id, None) if item_id is not None else None
            start = bounds[0] if bounds and bounds[0] is not None else self._buffer_start
            end = bounds[1] if bounds and bounds[1] is not None else self.ms
            self._buffer_start = max(self._buffer_start, end)
        return start, min(end, self.ms)

    def refused(self, event_id: str) -> None:
        """The server refused a commit (an ``error`` naming it): its audio stays in the buffer."""
        for entry in list(self._pending):
            if entry[0] == event_id:
                self._pending.remove(entry)
                if not self._pending:
                    self._buffer_start = min(self._buffer_start, entry[1])

    def attach(self, item: Item, start: float, end: float, fallback: AudioFormat) -> None:
        """Give a user item the slice [start, end) ms of the stream, and the time it was spoken."""
        part = next((p for p in item.parts if p.type == "input_audio"), None)
        if part is None:
            part = item.part(len(item.parts), "input_audio")
        ends = self._end
        if not ends or end <= start:
            part.audio_format = part.audio_format or fallback
            return
        i = min(bisect_right(ends, start), len(ends) - 1)
        j = min(bisect_left(ends, end), len(ends) - 1)
        fmt = self._fmt[i]
        bps = fmt.bytes_per_sample
        chunk_start = ends[i - 1] if i > 0 else 0.0
        part.audio_format = fmt
        part._head = max(0, round((start - chunk_start) * fmt.rate / 1000.0)) * bps
        part._nbytes = round((end - start) * fmt.rate / 1000.0) * bps
        if self.keep_audio:
            part._chunks = [c for c in self._chunks[i : j + 1] if c is not None]
        if not item._audio_placed:  # a chunk arrives when its last sample was captured
            item._audio_placed = True
            item.t_start = max(0.0, self._t[i] - (ends[i] - start) / 1000.0)
