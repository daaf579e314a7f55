"""conversation.summary: the API-neutral Summary of the example recordings, and the dispatch by API."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import orjson
import pytest

from rtproxy.conversation.realtime import assemble
from rtproxy.conversation.summary import (
    ASSISTANT,
    SUMMARIZERS,
    USER,
    Summary,
    detect_api,
    flat_usage,
    summarize,
    summarize_realtime,
)
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import read_recording

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"
#: Every response of the example server reports this usage (recordings/*.jsonl, response.done).
ONE_RESPONSE = {
    "total_tokens": 187.0,
    "input_tokens": 120.0,
    "output_tokens": 67.0,
    "input_text_tokens": 100.0,
    "input_audio_tokens": 20.0,
    "input_cached_tokens": 64.0,
    "output_text_tokens": 17.0,
    "output_audio_tokens": 50.0,
}


def summary_of(name: str) -> Summary:
    rec = read_recording(RECORDINGS / f"{name}.jsonl")
    return summarize(rec.session, rec.frames)


def test_a_function_call_session_has_its_turns_tool_and_summed_usage() -> None:
    """function-call-ga: the user's question, a turn that only calls get_weather (with the client's output),
    the answer; usage is both responses' summed per unit; latency is response.create to the first delta."""
    s = summary_of("function-call-ga")
    assert (s.api, s.variant, s.model, s.errors) == ("realtime", "ga", "gpt-realtime", [])
    assert [(t.speaker, t.text) for t in s.turns] == [
        (USER, "What's the weather in Paris?"),
        (ASSISTANT, None),
        (ASSISTANT, "It is 18 degrees in Paris."),
    ]
    (tool,) = s.tools()
    assert (tool.kind, tool.name) == ("function", "get_weather")
    assert tool.arguments == {"location": "Paris", "unit": "celsius"} and tool.output == {"temperature_c": 18}
    # the call's item arrives at 0.002295 s, the client's output item at 0.005592 s
    assert tool.duration_ms == pytest.approx(3.297)
    assert s.usage == {k: 2 * v for k, v in ONE_RESPONSE.items()}
    # response.create at 0.002004 s -> first arguments delta at 0.002316 s; 0.005349 s -> first text 0.005645 s
    assert [t.latency_ms for t in s.turns] == [None, pytest.approx(0.312), pytest.approx(0.296)]


def test_a_voice_session_has_transcripts_audio_and_first_audio_latency() -> None:
    """voice-ga: the user's transcript with 1 s of microphone audio, the spoken answer's transcript and audio;
    latency is the trigger (response.create, 0.013948 s) to the first audio delta (0.024534 s)."""
    s = summary_of("voice-ga")
    user, answer = s.turns
    assert (user.speaker, user.text, user.audio_ms) == (USER, "What's the weather in Paris?", 1000.0)
    assert (answer.speaker, answer.text, answer.audio_ms) == (ASSISTANT, "It is sunny in Paris.", 1000.0)
    assert answer.latency_ms == pytest.approx(10.586) and not answer.interrupted
    assert s.usage == ONE_RESPONSE


def test_a_cancelled_response_is_an_interrupted_turn_with_its_truncated_audio() -> None:
    """cancelled-ga: the response is cancelled and its audio truncated at 300 ms (the transcript goes with it)."""
    s = summary_of("cancelled-ga")
    user, answer = s.turns
    assert user.text == "Tell me a long story"
    assert answer.interrupted and answer.audio_ms == 300.0 and answer.text is None
    assert answer.latency_ms == pytest.approx(30.151)
    assert s.anomalies == 1  # the recording's transcript.done differs from its deltas


def test_the_beta_dialect_summarizes_like_ga() -> None:
    """text-beta and text-ga say the same words; only the dialect and model differ."""
    beta, ga = summary_of("text-beta"), summary_of("text-ga")
    assert (beta.variant, beta.model) == ("beta", "gpt-4o-realtime-preview")
    assert [(t.speaker, t.text) for t in beta.turns] == [(t.speaker, t.text) for t in ga.turns]
    assert [(t.speaker, t.text) for t in ga.turns] == [
        (USER, "Hello there"),
        (ASSISTANT, "Hello! How can I help you today?"),
    ]


def test_a_conversation_or_its_frames_give_the_same_summary() -> None:
    """summarize_realtime takes a rebuilt Conversation as well as the frames."""
    rec = read_recording(RECORDINGS / "function-call-ga.jsonl")
    conv = assemble(rec.frames, keep_audio=False, session=rec.session)
    assert summarize_realtime(conv, rec.session) == summarize_realtime(rec.frames, rec.session)


def test_usage_is_flattened_numbers_only_and_cached_tokens_keep_their_own_name() -> None:
    """Nested details become prefixed names; strings and booleans are left out; cached tokens are not added
    into input_tokens a second time."""
    usage = {
        "input_tokens": 10,
        "input_token_details": {"cached_tokens": 4, "cached_tokens_details": {"text_tokens": 3, "audio_tokens": 1}},
        "output_token_details": {"audio_tokens": 2.5, "flag": True},
        "type": "tokens",
    }
    assert flat_usage(usage) == {
        "input_tokens": 10.0,
        "input_cached_tokens": 4.0,
        "input_cached_text_tokens": 3.0,
        "input_cached_audio_tokens": 1.0,
        "output_audio_tokens": 2.5,
    }
    assert flat_usage(None) == {} and flat_usage({"x": "1"}) == {}


def _frame(seq: int, direction: Direction, event: dict[str, object]) -> Frame:
    return Frame(seq, seq * 0.01, direction, orjson.dumps(event).decode())


def test_the_api_comes_from_the_row_else_the_path_else_the_frames() -> None:
    """A row's api wins; an old header without one is detected from its path or its first frames; nothing at
    all means Realtime (a recording made before sessions carried their API)."""
    live_frame = _frame(0, Direction.SERVER, {"type": "session.delegation.created", "offset_ms": 10})
    assert detect_api({"api": "responses", "path": "/v1/realtime"}, []) == "responses"
    assert detect_api({"path": "/v1/live/sessions"}, []) == "live"
    assert detect_api({"path": "/v1/realtime", "query": "model=gpt-realtime"}, [live_frame]) == "realtime"
    assert detect_api({}, [live_frame]) == "live"
    assert detect_api(None, []) == "realtime"


def test_the_registry_has_one_summarizer_per_api() -> None:
    """Realtime, GPT-Live and Responses are registered; an API without a summarizer gives a summary with no
    turns, and a note saying why."""
    assert set(SUMMARIZERS) == {"realtime", "live", "responses"}
    s = summarize({"api": "responses", "model": "gpt-5"}, [_frame(0, Direction.CLIENT, {"type": "response.create"})])
    assert (s.api, s.model, s.turns, s.notes) == ("responses", "gpt-5", [], [])
    s = summarize({"api": "other", "model": "m"}, [_frame(0, Direction.CLIENT, {"type": "x"})])
    assert (s.api, s.model, s.turns) == ("other", "m", [])
    assert s.notes and "other" in s.notes[0]


def test_a_live_session_without_its_reducer_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """When rtproxy.conversation.live cannot be imported, a Live session is a summary with no turns and a note."""
    monkeypatch.setitem(sys.modules, "rtproxy.conversation.live", None)  # what a build without the module sees
    s = summarize({"api": "live", "model": "gpt-live", "variant": "primary"}, [])
    assert (s.api, s.variant, s.model, s.turns) == ("live", "primary", "gpt-live", [])
    assert s.notes == ["no GPT-Live reducer in this build: its turns are not compared"]


@pytest.mark.skipif(importlib.util.find_spec("rtproxy.conversation.live") is None, reason="no Live reducer yet")
def test_a_live_session_goes_to_summarize_live() -> None:
    """With the Live reducer present, summarize hands a Live session to summarize_live."""
    from rtproxy.conversation.live import summarize_live  # type: ignore[import-not-found,unused-ignore]

    session = {"api": "live", "path": "/v1/live/sessions"}
    assert summarize(session, []) == summarize_live([], session)


def test_to_json_is_plain_json() -> None:
    """A summary (nested tools included) serialises as JSON."""
    s = summary_of("function-call-ga")
    data = orjson.loads(orjson.dumps(s.to_json()))
    assert data["turns"][1]["tools"][0]["name"] == "get_weather" and data["usage"]["input_tokens"] == 240.0


def test_errors_and_failed_responses_are_the_summary_errors() -> None:
    """A server error event and a failed response each become one line of Summary.errors."""
    frames = [
        _frame(0, Direction.CLIENT, {"type": "response.create", "event_id": "c1"}),
        _frame(1, Direction.SERVER, {"type": "error", "error": {"type": "invalid_request_error",
                                                                "code": "unknown_parameter", "message": "Bad field"}}),
        _frame(2, Direction.SERVER, {"type": "response.created", "response": {"id": "r1", "status": "in_progress"}}),
        _frame(3, Direction.SERVER, {"type": "response.done", "response": {"id": "r1", "status": "failed",
                "status_details": {"type": "failed", "error": {"type": "server_error", "message": "Boom"}}}}),
    ]  # fmt: skip
    s = summarize({"path": "/v1/realtime"}, frames)
    assert s.errors == ["response failed: server_error: Boom", "unknown_parameter: Bad field"]
    assert [(t.speaker, t.text) for t in s.turns] == [(ASSISTANT, None)] and s.usage == {}


def test_the_cli_offers_exactly_the_ignorable_names() -> None:
    """`rtproxy diff --ignore` accepts every name diff.IGNORABLE defines and its aliases, nothing else."""
    from rtproxy.cli.replay import IGNORE_CHOICES
    from rtproxy.diff import ALIASES, IGNORABLE

    assert sorted(IGNORE_CHOICES) == sorted([*IGNORABLE, *ALIASES])


def test_an_mcp_call_is_a_tool_with_its_output() -> None:
    """A Realtime MCP call (an item of its own type, output inline) is a tool named as the wire names it."""
    item = {"id": "m1", "type": "mcp_call", "name": "search", "arguments": '{"q": "paris"}', "output": '["a"]',
            "server_label": "docs"}  # fmt: skip
    frames = [
        _frame(0, Direction.CLIENT, {"type": "response.create"}),
        _frame(1, Direction.SERVER, {"type": "response.created", "response": {"id": "r1"}}),
        _frame(2, Direction.SERVER, {"type": "response.output_item.added", "response_id": "r1", "item": item}),
        _frame(3, Direction.SERVER, {"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
    ]
    (tool,) = summarize({"path": "/v1/realtime"}, frames).tools()
    assert (tool.kind, tool.name, tool.arguments, tool.output) == ("mcp_call", "search", {"q": "paris"}, ["a"])
