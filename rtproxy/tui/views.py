"""Immutable snapshots of a reassembled conversation, for the UI thread.

The reducer (:class:`rtproxy.conversation.realtime.Conversation`) lives in a worker
thread and keeps changing while a session records; after each batch the
worker builds a :class:`ConversationView` (plain frozen data, waveform peaks
included) and posts it. Pure: no Textual, no I/O.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..protocols.formats import AudioFormat

if TYPE_CHECKING:
    from ..conversation.realtime import Conversation, Item, Response

#: Width of a waveform, in buckets (one block character each).
WAVE_BUCKETS = 48


@dataclass(frozen=True)
class ItemView:
    id: str
    type: str
    role: str | None
    status: str | None
    text: str
    transcript: str
    name: str | None
    call_id: str | None
    arguments: str | None
    output: str | None
    audio_ms: float
    peaks: tuple[tuple[int, int], ...]
    truncated_ms: float | None
    response_id: str | None
    first_seq: int
    last_seq: int
    t_start: float | None

    @property
    def speaker(self) -> str:
        if self.type == "function_call":
            return "function call"
        if self.type == "function_call_output":
            return "function output"
        return self.role or self.type


@dataclass(frozen=True)
class ResponseView:
    id: str
    status: str | None
    status_details: Mapping[str, Any] | None
    usage: Mapping[str, Any] | None
    output_item_ids: tuple[str, ...]
    trigger_type: str | None
    t_trigger: float | None
    t_created: float | None
    t_first_audio: float | None
    t_first_delta: float | None
    t_done: float | None
    latency_ms: Mapping[str, float | None]
    audio_ms: float

    @property
    def total_tokens(self) -> int | None:
        value = (self.usage or {}).get("total_tokens")
        return value if type(value) is int and 0 <= value < 2**63 else None


@dataclass(frozen=True)
class ConversationView:
    items: tuple[ItemView, ...] = ()
    responses: tuple[ResponseView, ...] = ()
    formats: tuple[AudioFormat | None, AudioFormat | None] = (None, None)
    errors: int = 0
    anomalies: int = 0
    events_fed: int = 0
    dialect: str | None = None
    by_id: Mapping[str, ItemView] = field(default_factory=dict)
    by_response: Mapping[str, ResponseView] = field(default_factory=dict)

    def response(self, response_id: str | None) -> ResponseView | None:
        return self.by_response.get(response_id) if response_id is not None else None

    @property
    def total_tokens(self) -> int:
        return sum(r.total_tokens or 0 for r in self.responses)


class PeaksCache:
    """Waveform peaks per item, recomputed only when the item's audio grew."""

    def __init__(self, buckets: int = WAVE_BUCKETS) -> None:
        self.buckets = buckets
        self._cache: dict[str, tuple[float, tuple[tuple[int, int], ...]]] = {}

    def peaks(self, item: Item) -> tuple[tuple[int, int], ...]:
        ms = item.audio_ms
        if ms <= 0:
            return ()
        hit = self._cache.get(item.id)
        if hit is not None and hit[0] == ms:
            return hit[1]
        value = tuple(fast_peaks(item.pcm16(), self.buckets))
        self._cache[item.id] = (ms, value)
        return value


def item_view(item: Item, peaks: tuple[tuple[int, int], ...]) -> ItemView:
    return ItemView(
        id=item.id,
        type=item.type,
        role=item.role,
        status=item.status,
        text=item.text,
        transcript=item.transcript,
        name=item.name,
        call_id=item.call_id,
        arguments=item.arguments,
        output=item.output,
        audio_ms=item.audio_ms,
        peaks=peaks,
        truncated_ms=item.truncated_ms,
        response_id=item.response_id,
        first_seq=item.first_seq,
        last_seq=item.last_seq,
        t_start=item.t_start,
    )


def response_view(r: Response) -> ResponseView:
    return ResponseView(
        id=r.id,
        status=r.status,
        status_details=r.status_details,
        usage=r.usage,
        output_item_ids=tuple(r.output_item_ids),
        trigger_type=r.trigger_type,
        t_trigger=r.t_trigger,
        t_created=r.t_created,
        t_first_audio=r.t_first_audio,
        t_first_delta=r.t_first_delta,
        t_done=r.t_done,
        latency_ms=dict(r.latency_ms),
        audio_ms=r.audio_ms,
    )


class ViewBuilder:
    """Builds snapshots of one reducer, reusing the view of every item and
    response that did not change (the widget re-renders only the others)."""

    def __init__(self) -> None:
        self.peaks = PeaksCache()
        self._items: dict[str, ItemView] = {}
        self._responses: dict[str, ResponseView] = {}

    def build(self, conv: Conversation) -> ConversationView:
        """Snapshot the reducer's state (call it on the thread that feeds it)."""
        items = tuple(self._reuse(self._items, item_view(i, self.peaks.peaks(i))) for i in conv.items)
        responses = tuple(self._reuse(self._responses, response_view(r)) for r in conv.responses)
        return ConversationView(
            items=items,
            responses=responses,
            formats=(conv.input_format, conv.output_format),
            errors=len(conv.errors),
            anomalies=len(conv.anomalies),
            events_fed=conv.events_fed,
            dialect=conv.dialect,
            by_id={i.id: i for i in items},
            by_response={r.id: r for r in responses},
        )

    @staticmethod
    def _reuse(cache: dict[str, Any], view: Any) -> Any:
        old = cache.get(view.id)
        if old is not None and old == view:
            return old
        cache[view.id] = view
        return view


def fast_peaks(pcm16: bytes, buckets: int, max_samples: int = 24_000) -> list[tuple[int, int]]:
    """Approximate (min, max) per bucket from at most ``max_samples`` evenly spaced samples.

    A waveform one line high needs no more, and an hour of audio then costs
    milliseconds instead of seconds (:func:`rtproxy.conversation.audio.peaks` reads every sample).
    """
    from ..conversation import audio

    n = len(pcm16) // 2
    if n == 0 or buckets <= 0:
        return []
    step = max(n // max_samples, 1)
    if step == 1:
        return audio.peaks(pcm16, buckets)
    sampled = array("h")
    sampled.frombytes(pcm16[: n * 2])
    return audio.peaks(sampled[::step].tobytes(), buckets)


def pretty_json(text: str | None) -> str:
    """Function arguments or output, indented if they are JSON, else as they are."""
    if not text:
        return ""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # not JSON, or nested past what orjson writes
        return text


BLOCKS = " ▁▂▃▄▅▆▇█"


def waveform(peaks: tuple[tuple[int, int], ...]) -> str:
    """Block characters, one per bucket, height by the bucket's peak amplitude."""
    if not peaks:
        return ""
    amps = [max(abs(lo), abs(hi)) for lo, hi in peaks]
    top = max(amps) or 1
    return "".join(BLOCKS[round(a / top * (len(BLOCKS) - 1))] for a in amps)
