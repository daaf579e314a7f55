"""Replaying GPT-Live: the same SDK client passes against a replay of its own recording, with its own fresh event
ids echoed; audio in other chunk sizes still matches; a changed client gets a Live error event and exit 1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import AsyncOpenAI
from openai.types.live import ErrorEvent, ServerEvent
from pydantic import TypeAdapter

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.player import Player
from rtproxy.replay.script import build_script
from rtproxy.replay.server import ReplayServer, load_script, start
from tests.test_live_e2e import LIVE
from tests.test_replay_server import ReplayProcess, spawn_replay

ROOT = Path(__file__).resolve().parent.parent
SERVER: TypeAdapter[Any] = TypeAdapter(ServerEvent)


def without_client_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events minus the client_event_id the server echoed (each run's client makes its own)."""
    out = []
    for e in events:
        e = {k: v for k, v in e.items() if k != "client_event_id"}
        if isinstance(e.get("error"), dict):
            e["error"] = {k: v for k, v in e["error"].items() if k != "client_event_id"}
        out.append(e)
    return out


def echoed(events: list[dict[str, Any]]) -> list[str]:
    return [e["client_event_id"] for e in events if "client_event_id" in e]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each Live flow recorded once through the proxy (a fresh recording, not the committed one)."""
    tmp = tmp_path_factory.mktemp("live")

    async def make() -> dict[str, tuple[Path, Any]]:
        out = {}
        for name, flow in LIVE.FLOWS.items():
            out[name] = await LIVE.record(flow, tmp / f"{name}.jsonl", tmp / f"{name}.db")
        return out

    return asyncio.run(make())


async def serve(path: Path, **kwargs: Any) -> AsyncIterator[tuple[ReplayServer, str]]:
    server = ReplayServer(load_script(path), **kwargs)
    runner, port = await start(server)
    try:
        yield server, f"ws://127.0.0.1:{port}/v1"
    finally:
        await server.shutdown()
        await runner.cleanup()


@pytest.mark.parametrize("name", sorted(LIVE.FLOWS))
async def test_the_same_live_client_passes_against_rtproxy_replay_once(
    name: str, recorded: dict[str, tuple[Path, Any]], processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """`rtproxy replay FILE --once --match strict` of a Live recording: the SDK client gets the recorded events,
    with this run's own event ids as client_event_id (not the recording's), and the command exits 0."""
    path, rec = recorded[name]
    p = spawn_replay([str(path), "--once", "--match", "strict", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    run = await LIVE.run_flow(LIVE.FLOWS[name], p.base_url)
    code, out, err = await asyncio.to_thread(p.wait)
    assert code == 0, out + err
    assert without_client_ids(run.events) == without_client_ids(rec.events)
    assert set(run.sent_ids).isdisjoint(rec.sent_ids)
    assert echoed(run.events) and set(echoed(run.events)) <= set(run.sent_ids)
    assert [e for e in echoed(run.events)] == [
        run.sent_ids[rec.sent_ids.index(i)] for i in echoed(rec.events)
    ]  # each echo names the command it answers
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["ok"] and report["connections"][0]["path"] == "/v1/live/sessions"


@pytest.mark.parametrize("chunk", [960, 7000, 48000])
async def test_audio_in_other_chunk_sizes_still_matches(chunk: int, recorded: dict[str, tuple[Path, Any]]) -> None:
    """The barge-in and delegation flows streamed in 20 ms, odd-sized or 1 s chunks replay with no mismatch under
    strict, and the client receives the same events."""
    for name in ("live-barge-in", "live-voice-delegation"):
        path, rec = recorded[name]
        async for server, url in serve(path, policy="strict"):
            run = await LIVE.run_flow(LIVE.FLOWS[name], url, chunk=chunk)
            await server.wait_closed(1, timeout=5)
            assert server.report.ok, server.report.format()
        assert without_client_ids(run.events) == without_client_ids(rec.events)


async def test_a_changed_live_client_gets_a_live_error_event_and_exit_1(
    recorded: dict[str, tuple[Path, Any]], processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """A client whose session.start has other instructions gets an `error` the SDK parses as Live's ErrorEvent
    (naming this run's event id); the report has the payload mismatch; `rtproxy replay --once` exits 1."""
    path, _ = recorded["live-barge-in"]
    p = spawn_replay([str(path), "--once", "--match", "strict", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    client = AsyncOpenAI(api_key=LIVE.make_key(), websocket_base_url=p.base_url)
    async with asyncio.timeout(10), client.live.connect() as conn:
        c = LIVE.Client(conn)
        await conn.session.start(
            session={
                "model": LIVE.MODEL,
                "instructions": "Talk like a pirate.",
                "audio": {"format": {"type": "audio/pcm", "rate": 24000}},
            },
            event_id=c.eid(),
        )
        raw = await conn.recv_bytes()
        error = conn.parse_event(raw)
        assert isinstance(error, ErrorEvent)
        assert isinstance(SERVER.validate_json(raw), ErrorEvent)
        assert error.error.client_event_id == error.client_event_id == c.sent_ids[0]
        assert error.error.code == "rtproxy_replay_mismatch" and "payload differs" in error.error.message
        started = await c.until("session.started")
        assert started["client_event_id"] == c.sent_ids[0]
        await c.stream(LIVE.tone(800) + LIVE.silence(700) + LIVE.tone(600, 240.0) + LIVE.silence(900))
        await c.until("session.usage.updated")
        await c.close()
    code, out, _ = await asyncio.to_thread(p.wait)
    assert code == 1 and "1 mismatch" in out
    (m,) = orjson.loads((tmp_path / "r.json").read_bytes())["connections"][0]["mismatches"]
    assert m["kind"] == "payload" and any("session.instructions" in d for d in m["details"])


async def test_a_skipped_live_command_is_reported_and_told_in_live_shape(recorded: dict[str, tuple[Path, Any]]) -> None:
    """Ordered: a client that sends response.create without the tool output first is told which command it
    skipped (a Live error with its own event id) and the replay reports it missing."""
    path, _ = recorded["live-voice-delegation"]
    async for server, url in serve(path):
        client = AsyncOpenAI(api_key=LIVE.make_key(), websocket_base_url=url)
        async with asyncio.timeout(10), client.live.connect() as conn:
            c = LIVE.Client(conn)
            await c.start(
                delegation={"type": "responses", "responses": {"model": "gpt-5.5", "tools": [LIVE.WEATHER_TOOL]}}
            )
            await c.stream(LIVE.tone(1000) + LIVE.silence(300))
            await c.until("response.event", "response.completed")
            await conn.response.create(event_id=c.eid())
            error = await c.until("error")
        await server.wait_closed(1, timeout=5)
    assert error["client_event_id"] == c.sent_ids[-1] == error["error"]["client_event_id"]
    assert "expected response.item.create, got response.create" in error["error"]["message"]
    assert [m.kind for m in server.report.mismatches] == ["missing", "closed_early"]


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def frames(spec: list[tuple[str, dict[str, Any]]]) -> list[Frame]:
    return [Frame(i, i * 0.01, Direction(d), dumps(e)) for i, (d, e) in enumerate(spec)]


def audio(n: int) -> dict[str, Any]:
    import base64

    return {"type": "session.input_audio.append", "audio": base64.b64encode(bytes(n)).decode()}


def test_streamed_audio_gates_replies_across_commands() -> None:
    """A Live reply recorded after N bytes of audio waits for N bytes from this client, even past a command in
    between; a command recorded after more audio than the client sent releases what came before it."""
    script = build_script(
        frames(
            [
                ("client", {"type": "session.start", "event_id": "rec_1", "session": {"model": "m"}}),
                ("server", {"type": "session.started", "event_id": "s1", "client_event_id": "rec_1"}),
                ("client", audio(300)),
                ("server", {"type": "session.input_transcript.delta", "event_id": "s2"}),
                ("client", audio(300)),
                ("client", {"type": "session.instructions.append", "event_id": "rec_2", "content": "x"}),
                ("server", {"type": "session.instructions.appended", "event_id": "s3", "client_event_id": "rec_2"}),
                ("client", audio(600)),
                ("server", {"type": "session.output_audio.delta", "delta": ""}),
            ]
        ),
        session={"api": "live", "variant": "primary", "path": "/v1/live/sessions"},
    )
    assert [s.type for s in script.steps] == ["session.start", "session.instructions.append"]
    player = Player(script)
    types = lambda sends: [orjson.loads(s.data)["type"] for s in sends]  # noqa: E731
    assert player.start() == []
    got = player.receive(dumps({"type": "session.start", "event_id": "mine_1", "session": {"model": "m"}}), 0)
    assert types(got) == ["session.started"] and orjson.loads(got[0].data)["client_event_id"] == "mine_1"
    assert player.receive(dumps(audio(200)), 0) == []
    assert types(player.receive(dumps(audio(100)), 0)) == ["session.input_transcript.delta"]
    got = player.receive(dumps({"type": "session.instructions.append", "event_id": "mine_2", "content": "x"}), 0)
    assert types(got) == ["session.instructions.appended"] and "mine_2" in got[0].data
    assert player.receive(dumps(audio(899)), 0) == []
    assert types(player.receive(dumps(audio(1)), 0)) == ["session.output_audio.delta"]
    assert player.finished and player.report.ok


def test_realtime_client_item_ids_and_metadata_are_echoed_from_this_run() -> None:
    """Realtime too: a client-made item id and response.create metadata in later server events are this run's."""
    script = build_script(
        frames(
            [
                ("server", {"type": "session.created", "event_id": "e0", "session": {"id": "sess"}}),
                ("client", {"type": "conversation.item.create", "item": {"id": "item_rec", "type": "message"}}),
                ("server", {"type": "conversation.item.added", "event_id": "e1", "item": {"id": "item_rec"}}),
                ("client", {"type": "response.create", "response": {"metadata": {"tag": "run_rec"}}}),
                (
                    "server",
                    {"type": "response.created", "event_id": "e2", "response": {"metadata": {"tag": "run_rec"}}},
                ),
            ]
        ),
        session={"api": "realtime"},
    )
    player = Player(script, "strict")
    player.start()
    (added,) = player.receive(
        dumps({"type": "conversation.item.create", "item": {"id": "item_new", "type": "message"}}), 0
    )
    assert orjson.loads(added.data)["item"]["id"] == "item_new"
    (created,) = player.receive(dumps({"type": "response.create", "response": {"metadata": {"tag": "run_new"}}}), 0)
    assert orjson.loads(created.data)["response"]["metadata"] == {"tag": "run_new"}
    assert player.report.ok


@pytest.mark.parametrize("policy", ["strict", "ordered", "loose"])
@pytest.mark.parametrize("name", LIVE.COMMITTED)
async def test_the_committed_live_recordings_replay_to_their_client_under_every_policy(name: str, policy: str) -> None:
    """recordings/live-*.jsonl replay to the flow that made them with no mismatch under every match policy, and
    no error; the files hold no API key (the proxy masked it)."""
    text = (ROOT / "recordings" / f"{name}.jsonl").read_text()
    assert "sk-" not in text and "Bearer ****" in text
    async for server, url in serve(ROOT / "recordings" / f"{name}.jsonl", policy=policy):
        run = await LIVE.run_flow(LIVE.FLOWS[name], url)
        await server.wait_closed(1, timeout=5)
        assert server.report.ok, server.report.format()
    types = [e["type"] for e in run.events]
    assert types[0] == "session.started" and types[-1] == "session.closed" and "error" not in types


async def test_recorded_pace_keeps_the_live_order(recorded: dict[str, tuple[Path, Any]]) -> None:
    """With pace recorded (sped up) the gated Live replies still arrive complete and in the recorded order."""
    path, rec = recorded["live-voice-delegation"]
    async for server, url in serve(path, pace="recorded", speed=20.0):
        run = await LIVE.run_flow(LIVE.FLOWS["live-voice-delegation"], url)
        await server.wait_closed(1, timeout=5)
        assert server.report.ok, server.report.format()
    assert without_client_ids(run.events) == without_client_ids(rec.events)


async def test_a_recorded_sideband_replays_to_the_sdk_sideband_client(tmp_path: Path) -> None:
    """A sideband recorded beside its primary, exported, replays to `client.live.sideband.connect()`: the
    observer receives the reflected events it was recorded receiving, up to session.closed."""
    from rtproxy.recording import write_recording
    from rtproxy.store import Store
    from tests.conftest import start_proxy
    from tests.live_upstream import LiveUpstream

    seen: list[dict[str, Any]] = []
    async with LiveUpstream() as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            client = AsyncOpenAI(api_key=LIVE.make_key(), websocket_base_url=running.ws_base)

            async def watch(sid: str) -> None:
                async with client.live.sideband.connect(session_id=sid) as side:
                    c = LIVE.Client(side)
                    await c.until("session.closed")
                    seen.extend(c.events)

            async with asyncio.timeout(15), client.live.connect() as conn:
                c = LIVE.Client(conn)
                started = await c.start()
                task = asyncio.create_task(watch(started["session"]["id"]))
                await asyncio.wait_for(up.attached.wait(), 10)
                await c.stream(LIVE.tone(800) + LIVE.silence(1500))
                await c.until("session.usage.updated")
                await c.close()
                await asyncio.wait_for(task, 10)
            await running.settle(2)
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()
    with Store(tmp_path / "rt.db") as store:
        (side,) = [s for s in store.sessions() if s["variant"] == "sideband"]
        write_recording(tmp_path / "side.jsonl", side, store.frames(side["id"]))
    async for server, url in serve(tmp_path / "side.jsonl", policy="strict"):
        client = AsyncOpenAI(api_key=LIVE.make_key(), websocket_base_url=url)
        async with asyncio.timeout(10), client.live.sideband.connect(session_id=started["session"]["id"]) as side_conn:
            replayed = LIVE.Client(side_conn)
            await replayed.until("session.closed")
        await server.wait_closed(1, timeout=5)
        assert server.report.ok, server.report.format()
    assert replayed.events == seen and server.report.connections[0].path.endswith("/attach")


def test_hostile_client_ids_and_frames_never_break_a_live_replay() -> None:
    """Ids that are not strings, or longer than MAX_ID, are never learnt; binary and non-JSON frames are
    unexpected events answered with Live's error; the id map stays bounded."""
    from rtproxy.replay.script import MAX_ID

    script = build_script(
        frames(
            [
                ("client", {"type": "session.start", "event_id": "rec_1", "session": {"model": "m"}}),
                ("server", {"type": "session.started", "event_id": "s1", "client_event_id": "rec_1"}),
                ("client", {"type": "session.close", "event_id": "rec_2"}),
                ("server", {"type": "session.closed", "event_id": "s2", "client_event_id": "rec_2"}),
            ]
        ),
        session={"api": "live"},
    )
    player = Player(script)
    (started,) = player.receive(dumps({"type": "session.start", "event_id": "x" * (MAX_ID + 1)}), 0)
    assert orjson.loads(started.data)["client_event_id"] == "rec_1" and player.ids == {}
    (error,) = player.receive(b"\x00\x01", 0)
    (error2,) = player.receive("not json", 0)
    for e in (error, error2):
        parsed = SERVER.validate_json(e.data)
        assert isinstance(parsed, ErrorEvent) and parsed.client_event_id is None
    (closed,) = player.receive(dumps({"type": "session.close", "event_id": {"not": "a string"}}), 0)
    assert orjson.loads(closed.data)["client_event_id"] == "rec_2"
    assert [m.kind for m in player.report.mismatches] == ["unexpected", "unexpected"]


def test_junk_never_names_an_api_session_id() -> None:
    """The protocol rules for API session ids take anything from the wire without raising."""
    from rtproxy.protocols import Api, Kind, api_session_id_from_event, api_session_id_from_handshake

    live = Kind(Api.LIVE, "primary")
    assert api_session_id_from_event(live, "server", "session.started", {"session": {"id": "sess_1"}}) == "sess_1"
    for event in ({"session": "x"}, {"session": {"id": 5}}, {"session": {"id": "s" * 300}}, None, {}):
        assert api_session_id_from_event(live, "server", "session.started", event) is None
    assert api_session_id_from_event(live, "client", "session.started", {"session": {"id": "a"}}) is None
    side = Kind(Api.LIVE, "sideband")
    assert api_session_id_from_handshake(side, "/v1/live/sessions/sess_9/attach?x=1") == "sess_9"
    for path in ("", "/v1/live/sessions", "/" * 10000, None, 5):
        assert api_session_id_from_handshake(side, path) is None  # type: ignore[arg-type]
    rt = Kind(Api.REALTIME, "ga")
    assert api_session_id_from_event(rt, "server", "session.created", {"session": {"id": "sess_r"}}) == "sess_r"
    assert api_session_id_from_event(Kind(Api.RESPONSES), "server", "response.created", {"response": {}}) is None
