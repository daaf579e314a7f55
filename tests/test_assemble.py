"""rtproxy.conversation.realtime: hand-written event sequences for every reassembly rule, in both dialects."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtproxy.conversation import audio
from rtproxy.conversation.model import MAX_OUTPUT_ITEMS, MAX_PARTS
from rtproxy.conversation.realtime import Conversation, assemble
from rtproxy.protocols.realtime import GA_TO_BETA
from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame

DIALECTS = ["ga", "beta"]


def tone(ms: int, rate: int = 24000, freq: float = 300.0) -> bytes:
    return b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(rate * ms // 1000)
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Script:
    """Builds frames of one session in a dialect: GA names are written, beta ones sent when asked."""

    def __init__(self, dialect: str = "ga") -> None:
        self.dialect = dialect
        self.frames: list[Frame] = []
        self.t = 0.0

    def at(self, t: float) -> Script:
        self.t = t
        return self

    def _add(self, direction: Direction, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self.dialect == "beta":
            kind = GA_TO_BETA.get(kind, kind)
            if kind == "conversation.item.added":
                kind = "conversation.item.created"
        event = {"type": kind, "event_id": f"ev_{len(self.frames)}", **fields}
        self.frames.append(Frame(len(self.frames), self.t, direction, orjson.dumps(event).decode()))
        return event

    def server(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self._add(SERVER, kind, fields)

    def client(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self._add(CLIENT, kind, fields)

    def session(self, fmt: str = "pcm16", kind: str = "session.created") -> None:
        ga_fmt = {
            "pcm16": {"type": "audio/pcm", "rate": 24000},
            "g711_ulaw": {"type": "audio/pcmu"},
            "g711_alaw": {"type": "audio/pcma"},
        }[fmt]
        if self.dialect == "ga":
            cfg = {
                "type": "realtime",
                "model": "gpt-realtime",
                "audio": {"input": {"format": ga_fmt}, "output": {"format": ga_fmt}},
            }
        else:
            cfg = {
                "model": "gpt-4o-realtime-preview",
                "modalities": ["text", "audio"],
                "input_audio_format": fmt,
                "output_audio_format": fmt,
            }
        self.server(kind, session=cfg)

    def item(self, item: dict[str, Any], prev: str | None = None) -> None:
        self.server("conversation.item.added", previous_item_id=prev, item=item)

    def user_text(self, item_id: str, text: str, prev: str | None = None) -> None:
        self.item(
            {
                "id": item_id,
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": text}],
            },
            prev,
        )

    def response_start(self, rid: str, item_id: str, prev: str | None = None, kind: str = "message") -> None:
        self.server("response.created", response={"id": rid, "status": "in_progress", "output": []})
        item: dict[str, Any] = {"id": item_id, "type": kind, "status": "in_progress"}
        if kind == "message":
            item.update(role="assistant", content=[])
        else:
            item.update(name="get_weather", call_id=f"call_{item_id}", arguments="")
        self.server("response.output_item.added", response_id=rid, output_index=0, item=item)
        self.item(item, prev)

    def response_done(self, rid: str, status: str = "completed", **extra: Any) -> None:
        usage = {"total_tokens": 30, "input_tokens": 10, "output_tokens": 20}
        self.server("response.done", response={"id": rid, "status": status, "usage": usage, "output": [], **extra})

    def text_reply(
        self, rid: str, item_id: str, deltas: list[str], prev: str | None = None, done: str | None = None
    ) -> None:
        self.response_start(rid, item_id, prev)
        ids = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.server("response.content_part.added", **ids, part={"type": "output_text", "text": ""})
        for d in deltas:
            self.server("response.output_text.delta", **ids, delta=d)
        self.server("response.output_text.done", **ids, text="".join(deltas) if done is None else done)
        self.response_done(rid)

    def audio_reply(
        self, rid: str, item_id: str, chunks: list[bytes], words: list[str], prev: str | None = None, step: float = 0.01
    ) -> None:
        self.response_start(rid, item_id, prev)
        ids = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.server("response.content_part.added", **ids, part={"type": "audio", "transcript": ""})
        for i, chunk in enumerate(chunks):
            if i < len(words):
                self.server("response.output_audio_transcript.delta", **ids, delta=words[i])
            self.at(self.t + step).server("response.output_audio.delta", **ids, delta=b64(chunk))
        self.server("response.output_audio.done", **ids)
        self.server("response.output_audio_transcript.done", **ids, transcript="".join(words))
        self.response_done(rid)

    def conv(self, **kw: Any) -> Conversation:
        return assemble(self.frames, **kw)


# --- items, order, text ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_text_deltas_concatenate_into_the_assistant_item(dialect: str) -> None:
    """Text deltas append, in order, to the item's content part; the response records status and usage."""
    s = Script(dialect)
    s.session()
    s.user_text("u1", "Hi there")
    s.text_reply("r1", "a1", ["Hel", "lo", ", ", "world"], prev="u1")
    c = s.conv()
    expected = [("u1", "user", "Hi there"), ("a1", "assistant", "Hello, world")]
    assert [(i.id, i.role, i.text) for i in c.items] == expected
    assert c.items[1].response_id == "r1"
    (r,) = c.responses
    assert (r.id, r.status, r.usage["total_tokens"], r.output_item_ids) == ("r1", "completed", 30, ["a1"])
    assert c.dialect == dialect and c.anomalies == [] and not c.unknown_types


@pytest.mark.parametrize("dialect", DIALECTS)
def test_items_follow_previous_item_id_not_arrival_order(dialect: str) -> None:
    """An item inserted after an earlier one lands behind it; root/null puts it first."""
    s = Script(dialect)
    s.user_text("a", "one")
    s.user_text("c", "three", prev="a")
    s.user_text("b", "two", prev="a")
    s.user_text("z", "zero", prev=None)
    s.server(
        "conversation.item.added",
        previous_item_id="c",
        item={"id": "d", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "4"}]},
    )
    assert [i.id for i in s.conv().items] == ["z", "a", "b", "c", "d"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_done_value_wins_over_deltas_and_is_flagged(dialect: str) -> None:
    """A .done text that differs from the concatenated deltas replaces them and is reported as an anomaly."""
    s = Script(dialect)
    s.text_reply("r1", "a1", ["Hel", "lo"], done="Hello!")
    c = s.conv()
    assert c.item("a1").text == "Hello!"  # type: ignore[union-attr]
    assert [a.kind for a in c.anomalies] == ["done_mismatch"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_deltas_for_an_unknown_item_are_kept_and_flagged(dialect: str) -> None:
    """A delta naming an item never announced creates it (so nothing is lost) and records an anomaly."""
    s = Script(dialect)
    s.server(
        "response.output_text.delta", response_id="r9", item_id="ghost", output_index=0, content_index=0, delta="boo"
    )
    c = s.conv()
    assert [(i.id, i.text) for i in c.items] == [("ghost", "boo")]
    assert [a.kind for a in c.anomalies] == ["unknown_item"]


def test_unknown_types_non_json_binary_and_malformed_fields_never_raise() -> None:
    """Unknown types are counted (one anomaly each), odd frames counted, malformed fields become anomalies."""
    frames = [
        Frame(0, 0.0, SERVER, '{"type": "brand.new.event"}'),
        Frame(1, 0.0, SERVER, '{"type": "brand.new.event"}'),
        Frame(2, 0.0, SERVER, "not json"),
        Frame(3, 0.0, SERVER, "[1, 2]"),
        Frame(4, 0.0, CLIENT, b"\x00\x01"),
        Frame(5, 0.0, SERVER, '{"no": "type"}'),
        Frame(
            6,
            0.0,
            SERVER,
            '{"type": "response.output_text.delta", "item_id": "x", "content_index": "zero", "delta": "ok"}',
        ),
        Frame(7, 0.0, SERVER, '{"type": "conversation.item.added", "item": {"id": "y", "content": "nope"}}'),
        Frame(8, 0.0, SERVER, '{"type": "response.done", "response": [1]}'),
        Frame(9, 0.0, SERVER, '{"type": "input_audio_buffer.committed", "item_id": 5}'),
    ]
    c = assemble(frames)
    assert c.unknown_types == {"brand.new.event": 2, "<no type>": 1}
    assert (c.non_json, c.binary_frames, c.events_fed) == (2, 1, 10)
    assert [a.kind for a in c.anomalies].count("unknown_type") == 2
    assert c.item("x") is None  # the delta with an unusable content_index is dropped, flagged
    flagged = {(a.seq, a.kind) for a in c.anomalies}
    assert {(6, "bad_index"), (7, "malformed"), (8, "malformed"), (9, "malformed")} <= flagged


# --- function calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_function_call_arguments_and_output_are_linked(dialect: str) -> None:
    """Argument deltas build the call's arguments; the function_call_output with its call_id becomes its output."""
    s = Script(dialect)
    s.response_start("r1", "fc", kind="function_call")
    ids = {"response_id": "r1", "item_id": "fc", "output_index": 0, "call_id": "call_fc"}
    args = '{"location": "Paris"}'
    for i in range(0, len(args), 5):
        s.server("response.function_call_arguments.delta", **ids, delta=args[i : i + 5])
    s.server("response.function_call_arguments.done", **ids, name="get_weather", arguments=args)
    s.response_done("r1")
    s.client("conversation.item.create", item={"type": "function_call_output", "call_id": "call_fc", "output": "18C"})
    s.item({"id": "out", "type": "function_call_output", "call_id": "call_fc", "output": "18C"}, prev="fc")
    c = s.conv()
    fc, out = c.items
    assert (fc.type, fc.name, fc.call_id, fc.arguments, fc.output) == (
        "function_call",
        "get_weather",
        "call_fc",
        args,
        "18C",
    )
    assert (out.type, out.output, out.call_id) == ("function_call_output", "18C", "call_fc")
    js = c.to_json()["items"][0]
    assert (js["name"], js["arguments"], js["output"]) == ("get_weather", args, "18C")
    assert c.anomalies == []


# --- assistant audio ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_assistant_audio_deltas_decode_into_the_part(dialect: str) -> None:
    """Audio deltas join into the part's PCM16; audio_ms follows from the bytes, also with keep_audio=False."""
    pcm = tone(300)
    chunks = [pcm[i : i + 4800] for i in range(0, len(pcm), 4800)]
    s = Script(dialect)
    s.session()
    s.audio_reply("r1", "a1", chunks, ["Hi ", "there"])
    c = s.conv()
    item = c.item("a1")
    assert item is not None and item.pcm16() == pcm and item.audio_rate == 24000
    assert item.audio_ms == pytest.approx(300.0) and item.transcript == "Hi there"
    assert c.responses[0].audio_ms == pytest.approx(300.0)
    lean = s.conv(keep_audio=False).item("a1")
    assert lean is not None and lean.audio_ms == pytest.approx(300.0) and lean.pcm16() == b""


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fmt", ["g711_ulaw", "g711_alaw"])
def test_output_format_comes_from_the_session_config(dialect: str, fmt: str) -> None:
    """With a G.711 session (beta string or GA object) assistant audio decodes from G.711 at 8 kHz."""
    pcm = tone(200, 8000)
    encode = audio.ulaw_encode if fmt == "g711_ulaw" else audio.alaw_encode
    s = Script(dialect)
    s.session("pcm16")
    s.session(fmt, kind="session.updated")
    s.audio_reply("r1", "a1", [encode(pcm)], ["x"])
    c = s.conv()
    item = c.item("a1")
    assert item is not None and item.audio_rate == 8000 and item.audio_ms == pytest.approx(200.0)
    assert item.pcm16() == audio.decode(encode(pcm), item.parts[0].audio_format)  # type: ignore[arg-type]
    assert [t for t, _ in c.configs] == [0.0, 0.0] and len(c.configs) == 2


@pytest.mark.parametrize("dialect", DIALECTS)
def test_response_create_overrides_the_output_format_for_one_response(dialect: str) -> None:
    """An output format in response.create applies to that response only; the next uses the session's."""
    s = Script(dialect)
    s.session("pcm16")
    override = (
        {"audio": {"output": {"format": {"type": "audio/pcmu"}}}}
        if dialect == "ga"
        else {"output_audio_format": "g711_ulaw"}
    )
    s.client("response.create", response=override)
    s.audio_reply("r1", "a1", [bytes(800)], ["x"])
    s.client("response.create")
    s.audio_reply("r2", "a2", [bytes(800)], ["y"], prev="a1")
    c = s.conv()
    assert c.item("a1").audio_ms == pytest.approx(100.0)  # type: ignore[union-attr]
    assert c.item("a2").audio_ms == pytest.approx(800 / 48)  # type: ignore[union-attr]


# --- user audio ---------------------------------------------------------------------------------


def appends(s: Script, pcm: bytes, chunk_ms: int = 20, t0: float | None = None) -> None:
    step = 24 * 2 * chunk_ms
    t = s.t if t0 is None else t0
    for i in range(0, len(pcm), step):
        t += chunk_ms / 1000
        s.at(t).client("input_audio_buffer.append", audio=b64(pcm[i : i + step]))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_user_audio_is_cut_at_manual_commits_and_clears(dialect: str) -> None:
    """Each commit takes the appends since the previous commit or clear; the committed item gets them."""
    first, dropped, second = tone(200, freq=200), tone(100, freq=500), tone(140, freq=700)
    s = Script(dialect)
    s.session()
    appends(s, first)
    s.client("input_audio_buffer.commit")
    appends(s, dropped)
    s.client("input_audio_buffer.clear")
    s.server("input_audio_buffer.committed", previous_item_id=None, item_id="u1")  # arrives after the clear
    s.server("input_audio_buffer.cleared")
    s.item({"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]})
    appends(s, second)
    s.client("input_audio_buffer.commit")
    s.server("input_audio_buffer.committed", previous_item_id="u1", item_id="u2")
    s.item({"id": "u2", "type": "message", "role": "user", "content": [{"type": "input_audio"}]}, prev="u1")
    c = s.conv()
    u1, u2 = c.items
    assert u1.pcm16() == first and u1.audio_ms == pytest.approx(200.0)
    assert u2.pcm16() == second and u2.audio_ms == pytest.approx(140.0)
    assert u1.parts[0].type == "input_audio" and len(u1.parts) == 1
    assert u1.t_start == pytest.approx(0.0) and u2.t_start == pytest.approx(0.3)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_server_vad_bounds_cut_the_speech_out_of_the_stream(dialect: str) -> None:
    """speech_started/stopped ms (since the first append) bound the item's audio inside the mic stream."""
    silence1, speech, silence2 = bytes(24 * 2 * 400), tone(600), bytes(24 * 2 * 400)
    s = Script(dialect)
    s.session()
    appends(s, silence1 + speech)
    s.server("input_audio_buffer.speech_started", audio_start_ms=400, item_id="u1")
    appends(s, silence2)
    s.server("input_audio_buffer.speech_stopped", audio_end_ms=1000, item_id="u1")
    s.server("input_audio_buffer.committed", previous_item_id=None, item_id="u1")
    s.item({"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]})
    c = s.conv()
    (u1,) = c.items
    assert u1.pcm16() == speech and u1.audio_ms == pytest.approx(600.0)
    assert u1.t_start == pytest.approx(0.4)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_user_transcript_arriving_before_the_item_is_kept(dialect: str) -> None:
    """Transcription deltas and completion for an item not yet announced end up on that item."""
    s = Script(dialect)
    s.server("conversation.item.input_audio_transcription.delta", item_id="u1", content_index=0, delta="What's ")
    s.server("conversation.item.input_audio_transcription.delta", item_id="u1", content_index=0, delta="up?")
    s.server(
        "conversation.item.input_audio_transcription.completed", item_id="u1", content_index=0, transcript="What's up?"
    )
    assert s.conv().items == []  # not in the conversation yet
    s.item({"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]})
    c = s.conv()
    assert [(i.id, i.transcript) for i in c.items] == [("u1", "What's up?")]
    assert c.anomalies == []


# --- truncation, deletion -----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_truncation_cuts_audio_and_drops_the_transcript(dialect: str) -> None:
    """conversation.item.truncated cuts the part's audio at audio_end_ms and drops its transcript."""
    pcm = tone(500)
    s = Script(dialect)
    s.session()
    s.audio_reply("r1", "a1", [pcm[:12000], pcm[12000:]], ["One ", "two"])
    s.client("conversation.item.truncate", item_id="a1", content_index=0, audio_end_ms=150)
    s.server("conversation.item.truncated", item_id="a1", content_index=0, audio_end_ms=150)
    item = s.conv().item("a1")
    assert item is not None and item.truncated_ms == 150
    assert item.audio_ms == pytest.approx(150.0) and item.pcm16() == pcm[: 24 * 2 * 150]
    assert item.transcript == ""


@pytest.mark.parametrize("dialect", DIALECTS)
def test_deleted_items_leave_the_conversation(dialect: str) -> None:
    """conversation.item.deleted removes the item; later items keep their order."""
    s = Script(dialect)
    s.user_text("a", "one")
    s.user_text("b", "two", prev="a")
    s.user_text("c", "three", prev="b")
    s.client("conversation.item.delete", item_id="b")
    s.server("conversation.item.deleted", item_id="b")
    c = s.conv()
    assert [i.id for i in c.items] == ["a", "c"] and c.item("b") is None and "b" in c.deleted


# --- responses, latency, errors -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_latency_runs_from_speech_stopped(dialect: str) -> None:
    """With server VAD the turn's clock starts at speech_stopped: created, first delta, first audio, done in ms."""
    s = Script(dialect)
    s.session()
    s.at(1.0).server("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id="u1")
    s.at(1.2).server("response.created", response={"id": "r1", "status": "in_progress"})
    s.server(
        "response.output_item.added",
        response_id="r1",
        output_index=0,
        item={"id": "a1", "type": "message", "role": "assistant", "content": []},
    )
    ids = {"response_id": "r1", "item_id": "a1", "output_index": 0, "content_index": 0}
    s.at(1.5).server("response.output_audio_transcript.delta", **ids, delta="Hi")
    s.at(1.75).server("response.output_audio.delta", **ids, delta=b64(bytes(480)))
    s.at(2.0).response_done("r1")
    (r,) = s.conv().responses
    assert r.audio_ms == pytest.approx(10.0) and r.playback_ratio == pytest.approx(10 / 250)
    assert r.trigger_type == "input_audio_buffer.speech_stopped"
    assert r.latency_ms == pytest.approx({"created": 200.0, "first_delta": 500.0, "first_audio": 750.0, "done": 1000.0})


@pytest.mark.parametrize("dialect", DIALECTS)
def test_latency_runs_from_the_clients_response_create_or_commit(dialect: str) -> None:
    """A response.create is its response's trigger (FIFO); without one, a manual commit is."""
    s = Script(dialect)
    s.at(0.5).client("input_audio_buffer.commit")
    s.at(1.0).client("response.create")
    s.at(1.1).client("response.create")
    s.at(1.3).text_reply("r1", "a1", ["a"])
    s.at(1.6).text_reply("r2", "a2", ["b"], prev="a1")
    s.at(3.0).client("input_audio_buffer.commit")
    s.at(3.4).text_reply("r3", "a3", ["c"], prev="a2")
    s.at(5.0).text_reply("r4", "a4", ["d"], prev="a3")
    r1, r2, r3, r4 = s.conv().responses
    assert (r1.trigger_type, r1.latency_ms["created"]) == ("response.create", pytest.approx(300.0))
    assert (r2.trigger_type, r2.latency_ms["created"]) == ("response.create", pytest.approx(500.0))
    assert (r3.trigger_type, r3.latency_ms["done"]) == ("input_audio_buffer.commit", pytest.approx(400.0))
    assert r4.trigger_type is None and r4.latency_ms == {
        "created": None,
        "first_delta": None,
        "first_audio": None,
        "done": None,
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_errors_link_to_the_client_event_they_name(dialect: str) -> None:
    """An error's event_id finds the client event (seq, type); a refused response.create is no trigger."""
    s = Script(dialect)
    refused = s.at(1.0).client("response.create")
    s.server(
        "error",
        error={
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": "busy",
            "param": None,
            "event_id": refused["event_id"],
        },
    )
    s.server("error", error={"type": "server_error", "message": "oops", "event_id": None})
    s.at(2.0).client("response.create")
    s.at(2.5).text_reply("r1", "a1", ["x"])
    c = s.conv()
    first, second = c.errors
    busy = "conversation_already_has_active_response"
    assert (first.client_seq, first.client_type, first.code) == (0, "response.create", busy)
    assert second.client_seq is None and second.message == "oops"
    assert c.responses[0].latency_ms["created"] == pytest.approx(500.0)
    assert c.to_json()["errors"][0]["client_type"] == "response.create"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_response_done_sets_status_details(dialect: str) -> None:
    """A cancelled response keeps response.done's status and status_details."""
    s = Script(dialect)
    s.response_start("r1", "a1")
    s.response_done("r1", "cancelled", status_details={"type": "cancelled", "reason": "turn_detected"})
    (r,) = s.conv().responses
    assert (r.status, r.status_details) == ("cancelled", {"type": "cancelled", "reason": "turn_detected"})


def test_mixed_dialects_in_one_recording_assemble() -> None:
    """Beta and GA names in one recording both feed the same model; both dialects are noted."""
    s = Script("beta")
    s.session()
    s.text_reply("r1", "a1", ["be", "ta"])
    ga = Script("ga")
    ga.frames = s.frames
    ga.text_reply("r2", "a2", ["g", "a"], prev="a1")
    c = ga.conv()
    assert [i.text for i in c.items] == ["beta", "ga"]
    assert c.dialect == "beta" and c.dialects == {"beta", "ga"}


def test_state_can_be_read_while_feeding() -> None:
    """Reading items mid-stream shows the text so far; later deltas keep appending."""
    s = Script()
    s.text_reply("r1", "a1", ["one ", "two ", "three"])
    c = Conversation()
    for frame in s.frames[:6]:
        c.feed(frame)
    assert c.item("a1").text == "one two "  # type: ignore[union-attr]
    for frame in s.frames[6:]:
        c.feed(frame)
    assert c.item("a1").text == "one two three"  # type: ignore[union-attr]


def test_feed_event_takes_parsed_events() -> None:
    """feed_event takes already-parsed events with a direction and time and builds the same model as feed."""
    s = Script()
    s.user_text("u1", "hey")
    s.text_reply("r1", "a1", ["yo"], prev="u1")
    c = Conversation()
    for f in s.frames:
        c.feed_event(f.direction, f.t, orjson.loads(f.data), f.seq)
    assert c.to_json() == s.conv().to_json()


def test_to_json_has_the_documented_fields() -> None:
    """to_json carries session, items (with function-call fields) and responses (with latency) as show --json needs."""
    s = Script()
    s.user_text("u1", "hey")
    s.text_reply("r1", "a1", ["yo"], prev="u1")
    js = assemble(s.frames, session={"id": "sess1", "model": "m", "dialect": "ga", "status": "closed"}).to_json()
    assert js["session"]["id"] == "sess1" and js["session"]["dialect"] == "ga"
    assert {"id", "type", "role", "status", "text", "transcript", "audio_ms"} <= set(js["items"][0])
    assert {"id", "status", "usage", "latency_ms"} <= set(js["responses"][0])
    orjson.dumps(js)


# --- properties ------------------------------------------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=60, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(0, 60), max_size=20), dialect=st.sampled_from(DIALECTS))
def test_any_split_of_a_text_reassembles_exactly(text: str, cuts: list[int], dialect: str) -> None:
    """However a text is cut into deltas, the item's text is the original, with no anomaly."""
    s = Script(dialect)
    s.text_reply("r1", "a1", split(text, cuts))
    c = s.conv()
    assert c.item("a1").text == text and c.anomalies == []  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(args=texts, cuts=st.lists(st.integers(0, 60), max_size=20))
def test_any_split_of_function_arguments_reassembles_exactly(args: str, cuts: list[int]) -> None:
    """However arguments are cut into deltas, the call's arguments are the original, with no anomaly."""
    s = Script()
    s.response_start("r1", "fc", kind="function_call")
    ids = {"response_id": "r1", "item_id": "fc", "output_index": 0, "call_id": "call_fc"}
    for d in split(args, cuts):
        s.server("response.function_call_arguments.delta", **ids, delta=d)
    s.server("response.function_call_arguments.done", **ids, name="f", arguments=args)
    c = s.conv()
    assert c.item("fc").arguments == args and c.anomalies == []  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(
    a=texts,
    b=texts,
    cuts_a=st.lists(st.integers(0, 60), max_size=12),
    cuts_b=st.lists(st.integers(0, 60), max_size=12),
    order=st.lists(st.booleans(), max_size=30),
    dialect=st.sampled_from(DIALECTS),
)
def test_any_interleaving_of_two_responses_reassembles_exactly(
    a: str, b: str, cuts_a: list[int], cuts_b: list[int], order: list[bool], dialect: str
) -> None:
    """Two responses streaming at once, deltas interleaved in any order, each reassemble to their own text."""
    s = Script(dialect)
    s.response_start("r1", "a1")
    s.response_start("r2", "a2", prev="a1")
    queues = {"1": split(a, cuts_a), "2": split(b, cuts_b)}
    picks = iter(order)
    while queues["1"] or queues["2"]:
        n = "1" if not queues["2"] or (queues["1"] and next(picks, True)) else "2"
        s.server(
            "response.output_text.delta",
            response_id=f"r{n}",
            item_id=f"a{n}",
            output_index=0,
            content_index=0,
            delta=queues[n].pop(0),
        )
    for n, text in (("2", b), ("1", a)):
        s.server(
            "response.output_text.done",
            response_id=f"r{n}",
            item_id=f"a{n}",
            output_index=0,
            content_index=0,
            text=text,
        )
        s.response_done(f"r{n}")
    c = s.conv()
    assert [(i.id, i.text) for i in c.items] == [("a1", a), ("a2", b)]
    assert c.anomalies == [] and [r.status for r in c.responses] == ["completed", "completed"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_appends_after_a_session_update_use_its_input_format(dialect: str) -> None:
    """The client's session.update sets the format of the appends after it, before the server confirms it."""
    pcm = tone(100, 8000)
    s = Script(dialect)
    s.session("pcm16")
    fmt = (
        {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}
        if dialect == "ga"
        else {"input_audio_format": "g711_ulaw"}
    )
    s.client("session.update", session=fmt)
    s.at(0.1).client("input_audio_buffer.append", audio=b64(audio.ulaw_encode(pcm)))
    s.session("g711_ulaw", kind="session.updated")
    s.client("input_audio_buffer.commit")
    s.server("input_audio_buffer.committed", previous_item_id=None, item_id="u1")
    (u1,) = s.conv().items
    assert u1.audio_rate == 8000 and u1.audio_ms == pytest.approx(100.0)
    assert u1.pcm16() == audio.ulaw_decode(audio.ulaw_encode(pcm))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_committed_item_is_placed_even_without_its_created_event(dialect: str) -> None:
    """input_audio_buffer.committed places the user item after its previous_item_id if nothing else does."""
    s = Script(dialect)
    s.user_text("a", "one")
    appends(s, tone(40))
    s.client("input_audio_buffer.commit")
    s.server("input_audio_buffer.committed", previous_item_id="a", item_id="u1")
    c = s.conv()
    assert [(i.id, i.role, round(i.audio_ms)) for i in c.items] == [("a", "user", 0), ("u1", "user", 40)]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_late_null_previous_item_id_does_not_reorder_placed_items(dialect: str) -> None:
    """An item already placed (by output_item.added) stays put when its added event says previous_item_id null."""
    s = Script(dialect)
    s.user_text("u1", "hello")
    s.server("response.created", response={"id": "r1", "status": "in_progress"})
    item = {"id": "a1", "type": "message", "role": "assistant", "content": []}
    s.server("response.output_item.added", response_id="r1", output_index=0, item=item)
    s.item(item, None)
    assert [i.id for i in s.conv().items] == ["u1", "a1"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_output_item_done_and_response_done_fill_in_what_deltas_missed(dialect: str) -> None:
    """Final items in output_item.done / response.done supply text, status and items that no delta carried."""
    s = Script(dialect)
    s.response_start("r1", "a1")
    final = {
        "id": "a1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "complete"}],
    }
    s.server("response.output_item.done", response_id="r1", output_index=0, item=final)
    lost = {
        "id": "a2",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "also"}],
    }
    s.response_done("r1", output=[final, lost])
    c = s.conv()
    assert [(i.id, i.status, i.text) for i in c.items] == [("a1", "completed", "complete"), ("a2", "completed", "also")]
    assert c.responses[0].output_item_ids == ["a1", "a2"] and c.anomalies == []


def test_newer_item_types_are_kept_generically() -> None:
    """An item of a type this version does not know keeps its type, raw data, arguments and output."""
    s = Script()
    s.server("response.created", response={"id": "r1", "status": "in_progress"})
    mcp = {"id": "m1", "type": "mcp_call", "name": "search", "server_label": "docs", "arguments": ""}
    s.server("response.output_item.added", response_id="r1", output_index=0, item=mcp)
    s.server("response.mcp_call_arguments.delta", response_id="r1", item_id="m1", output_index=0, delta='{"q":')
    s.server("response.mcp_call_arguments.delta", response_id="r1", item_id="m1", output_index=0, delta='"x"}')
    s.server(
        "response.output_item.done",
        response_id="r1",
        output_index=0,
        item={**mcp, "arguments": '{"q":"x"}', "output": "found"},
    )
    c = s.conv()
    (m,) = c.items
    assert (m.type, m.name, m.arguments, m.output, m.data["server_label"]) == (
        "mcp_call",
        "search",
        '{"q":"x"}',
        "found",
        "docs",
    )
    js = c.to_json()["items"][0]
    assert (js["type"], js["arguments"], js["output"]) == ("mcp_call", '{"q":"x"}', "found")
    assert c.anomalies == [] and not c.unknown_types


# --- a real recording: the openai SDK through the proxy -------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_recording_made_by_the_openai_sdk_reassembles(dialect: str, proxy: Any, api_key: str) -> None:
    """A voice turn with a function call, recorded through the proxy, reassembles to the audio and text sent."""
    from openai import AsyncOpenAI

    from rtproxy.store import Store
    from tests.upstream import tone as upstream_tone

    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    pcm = upstream_tone(300)
    heard = bytearray()
    delta_types = ("response.output_audio.delta", "response.audio.delta")
    connect = (
        client.realtime.connect(model="gpt-realtime")
        if dialect == "ga"
        else client.beta.realtime.connect(model="gpt-4o-realtime-preview")
    )
    async with connect as conn:
        if dialect == "ga":
            await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"], "tools": [tool]})
        else:
            await conn.session.update(session={"modalities": ["text", "audio"], "tools": [tool]})
        for i in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=b64(pcm[i : i + 4800]))
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        call_id = None
        for _ in range(200):
            event = await conn.recv()
            if event.type == "response.function_call_arguments.done":
                call_id = event.call_id
            if event.type == "response.done":
                break
        assert call_id is not None
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call_id, "output": '{"temperature": 18}'}
        )
        await conn.response.create()
        for _ in range(200):
            event = await conn.recv()
            if event.type in delta_types:
                heard += base64.b64decode(event.delta)
            if event.type == "response.done":
                break
    (sid,) = await proxy.settle()
    with Store(proxy.db) as store:
        conv = assemble(store.frames(sid), session=store.session(sid))
    user, call, output, answer = conv.items
    assert (user.role, user.pcm16(), user.transcript) == ("user", pcm, "What's the weather in Paris?")
    assert (call.type, call.name, call.arguments, call.output) == (
        "function_call",
        "get_weather",
        '{"location": "Paris", "unit": "celsius"}',
        '{"temperature": 18}',
    )
    assert (output.type, output.call_id) == ("function_call_output", call_id)
    assert answer.role == "assistant" and answer.pcm16() == bytes(heard) and len(heard) > 0
    assert answer.transcript == "Hello! How can I help you today?"
    assert [r.trigger_type for r in conv.responses] == ["response.create", "response.create"]
    assert all(r.status == "completed" and r.latency_ms["done"] is not None for r in conv.responses)
    assert conv.dialect == dialect and conv.anomalies == [] and not conv.unknown_types and conv.errors == []


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 2400), max_size=12), keep=st.booleans())
def test_audio_cut_into_any_deltas_decodes_exactly(cuts: list[int], keep: bool) -> None:
    """Audio deltas of any sizes (padded base64 in the middle included) join to the original PCM16."""
    pcm = tone(50)
    points = sorted({2 * c for c in cuts} | {0, len(pcm)})
    chunks = [pcm[a:b] for a, b in zip(points, points[1:], strict=False)]
    s = Script()
    s.audio_reply("r1", "a1", chunks, [])
    item = s.conv(keep_audio=keep).item("a1")
    assert item is not None and item.audio_ms == pytest.approx(50.0)
    assert item.pcm16() == (pcm if keep else b"")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_refused_commit_leaves_its_audio_for_the_next_commit(dialect: str) -> None:
    """When the server refuses a commit (an error naming it), the next commit takes that audio as well."""
    first, second = tone(60, freq=250), tone(40, freq=650)
    s = Script(dialect)
    appends(s, first)
    refused = s.client("input_audio_buffer.commit")
    s.server(
        "error",
        error={
            "type": "invalid_request_error",
            "code": "input_audio_buffer_commit_empty",
            "message": "too short",
            "event_id": refused["event_id"],
        },
    )
    appends(s, second)
    s.client("input_audio_buffer.commit")
    s.server("input_audio_buffer.committed", previous_item_id=None, item_id="u1")
    c = s.conv()
    (u1,) = c.items
    assert u1.pcm16() == first + second and c.errors[0].client_type == "input_audio_buffer.commit"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_failed_transcription_is_an_anomaly_and_late_events_do_not_revive_deleted_items(dialect: str) -> None:
    """transcription.failed is reported; events for a deleted item do not bring it back."""
    s = Script(dialect)
    s.user_text("u1", "hi")
    s.server("conversation.item.deleted", item_id="u1")
    s.server(
        "conversation.item.input_audio_transcription.failed",
        item_id="u1",
        content_index=0,
        error={"type": "transcription_error", "message": "audio unreadable"},
    )
    s.server("conversation.item.input_audio_transcription.completed", item_id="u1", content_index=0, transcript="late")
    s.server(
        "conversation.item.added",
        previous_item_id=None,
        item={"id": "u1", "type": "message", "role": "user", "content": []},
    )
    c = s.conv()
    assert c.items == [] and c.item("u1") is None
    assert [a.kind for a in c.anomalies] == ["transcription_failed"] and "audio unreadable" in c.anomalies[0].message


# --- the synthetic sessions the benchmarks use ------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fmt", ["pcm16", "g711_ulaw"])
def test_synthetic_voice_sessions_reassemble_cleanly(dialect: str, fmt: str) -> None:
    """benchmarks/synth voice sessions reassemble without anomalies: VAD-cut user audio, calls, barge-ins."""
    from benchmarks.synth import voice_session

    session, frames = voice_session(4, dialect, audio_format=fmt, seed=3)
    c = assemble(frames, session=session)
    assert c.anomalies == [] and not c.unknown_types and c.errors == [] and c.dialects == {dialect}
    users = [i for i in c.items if i.role == "user"]
    speech = {}
    for f in frames:
        ev = orjson.loads(f.data)
        if ev["type"] == "input_audio_buffer.speech_started":
            speech[ev["item_id"]] = ev["audio_start_ms"]
        elif ev["type"] == "input_audio_buffer.speech_stopped":
            speech[ev["item_id"]] = ev["audio_end_ms"] - speech[ev["item_id"]]
    assert len(users) == len(speech) > 5
    assert all(u.audio_ms == pytest.approx(speech[u.id], abs=1.0) and u.transcript for u in users)
    assert all(len(u.pcm16()) == round(u.audio_ms * u.audio_rate / 1000) * 2 for u in users)
    calls = [i for i in c.items if i.type == "function_call"]
    assert calls and all(i.output and orjson.loads(i.arguments or "") for i in calls)
    assert any(i.truncated_ms for i in c.items)
    assert all(r.status == "completed" and r.trigger_type and r.latency_ms["first_delta"] for r in c.responses)


def test_synthetic_text_session_round_trips_through_jsonl_and_the_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """text_session frames written with write_jsonl / write_db read back to the same conversation."""
    from benchmarks.synth import text_session, write_db, write_jsonl
    from rtproxy.recording import read_recording
    from rtproxy.store import Store

    session, frames = text_session(3000, "beta")
    expected = assemble(frames).to_json()
    write_jsonl(tmp_path / "t.jsonl", session, frames)
    assert assemble(read_recording(tmp_path / "t.jsonl").frames).to_json() == expected
    sid = write_db(tmp_path / "t.db", session, frames)
    with Store(tmp_path / "t.db") as store:
        assert assemble(store.frames(sid)).to_json() == expected
    assert len(expected["items"]) > 20 and expected["anomalies"] == []


# --- indices and offsets from the wire are bounded ------------------------------------------


def _model_size(c: Conversation) -> tuple[int, int]:
    """(content parts, output item ids) the model holds in all."""
    return sum(len(i.parts) for i in c.items), sum(len(r.output_item_ids) for r in c.responses)


@pytest.mark.parametrize("index", [300_000, 10**9, 2**63 - 1, -1, True, 1.5, "3", [0], {"i": 0}])
@pytest.mark.parametrize(
    "kind, fields",
    [
        ("response.output_text.delta", {"delta": "hi"}),
        ("response.output_audio.delta", {"delta": "AAAA"}),
        ("response.output_audio_transcript.delta", {"delta": "hi"}),
        ("response.output_text.done", {"text": "hi"}),
        ("response.content_part.added", {"part": {"type": "text", "text": "hi"}}),
        ("conversation.item.input_audio_transcription.delta", {"delta": "hi"}),
        ("conversation.item.input_audio_transcription.completed", {"transcript": "hi"}),
        ("conversation.item.truncated", {"audio_end_ms": 10}),
    ],
)
def test_an_unusable_content_index_is_an_anomaly_not_an_allocation(index: Any, kind: str, fields: Any) -> None:
    """A content_index that is huge, negative, a bool or not an int is a bad_index anomaly and sizes nothing."""
    s = Script()
    s.item({"id": "a1", "type": "message", "role": "assistant", "content": []})
    s.server(kind, item_id="a1", response_id="r1", output_index=0, content_index=index, **fields)
    c = s.conv()
    assert [(a.seq, a.kind) for a in c.anomalies] == [(1, "bad_index")]
    assert "content_index" in c.anomalies[0].message and len(c.anomalies[0].message) <= 200
    assert _model_size(c) == (0, 0)


def test_a_valid_content_index_below_the_cap_is_used() -> None:
    """A content_index inside the bound still makes its part (the parts before it too), with no anomaly."""
    s = Script()
    s.item({"id": "a1", "type": "message", "role": "assistant", "content": []})
    s.server("response.output_text.delta", item_id="a1", response_id="r1", content_index=MAX_PARTS - 1, delta="hi")
    c = s.conv()
    assert c.anomalies == [] and len(c.item("a1").parts) == MAX_PARTS  # type: ignore[union-attr]
    assert c.item("a1").parts[-1].text == "hi"  # type: ignore[union-attr]


def test_long_content_and_output_lists_are_cut_at_the_bound() -> None:
    """An item with 100k content parts, or a response with 100k outputs, keeps the first MAX_* and says so."""
    s = Script()
    s.item({"id": "a1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}] * 100_000})
    outputs = [{"id": f"o{n}", "type": "message", "role": "assistant", "content": []} for n in range(100_000)]
    s.server("response.done", response={"id": "r1", "status": "completed", "output": outputs})
    c = s.conv()
    assert len(c.item("a1").parts) == MAX_PARTS  # type: ignore[union-attr]
    assert len(c.response("r1").output_item_ids) == MAX_OUTPUT_ITEMS  # type: ignore[union-attr]
    assert [(a.seq, a.kind) for a in c.anomalies] == [(0, "bad_index"), (1, "bad_index")]


def test_output_item_added_events_beyond_the_bound_are_flagged() -> None:
    """More output_item.added events for one response than MAX_OUTPUT_ITEMS list only the first ones."""
    s = Script()
    s.server("response.created", response={"id": "r1", "status": "in_progress"})
    for n in range(MAX_OUTPUT_ITEMS + 3):
        s.server(
            "response.output_item.added",
            response_id="r1",
            output_index=min(n, MAX_OUTPUT_ITEMS - 1),
            item={"id": f"o{n}", "type": "message", "content": []},
        )
    s.server("response.output_item.added", response_id="r1", output_index=10**9, item={"id": "late", "content": []})
    c = s.conv()
    assert len(c.response("r1").output_item_ids) == MAX_OUTPUT_ITEMS  # type: ignore[union-attr]
    kinds = [a.kind for a in c.anomalies]
    assert kinds == ["bad_index"] * 5 and "output_index" in c.anomalies[-2].message


@pytest.mark.parametrize("ms", [1e308, -1, 10**18, "100", True, None])
def test_unusable_audio_offsets_are_anomalies(ms: Any) -> None:
    """audio_end_ms / audio_start_ms that are negative, past a day or not numbers are flagged and not used."""
    s = Script()
    s.session()
    appends(s, tone(500))
    s.server("input_audio_buffer.speech_started", item_id="u1", audio_start_ms=ms)
    s.server("input_audio_buffer.speech_stopped", item_id="u1", audio_end_ms=ms)
    s.server("input_audio_buffer.committed", item_id="u1", previous_item_id=None)
    s.server("conversation.item.truncated", item_id="u1", content_index=0, audio_end_ms=ms)
    c = s.conv()
    flagged = [a for a in c.anomalies if a.kind == "bad_index"]
    assert len(flagged) == (1 if ms is None else 3)
    user = c.item("u1")
    assert user is not None and user.truncated_ms is None and 490 <= user.audio_ms <= 510
    assert render_all(c)  # every view copes


@pytest.mark.parametrize("rate", [1, 96_000, 10**12, 0, -24000])
def test_an_absurd_sample_rate_is_an_anomaly(rate: int) -> None:
    """A session config naming a sample rate far outside what audio uses is flagged and ignored."""
    s = Script()
    fmt = {"type": "audio/pcm", "rate": rate}
    s.server("session.created", session={"audio": {"input": {"format": fmt}, "output": {"format": fmt}}})
    c = s.conv()
    assert c.input_format.rate == c.output_format.rate == 24000
    assert len([a for a in c.anomalies if a.kind == "bad_index"]) == (2 if rate > 0 else 0)


def render_all(c: Conversation) -> str:
    """Every text view of a conversation, joined (show, show --json)."""
    from rtproxy.cli import render

    return "\n".join(render.conversation(c)) + orjson.dumps(c.to_json()).decode()
