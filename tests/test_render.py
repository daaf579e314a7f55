"""The pure text views of a session: the event timeline and the conversation."""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rtproxy import render
from rtproxy.protocol import CLIENT, SERVER, Direction, Frame

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def frames(*events: tuple[Direction, dict[str, Any] | str | bytes], dt: float = 0.01) -> list[Frame]:
    """Frames from (direction, event) pairs, 10 ms apart."""
    out = []
    for seq, (direction, event) in enumerate(events):
        data = orjson.dumps(event).decode() if isinstance(event, dict) else event
        out.append(Frame(seq, seq * dt, direction, data))
    return out


def b64(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


def lines_of(*events: tuple[Direction, dict[str, Any] | str | bytes], color: bool = False) -> list[str]:
    return list(render.timeline(frames(*events), color=color))[1:]  # without the header


def test_interleaved_deltas_collapse_per_type_and_item() -> None:
    """A stretch of interleaved audio and transcript deltas becomes one counted line per (type, item)."""
    deltas: list[tuple[Direction, dict[str, Any]]] = []
    for i in range(10):
        deltas.append(
            (SERVER, {"type": "response.output_audio_transcript.delta", "item_id": "item_a", "delta": f"w{i} "})
        )
        deltas.append((SERVER, {"type": "response.output_audio.delta", "item_id": "item_a", "delta": b64(4800)}))
    lines = lines_of(
        (SERVER, {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        *deltas,
        (SERVER, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}),
    )
    assert len(lines) == 4
    assert "response.created" in lines[0] and "resp_1" in lines[0]
    assert re.search(r"\s1-19\s+server\s+10 × response.output_audio_transcript.delta\s+item_a\s+'w0 w1 w2", lines[1])
    assert re.search(r"\s2-20\s+server\s+10 × response.output_audio.delta\s+item_a\s+1.0 s of audio$", lines[2])
    assert re.search(r"\s21\s+server\s+response.done\s+resp_1\s+completed", lines[3])


def test_two_items_deltas_and_a_lone_delta_stay_apart() -> None:
    """Deltas of different items are separate runs; one delta alone shows no count; a non-delta ends a run."""
    lines = lines_of(
        (SERVER, {"type": "response.output_text.delta", "item_id": "item_a", "delta": "Hi"}),
        (SERVER, {"type": "response.output_text.delta", "item_id": "item_b", "delta": "Yo"}),
        (SERVER, {"type": "response.output_text.delta", "item_id": "item_a", "delta": " there"}),
        (SERVER, {"type": "rate_limits.updated", "rate_limits": []}),
        (SERVER, {"type": "response.output_text.delta", "item_id": "item_a", "delta": "!"}),
    )
    assert len(lines) == 4
    assert "2 × response.output_text.delta  item_a  'Hi there'" in lines[0]
    assert re.search(r"\s1\s+server\s+response.output_text.delta  item_b  'Yo'$", lines[1])
    assert "rate_limits.updated" in lines[2]
    assert lines[3].endswith("response.output_text.delta  item_a  '!'") and "×" not in lines[3]


def test_audio_durations_follow_the_session_formats() -> None:
    """Audio runs are timed by the formats in force: GA objects and beta strings, input and output apart."""
    ga = {
        "type": "session.updated",
        "session": {
            "type": "realtime",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}},
            },
        },
    }
    beta = {"type": "session.updated", "session": {"modalities": ["audio"], "input_audio_format": "pcm16",
                                                   "output_audio_format": "g711_alaw"}}  # fmt: skip
    lines = lines_of(
        (CLIENT, {"type": "input_audio_buffer.append", "audio": b64(1000)}),  # pcm16 24 kHz by default
        (SERVER, ga),
        (CLIENT, {"type": "input_audio_buffer.append", "audio": b64(4000)}),
        (CLIENT, {"type": "input_audio_buffer.append", "audio": b64(4000)}),
        (SERVER, {"type": "response.output_audio.delta", "item_id": "i", "delta": b64(24000)}),
        (SERVER, beta),
        (SERVER, {"type": "response.audio.delta", "item_id": "i", "delta": b64(4000)}),
        (CLIENT, {"type": "input_audio_buffer.append", "audio": b64(4800)}),
    )
    audio = [line for line in lines if "of audio" in line]
    durations = [re.search(r"  ([\d.]+ m?s) of audio", line).group(1) for line in audio]  # type: ignore[union-attr]
    assert durations == ["21 ms", "1.0 s", "0.5 s", "0.5 s", "0.1 s"]
    assert "2 × input_audio_buffer.append" in audio[1]
    assert "response.output_audio.delta" in audio[3]  # beta names shown under their GA name


def test_odd_frames_and_unknown_types_are_shown_not_fatal() -> None:
    """Binary frames, non-JSON text, JSON without a type and unknown event types each get a line."""
    lines = lines_of(
        (CLIENT, b"\x00\x01\x02"),
        (SERVER, "not json at all"),
        (SERVER, '{"no_type": 1}'),
        (SERVER, {"type": "response.brand_new_thing", "item_id": "item_z"}),
        (SERVER, {"type": "error", "error": {"code": "bad_thing", "message": "It went wrong", "event_id": "e1"}}),
    )
    assert "binary frame, 3 bytes" in lines[0]
    assert "not a JSON event" in lines[1] and "'not json at all'" in lines[1]
    assert "not a JSON event" in lines[2]
    assert "response.brand_new_thing (unknown type)  item_z" in lines[3]
    assert "error  bad_thing  'It went wrong'" in lines[4]


def test_colour_only_when_asked() -> None:
    """With color the types are styled with ANSI codes; without, the text is plain and otherwise identical."""
    events: list[tuple[Direction, dict[str, Any]]] = [
        (CLIENT, {"type": "response.create"}),
        (SERVER, {"type": "error", "error": {"message": "x"}}),
        (SERVER, {"type": "response.output_text.delta", "item_id": "i", "delta": "a"}),
    ]
    plain, styled = lines_of(*events), lines_of(*events, color=True)
    assert not any(ANSI.search(line) for line in plain)
    assert all(ANSI.search(line) for line in styled)
    assert [ANSI.sub("", line) for line in styled] == plain


def test_item_events_show_what_they_carry() -> None:
    """Item events show type, role and a preview of their text, arguments or output; long text is cut."""
    long = "word " * 40
    lines = lines_of(
        (CLIENT, {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                               "content": [{"type": "input_text", "text": long}]}}),
        (CLIENT, {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c1",
                                                               "output": '{"ok": true}'}}),
    )  # fmt: skip
    assert "message  user  'word word" in lines[0] and lines[0].endswith("…'")
    assert len(re.search(r"'(.*)'", lines[0]).group(1)) == render.PREVIEW  # type: ignore[union-attr]
    assert lines[1].endswith("""function_call_output  '{"ok": true}'""")


@given(st.binary(max_size=300))
def test_b64_len_is_the_decoded_size(data: bytes) -> None:
    """The size of base64 audio is known without decoding it."""
    assert render.b64_len(base64.b64encode(data).decode()) == len(data)


def test_people_formats() -> None:
    """Durations, clock times and token counts read the way a person expects."""
    assert [render.seconds(s) for s in (0.04, 0.6, 12.34, 125, 3725)] == ["40 ms", "0.6 s", "12.3 s", "2:05", "1:02:05"]
    assert [render.clock(t).strip() for t in (1.25, 75.5, 3725.0)] == ["0:01.2", "1:15.5", "1:02:05"]
    usage = {"total_tokens": 187, "input_tokens": 120, "output_tokens": 67,
             "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 64},
             "output_token_details": {"text_tokens": 17, "audio_tokens": 0}}  # fmt: skip
    assert render.tokens(usage) == "187 tokens (in 120: text 100, audio 20, cached 64 · out 67: text 17)"
    assert render.tokens(None) == "no usage"
