"""Replay fixes found with the Node frameworks (tests/test_framework_node.py), pinned without them.

OpenAI's Agents SDK for JS answers the greeting (``session.created``) with a tracing ``session.update``, and sends
its own ``session.update`` and the app's first events when its socket opens. Whether the answer comes before or
after those depends on whether the client read the greeting together with the handshake (the replay, sending the
greeting at once, makes that likely; a real server's, after the open, makes the recorded order likely): the
replay plays such an answer at once, out of turn, and reports no mismatch.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.player import Player
from rtproxy.replay.script import build_script
from rtproxy.replay.server import ReplayServer, start
from tests.conftest import make_key

FULL = {"type": "realtime", "instructions": "You are a weather bot.", "output_modalities": ["text"]}
TRACING = {"type": "realtime", "tracing": "auto"}
AUDIO = base64.b64encode(bytes(4800)).decode()
QUESTION = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}


def agents_frames(opening_burst: bool = False) -> list[Frame]:
    """An Agents SDK text turn as recorded: its session.update and the app's item and response.create when the
    socket opened, its tracing session.update (its answer to session.created) once the first response was done.
    `opening_burst`: the item was sent with the session.update, before any answer (one burst)."""
    spec: list[tuple[float, str, dict[str, Any]]] = [
        (0.000, "server", {"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}),
        (0.009, "client", {"type": "session.update", "session": FULL}),
        (0.010, "server", {"type": "session.updated", "event_id": "e2", "session": {"id": "sess_1", "v": 1}}),
        (0.014, "client", {"type": "conversation.item.create", "item": QUESTION}),
        (0.015, "server", {"type": "conversation.item.added", "event_id": "e3", "item": {"id": "item_q"}}),
        (0.017, "client", {"type": "response.create", "event_id": "agents_js_response_create_1"}),
        (0.018, "server", {"type": "response.created", "event_id": "e4", "response": {"id": "resp_1"}}),
        (0.019, "server", {"type": "response.output_text.delta", "event_id": "e5", "response_id": "resp_1"}),
        (0.020, "server", {"type": "response.done", "event_id": "e6", "response": {"id": "resp_1"}}),
        (0.023, "client", {"type": "session.update", "session": TRACING}),
        (0.025, "server", {"type": "session.updated", "event_id": "e7", "session": {"id": "sess_1", "v": 2}}),
    ]
    if opening_burst:
        spec[2], spec[3] = spec[3], spec[2]
    return [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]


def play(frames: list[Frame], policy: str, events: list[dict[str, Any]]) -> tuple[Player, list[list[str]]]:
    """The pure player fed `events`; what it answered each with (event types, then `v` of a session.updated)."""
    player = Player(build_script(frames), policy)
    player.start()
    answers = []
    for e in events:
        sent = [orjson.loads(s.data) for s in player.receive(orjson.dumps(e).decode(), 0.0)]
        answers.append([f"{x['type']}:{x['session']['v']}" if "v" in x.get("session", {}) else x["type"] for x in sent])
    player.close(1.0)
    return player, answers


ANSWER_FIRST = [
    {"type": "session.update", "event_id": "evt_1", "session": TRACING},
    {"type": "session.update", "event_id": "evt_2", "session": FULL},
    {"type": "conversation.item.create", "event_id": "evt_3", "item": QUESTION},
    {"type": "response.create", "event_id": "agents_js_response_create_1"},
]


@pytest.mark.parametrize("policy", ["strict", "ordered"])
def test_the_answer_to_the_greeting_may_come_before_the_opening_events(policy: str) -> None:
    """The tracing session.update sent before the client's opening events (it read session.created with the
    handshake) is played at once with its own session.updated; the opening events then get theirs, in their
    turns, and nothing is a mismatch."""
    player, answers = play(agents_frames(), policy, ANSWER_FIRST)
    assert answers == [
        ["session.updated:2"],
        ["session.updated:1"],
        ["conversation.item.added"],
        ["response.created", "response.output_text.delta", "response.done"],
    ]
    assert player.report.ok, [m.message for m in player.report.mismatches]
    assert player.report.turns_played == 4 and player.finished


def voice_frames(answered_late: bool = False) -> list[Frame]:
    """An Agents SDK voice turn as recorded: session.update, audio appended and committed, response.create (each
    answered before the next), and its tracing session.update only after all of them, turns later.
    `answered_late`: the server's answers were all recorded after the tracing session.update (one burst)."""
    spec: list[tuple[float, str, dict[str, Any]]] = [
        (0.000, "server", {"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}),
        (0.009, "client", {"type": "session.update", "session": FULL}),
        (0.010, "server", {"type": "session.updated", "event_id": "e2", "session": {"id": "sess_1", "v": 1}}),
        (0.014, "client", {"type": "input_audio_buffer.append", "audio": AUDIO}),
        (0.020, "client", {"type": "input_audio_buffer.commit"}),
        (0.021, "server", {"type": "input_audio_buffer.committed", "event_id": "e3", "item_id": "item_u"}),
        (0.022, "client", {"type": "response.create", "event_id": "agents_js_response_create_1"}),
        (0.023, "server", {"type": "response.created", "event_id": "e4", "response": {"id": "resp_1"}}),
        (0.024, "server", {"type": "response.done", "event_id": "e5", "response": {"id": "resp_1"}}),
        (0.025, "client", {"type": "session.update", "session": TRACING}),
        (0.026, "server", {"type": "session.updated", "event_id": "e6", "session": {"id": "sess_1", "v": 2}}),
    ]
    if answered_late:
        spec = [f for f in spec if f[1] == "client" or f[2]["type"] == "session.created"] + [
            f for f in spec[1:] if f[1] == "server"
        ]
    return [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]


@pytest.mark.parametrize("answered_late", [False, True], ids=["turns-later", "one-burst"])
def test_the_answer_may_come_first_from_turns_later(answered_late: bool) -> None:
    """The answer recorded after the client's commit and response.create (turns after its opening
    session.update, or in one burst with them) is played first, at once, all the same; the turns then play in
    order, strict, no mismatch."""
    events = [
        {"type": "session.update", "session": TRACING},
        {"type": "session.update", "session": FULL},
        {"type": "input_audio_buffer.append", "audio": AUDIO},
        {"type": "input_audio_buffer.commit"},
        {"type": "response.create", "event_id": "agents_js_response_create_1"},
    ]
    player, answers = play(voice_frames(answered_late), "strict", events)
    assert answers == [
        ["session.updated:2"],
        ["session.updated:1"],
        [],
        ["input_audio_buffer.committed"],
        ["response.created", "response.done"],
    ]
    assert player.report.ok, [m.message for m in player.report.mismatches]


def test_only_a_session_update_is_taken_for_an_answer_to_the_greeting() -> None:
    """An item the client sends first that equals one recorded later is the client's own reordering (it does not
    configure the session the greeting described): reported as before, not played early."""
    item = {"type": "conversation.item.create", "item": QUESTION}
    player, _ = play(agents_frames(), "ordered", [item, ANSWER_FIRST[1]])
    assert [m.kind for m in player.report.mismatches][:1] == ["reordered"]


def test_the_recorded_order_still_plays_as_before() -> None:
    """The answer where it was recorded (after the first response) is matched in its turn, as before."""
    recorded = [ANSWER_FIRST[1], ANSWER_FIRST[2], ANSWER_FIRST[3], ANSWER_FIRST[0]]
    player, answers = play(agents_frames(), "strict", recorded)
    assert answers[-1] == ["session.updated:2"] and player.report.ok


def test_an_answer_with_another_payload_is_still_a_mismatch() -> None:
    """Strict: a first session.update equal to no recorded one is compared with the first recorded one, as
    before (a payload mismatch), not taken for the answer to the greeting."""
    changed = [{**ANSWER_FIRST[0], "session": {"type": "realtime", "tracing": None}}, *ANSWER_FIRST[1:]]
    player, _ = play(agents_frames(), "strict", changed)
    assert [m.kind for m in player.report.mismatches][:1] == ["payload"]


def test_the_clients_own_opening_events_reordered_are_still_reported() -> None:
    """Ordered: the client's opening burst (session.update and the item, sent before any answer) in another
    order is a reordering, reported as before: only an event recorded after that burst can be an answer to the
    greeting."""
    player, _ = play(agents_frames(opening_burst=True), "ordered", [ANSWER_FIRST[2], ANSWER_FIRST[1]])
    assert [m.kind for m in player.report.mismatches][:1] == ["reordered"]


async def test_the_openai_sdk_answering_the_greeting_first_replays_strict() -> None:
    """Through the replay server, the real SDK sending the tracing session.update first, then its opening
    events, gets every answer and a strict replay with no mismatch."""
    from openai import AsyncOpenAI

    server = ReplayServer(build_script(agents_frames(), source="agents"), policy="strict")
    runner, port = await start(server)
    try:
        client = AsyncOpenAI(api_key=make_key(), websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        seen: list[str] = []
        async with asyncio.timeout(5), client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session=TRACING)  # type: ignore[arg-type]
            await conn.session.update(session=FULL)  # type: ignore[arg-type]
            await conn.conversation.item.create(item=QUESTION)  # type: ignore[arg-type]
            await conn.send({"type": "response.create", "event_id": "agents_js_response_create_1"})
            async for event in conn:
                seen.append(event.type)
                if seen.count("session.updated") == 2 and "response.done" in seen:
                    break
        await server.wait_closed(1, timeout=5)
    finally:
        await server.shutdown()
        await runner.cleanup()
    assert server.report.ok, server.report.format()
    assert "error" not in seen and seen[0] == "session.created"
