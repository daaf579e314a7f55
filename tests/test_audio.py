"""rtproxy.conversation.audio: G.711 against known samples, round trips, WAV, peaks, placement, causal timeline."""

from __future__ import annotations

import base64
import io
import math
import os
import struct
import subprocess
import wave
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtproxy.conversation import audio
from rtproxy.conversation.realtime import Conversation
from rtproxy.protocols.formats import ALAW, PCM16, ULAW, AudioFormat
from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame
from tests.conftest import rtproxy_exe


def sine(n: int, rate: int, freq: float = 440.0, amplitude: float = 0.8) -> bytes:
    return b"".join(
        struct.pack("<h", round(32767 * amplitude * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)
    )


def g711_tolerance(sample: int) -> float:
    """G.711 keeps about 4 bits of mantissa: the error is at most half a step of the sample's segment."""
    return abs(sample) / 16 + 40


def test_known_ulaw_and_alaw_codes_decode_to_the_g711_values() -> None:
    """Codes with textbook values decode to them (μ-law ±32124 and 0, A-law ±32256 and ±8)."""
    assert audio.samples(audio.ulaw_decode(bytes([0xFF, 0x7F, 0x00, 0x80]))).tolist() == [0, 0, -32124, 32124]
    assert audio.samples(audio.alaw_decode(bytes([0xD5, 0x55, 0x2A, 0xAA]))).tolist() == [8, -8, -32256, 32256]


@pytest.mark.parametrize(
    "encode,decode", [(audio.ulaw_encode, audio.ulaw_decode), (audio.alaw_encode, audio.alaw_decode)]
)
def test_every_g711_code_survives_decode_then_encode(encode, decode) -> None:  # type: ignore[no-untyped-def]
    """Each of the 256 codes decodes to a value that encodes back to a code with the same value."""
    codes = bytes(range(256))
    linear = decode(codes)
    assert decode(encode(linear)) == linear


def test_pcm16_passes_through_unchanged() -> None:
    """PCM16 'decoding' is the identity (an odd trailing byte dropped)."""
    pcm = sine(2400, 24000)
    assert audio.decode(pcm, PCM16) == pcm
    assert audio.decode(pcm + b"\x01", PCM16) == pcm


@pytest.mark.parametrize("fmt", [ULAW, ALAW], ids=["ulaw", "alaw"])
def test_a_sine_survives_a_g711_round_trip_within_its_error(fmt: AudioFormat) -> None:
    """A 440 Hz sine encoded to G.711 and decoded differs from the original by at most half a quantisation step."""
    pcm = sine(8000, 8000)
    encode = audio.ulaw_encode if fmt is ULAW else audio.alaw_encode
    coded = encode(pcm)
    assert len(coded) == 8000
    back = audio.samples(audio.decode(coded, fmt))
    original = audio.samples(pcm)
    worst = max(abs(a - b) - g711_tolerance(a) for a, b in zip(original, back, strict=True))
    assert worst <= 0
    assert sum(abs(a - b) for a, b in zip(original, back, strict=True)) / len(original) < 200


@pytest.mark.parametrize("encode", [audio.ulaw_encode, audio.alaw_encode])
def test_g711_error_bound_holds_for_every_16_bit_sample(encode) -> None:  # type: ignore[no-untyped-def]
    """Over all 65536 PCM16 values, encoding then decoding stays within the G.711 error bound."""
    decode = audio.ulaw_decode if encode is audio.ulaw_encode else audio.alaw_decode
    every = struct.pack("<65536h", *range(-32768, 32768))
    back = audio.samples(decode(encode(every)))
    assert all(abs(v - b) <= g711_tolerance(v) for v, b in zip(range(-32768, 32768), back, strict=True))


def test_wav_written_reads_back_with_the_wave_module(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A WAV written by write_wav has the rate, channels, width and frames given to it."""
    pcm = sine(4800, 24000)
    path = tmp_path / "a.wav"
    audio.write_wav(path, pcm, 24000)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 24000, 4800)
        assert w.readframes(4800) == pcm
    buf = io.BytesIO()
    audio.write_wav(buf, pcm + pcm, 8000, channels=2)
    buf.seek(0)
    with wave.open(buf, "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, 4800)


def test_peaks_are_the_min_and_max_of_each_bucket() -> None:
    """peaks() matches a brute-force min/max over equal slices; short or empty audio is handled."""
    pcm = sine(1000, 8000, freq=97)
    s = audio.samples(pcm).tolist()
    got = audio.peaks(pcm, 7)
    assert got == [
        (min(s[b * 1000 // 7 : (b + 1) * 1000 // 7]), max(s[b * 1000 // 7 : (b + 1) * 1000 // 7])) for b in range(7)
    ]
    assert audio.peaks(struct.pack("<3h", 5, -2, 9), 10) == [(5, 5), (-2, -2), (9, 9)]
    assert audio.peaks(b"", 10) == []


def test_resample_by_integer_factors_keeps_duration() -> None:
    """8 kHz → 24 kHz triples the samples (each repeated); 24 kHz → 8 kHz keeps every third."""
    pcm = struct.pack("<4h", 1, 2, 3, 4)
    up = audio.resample(pcm, 8000, 24000)
    assert audio.samples(up).tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert audio.resample(up, 24000, 8000) == pcm
    assert len(audio.samples(audio.resample(sine(441, 44100), 44100, 24000))) == 240


def test_stereo_mix_places_each_side_at_its_offset() -> None:
    """Left and right segments land at round(t × rate) on their own channel; overlaps are summed and clipped."""
    a = struct.pack("<3h", 100, 200, 300)
    b = struct.pack("<2h", 30000, 30000)
    mixed = audio.samples(audio.stereo_mix([(0.001, a), (0.002, b)], [(0.0, a)], 1000))
    left, right = mixed[0::2].tolist(), mixed[1::2].tolist()
    assert left == [0, 100, 200 + 30000, 300 + 30000]
    assert right == [100, 200, 300, 0]
    clipped = audio.place([(0.0, b), (0.0, b)], 1000)
    assert clipped.tolist() == [32767, 32767]


def test_silence_decodes_to_zero_in_every_format() -> None:
    """silence() in each encoding decodes to PCM16 samples of (near) zero of the right length."""
    for fmt in (PCM16, ULAW, ALAW):
        pcm = audio.decode(audio.silence(fmt, 10), fmt)
        assert len(pcm) == 2 * fmt.rate // 100
        assert max(abs(v) for v in audio.samples(pcm)) <= 8


segments = st.lists(
    st.tuples(st.floats(0, 0.05), st.binary(max_size=80).map(lambda b: b[: len(b) // 2 * 2])), max_size=4
)


@settings(max_examples=100, deadline=None)
@given(left=segments, right=segments)
def test_stereo_mix_channels_equal_the_mono_placements(
    left: list[tuple[float, bytes]], right: list[tuple[float, bytes]]
) -> None:
    """Each channel of stereo_mix is exactly place() of that side's segments, padded with silence."""
    mixed = audio.samples(audio.stereo_mix(left, right, 1000))
    lt, rt = audio.place(left, 1000).tolist(), audio.place(right, 1000).tolist()
    n = max(len(lt), len(rt))
    assert mixed[0::2].tolist() == lt + [0] * (n - len(lt))
    assert mixed[1::2].tolist() == rt + [0] * (n - len(rt))


# --- conversation.wav: clips in causal order ---------------------------------------------------

RATE = 24000
RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


class Script:
    """A hand-built session: (direction, t, event) in order, fed to the real reducer."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, dict[str, Any]]] = []
        self.n = 0

    def add(self, direction: str, t: float, event: dict[str, Any]) -> None:
        self.events.append((direction, t, event))

    def user_turn(self, t: float, pcm: bytes, item_id: str, *, speech_at: float | None = None) -> None:
        """The client uploads ``pcm`` in one append arriving at ``t`` and commits it; the server commits it."""
        self.add("client", t, {"type": "input_audio_buffer.append", "audio": b64(pcm)})
        self.add("client", t, {"type": "input_audio_buffer.commit"})
        if speech_at is not None:
            self.add("server", speech_at, {"type": "input_audio_buffer.speech_started", "item_id": item_id})
        self.add("server", t, {"type": "input_audio_buffer.committed", "item_id": item_id})

    def answer(self, t: float, pcm: bytes, rid: str, item_id: str, *, status: str = "completed") -> None:
        """A response whose one assistant item streams ``pcm`` in 100 ms deltas from ``t``, done right after."""
        self.add("client", t, {"type": "response.create"})
        self.add("server", t, {"type": "response.created", "response": {"id": rid, "status": "in_progress"}})
        item = {"id": item_id, "type": "message", "role": "assistant"}
        self.add("server", t, {"type": "response.output_item.added", "response_id": rid, "item": item})
        step = RATE // 10 * 2
        for i in range(0, len(pcm), step):
            delta = {"response_id": rid, "item_id": item_id, "content_index": 0, "delta": b64(pcm[i : i + step])}
            self.add("server", t + i / step * 0.001, {"type": "response.output_audio.delta", **delta})
        self.done(t + 0.01, rid, status)

    def done(self, t: float, rid: str, status: str = "completed") -> None:
        self.add("server", t, {"type": "response.done", "response": {"id": rid, "status": status}})

    def truncate(self, t: float, item_id: str, audio_end_ms: int) -> None:
        cut = {"item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}
        self.add("client", t, {"type": "conversation.item.truncate", **cut})
        self.add("server", t, {"type": "conversation.item.truncated", **cut})

    def conversation(self) -> Conversation:
        conv = Conversation()
        for seq, (direction, t, event) in enumerate(self.events):
            conv.feed_event(Direction(direction), t, event, seq)
        return conv

    def speech_started(self) -> dict[str, float]:
        return {e["item_id"]: t for _, t, e in self.events if e["type"] == "input_audio_buffer.speech_started"}

    def mix(self) -> tuple[list[int], list[int]]:
        """conversation.wav's (left, right) samples, built as `export --audio` builds it."""
        conv = self.conversation()
        pcm = {item.id: item.pcm16() for item in conv.items if item.audio_ms > 0}
        left, right = audio.causal_tracks(audio.conversation_clips(conv, pcm, self.speech_started()), RATE)
        mixed = audio.samples(audio.stereo_mix(left, right, RATE))
        return mixed[0::2].tolist(), mixed[1::2].tolist()


def tone_of(ms: int, level: int) -> bytes:
    """``ms`` of a constant non-zero level: easy to find in a mix."""
    return struct.pack("<h", level) * (RATE * ms // 1000)


def span(channel: list[int], level: int) -> tuple[int, int]:
    """(first, one past last) sample of ``channel`` holding ``level``, checking the stretch is unbroken."""
    assert level in channel, f"no stretch at level {level}"
    first = channel.index(level)
    last = len(channel) - channel[::-1].index(level)
    assert set(channel[first:last]) == {level}
    return first, last


def test_a_fast_question_and_answer_play_one_after_the_other() -> None:
    """A 0.5 s question uploaded in a burst and its 0.8 s answer streamed 10 ms later give 0.5 + 0.8 s, in order."""
    s = Script()
    s.user_turn(0.01, tone_of(500, 1000), "item_u1")
    s.answer(0.02, tone_of(800, 2000), "resp_1", "item_a1")
    left, right = s.mix()
    assert len(left) == 12000 + 19200  # exactly the two clips' PCM16 samples, one after the other
    assert span(left, 1000) == (0, 12000) and set(left[12000:]) == {0}
    assert span(right, 2000) == (12000, 31200) and set(right[:12000]) == {0}


def test_a_multi_turn_session_keeps_its_clips_apart_and_in_order() -> None:
    """Three fast turns: every clip starts where the one before it ended, user and assistant alternating."""
    s = Script()
    t = 0.0
    for n in range(3):
        s.user_turn(t + 0.01, tone_of(300 + 100 * n, 1000 + n), f"item_u{n}")
        s.answer(t + 0.02, tone_of(400 + 100 * n, 2000 + n), f"resp_{n}", f"item_a{n}")
        t += 0.05
    left, right = s.mix()
    spans = []
    for n in range(3):
        spans += [span(left, 1000 + n), span(right, 2000 + n)]
    assert spans[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # back to back, in order
    assert [b - a for a, b in spans] == [RATE * ms // 1000 for ms in (300, 400, 400, 500, 500, 600)]
    assert len(left) == len(right) == spans[-1][1]


def test_a_clip_recorded_after_the_one_before_it_ended_keeps_its_time() -> None:
    """A clip is never pulled earlier: a reply recorded after the question ended starts at its recorded time."""
    s = Script()
    s.user_turn(0.5, tone_of(500, 1000), "item_u1")  # spoken 0.0–0.5 s, arrived at its end
    s.answer(0.9, tone_of(200, 2000), "resp_1", "item_a1")
    left, right = s.mix()
    assert span(left, 1000) == (0, 12000)
    assert span(right, 2000) == (round(0.9 * RATE), round(0.9 * RATE) + 4800)


def barge_in_script(signal: str) -> Script:
    """Question (0.5 s), answer (1 s streamed from 0.6 s), a second question spoken from 0.8 s over the answer."""
    s = Script()
    s.user_turn(0.5, tone_of(500, 1000), "item_u1")
    if signal == "speech_started":  # the user starts talking while the answer is still being generated
        s.add("client", 0.6, {"type": "response.create"})
        s.add("server", 0.6, {"type": "response.created", "response": {"id": "resp_1"}})
        item = {"id": "item_a1", "type": "message", "role": "assistant"}
        s.add("server", 0.6, {"type": "response.output_item.added", "response_id": "resp_1", "item": item})
        delta = {"response_id": "resp_1", "item_id": "item_a1", "content_index": 0, "delta": b64(tone_of(1000, 2000))}
        s.add("server", 0.6, {"type": "response.output_audio.delta", **delta})
        s.user_turn(1.2, tone_of(400, 3000), "item_u2", speech_at=0.85)
        s.done(1.3, "resp_1")
        return s
    s.answer(0.6, tone_of(1000, 2000), "resp_1", "item_a1", status="cancelled" if signal == "cancel" else "completed")
    if signal == "truncate":
        s.truncate(0.9, "item_a1", 300)
    s.user_turn(1.2, tone_of(400, 3000), "item_u2")
    return s


@pytest.mark.parametrize("signal", ["truncate", "cancel", "speech_started"])
def test_a_barge_in_stays_an_overlap(signal: str) -> None:
    """A user clip that interrupted the answer keeps its recorded offset into it; a truncated answer is cut."""
    left, right = barge_in_script(signal).mix()
    answer_start = round(0.6 * RATE)  # after the first question ended (0.5 s), at its recorded time
    heard = 7200 if signal == "truncate" else 24000  # audio_end_ms=300, else all of it
    assert span(left, 1000) == (0, 12000)
    assert span(right, 2000) == (answer_start, answer_start + heard)
    second = round(0.8 * RATE)  # 0.4 s arriving at 1.2 s: spoken from 0.8 s, 0.2 s into the answer
    assert span(left, 3000) == (second, second + 9600)
    assert second < answer_start + heard  # the overlap stays
    assert len(left) == max(second + 9600, answer_start + heard)


def test_without_a_barge_in_the_next_question_waits_for_the_answer() -> None:
    """The same session with no truncation, cancel or speech over the answer plays the second question after it."""
    s = Script()
    s.user_turn(0.5, tone_of(500, 1000), "item_u1")
    s.answer(0.6, tone_of(1000, 2000), "resp_1", "item_a1")
    s.user_turn(1.2, tone_of(400, 3000), "item_u2", speech_at=0.85)  # speech after response.done (0.61 s)
    left, right = s.mix()
    assert span(right, 2000) == (14400, 14400 + 24000)
    assert span(left, 3000) == (14400 + 24000, 14400 + 24000 + 9600)


def test_an_interrupted_answer_alone_is_cut_at_audio_end_ms() -> None:
    """An answer cancelled and truncated with no user audio after it is exactly the audio_end_ms that was heard."""
    s = Script()
    s.answer(0.0, tone_of(1000, 2000), "resp_1", "item_a1", status="cancelled")
    s.truncate(0.05, "item_a1", 300)
    left, right = s.mix()
    assert span(right, 2000) == (0, 7200) and len(right) == 7200 and set(left) == {0}


def test_speech_started_is_noted_from_server_frames_only() -> None:
    """note_speech_started passes every frame through unchanged and notes the first speech_started per item."""
    events = [
        (CLIENT, 0.1, '{"type":"input_audio_buffer.speech_started","item_id":"x"}'),
        (SERVER, 0.2, '{"type":"input_audio_buffer.speech_started","item_id":"a"}'),
        (SERVER, 0.3, '{"type":"input_audio_buffer.speech_started","item_id":"a"}'),
        (SERVER, 0.4, '{"type":"input_audio_buffer.speech_stopped","item_id":"b","note":"speech_started"}'),
        (SERVER, 0.5, "speech_started, not JSON"),
        (SERVER, 0.6, b"speech_started"),
    ]
    frames = [Frame(i, t, d, data) for i, (d, t, data) in enumerate(events)]
    noted: dict[str, float] = {}
    assert list(audio.note_speech_started(frames, noted)) == frames
    assert noted == {"a": 0.2}


def import_and_export(recording: Path, tmp_path: Path) -> Path:
    """`rtproxy import` the recording into a fresh database and `rtproxy export --audio` it (real processes)."""
    db = tmp_path / "t.db"
    env = {**os.environ}
    done = subprocess.run(
        [*rtproxy_exe(), "import", str(recording), "--db", str(db)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    sid = done.stdout.strip()
    out = tmp_path / "audio"
    cmd = [*rtproxy_exe(), "export", sid, "--audio", str(out), "--db", str(db)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return out


def read_frames(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getnframes(), w.readframes(w.getnframes())


@pytest.mark.parametrize("name", ["voice-ga", "voice-beta"])
def test_export_audio_of_a_fast_recording_plays_the_answer_after_the_question(name: str, tmp_path: Path) -> None:
    """`rtproxy export --audio` on a test recording: conversation.wav lasts the question plus the answer (2 s),
    the user on the left first, then the assistant on the right, each exactly its own WAV."""
    out = import_and_export(RECORDINGS / f"{name}.jsonl", tmp_path)
    user_wav, bot_wav = sorted(p for p in out.iterdir() if p.name != "conversation.wav")
    _, n_user, said = read_frames(user_wav)
    _, n_bot, answer = read_frames(bot_wav)
    assert n_user == n_bot == RATE  # 1 s each
    with wave.open(str(out / "conversation.wav"), "rb") as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(2.0)
    channels, n, mix = read_frames(out / "conversation.wav")
    assert (channels, n) == (2, n_user + n_bot)
    left = audio.to_bytes(audio.samples(mix)[0::2])
    right = audio.to_bytes(audio.samples(mix)[1::2])
    assert left == said + bytes(2 * n_bot)
    assert right == bytes(2 * n_user) + answer


def test_a_barge_in_from_a_fast_client_starts_no_earlier_than_the_answer_it_interrupts() -> None:
    """A fast recording's interrupting question, recorded as spoken before the answer began, starts with the answer."""
    s = Script()
    s.user_turn(0.01, tone_of(500, 1000), "item_u1")
    s.answer(0.02, tone_of(1000, 2000), "resp_1", "item_a1", status="cancelled")
    s.truncate(0.03, "item_a1", 300)
    s.user_turn(0.04, tone_of(400, 3000), "item_u2")  # 0.4 s arriving at 0.04 s: "spoken" from 0.0 s
    left, right = s.mix()
    assert span(right, 2000) == (12000, 12000 + 7200)
    assert span(left, 3000) == (12000, 12000 + 9600)
    assert len(left) == 12000 + 9600


clips = st.lists(
    st.tuples(st.floats(0, 0.1), st.integers(0, 40), st.booleans()).map(
        lambda c: audio.Clip(c[0], struct.pack("<h", 1) * c[1], c[2])
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(clips=clips)
def test_clips_without_barge_in_never_overlap_keep_order_and_never_move_earlier(clips: list[audio.Clip]) -> None:
    """Any clips with no barge-in are placed in the order given, back to back or later, never before their time."""
    rate = 1000
    user, assistant = audio.causal_tracks(clips, rate)
    end = 0
    kept = [c for c in clips if len(c.pcm) >= 2]
    assert len(user) + len(assistant) == len(kept)
    by_side = {True: iter(user), False: iter(assistant)}
    for clip in kept:
        t, pcm = next(by_side[clip.user])
        start = round(t * rate)
        assert pcm is clip.pcm and start >= round(clip.t * rate) and start >= end
        end = start + len(pcm) // 2
