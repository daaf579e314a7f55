"""The Responses WebSocket mode reducer (``rtproxy.conversation.responses_ws``), pure: hand-built event sequences,
every one validated by the SDK's own models first, so the reducer is tested against shapes the API really has."""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.responses.responses_client_event import ResponsesClientEvent
from openai.types.responses.responses_server_event import ResponsesServerEvent
from pydantic import TypeAdapter

from rtproxy.conversation.responses_ws import MAX_INPUT_ITEMS, assemble_responses, summarize_responses
from rtproxy.conversation.summary import SUMMARIZERS, summarize
from rtproxy.protocols.wire import Direction, Frame

SERVER: TypeAdapter[Any] = TypeAdapter(ResponsesServerEvent)
CLIENT: TypeAdapter[Any] = TypeAdapter(ResponsesClientEvent)
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": True}


def response(rid: str, status: str = "in_progress", output: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"id": rid, "object": "response", "created_at": 1, "model": "gpt-5", "status": status}
    return body | {"output": output or [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []} | extra


def usage(inp: int, out: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


def frames(script: list[tuple[float, str, Any]], *, check: bool = True) -> list[Frame]:
    """(t, "c"|"s", event) as frames; events validated by the SDK's unions unless check is off."""
    out = []
    for i, (t, who, ev) in enumerate(script):
        if check:
            (CLIENT if who == "c" else SERVER).validate_python(ev)
        data = ev if isinstance(ev, str | bytes) else orjson.dumps(ev).decode()
        out.append(Frame(i, t, Direction.CLIENT if who == "c" else Direction.SERVER, data))
    return out


def text_turn(rid: str, text: str, t0: float, *, lane: str | None = None) -> list[tuple[float, str, Any]]:
    mid = f"msg_{rid}"
    msg = {"id": mid, "type": "message", "role": "assistant", "status": "completed"}
    part = {"type": "output_text", "text": text, "annotations": []}
    extra = {"stream_id": lane} if lane else {}
    words = text.split(" ")
    out: list[tuple[float, str, Any]] = [
        (t0, "s", {"type": "response.created", "sequence_number": 0, "response": response(rid), **extra}),
        (
            t0,
            "s",
            {
                "type": "response.output_item.added",
                "sequence_number": 1,
                "output_index": 0,
                "item": {**msg, "content": []},
                **extra,
            },
        ),
    ]
    for k, w in enumerate(words):
        delta = w + (" " if k < len(words) - 1 else "")
        ev = {"type": "response.output_text.delta", "sequence_number": 2 + k, "item_id": mid, "output_index": 0}
        out.append((t0 + 0.1 + k * 0.01, "s", ev | {"content_index": 0, "delta": delta, "logprobs": [], **extra}))
    done = response(rid, "completed", [{**msg, "content": [part]}], usage=usage(10, 5, cached=4))
    out.append((t0 + 0.5, "s", {"type": "response.completed", "sequence_number": 99, "response": done, **extra}))
    return out


def test_a_text_answer_has_its_request_output_usage_and_latency() -> None:
    """Request → created → first token → completed: the response's text and usage, the request's latency."""
    book = assemble_responses(
        frames(
            [
                (
                    1.0,
                    "c",
                    {"type": "response.create", "model": "gpt-5", "input": "Hi there", "instructions": "Be brief."},
                ),
                *text_turn("resp_1", "Hello to you", 1.2),
            ]
        )
    )
    (req,) = book.requests
    (resp,) = book.responses
    assert (req.model, req.instructions, req.input[0].text, req.response) == ("gpt-5", "Be brief.", "Hi there", resp)
    assert resp.text == "Hello to you" and resp.status == "completed"
    assert resp.usage == {
        "input_tokens": 10,
        "cached_tokens": 4,
        "output_tokens": 5,
        "reasoning_tokens": 0,
        "total_tokens": 15,
    }
    assert req.latency_ms == {"created": 200.0, "first_token": 300.0, "done": 700.0}
    assert book.anomalies == []


def call_turn(rid: str, t0: float) -> list[tuple[float, str, Any]]:
    fc = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": ""}
    rs = {"id": "rs_1", "type": "reasoning", "summary": []}
    summary = {"type": "summary_text", "text": "Think first."}
    done_fc = {**fc, "arguments": '{"city":"Paris"}', "status": "completed"}
    return [
        (t0, "s", {"type": "response.created", "sequence_number": 0, "response": response(rid)}),
        (t0, "s", {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": rs}),
        (
            t0,
            "s",
            {
                "type": "response.reasoning_summary_text.delta",
                "sequence_number": 2,
                "item_id": "rs_1",
                "output_index": 0,
                "summary_index": 0,
                "delta": "Think ",
            },
        ),
        (
            t0,
            "s",
            {
                "type": "response.reasoning_summary_text.done",
                "sequence_number": 3,
                "item_id": "rs_1",
                "output_index": 0,
                "summary_index": 0,
                "text": "Think first.",
            },
        ),
        (
            t0,
            "s",
            {
                "type": "response.output_item.done",
                "sequence_number": 4,
                "output_index": 0,
                "item": {**rs, "summary": [summary]},
            },
        ),
        (t0, "s", {"type": "response.output_item.added", "sequence_number": 5, "output_index": 1, "item": fc}),
        (
            t0 + 0.1,
            "s",
            {
                "type": "response.function_call_arguments.delta",
                "sequence_number": 6,
                "item_id": "fc_1",
                "output_index": 1,
                "delta": '{"city":',
            },
        ),
        (
            t0 + 0.1,
            "s",
            {
                "type": "response.function_call_arguments.delta",
                "sequence_number": 7,
                "item_id": "fc_1",
                "output_index": 1,
                "delta": '"Paris"}',
            },
        ),
        (
            t0 + 0.2,
            "s",
            {"type": "response.output_item.done", "sequence_number": 8, "output_index": 1, "item": done_fc},
        ),
        (
            t0 + 0.3,
            "s",
            {
                "type": "response.completed",
                "sequence_number": 9,
                "response": response(
                    rid, "completed", [{**rs, "summary": [summary]}, done_fc], usage=usage(20, 8, reasoning=3)
                ),
            },
        ),
    ]


def test_a_function_call_and_its_output_become_one_tool_use() -> None:
    """A reasoning summary and a function call streamed in deltas; the next request (previous_response_id)
    returns the output: the Summary has one user turn, two assistant turns, the call with arguments and output."""
    script = [
        (0.0, "c", {"type": "response.create", "model": "gpt-5", "input": "Weather in Paris?", "tools": [TOOL]}),
        *call_turn("resp_1", 0.1),
        (
            1.0,
            "c",
            {
                "type": "response.create",
                "model": "gpt-5",
                "previous_response_id": "resp_1",
                "input": [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
            },
        ),
        *text_turn("resp_2", "It is sunny", 1.1),
    ]
    book = assemble_responses(frames(script))
    first, second = book.responses
    rs, fc = first.items
    assert (rs.type, rs.summary) == ("reasoning", "Think first.")
    assert (fc.type, fc.name, fc.call_id, fc.arguments) == (
        "function_call",
        "get_weather",
        "call_1",
        '{"city":"Paris"}',
    )
    assert book.requests[0].tools == ["get_weather"] and book.requests[1].previous_response_id == "resp_1"
    s = summarize_responses(frames(script), {"api": "responses"})
    assert [(t.speaker, t.text) for t in s.turns] == [
        ("user", "Weather in Paris?"),
        ("assistant", None),
        ("assistant", "It is sunny"),
    ]
    (tool,) = s.tools()
    assert (tool.kind, tool.name, tool.arguments, tool.output) == (
        "function",
        "get_weather",
        {"city": "Paris"},
        "sunny",
    )
    assert s.usage["input_tokens"] == 30 and s.usage["reasoning_tokens"] == 3
    assert "responses" in SUMMARIZERS and summarize({"api": "responses"}, frames(script)).tools()[0].output == "sunny"


def test_a_stateless_agent_resending_its_conversation_gives_each_user_message_once() -> None:
    """Requests without previous_response_id carry the whole conversation: old user messages are not new turns."""
    user = {"role": "user", "content": "Hi"}
    script = [
        (0.0, "c", {"type": "response.create", "model": "gpt-5", "input": [user]}),
        *text_turn("resp_1", "Hello", 0.1),
        (
            1.0,
            "c",
            {
                "type": "response.create",
                "model": "gpt-5",
                "input": [user, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
            },
        ),
        *text_turn("resp_2", "Goodbye", 1.1),
    ]
    s = summarize_responses(frames(script))
    assert [(t.speaker, t.text) for t in s.turns] == [
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "Bye"),
        ("assistant", "Goodbye"),
    ]


def test_hosted_tool_items_refusals_and_custom_calls_are_output_items() -> None:
    """Custom tool input deltas, an MCP call, a web search call and a refusal land on their items."""
    custom = {"id": "ct_1", "type": "custom_tool_call", "call_id": "call_c", "name": "sql", "input": ""}
    mcp = {
        "id": "mcp_1",
        "type": "mcp_call",
        "name": "lookup",
        "server_label": "docs",
        "arguments": "{}",
        "output": "found",
        "status": "completed",
    }
    web = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "x"}}
    refusal_msg = {
        "id": "msg_r",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "refusal", "refusal": "No."}],
    }
    script = [
        (0.0, "c", {"type": "response.create", "model": "gpt-5", "input": "go"}),
        (0.1, "s", {"type": "response.created", "sequence_number": 0, "response": response("resp_1")}),
        (0.1, "s", {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": custom}),
        (
            0.2,
            "s",
            {
                "type": "response.custom_tool_call_input.delta",
                "sequence_number": 2,
                "item_id": "ct_1",
                "output_index": 0,
                "delta": "SELECT 1",
            },
        ),
        (0.2, "s", {"type": "response.output_item.done", "sequence_number": 3, "output_index": 1, "item": mcp}),
        (
            0.2,
            "s",
            {"type": "response.web_search_call.searching", "sequence_number": 4, "item_id": "ws_1", "output_index": 2},
        ),
        (0.3, "s", {"type": "response.output_item.done", "sequence_number": 5, "output_index": 2, "item": web}),
        (
            0.3,
            "s",
            {
                "type": "response.refusal.delta",
                "sequence_number": 6,
                "item_id": "msg_r",
                "output_index": 3,
                "content_index": 0,
                "delta": "No.",
            },
        ),
        (
            0.4,
            "s",
            {
                "type": "response.completed",
                "sequence_number": 7,
                "response": response("resp_1", "completed", [refusal_msg]),
            },
        ),
    ]
    (resp,) = assemble_responses(frames(script)).responses
    by_id = {i.id: i for i in resp.items}
    assert by_id["ct_1"].arguments == "SELECT 1" and by_id["ct_1"].type == "custom_tool_call"
    assert (by_id["mcp_1"].server_label, by_id["mcp_1"].output) == ("docs", "found")
    assert by_id["ws_1"].type == "web_search_call" and by_id["msg_r"].refusal == "No."
    kinds = [t.kind for t in summarize_responses(frames(script)).tools()]
    assert kinds == ["custom", "mcp", "web_search"]


def test_lanes_interleaved_each_response_answers_its_lanes_request() -> None:
    """Two lanes whose events interleave: each response belongs to its lane's request, first in first out."""
    a, b = text_turn("resp_a", "to a", 0.2, lane="a"), text_turn("resp_b", "to b", 0.25, lane="b")
    merged = sorted(a + b, key=lambda x: x[0])
    script = [
        (0.0, "c", {"type": "response.create", "model": "gpt-5", "input": "A", "stream_id": "a"}),
        (0.1, "c", {"type": "response.create", "model": "gpt-5", "input": "B", "stream_id": "b"}),
        *merged,
    ]
    book = assemble_responses(frames(script))
    assert book.lanes == ["a", "b"]
    assert [(r.stream_id, r.response.text if r.response else None) for r in book.requests] == [
        ("a", "to a"),
        ("b", "to b"),
    ]
    assert [r["stream_id"] for r in book.to_json()["responses"]] == ["a", "b"]


def test_a_websocket_error_event_is_an_error_and_answers_the_waiting_request() -> None:
    """The WebSocket mode's error (nested `error` object, with its lane) is a session error; the request it
    refused has no response, and the next request on the lane gets the next response."""
    err = {
        "type": "error",
        "status": 400,
        "stream_id": "a",
        "error": {"type": "invalid_request_error", "code": "bad", "message": "nope", "param": None},
    }
    script = [
        (0.0, "c", {"type": "response.create", "model": "gpt-5", "input": "x", "stream_id": "a"}),
        (0.1, "s", err),
        (0.2, "c", {"type": "response.create", "model": "gpt-5", "input": "y", "stream_id": "a"}),
        *text_turn("resp_2", "ok", 0.3, lane="a"),
    ]
    book = assemble_responses(frames(script))
    assert [(r.response.id if r.response else None) for r in book.requests] == [None, "resp_2"]
    assert book.to_json()["errors"][0] | {} == {"seq": 1, "t": 0.1, "code": "bad", "message": "nope", "param": None}
    assert summarize_responses(frames(script)).errors == ["bad: nope"]


def test_steers_are_kept_in_order() -> None:
    """A client steer and the server's accepted answer are kept."""
    steer = {"type": "response.steer", "response_id": "resp_1", "input": "shorter please"}
    script = [
        (0.0, "c", {"type": "response.create", "model": "gpt-5", "input": "x"}),
        *text_turn("resp_1", "ok", 0.1),
        (0.2, "c", steer),
    ]
    book = assemble_responses(frames(script, check=False))
    assert [(s["type"], s["from"]) for s in book.steers] == [("response.steer", "client")]


def test_bad_wire_input_is_an_anomaly_never_an_exception_and_lists_are_bounded() -> None:
    """Binary and non-JSON frames, unknown client events, input and tools of the wrong type, a huge input list:
    anomalies and bounded lists, no exception."""
    huge = [{"role": "user", "content": f"m{i}"} for i in range(MAX_INPUT_ITEMS * 4)]
    script = [
        (0.0, "c", b"\x00\x01"),
        (0.0, "c", "not json"),
        (0.0, "c", {"type": "session.update"}),
        (0.0, "c", {"type": "response.create", "input": 42, "tools": "all", "instructions": {"x": 1}}),
        (0.0, "c", {"type": "response.create", "input": huge + [7]}),
        (0.1, "s", {"type": "response.created", "response": "nope"}),
        (0.1, "s", {"type": "response.output_text.delta", "delta": 5}),
        (0.1, "s", {"type": "mystery"}),
        (0.1, "s", [1, 2]),
    ]
    book = assemble_responses(frames(script, check=False))
    assert len(book.requests) == 2 and book.requests[0].input == [] and book.requests[0].tools == []
    assert book.requests[1].input_count == MAX_INPUT_ITEMS * 4 + 1 and len(book.requests[1].input) == MAX_INPUT_ITEMS
    kinds = {a.kind for a in book.anomalies}
    assert {"malformed", "unknown_type"} <= kinds
    orjson.dumps(book.to_json())  # the model serialises whatever came in
    summarize_responses(frames(script, check=False))


def _mutations(value: Any, depth: int = 0) -> Any:
    """Every way of breaking one field of an event: each value in turn replaced by a wrong type."""
    if isinstance(value, dict) and depth < 4:
        for key in list(value):
            for bad in (None, 7, "x", [], {}, [{"type": 5}], -1, 1e300):
                yield {**value, key: bad}
            for sub in _mutations(value[key], depth + 1):
                yield {**value, key: sub}
    elif isinstance(value, list) and value and depth < 4:
        for sub in _mutations(value[0], depth + 1):
            yield [sub, *value[1:]]
        yield value * 3


def test_every_field_of_a_real_recording_broken_in_turn_never_raises() -> None:
    """Each event of the committed agent recording with one field (at any depth) made the wrong type: the
    reducer, the summary, `show`'s text and the TUI's snapshot never raise."""
    from pathlib import Path

    from rtproxy.cli.render_responses import responses_conversation
    from rtproxy.recording import read_recording
    from rtproxy.tui.responses_views import ResponsesViewBuilder

    rec = read_recording(Path(__file__).resolve().parent.parent / "recordings" / "responses-agent-two-tools.jsonl")
    good = list(rec.frames)
    cases = 0
    for at in range(0, len(good), 3):
        event = good[at].event
        assert event is not None
        for broken in _mutations(event):
            frames = [
                *good[:at],
                Frame(at, good[at].t, good[at].direction, orjson.dumps(broken).decode()),
                *good[at + 1 :],
            ]
            book = assemble_responses(frames, rec.session)
            list(responses_conversation(book, rec.session))
            ResponsesViewBuilder().build(book)
            orjson.dumps(book.to_json(), option=orjson.OPT_NON_STR_KEYS)
            summarize_responses(frames, rec.session)
            cases += 1
    assert cases > 500
