"""Replay fixes found with Pipecat, pinned without it: protocol behaviour a voice agent relies on."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.player import Player
from rtproxy.replay.script import build_script


def frames(spec: list[tuple[float, str, dict[str, Any]]]) -> list[Frame]:
    return [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "event_id": "evt_t",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }


INTERRUPTED = frames(
    [
        (0.00, "server", {"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}),
        (0.01, "client", {"type": "response.create", "event_id": "evt_r"}),
        (0.02, "server", {"type": "response.created", "event_id": "e2", "response": {"id": "resp_1"}}),
        (0.03, "server", {"type": "response.output_audio.delta", "event_id": "e3", "response_id": "resp_1"}),
        (0.04, "server", {"type": "response.done", "event_id": "e4", "response": {"id": "resp_1"}}),
        (0.30, "client", truncate("item_a1", 34)),
        (
            0.31,
            "server",
            {
                "type": "conversation.item.truncated",
                "event_id": "e5",
                "item_id": "item_a1",
                "content_index": 0,
                "audio_end_ms": 34,
            },
        ),
    ]
)


def play(*events: dict[str, Any]) -> tuple[Player, list[dict[str, Any]]]:
    player = Player(build_script(INTERRUPTED), "strict")
    out = [orjson.loads(s.data) for s in player.start()]
    for e in events:
        out += [orjson.loads(s.data) for s in player.receive(orjson.dumps(e).decode(), 0.0)]
    player.close(1.0)
    return player, out


def test_strict_takes_a_truncate_at_another_playback_position_and_echoes_it() -> None:
    """A truncate's audio_end_ms is how much of the answer this run's user heard (the client's playback clock,
    different on every run): strict does not compare it, and conversation.item.truncated echoes this run's."""
    player, out = play({"type": "response.create", "event_id": "evt_r2"}, truncate("item_a1", 5))
    assert player.report.ok, player.report.format()
    assert [e["type"] for e in out][-1] == "conversation.item.truncated"
    assert out[-1]["audio_end_ms"] == 5 and out[-1]["item_id"] == "item_a1"


def test_strict_still_tells_a_truncate_of_another_item() -> None:
    """What the client chose (which item, which part) is still compared: another item is a payload mismatch."""
    player, out = play({"type": "response.create", "event_id": "evt_r2"}, truncate("item_b2", 34))
    (mismatch,) = player.report.mismatches
    assert mismatch.kind == "payload" and mismatch.details == ['item_id: expected "item_a1", got "item_b2"']
    assert "error" in [e["type"] for e in out]


CHUNK = base64.b64encode(bytes(4800)).decode()  # 100 ms of PCM16 at 24 kHz
APPEND = {"type": "input_audio_buffer.append", "audio": CHUNK}


def mic_split_by_update(before: int, after: int, answered_at: int) -> list[Frame]:
    """A live microphone under server VAD: `before` appends, the session.update the client sent on
    session.created, `after` more appends; the server's turn (speech_stopped, committed, the response) was
    recorded after the `answered_at`-th append of the second run."""
    spec: list[tuple[float, str, dict[str, Any]]] = [(0.0, "server", {"type": "session.created", "event_id": "e0"})]
    spec += [(0.01, "client", APPEND)] * before
    spec += [
        (0.02, "client", {"type": "session.update", "event_id": "evt_u", "session": {"type": "realtime"}}),
        (0.03, "server", {"type": "session.updated", "event_id": "e1"}),
    ]
    for k in range(after):
        spec.append((0.04 + k / 100, "client", APPEND))
        if k + 1 == answered_at:
            spec += [
                (0.05 + k / 100, "server", {"type": "input_audio_buffer.speech_stopped", "item_id": "item_u"}),
                (0.05 + k / 100, "server", {"type": "input_audio_buffer.committed", "item_id": "item_u"}),
                (0.06 + k / 100, "server", {"type": "response.created", "response": {"id": "resp_1"}}),
                (0.07 + k / 100, "server", {"type": "response.done", "response": {"id": "resp_1"}}),
            ]
    return frames(spec)


def stream(player: Player, before: int, after: int) -> list[list[str]]:
    """The replay's answers to `before` appends, the session.update and `after` appends, event by event."""
    sent = [[orjson.loads(s.data)["type"] for s in player.start()]]
    events = [APPEND] * before + [{"type": "session.update", "event_id": "evt_u2", "session": {"type": "realtime"}}]
    for e in events + [APPEND] * after:
        sent.append([orjson.loads(s.data)["type"] for s in player.receive(orjson.dumps(e).decode(), 0.0)])
    return sent


def test_a_server_vad_turn_comes_at_its_place_in_the_audio_however_a_command_split_the_stream() -> None:
    """The input audio buffer is one stream that a command sent meanwhile (the session.update a client sends on
    session.created, a moment set by the network) does not cut: the server's turn recorded 8 chunks into the
    session comes once this run has streamed 8 chunks, although its session.update split them 7 + 1, not 2 + 6."""
    player = Player(build_script(mic_split_by_update(2, 8, 6)), "ordered")
    sent = stream(player, 7, 3)
    assert "response.done" in sent[9] and not any("response.done" in s for s in sent[:9]), sent
    player.close(1.0)
    assert player.report.ok, player.report.format()


def test_strict_compares_the_audio_of_a_buffer_not_of_the_runs_a_command_split_it_into() -> None:
    """Strict takes the same 10 chunks split 7 + 1 + 2 (recorded 2 + 8) by the session.update; one chunk more in
    the buffer is one audio mismatch, reported with the buffer's lengths."""
    script = build_script(mic_split_by_update(2, 8, 6))
    same = Player(script, "strict")
    stream(same, 7, 3)
    same.close(1.0)
    assert same.report.ok, same.report.format()
    more = Player(script, "strict")
    stream(more, 7, 4)
    more.close(1.0)
    (mismatch,) = more.report.mismatches
    assert mismatch.kind == "audio" and "recorded 48000 bytes" in mismatch.message
    assert "received 52800 bytes" in mismatch.message


async def microphone(url: str, update_after: int) -> list[str]:
    """The real SDK as a voice client that streams its microphone at once (before session.created) and sends
    its session.update after `update_after` chunks of it: 600 ms of speech, 300 ms of silence, under server VAD;
    the event types received until the answer is done."""
    from openai import AsyncOpenAI

    from tests.conftest import make_key
    from tests.upstream import RATE, tone

    pcm = tone(600) + bytes(RATE * 2 * 300 // 1000)
    chunks = [base64.b64encode(pcm[i : i + 4800]).decode() for i in range(0, len(pcm), 4800)]
    client = AsyncOpenAI(api_key=make_key(), websocket_base_url=url)
    seen: list[str] = []
    async with asyncio.timeout(5), client.realtime.connect(model="gpt-realtime") as conn:
        for i, chunk in enumerate(chunks):
            if i == update_after:
                await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
            await conn.input_audio_buffer.append(audio=chunk)
        async for event in conn:
            seen.append(event.type)
            if event.type == "response.done" or len(seen) > 500:
                break
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(("recorded", "replayed"), [(1, 7), (7, 1)])
async def test_a_voice_client_recorded_through_the_proxy_replays_wherever_its_command_splits_the_stream(
    tmp_path: Path, recorded: int, replayed: int
) -> None:
    """Recorded with the SDK through the proxy from an upstream that greets late and detects speech (server VAD),
    the client's session.update after `recorded` chunks; replayed (strict) to the client sending it after
    `replayed`: session.created comes first, on connect, although recorded after the first chunks (it came
    after session.updated); the VAD turn and its answer at their place in the audio (recorded 1, replayed 7 used
    to leave the client waiting); nothing is a mismatch."""
    from rtproxy.recording import read_recording, write_recording
    from rtproxy.replay.server import ReplayServer, load_script, start
    from rtproxy.store import Store
    from tests.conftest import start_proxy
    from tests.upstream import ScriptedUpstream

    async with ScriptedUpstream(exact=True, vad=True, greet_after=3) as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            before = await microphone(running.ws_base, recorded)
            (sid,) = await running.settle()
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()
    with Store(tmp_path / "rt.db") as store:
        write_recording(tmp_path / "mic.jsonl", store.session(sid), store.frames(sid))
    script = load_script(tmp_path / "mic.jsonl")
    first = orjson.loads(next(f.data for f in read_recording(tmp_path / "mic.jsonl").frames))
    assert first["type"] == "input_audio_buffer.append"  # the microphone streamed before the server greeted
    assert [orjson.loads(r.data)["type"] for r in script.greeting] == ["session.created"]  # sent on connect
    server = ReplayServer(script, policy="strict")
    runner, port = await start(server)
    try:
        after = await microphone(f"ws://127.0.0.1:{port}/v1", replayed)
        await server.wait_closed(1, timeout=5)
    finally:
        await server.shutdown()
        await runner.cleanup()
    assert sorted(after) == sorted(before) and after[0] == "session.created" and after[-1] == "response.done"
    assert "input_audio_buffer.speech_stopped" in after  # (session.updated comes where this run's update was)
    assert server.report.ok, server.report.format()
