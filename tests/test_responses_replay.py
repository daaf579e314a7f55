"""Replaying Responses WebSocket mode: the same agent (and SDK client) passes against a replay of its own recording;
a changed agent gets the WebSocket mode's own error event naming the mismatch, and the replay exits 1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import AsyncOpenAI
from openai.types.responses.responses_server_event import ResponsesServerEvent
from pydantic import TypeAdapter

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.apis import rules_for
from rtproxy.replay.player import Player
from rtproxy.replay.script import build_script
from rtproxy.replay.server import ReplayServer, load_script, start
from tests.test_replay_server import ReplayProcess, spawn_replay
from tests.test_responses_e2e import FLOWS

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "recordings" / "responses-agent-two-tools.jsonl"
SDK = ROOT / "recordings" / "responses-sdk-weather.jsonl"
SERVER: TypeAdapter[Any] = TypeAdapter(ResponsesServerEvent)


def test_responses_sessions_get_their_own_rules() -> None:
    """A recording of api responses (or a /v1/responses path) is played by the Responses rules."""
    assert rules_for({"api": "responses"}).API == "responses"
    assert rules_for({"path": "/v1/responses"}).API == "responses"


@pytest.mark.parametrize("policy", ["ordered", "strict", "loose"])
async def test_the_agent_passes_against_rtproxy_replay_once(
    policy: str, processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """`rtproxy replay FILE --once` of the agent's recording (a real subprocess): the agent runs its two tools
    and ends with the recorded answer; exit 0, the report ok with three requests played."""
    p = spawn_replay([str(AGENT), "--once", "--match", policy, "--report", str(tmp_path / "r.json")])
    processes.append(p)
    run = await FLOWS.agent_two_tools(p.base_url)
    code, out, err = await asyncio.to_thread(p.wait)
    assert code == 0, out + err
    assert run.calls == [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris"})]
    assert run.text == "Done. 18 degrees celsius and sunny in Paris 14:05 in Paris"
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["ok"] and report["connections"][0]["path"] == "/v1/responses"
    assert report["connections"][0]["turns"] == {"played": 3, "total": 3}


async def test_the_sdk_client_passes_and_the_ids_it_sends_back_are_the_replayed_ones(
    processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """The SDK client's second request names the replayed response (previous_response_id) and call (call_id):
    the recording's, so `strict` finds them equal."""
    p = spawn_replay([str(SDK), "--once", "--match", "strict"])
    processes.append(p)
    run = await FLOWS.sdk_weather(p.base_url)
    code, out, err = await asyncio.to_thread(p.wait)
    assert code == 0, out + err
    assert run.calls == [("get_weather", {"city": "Paris"})] and run.text == "Done. sunny"


async def test_a_changed_agent_gets_the_mismatch_error_and_the_replay_exits_1(
    processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """An agent whose tool now answers in fahrenheit sends another function_call_output: the replay answers its
    second request with the WebSocket mode's error event (code rtproxy_replay_mismatch, naming the input that
    differs), the agents SDK raises it, and `rtproxy replay --once` exits 1 with the mismatch in its report."""
    p = spawn_replay([str(AGENT), "--once", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    with pytest.raises(Exception, match="rtproxy_replay_mismatch") as raised:
        await FLOWS.agent_two_tools(p.base_url, units="fahrenheit")
    assert "payload differs" in str(raised.value)
    code, out, err = await asyncio.to_thread(p.wait)
    assert code == 1, out + err
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    m, *rest = report["connections"][0]["mismatches"]
    assert m["kind"] == "payload" and m["turn"] == 1, m
    assert any("input[3].output" in d and "fahrenheit" in d for d in m["details"]), m["details"]
    assert [r["kind"] for r in rest] == ["closed_early"]  # the agent stopped there: its third request never came


async def test_the_sdk_parses_the_mismatch_error_event(tmp_path: Path) -> None:
    """A changed question gets an error the SDK parses as the WebSocket mode's ResponseWsError."""
    server = ReplayServer(load_script(SDK))
    runner, port = await start(server)
    try:
        client = AsyncOpenAI(api_key="sk-test-replay", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        async with asyncio.timeout(10), client.responses.connect() as conn:
            await conn.send({"type": "response.create", "model": "gpt-5-agent", "input": "Weather in Rome?"})
            event = await conn.recv()
            assert event.type == "error"
            assert event.error.code == "rtproxy_replay_mismatch" and "input" in event.error.message
            SERVER.validate_python(event.to_dict())
    finally:
        await server.shutdown()
        await runner.cleanup()
    assert not server.report.ok


def _frames(events: list[tuple[str, dict[str, Any]]]) -> list[Frame]:
    out = []
    for i, (who, ev) in enumerate(events):
        out.append(Frame(i, i * 0.01, Direction.CLIENT if who == "c" else Direction.SERVER, orjson.dumps(ev).decode()))
    return out


def _created(rid: str, lane: str) -> dict[str, Any]:
    body = {"id": rid, "object": "response", "created_at": 1, "model": "m", "status": "in_progress", "output": []}
    body |= {"parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    return {"type": "response.created", "sequence_number": 0, "response": body, "stream_id": lane}


def test_a_client_made_stream_id_is_echoed_as_this_runs() -> None:
    """The client names its lanes: a replay run with other names gets its own names back in every event."""
    frames = _frames(
        [
            ("c", {"type": "response.create", "model": "m", "input": "hi", "stream_id": "lane-old"}),
            ("s", _created("resp_1", "lane-old")),
        ]
    )
    script = build_script(frames, session={"api": "responses"})
    player = Player(script, "strict")
    sent = player.receive(
        orjson.dumps({"type": "response.create", "model": "m", "input": "hi", "stream_id": "lane-new"}).decode(), 0.1
    )
    (reply,) = sent
    event = orjson.loads(reply.data)
    assert event["stream_id"] == "lane-new" and event["response"]["id"] == "resp_1"
    SERVER.validate_python(event)
    assert player.report.ok


def _completed(rid: str, lane: str, text: str) -> dict[str, Any]:
    event = _created(rid, lane)
    message = {"id": f"msg_{rid}", "type": "message", "role": "assistant", "status": "completed"}
    message["content"] = [{"type": "output_text", "text": text, "annotations": []}]
    event["response"] |= {"status": "completed", "output": [message]}
    return {**event, "type": "response.completed", "sequence_number": 1}


LANES = [
    ("c", {"type": "response.create", "model": "m", "input": "first", "stream_id": "a"}),
    ("c", {"type": "response.create", "model": "m", "input": "second", "stream_id": "b"}),
    ("s", _created("resp_a", "a")),
    ("s", _created("resp_b", "b")),
    ("s", _completed("resp_b", "b", "to second")),
    ("s", _completed("resp_a", "a", "to first")),
]


def _create(text: str, lane: str) -> str:
    return orjson.dumps({"type": "response.create", "model": "m", "input": text, "stream_id": lane}).decode()


@pytest.mark.parametrize("policy", ["ordered", "strict", "loose"])
def test_each_lane_gets_its_own_stream_whatever_order_the_lanes_come_in(policy: str) -> None:
    """Two lanes recorded interleaved: a client sending lane b's request first gets b's stream (created,
    completed) and then, on a's, a's; no mismatch. Every reply validates against the SDK's server union."""
    script = build_script(_frames(LANES), session={"api": "responses"})
    assert [len(s.replies) for s in script.steps] == [2, 2]  # each request owns its lane's events
    player = Player(script, policy)
    on_b = [orjson.loads(s.data) for s in player.receive(_create("second", "b"), 0.1)]
    on_a = [orjson.loads(s.data) for s in player.receive(_create("first", "a"), 0.2)]
    for event in on_a + on_b:
        SERVER.validate_python(event)
    assert [(e["type"], e["response"]["id"]) for e in on_b] == [("response.created", "resp_b")] + [
        ("response.completed", "resp_b")
    ]
    assert [e["response"]["id"] for e in on_a] == ["resp_a", "resp_a"]
    player.close(0.3)
    assert player.report.ok, player.report.format()


def test_a_renamed_lane_stands_for_the_recorded_one_and_gets_its_name_back() -> None:
    """This run names its lanes x and y: x stands for a, y for b, and every replayed event names x or y."""
    player = Player(build_script(_frames(LANES), session={"api": "responses"}), "strict")
    on_x = [orjson.loads(s.data) for s in player.receive(_create("first", "x"), 0.1)]
    on_y = [orjson.loads(s.data) for s in player.receive(_create("second", "y"), 0.2)]
    assert {e["stream_id"] for e in on_x} == {"x"} and {e["stream_id"] for e in on_y} == {"y"}
    assert on_y[-1]["response"]["output"][0]["content"][0]["text"] == "to second"
    player.close(0.3)
    assert player.report.ok, player.report.format()


def test_a_changed_request_on_one_lane_is_a_payload_mismatch_naming_that_lane() -> None:
    """Lane b's request as recorded, then lane a's with other input: one payload mismatch (ordered compares the
    input), answered with the WebSocket mode's error event naming lane a."""
    player = Player(build_script(_frames(LANES), session={"api": "responses"}), "ordered")
    player.receive(_create("second", "b"), 0.1)
    sent = player.receive(_create("changed", "a"), 0.2)
    error = orjson.loads(sent[0].data)
    SERVER.validate_python(error)
    assert error["type"] == "error" and error["stream_id"] == "a"
    assert "input" in error["error"]["message"]
    assert [m.kind for m in player.report.mismatches] == ["payload"]


@pytest.fixture
async def upstream() -> Any:
    """The Responses upstream in place of the Realtime one (the `proxy` fixture relays to it)."""
    from tests.responses_upstream import ResponsesUpstream

    async with ResponsesUpstream() as up:
        yield up


async def _lanes(url: str, order: list[tuple[str, str]]) -> dict[str, list[Any]]:
    """Send one request per (lane, question) at once; every event received, by lane, until all completed."""
    client = AsyncOpenAI(api_key="sk-test-lanes-" + "x" * 20, websocket_base_url=url)
    by_lane: dict[str, list[Any]] = {lane: [] for lane, _ in order}
    async with asyncio.timeout(15), client.responses.connect() as conn:
        for lane, text in order:
            await conn.send({"type": "response.create", "model": "gpt-5-agent", "input": text, "stream_id": lane})
        done = 0
        async for event in conn:
            by_lane[event.stream_id].append(event)
            done += event.type in ("response.completed", "error")
            if done == len(order):
                break
    return by_lane


async def test_lanes_recorded_through_the_proxy_replay_to_the_sdk_in_another_order(
    proxy: Any, upstream: Any, tmp_path: Path
) -> None:
    """Two lanes recorded through the real proxy, exported, replayed (strict) to the SDK client sending them in
    the other order: each lane gets its own recorded answer and no mismatch."""
    from rtproxy.recording import write_recording
    from rtproxy.store import Store

    asked = [("north", "Hello from Oslo"), ("south", "Hello from Rome")]
    recorded = await _lanes(proxy.ws_base, asked)
    (sid,) = await proxy.settle()
    path = tmp_path / "lanes.jsonl"
    with Store(proxy.db) as store:
        write_recording(path, store.session(sid), store.frames(sid))
    server = ReplayServer(load_script(path), policy="strict")
    runner, port = await start(server)
    try:
        replayed = await _lanes(f"ws://127.0.0.1:{port}/v1", list(reversed(asked)))
        await server.wait_idle(5)
    finally:
        await server.shutdown()
        await runner.cleanup()
    assert server.report.ok, server.report.format()
    for lane in ("north", "south"):
        assert [e.to_dict() for e in replayed[lane]] == [e.to_dict() for e in recorded[lane]]
    assert replayed["south"][-1].response.output[-1].content[0].text == "You said: Hello from Rome"
