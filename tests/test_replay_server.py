"""The replay server in-process and the `rtproxy replay` command as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import write_recording
from rtproxy.replay.script import build_script
from rtproxy.replay.server import ReplayServer, start
from tests.conftest import load_recordings_script, rtproxy_exe


def script_frames(delay: float = 0.0) -> list[Frame]:
    spec = [
        (0.0, "server", {"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}),
        (0.01, "client", {"type": "session.update", "session": {"instructions": "hi"}}),
        (0.02, "server", {"type": "session.updated", "event_id": "e2", "session": {"id": "sess_1"}}),
        (0.03, "client", {"type": "response.create"}),
        (0.03 + delay, "server", {"type": "response.created", "event_id": "e3", "response": {"id": "resp_1"}}),
        (0.04 + delay, "server", {"type": "response.done", "event_id": "e4", "response": {"id": "resp_1"}}),
    ]
    return [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]


@dataclass
class Running:
    server: ReplayServer
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


async def serve(frames: list[Frame], **kwargs: Any) -> AsyncIterator[Running]:
    server = ReplayServer(build_script(frames, source="mem"), **kwargs)
    runner, port = await start(server)
    try:
        yield Running(server, port)
    finally:
        await server.shutdown()
        await runner.cleanup()


@pytest.fixture
async def replay() -> AsyncIterator[Running]:
    async for r in serve(script_frames()):
        yield r


async def receive_types(ws: aiohttp.ClientWebSocketResponse, until: str, timeout: float = 5.0) -> list[str]:
    out: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            out.append(orjson.loads(msg.data)["type"])
            if out[-1] == until:
                return out


async def test_any_path_and_query_is_accepted_and_realtime_subprotocol_echoed(replay: Running) -> None:
    """A browser-style connection on an odd path gets `realtime` echoed; one offering nothing gets none."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"{replay.url}/openai/realtime?api-version=2025&deployment=x&api-key=abc",
            protocols=("realtime", "openai-insecure-api-key.abc"),
        ) as ws:
            assert ws.protocol == "realtime"
            assert await receive_types(ws, "session.created") == ["session.created"]
        async with http.ws_connect(f"{replay.url}/v1/realtime?model=m") as ws:
            assert ws.protocol is None
            await receive_types(ws, "session.created")
    await replay.server.wait_closed(2, timeout=5)
    paths = [c.path for c in replay.server.report.connections]
    assert paths[0].startswith("/openai/realtime?") and "abc" not in paths[0] and paths[1] == "/v1/realtime?model=m"


async def test_each_connection_gets_the_script_from_the_start(replay: Running) -> None:
    """Two connections in a row each receive the greeting and their turns; the report has both, without mismatch."""
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.ws_connect(f"{replay.url}/v1/realtime") as ws:
                await receive_types(ws, "session.created")
                await ws.send_str('{"type":"session.update","session":{}}')
                await receive_types(ws, "session.updated")
                await ws.send_str('{"type":"response.create"}')
                assert await receive_types(ws, "response.done") == ["response.created", "response.done"]
    await replay.server.wait_closed(2, timeout=5)
    report = replay.server.report
    assert report.ok and [c.turns_played for c in report.connections] == [2, 2]


async def test_a_mismatch_is_answered_with_an_error_event(replay: Running) -> None:
    """An unexpected event gets a Realtime error naming expected and received types; the report records it."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{replay.url}/v1/realtime") as ws:
            await receive_types(ws, "session.created")
            await ws.send_str('{"type":"response.cancel","event_id":"evt_9"}')
            msg = orjson.loads((await ws.receive(timeout=5)).data)
    assert msg["type"] == "error" and msg["error"]["type"] == "invalid_request_error"
    assert msg["error"]["event_id"] == "evt_9"
    assert "expected session.update, got response.cancel" in msg["error"]["message"]
    await replay.server.wait_closed(1, timeout=5)
    kinds = [m.kind for m in replay.server.report.mismatches]
    assert kinds == ["unexpected", "closed_early"]


async def turn_time(url: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}/v1/realtime") as ws:
            await receive_types(ws, "session.created")
            await ws.send_str('{"type":"session.update","session":{}}')
            await receive_types(ws, "session.updated")
            t0 = time.monotonic()
            await ws.send_str('{"type":"response.create"}')
            await receive_types(ws, "response.created")
            return time.monotonic() - t0


async def test_recorded_pace_keeps_offsets_scaled_by_speed() -> None:
    """With pace recorded a reply 0.8 s after its trigger arrives no sooner than 0.8/speed s; instant is faster."""
    async for r in serve(script_frames(delay=0.8), pace="recorded", speed=2.0):
        paced = await turn_time(r.url)
    async for r in serve(script_frames(delay=0.8)):
        instant = await turn_time(r.url)
    assert paced >= 0.4 * 0.95
    assert instant < paced


@pytest.mark.parametrize("pace", ["instant", "recorded"])
async def test_a_recording_the_server_closed_is_closed_the_same_way(pace: str) -> None:
    """When the recorded server closed the session, the replay closes with its code after the last turn."""
    closed = {"closed_by": "upstream", "server_close_code": 4000, "server_close_reason": "bye"}
    server = ReplayServer(build_script(script_frames(), session=closed), pace=pace, speed=50)
    runner, port = await start(server)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
                await receive_types(ws, "session.created")
                await ws.send_str('{"type":"session.update","session":{}}')
                await receive_types(ws, "session.updated")
                await ws.send_str('{"type":"response.create"}')
                await receive_types(ws, "response.done")
                msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4000 and msg.extra == "bye"
        await server.wait_closed(1, timeout=5)
        assert server.report.ok
    finally:
        await runner.cleanup()


# --- the command, as a subprocess ------------------------------------------------------------

REPLAYING = re.compile(r"replaying .* on (wss?)://127\.0\.0\.1:(\d+) \(websocket_base_url=(wss?://[^)]+)\)")


@dataclass
class ReplayProcess:
    proc: subprocess.Popen[str]
    port: int
    base_url: str
    lines: list[str]

    def wait(self, timeout: float = 15.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out, err


def spawn_replay(args: list[str], env: dict[str, str] | None = None, timeout: float = 20.0) -> ReplayProcess:
    """Start `rtproxy replay … --port 0` and wait for its 'replaying … on' line."""
    proc = subprocess.Popen(
        [*rtproxy_exe(), "replay", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sel.select(timeout=max(0.0, deadline - time.monotonic())):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = REPLAYING.search(line)
        if m:
            sel.close()
            return ReplayProcess(proc, int(m.group(2)), m.group(3), lines)
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"replay did not start: {''.join(lines)}{out}\n{err}")


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "turn.jsonl"
    write_recording(path, {"id": "s1", "dialect": "ga"}, script_frames())
    return path


UNTIL = {"session.update": "session.updated", "response.create": "response.done", "response.cancel": "error"}


async def run_client(base_url: str, events: list[str], ssl_ctx: ssl.SSLContext | None = None) -> list[str]:
    """Connect, send each event and read until its answer ends (the types received)."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base_url}/realtime?model=gpt-realtime", ssl=ssl_ctx or True) as ws:
            got = await receive_types(ws, "session.created")
            for e in events:
                await ws.send_str(e)
                until = UNTIL[orjson.loads(e)["type"]]
                got += await receive_types(ws, until)
    return got


async def test_cli_once_replays_prints_the_report_and_exits_0(
    recording: Path, processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """`rtproxy replay FILE --port 0 --once` prints its URL, serves one client, prints the report and exits 0."""
    p = spawn_replay([str(recording), "--once", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    assert p.base_url == f"ws://127.0.0.1:{p.port}/v1"
    got = await run_client(p.base_url, ['{"type":"session.update","session":{}}', '{"type":"response.create"}'])
    assert got == ["session.created", "session.updated", "response.created", "response.done"]
    code, out, err = await asyncio.to_thread(p.wait)
    assert code == 0, err
    assert (
        "connection 1 /v1/realtime?model=gpt-realtime: 2/2 turns played, 4 events sent, 2 received, no mismatch" in out
    )
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["ok"] is True and report["connections"][0]["turns"] == {"played": 2, "total": 2}


async def test_cli_exits_1_on_a_mismatch_and_writes_it_to_the_report(
    recording: Path, processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """A client that changed its behaviour gets an error event; the command exits 1 and the JSON report says why."""
    p = spawn_replay([str(recording), "--once", "--match", "strict", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    got = await run_client(
        p.base_url, ['{"type":"session.update","session":{"voice":"x"}}', '{"type":"response.cancel"}']
    )
    assert got.count("error") == 2
    code, out, _ = await asyncio.to_thread(p.wait)
    assert code == 1
    assert "session.update: payload differs from the recording" in out and "session.voice: unexpected" in out
    kinds = [m["kind"] for m in orjson.loads((tmp_path / "r.json").read_bytes())["connections"][0]["mismatches"]]
    assert kinds == ["payload", "unexpected", "closed_early"]


async def test_cli_serves_tls_with_the_proxy_certificate(
    recording: Path, processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """--tls serves wss:// with rtproxy's certificate, which a client trusting it accepts."""
    env = {"RTPROXY_HOME": str(tmp_path / "home")}
    p = spawn_replay([str(recording), "--once", "--tls"], env=env)
    processes.append(p)
    assert p.base_url.startswith("wss://")
    ctx = ssl.create_default_context(cafile=str(tmp_path / "home" / "tls" / "localhost.pem"))
    got = await run_client(p.base_url, ['{"type":"session.update","session":{}}', '{"type":"response.create"}'], ctx)
    assert got[-1] == "response.done"
    code, _, _ = await asyncio.to_thread(p.wait)
    assert code == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=30)


def test_cli_refuses_unusable_recordings_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """A bad line, a recording without server events, an unknown session: exit 2, one line naming it."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"rtproxy": 1, "session": {}}\n{"t": 0, "dir": "client", "event": {}}\nnot json\n')
    r = run_cli("replay", str(bad))
    assert r.returncode == 2 and f"{bad}:3: not valid JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    silent = tmp_path / "silent.jsonl"
    write_recording(silent, {}, [Frame(0, 0.0, Direction.CLIENT, '{"type":"session.update"}')])
    r = run_cli("replay", str(silent))
    assert r.returncode == 2 and f"{silent}: no server events to replay" in r.stderr
    from rtproxy.store import Store

    db = tmp_path / "rt.db"
    with Store(db, create=True) as store:
        store.import_session({"id": "20260101-000000-abcdef"}, script_frames())
    r = run_cli("replay", "--db", str(db), "--session", "nosuch")
    assert r.returncode == 2 and "no session 'nosuch'" in r.stderr and str(db) in r.stderr
    assert "Traceback" not in r.stderr


async def test_cli_replays_a_session_from_the_database(tmp_path: Path, processes: list[ReplayProcess]) -> None:
    """`--db DB --session PREFIX` replays a stored session like its exported file."""
    from rtproxy.store import Store

    db = tmp_path / "rt.db"
    with Store(db, create=True) as store:
        store.import_session({"id": "20260101-000000-abcdef"}, script_frames())
    p = spawn_replay(["--db", str(db), "--session", "20260101", "--once"])
    processes.append(p)
    got = await run_client(p.base_url, ['{"type":"session.update","session":{}}', '{"type":"response.create"}'])
    assert got[-1] == "response.done"
    code, out, _ = await asyncio.to_thread(p.wait)
    assert code == 0 and "#20260101-000000-abcdef" in out


# --- end to end: record the real SDK through the proxy, replay, run the same client again -------------

ROOT = Path(__file__).resolve().parent.parent


FLOWS = load_recordings_script("make_recordings")


async def replay_file(path: Path, **kwargs: Any) -> AsyncIterator[Running]:
    from rtproxy.replay.server import load_script

    server = ReplayServer(load_script(path), **kwargs)
    runner, port = await start(server)
    try:
        yield Running(server, port)
    finally:
        await server.shutdown()
        await runner.cleanup()


@pytest.mark.parametrize("name", sorted(FLOWS.FLOWS))
async def test_the_same_sdk_client_gets_the_same_events_from_the_replay(name: str, tmp_path: Path) -> None:
    """Recorded through the proxy and exported, a session replays to the same client with identical events."""
    flow = FLOWS.FLOWS[name]
    path, recorded = await FLOWS.record(flow, tmp_path / f"{name}.jsonl", tmp_path / "rt.db")
    async for r in replay_file(path):
        replayed = await FLOWS.run_flow(flow, f"{r.url}/v1")
        await r.server.wait_closed(1, timeout=5)
        report = r.server.report
    assert replayed == recorded
    assert report.ok, report.format()
    assert report.connections[0].turns_played == report.connections[0].turns_total > 0


@pytest.mark.parametrize("name", sorted(FLOWS.FLOWS))
async def test_the_example_recordings_replay_to_their_client_under_strict(name: str) -> None:
    """Each committed example recording replays to the client that made it with no mismatch, even under strict."""
    async for r in replay_file(ROOT / "recordings" / f"{name}.jsonl", policy="strict"):
        events = await FLOWS.run_flow(FLOWS.FLOWS[name], f"{r.url}/v1")
        await r.server.wait_closed(1, timeout=5)
        report = r.server.report
    assert report.ok, report.format()
    assert events and "error" not in [e["type"] for e in events]


async def test_a_client_that_changed_gets_an_error_event_and_exit_1(
    processes: list[ReplayProcess], tmp_path: Path
) -> None:
    """A client that no longer sends its conversation.item.create receives an `error` event; replay exits 1."""
    from openai import AsyncOpenAI

    p = spawn_replay([str(ROOT / "recordings" / "text-ga.jsonl"), "--once", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    client = AsyncOpenAI(api_key=FLOWS.make_key(), websocket_base_url=p.base_url)
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(10), client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.response.create()
        await FLOWS.until(conn, "response.done", events)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["error"]["type"] == "invalid_request_error"
    assert "expected conversation.item.create, got response.create" in errors[0]["error"]["message"]
    code, out, _ = await asyncio.to_thread(p.wait)
    assert code == 1 and "1 mismatch" in out
    (m,) = orjson.loads((tmp_path / "r.json").read_bytes())["connections"][0]["mismatches"]
    assert m["kind"] == "missing" and m["expected"]["type"] == "conversation.item.create"


async def agent_turn(url: str, api_key: str) -> list[str]:
    """An openai-agents RealtimeRunner session: one typed message, until the agent's turn ends."""
    from agents.realtime import RealtimeAgent, RealtimeRunner

    agent = RealtimeAgent(name="Assistant", instructions="Answer briefly.")
    runner = RealtimeRunner(agent, config={"model_settings": {"model_name": "gpt-realtime"}})
    raw: list[str] = []
    async with asyncio.timeout(15):
        session = await runner.run(model_config={"url": url, "api_key": api_key})
        async with session:
            await session.send_message("Hello there")
            async for event in session:
                if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                    raw.append(event.data.data["type"])
                if event.type == "error":
                    raw.append("error")
                if event.type == "agent_end":
                    break
    return raw


async def test_openai_agents_runner_replays_under_loose(tmp_path: Path) -> None:
    """An openai-agents RealtimeRunner session recorded through the proxy replays to the same agent under loose."""
    from rtproxy.recording import write_recording
    from rtproxy.store import Store
    from tests.conftest import start_proxy
    from tests.upstream import ScriptedUpstream

    key = FLOWS.make_key()
    async with ScriptedUpstream(exact=True) as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            recorded = await agent_turn(f"{running.ws_base}/realtime?model=gpt-realtime", key)
            (sid,) = await running.settle()
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()
    path = tmp_path / "agent.jsonl"
    with Store(tmp_path / "rt.db") as store:
        write_recording(path, store.session(sid), store.frames(sid))
    async for r in replay_file(path, policy="loose"):
        replayed = await agent_turn(f"{r.url}/v1/realtime?model=gpt-realtime", key)
        await r.server.wait_closed(1, timeout=5)
        report = r.server.report
    assert report.ok, report.format()
    assert "error" not in recorded and recorded[-1] == "response.done"
    assert sorted(replayed) == sorted(recorded)  # the same server events (loose may reorder turns)
