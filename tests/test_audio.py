"""rtproxy.audio: G.711 against known samples, round trips, WAV, peaks and placement."""

from __future__ import annotations

import io
import math
import struct
import wave

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtproxy import audio
from rtproxy.protocol import ALAW, PCM16, ULAW, AudioFormat


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
