"""Replay fixes found with LiveKit Agents, pinned without the framework.

A barge-in: the client cancels a response while it streams (``response.cancel``, LiveKit's ``interrupt()``, sent
only while a generation is active). The rest of that response (its ``*.done`` events, ``response.done`` with
status ``cancelled``) is what the cancel caused, so a replay sends it after this run's cancel, not with the
``response.create``: a client that cancels once it has heard the first audio is never handed a finished
response it can no longer cancel.

A server's close, replayed: the recorded close came after every client frame recorded, the client's input
audio included, so the replay closes only once this client has streamed as much (GPT-Live: the session's audio;
Realtime: the whole of the last audio run), as it sends every reply. LiveKit's GPT-Live app keeps streaming
after an answer; the server dropped it at its next chunk; the replay closed before that chunk, and strict
reported other streamed audio.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import ClientSession, WSMsgType

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.player import Player
from rtproxy.replay.script import build_script
from rtproxy.replay.server import ReplayServer, start
from tests.test_replay_causal import reply_types

AUDIO = "AAAA" * 400


def frames(spec: list[tuple[str, dict[str, Any]]]) -> list[Frame]:
    return [Frame(i, i * 0.01, Direction(d), orjson.dumps(e).decode()) for i, (d, e) in enumerate(spec)]


DELTA = ("server", {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "it_a", "delta": AUDIO})


def cancelled(cancel: dict[str, Any], *, before: int = 2) -> list[Frame]:
    """A spoken answer the client cancelled after `before` audio deltas; the server ends it as cancelled."""
    spec: list[tuple[str, dict[str, Any]]] = [
        ("server", {"type": "session.created", "session": {"id": "sess_1"}}),
        ("client", {"type": "response.create", "event_id": "c1"}),
        ("server", {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        ("server", {"type": "response.output_item.added", "response_id": "resp_1", "item": {"id": "it_a"}}),
        ("server", {"type": "conversation.item.added", "item": {"id": "it_a"}}),
        *[DELTA] * before,
        ("client", cancel),
        DELTA,
        ("server", {"type": "response.output_audio.done", "response_id": "resp_1", "item_id": "it_a"}),
        ("server", {"type": "conversation.item.done", "item": {"id": "it_a", "status": "incomplete"}}),
        ("server", {"type": "response.output_item.done", "response_id": "resp_1", "item": {"id": "it_a"}}),
        ("server", {"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}}),
    ]
    return frames(spec)


TAIL = [
    "response.output_audio.delta",
    "response.output_audio.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
]
HEAD = ["response.created", "response.output_item.added", "conversation.item.added"]


def test_the_rest_of_a_cancelled_response_belongs_to_the_cancel() -> None:
    """The response's events recorded after response.cancel (its output item's conversation.item.done too) are
    the cancel's replies; those before it stay with the response.create."""
    script = build_script(cancelled({"type": "response.cancel"}))
    assert reply_types(script) == {
        "response.create": HEAD + ["response.output_audio.delta"] * 2,
        "response.cancel": TAIL,
    }


def test_a_cancel_naming_its_response_takes_over_that_one() -> None:
    """`response.cancel` with a `response_id` takes over the response it names; one naming a response that is
    not in progress (or sent when none is) leaves the response with its response.create."""
    named = build_script(cancelled({"type": "response.cancel", "response_id": "resp_1"}))
    assert reply_types(named)["response.cancel"] == TAIL
    other = build_script(cancelled({"type": "response.cancel", "response_id": "resp_0"}))
    assert reply_types(other) == {
        "response.create": HEAD + ["response.output_audio.delta"] * 3 + TAIL[1:],
        "response.cancel": [],
    }
    late = frames(
        [
            ("server", {"type": "session.created"}),
            ("client", {"type": "response.create"}),
            ("server", {"type": "response.created", "response": {"id": "resp_1"}}),
            ("server", {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}),
            ("client", {"type": "response.cancel", "event_id": "c2"}),
            ("server", {"type": "error", "error": {"event_id": "c2", "message": "no active response"}}),
        ]
    )
    assert reply_types(build_script(late)) == {
        "response.create": ["response.created", "response.done"],
        "response.cancel": ["error"],
    }


def test_the_player_holds_the_cancelled_tail_until_this_runs_cancel() -> None:
    """Played, response.create gets the response up to the cancel point (no response.done: still cancellable);
    the client's cancel gets the rest, ending in the cancelled response.done; no mismatch."""
    player = Player(build_script(cancelled({"type": "response.cancel"})), "ordered")
    player.start()
    first = [orjson.loads(s.data)["type"] for s in player.receive('{"type":"response.create"}', 0.0)]
    assert first == HEAD + ["response.output_audio.delta"] * 2
    rest = [orjson.loads(s.data) for s in player.receive('{"type":"response.cancel"}', 0.1)]
    assert [e["type"] for e in rest] == TAIL and rest[-1]["response"]["status"] == "cancelled"
    player.close(0.2)
    assert player.report.ok and player.finished


# --- a server's close is on the input audio's timeline ---------------------------------------------------

LIVE = {"api": "live", "path": "/v1/live/sessions", "closed_by": "upstream", "server_close_code": 1011}
CHUNK = "AAAA" * 1600  # 4800 bytes: 100 ms of PCM16 at 24 kHz


def appended(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [("client", {"type": "session.input_audio.append", "audio": CHUNK})] * n


def dropped_after_more_audio() -> list[Frame]:
    """A Live session whose server answered after two chunks of audio, and closed (1011) once the client had
    streamed a third (as LiveKit's GPT-Live app keeps streaming its microphone after an answer)."""
    spec: list[tuple[str, dict[str, Any]]] = [
        ("client", {"type": "session.start", "event_id": "s1", "session": {"model": "gpt-live-1"}}),
        ("server", {"type": "session.started", "client_event_id": "s1", "session": {"id": "sess_1"}}),
        *appended(2),
        ("server", {"type": "session.usage.updated", "usage": {"seconds": 0.2}}),
        *appended(1),
    ]
    return frames(spec)


def test_the_player_may_close_only_once_the_client_streamed_the_recorded_audio() -> None:
    """Every step played and every reply sent after two chunks, the player is finished but not yet closable:
    the recorded server closed after the third chunk; after it, it is."""
    player = Player(build_script(dropped_after_more_audio(), session=LIVE), "strict")
    player.start()
    player.receive('{"type":"session.start","event_id":"s2","session":{"model":"gpt-live-1"}}', 0.0)
    sent = [player.receive(orjson.dumps(e).decode(), 0.1) for _, e in appended(2)]
    assert [orjson.loads(s.data)["type"] for s in sent[-1]] == ["session.usage.updated"]
    assert player.finished and not player.closable
    player.receive(orjson.dumps(appended(1)[0][1]).decode(), 0.2)
    assert player.closable


async def test_a_replayed_close_comes_after_the_clients_recorded_audio() -> None:
    """Over a real socket (strict): a client that streams the recorded three chunks sends them all before the
    replay closes with the recorded 1011; the report has no audio mismatch."""
    server = ReplayServer(build_script(dropped_after_more_audio(), session=LIVE, source="drop"), policy="strict")
    runner, port = await start(server)
    try:
        async with asyncio.timeout(5), ClientSession() as http:
            async with http.ws_connect(f"ws://127.0.0.1:{port}/v1/live/sessions") as ws:
                await ws.send_str('{"type":"session.start","event_id":"s2","session":{"model":"gpt-live-1"}}')
                assert orjson.loads((await ws.receive()).data)["type"] == "session.started"
                for _, e in appended(2):
                    await ws.send_str(orjson.dumps(e).decode())
                assert orjson.loads((await ws.receive()).data)["type"] == "session.usage.updated"
                await ws.send_str(orjson.dumps(appended(1)[0][1]).decode())
                closing = await ws.receive()
                assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
                assert ws.close_code == 1011
        await server.wait_closed(1, timeout=5)
    finally:
        await server.shutdown()
        await runner.cleanup()
    assert server.report.ok, server.report.format()
    assert server.report.connections[0].server_close == 1011


def test_a_realtime_close_after_an_audio_run_waits_for_the_whole_run() -> None:
    """Realtime (runs of appends): the server's close recorded after a run whose last reply came mid-run (server
    VAD) is closable only once this client has appended the whole run, however it chunks it."""
    spec: list[tuple[str, dict[str, Any]]] = [
        ("server", {"type": "session.created", "session": {"id": "sess_1"}}),
        *[("client", {"type": "input_audio_buffer.append", "audio": CHUNK})] * 2,
        ("server", {"type": "input_audio_buffer.speech_started", "item_id": "it_u"}),
        *[("client", {"type": "input_audio_buffer.append", "audio": CHUNK})] * 2,
    ]
    session = {"api": "realtime", "path": "/v1/realtime", "closed_by": "upstream", "server_close_code": 1011}
    player = Player(build_script(frames(spec), session=session), "ordered")
    player.start()
    half = orjson.dumps({"type": "input_audio_buffer.append", "audio": "AAAA" * 800}).decode()  # 50 ms
    sent = [s for _ in range(4) for s in player.receive(half, 0.1)]  # 200 ms: the speech_started is due
    assert [orjson.loads(s.data)["type"] for s in sent] == ["input_audio_buffer.speech_started"]
    assert player.finished and not player.closable
    for _ in range(4):
        player.receive(half, 0.2)
    assert player.closable
