"""Responses WebSocket mode end to end: the real ``openai`` SDK (``client.responses.connect()``) and the real
openai-agents ``Runner`` on its Responses WebSocket transport, through the real recording proxy to the scripted
Responses upstream; what is on disk is what crossed the wire, and ``show`` rebuilds it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import AsyncOpenAI
from openai.types.responses.responses_client_event import ResponsesClientEvent
from openai.types.responses.responses_server_event import ResponsesServerEvent
from pydantic import TypeAdapter

from rtproxy.store import Store
from tests.conftest import RunningProxy, load_recordings_script, rtproxy_exe
from tests.responses_upstream import MODEL, ResponsesUpstream

ROOT = Path(__file__).resolve().parent.parent


FLOWS = load_recordings_script("make_responses_recordings")
SERVER: TypeAdapter[Any] = TypeAdapter(ResponsesServerEvent)
CLIENT: TypeAdapter[Any] = TypeAdapter(ResponsesClientEvent)


@pytest.fixture
async def upstream() -> AsyncIterator[ResponsesUpstream]:
    """The Responses upstream in place of the Realtime one (the `proxy` fixture relays to it)."""
    async with ResponsesUpstream() as up:
        yield up


def validate(up: ResponsesUpstream) -> None:
    """Every event the upstream sent validates against the SDK's server union, every client frame against the
    client union."""
    for text in up.sent:
        SERVER.validate_json(text)
    for data in up.received:
        assert isinstance(data, str)
        CLIENT.validate_json(data)


def frames_by_direction(db: Path, sid: str) -> tuple[list[str | bytes], list[str | bytes]]:
    with Store(db) as store:
        frames = list(store.frames(sid))
    assert [f.seq for f in frames] == list(range(len(frames)))
    return [f.data for f in frames if f.direction.value == "client"], [
        f.data for f in frames if f.direction.value == "server"
    ]


def show_json(db: Path, sid: str) -> dict[str, Any]:
    done = subprocess.run(
        [*rtproxy_exe(), "show", sid, "--db", str(db), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = orjson.loads(done.stdout)
    return out


def completed_usage(up: ResponsesUpstream) -> dict[str, int]:
    """Usage summed over the upstream's response.completed events, as the reducer names it."""
    total = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0, "total_tokens": 0}
    for text in up.sent:
        event = orjson.loads(text)
        if event["type"] == "response.completed":
            u = event["response"]["usage"]
            total["input_tokens"] += u["input_tokens"]
            total["cached_tokens"] += u["input_tokens_details"]["cached_tokens"]
            total["output_tokens"] += u["output_tokens"]
            total["reasoning_tokens"] += u["output_tokens_details"]["reasoning_tokens"]
            total["total_tokens"] += u["total_tokens"]
    return total


async def test_the_sdk_client_is_recorded_byte_for_byte_and_show_rebuilds_it(
    proxy: RunningProxy, upstream: ResponsesUpstream, api_key: str
) -> None:
    """`client.responses.connect()` through the proxy: both directions on disk in order, as the upstream received
    and sent them; every event validates against the SDK's models; the session is api responses with the
    model; `show --json` has both requests and responses, the function call, usage and latency; no key on disk."""
    run = await FLOWS.sdk_weather(proxy.ws_base, api_key=api_key)
    (sid,) = await proxy.settle()
    client, server = frames_by_direction(proxy.db, sid)
    assert client == upstream.received and server == upstream.sent
    validate(upstream)
    assert run.calls == [("get_weather", {"city": "Paris"})] and run.text.startswith("Done. sunny")
    with Store(proxy.db) as store:
        s = store.session(sid)
    assert (s["api"], s["model"], s["path"], s["status"]) == ("responses", MODEL, "/v1/responses", "closed")
    assert api_key.encode() not in proxy.db.read_bytes()

    out = show_json(proxy.db, sid)
    first, second = out["requests"]
    assert first["tools"] == ["get_weather"] and first["input"][0] == {
        "type": "message",
        "role": "user",
        "text": "Weather in Paris?",
    }
    r1, r2 = out["responses"]
    assert second["previous_response_id"] == r1["id"] and second["input"][0]["type"] == "function_call_output"
    assert (first["response_id"], second["response_id"]) == (r1["id"], r2["id"])
    kinds = [i["type"] for i in r1["output"]]
    assert kinds == ["reasoning", "function_call"]
    assert r1["output"][0]["summary"] == "Plan: call the tools one by one, then answer."
    call = r1["output"][1]
    assert (call["name"], orjson.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert r2["output"][0]["text"] == run.text and r2["status"] == "completed"
    assert out["usage"] == completed_usage(upstream) and out["usage"]["reasoning_tokens"] == 8
    for req in out["requests"]:
        lat = req["latency_ms"]
        assert 0 <= lat["created"] <= lat["first_token"] <= lat["done"]


async def test_an_agent_on_the_websocket_transport_is_recorded_and_rebuilt(
    proxy: RunningProxy, upstream: ResponsesUpstream, api_key: str
) -> None:
    """The openai-agents Runner with two function tools over its Responses WebSocket transport: one connection,
    three requests (each resending the conversation), two tool calls; `show` names them all."""
    run = await FLOWS.agent_two_tools(proxy.ws_base, api_key=api_key)
    (sid,) = await proxy.settle()
    assert upstream.connections == 1
    client, server = frames_by_direction(proxy.db, sid)
    assert client == upstream.received and server == upstream.sent
    validate(upstream)
    assert run.calls == [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris"})]
    out = show_json(proxy.db, sid)
    assert len(out["requests"]) == len(out["responses"]) == 3
    calls = [i for r in out["responses"] for i in r["output"] if i["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    last = out["requests"][-1]["input"]
    outputs = [i["output"] for i in last if i["type"] == "function_call_output"]
    assert outputs == ["18 degrees celsius and sunny in Paris", "14:05 in Paris"]
    assert out["responses"][-1]["output"][0]["text"] == run.text
    assert out["usage"] == completed_usage(upstream)
    text = subprocess.run(
        [*rtproxy_exe(), "show", sid, "--db", str(proxy.db)], capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0, text.stderr
    assert "REQUEST #3" in text.stdout and "→ function get_time" in text.stdout
    assert "3 requests · 3 responses · 2 tool calls" in text.stdout


async def test_lanes_and_a_stream_error_are_kept_apart(
    proxy: RunningProxy, upstream: ResponsesUpstream, api_key: str
) -> None:
    """Requests on three `stream_id` lanes, one of them failing with the WebSocket mode's error event: each
    response belongs to its lane's request; the error names its lane; `show` lists the lanes."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    seen: list[Any] = []
    async with asyncio.timeout(15), client.responses.connect() as conn:
        for lane, text in (("a", "Hello from Rome"), ("b", "Hello from Oslo"), ("c", "please fail")):
            await conn.send({"type": "response.create", "model": MODEL, "input": text, "stream_id": lane})
        done = 0
        async for event in conn:
            seen.append(event)
            done += event.type in ("response.completed", "error")
            if done == 3:
                break
    (sid,) = await proxy.settle()
    validate(upstream)
    errors = [e for e in seen if e.type == "error"]
    assert len(errors) == 1 and errors[0].stream_id == "c" and errors[0].error.code == "server_error"
    out = show_json(proxy.db, sid)
    assert out["lanes"] == ["a", "b", "c"]
    assert [(r["stream_id"], r["request"]) for r in out["responses"]] == [("a", 0), ("b", 1)]
    assert [r["output"][-1]["text"] for r in out["responses"]] == [
        "You said: Hello from Rome",
        "You said: Hello from Oslo",
    ]
    assert [(e["code"], e["message"]) for e in out["errors"]] == [
        ("server_error", "the scripted upstream was asked to fail")
    ]
    assert out["requests"][2]["response_id"] is None


def test_a_redacted_agent_recording_keeps_its_shape_and_loses_its_words(tmp_path: Path) -> None:
    """`rtproxy redact` of the agent recording: instructions, messages, reasoning summaries, tool descriptions,
    arguments and outputs are masked (in requests and streams alike); imported and shown, it has the same
    requests, responses, calls and usage, and each call's argument deltas still add up to its arguments."""
    source = ROOT / "recordings" / "responses-agent-two-tools.jsonl"
    target, db = tmp_path / "red.jsonl", tmp_path / "red.db"
    for argv in (["redact", str(source), "-o", str(target)], ["import", str(target), "--db", str(db)]):
        done = subprocess.run([*rtproxy_exe(), *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    data = target.read_text()
    for word in ("Paris", "weather and the time", "Plan", "Use the tools", "degrees", "14:05", "Current weather"):
        assert word not in data, word
    with Store(db) as store:
        (row,) = store.sessions()
    out = show_json(db, row["id"])
    with Store(db) as store:
        frames = list(store.frames(row["id"]))
    from rtproxy.conversation.responses_ws import assemble_responses
    from rtproxy.recording import read_recording

    rec = read_recording(source)
    orig = assemble_responses(rec.frames, rec.session).to_json()
    assert len(out["requests"]) == len(orig["requests"]) == 3 and out["usage"] == orig["usage"]
    names = [[i.get("name") for i in r["output"]] for r in out["responses"]]
    assert names == [[i.get("name") for i in r["output"]] for r in orig["responses"]]
    deltas: dict[str, str] = {}
    for f in frames:
        ev = f.event or {}
        if ev.get("type") == "response.function_call_arguments.delta":
            deltas[ev["item_id"]] = deltas.get(ev["item_id"], "") + ev["delta"]
        if ev.get("type") == "response.function_call_arguments.done":
            assert deltas[ev["item_id"]] == ev["arguments"] and "xxxxx" in ev["arguments"]


async def test_the_tui_shows_requests_responses_tool_calls_and_one_timeline_row_per_response(tmp_path: Path) -> None:
    """The TUI on the imported agent recording: the Conversation tab shows the question, the reasoning summary,
    both tool calls with their arguments and the outputs the agent sent back, and the answer; the Timeline tab
    one row per response; the Events tab every event."""
    from textual.widgets import Static

    from rtproxy.tui.app import make_app
    from rtproxy.tui.widgets.conversation import ConversationList
    from tests.test_tui import SIZE, lines_of, opened

    db = tmp_path / "agent.db"
    done = subprocess.run(
        [*rtproxy_exe(), "import", str(ROOT / "recordings" / "responses-agent-two-tools.jsonl"), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    app = make_app(str(db), done.stdout.strip())
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        text = "\n".join(lines_of(screen.query_one(ConversationList)))
        await pilot.press("3")
        body = str(app.screen.query_one("#timeline-body", Static).render())
    assert "What is the weather and the time in Paris?" in text
    assert "reasoning: Plan: call the tools one by one" in text
    assert "get_weather(" in text and "get_time(" in text and '"city": "Paris"' in text
    assert "18 degrees celsius and sunny in Paris" in text and "request #3: 2 tool outputs" in text
    assert "Done. 18 degrees celsius" in text
    order = [text.index(s) for s in ("What is the weather", "get_weather(", "get_time(", "Done. 18")]
    assert order == sorted(order)
    assert body.count("response.create") == 3 and "━" in body


async def test_diff_finds_a_rerun_equal_and_a_changed_agent_different(
    proxy: RunningProxy, upstream: ResponsesUpstream, api_key: str
) -> None:
    """The same agent run twice (fresh response and call ids each time) is the same by `rtproxy diff` (exit 0);
    one whose tool answers otherwise differs in that tool's output (exit 1); `export --audio` refuses in one
    line (a Responses session has no audio)."""
    await FLOWS.agent_two_tools(proxy.ws_base, api_key=api_key)
    await FLOWS.agent_two_tools(proxy.ws_base, api_key=api_key)
    await FLOWS.agent_two_tools(proxy.ws_base, api_key=api_key, units="fahrenheit")
    first, again, changed = await proxy.settle(3)
    with Store(proxy.db) as store:
        a, b = (list(store.frames(s)) for s in (first, again))
    ids = {orjson.loads(f.data)["response"]["id"] for f in a + b if b'"response.created"' in f.data.encode()}
    assert len(ids) == 6  # every run got ids of its own

    def diff(x: str, y: str) -> subprocess.CompletedProcess[str]:
        argv = ["diff", f"{proxy.db}#{x}", f"{proxy.db}#{y}"]
        return subprocess.run([*rtproxy_exe(), *argv], capture_output=True, text=True, timeout=60)

    same, other = diff(first, again), diff(first, changed)
    assert same.returncode == 0, same.stdout + same.stderr
    assert other.returncode == 1, other.stdout + other.stderr
    assert "≠" in other.stdout and "fahrenheit" in other.stdout
    audio = subprocess.run(
        [*rtproxy_exe(), "export", first, "--db", str(proxy.db), "--audio", str(proxy.db.parent / "wav")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert audio.returncode == 2 and "no audio" in audio.stderr and "Traceback" not in audio.stderr
