"""rtproxy.conversation.live (+ responses, live_summary): GPT-Live event sequences, every event validated by the
openai SDK's own pydantic models, reduced to turns, delegations, usage, latency and anomalies."""

from __future__ import annotations

import base64
import math
import struct
from typing import Annotated, Any, get_args, get_origin

import orjson
from openai.types.live.client_event import ClientEvent
from openai.types.live.connect_server_event import ConnectServerEvent
from openai.types.live.server_event import ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from rtproxy.conversation.live import LiveSession, assemble_live, merge_connections, summarize_live
from rtproxy.conversation.responses import ResponseStreams
from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame

_SERVER = TypeAdapter(ServerEvent)
_SIDEBAND = TypeAdapter(ConnectServerEvent)
_CLIENT = TypeAdapter(ClientEvent)


def _by_type(union: Any) -> dict[str, Any]:
    """The union's member models by their ``type`` literal (so a bad event names the model it failed)."""
    members = get_args(get_args(union)[0]) if get_origin(union) is Annotated else get_args(union)
    return {get_args(m.model_fields["type"].annotation)[0]: m for m in members}


_RESPONSE_MODELS = _by_type(ResponseStreamEvent)


class _Responses:
    @staticmethod
    def validate_python(event: dict[str, Any]) -> None:
        _RESPONSE_MODELS[event["type"]].model_validate(event)


_RESPONSES = _Responses()

MODEL = "gpt-live-1"
RATE = 24000


def tone(ms: int, rate: int = RATE, freq: float = 300.0) -> bytes:
    n = rate * ms // 1000
    return b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def resource(**extra: Any) -> dict[str, Any]:
    return {"id": "sess_1", "expires_at": 1_900_000_000, "model": MODEL, "status": "active", **extra}


class LiveScript:
    """Frames of one Live session; every event is validated against the SDK's unions before it is written."""

    def __init__(self, sideband: bool = False) -> None:
        self.frames: list[Frame] = []
        self.t = 0.0
        self.sideband = sideband
        self.n = 0

    def at(self, t: float) -> LiveScript:
        self.t = t
        return self

    def _add(self, direction: Direction, event: dict[str, Any]) -> dict[str, Any]:
        self.frames.append(Frame(len(self.frames), self.t, direction, orjson.dumps(event).decode()))
        return event

    def server(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.n += 1
        event = {"type": kind, **fields}
        if kind not in ("session.input_audio.append", "session.output_audio.delta"):
            event.setdefault("event_id", f"sev_{self.n}")
        (_SIDEBAND if self.sideband else _SERVER).validate_python(event)
        return self._add(SERVER, event)

    def client(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields}
        _CLIENT.validate_python(event)
        return self._add(CLIENT, event)

    def responses(self, delegation_id: str, inner: dict[str, Any]) -> dict[str, Any]:
        _RESPONSES.validate_python(inner)
        return self.server("response.event", delegation_id=delegation_id, event=inner)

    # --- building blocks ---------------------------------------------------------------

    def start(self, delegation: dict[str, Any] | None = None) -> None:
        session: dict[str, Any] = {"model": MODEL, "audio": {"format": {"type": "audio/pcm", "rate": RATE}}}
        if delegation is not None:
            session["delegation"] = delegation
        self.client("session.start", session=session, event_id="c_start")
        self.server(
            "session.started",
            session=resource(**{k: v for k, v in session.items() if k != "model"}),
            client_event_id="c_start",
        )

    def mic(self, ms: int, chunk_ms: int = 100) -> None:
        """The client streams ``ms`` of microphone audio."""
        chunk = b64(tone(chunk_ms))
        for _ in range(ms // chunk_ms):
            self.client("session.input_audio.append", audio=chunk)

    def said(self, who: str, words: list[str], start_ms: int, step_ms: int) -> None:
        kind = "session.input_transcript.delta" if who == "user" else "session.output_transcript.delta"
        for i, w in enumerate(words):
            s = start_ms + i * step_ms
            self.server(kind, delta=w, start_ms=s, end_ms=s + step_ms)

    def speak(self, ms: int, chunk_ms: int = 100) -> None:
        """The server streams ``ms`` of assistant audio (primary: no timestamps)."""
        chunk = b64(tone(chunk_ms, freq=500))
        for _ in range(ms // chunk_ms):
            self.server("session.output_audio.delta", delta=chunk)


def voice_turn(s: LiveScript) -> None:
    """User speaks 0-1.2 s; the assistant answers at 1.5-2.7 s."""
    s.start()
    s.at(0.1).mic(2000)
    s.at(1.3).said("user", ["What's ", "the ", "weather?"], 0, 400)
    s.at(1.6).speak(1200)
    s.said("assistant", ["It is ", "sunny ", "today."], 1500, 400)


def test_voice_turn_turns_transcripts_audio_latency_model() -> None:
    """One user turn and its answer: texts joined from fragments, spans from start_ms/end_ms, audio durations,
    latency from the end of the user's speech to the start of the assistant's, the model from session.started."""
    s = LiveScript()
    voice_turn(s)
    live = assemble_live(s.frames)
    turns = live.turns
    assert [(t.speaker, t.text) for t in turns] == [
        ("user", "What's the weather?"),
        ("assistant", "It is sunny today."),
    ]
    assert (turns[0].start_ms, turns[0].end_ms) == (0, 1200)
    assert (turns[1].start_ms, turns[1].end_ms) == (1500, 2700)
    assert turns[1].latency_ms == 300 and turns[1].answers == 0
    assert turns[0].audio_ms == 1200  # its slice of the 2 s microphone stream
    assert turns[1].audio_ms == 1200
    assert not turns[0].overlaps and not turns[1].overlaps
    assert live.model == MODEL and live.session_id == "sess_1"
    assert live.anomalies == [] and live.unknown_types == {}
    pcm = live.input.pcm16(turns[0].audio_start, turns[0].audio_end)
    assert len(pcm) == 2 * RATE * 1200 // 1000


def test_barge_in_marks_overlap_and_interruption() -> None:
    """The user starts speaking while the assistant talks and the assistant stops: a barge-in on both turns, the
    assistant turn interrupted; a short 'mm-hmm' under the assistant's speech is a backchannel, not a new turn."""
    s = LiveScript()
    voice_turn(s)
    s.at(3.0).said("assistant", ["Tomorrow ", "will ", "rain ", "and"], 3500, 500)  # 3.5-5.5 s
    s.said("user", ["mm-hmm"], 3900, 300)  # 3.9-4.2 s under the assistant
    s.said("user", ["Wait, ", "what ", "about ", "Paris?"], 5000, 400)  # 5.0-6.6 s, cuts in
    live = assemble_live(s.frames)
    by_text = {t.text: t for t in live.turns}
    assistant = by_text["Tomorrow will rain and"]
    hmm = by_text["mm-hmm"]
    barge = by_text["Wait, what about Paris?"]
    assert [o.kind for o in hmm.overlaps] == ["backchannel"]
    assert [o.kind for o in barge.overlaps] == ["barge_in"]
    assert barge.overlaps[0].ms == 500
    assert assistant.interrupted and {o.kind for o in assistant.overlaps} == {"backchannel", "barge_in"}
    summary = summarize_live(s.frames)
    assert [t.overlaps for t in summary.turns] == [False, False, True, True, True]
    assert summary.turns[2].interrupted


def responses_delegation(s: LiveScript) -> None:
    """The user asks; the model delegates to Responses, which calls get_weather; the client returns the result;
    the backend answers with text."""
    s.start(delegation={"type": "responses", "responses": {"model": "gpt-5"}})
    s.at(0.1).mic(1500)
    s.at(1.2).said("user", ["Weather ", "in ", "Oslo?"], 0, 400)
    s.at(1.3).server(
        "session.delegation.created",
        delegation={"id": "del_1", "target": "responses", "type": "delegation", "response_id": "resp_1"},
        offset_ms=1250,
    )
    base = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-5",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    s.at(1.35).responses(
        "del_1", {"type": "response.created", "sequence_number": 0, "response": {**base, "status": "in_progress"}}
    )
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": ""}
    s.at(1.5).responses(
        "del_1", {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": call}
    )
    s.at(1.6).responses(
        "del_1",
        {
            "type": "response.function_call_arguments.delta",
            "sequence_number": 2,
            "item_id": "fc_1",
            "output_index": 0,
            "delta": '{"city":',
        },
    )
    s.responses(
        "del_1",
        {
            "type": "response.function_call_arguments.delta",
            "sequence_number": 3,
            "item_id": "fc_1",
            "output_index": 0,
            "delta": '"Oslo"}',
        },
    )
    s.responses(
        "del_1",
        {
            "type": "response.function_call_arguments.done",
            "sequence_number": 4,
            "item_id": "fc_1",
            "output_index": 0,
            "arguments": '{"city":"Oslo"}',
            "name": "get_weather",
        },
    )
    s.responses(
        "del_1",
        {
            "type": "response.output_item.done",
            "sequence_number": 5,
            "output_index": 0,
            "item": {**call, "arguments": '{"city":"Oslo"}', "status": "completed"},
        },
    )
    s.at(1.9).client(
        "response.item.create", item={"type": "function_call_output", "call_id": "call_1", "output": '{"temp_c": 4}'}
    )
    s.client("response.create")
    msg = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}
    s.at(2.1).responses(
        "del_1", {"type": "response.output_item.added", "sequence_number": 6, "output_index": 1, "item": msg}
    )
    s.responses(
        "del_1",
        {
            "type": "response.output_text.delta",
            "sequence_number": 7,
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "delta": "4 degrees",
            "logprobs": [],
        },
    )
    usage = {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 150,
    }
    s.at(2.4).responses(
        "del_1",
        {
            "type": "response.completed",
            "sequence_number": 8,
            "response": {**base, "status": "completed", "usage": usage},
        },
    )
    s.at(2.5).speak(800)
    s.said("assistant", ["It's ", "4 degrees."], 2500, 400)


def test_responses_delegation_with_function_call() -> None:
    """A Responses delegation is one item: asked (the user's words at offset_ms), the backend's function call with
    its arguments and the client's result, the backend's text and usage, its duration and time to first result."""
    s = LiveScript()
    responses_delegation(s)
    live = assemble_live(s.frames)
    assert live.anomalies == []
    (d,) = live.delegations
    assert d.target == "responses" and d.offset_ms == 1250 and d.asked == "Weather in Oslo?"
    (resp,) = d.responses
    assert resp.status == "completed" and resp.model == "gpt-5"
    assert resp.usage == {
        "input_tokens": 120,
        "cached_tokens": 100,
        "output_tokens": 30,
        "reasoning_tokens": 10,
        "total_tokens": 150,
    }
    (call,) = resp.tool_calls
    assert (call.name, call.arguments, call.call_id) == ("get_weather", '{"city":"Oslo"}', "call_1")
    assert [r.output for r in d.tool_results] == ['{"temp_c": 4}']
    assert d.returned() == "4 degrees"
    assert d.duration_ms == 1100.0  # created at 1.3 s, completed at 2.4 s
    assert d.first_result_ms == 300.0  # first argument delta at 1.6 s
    assert resp.latency_ms == {"first_token": 250.0, "done": 1050.0}
    summary = summarize_live(s.frames, {"variant": "primary"})
    (use,) = summary.tools()
    assert use.kind == "delegation.responses" and use.name == "get_weather" and use.arguments == "Weather in Oslo?"
    assert use.output == "4 degrees" and use.duration_ms == 1100.0
    (fn,) = use.tools
    assert (fn.kind, fn.name, fn.arguments, fn.output) == ("function", "get_weather", {"city": "Oslo"}, {"temp_c": 4})
    assert summary.variant == "primary" and summary.model == MODEL
    assert summary.usage["backend_input_tokens"] == 120 and summary.usage["backend_reasoning_tokens"] == 10


def test_client_delegation_replies_and_acks() -> None:
    """A client delegation is answered by the client's instructions/commentary naming it; the acks place them
    on the timeline; the delegation lasts until the last reply."""
    s = LiveScript()
    s.start()
    s.at(0.5).said("user", ["Book ", "a table"], 0, 500)
    s.at(1.0).server(
        "session.delegation.created",
        delegation={"id": "del_c", "target": "client", "type": "delegation"},
        offset_ms=1000,
    )
    s.at(1.4).client(
        "session.commentary.append", content="Checking the restaurant now.", delegation_id="del_c", event_id="c_1"
    )
    s.at(1.45).server("session.commentary.appended", start_ms=1400, end_ms=1400, client_event_id="c_1")
    s.at(2.0).client(
        "session.instructions.append", content="Table booked for 8pm.", delegation_id="del_c", event_id="c_2"
    )
    s.at(2.05).server("session.instructions.appended", start_ms=2000, end_ms=2000, client_event_id="c_2")
    s.client("session.instructions.append", content="Be brief.", delegation_id=None)
    live = assemble_live(s.frames)
    (d,) = live.delegations
    assert [r.content for r in d.replies] == ["Checking the restaurant now.", "Table booked for 8pm."]
    assert [r.start_ms for r in d.replies] == [1400, 2000]
    assert d.asked == "Book a table"
    assert d.first_result_ms == 400.0 and d.duration_ms == 1000.0 and d.status == "answered"
    assert live.answered["c_1"][1] == "session.commentary.appended"
    assert [a.content for a in live.appended if a.delegation_id is None] == ["Be brief."]
    (use,) = summarize_live(s.frames).tools()
    assert use.kind == "delegation.client" and use.output == "Checking the restaurant now.\nTable booked for 8pm."


def test_decisions_delegation_and_trigger() -> None:
    """A Decisions delegation's decision.event fills it; a transcript trigger's (no delegation) is kept apart."""
    s = LiveScript()
    s.start()
    s.at(1.0).server(
        "session.delegation.created",
        delegation={"id": "del_d", "target": "decisions", "type": "delegation"},
        offset_ms=900,
    )
    usage = {
        "input_tokens": 5,
        "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 6,
    }
    decision = {
        "id": "dec_1",
        "object": "decision",
        "created_at": 1,
        "model": "gpt-dec",
        "usage": usage,
        "answers": [
            {
                "type": "choice",
                "name": "intent",
                "choice": "book",
                "confidence": 0.9,
                "probabilities": [{"value": "book", "probability": 0.9}],
            }
        ],
    }
    s.at(1.2).server(
        "decision.event", delegation_id="del_d", event={"type": "decision.completed", "decision": decision}
    )
    s.server(
        "decision.event",
        delegation_id=None,
        trigger_id="trg_1",
        source_event_id="sev_1",
        source_event_type="session.input_transcript.delta",
        event={"type": "decision.completed", "decision": decision},
    )
    live = assemble_live(s.frames)
    assert live.anomalies == []
    (d,) = live.delegations
    assert d.returned() == "intent=book" and d.duration_ms == 200.0
    assert [t["trigger_id"] for t in live.triggers] == ["trg_1"]


def test_usage_close_mute_errors_correlated() -> None:
    """session.usage.updated keeps the latest seconds (and context ratio); session.closed its reason and final
    usage; mutes are placed on the input timeline; an error names the client event it refuses."""
    s = LiveScript()
    s.start()
    s.at(0.1).mic(1000)
    s.client("session.input_audio.mute", event_id="c_mute")
    s.server("session.input_audio.muted", client_event_id="c_mute")
    s.client("session.update", session={"triggers": []}, event_id="c_bad")
    s.server(
        "error",
        error={
            "code": "unknown_parameter",
            "message": "bad trigger",
            "type": "invalid_request_error",
            "client_event_id": "c_bad",
            "param": "session.triggers",
        },
    )
    s.at(5.0).server(
        "session.usage.updated",
        usage={"seconds": 5, "active_seconds": 4, "paused_seconds": 1},
        context_window={"usage_ratio": 0.25},
    )
    s.at(9.0).client("session.close", event_id="c_close")
    s.server(
        "session.closed",
        reason="close_requested",
        session=resource(),
        usage={"seconds": 9.0, "active_seconds": 8, "paused_seconds": 1},
        client_event_id="c_close",
    )
    live = assemble_live(s.frames)
    assert live.usage == {"seconds": 9.0, "active_seconds": 8.0, "paused_seconds": 1.0}
    assert live.context_ratio == 0.25 and live.usage_updates == 1
    assert live.closed is not None and live.closed["reason"] == "close_requested"
    assert live.mutes == [(0.1, 1000.0, True)]
    (err,) = live.errors
    assert (err.code, err.event_id, err.client_type, err.param) == (
        "unknown_parameter",
        "c_bad",
        "session.update",
        "session.triggers",
    )
    assert live.answered["c_close"][1] == "session.closed"
    summary = summarize_live(s.frames)
    assert summary.usage == {"seconds": 9.0, "active_seconds": 8.0, "paused_seconds": 1.0}
    assert summary.errors == ["unknown_parameter bad trigger"] and summary.anomalies == 0


def test_bad_input_becomes_anomalies_never_exceptions() -> None:
    """Unknown types, fields of the wrong shape, out-of-range offsets, unknown delegations, non-JSON and binary
    frames are counted or flagged; the reducer never raises."""
    live = LiveSession()
    bad: list[dict[str, Any]] = [
        {"type": "session.brand_new"},
        {"type": "session.input_transcript.delta", "delta": "x", "start_ms": -5, "end_ms": 10},
        {"type": "session.output_transcript.delta", "delta": 3, "start_ms": 0, "end_ms": 1},
        {"type": "session.output_audio.delta", "delta": None},
        {"type": "session.delegation.created", "delegation": "nope"},
        {"type": "response.event", "delegation_id": "ghost", "event": {"type": "response.created"}},
        {"type": "response.event", "event": [1, 2]},
        {"type": "decision.event", "event": {"decision": 5}},
        {"type": "session.usage.updated", "usage": [1]},
        {"type": "error", "error": "boom"},
        {"type": 7},
    ]
    for i, ev in enumerate(bad):
        live.feed_event(SERVER, float(i), ev, i)
    live.feed(Frame(100, 1.0, SERVER, "not json"))
    live.feed(Frame(101, 1.0, SERVER, b"\x00\x01"))
    live.feed_event(CLIENT, 1.0, {"type": "session.input_audio.append", "audio": {"x": 1}}, 102)
    kinds = {a.kind for a in live.anomalies}
    assert {"unknown_type", "bad_index", "malformed", "unknown_delegation"} <= kinds
    assert live.unknown_types["session.brand_new"] == 1 and live.non_json == 1 and live.binary_frames == 1
    assert live.turns == [] and live.delegations == [] and len(live.errors) == 1
    assert live.to_json()["rebuilt"] is True


def test_sideband_merged_counts_each_event_once() -> None:
    """A primary and its sideband carry the same server events: merged, each event counts once, audio is taken
    from the primary, and the sideband's reflected audio alone (no primary) fills the streams."""
    p = LiveScript()
    voice_turn(p)
    # the sideband sees the primary's server events (same event ids) plus output audio reflected with timestamps
    primary_server = [f for f in p.frames if f.direction is SERVER and "output_audio" not in f.data]
    sb_frames = [Frame(i, f.t, SERVER, f.data) for i, f in enumerate(primary_server)]
    reflected = {"type": "session.output_audio.delta", "delta": b64(tone(100)), "start_ms": 1500, "end_ms": 1600}
    _SIDEBAND.validate_python(reflected)
    sb_frames.append(Frame(len(sb_frames), 2.0, SERVER, orjson.dumps(reflected).decode()))
    merged = list(merge_connections(p.frames, sb_frames, offset=0.0))
    assert len(merged) == len(p.frames) + len(sb_frames)
    live = LiveSession(merged=True)
    for conn, frame in merged:
        live.feed(frame, conn)
    assert live.duplicates == len(primary_server)  # every event the sideband repeated, the first one included
    again = assemble_live(p.frames, sideband=sb_frames)
    assert [t.text for t in again.turns] == [t.text for t in live.turns] and again.duplicates == live.duplicates
    assert [t.text for t in live.turns] == ["What's the weather?", "It is sunny today."]
    assert live.duplicates > 0 and live.output.source == "primary" and live.output.ms == 1200
    alone = assemble_live(sb_frames, {"variant": "sideband"})  # a sideband session shown on its own
    assert alone.output.ms == 100 and alone.output.source == "sideband"


def test_responses_streams_general() -> None:
    """The Responses stream reducer on its own: refusal, reasoning summary, a failed response's error, events
    without a response id going to the latest response; unknown event types flagged."""
    book = ResponseStreams()
    base = {
        "object": "response",
        "created_at": 1,
        "model": "m",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0, "response": {**base, "id": "r1", "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "sequence_number": 1,
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1", "summary": []},
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "sequence_number": 2,
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
            "delta": "Thinking",
        },
        {
            "type": "response.output_item.added",
            "sequence_number": 3,
            "output_index": 1,
            "item": {"type": "message", "id": "m1", "role": "assistant", "status": "in_progress", "content": []},
        },
        {
            "type": "response.refusal.delta",
            "sequence_number": 4,
            "item_id": "m1",
            "output_index": 1,
            "content_index": 0,
            "delta": "I can't",
        },
        {
            "type": "response.failed",
            "sequence_number": 5,
            "response": {**base, "id": "r1", "status": "failed", "error": {"code": "server_error", "message": "x"}},
        },
    ]
    for i, ev in enumerate(events):
        _RESPONSES.validate_python(ev)
        book.feed_event(float(i), ev, i)
    book.feed_event(9.0, {"type": "response.something_new"}, 9)
    book.feed_event(9.0, {"type": "surprise"}, 10)
    (r,) = book.responses
    assert r.status == "failed" and r.error == {"code": "server_error", "message": "x"}
    assert [(i.type, i.summary, i.refusal) for i in r.items] == [
        ("reasoning", "Thinking", ""),
        ("message", "", "I can't"),
    ]
    assert [a.kind for a in book.anomalies] == ["unknown_type"]


def test_hour_of_audio_is_cheap_without_keep_audio() -> None:
    """With keep_audio=False only lengths are kept: an hour of 20 ms chunks costs no chunk list."""
    live = LiveSession(keep_audio=False)
    chunk = b64(b"\x00\x00" * 480)
    for i in range(3000):
        live.feed_event(CLIENT, i * 0.02, {"type": "session.input_audio.append", "audio": chunk}, i)
    assert live.input.chunks == [] and round(live.input.ms) == 60_000


def test_nested_events_without_delegation_id_follow_the_response_id() -> None:
    """A response.event that names no delegation goes to the delegation whose response_id its response carries;
    its output events (no response id of their own) follow their item."""
    s = LiveScript()
    s.start(delegation={"type": "responses", "responses": {"model": "gpt-5"}})
    s.at(1.0).server(
        "session.delegation.created",
        delegation={"id": "del_9", "target": "responses", "type": "delegation", "response_id": "resp_9"},
        offset_ms=900,
    )
    base = {
        "id": "resp_9",
        "object": "response",
        "created_at": 1,
        "model": "gpt-5",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    inner = {"type": "response.created", "sequence_number": 0, "response": {**base, "status": "in_progress"}}
    _RESPONSES.validate_python(inner)
    s.at(1.1).server("response.event", event=inner)
    live = assemble_live(s.frames)
    (d,) = live.delegations
    assert [r.id for r in d.responses] == ["resp_9"] and live.anomalies == []


def test_client_event_ids_correlate_answers_and_unanswered_commands() -> None:
    """Every server event naming a client event (client_event_id) is its answer; a command with an event_id that
    nothing answered is listed as unanswered (audio appends, which are never acknowledged, are not)."""
    s = LiveScript()
    s.start()
    s.client("session.input_audio.append", audio=b64(tone(20)), event_id="c_audio")
    s.client("session.input_audio.unmute", event_id="c_unmute")
    s.client("session.thinking.append", content="Consider the weather.", delegation_id=None, event_id="c_think")
    s.server("session.thinking.appended", start_ms=10, end_ms=10, client_event_id="c_think")
    live = assemble_live(s.frames)
    assert (
        live.answered["c_start"][1] == "session.started" and live.answered["c_think"][1] == "session.thinking.appended"
    )
    assert [u["event_id"] for u in live.unanswered()] == ["c_unmute"]
    model = live.to_json()
    assert model["unanswered"] == [{"event_id": "c_unmute", "seq": 3, "type": "session.input_audio.unmute"}]
    (thinking,) = live.appended
    assert (thinking.kind, thinking.start_ms, thinking.t_acked) == ("thinking", 10, 0.0)


def test_sideband_reflected_output_audio_is_placed_by_its_timestamps() -> None:
    """On a sideband, reflected output audio carries start_ms/end_ms: each assistant turn gets the chunks placed
    in its stretch of the timeline (not the order they came in), with or without keep_audio, and the stereo
    track puts it where its first chunk sits."""
    from rtproxy.conversation import audio

    s = LiveScript(sideband=True)
    s.server("session.started", session=resource())
    s.at(1.0).said("assistant", ["Hello ", "there."], 1000, 300)  # 1.0-1.6 s
    s.at(3.0).said("assistant", ["Second ", "answer."], 3000, 300)  # 3.0-3.6 s
    chunk = b64(tone(100))
    for start in (1100, 1200, 3000, 3100, 3200):  # all delivered late, after both transcripts
        s.at(4.0).server("session.output_audio.delta", delta=chunk, start_ms=start, end_ms=start + 100)
    for keep in (True, False):
        live = assemble_live(s.frames, {"variant": "sideband"}, keep_audio=keep)
        first, second = live.turns
        assert (first.audio_ms, second.audio_ms) == (200, 300)
    live = assemble_live(s.frames, {"variant": "sideband"})
    _, right, rate = audio.live_tracks(live)
    assert [(round(t, 3), len(pcm) // 2) for t, pcm in right] == [(1.1, 4800), (3.0, 7200)] and rate == 24000


def test_backend_mcp_and_custom_tool_calls() -> None:
    """A Responses delegation's MCP call (arguments streamed, output in its done item) and custom tool call
    (input streamed) are tool uses of kinds mcp and custom under the delegation."""
    s = LiveScript()
    s.start(delegation={"type": "responses", "responses": {"model": "gpt-5"}})
    s.at(0.5).said("user", ["Look ", "it up"], 0, 300)
    s.at(1.0).server(
        "session.delegation.created",
        offset_ms=600,
        delegation={"id": "del_m", "target": "responses", "type": "delegation"},
    )
    base = {
        "id": "resp_m",
        "object": "response",
        "created_at": 1,
        "model": "gpt-5",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    mcp = {"type": "mcp_call", "id": "mcp_1", "name": "search", "server_label": "docs", "arguments": ""}
    custom = {"type": "custom_tool_call", "id": "ct_1", "call_id": "call_c", "name": "grammar", "input": ""}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {**base, "status": "in_progress"}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": mcp},
        {
            "type": "response.mcp_call_arguments.delta",
            "sequence_number": 2,
            "item_id": "mcp_1",
            "output_index": 0,
            "delta": '{"q": "live"}',
        },
        {
            "type": "response.output_item.done",
            "sequence_number": 3,
            "output_index": 0,
            "item": {**mcp, "arguments": '{"q": "live"}', "output": "3 hits"},
        },
        {"type": "response.output_item.added", "sequence_number": 4, "output_index": 1, "item": custom},
        {
            "type": "response.custom_tool_call_input.delta",
            "sequence_number": 5,
            "item_id": "ct_1",
            "output_index": 1,
            "delta": "x = 1",
        },
        {"type": "response.completed", "sequence_number": 6, "response": {**base, "status": "completed"}},
    ]
    for n, inner in enumerate(events):
        s.at(1.1 + n / 10).responses("del_m", inner)
    live = assemble_live(s.frames)
    assert live.anomalies == []
    (use,) = summarize_live(s.frames).tools()
    assert [(t.kind, t.name, t.arguments, t.output) for t in use.tools] == [
        ("mcp", "search", {"q": "live"}, "3 hits"),
        ("custom", "grammar", "x = 1", None),
    ]
    (resp,) = live.delegations[0].responses
    assert resp.items[0].server_label == "docs"
