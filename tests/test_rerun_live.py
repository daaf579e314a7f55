"""`rtproxy rerun` of GPT-Live sessions: the plan (what the recorded client waited for, delegations), and the real
command against the scripted Live server (tests/live_upstream.py), recording through the in-process proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.protocols import Api
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import read_recording, write_connections, write_recording
from rtproxy.replay.rerun import build_plan
from rtproxy.replay.rerun_state import Divergence, RunState
from rtproxy.store import Store
from tests.conftest import load_recordings_script, make_key, record_example
from tests.live_upstream import LiveUpstream
from tests.test_rerun import db_bytes, run_rerun

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"
DELEGATION = RECORDINGS / "live-voice-delegation.jsonl"
BARGE_IN = RECORDINGS / "live-barge-in.jsonl"
NEW_MODEL = "gpt-live-2"
NEW_ANSWER = "It is 12 degrees and raining in Paris."
CELSIUS = '{"location": "Paris", "unit": "celsius"}'
FAHRENHEIT = '{"location": "Paris", "unit": "fahrenheit"}'


def plan_of(path: Path, **kwargs: Any) -> Any:
    rec = read_recording(path)
    return build_plan(rec.session, rec.frames, **kwargs)


def sent_events(conn: Any) -> list[dict[str, Any]]:
    return [orjson.loads(m) for m in conn.received if isinstance(m, str)]


# --- the plan (pure) -------------------------------------------------------------------------


def test_a_live_plan_waits_for_what_the_recorded_client_had_just_received() -> None:
    """The audio waits for session.started; the call's output for the delegation and its backend response; the
    close for the answer's usage; the audio after response.create streams on without waiting."""
    plan = plan_of(DELEGATION)
    assert plan.api is Api.LIVE and plan.dialect == "primary" and plan.path == "/v1/live/sessions"
    assert plan.query == "" and plan.auth_header == "Authorization" and not plan.greeting
    waits = [(t.steps[0].type, dict(t.steps[0].waits)) for t in plan.turns]
    assert waits == [
        ("session.start", {}),
        ("session.input_audio.append", {"session.started": 1}),
        (
            "response.item.create",
            {
                "session.delegation.created": 1,
                "response.event:response.created": 1,
                "response.event:response.completed": 1,
            },
        ),
        (
            "session.close",
            {
                "response.event:response.created": 2,
                "response.event:response.completed": 2,
                "session.usage.updated": 1,
            },
        ),
    ]
    assert all(not s.waits for s in plan.turns[1].steps[1:])  # a microphone's stream is not paused
    assert [s.type for s in plan.turns[2].steps[:2]] == ["response.item.create", "response.create"]
    assert plan.final_waits == (("session.closed", 1),)
    (call,) = plan.calls
    assert call.name == "get_weather" and orjson.loads(call.arguments) == orjson.loads(CELSIUS)
    assert plan.turns[2].steps[0].answers == (call.call_id,)
    assert plan.delegations[0][1] == "responses"


def test_model_and_instructions_go_into_session_start_and_the_expected_snapshots() -> None:
    """--model and --instructions replace session.start's; the server's session snapshots of the original say the
    asked-for model, so the diff does not count it."""
    plan = plan_of(BARGE_IN, model=NEW_MODEL, instructions="Be brief.")
    start = plan.steps[0].event
    assert start["session"]["model"] == NEW_MODEL and start["session"]["instructions"] == "Be brief."
    assert start["session"]["audio"]["format"]["rate"] == 24000  # the rest kept
    assert plan.model == NEW_MODEL and plan.query == ""
    snapshots = [f.event for f in plan.expected if f.direction is Direction.SERVER]
    started = [e for e in snapshots if e and e["type"] in ("session.started", "session.closed")]
    assert [e["session"]["model"] for e in started] == [NEW_MODEL, NEW_MODEL]


def feed(state: RunState, *events: dict[str, Any]) -> None:
    for e in events:
        state.feed_server(orjson.dumps(e).decode())


def test_a_client_delegation_the_recording_never_had_needs_a_delegation_handler() -> None:
    """The new model delegates to the client where the recording did not (by the next step that waited): an
    extra; without a `delegation` handler a divergence naming what the user said; with one, its text goes
    back as session.instructions.append naming this run's delegation, and the ack is not the recording's."""
    plan = plan_of(BARGE_IN)
    state = RunState(plan)
    close = plan.steps[-1]
    feed(
        state,
        {"type": "session.started", "session": {"id": "sess_new"}},
        {"type": "session.input_transcript.delta", "delta": "Tell me "},
        {"type": "session.input_transcript.delta", "delta": "a story"},
        {"type": "session.delegation.created", "delegation": {"id": "deleg_new", "target": "client"}},
        {"type": "session.usage.updated", "usage": {}},
    )
    extra = state.extra_delegation(close)
    assert state.ready(close) and extra is not None and extra[0] == "deleg_new"
    assert state.extra_delegation(plan.steps[2]) == extra  # mid-stream too: the close had none before it
    stop = state.delegation_answer(extra, {}, 3)
    assert isinstance(stop, Divergence) and 'after the user said "Tell me a story"' in stop.message
    assert "no --tools handler named delegation" in stop.message
    frame = state.delegation_answer(extra, {"delegation": lambda transcript: f"Heard: {transcript}"}, 3)
    assert isinstance(frame, str)
    assert orjson.loads(frame) == {
        "type": "session.instructions.append",
        "content": "Heard: Tell me a story",
        "delegation_id": "deleg_new",
    }
    assert state.extra_delegation(close) is None
    feed(state, {"type": "session.instructions.appended", "client_event_id": None})
    assert state.count("session.instructions.appended") == 0  # provoked by the handler's reply


def test_a_delegation_to_another_target_stops_the_rerun() -> None:
    """The recording delegated to a Responses backend; the new model delegates to the client: a divergence."""
    plan = plan_of(DELEGATION)
    state = RunState(plan)
    feed(state, {"type": "session.started", "session": {"id": "s"}})
    assert state.stuck(plan.turns[2].steps[0]) is None
    feed(state, {"type": "session.delegation.created", "delegation": {"id": "d", "target": "client"}})
    reason = state.stuck(plan.turns[2].steps[0])
    assert reason == "the new model delegated to client where the recording delegated to responses"


def test_a_backend_call_the_new_model_never_made_is_stuck_once_the_backend_is_idle() -> None:
    """The backend answered in text where the recording called get_weather: the step that returns the call's
    output can never be sent, and says why."""
    plan = plan_of(DELEGATION)
    state = RunState(plan)
    message = {"type": "message", "id": "m", "role": "assistant", "content": []}
    feed(
        state,
        {"type": "session.started", "session": {"id": "s"}},
        {"type": "session.delegation.created", "delegation": {"id": "d", "target": "responses"}},
        {"type": "response.event", "event": {"type": "response.created", "response": {"id": "r"}}},
    )
    step = plan.turns[2].steps[0]
    assert state.stuck(step) is None  # the backend is still at work
    feed(
        state,
        {"type": "response.event", "event": {"type": "response.output_item.done", "item": message}},
        {"type": "response.event", "event": {"type": "response.completed", "response": {"id": "r"}}},
    )
    reason = state.stuck(step)
    assert reason is not None and "get_weather" in reason and "no such call" in reason


# --- the command, against the scripted Live server ---------------------------------------------------


async def test_an_unchanged_live_session_reruns_equal_like_the_recorded_client(tmp_path: Path) -> None:
    """Exit 0, same meaning: the upstream saw the recorded client's path and headers with the key from the
    environment, session.start as recorded, all the audio, and the call's recorded output under its own call id;
    the key never reached the database."""
    key, db = make_key(), tmp_path / "rerun.db"
    async with LiveUpstream() as up:
        code, out, err = await run_rerun(str(DELEGATION), "--upstream", up.url, "--db", str(db), key=key)
        (conn,) = up.connections
    assert code == 0, out + err
    assert "same meaning" in out and "4 of 4 turns played" in out and "Traceback" not in err
    assert conn.path == "/v1/live/sessions" and conn.headers["Authorization"] == f"Bearer {key}"
    assert conn.headers["User-Agent"] == "AsyncOpenAI/Python 3.57.0"
    events = sent_events(conn)
    recorded = [f.event for f in read_recording(DELEGATION).frames if f.direction is Direction.CLIENT]
    assert events[0] == recorded[0]  # session.start as recorded
    assert [e["type"] for e in events] == [e["type"] for e in recorded if e]
    made = [orjson.loads(m) for m in conn.sent]
    calls = [
        e["event"]["item"]["call_id"]
        for e in made
        if e.get("event", {}).get("type") == "response.output_item.done" and "call_id" in e["event"]["item"]
    ]
    output = next(e for e in events if e["type"] == "response.item.create")
    assert output["item"]["call_id"] == calls[0] and output["item"]["output"] == '{"temperature_c": 18}'
    with Store(db) as store:
        (row,) = store.sessions()
    assert row["label"] == "rerun of live-voice-delegation.jsonl" and row["api"] == "live"
    assert key.encode() not in db_bytes(db)


async def test_a_new_live_model_that_changes_the_answer_shows_in_the_diff(tmp_path: Path) -> None:
    """--model NEW: session.start asks for it, the backend's spoken answer changes; the diff names the new words
    (and not the model, which was asked for), exit 1; --ignore wording: exit 0."""
    db = tmp_path / "rerun.db"
    async with LiveUpstream(new_model=NEW_MODEL, new_replies=(NEW_ANSWER,)) as up:
        base = [str(DELEGATION), "--upstream", up.url, "--db", str(db), "--model", NEW_MODEL]
        code, out, err = await run_rerun(*base, "--json", key=make_key())
        assert code == 1, out + err
        start = sent_events(up.connections[0])[0]
        code2, out2, err2 = await run_rerun(*base, "--ignore", "wording", key=make_key())
    report = orjson.loads(out)
    assert report["complete"] and not report["same"] and report["played"] == 4
    assert start["session"]["model"] == NEW_MODEL
    messages = [d["message"] for d in report["diff"]["differences"]]
    assert any(NEW_ANSWER in m for m in messages), messages
    assert not any(d["section"] == "session" for d in report["diff"]["differences"])
    assert code2 == 0, out2 + err2


async def test_a_backend_call_with_other_arguments_stops_unless_tools_answer_it(tmp_path: Path) -> None:
    """The new model's backend calls get_weather in fahrenheit: without --tools the rerun stops naming both calls
    (exit 1); with a handler its result is the call's output, the rerun finishes and the diff shows the argument."""
    db, tools = tmp_path / "rerun.db", tmp_path / "tools.py"
    tools.write_text("def get_weather(location, unit='celsius'):\n    return {'temperature_f': 64}\n")
    async with LiveUpstream(new_model=NEW_MODEL, new_arguments=FAHRENHEIT) as up:
        base = [str(DELEGATION), "--upstream", up.url, "--db", str(db), "--model", NEW_MODEL, "--timeout", "10"]
        code, out, err = await run_rerun(*base, key=make_key())
        assert code == 1, out + err
        assert "stopped at turn 3:" in out and '"unit": "fahrenheit"' in out and '"unit": "celsius"' in out
        assert not any(e["type"] == "response.item.create" for e in sent_events(up.connections[0]))
        code, out, err = await run_rerun(*base, "--tools", str(tools), "--json", key=make_key())
        conn = up.connections[1]
    assert code == 1, out + err
    report = orjson.loads(out)
    assert report["complete"] and report["handled"][0]["output"] == '{"temperature_f":64}'
    assert any("fahrenheit" in d["message"] for d in report["diff"]["differences"])
    output = next(e for e in sent_events(conn) if e["type"] == "response.item.create")
    assert output["item"]["output"] == '{"temperature_f":64}'


async def test_a_client_delegation_gets_the_recorded_reply_under_this_runs_id(tmp_path: Path) -> None:
    """A session that delegates to the client (recorded with the SDK through the proxy): the rerun sends the
    recorded session.instructions.append naming this run's delegation, and compares equal."""
    flows = load_recordings_script("make_live_recordings")
    rec = tmp_path / "client-delegation.jsonl"
    flow = flows.FLOWS["live-client-delegation"]
    async with LiveUpstream(**flow.upstream) as up:
        await record_example(tmp_path / "orig.db", up.url, rec, lambda base: flows.run_flow(flow, base))
    async with LiveUpstream(**flow.upstream) as up:
        code, out, err = await run_rerun(str(rec), "--upstream", up.url, "--db", str(tmp_path / "r.db"), key=make_key())
        (conn,) = up.connections
    assert code == 0, out + err
    made = [orjson.loads(m) for m in conn.sent]
    delegation = next(e["delegation"]["id"] for e in made if e["type"] == "session.delegation.created")
    reply = next(e for e in sent_events(conn) if e["type"] == "session.instructions.append")
    assert reply["delegation_id"] == delegation and reply["content"] == "It is 18 degrees and sunny in Paris."
    assert not any(e["type"] == "error" for e in made)


def sideband_of(primary: Path) -> tuple[dict[str, Any], list[Frame]]:
    """A sideband connection watching the primary's session (what the real API reflects to it)."""
    rec = read_recording(primary)
    sid = next(f.event["session"]["id"] for f in rec.frames if f.event and f.event["type"] == "session.started")
    session = {"path": f"/v1/live/sessions/{sid}/attach", "query": "", "api": "live", "variant": "sideband"}
    frames = [
        Frame(0, 0.0, Direction.CLIENT, orjson.dumps({"type": "session.update", "session": {}}).decode()),
        Frame(1, 0.01, Direction.SERVER, orjson.dumps({"type": "session.updated", "session": {"id": sid}}).decode()),
    ]
    return session, frames


async def test_a_primary_and_its_sideband_rerun_the_primary_and_say_so(tmp_path: Path) -> None:
    """A recording of a primary and its sideband: the primary is rerun (one connection upstream, to the primary's
    path), the sideband is named as not rerun and why; the verdict is the primary's."""
    path = tmp_path / "with-sideband.jsonl"
    rec = read_recording(BARGE_IN)
    write_connections(path, [(rec.session, rec.frames), sideband_of(BARGE_IN)])
    async with LiveUpstream(user=("Tell me a story", "Stop, what time is it?"), replies=(STORY, "It is noon.")) as up:
        code, out, err = await run_rerun(
            str(path), "--upstream", up.url, "--db", str(tmp_path / "r.db"), key=make_key()
        )
        kinds = [c.kind for c in up.connections]
    assert code == 0, out + err
    assert kinds == ["primary"]
    assert "connection 2 not rerun: a GPT-Live sideband watches its primary's session" in out
    assert "connection 1 of 2:" in out and "1 connections rerun" not in out
    sideband = tmp_path / "sideband.jsonl"
    write_recording(sideband, *sideband_of(BARGE_IN))
    code, out, err = await run_rerun(
        str(sideband), "--upstream", "http://127.0.0.1:9", "--db", str(tmp_path / "s.db"), key=make_key()
    )
    assert code == 2 and "sideband watches another connection's session: rerun its primary" in err
    assert len(err.strip().splitlines()) == 1


STORY = "Once upon a time a small cloud drifted over Paris looking for a place to rain and found none at all today."


@pytest.mark.parametrize("speed", ["0", "1"])
async def test_a_barge_in_reruns_equal_at_any_speed(tmp_path: Path, speed: str) -> None:
    """The user speaks over the story: the rerun streams the same audio (as fast as possible, or at the recorded
    pace), the server cuts the story at the same place, and the diff finds the same turns."""
    async with LiveUpstream(user=("Tell me a story", "Stop, what time is it?"), replies=(STORY, "It is noon.")) as up:
        args = [str(BARGE_IN), "--upstream", up.url, "--db", str(tmp_path / "r.db"), "--speed", speed]
        code, out, err = await run_rerun(*args, key=make_key())
        (conn,) = up.connections
    assert code == 0, out + err
    appends = [e for e in sent_events(conn) if e["type"] == "session.input_audio.append"]
    assert len(appends) == 30


def test_a_backend_call_a_few_appends_early_is_not_an_extra_call() -> None:
    """Full duplex: the new server may delegate (and its backend call) before the recorded client's last append
    went out; a call is judged extra only where the recorded client reacted to the server, not mid-stream."""
    plan = plan_of(DELEGATION)
    state = RunState(plan)
    call = {"type": "function_call", "id": "fc", "call_id": "call_new", "name": "get_weather", "arguments": CELSIUS}
    feed(
        state,
        {"type": "session.started", "session": {"id": "s"}},
        {"type": "session.delegation.created", "delegation": {"id": "d", "target": "responses"}},
        {"type": "response.event", "event": {"type": "response.created", "response": {"id": "r"}}},
        {"type": "response.event", "event": {"type": "response.output_item.done", "item": call}},
        {"type": "response.event", "event": {"type": "response.completed", "response": {"id": "r"}}},
    )
    last_append, answer = plan.turns[1].steps[-1], plan.turns[2].steps[0]
    assert state.idle and state.extra_call(last_append) is None
    assert state.ready(answer) and state.extra_call(answer) is None
    data, divergence = state.answer(answer, 3, {})
    assert divergence is None and orjson.loads(data)["item"]["call_id"] == "call_new"


async def test_a_database_primary_with_a_linked_sideband_reruns_the_primary_and_names_the_sideband(
    tmp_path: Path,
) -> None:
    """DB#PRIMARY: the primary is rerun and the linked sideband is named as not rerun; DB#SIDEBAND alone is one
    line naming its primary to rerun instead (exit 2)."""
    db = tmp_path / "both.db"
    rec = read_recording(BARGE_IN)
    side_session, side_frames = sideband_of(BARGE_IN)
    api_sid = side_session["path"].split("/")[4]
    with Store(db, create=True) as store:
        primary = store.import_session({**rec.session, "api_session_id": api_sid}, rec.frames)
        sideband = store.import_session({**side_session, "api_session_id": api_sid}, side_frames)
        assert [r["id"] for r in store.linked_sessions(primary)] == [sideband]
    async with LiveUpstream(user=("Tell me a story", "Stop, what time is it?"), replies=(STORY, "It is noon.")) as up:
        code, out, err = await run_rerun(f"{db}#{primary}", "--upstream", up.url, "--db", str(db), key=make_key())
        assert [c.kind for c in up.connections] == ["primary"]
    assert code == 0, out + err
    assert f"sideband session {sideband} not rerun: a GPT-Live sideband watches its primary's session" in out
    code, out, err = await run_rerun(
        f"{db}#{sideband}", "--upstream", "http://127.0.0.1:9", "--db", str(db), key=make_key()
    )
    assert code == 2, out + err
    assert f"is not rerun by itself: rerun its primary, {db}#{primary}" in err and len(err.strip().splitlines()) == 1


def test_junk_in_a_live_recording_never_raises() -> None:
    """Odd shapes where a Live event should carry a delegation or a nested event: planned and fed without an
    exception; nothing is learned from them."""
    junk = [
        {"type": "response.event", "event": "not an object"},
        {"type": "response.event", "event": {"type": 5, "item": [1]}},
        {"type": "response.event", "event": {"type": "response.output_item.done", "item": {"type": "function_call"}}},
        {"type": "session.delegation.created", "delegation": 5},
        {"type": "session.delegation.created", "delegation": {"id": ["x"], "target": None}},
        {"type": "session.input_transcript.delta", "delta": {"not": "text"}},
        {"type": "session.started", "session": "x"},
    ]
    session = {"path": "/v1/live/sessions", "api": "live", "variant": "primary"}
    frames = [Frame(0, 0.0, Direction.CLIENT, orjson.dumps({"type": "session.start", "session": 3}).decode())]
    frames += [Frame(i + 1, 0.1, Direction.SERVER, orjson.dumps(e).decode()) for i, e in enumerate(junk)]
    frames.append(Frame(len(frames), 0.2, Direction.CLIENT, b"\x00binary"))
    plan = build_plan(session, frames, model="m", instructions="i")
    assert plan.steps[0].event == {"type": "session.start", "session": {"instructions": "i", "model": "m"}}
    assert plan.calls == () and plan.delegations == ()
    assert dict(plan.steps[1].waits)["session.started"] == 1
    state = RunState(plan)
    for f in frames:
        state.feed_server(f.data)
    assert state.delegations == [] and state.calls == []
    assert state.extra_delegation(plan.steps[1]) is None and state.delegation_mismatch() is None
    assert state.answer(plan.steps[1], 2, {}) == (b"\x00binary", None)


async def one_question(c: Any) -> None:
    """A spoken question, the microphone open for two more seconds, the answer's usage, close."""
    flows = load_recordings_script("make_live_recordings")
    await c.start()
    await c.stream(flows.tone(1000) + flows.silence(2000))
    await c.until("session.usage.updated")
    await c.close()


async def test_a_new_model_that_delegates_to_the_client_is_answered_by_the_delegation_handler(tmp_path: Path) -> None:
    """The recording answered at once; the new model delegates the question to the client mid-stream. Without a
    `delegation` function the rerun stops saying so (exit 1); with one, its reply goes out naming this run's
    delegation while the microphone streams on, the assistant speaks it, and the diff shows the new words."""
    flows = load_recordings_script("make_live_recordings")
    recorded = tmp_path / "recorded.jsonl"
    async with LiveUpstream() as up:
        await record_example(
            tmp_path / "orig.db", up.url, recorded, lambda base: flows.run_flow(flows.Flow("q", one_question), base)
        )
    rec = read_recording(recorded)  # a microphone's pace: a frame every 20 ms
    paced = tmp_path / "paced.jsonl"
    write_recording(paced, rec.session, [Frame(f.seq, 0.02 * f.seq, f.direction, f.data) for f in rec.frames])
    tools = tmp_path / "tools.py"
    tools.write_text("def delegation(transcript):\n    return 'Sunny and warm, said the client.'\n")
    up_args: dict[str, Any] = {"new_model": NEW_MODEL, "new_delegation": {"type": "client"}}
    async with LiveUpstream(**up_args) as up:
        base = [
            str(paced),
            "--upstream",
            up.url,
            "--db",
            str(tmp_path / "r.db"),
            "--model",
            NEW_MODEL,
            "--timeout",
            "10",
        ]
        code, out, err = await run_rerun(*base, key=make_key())
        assert code == 1, out + err
        assert 'the new model delegated to the client (after the user said "What\'s the weather in Paris?")' in out
        assert "no --tools handler named delegation" in out
        code, out, err = await run_rerun(*base, "--tools", str(tools), key=make_key())
        conn = up.connections[1]
    assert code == 1, out + err
    assert "stopped" not in out and "--tools answered delegation(" in out
    made = [orjson.loads(m) for m in conn.sent]
    delegation = next(e["delegation"]["id"] for e in made if e["type"] == "session.delegation.created")
    reply = next(e for e in sent_events(conn) if e["type"] == "session.instructions.append")
    assert reply == {
        "type": "session.instructions.append",
        "content": "Sunny and warm, said the client.",
        "delegation_id": delegation,
    }
    events = sent_events(conn)
    assert (
        events.index(reply) < len(events) - 2
        and events[events.index(reply) + 1]["type"] == "session.input_audio.append"
    )
    assert "Sunny and warm, said the client." in out and not any(e["type"] == "error" for e in made)


async def test_instructions_replace_session_starts_and_an_unchanged_model_compares_equal(tmp_path: Path) -> None:
    """--instructions FILE on a Live session: session.start carries them (the rest as recorded); the server's
    answer is unchanged, so the rerun means the same: exit 0."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Answer like a pirate.\n")
    async with LiveUpstream() as up:
        args = [str(DELEGATION), "--upstream", up.url, "--db", str(tmp_path / "r.db"), "--instructions", str(prompt)]
        code, out, err = await run_rerun(*args, "--speed", "0", key=make_key())
        (conn,) = up.connections
    assert code == 0, out + err
    start = sent_events(conn)[0]
    assert start["session"]["instructions"] == "Answer like a pirate."
    assert start["session"]["delegation"]["responses"]["tools"][0]["name"] == "get_weather"
