"""Spans from a session, without any exporter: the SDK's in-memory exporter holds what would be sent."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from rtproxy import telemetry
from rtproxy.conversation.cost import price_data, price_usage
from rtproxy.conversation.summary import Summary, ToolUse, Turn
from rtproxy.protocols.wire import Frame
from rtproxy.recording import read_recording

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{120,}={0,2}")


def spans(name: str, *, content: bool = False, frames: list[Frame] | None = None) -> list[ReadableSpan]:
    rec = read_recording(RECORDINGS / f"{name}.jsonl")
    built, out = telemetry.spans_of(rec.session, rec.frames if frames is None else frames, content=content)
    assert built.spans == len(out)
    assert {format(s.context.trace_id, "032x") for s in out} == {built.trace_id}
    return list(out)


def by_name(out: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in out if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


def all_values(out: list[ReadableSpan]) -> list[str]:
    values: list[str] = []
    for s in out:
        for v in (s.attributes or {}).values():
            values.extend(str(x) for x in (v if isinstance(v, tuple) else (v,)))
        for e in s.events:
            values.extend(str(v) for v in (e.attributes or {}).values())
    return values


def test_a_function_call_session_is_root_responses_and_its_tool() -> None:
    out = spans("function-call-ga")
    (root,) = [s for s in out if s.parent is None]
    chats = by_name(out, "chat ")
    (tool,) = by_name(out, "execute_tool ")
    assert root.name == "realtime gpt-realtime" and len(out) == 4
    assert all(c.parent is not None and c.parent.span_id == root.context.span_id for c in chats)
    assert len(chats) == 2
    assert tool.parent is not None and tool.parent.span_id == chats[0].context.span_id
    a = root.attributes or {}
    assert a["gen_ai.system"] == "openai" and a["gen_ai.request.model"] == "gpt-realtime"
    assert a["rtproxy.api"] == "realtime" and a["rtproxy.dialect"] == "ga" and a["rtproxy.status"] == "closed"
    assert a["rtproxy.client_close_code"] == 1000 and a["gen_ai.usage.input_tokens"] == 240
    c = chats[0].attributes or {}
    assert c["gen_ai.operation.name"] == "chat" and c["gen_ai.response.id"].startswith("resp_")
    assert c["gen_ai.usage.input_tokens"] == 120 and c["gen_ai.usage.output_tokens"] == 67
    assert c["rtproxy.usage.input_audio_tokens"] == 20 and c["rtproxy.usage.input_cached_tokens"] == 64
    assert c["rtproxy.cost.price_data"] == price_data()
    t = tool.attributes or {}
    assert t["gen_ai.tool.name"] == "get_weather" and t["gen_ai.tool.call.id"].startswith("call_")
    assert t["gen_ai.operation.name"] == "execute_tool"
    # no content unless asked
    assert not [k for s in out for k in (s.attributes or {}) if "content" in k or k.startswith("gen_ai.tool.call.a")]


def test_times_are_the_recordings_own() -> None:
    rec = read_recording(RECORDINGS / "function-call-ga.jsonl")
    out = spans("function-call-ga")
    (root,) = [s for s in out if s.parent is None]
    started = telemetry._epoch(rec.session["started_at"])
    assert root.start_time == int(started * 1e9)
    assert root.end_time == int((started + rec.session["duration"]) * 1e9)
    for s in out:
        assert s.start_time is not None and s.end_time is not None
        assert root.start_time <= s.start_time <= s.end_time <= root.end_time


def test_content_only_when_asked_and_bounded() -> None:
    out = spans("function-call-ga", content=True)
    (tool,) = by_name(out, "execute_tool ")
    t = tool.attributes or {}
    assert orjson.loads(t["gen_ai.tool.call.arguments"]) == {"location": "Paris", "unit": "celsius"}
    assert orjson.loads(t["gen_ai.tool.call.result"]) == {"temperature_c": 18}
    chats = by_name(out, "chat ")
    assert (chats[1].attributes or {})["rtproxy.content.output"] == "It is 18 degrees in Paris."
    assert (chats[0].attributes or {})["rtproxy.content.input"] == "What's the weather in Paris?"
    assert telemetry._content("x" * 100_000) == "x" * (telemetry.MAX_CONTENT - 1) + "…"


@pytest.mark.parametrize("name", ["voice-ga", "same-conversation-realtime", "cancelled-ga"])
def test_no_audio_and_no_secret_in_any_attribute(name: str) -> None:
    out = spans(name, content=True)
    for value in all_values(out):
        assert not BASE64_RUN.search(value), value[:80]
        assert "Bearer" not in value and "sk-" not in value


def test_a_secret_in_content_is_masked() -> None:
    rec = read_recording(RECORDINGS / "function-call-ga.jsonl")
    key = "sk-proj-" + "A1b2C3d4" * 6
    frames = [
        Frame(f.seq, f.t, f.direction, f.data.replace("Paris", key)) if isinstance(f.data, str) else f
        for f in rec.frames
    ]
    out = spans("function-call-ga", content=True, frames=frames)
    assert not [v for v in all_values(out) if key in v]


def _with_response(frames: list[Frame], change: Any) -> list[Frame]:
    out = []
    for f in frames:
        event = f.event
        if event is not None and event.get("type") == "response.done":
            event = copy.deepcopy(event)
            change(event["response"])
            f = Frame(f.seq, f.t, f.direction, orjson.dumps(event).decode())
        out.append(f)
    return out


def test_a_failed_response_is_an_error_span() -> None:
    rec = read_recording(RECORDINGS / "text-ga.jsonl")

    def fail(response: dict[str, Any]) -> None:
        response["status"] = "failed"
        response["status_details"] = {"type": "failed", "error": {"type": "server_error", "code": "rate_limited"}}

    out = spans("text-ga", frames=_with_response(rec.frames, fail))
    (chat,) = by_name(out, "chat ")
    assert chat.status.status_code is StatusCode.ERROR
    assert (chat.attributes or {})["error.type"] == "rate_limited"


def test_cost_is_what_the_price_data_says() -> None:
    rec = read_recording(RECORDINGS / "text-ga.jsonl")
    usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10}

    def priced(response: dict[str, Any]) -> None:
        response["usage"] = usage

    out = spans("text-ga", frames=_with_response(rec.frames, priced))
    (chat,) = by_name(out, "chat ")
    expected = price_usage("realtime", usage, "gpt-realtime", when=rec.session["started_at"])
    assert expected.total is not None
    assert (chat.attributes or {})["rtproxy.cost.usd"] == pytest.approx(float(expected.total))
    (root,) = [s for s in out if s.parent is None]
    assert (root.attributes or {})["rtproxy.cost.usd"] == pytest.approx(float(expected.total))


def test_turns_and_delegations_from_a_summary() -> None:
    """GPT-Live's spans come from its Summary: a turn per span, a delegation under it, its backend tools under
    that."""
    inner = ToolUse("function", "lookup_weather", {"city": "Paris"}, {"c": 18}, t_start=1.2, t_end=1.5)
    delegation = ToolUse("delegation.responses", "weather", "Paris?", "18 C", t_start=1.0, t_end=2.0, tools=[inner])
    summary = Summary(
        "live",
        "live",
        "gpt-live-1",
        turns=[
            Turn("user", "What's the weather in Paris?", 0.1, 0.9),
            Turn("assistant", "It is 18 degrees.", 0.95, 3.0, tools=[delegation], latency_ms=50.0),
        ],
        usage={"seconds": 3.0},
    )
    session = {"id": "s1", "started_at": "2026-11-25T09:16:59.370Z", "duration": 4.0, "api": "live"}
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    built = telemetry.build_from_summary(provider.get_tracer("t"), session, summary, content=False)
    out = list(memory.get_finished_spans())
    assert built.spans == len(out) == 4
    ids = {s.name: s for s in out}
    root, chat = ids["live gpt-live-1"], ids["chat gpt-live-1"]
    d, t = ids["execute_tool weather"], ids["execute_tool lookup_weather"]
    assert chat.parent and chat.parent.span_id == root.context.span_id
    assert d.parent and d.parent.span_id == chat.context.span_id
    assert t.parent and t.parent.span_id == d.context.span_id
    assert (d.attributes or {})["gen_ai.tool.type"] == "delegation.responses"
    assert (root.attributes or {})["rtproxy.usage.seconds"] == 3
    assert d.start_time is not None and d.end_time is not None
    assert (d.end_time - d.start_time) == pytest.approx(1e9, rel=1e-6)
    assert "gen_ai.tool.call.arguments" not in (d.attributes or {})


def test_spans_are_bounded() -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    turns = [Turn("assistant", "x", float(i), float(i) + 0.5) for i in range(telemetry.MAX_SPANS + 50)]
    summary = Summary("live", None, "gpt-live-1", turns=turns)
    built = telemetry.build_from_summary(provider.get_tracer("t"), {"duration": 1e5}, summary)
    assert built.spans == telemetry.MAX_SPANS == len(memory.get_finished_spans())
    assert built.left_out == 51


def test_traces_url() -> None:
    assert telemetry.traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert telemetry.traces_url("http://h:6006/") == "http://h:6006/v1/traces"
    assert telemetry.traces_url("https://h/custom/path") == "https://h/custom/path"
    with pytest.raises(ValueError):
        telemetry.traces_url("ftp://h")


def test_a_server_error_event_is_an_event_of_the_root() -> None:
    rec = read_recording(RECORDINGS / "text-ga.jsonl")
    last = rec.frames[-1]
    error = {
        "type": "error",
        "event_id": "event_x",
        "error": {"type": "invalid_request_error", "code": "unknown_parameter", "message": "Unknown parameter"},
    }
    server = next(f.direction for f in rec.frames if f.event and f.event.get("type") == "session.created")
    frames = [*rec.frames, Frame(last.seq + 1, last.t, server, orjson.dumps(error).decode())]
    out = spans("text-ga", frames=frames)
    (root,) = [s for s in out if s.parent is None]
    (event,) = [e for e in root.events if e.name == "rtproxy.error"]
    assert (event.attributes or {})["error.type"] == "unknown_parameter"
    assert (root.attributes or {})["rtproxy.errors"] == 1
