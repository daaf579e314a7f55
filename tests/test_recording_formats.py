"""Audio formats named by a recorded session config: sample rates from the wire are bounded to 8-48 kHz."""

from __future__ import annotations

import base64

import orjson
import pytest

from rtproxy.cli import render
from rtproxy.diff import client_sequence
from rtproxy.protocols.formats import PCM16, AudioFormat, audio_format, session_audio_formats
from rtproxy.protocols.wire import CLIENT, SERVER, Frame

SECOND_AT_24K = base64.b64encode(bytes(48_000)).decode()  # one second of PCM16 at 24 kHz


def frames_with_rate(rate: object) -> list[Frame]:
    """A GA session whose session.update and session.updated name `rate`, then 1 s (at 24 kHz) of appends."""
    fmt = {"type": "audio/pcm", "rate": rate}
    session = {"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}
    events = [
        (SERVER, {"type": "session.created", "event_id": "e0", "session": {"type": "realtime"}}),
        (CLIENT, {"type": "session.update", "session": session}),
        (SERVER, {"type": "session.updated", "event_id": "e1", "session": session}),
        *[(CLIENT, {"type": "input_audio_buffer.append", "audio": SECOND_AT_24K}) for _ in range(2)],
        (CLIENT, {"type": "input_audio_buffer.commit"}),
    ]
    return [Frame(i, i * 0.01, d, orjson.dumps(e).decode()) for i, (d, e) in enumerate(events)]


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100, 48000])
def test_a_rate_within_8_to_48_khz_is_taken(rate: int) -> None:
    """A GA PCM format with a rate from 8 to 48 kHz is that format."""
    assert audio_format({"type": "audio/pcm", "rate": rate}) == AudioFormat("pcm16", rate)


@pytest.mark.parametrize("rate", [1, 7999, 48_001, 96_000, 10**12, 0, -24000])
def test_a_rate_outside_8_to_48_khz_is_unrecognised(rate: int) -> None:
    """A GA PCM format with a rate outside 8-48 kHz is no format at all, in both dialect paths."""
    fmt = {"type": "audio/pcm", "rate": rate}
    assert audio_format(fmt) is None
    assert session_audio_formats({"audio": {"input": {"format": fmt}, "output": {"format": fmt}}}) == (None, None)


def test_a_missing_or_odd_rate_means_24_khz() -> None:
    """A GA PCM format without an integer rate is 24 kHz PCM, as the API defaults it."""
    for rate in ("fast", 24e3, True):
        assert audio_format({"type": "audio/pcm", "rate": rate}) == PCM16
    assert audio_format({"type": "audio/pcm"}) == PCM16


def test_any_rate_keeps_what_the_wire_said() -> None:
    """With any_rate (the reducer's view, so it can flag the rate) a positive rate is kept as it came."""
    assert audio_format({"type": "audio/pcm", "rate": 10**12}, any_rate=True) == AudioFormat("pcm16", 10**12)
    assert audio_format({"type": "audio/pcm", "rate": 0}, any_rate=True) == PCM16


def audio_seconds_in_timeline(rate: object) -> list[str]:
    return [line for line in render.timeline(frames_with_rate(rate)) if "input_audio_buffer.append" in line]


@pytest.mark.parametrize("rate", [1, 10**12])
def test_timeline_durations_ignore_a_hostile_rate(rate: int) -> None:
    """`show --events` (render.timeline) times a run of appends at 24 kHz when the config names an absurd rate."""
    lines = audio_seconds_in_timeline(rate)
    assert lines == audio_seconds_in_timeline(None) and len(lines) == 1
    assert lines[0].endswith("2 × input_audio_buffer.append  2.0 s of audio"), lines


@pytest.mark.parametrize("rate", [1, 10**12])
def test_client_sequence_durations_ignore_a_hostile_rate(rate: int) -> None:
    """`rtproxy diff`'s client sequence gives 2 s of appended audio however absurd the configured rate."""
    runs = [e for e in client_sequence(frames_with_rate(rate)) if e["type"] == "input_audio_buffer.append"]
    assert runs == [{"type": "input_audio_buffer.append", "audio_ms": 2000.0, "appends": 2}]
