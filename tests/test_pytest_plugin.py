"""The pytest plugin (`rtproxy_replay`), exercised through pytester with the real openai SDK inside."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.upstream import ScriptedUpstream

ROOT = Path(__file__).resolve().parent.parent

CLIENT = """
import asyncio
import secrets

from openai import AsyncOpenAI

ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}


async def _turn(url, skip_item):
    client = AsyncOpenAI(api_key="sk-test-" + secrets.token_urlsafe(24), websocket_base_url=url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        if not skip_item:
            await conn.conversation.item.create(item=ITEM)
        await conn.response.create()
        types = []
        async for event in conn:
            types.append(event.type)
            if event.type == "response.done" or len(types) > 200:
                return types
    return types


def turn(url, skip_item=False):
    return asyncio.run(asyncio.wait_for(_turn(url, skip_item), 15))
"""


#: Inner runs without plugins they do not use (textual-snapshot's session hook breaks in-process; hypothesis'
#: costs seconds per run).
QUIET = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:textual-snapshot", "-p", "no:hypothesispytest")


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with the client module and an ini of its own."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(client=CLIENT)
    return pytester


@pytest.fixture
def project(inner: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(ROOT / "recordings" / "text-ga.jsonl", inner.path / "text-ga.jsonl")
    return inner


def test_a_replayed_client_passes_and_sees_what_it_sent(project: pytest.Pytester) -> None:
    """The fixture serves the recording at `url`; `received` holds the client's events; the test passes."""
    project.makepyfile(
        test_it="""
        from client import turn

        def test_turn(rtproxy_replay):
            replay = rtproxy_replay("text-ga.jsonl")
            assert replay.url.startswith("ws://127.0.0.1:") and replay.url.endswith("/v1")
            types = turn(replay.url)
            assert types[-1] == "response.done" and "response.output_text.delta" in types
            assert [e["type"] for e in replay.received] == ["session.update", "conversation.item.create",
                                                            "response.create"]
    """
    )
    result = project.runpytest(*QUIET)
    result.assert_outcomes(passed=1)


def test_a_client_that_changed_fails_the_test_with_the_report(project: pytest.Pytester) -> None:
    """A mismatch fails the test (not an error at teardown) and the output carries the replay report."""
    project.makepyfile(
        test_it="""
        from client import turn

        def test_turn(rtproxy_replay):
            replay = rtproxy_replay("text-ga.jsonl")
            types = turn(replay.url, skip_item=True)
            assert "error" in types
    """
    )
    result = project.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected conversation.item.create, got response.create*"])
    assert "1 mismatch" in result.stdout.str()


def test_check_false_leaves_the_report_to_the_test(project: pytest.Pytester) -> None:
    """With check=False a mismatch does not fail the test, which reads replay.report itself."""
    project.makepyfile(
        test_it="""
        from client import turn

        def test_turn(rtproxy_replay):
            replay = rtproxy_replay("text-ga.jsonl", match="strict", check=False)
            turn(replay.url, skip_item=True)
            assert replay.report.mismatches[0].kind == "missing"
    """
    )
    result = project.runpytest(*QUIET)
    result.assert_outcomes(passed=1)


def test_the_plugin_documents_its_options(inner: pytest.Pytester) -> None:
    """`pytest --help` lists the record mode, --rtproxy-record and --rtproxy-upstream (loaded from its entry point)."""
    result = inner.runpytest(*QUIET, "--help")
    result.stdout.fnmatch_lines(
        ["*--rtproxy-record-mode={none,once,new_episodes,all}*", "*--rtproxy-record *", "*--rtproxy-upstream=URL*"]
    )


KEY_SHAPED = re.compile(rb"sk-[A-Za-z0-9_-]{20,}|ek_[A-Za-z0-9]{16,}")


@contextlib.contextmanager
def threaded_upstream() -> Iterator[ScriptedUpstream]:
    """A ScriptedUpstream on a loop of its own, so in-process pytester runs can block this thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    up = ScriptedUpstream(exact=True)
    asyncio.run_coroutine_threadsafe(up.__aenter__(), loop).result(10)
    try:
        yield up
    finally:
        asyncio.run_coroutine_threadsafe(up.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_record_mode_once_writes_the_recording_and_replay_never_touches_the_network(inner: pytest.Pytester) -> None:
    """Mode once records a missing recording via the proxy; the next (default) run replays it offline;
    --rtproxy-record redoes it."""
    pytester = inner
    pytester.makepyfile(
        test_it="""
        from client import turn

        def test_turn(rtproxy_replay):
            replay = rtproxy_replay("cassettes/turn.jsonl")
            assert turn(replay.url)[-1] == "response.done"
            assert [e["type"] for e in replay.received][-1] == "response.create"
    """
    )
    target = pytester.path / "cassettes" / "turn.jsonl"
    with threaded_upstream() as up:
        args = (*QUIET, f"--rtproxy-upstream={up.url}")
        pytester.runpytest(*args, "--rtproxy-record-mode=once").assert_outcomes(passed=1)
        assert len(up.connections) == 1 and target.exists()
        header = orjson.loads(target.read_bytes().splitlines()[0])
        assert header["session"]["model"] == "gpt-realtime" and header["session"]["status"] == "closed"
        assert not KEY_SHAPED.search(target.read_bytes())
        recorded = target.read_bytes()

        pytester.runpytest(*args).assert_outcomes(passed=1)
        pytester.runpytest(*args, "--rtproxy-record-mode=once").assert_outcomes(passed=1)
        assert len(up.connections) == 1 and target.read_bytes() == recorded

        pytester.runpytest(*args, "--rtproxy-record").assert_outcomes(passed=1)
        assert len(up.connections) == 2 and target.read_bytes() != recorded


@contextlib.contextmanager
def silent_upstream() -> Iterator[tuple[str, socket.socket]]:
    """A listening loopback socket that accepts nothing itself: any connection attempt waits in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", sock


def assert_never_connected(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        conn, _ = sock.accept()
        conn.close()


MISSING = """
import pytest
from client import turn

{marker}
def test_turn(rtproxy_replay):
    replay = rtproxy_replay("cassettes/typo.jsonl"{argument})
    turn(replay.url)
"""


@pytest.mark.parametrize(
    ("marker", "argument", "option"),
    [
        ("", "", ()),
        ("@pytest.mark.rtproxy(record_mode='once')", ", record_mode='all'", ("--rtproxy-record-mode=none",)),
    ],
    ids=["default", "command-line-overrides-the-test"],
)
def test_mode_none_fails_on_a_missing_recording_without_touching_the_upstream(
    inner: pytest.Pytester, marker: str, argument: str, option: tuple[str, ...]
) -> None:
    """Under mode none (the default, and from the command line over a test's own mode) a missing recording fails
    the test naming the file and how to record it, and no connection reaches the upstream."""
    inner.makepyfile(test_it=MISSING.format(marker=marker, argument=argument))
    with silent_upstream() as (url, sock):
        result = inner.runpytest(*QUIET, f"--rtproxy-upstream={url}", *option)
        assert_never_connected(sock)
    result.assert_outcomes(failed=1)
    target = inner.path / "cassettes" / "typo.jsonl"
    result.stdout.fnmatch_lines(
        [f"*rtproxy: no recording at {target} (record mode none*--rtproxy-record-mode=once test_it.py::test_turn*"]
    )
    assert "Traceback" not in result.stdout.str() and not target.exists()


def test_mode_once_from_the_marker_records_only_a_missing_recording(inner: pytest.Pytester) -> None:
    """@pytest.mark.rtproxy(record_mode="once") records the missing file, then replays it without the upstream."""
    inner.makepyfile(test_it=MISSING.format(marker="@pytest.mark.rtproxy(record_mode='once')", argument=""))
    target = inner.path / "cassettes" / "typo.jsonl"
    with threaded_upstream() as up:
        inner.runpytest(*QUIET, f"--rtproxy-upstream={up.url}").assert_outcomes(passed=1)
        assert len(up.connections) == 1 and target.exists()
        recorded = target.read_bytes()
    with silent_upstream() as (url, sock):
        inner.runpytest(*QUIET, f"--rtproxy-upstream={url}").assert_outcomes(passed=1)
        assert_never_connected(sock)
    assert target.read_bytes() == recorded


@pytest.mark.parametrize("mode", ["all", "new_episodes"])
def test_modes_all_and_new_episodes_rerecord_an_existing_recording(project: pytest.Pytester, mode: str) -> None:
    """The factory's record_mode all (or new_episodes, the same), over a marker saying none, records again and
    overwrites the existing recording."""
    project.makepyfile(
        test_it=f"""
        import pytest
        from client import turn

        @pytest.mark.rtproxy(record_mode="none")
        def test_turn(rtproxy_replay):
            replay = rtproxy_replay("text-ga.jsonl", record_mode="{mode}")
            assert replay.mode == "record" and replay.record_mode == "{mode}"
            assert turn(replay.url)[-1] == "response.done"
    """
    )
    target = project.path / "text-ga.jsonl"
    before = target.read_bytes()
    with threaded_upstream() as up:
        project.runpytest(*QUIET, f"--rtproxy-upstream={up.url}").assert_outcomes(passed=1)
        assert len(up.connections) == 1
    assert target.read_bytes() != before
    assert orjson.loads(target.read_bytes().splitlines()[0])["session"]["upstream"].startswith(up.url)


@pytest.mark.parametrize(
    ("marker", "argument", "where"),
    [
        ("", ", record_mode='sometimes'", "rtproxy_replay argument"),
        ("@pytest.mark.rtproxy(record_mode='sometimes')", "", "@pytest.mark.rtproxy"),
    ],
    ids=["argument", "marker"],
)
def test_an_unknown_record_mode_fails_the_test_with_one_line(
    inner: pytest.Pytester, marker: str, argument: str, where: str
) -> None:
    """A record mode that is not one of the four fails the test with a line naming it and the valid ones."""
    inner.makepyfile(test_it=MISSING.format(marker=marker, argument=argument))
    with silent_upstream() as (url, sock):
        result = inner.runpytest(*QUIET, f"--rtproxy-upstream={url}")
        assert_never_connected(sock)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*rtproxy: record_mode 'sometimes' ({where}) is not one of none, once, new_episodes, all"]
    )
    assert "Traceback" not in result.stdout.str()


LIVE_CLIENT = """
import asyncio
import base64
import secrets

from openai import AsyncOpenAI


async def _call(url, instructions):
    client = AsyncOpenAI(api_key="sk-test-" + secrets.token_urlsafe(24), websocket_base_url=url)
    start_id = "evt_" + secrets.token_hex(8)
    session = {"model": "gpt-live-1", "instructions": instructions, "audio": {"format": {"type": "audio/pcm",
               "rate": 24000}}}
    async with client.live.connect() as conn:
        await conn.session.start(session=session, event_id=start_id)
        for _ in range(30):  # 3 s of microphone, 100 ms at a time (only the total length is matched)
            await conn.session.input_audio.append(audio=base64.b64encode(bytes(4800)).decode())
        await conn.session.close(event_id="evt_" + secrets.token_hex(8))
        events = []
        async for event in conn:
            events.append(event)
            if event.type == "session.closed" or len(events) > 500:
                break
    return start_id, events


def call(url, instructions="You are a friendly weather assistant."):
    return asyncio.run(asyncio.wait_for(_call(url, instructions), 15))
"""


def test_a_live_recording_is_served_to_the_sdk_live_client(inner: pytest.Pytester) -> None:
    """The fixture serves a GPT-Live recording: the SDK's live client gets its session, with its own event id
    echoed; a client whose session.start changed fails the test with the report (strict)."""
    shutil.copy(ROOT / "recordings" / "live-barge-in.jsonl", inner.path / "live.jsonl")
    inner.makepyfile(live_client=LIVE_CLIENT)
    inner.makepyfile(
        test_live="""
        from live_client import call

        def test_call(rtproxy_replay):
            replay = rtproxy_replay("live.jsonl", match="strict")
            start_id, events = call(replay.url)
            types = [e.type for e in events]
            assert types[0] == "session.started" and types[-1] == "session.closed"
            assert "session.output_audio.delta" in types and "error" not in types
            assert events[0].client_event_id == start_id
            assert [e["type"] for e in replay.received][:2] == ["session.start", "session.input_audio.append"]

        def test_changed(rtproxy_replay):
            replay = rtproxy_replay("live.jsonl", match="strict")
            start_id, events = call(replay.url, "Talk like a pirate.")
            assert events[0].type == "error" and events[0].error.client_event_id == start_id
    """
    )
    result = inner.runpytest(*QUIET)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*session.start: payload differs from the recording*"])


AGENT_TEST = """
import asyncio
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("flows", {script!r})
flows = importlib.util.module_from_spec(spec)
sys.modules["flows"] = flows
spec.loader.exec_module(flows)


def test_agent(rtproxy_replay):
    replay = rtproxy_replay("cassettes/agent.jsonl")
    assert replay.url.startswith("ws://127.0.0.1:") and replay.url.endswith("/v1")
    try:
        run = asyncio.run(flows.agent_two_tools(replay.url, units={units!r}))
    except Exception as e:  # a changed agent: the replay's error event; the report fails the test
        assert "rtproxy_replay_mismatch" in str(e)
        return
    assert [name for name, _ in run.calls] == ["get_weather", "get_time"]
"""


@contextlib.contextmanager
def threaded_responses_upstream() -> Iterator[Any]:
    """A ResponsesUpstream on a loop of its own, so in-process pytester runs can block this thread."""
    from tests.responses_upstream import ResponsesUpstream

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    up = ResponsesUpstream()
    asyncio.run_coroutine_threadsafe(up.__aenter__(), loop).result(10)
    try:
        yield up
    finally:
        asyncio.run_coroutine_threadsafe(up.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_an_agent_on_the_responses_websocket_transport_records_once_then_replays_offline(
    inner: pytest.Pytester,
) -> None:
    """An openai-agents test on the Responses WebSocket transport: record mode once records it through the proxy
    (the fixture's url is the agent's websocket_base_url); later runs replay it with the upstream never asked;
    the same agent with a tool that answers otherwise fails with the replay report naming the changed input."""
    script = str(ROOT / "recordings" / "make_responses_recordings.py")
    inner.makepyfile(test_it=AGENT_TEST.format(script=script, units="celsius"))
    target = inner.path / "cassettes" / "agent.jsonl"
    with threaded_responses_upstream() as up:
        args = (*QUIET, f"--rtproxy-upstream={up.url}")
        inner.runpytest(*args, "--rtproxy-record-mode=once").assert_outcomes(passed=1)
        assert up.connections == 1 and target.exists()
        header = orjson.loads(target.read_bytes().splitlines()[0])
        assert header["session"]["api"] == "responses" and not KEY_SHAPED.search(target.read_bytes())
        inner.runpytest(*args).assert_outcomes(passed=1)
        assert up.connections == 1
        inner.makepyfile(test_it=AGENT_TEST.format(script=script, units="fahrenheit"))
        result = inner.runpytest(*args)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*response.create: payload differs from the recording*fahrenheit*"])
        assert up.connections == 1
