"""Causal triggers: a server event replays after the client event that caused it, so a burst of client
events is served in any order (loose silently; ordered reports the reordering but never hangs)."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.player import Player
from rtproxy.replay.script import Script, build_script
from rtproxy.replay.server import ReplayServer, start
from tests.conftest import make_key
from tests.upstream import tone

AUDIO = base64.b64encode(bytes(4800)).decode()
TONE = base64.b64encode(tone(600)).decode()
BURST = ("input_audio_buffer.commit", "response.create", "session.update")
WANTED = {"input_audio_buffer.committed", "session.updated", "response.done"}


def burst_frames() -> list[Frame]:
    """A voice turn whose client sent commit, response.create and session.update in one burst (as recorded)."""
    spec: list[tuple[float, str, dict[str, Any]]] = [
        (0.00, "server", {"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}),
        (0.01, "client", {"type": "input_audio_buffer.append", "audio": AUDIO}),
        (0.02, "client", {"type": "input_audio_buffer.append", "audio": AUDIO}),
        (0.03, "client", {"type": "input_audio_buffer.commit"}),
        (0.031, "client", {"type": "response.create", "response": {"metadata": {"k": "v"}}}),
        (0.032, "client", {"type": "session.update", "session": {"type": "realtime", "instructions": "brief"}}),
        (0.04, "server", {"type": "input_audio_buffer.committed", "event_id": "e2", "item_id": "item_u1"}),
        (0.05, "server", {"type": "conversation.item.added", "event_id": "e3", "item": {"id": "item_u1"}}),
        (0.06, "server", {"type": "response.created", "event_id": "e4", "response": {"id": "resp_1"}}),
        (0.07, "server", {"type": "session.updated", "event_id": "e5", "session": {"id": "sess_1"}}),
        (
            0.08,
            "server",
            {"type": "response.output_item.added", "event_id": "e6", "response_id": "resp_1", "item": {"id": "it_a"}},
        ),
        (0.09, "server", {"type": "conversation.item.added", "event_id": "e7", "item": {"id": "it_a"}}),
        (0.10, "server", {"type": "response.output_text.delta", "event_id": "e8", "response_id": "resp_1"}),
        (0.11, "server", {"type": "response.done", "event_id": "e9", "response": {"id": "resp_1"}}),
    ]
    return [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]


def reply_types(script: Script) -> dict[str, list[str]]:
    return {s.type: [orjson.loads(r.data)["type"] for r in s.replies] for s in script.steps}


def test_each_server_event_belongs_to_the_client_event_that_caused_it() -> None:
    """The commit gets its committed event and its item; response.create the whole response (its output items
    too); session.update only session.updated, although it was the latest client event before all of them."""
    script = build_script(burst_frames())
    assert reply_types(script) == {
        "input_audio_buffer.append": [],
        "input_audio_buffer.commit": ["input_audio_buffer.committed", "conversation.item.added"],
        "response.create": [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.output_text.delta",
            "response.done",
        ],
        "session.update": ["session.updated"],
    }
    commit = script.steps[1]
    assert [round(r.delay, 3) for r in commit.replies] == [0.01, 0.02]  # from the commit, not the latest event
    assert [s.starts_burst for s in script.steps] == [True, False, False, False]


def test_an_error_belongs_to_the_client_event_it_names_and_unknowns_to_the_latest() -> None:
    """`error.event_id` names its cause; an event with no known cause keeps the latest client event before it."""
    spec = [
        (0.0, "server", {"type": "session.created"}),
        (0.1, "client", {"type": "conversation.item.create", "event_id": "c1", "item": {"type": "message"}}),
        (0.2, "client", {"type": "session.update", "event_id": "c2"}),
        (0.3, "server", {"type": "error", "error": {"event_id": "c1", "message": "bad item"}}),
        (0.4, "server", {"type": "rate_limits.updated"}),
    ]
    frames = [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]
    assert reply_types(build_script(frames)) == {
        "conversation.item.create": ["error"],
        "session.update": ["rate_limits.updated"],
    }


@pytest.mark.parametrize("policy", ["loose", "ordered"])
def test_every_order_of_the_burst_plays_every_reply_in_the_pure_player(policy: str) -> None:
    """All six orders of the three client events get every recorded reply, each after the event that caused it."""
    script = build_script(burst_frames())
    recorded = [orjson.loads(f.data) for f in burst_frames() if f.direction is Direction.CLIENT]
    by_type = {e["type"]: e for e in recorded}
    for order in itertools.permutations(BURST):
        player = Player(script, policy)
        player.start()
        sent: list[str] = []
        for e in recorded[:2] + [by_type[k] for k in order]:
            sent += [orjson.loads(s.data)["type"] for s in player.receive(orjson.dumps(e).decode(), 0.0)]
        player.close(1.0)
        assert [k for k in sent if k != "error"] == [k for c in order for k in reply_types(script)[c]], (
            order
        )  # each event's replies come right after it
        kinds = [m.kind for m in player.report.mismatches]
        identity = order == BURST
        assert kinds == ([] if identity or policy == "loose" else ["reordered"]), (order, kinds)
        assert sent.count("error") == (0 if identity or policy == "loose" else 1)


async def served(policy: str) -> AsyncIterator[tuple[ReplayServer, str]]:
    server = ReplayServer(build_script(burst_frames(), source="burst"), policy=policy)
    runner, port = await start(server)
    try:
        yield server, f"ws://127.0.0.1:{port}/v1"
    finally:
        await server.shutdown()
        await runner.cleanup()


@pytest.mark.parametrize("policy", ["loose", "ordered"])
async def test_the_openai_sdk_is_served_in_every_order_of_the_burst(policy: str) -> None:
    """The real SDK sends the burst in each of its six orders and always gets the committed event, the session
    update and the whole response (never hangs); loose reports nothing, ordered one `reordered` mismatch per
    changed order, with the error event it sent at the jump."""
    from openai import AsyncOpenAI

    for order in itertools.permutations(BURST):
        async for server, url in served(policy):
            client = AsyncOpenAI(api_key=make_key(), websocket_base_url=url)
            seen: list[str] = []
            async with asyncio.timeout(5), client.realtime.connect(model="gpt-realtime") as conn:
                await conn.input_audio_buffer.append(audio=AUDIO)
                await conn.input_audio_buffer.append(audio=AUDIO)
                for kind in order:
                    if kind == "input_audio_buffer.commit":
                        await conn.input_audio_buffer.commit()
                    elif kind == "response.create":
                        await conn.response.create(response={"metadata": {"k": "v"}})
                    else:
                        await conn.session.update(session={"type": "realtime", "instructions": "brief"})
                async for event in conn:
                    seen.append(event.type)
                    if WANTED <= set(seen):
                        break
            await server.wait_closed(1, timeout=5)
            kinds = [m.kind for m in server.report.mismatches]
            changed = order != BURST and policy == "ordered"
            assert kinds == (["reordered"] if changed else []), (order, server.report.format())
            assert seen.count("error") == (1 if changed else 0), order
            assert seen.index("response.created") < seen.index("response.done"), order


def test_live_server_events_belong_to_the_command_whose_id_they_echo() -> None:
    """GPT-Live: an event echoing a command's event_id as client_event_id (or error.client_event_id) belongs to
    that command, even when later commands came between; others keep the latest command before them."""
    spec = [
        (0.0, "server", {"type": "session.created"}),
        (0.1, "client", {"type": "session.update", "event_id": "cmd_a", "session": {}}),
        (0.2, "client", {"type": "response.create", "event_id": "cmd_b"}),
        (0.3, "server", {"type": "session.updated", "client_event_id": "cmd_a"}),
        (0.4, "server", {"type": "error", "error": {"client_event_id": "cmd_a", "message": "no"}}),
        (0.5, "server", {"type": "response.created", "client_event_id": "cmd_b"}),
        (0.6, "server", {"type": "session.usage.updated"}),
    ]
    frames = [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]
    script = build_script(frames, session={"api": "live", "path": "/v1/live"})
    assert reply_types(script) == {
        "session.update": ["session.updated", "error"],
        "response.create": ["response.created", "session.usage.updated"],
    }


async def sdk_burst(url: str, order: tuple[str, ...]) -> list[str]:
    """Audio, then the burst in `order`, with the real SDK; the event types received until all three are answered."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=make_key(), websocket_base_url=url)
    seen: list[str] = []
    async with asyncio.timeout(10), client.realtime.connect(model="gpt-realtime") as conn:
        await conn.input_audio_buffer.append(audio=TONE)
        for kind in order:
            if kind == "input_audio_buffer.commit":
                await conn.input_audio_buffer.commit()
            elif kind == "response.create":
                await conn.response.create()
            else:
                await conn.session.update(session={"type": "realtime", "instructions": "brief"})
        async for event in conn:
            seen.append(event.type)
            if WANTED <= set(seen) or len(seen) > 500:
                break
    return seen


async def test_a_burst_recorded_through_the_proxy_replays_in_every_order(tmp_path: Path) -> None:
    """Recorded with the real SDK through the real proxy from the scripted upstream (commit, response.create and
    session.update in one burst), the session replays under loose to the SDK sending the burst in each of its
    six orders: every answer comes, no mismatch."""
    from rtproxy.recording import write_recording
    from rtproxy.replay.server import load_script
    from rtproxy.store import Store
    from tests.conftest import start_proxy
    from tests.upstream import ScriptedUpstream

    async with ScriptedUpstream(exact=True) as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            recorded = await sdk_burst(running.ws_base, BURST)
            (sid,) = await running.settle()
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()
    assert WANTED <= set(recorded)
    with Store(tmp_path / "rt.db") as store:
        write_recording(tmp_path / "burst.jsonl", store.session(sid), store.frames(sid))
    script = load_script(tmp_path / "burst.jsonl")
    assert [s.type for s in script.steps][-3:] == list(BURST)
    for order in itertools.permutations(BURST):
        server = ReplayServer(script, policy="loose")
        runner, port = await start(server)
        try:
            seen = await sdk_burst(f"ws://127.0.0.1:{port}/v1", order)
            await server.wait_closed(1, timeout=5)
        finally:
            await server.shutdown()
            await runner.cleanup()
        assert WANTED <= set(seen) and "error" not in seen, order
        assert server.report.ok, (order, server.report.format())
