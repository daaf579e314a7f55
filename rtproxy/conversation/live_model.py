"""What a GPT-Live session is made of, as :mod:`rtproxy.conversation.live` fills it in.

Speech turns on the session timeline (ms from the session's start, as the Live transcript fragments count it),
the audio streams they are cut from, delegations (the work the Live model handed to the client, a Responses
backend or Decisions), the context the client appended, and the usage the server reported. Plain mutable
dataclasses; the generic pieces (errors, anomalies) come from :mod:`rtproxy.conversation.model`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any

from ..protocols.formats import PCM16, AudioFormat
from . import audio
from .model import _decode_chunks, b64_size
from .responses import StreamedResponse

__all__ = ["AudioStream", "SpeechTurn", "Overlap", "Appended", "Delegation", "USER", "ASSISTANT"]

USER, ASSISTANT = "user", "assistant"


class AudioStream:
    """One direction's audio as it streamed: its length, and (with ``keep``) the base64 chunks to cut it by ms.

    Live audio is one format for the whole session (it cannot change after startup), so a byte offset is a
    time: ``ms = bytes / bytes_per_sample / rate * 1000``. The hot path is :meth:`add`: a length and, when
    kept, an append.
    """

    __slots__ = ("keep", "format", "nbytes", "chunks", "ends", "source", "timed", "starts")

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self.format: AudioFormat = PCM16
        self.nbytes = 0
        self.chunks: list[str] = []
        #: cumulative encoded bytes at the end of each chunk: worked out from the kept chunks when first needed
        #: (:meth:`cumulative`), so the hot path only appends; recorded as they come for a timed stream not kept
        self.ends: list[int] = []
        self.source: str | None = None  # the connection it came from (one source per session)
        #: whether every chunk so far carried its place on the timeline (sideband-reflected output audio does);
        #: then ``starts`` holds each chunk's ``start_ms`` and ``ends`` is kept even without ``keep``
        self.timed: bool | None = None
        self.starts: list[float] = []

    def add_timed(self, start_ms: object, nbytes: int) -> None:
        """The place on the timeline of the chunk just added; a chunk without one ends timing for good."""
        if type(start_ms) is int and 0 <= start_ms <= 86_400_000:
            self.timed = True
            self.starts.append(float(start_ms))
            if not self.keep:
                self.ends.append(nbytes)
        else:
            self.timed = False
            self.starts.clear()

    def cumulative(self) -> list[int]:
        """``ends``, completed for the chunks kept since it was last asked for."""
        ends, chunks = self.ends, self.chunks
        if self.keep and len(ends) < len(chunks):
            total = ends[-1] if ends else 0
            for chunk in chunks[len(ends) :]:
                total += b64_size(chunk)
                ends.append(total)
        return ends

    def start_at(self, byte: int) -> float | None:
        """The timeline ms where the timed chunk holding ``byte`` starts (None for an untimed stream)."""
        if not self.timed or not self.starts:
            return None
        i = min(bisect_right(self.cumulative(), byte), len(self.starts) - 1)
        return self.starts[i]

    def chunk_range(self, start_ms: float, end_ms: float) -> tuple[int, int]:
        """The byte range of the timed chunks starting in [start_ms, end_ms)."""
        first = bisect_left(self.starts, start_ms)
        last = bisect_left(self.starts, end_ms)
        if first >= last:
            return 0, 0
        ends = self.cumulative()
        return (ends[first - 1] if first > 0 else 0), ends[last - 1]

    @property
    def ms(self) -> float:
        return self.format.duration_ms(self.nbytes)

    def byte_at(self, ms: float) -> int:
        """The byte offset of a time in the stream (whole samples, clamped to what streamed)."""
        fmt = self.format
        n = int(max(0.0, ms) * fmt.rate / 1000.0) * fmt.bytes_per_sample
        return min(n, self.nbytes)

    def pcm16(self, start: int, end: int) -> bytes:
        """Encoded bytes [start, end) decoded to PCM16 at the stream's rate; b"" if nothing was kept."""
        if not self.chunks or end <= start:
            return b""
        ends = self.cumulative()
        first = bisect_right(ends, start)
        last = min(len(ends) - 1, bisect_right(ends, end - 1))
        if first > last:
            return b""
        base = ends[first - 1] if first > 0 else 0
        raw = _decode_chunks(list(self.chunks[first : last + 1]))
        return audio.decode(raw[start - base : end - base], self.format)


@dataclass(slots=True)
class Overlap:
    """This turn overlapped another speaker's: ``barge_in`` (it cut in and the other stopped) or
    ``backchannel`` (it was spoken over the other, who carried on)."""

    turn: int  # index of the other turn
    kind: str
    ms: float  # how long they overlapped

    def to_json(self) -> dict[str, Any]:
        return {"turn": self.turn, "kind": self.kind, "ms": round(self.ms, 3)}


@dataclass(eq=False)
class SpeechTurn:
    """One stretch of one speaker's speech: its transcript fragments' span and text, its audio, its overlaps."""

    index: int
    speaker: str
    start_ms: float
    end_ms: float
    first_seq: int = -1
    last_seq: int = -1
    t_first: float | None = None  # when its first fragment crossed the wire (connection seconds)
    fragments: int = 0
    audio_start: int = 0  # encoded byte range of its audio in the speaker's stream
    audio_end: int = 0
    audio_format: AudioFormat = PCM16
    overlaps: list[Overlap] = field(default_factory=list)
    interrupted: bool = False
    latency_ms: float | None = None  # assistant turns: end of the user's speech it answers -> its start
    answers: int | None = None  # the user turn it answers
    _text: list[str] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        chunks = self._text
        if len(chunks) > 1:
            chunks[:] = ["".join(chunks)]
        return chunks[0] if chunks else ""

    @property
    def audio_bytes(self) -> int:
        return max(0, self.audio_end - self.audio_start)

    @property
    def audio_ms(self) -> float:
        return self.audio_format.duration_ms(self.audio_bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "speaker": self.speaker,
            "text": self.text,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "audio_ms": round(self.audio_ms, 3),
            "audio_bytes": self.audio_bytes,
            "latency_ms": self.latency_ms,
            "answers": self.answers,
            "interrupted": self.interrupted,
            "overlaps": [o.to_json() for o in self.overlaps],
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }


@dataclass(eq=False)
class Appended:
    """Context the client appended (``instructions``, ``thinking``, ``commentary``), with the server's ack."""

    kind: str
    content: str
    delegation_id: str | None
    t: float
    seq: int
    event_id: str | None = None
    start_ms: float | None = None  # where the server placed it on the timeline (from the ``…appended`` ack)
    end_ms: float | None = None
    t_acked: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "content": self.content,
            "delegation_id": self.delegation_id,
            "t": self.t,
            "seq": self.seq,
            "event_id": self.event_id,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "acked": self.t_acked is not None,
        }


@dataclass(slots=True)
class ToolResult:
    """A delegated tool call's result as the client returned it (``response.item.create``)."""

    call_id: str
    output: Any
    t: float
    seq: int


@dataclass(eq=False)
class Delegation:
    """Work the Live model handed off: where to, when (timeline ms), what the backend did, what came back."""

    id: str
    target: str  # client | responses | decisions (or what the wire named)
    offset_ms: float | None
    t_created: float
    seq: int
    response_id: str | None = None
    asked: str | None = None  # the user's speech it was delegated from (the turn at offset_ms)
    responses: list[StreamedResponse] = field(default_factory=list)
    replies: list[Appended] = field(default_factory=list)  # a client delegation's answers
    decisions: list[dict[str, Any]] = field(default_factory=list)  # decision.completed payloads
    tool_results: list[ToolResult] = field(default_factory=list)
    t_first_result: float | None = None
    t_last: float | None = None
    last_seq: int = -1

    @property
    def duration_ms(self) -> float | None:
        if self.t_last is None:
            return None
        return round(max(0.0, self.t_last - self.t_created) * 1000.0, 3)

    @property
    def first_result_ms(self) -> float | None:
        if self.t_first_result is None:
            return None
        return round(max(0.0, self.t_first_result - self.t_created) * 1000.0, 3)

    @property
    def status(self) -> str:
        if self.target == "responses":
            if not self.responses:
                return "pending"
            return self.responses[-1].status or "in_progress"
        if self.target == "client":
            return "answered" if self.replies else "pending"
        return "completed" if self.decisions else "pending"

    def returned(self) -> str:
        """What came back, as text: the backend's final text, the client's replies, the decisions' answers."""
        if self.target == "responses":
            texts = [r.text for r in self.responses if r.text]
            return "\n".join(texts)
        if self.target == "client":
            return "\n".join(r.content for r in self.replies if r.content)
        return "\n".join(_answers(d) for d in self.decisions)

    def to_json(self) -> dict[str, Any]:
        results = {r.call_id: r.output for r in self.tool_results}
        tools = [{**c.to_json(), "result": results.get(c.call_id or "")} for r in self.responses for c in r.tool_calls]
        return {
            "id": self.id,
            "target": self.target,
            "status": self.status,
            "offset_ms": self.offset_ms,
            "t_created": self.t_created,
            "seq": self.seq,
            "response_id": self.response_id,
            "asked": self.asked,
            "returned": self.returned(),
            "tools": tools,
            "responses": [r.to_json() for r in self.responses],
            "replies": [a.to_json() for a in self.replies],
            "decisions": list(self.decisions),
            "duration_ms": self.duration_ms,
            "first_result_ms": self.first_result_ms,
        }


def _answers(decision: dict[str, Any]) -> str:
    """A decision's answers on one line: ``name=choice`` / ``name=score`` / ``name=p``."""
    answers = decision.get("answers")
    if not isinstance(answers, list):
        return ""
    bits = []
    for a in answers[:32]:
        if not isinstance(a, dict):
            continue
        name = a.get("name") if isinstance(a.get("name"), str) else a.get("type")
        for key in ("choice", "score", "probability"):
            if key in a:
                bits.append(f"{name}={a[key]}")
                break
        else:
            bits.append(f"{name}")
    return ", ".join(str(b) for b in bits)
