"""`rtproxy rerun`: the pure plan (turns, waits, ids, function calls) and the real command against the scripted
upstream, recording through the in-process proxy."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.errors import UpstreamError
from rtproxy.protocols import Api
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import read_recording, write_recording
from rtproxy.replay.rerun import PlanError, build_plan
from rtproxy.replay.rerun_client import rerun
from rtproxy.replay.rerun_ids import Call, IdLedger, rewrite_ids
from rtproxy.replay.rerun_state import Divergence, RunState, call_handler
from rtproxy.store import Store
from tests.conftest import make_key, rtproxy_exe
from tests.upstream import ScriptedUpstream

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"
FUNCTION_CALL = RECORDINGS / "function-call-ga.jsonl"
VOICE_BETA = RECORDINGS / "voice-beta.jsonl"
CANCELLED = RECORDINGS / "cancelled-ga.jsonl"
#: What the upstream must say for a rerun of each recording to mean the same (see recordings/make_recordings.py).
FUNCTION_CALL_TEXT = "It is 18 degrees in Paris."
VOICE_TEXT = "It is sunny in Paris."
NEW_MODEL = "gpt-realtime-next"


def plan_of(path: Path, **kwargs: Any) -> Any:
    rec = read_recording(path)
    return build_plan(rec.session, rec.frames, **kwargs)


def server(seq: int, t: float, event: dict[str, Any]) -> Frame:
    return Frame(seq, t, Direction.SERVER, orjson.dumps(event).decode())


def client(seq: int, t: float, event: dict[str, Any]) -> Frame:
    return Frame(seq, t, Direction.CLIENT, orjson.dumps(event).decode())


# --- the plan (pure) -------------------------------------------------------------------------


def test_plan_of_a_function_call_recording_has_two_turns_each_waiting_for_the_response_before() -> None:
    """The recorded client sent its call output after the first response.done: that is turn 2, waiting for it."""
    plan = plan_of(FUNCTION_CALL)
    assert plan.api is Api.REALTIME and plan.dialect == "ga"
    assert [[s.type for s in t.steps] for t in plan.turns] == [
        ["session.update", "conversation.item.create", "response.create"],
        ["conversation.item.create", "response.create"],
    ]
    assert [s.after_done for s in plan.steps] == [0, 0, 0, 1, 1]
    assert plan.greeting and plan.final_done == 2
    (call,) = plan.calls
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"location": "Paris", "unit": "celsius"}
    answer = plan.turns[1].steps[0]
    assert answer.answers == (call.call_id,) and answer.refs == (call.call_id,)
    assert plan.outputs[call.call_id] == '{"temperature_c": 18}'


def test_plan_connects_like_the_recorded_client_without_its_secrets_and_with_the_new_model() -> None:
    """Same path; query with model= replaced; recorded headers minus credentials and handshake/hop headers."""
    plan = plan_of(VOICE_BETA, model=NEW_MODEL)
    assert plan.path == "/v1/realtime" and plan.query == f"model={NEW_MODEL}" and plan.model == NEW_MODEL
    lowered = {k.lower() for k in plan.headers}
    assert "authorization" not in lowered and "host" not in lowered
    assert not any(k.startswith("sec-websocket") for k in lowered)
    assert plan.headers["OpenAI-Beta"] == "realtime=v1" and plan.dialect == "beta"
    assert plan.auth_header == "Authorization"
    assert not any("****" in v for v in plan.headers.values())


def test_the_query_keeps_its_parameters_but_not_masked_credentials() -> None:
    """Azure's api-key= was masked in the recording: it is left out (the key goes in a header); the rest stays."""
    frames = [client(0, 0.0, {"type": "response.create"})]
    session = {
        "path": "/openai/realtime",
        "query": "api-version=2025-04-01&deployment=rt&api-key=****abcd",
        "api": "realtime",
        "dialect": "ga",
        "request_headers": {"api-key": "****abcd", "Host": "x"},
    }
    plan = build_plan(session, frames)
    assert plan.query == "api-version=2025-04-01&deployment=rt" and plan.auth_header == "api-key"
    assert build_plan(session, frames, model="m2").query == "api-version=2025-04-01&deployment=m2"
    openai = {**session, "query": "model=gpt-realtime&x=1"}
    assert build_plan(openai, frames, model="m2").query == "model=m2&x=1"


def test_instructions_replace_the_session_updates_or_come_first_when_the_recording_had_none() -> None:
    """--instructions rewrites session.update's instructions; without a session.update one is sent first."""
    plan = plan_of(FUNCTION_CALL, instructions="Answer in French.")
    first = plan.steps[0].event
    assert first["type"] == "session.update" and first["session"]["instructions"] == "Answer in French."
    assert first["session"]["tools"][0]["name"] == "get_weather"  # the rest of the update kept
    frames = [
        server(0, 0.0, {"type": "session.created", "session": {"modalities": ["text"]}}),
        client(1, 0.1, {"type": "response.create"}),
        server(2, 0.2, {"type": "response.done", "response": {"id": "r1", "output": []}}),
    ]
    beta = build_plan({"path": "/v1/realtime", "dialect": "beta", "api": "realtime"}, frames, instructions="Hi.")
    assert [s.type for s in beta.steps] == ["session.update", "response.create"]
    assert beta.steps[0].event == {"type": "session.update", "session": {"instructions": "Hi."}}
    ga = build_plan({"path": "/v1/realtime", "dialect": "ga", "api": "realtime"}, frames, instructions="Hi.")
    assert ga.steps[0].event["session"] == {"type": "realtime", "instructions": "Hi."}
    assert [f.direction.value for f in ga.expected] == ["server", "client", "client", "server"]


def test_only_the_first_append_of_a_run_waits_and_the_next_burst_waits_for_the_answer() -> None:
    """Push-to-talk: the second burst of audio starts after the first answer finished; a burst streams unpaused,
    even past a response the server started meanwhile (a microphone does not stop for the model)."""
    append = {"type": "input_audio_buffer.append", "audio": "AAAA"}
    frames = [
        client(0, 0.0, append),
        server(1, 0.05, {"type": "response.created", "response": {"id": "r0"}}),
        client(2, 0.1, append),
        client(3, 0.2, {"type": "input_audio_buffer.commit"}),
        client(4, 0.2, {"type": "response.create"}),
        server(5, 0.3, {"type": "response.created", "response": {"id": "r1"}}),
        server(6, 0.9, {"type": "response.done", "response": {"id": "r1", "output": []}}),
        client(7, 1.5, append),
        client(8, 1.6, append),
        client(9, 1.6, {"type": "input_audio_buffer.commit"}),
    ]
    plan = build_plan({"path": "/v1/realtime", "api": "realtime", "dialect": "ga"}, frames)
    steps = plan.steps
    assert [(s.after_created, s.after_done) for s in steps] == [(0, 0), (0, 0), (1, 0), (1, 0), (2, 1), (2, 1), (2, 1)]
    assert len(plan.turns) == 2 and [s.index for s in plan.turns[1].steps] == [4, 5, 6]
    assert steps[4].delay == pytest.approx(0.6)  # after the response.done it waited for
    assert steps[5].delay == pytest.approx(0.1)  # after the append before it
    assert not plan.greeting


def test_ids_the_server_made_map_by_kind_and_order_and_the_clients_own_stay() -> None:
    """The recording's assistant item is this run's assistant item; an id the client chose is never rewritten."""
    recorded, run = IdLedger(), IdLedger()
    recorded.feed_client({"type": "conversation.item.create", "item": {"id": "mine", "type": "message"}})
    for ledger, prefix in ((recorded, "old"), (run, "new")):
        ledger.feed_server({"type": "response.created", "response": {"id": f"{prefix}_resp"}})
        ledger.feed_server({"type": "input_audio_buffer.committed", "item_id": f"{prefix}_user"})
        ledger.feed_server(
            {
                "type": "conversation.item.added",
                "item": {"id": f"{prefix}_asst", "type": "message", "role": "assistant"},
            }
        )
    assert recorded.counterpart("old_asst", run) == "new_asst"
    assert recorded.counterpart("old_user", run) == "new_user"
    assert recorded.counterpart("old_resp", run) == "new_resp"
    assert recorded.counterpart("mine", run) is None and "mine" in recorded.client_made
    event = {"type": "conversation.item.truncate", "item_id": "old_asst", "event_id": "old_asst_not_an_id_key"}
    mapping = {"old_asst": "new_asst"}
    assert rewrite_ids(event, mapping) == {**event, "item_id": "new_asst"}
    assert event["item_id"] == "old_asst"  # a copy
    assert recorded.describe("old_asst") == "the 1st assistant message item"


def _run_state_after_call(plan: Any, arguments: str) -> RunState:
    state = RunState(plan)
    call_id, item_id = "call_new", "item_new"
    item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": arguments}
    for event in (
        {"type": "session.created", "session": {}},
        {"type": "response.created", "response": {"id": "resp_new"}},
        {"type": "conversation.item.added", "item": {**item, "arguments": ""}},
        {"type": "response.output_item.done", "item": item},
        {"type": "response.done", "response": {"id": "resp_new", "output": [item]}},
    ):
        state.feed_server(orjson.dumps(event))
        state.feed_server(orjson.dumps(event).decode())
    return state


def test_the_same_call_gets_the_recorded_output_under_the_new_call_id() -> None:
    """Same function, JSON-equal arguments (key order aside): the recorded output, rewritten to this run's call_id."""
    plan = plan_of(FUNCTION_CALL)
    state = _run_state_after_call(plan, '{"unit": "celsius", "location": "Paris"}')
    step = plan.turns[1].steps[0]
    assert state.ready(step) and state.extra_call(step) is None
    data, divergence = state.answer(step, 2, {})
    assert divergence is None
    item = orjson.loads(data)["item"]
    assert item == {"type": "function_call_output", "call_id": "call_new", "output": '{"temperature_c": 18}'}


def test_a_different_call_is_a_divergence_unless_a_handler_answers_it() -> None:
    """Other arguments: stop, naming both calls; with a handler, its result (a dict as JSON) is the output."""
    plan = plan_of(FUNCTION_CALL)
    step = plan.turns[1].steps[0]
    state = _run_state_after_call(plan, '{"location": "Paris", "unit": "fahrenheit"}')
    _, divergence = state.answer(step, 2, {})
    assert divergence is not None
    assert '"unit": "fahrenheit"' in divergence.message and '"unit": "celsius"' in divergence.message
    assert "no --tools handler for get_weather" in divergence.format()

    def get_weather(location: str, unit: str) -> dict[str, Any]:
        return {"where": location, "unit": unit}

    data, divergence = state.answer(step, 2, {"get_weather": get_weather})
    assert divergence is None
    assert orjson.loads(orjson.loads(data)["item"]["output"]) == {"where": "Paris", "unit": "fahrenheit"}
    assert [c.name for c, _ in state.handled] == ["get_weather"]

    def broken(**_: Any) -> str:
        raise ValueError("no such city")

    _, divergence = state.answer(step, 2, {"get_weather": broken})
    assert divergence is not None and "raised ValueError: no such city" in divergence.message


def test_a_missing_call_is_reported_once_the_server_is_idle() -> None:
    """The new model answered in text where the recording called a function: the step that answers it is stuck."""
    plan = plan_of(FUNCTION_CALL)
    state = RunState(plan)
    message = {"id": "m", "type": "message", "role": "assistant"}
    for event in (
        {"type": "session.created"},
        {"type": "response.created", "response": {"id": "r"}},
        {"type": "response.output_item.done", "item": message},
        {"type": "response.done", "response": {"id": "r", "output": [message]}},
    ):
        state.feed_server(orjson.dumps(event).decode())
    step = plan.turns[1].steps[0]
    assert not state.ready(step)
    reason = state.stuck(step)
    assert reason is not None and "get_weather" in reason and "no such call" in reason


def test_an_extra_call_stops_without_a_handler_and_is_answered_outside_the_count_with_one() -> None:
    """A call the recording never made: a divergence without a handler; with one, its output and a
    response.create, and the response that provokes does not count against the recording's."""
    frames = [
        client(0, 0.0, {"type": "response.create"}),
        server(1, 0.1, {"type": "response.created", "response": {"id": "r1"}}),
        server(2, 0.2, {"type": "response.done", "response": {"id": "r1", "output": []}}),
        client(3, 0.3, {"type": "response.create"}),
        server(4, 0.4, {"type": "response.created", "response": {"id": "r2"}}),
        server(5, 0.5, {"type": "response.done", "response": {"id": "r2", "output": []}}),
        client(6, 0.6, {"type": "response.create"}),
    ]
    plan = build_plan({"path": "/v1/realtime", "api": "realtime", "dialect": "ga"}, frames)
    state = RunState(plan)
    call = {"type": "function_call", "id": "i", "call_id": "c", "name": "lookup", "arguments": '{"q": "x"}'}
    for event in (
        {"type": "response.created", "response": {"id": "x"}},
        {"type": "response.done", "response": {"id": "x", "output": [call]}},
    ):
        state.feed_server(orjson.dumps(event).decode())
    extra = state.extra_call(plan.steps[1])
    assert extra is not None and extra.name == "lookup"
    stop = state.extra_answer(extra, {}, 2)
    assert isinstance(stop, Divergence)
    assert (
        stop.message
        == 'the new model called lookup({"q": "x"}) where the recording made no call; no --tools handler for lookup'
    )
    frames_out = state.extra_answer(extra, {"lookup": lambda q: f"found {q}"}, 2)
    assert isinstance(frames_out, list)
    assert [orjson.loads(f) for f in frames_out] == [
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "c", "output": "found x"},
        },
        {"type": "response.create"},
    ]
    assert state.extra_call(plan.steps[1]) is None
    assert not state.ready(plan.steps[1])  # until the response the output provokes is over
    for event in (
        {"type": "response.created", "response": {"id": "y"}},
        {"type": "response.done", "response": {"id": "y", "output": []}},
    ):
        state.feed_server(orjson.dumps(event).decode())
    assert state.ready(plan.steps[1])
    assert not state.ready(plan.steps[2])  # the extra response is not the recording's second one
    assert state.waiting_for(plan.steps[2]) == "finished response #2"


def test_handlers_take_the_arguments_as_keywords() -> None:
    """A handler is called as handler(**arguments); a string result is the output as it is."""
    assert call_handler(lambda location: f"sunny in {location}", '{"location": "Oslo"}') == "sunny in Oslo"
    assert call_handler(lambda **kw: kw, '{"a": 1}') == '{"a":1}'
    assert Call("c", "f", '{"a": 1, "b": 2}').same_as(Call("d", "f", '{"b": 2, "a": 1}'))
    assert not Call("c", "f", '{"a": 1}').same_as(Call("d", "g", '{"a": 1}'))


def test_sessions_that_cannot_be_rerun_are_refused() -> None:
    """A GPT-Live sideband or fork, another API, or a recording without client events, is a PlanError (one line)."""
    frames = [server(0, 0.0, {"type": "session.created"})]
    with pytest.raises(PlanError, match="no client events"):
        build_plan({"path": "/v1/realtime", "api": "realtime", "dialect": "ga"}, frames)
    with pytest.raises(PlanError, match="sideband watches another connection's session: rerun its primary"):
        build_plan({"path": "/v1/live/sessions/sess_1/attach", "api": "live", "variant": "sideband"}, frames)
    with pytest.raises(PlanError, match="fork starts from a stored session"):
        build_plan({"path": "/v1/live/sessions/sess_1/fork", "api": "live", "variant": "fork"}, frames)
    with pytest.raises(PlanError, match="an unknown session cannot be rerun"):
        build_plan({"path": "/echo"}, [client(0, 0.0, {"type": "hello"})])


def test_junk_from_the_recording_never_raises_and_stays_bounded() -> None:
    """Non-JSON frames, deep nesting and odd shapes are sent as recorded; ids are walked only to MAX_DEPTH."""
    deep = '{"type": "conversation.item.create", "item": ' + '{"a": ' * 300 + '{"item_id": "x"}' + "}" * 301
    frames = [
        Frame(0, 0.0, Direction.CLIENT, b"\x00\x01"),
        Frame(1, 0.1, Direction.CLIENT, "not json"),
        Frame(2, 0.2, Direction.CLIENT, deep),
        server(3, 0.3, {"type": "session.updated", "item_id": "x"}),
        Frame(4, 0.4, Direction.CLIENT, deep.replace("conversation.item.create", "session.update")),
        server(5, 0.5, {"type": "response.done", "response": "nope"}),
        server(6, 0.6, {"type": "response.output_item.done", "item": {"type": "function_call", "name": 3}}),
    ]
    plan = build_plan({"path": "/v1/realtime", "api": "realtime", "dialect": "ga"}, frames, instructions="Hi.")
    assert [s.data for s in plan.steps][:4] == [b"\x00\x01", "not json", deep, frames[4].data]
    state = RunState(plan)
    for f in frames:
        state.feed_server(f.data)
    assert [state.answer(s, 1, {}) for s in plan.steps] == [(s.data, None) for s in plan.steps]


# --- the command, against the scripted upstream ---------------------------------------------------


async def run_rerun(*args: str, key: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `rtproxy rerun ARGS` as a real subprocess, without blocking the upstream's event loop."""
    full_env = {**os.environ, **(env or {})}
    if key is not None:
        full_env["OPENAI_API_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        *rtproxy_exe(),
        "rerun",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=full_env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def db_bytes(db: Path) -> bytes:
    """Everything SQLite keeps for a database: the file, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


async def test_rerun_against_an_unchanged_upstream_is_equal_and_recorded_without_the_key(tmp_path: Path) -> None:
    """Exit 0, 'same meaning'; the session is in --db with its label; the key reached the upstream, not the db."""
    key, db = make_key(), tmp_path / "rerun.db"
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT) as up:
        code, out, err = await run_rerun(
            str(FUNCTION_CALL), "--upstream", up.url, "--db", str(db), "--speed", "0", key=key
        )
        assert code == 0, out + err
        (conn,) = up.connections
    assert "same meaning" in out and "2 of 2 turns played" in out
    assert "rerun: turn 1 of 2" in err and "rerun: turn 2 of 2" in err and "Traceback" not in err
    assert conn.path == "/v1/realtime" and conn.query == {"model": "gpt-realtime"}
    assert conn.headers["Authorization"] == f"Bearer {key}"
    assert conn.headers["User-Agent"] == "AsyncOpenAI/Python 3.57.0"  # the recorded client's headers
    with Store(db) as store:
        (row,) = store.sessions()
        assert row["label"] == "rerun of function-call-ga.jsonl" and row["status"] == "closed"
        assert "****" in orjson.loads(row["request_headers"])["Authorization"]
    assert key.encode() not in db_bytes(db)
    assert key not in out + err


async def test_beta_voice_recording_reruns_in_its_dialect(tmp_path: Path) -> None:
    """A beta recording (OpenAI-Beta header, response.audio.*) is rerun in beta, audio appended, and equal."""
    db = tmp_path / "rerun.db"
    async with ScriptedUpstream(text=VOICE_TEXT, audio_ms=1000) as up:
        code, out, err = await run_rerun(str(VOICE_BETA), "--upstream", up.url, "--db", str(db), key=make_key())
        (conn,) = up.connections
    assert code == 0, out + err
    assert conn.dialect == "beta"
    appends = [m for m in conn.received if isinstance(m, str) and '"input_audio_buffer.append"' in m]
    assert len(appends) == 10


async def test_a_new_model_that_calls_the_tool_differently_stops_without_tools(tmp_path: Path) -> None:
    """--model NEW: the call's arguments changed and nothing can answer it: exit 1, the stop names both calls."""
    db = tmp_path / "rerun.db"
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT, new_model=NEW_MODEL) as up:
        code, out, err = await run_rerun(
            str(FUNCTION_CALL), "--upstream", up.url, "--db", str(db), "--model", NEW_MODEL, key=make_key()
        )
        (conn,) = up.connections
    assert code == 1, out + err
    assert conn.query["model"] == NEW_MODEL
    assert "stopped at turn 2:" in out
    assert 'get_weather({"location": "Paris", "unit": "fahrenheit"})' in out
    assert "no --tools handler for get_weather" in out
    assert not any("function_call_output" in m for m in conn.received if isinstance(m, str))
    assert "Traceback" not in err


async def test_tools_answer_the_new_call_and_the_diff_names_the_changed_argument_and_answer(tmp_path: Path) -> None:
    """--tools FILE handles the divergent call; the diff shows the new argument, the output and the answer's text."""
    db, tools = tmp_path / "rerun.db", tmp_path / "tools.py"
    tools.write_text(
        "def get_weather(location, unit='celsius'):\n"
        "    return {'temperature_f': 64} if unit == 'fahrenheit' else {'temperature_c': 18}\n"
    )
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT, new_model=NEW_MODEL, new_text="It is 64 F in Paris.") as up:
        args = [str(FUNCTION_CALL), "--upstream", up.url, "--db", str(db), "--model", NEW_MODEL, "--tools", str(tools)]
        code, out, err = await run_rerun(*args, "--json", key=make_key())
        (conn,) = up.connections
    assert code == 1, out + err
    report = orjson.loads(out)
    assert report["complete"] and report["played"] == 2 and not report["same"]
    assert report["handled"][0]["output"] == '{"temperature_f":64}'
    messages = [d["message"] for d in report["diff"]["differences"]]
    assert any(m.startswith("arguments") and "fahrenheit" in m for m in messages)
    assert any(m.startswith("text") and "It is 64 F in Paris." in m for m in messages)
    assert not any(d["section"] == "session" for d in report["diff"]["differences"])  # the asked-for model
    sent = [orjson.loads(m) for m in conn.received if isinstance(m, str) and "function_call_output" in m]
    (output_event,) = sent
    made = [orjson.loads(m) for m in conn.sent if isinstance(m, str)]
    new_call_ids = {e["item"].get("call_id") for e in made if e.get("type") == "response.output_item.done"}
    assert output_event["item"]["call_id"] in new_call_ids  # mapped to this run's call


async def test_a_new_model_changing_a_spoken_answer_shows_in_the_diff_and_ignore_drops_it(tmp_path: Path) -> None:
    """A beta voice rerun whose answer says other words: exit 1 naming the answer's text; --ignore wording: 0."""
    db = tmp_path / "rerun.db"
    async with ScriptedUpstream(text=VOICE_TEXT, audio_ms=1000, new_model=NEW_MODEL, new_text="It rains.") as up:
        base = [str(VOICE_BETA), "--upstream", up.url, "--db", str(db), "--model", NEW_MODEL, "--speed", "0"]
        code, out, err = await run_rerun(*base, key=make_key())
        assert code == 1, out + err
        assert "#2 assistant: text" in out and "It rains." in out
        code, out, err = await run_rerun(*base, "--ignore", "wording", key=make_key())
        assert code == 0, out + err


async def test_a_call_the_recording_never_made_stops_or_is_answered_by_tools(tmp_path: Path) -> None:
    """text-ga with a tool added to its session.update: the server calls it where the recording answered in text.
    Without --tools the rerun stops naming the call; with a handler the call is answered and the rerun finishes."""
    rec = read_recording(RECORDINGS / "text-ga.jsonl")
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    frames = []
    for f in rec.frames:
        event = f.event
        if f.direction is Direction.CLIENT and event is not None and event["type"] == "session.update":
            event["session"]["tools"] = [tool]
            f = Frame(f.seq, f.t, f.direction, orjson.dumps(event).decode())
        frames.append(f)
    path, tools = tmp_path / "with-tool.jsonl", tmp_path / "tools.py"
    write_recording(path, rec.session, frames)
    tools.write_text("def lookup(**arguments):\n    return 'nothing found'\n")
    async with ScriptedUpstream() as up:
        base = [str(path), "--upstream", up.url, "--db", str(tmp_path / "r.db"), "--speed", "0"]
        code, out, err = await run_rerun(*base, key=make_key())
        assert code == 1, out + err
        assert "stopped at turn 1: the new model called lookup(" in out and "no --tools handler for lookup" in out
        code, out, err = await run_rerun(*base, "--tools", str(tools), key=make_key())
        conn = up.connections[-1]
    assert code == 1, out + err  # the conversation did change: a call and its output more
    assert "stopped" not in out and "1 of 1 turns played" in out
    assert "--tools answered lookup(" in out and "nothing found" in out
    outputs = [orjson.loads(m) for m in conn.received if isinstance(m, str) and "function_call_output" in m]
    assert [o["item"]["output"] for o in outputs] == ["nothing found"]


async def test_ids_the_new_server_made_are_used_in_later_client_events(tmp_path: Path) -> None:
    """The recorded truncate names the recorded assistant item; the rerun sends this run's item id instead."""
    db = tmp_path / "rerun.db"
    plan = plan_of(CANCELLED)
    async with ScriptedUpstream(audio_ms=3000, chunk_delay=0.02) as up:
        result = await rerun(plan, upstream=up.url, db=str(db), label="t", api_key=make_key(), speed=1.0, timeout=20)
        (conn,) = up.connections
    assert result.complete, result.stopped
    truncate = next(orjson.loads(m) for m in conn.received if isinstance(m, str) and "item.truncate" in m)
    made = {orjson.loads(m).get("item", {}).get("id") for m in conn.sent if isinstance(m, str)}
    assert truncate["item_id"] in made and truncate["item_id"] != "item_00090e780cac"
    assert any('"response.cancel"' in m for m in conn.received if isinstance(m, str))


async def test_a_response_that_never_comes_is_a_reported_timeout(tmp_path: Path) -> None:
    """The recorded server answered an event this server does not: the wait ends at --timeout, reported, exit 1."""
    rec = tmp_path / "odd.jsonl"
    frames = [
        server(0, 0.0, {"type": "session.created", "session": {"type": "realtime"}}),
        client(1, 0.01, {"type": "response.summon"}),
        server(2, 0.02, {"type": "response.created", "response": {"id": "r"}}),
        server(3, 0.03, {"type": "response.done", "response": {"id": "r", "output": []}}),
        client(4, 0.04, {"type": "response.create"}),
    ]
    write_recording(rec, {"path": "/v1/realtime", "query": "model=gpt-realtime", "api": "realtime"}, frames)
    async with ScriptedUpstream() as up:
        args = [str(rec), "--upstream", up.url, "--db", str(tmp_path / "r.db"), "--timeout", "0.5"]
        code, out, err = await run_rerun(*args, key=make_key())
    assert code == 1, out + err
    assert "stopped at turn 2: timed out after 0.5 s waiting for finished response #1" in out
    assert "the server sent an error: unknown event 'response.summon'" in out


async def test_a_session_of_a_database_reruns_by_reference(tmp_path: Path) -> None:
    """RECORDING may be DB#SESSION, as `rtproxy diff` takes; the new session lands next to it."""
    db = tmp_path / "both.db"
    rec = read_recording(FUNCTION_CALL)
    with Store(db, create=True) as store:
        sid = store.import_session(rec.session, rec.frames)
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT) as up:
        code, out, err = await run_rerun(f"{db}#{sid}", "--upstream", up.url, "--db", str(db), key=make_key())
    assert code == 0, out + err
    with Store(db) as store:
        labels = sorted(r.get("label") or "" for r in store.sessions())
    assert labels == sorted(["example", f"rerun of {db}#{sid}"])


async def test_a_refused_connection_is_one_line_exit_2(tmp_path: Path) -> None:
    """An upstream that refuses the handshake (here: nothing listening) is one line, exit 2, no traceback."""
    code, out, err = await run_rerun(
        str(FUNCTION_CALL), "--upstream", "http://127.0.0.1:9", "--db", str(tmp_path / "r.db"), key=make_key()
    )
    assert code == 2, out + err
    assert err.count("\n") <= 2 and "Traceback" not in err and "rtproxy: error:" in err


async def test_the_library_raises_upstream_error_for_a_refusal(tmp_path: Path) -> None:
    """The I/O shell says why the connection was refused (status), as an UpstreamError."""
    async with ScriptedUpstream() as up:
        rec = read_recording(FUNCTION_CALL)
        plan = build_plan({**rec.session, "query": "model=gpt-realtime&reject=401"}, rec.frames)
        with pytest.raises(UpstreamError, match="401"):
            await rerun(plan, upstream=up.url, db=str(tmp_path / "r.db"), label="t", api_key=make_key(), timeout=5)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "no-such.jsonl: no such file"),
        ("badline", "bad.jsonl:2: not valid JSON"),
        ("nokey", "OPENAI_API_KEY is not set"),
        ("tools", "tools.py:2: syntax error"),
        ("upstream", "--upstream must be an http(s) or ws(s) URL"),
        ("nodb", "no such database"),
    ],
)
async def test_bad_input_is_one_line_naming_the_file_exit_2(tmp_path: Path, setup: str, expected: str) -> None:
    """Every user mistake: exit 2 and one line naming the file (and line), never a traceback."""
    recording, key, extra = str(FUNCTION_CALL), make_key(), []
    upstream = "http://127.0.0.1:9"
    if setup == "missing":
        recording = str(tmp_path / "no-such.jsonl")
    elif setup == "badline":
        bad = tmp_path / "bad.jsonl"
        bad.write_text(FUNCTION_CALL.read_text().splitlines()[0] + "\n{not json\n")
        recording = str(bad)
    elif setup == "tools":
        tools = tmp_path / "tools.py"
        tools.write_text("def ok():\n    return (\n")
        extra = ["--tools", str(tools)]
    elif setup == "upstream":
        upstream = "ftp://x"
    elif setup == "nodb":
        recording = f"{tmp_path / 'none.db'}#latest"
    env = {"OPENAI_API_KEY": ""} if setup == "nokey" else None
    code, out, err = await run_rerun(
        recording,
        "--upstream",
        upstream,
        "--db",
        str(tmp_path / "r.db"),
        *extra,
        key=None if setup == "nokey" else key,
        env=env,
    )
    assert code == 2, out + err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_help_explains_the_command() -> None:
    """`rtproxy rerun --help` says what it does, how function calls are answered, and the exit codes."""
    out = subprocess.run([*rtproxy_exe(), "rerun", "--help"], capture_output=True, text=True, timeout=30).stdout
    for words in ("--upstream", "--model", "--tools", "--speed", "OPENAI_API_KEY", "Exit 0", "DB#SESSION"):
        assert words in out


# --- Responses WebSocket mode ---------------------------------------------------------------------


class FakeResponses:
    """A small Responses WebSocket server (``/v1/responses``): each ``response.create`` gets a response whose
    output is a function call when the request has tools and no call output yet, else a text message. It notes,
    for every client event, how many responses it had completed before it came."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], int]] = []
        self.completed = 0
        self.response_ids: list[str] = []
        self.call_ids: list[str] = []
        self.url = ""
        self._runner: Any = None

    async def __aenter__(self) -> FakeResponses:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/v1/responses", self._ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    async def _ws(self, request: Any) -> Any:
        import secrets as _secrets

        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seq = 0

        async def send(event: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            await ws.send_str(orjson.dumps({**event, "sequence_number": seq}).decode())

        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            event = orjson.loads(msg.data)
            self.received.append((event, self.completed))
            if event.get("type") != "response.create":
                continue
            rid = f"resp_{_secrets.token_hex(6)}"
            self.response_ids.append(rid)
            inputs = event.get("input") if isinstance(event.get("input"), list) else []
            has_output = any(i.get("type") == "function_call_output" for i in inputs)
            if event.get("tools") and not has_output:
                call_id = f"call_{_secrets.token_hex(6)}"
                self.call_ids.append(call_id)
                item = {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": "get_weather"}
                item["arguments"] = '{"location": "Paris"}'
            else:
                item = {"type": "message", "id": f"msg_{rid}", "role": "assistant", "content": []}
                item["content"] = [{"type": "output_text", "text": "18 degrees."}]
            response = {"id": rid, "object": "response", "model": event.get("model"), "status": "in_progress"}
            await send({"type": "response.created", "response": response})
            await send({"type": "response.output_item.done", "output_index": 0, "item": item})
            self.completed += 1
            await send(
                {"type": "response.completed", "response": {**response, "status": "completed", "output": [item]}}
            )
        return ws


async def record_responses_session(db: Path, url: str) -> tuple[dict[str, Any], list[Frame]]:
    """A Responses session through the real proxy: a call, its output with previous_response_id, an answer."""
    import aiohttp

    from tests.conftest import start_proxy

    running, runner = await start_proxy(db, url)
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {make_key()}"}
            async with http.ws_connect(f"{running.http_base}/v1/responses", headers=headers) as ws:
                tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
                await ws.send_json({"type": "response.create", "model": "gpt-5", "input": "Weather?", "tools": [tool]})
                events = []
                while len(events) < 3:
                    events.append(orjson.loads((await ws.receive()).data))
                call = events[1]["item"]
                output = {"type": "function_call_output", "call_id": call["call_id"], "output": "18"}
                first = events[0]["response"]["id"]
                await ws.send_json(
                    {"type": "response.create", "model": "gpt-5", "previous_response_id": first, "input": [output]}
                )
                for _ in range(3):
                    await ws.receive()
        (sid,) = await running.settle()
    finally:
        await running.proxy.shutdown()
        await runner.cleanup()
        running.recorder.close()
    with Store(db) as store:
        from rtproxy.recording import session_header

        return session_header(store.session(sid)), list(store.frames(sid))


async def test_a_responses_session_reruns_each_create_after_the_previous_completed(tmp_path: Path) -> None:
    """Responses WebSocket mode: the creates go in order, each after the response before completed; the call
    output goes to this run's call and previous_response_id names this run's response; --model replaces
    the request's model."""
    async with FakeResponses() as original:
        session, frames = await record_responses_session(tmp_path / "orig.db", original.url)
    plan = build_plan(session, frames, model="gpt-6")
    assert plan.api is Api.RESPONSES and plan.path == "/v1/responses"
    assert [s.after_done for s in plan.steps] == [0, 1] and len(plan.turns) == 2
    async with FakeResponses() as up:
        result = await rerun(plan, upstream=up.url, db=str(tmp_path / "r.db"), label="t", api_key=make_key())
    assert result.complete, result.stopped
    (first, done_before_first), (second, done_before_second) = up.received
    assert (done_before_first, done_before_second) == (0, 1)
    assert first["model"] == second["model"] == "gpt-6"
    assert second["previous_response_id"] == up.response_ids[0]
    assert second["input"][0]["call_id"] == up.call_ids[0] and second["input"][0]["output"] == "18"


async def test_instructions_reach_the_server_and_an_unchanged_model_still_compares_equal(tmp_path: Path) -> None:
    """--instructions FILE: the server's session gets them; the original is compared with them applied: exit 0."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Answer like a pirate.\n")
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT) as up:
        args = [str(FUNCTION_CALL), "--upstream", up.url, "--db", str(tmp_path / "r.db"), "--instructions", str(prompt)]
        code, out, err = await run_rerun(*args, "--speed", "0", key=make_key())
        (conn,) = up.connections
    assert code == 0, out + err
    update = next(orjson.loads(m) for m in conn.received if isinstance(m, str) and "session.update" in m)
    assert update["session"]["instructions"] == "Answer like a pirate."
    assert update["session"]["tools"][0]["name"] == "get_weather"


async def test_recorded_pauses_are_kept_and_scaled_by_speed(tmp_path: Path) -> None:
    """A client pause of 0.6 s is kept at --speed 1 and a third of it at --speed 3 (times as the new recording
    has them)."""
    rec = tmp_path / "pause.jsonl"
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    frames = [
        server(0, 0.0, {"type": "session.created", "session": {"type": "realtime"}}),
        client(1, 0.01, {"type": "conversation.item.create", "item": item}),
        client(2, 0.61, {"type": "conversation.item.create", "item": item}),
    ]
    write_recording(rec, {"path": "/v1/realtime", "query": "model=gpt-realtime", "api": "realtime"}, frames)
    gaps = {}
    async with ScriptedUpstream() as up:
        for speed in (1.0, 3.0):
            db = tmp_path / f"r{speed}.db"
            plan = plan_of(rec)
            result = await rerun(plan, upstream=up.url, db=str(db), label="t", api_key=make_key(), speed=speed)
            assert result.complete and result.session_id is not None
            with Store(db) as store:
                sent = [f.t for f in store.frames(result.session_id) if f.direction is Direction.CLIENT]
            gaps[speed] = sent[1] - sent[0]
    assert 0.55 <= gaps[1.0] < 1.5
    assert 0.15 <= gaps[3.0] < 0.45
