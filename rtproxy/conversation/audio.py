"""Audio as the Realtime API carries it: PCM16 and G.711, to WAV and waveforms.

Pure functions on ``bytes`` (no I/O except :func:`write_wav`, which writes
where it is told). PCM16 is 16-bit little-endian mono. G.711 μ-law and A-law
(ITU-T G.711, 8 kHz) are decoded through 256-entry tables with
``bytes.translate`` and encoded through 65536-entry tables, so an hour of
audio converts in well under a second without ``audioop`` (removed from the
standard library in Python 3.13) or numpy. :func:`causal_tracks` lays a
conversation's clips out as they were heard, one after the other, for
``export --audio``'s conversation.wav.
"""

from __future__ import annotations

import sys
import wave
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..protocols.formats import AudioFormat
from ..protocols.wire import SERVER, Frame, parse_event

if TYPE_CHECKING:
    from .live import LiveSession
    from .model import Item
    from .realtime import Conversation

_BIG_ENDIAN = sys.byteorder == "big"


# --- G.711 (the reference algorithms, run once to fill the tables) -----------------


def _ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    t = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return (0x84 - t) if code & 0x80 else (t - 0x84)


def _alaw_to_linear(code: int) -> int:
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if code & 0x80 else -t


_SEG_END = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)


def _segment(value: int) -> int:
    for i, end in enumerate(_SEG_END):
        if value <= end:
            return i
    return 8


def _linear_to_ulaw(sample: int) -> int:
    sample >>= 2  # the 14-bit reference (Sun's g711.c, as audioop did)
    if sample < 0:
        sample, mask = -sample, 0x7F
    else:
        mask = 0xFF
    sample = min(sample, 8159) + (0x84 >> 2)
    seg = next((i for i, end in enumerate(_SEG_UEND) if sample <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((sample >> (seg + 1)) & 0x0F)) ^ mask


_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _linear_to_alaw(sample: int) -> int:
    if sample >= 0:
        mask = 0xD5
    else:
        mask, sample = 0x55, -sample - 1
    seg = _segment(sample)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (sample >> 4) & 0x0F if seg < 2 else (sample >> (seg + 3)) & 0x0F
    return aval ^ mask


def _decode_tables(to_linear: object) -> tuple[bytes, bytes]:
    lo, hi = bytearray(256), bytearray(256)
    for code in range(256):
        value = to_linear(code) & 0xFFFF  # type: ignore[operator]
        lo[code], hi[code] = value & 0xFF, value >> 8
    return bytes(lo), bytes(hi)


def _encode_table(to_code: object) -> bytes:
    """Code for every 16-bit sample, indexed by the sample's unsigned value."""
    return bytes(to_code(v - 0x10000 if v >= 0x8000 else v) for v in range(0x10000))  # type: ignore[operator]


_ULAW_LO, _ULAW_HI = _decode_tables(_ulaw_to_linear)
_ALAW_LO, _ALAW_HI = _decode_tables(_alaw_to_linear)
_ULAW_ENC: bytes | None = None
_ALAW_ENC: bytes | None = None


def _expand(data: bytes, lo: bytes, hi: bytes) -> bytes:
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(lo)
    out[1::2] = data.translate(hi)
    return bytes(out)


def ulaw_decode(data: bytes) -> bytes:
    """G.711 μ-law bytes to PCM16 (one sample per byte, same rate)."""
    return _expand(bytes(data), _ULAW_LO, _ULAW_HI)


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law bytes to PCM16 (one sample per byte, same rate)."""
    return _expand(bytes(data), _ALAW_LO, _ALAW_HI)


def _compress(pcm16: bytes, table: bytes) -> bytes:
    samples = array("H")
    samples.frombytes(pcm16[: len(pcm16) // 2 * 2])
    if _BIG_ENDIAN:
        samples.byteswap()
    return bytes(map(table.__getitem__, samples))


def ulaw_encode(pcm16: bytes) -> bytes:
    """PCM16 to G.711 μ-law (for tests, fixtures and redaction)."""
    global _ULAW_ENC
    if _ULAW_ENC is None:
        _ULAW_ENC = _encode_table(_linear_to_ulaw)
    return _compress(pcm16, _ULAW_ENC)


def alaw_encode(pcm16: bytes) -> bytes:
    """PCM16 to G.711 A-law (for tests, fixtures and redaction)."""
    global _ALAW_ENC
    if _ALAW_ENC is None:
        _ALAW_ENC = _encode_table(_linear_to_alaw)
    return _compress(pcm16, _ALAW_ENC)


def decode(data: bytes, fmt: AudioFormat) -> bytes:
    """Audio in ``fmt`` as PCM16 at ``fmt.rate`` (PCM16 passes through, an odd byte dropped)."""
    if fmt.encoding == "g711_ulaw":
        return ulaw_decode(data)
    if fmt.encoding == "g711_alaw":
        return alaw_decode(data)
    return bytes(data[: len(data) // 2 * 2])


def silence(fmt: AudioFormat, ms: float) -> bytes:
    """``ms`` of silence encoded in ``fmt`` (what a redacted audio chunk becomes)."""
    n = int(ms * fmt.rate / 1000)
    if fmt.encoding == "g711_ulaw":
        return b"\xff" * n
    if fmt.encoding == "g711_alaw":
        return b"\xd5" * n
    return bytes(2 * n)


# --- samples ------------------------------------------------------------------------


def samples(pcm16: bytes) -> array[int]:
    """PCM16 bytes as an array of signed ints."""
    a = array("h")
    a.frombytes(pcm16[: len(pcm16) // 2 * 2])
    if _BIG_ENDIAN:
        a.byteswap()
    return a


def to_bytes(a: array[int]) -> bytes:
    if _BIG_ENDIAN:
        a = array("h", a)
        a.byteswap()
    return a.tobytes()


def resample(pcm16: bytes, rate_in: int, rate_out: int) -> bytes:
    """PCM16 from one rate to another: integer up/down factors exactly, else nearest sample."""
    if rate_in == rate_out or not pcm16:
        return bytes(pcm16)
    src = samples(pcm16)
    n_in = len(src)
    if rate_out % rate_in == 0:
        k = rate_out // rate_in
        out = array("h", bytes(2 * n_in * k))
        for i in range(k):
            out[i::k] = src
        return to_bytes(out)
    if rate_in % rate_out == 0:
        return to_bytes(src[:: rate_in // rate_out])
    n_out = n_in * rate_out // rate_in
    step = rate_in / rate_out
    return to_bytes(array("h", [src[int(i * step)] for i in range(n_out)]))


def peaks(pcm16: bytes, buckets: int) -> list[tuple[int, int]]:
    """(min, max) sample of each of ``buckets`` equal slices, for drawing a waveform.

    Fewer samples than buckets gives one pair per sample; no audio gives [].
    """
    a = samples(pcm16)
    n = len(a)
    if n == 0 or buckets <= 0:
        return []
    buckets = min(buckets, n)
    out: list[tuple[int, int]] = []
    for b in range(buckets):
        chunk = a[b * n // buckets : (b + 1) * n // buckets]
        out.append((min(chunk), max(chunk)))
    return out


# --- placing audio on a timeline ------------------------------------------------------


def place(segments: Iterable[tuple[float, bytes]], rate: int, length: int | None = None) -> array[int]:
    """A mono track of samples with each PCM16 segment placed at its offset in seconds.

    Where segments overlap they are mixed (summed, clipped); the track is as
    long as the last segment's end, or ``length`` samples.
    """
    placed = [(max(0, round(t * rate)), samples(pcm)) for t, pcm in segments if pcm]
    end = max((start + len(a) for start, a in placed), default=0)
    track = array("h", bytes(2 * max(end, length or 0)))
    written_to = 0
    for start, a in sorted(placed, key=lambda p: p[0]):
        stop = start + len(a)
        if start >= written_to:
            track[start:stop] = a
        else:  # overlap with what is already there: mix the overlapping samples
            overlap = min(written_to, stop) - start
            for i in range(overlap):
                v = track[start + i] + a[i]
                track[start + i] = 32767 if v > 32767 else -32768 if v < -32768 else v
            track[start + overlap : stop] = a[overlap:]
        written_to = max(written_to, stop)
    if length is not None:
        del track[length:]
    return track


def stereo_mix(left: list[tuple[float, bytes]], right: list[tuple[float, bytes]], rate: int) -> bytes:
    """Interleaved stereo PCM16: ``left`` and ``right`` segments (offset s, PCM16 at ``rate``).

    Segments are written straight into the interleaved buffer with strided
    byte slices (an hour of stereo mixes in a fraction of a second); only
    where two segments of one channel overlap are samples summed one by one.
    """
    channels = [
        sorted(
            ((max(0, round(t * rate)), bytes(pcm[: len(pcm) // 2 * 2])) for t, pcm in side if len(pcm) >= 2),
            key=lambda seg: seg[0],  # stable: segments starting together mix in the order given
        )
        for side in (left, right)
    ]
    n = max((start + len(pcm) // 2 for side in channels for start, pcm in side), default=0)
    out = bytearray(4 * n)
    for ch, side in enumerate(channels):
        written = 0
        for start, pcm in side:
            stop = start + len(pcm) // 2
            if start < written:  # overlaps what this channel already holds: mix that stretch
                overlap = min(written, stop) - start
                have = _get(out, ch, start, overlap)
                both = zip(samples(have), samples(pcm[: 2 * overlap]), strict=True)
                mixed = array("h", (_clip(a + b) for a, b in both))
                pcm = to_bytes(mixed) + pcm[2 * overlap :]
            _put(out, ch, start, pcm)
            written = max(written, stop)
    return bytes(out)


def _put(out: bytearray, ch: int, start: int, pcm: bytes) -> None:
    base, k = 4 * start + 2 * ch, len(pcm) // 2
    out[base : base + 4 * k : 4] = pcm[0::2]
    out[base + 1 : base + 1 + 4 * k : 4] = pcm[1::2]


def _get(out: bytearray, ch: int, start: int, k: int) -> bytes:
    base = 4 * start + 2 * ch
    pcm = bytearray(2 * k)
    pcm[0::2] = out[base : base + 4 * k : 4]
    pcm[1::2] = out[base + 1 : base + 1 + 4 * k : 4]
    return bytes(pcm)


def _clip(v: int) -> int:
    return 32767 if v > 32767 else -32768 if v < -32768 else v


# --- the conversation in causal order ------------------------------------------------
#
# A recording keeps when each clip crossed the wire, not when it was heard: a
# fast client (every test recording) uploads a second of speech in a
# millisecond and the server streams its answer faster than real time, so
# the recorded times put the question and the answer on top of each other.
# conversation.wav instead plays each clip no earlier than the end of the
# clip before it in conversation order (the answer after the question that
# triggered it, the next question after the answer), and no earlier than its
# recorded time. A barge-in stays an overlap: a user clip that interrupted the
# assistant clip before it keeps its recorded offset from that clip's start,
# and the assistant clip is as long as what was heard (the reducer already
# cuts a truncated part at the truncation's audio_end_ms).


@dataclass(frozen=True)
class Clip:
    """One item's audio for the conversation timeline."""

    t: float  # recorded start, seconds since the session began
    pcm: bytes  # PCM16 at the timeline's rate
    user: bool  # the user's (left channel) or the assistant's (right channel)
    barge_in: bool = False  # a user clip that started while the clip before it was playing


def causal_tracks(clips: Iterable[Clip], rate: int) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
    """(user, assistant) segments for :func:`stereo_mix`, placed in causal order.

    Clips come in conversation order. Each starts at the later of its
    recorded time and the end of everything placed before it; a barge-in
    clip starts instead at the start of the clip it interrupted plus their
    recorded distance (never before that start), so it overlaps it as it
    did. Offsets are whole samples at ``rate``, so ``stereo_mix`` lays each
    clip exactly where it was placed.
    """
    user: list[tuple[float, bytes]] = []
    assistant: list[tuple[float, bytes]] = []
    end = 0  # where everything placed so far has ended (samples)
    prev: tuple[int, int] | None = None  # (placed start, recorded start) of the clip before, in samples
    for clip in clips:
        n = len(clip.pcm) // 2
        if n == 0:
            continue
        recorded = max(0, round(clip.t * rate))
        if clip.barge_in and prev is not None:
            start = prev[0] + max(0, recorded - prev[1])
        else:
            start = max(recorded, end)
        (user if clip.user else assistant).append((start / rate, clip.pcm))
        end = max(end, start + n)
        prev = (start, recorded)
    return user, assistant


def conversation_clips(
    conv: Conversation, pcm: Mapping[str, bytes], speech_started: Mapping[str, float] | None = None
) -> list[Clip]:
    """The clips of a conversation's items with audio, in conversation order.

    ``pcm`` holds each item's audio (by item id) at the timeline's rate;
    items without an entry, or never heard, are left out. A user clip is a
    barge-in when the assistant clip just before it was interrupted: its item
    was truncated, its response was cancelled (``response.cancel`` or the
    server's turn detection), or the user's ``speech_started`` for this clip
    (``speech_started``: item id to the time it arrived, see
    :func:`note_speech_started`) came after that clip began and before its
    response was done.
    """
    clips: list[Clip] = []
    before: Item | None = None
    for item in conv.items:
        data = pcm.get(item.id)
        if item.t_start is None or not data:
            continue
        user = item.role == "user"
        barge_in = user and before is not None and before.role != "user"
        if barge_in and before is not None:
            barge_in = _interrupted(conv, before, (speech_started or {}).get(item.id))
        clips.append(Clip(item.t_start, data, user, barge_in))
        before = item
    return clips


def _interrupted(conv: Conversation, answer: Item, speech_at: float | None) -> bool:
    """Whether the assistant's ``answer`` was cut off (truncated, cancelled, or spoken over while generated)."""
    if answer.truncated_ms is not None:
        return True
    r = conv.response(answer.response_id) if answer.response_id is not None else None
    if r is not None and r.status == "cancelled":
        return True
    if speech_at is None or answer.t_start is None or speech_at < answer.t_start:
        return False
    return r is None or r.t_done is None or speech_at < r.t_done


def note_speech_started(frames: Iterable[Frame], into: dict[str, float]) -> Iterator[Frame]:
    """The frames unchanged, noting in ``into`` when each user item's ``speech_started`` arrived.

    Only short server text frames are looked at (a substring test first), so
    audio frames pass through at the cost of a length check.
    """
    for frame in frames:
        data = frame.data
        if type(data) is str and len(data) < 4096 and frame.direction == SERVER and "speech_started" in data:
            event = parse_event(data)
            if event is not None and event.get("type") == "input_audio_buffer.speech_started":
                item_id = event.get("item_id")
                if isinstance(item_id, str):
                    into.setdefault(item_id, frame.t)
        yield frame


# --- WAV ------------------------------------------------------------------------------


def write_wav(target: str | Path | IO[bytes], pcm16: bytes, rate: int, channels: int = 1) -> None:
    """Write PCM16 (interleaved if stereo) as a WAV file."""
    with wave.open(target if not isinstance(target, Path) else str(target), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)


def duration_ms(pcm16: bytes, rate: int, channels: int = 1) -> float:
    return len(pcm16) // (2 * channels) / rate * 1000.0


# --- GPT-Live: turns on the session timeline --------------------------------------------------


def live_tracks(live: LiveSession) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]], int]:
    """(user, assistant, rate) segments for :func:`stereo_mix` of a GPT-Live session.

    Live turns already sit on one timeline (ms from the session's start, from the transcript fragments), so
    no causal placing is needed: each turn's audio starts where the turn started, and speech over the other
    speaker (a barge-in, a backchannel) overlaps as it did. The user's audio is its slice of the input stream,
    the assistant's the output audio its turn received (from where its first chunk sits, when the stream is
    timestamped: a sideband's reflected audio); both at the higher of the two streams' rates.
    """
    rate = max(live.input.format.rate, live.output.format.rate)
    sides: tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]] = ([], [])
    for turn in live.finish():
        stream = live.input if turn.speaker == "user" else live.output
        pcm = stream.pcm16(turn.audio_start, turn.audio_end)
        if not pcm:
            continue
        if stream.format.rate != rate:
            pcm = resample(pcm, stream.format.rate, rate)
        at = stream.start_at(turn.audio_start) if turn.speaker != "user" else None  # timed: where it sits
        sides[0 if turn.speaker == "user" else 1].append(((turn.start_ms if at is None else at) / 1000.0, pcm))
    return sides[0], sides[1], rate
