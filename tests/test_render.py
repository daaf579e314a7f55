"""The pure text views of a session: the event timeline and the conversation."""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rtproxy.cli import render
from rtproxy.conversation.realtime import Conversation
from rtproxy.protocols.realtime import BETA_TO_GA
from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame

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
    beta = {
        "type": "session.updated",
        "session": {"modalities": ["audio"], "input_audio_format": "pcm16", "output_audio_format": "g711_alaw"},
    }
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
        (
            CLIENT,
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": long}]},
            },
        ),
        (
            CLIENT,
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "c1", "output": '{"ok": true}'},
            },
        ),
    )
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
    usage = {
        "total_tokens": 187,
        "input_tokens": 120,
        "output_tokens": 67,
        "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 64},
        "output_token_details": {"text_tokens": 17, "audio_tokens": 0},
    }
    assert render.tokens(usage) == "187 tokens (in 120: text 100, audio 20, cached 64 · out 67: text 17)"
    assert render.tokens(None) == "no usage"


# --- the conversation ------------------------------------------------------------------------

ULAW_SECOND = base64.b64encode(bytes([0xFF]) * 8000).decode()  # one second of μ-law silence
USAGE = {
    "total_tokens": 30,
    "input_tokens": 10,
    "output_tokens": 20,
    "input_token_details": {"text_tokens": 10},
    "output_token_details": {"audio_tokens": 20},
}
SESSION = {
    "id": "sess_1",
    "model": "gpt-4o-realtime-preview",
    "dialect": "beta",
    "status": "closed",
    "duration": 2.5,
    "client_events": 5,
    "server_events": 19,
    "label": "demo",
}


def beta_conversation() -> list[tuple[Direction, dict[str, Any]]]:
    """A typed question answered in μ-law audio, a cancelled response, a refused delete, and two oddities."""
    ids = {"response_id": "resp_1", "item_id": "item_a1", "output_index": 0, "content_index": 0}
    user = {
        "id": "item_u1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Book a table for tonight"}],
    }
    bot = {"id": "item_a1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    return [
        (
            SERVER,
            {
                "type": "session.created",
                "session": {
                    "modalities": ["text", "audio"],
                    "input_audio_format": "g711_ulaw",
                    "output_audio_format": "g711_ulaw",
                },
            },
        ),
        (CLIENT, {"type": "conversation.item.create", "event_id": "evt_c1", "item": user}),
        (SERVER, {"type": "conversation.item.created", "previous_item_id": None, "item": user}),
        (CLIENT, {"type": "response.create", "event_id": "evt_c2"}),
        (SERVER, {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        (SERVER, {"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0, "item": bot}),
        (SERVER, {"type": "conversation.item.created", "previous_item_id": "item_u1", "item": bot}),
        (SERVER, {"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}}),
        (SERVER, {"type": "response.audio_transcript.delta", **ids, "delta": "Sure, for "}),
        (SERVER, {"type": "response.audio.delta", **ids, "delta": ULAW_SECOND}),
        (SERVER, {"type": "response.audio_transcript.delta", **ids, "delta": "how many?"}),
        (SERVER, {"type": "response.audio.done", **ids}),
        (SERVER, {"type": "response.audio_transcript.done", **ids, "transcript": "Sure, for how many?"}),
        (
            SERVER,
            {
                "type": "response.output_item.done",
                "response_id": "resp_1",
                "output_index": 0,
                "item": {
                    **bot,
                    "status": "completed",
                    "content": [{"type": "audio", "transcript": "Sure, for how many?"}],
                },
            },
        ),
        (SERVER, {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "usage": USAGE}}),
        (CLIENT, {"type": "response.create", "event_id": "evt_c3"}),
        (CLIENT, {"type": "response.cancel", "event_id": "evt_c4"}),
        (SERVER, {"type": "response.created", "response": {"id": "resp_2", "status": "in_progress"}}),
        (
            SERVER,
            {
                "type": "response.done",
                "response": {
                    "id": "resp_2",
                    "status": "cancelled",
                    "status_details": {"type": "cancelled", "reason": "client_cancelled"},
                },
            },
        ),
        (CLIENT, {"type": "conversation.item.delete", "event_id": "evt_c5", "item_id": "item_nope"}),
        (
            SERVER,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "item_not_found",
                    "message": "Item item_nope not found",
                    "event_id": "evt_c5",
                },
            },
        ),
        (SERVER, {"type": "response.brand_new", "response_id": "resp_2"}),
    ]


def to_ga(events: list[tuple[Direction, dict[str, Any]]]) -> list[tuple[Direction, dict[str, Any]]]:
    """The same conversation in the GA dialect: renamed events, nested audio formats."""
    out = []
    for direction, event in events:
        event = {**event, "type": BETA_TO_GA.get(event["type"], event["type"])}
        if event["type"] == "conversation.item.created":
            event["type"] = "conversation.item.added"
        if event["type"] == "session.created":
            fmt = {"type": "audio/pcmu"}
            event["session"] = {"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}
        out.append((direction, event))
    return out


def rendered(events: list[tuple[Direction, dict[str, Any]]], *, color: bool = False) -> list[str]:
    conv = Conversation(keep_audio=False)
    for seq, (direction, event) in enumerate(events):
        conv.feed_event(direction, seq * 0.1, event, seq)
    return list(render.conversation(conv, SESSION, color=color))


def in_order(text: str, pieces: list[str]) -> None:
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        assert found >= 0, f"{piece!r} not found after {text[at : at + 300]!r}"
        at = found + len(piece)


def test_conversation_shows_turns_responses_and_trouble() -> None:
    """Turns in order with speaker, text, transcript and audio time; each response's status, tokens and latency
    under its item, a response without items on its own; then totals, the error with its client event, anomalies."""
    lines = rendered(beta_conversation())
    text = "\n".join(lines)
    in_order(
        text,
        [
            "Session sess_1  gpt-4o-realtime-preview  realtime/beta  closed",
            "lasted 2.5 s · 24 events (5 client, 19 server)",
            "label 'demo'",
            "0:00.2  USER",
            "Book a table for tonight",
            "ASSISTANT  (audio 1.0 s)",
            "Sure, for how many?",
            "╰ resp_1 completed · 30 tokens (in 10: text 10 · out 20: audio 20)",
            "latency after response.create: created 100 ms · first delta 500 ms · first audio 600 ms · done 1100 ms",
            "audio 1.0 s made in 0.5 s",
            "0:01.7  (a response with no item)",
            "╰ resp_2 cancelled (client_cancelled) · no usage",
            "latency after response.create: created 200 ms · done 300 ms",
            "2 items · 2 responses · 30 tokens · user audio 0 ms · assistant audio 1.0 s",
            "1 error(s):",
            "0:02.0  seq 20  item_not_found: Item item_nope not found  ← conversation.item.delete (seq 19)",
            "1 anomaly:",
            "seq 21  unknown_type:",
            "unknown event types: response.brand_new ×1",
        ],
    )
    assert not any(ANSI.search(line) for line in lines)


def test_both_dialects_read_the_same() -> None:
    """The GA rendition of a conversation prints exactly what its beta rendition prints."""
    assert rendered(to_ga(beta_conversation())) == rendered(beta_conversation())


def test_conversation_colour_only_when_asked() -> None:
    """Colour adds ANSI styles and nothing else."""
    plain, styled = rendered(beta_conversation()), rendered(beta_conversation(), color=True)
    assert any(ANSI.search(line) for line in styled)
    assert [ANSI.sub("", line) for line in styled] == plain


def test_long_text_wraps_under_its_speaker() -> None:
    """A long message wraps at the text width, indented under the speaker, losing no word."""
    words = [f"word{i}" for i in range(120)]
    item = {
        "id": "item_1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": " ".join(words)}],
    }
    lines = rendered([(SERVER, {"type": "conversation.item.added", "previous_item_id": None, "item": item})])
    body = [line for line in lines if line.startswith(render.INDENT + "word")]
    assert len(body) > 3 and all(len(line) <= render.WIDTH for line in body)
    assert " ".join(line.strip() for line in body).split() == words


def test_a_flood_of_anomalies_is_listed_then_counted() -> None:
    """Past MAX_LISTED anomalies the conversation says how many more there are instead of listing them all."""
    n = render.MAX_LISTED + 7
    lines = rendered([(SERVER, {"type": f"response.future_{i}"}) for i in range(n)])
    assert f"{n} anomalies:" in lines
    assert sum(line.startswith("  seq ") for line in lines) == render.MAX_LISTED
    assert "  … and 7 more (all of them in `show --json`)" in lines
