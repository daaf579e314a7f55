"""Mismatch reports people can act on: expected and received events with the paths of the fields that differ
(base64 audio as its length), the turn, the events matched before, and what the replay did next; the same in
the report JSON, the `rtproxy replay` output and a failing pytest test."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson
import pytest

from rtproxy.recording import write_recording
from rtproxy.replay.player import Player
from rtproxy.replay.script import Report, build_script
from tests.conftest import make_key
from tests.test_pytest_plugin import QUIET, inner
from tests.test_replay import TEXT_TURN, client_events, ev, send
from tests.test_replay_server import ReplayProcess, spawn_replay

__all__ = ["inner"]  # the pytester fixture the plugin test uses

AUDIO = base64.b64encode(bytes(9600)).decode()


def strict_run() -> Report:
    """A strict replay where the client sends audio instead of the recorded text, then an extra event."""
    events = client_events(TEXT_TURN)
    player = Player(build_script(TEXT_TURN), "strict")
    player.start()
    send(player, events[0])
    item = dict(events[1]["item"], content=[{"type": "input_audio", "audio": AUDIO}])
    send(player, dict(events[1], item=item))
    send(player, ev("response.cancel", event_id="evt_x"))
    player.close(1.0)
    return Report("t.jsonl", "strict", connections=[player.report])


def test_a_payload_mismatch_shows_the_fields_that_differ_the_events_before_and_what_was_done() -> None:
    """The text report reads like a failing assertion: expected, received (audio as its length, never the
    base64), each differing path, the events matched before with their turns, and the replay's next move."""
    text = strict_run().format()
    assert "#1 at 0.000 s, turn 2: conversation.item.create: payload differs from the recording (item.content" in text
    assert "[payload]" in text
    assert 'item.content[0].type: expected "input_text", got "input_audio"' in text
    assert 'item.content[0].text: missing (expected "Hi")' in text
    assert 'item.content[0].audio: unexpected "<9600 bytes>"' in text
    assert '"audio":"<9600 bytes' in text and AUDIO[:40] not in text
    assert "after: session.update (turn 1)\n" in text
    assert "replay: sent an error event, then this event's recorded replies" in text
    assert "#2 at 0.000 s, turn 3: expected response.create, got response.cancel [unexpected]" in text
    assert 'type: expected "response.create", got "response.cancel"' in text
    assert "after: session.update (turn 1), conversation.item.create (turn 2)" in text
    assert "the replay still waits for response.create" in text


def test_the_report_json_keeps_the_same_detail() -> None:
    """The JSON report carries each mismatch's differing paths, the previous events and the next move, with
    audio as its length."""
    data = orjson.loads(orjson.dumps(strict_run().to_json()))
    first, second, third = data["connections"][0]["mismatches"]
    assert first["kind"] == "payload" and first["turn"] == 1
    assert first["received"]["item"]["content"][0]["audio"] == "<9600 bytes of base64 audio>"
    assert 'item.content[0].audio: unexpected "<9600 bytes>"' in first["details"]
    assert [p["turn"] for p in second["previous"]] == [1, 2]
    assert [p["event"]["type"] for p in second["previous"]] == ["session.update", "conversation.item.create"]
    assert second["next"].startswith("sent an error event and ignored response.cancel")
    assert third["kind"] == "closed_early" and third["next"] == "nothing: the client had left"


def test_a_reordering_under_ordered_is_one_mismatch_saying_what_happened() -> None:
    """Ordered: an event jumped ahead of in its burst and sent later is reported once, as `reordered`, with
    the recorded order and the fact that every event was still played."""
    events = client_events(TEXT_TURN)
    burst = [f for f in TEXT_TURN if not (f.direction.value == "server" and 0 < f.t < 0.1)]  # one burst
    player = Player(build_script(burst), "ordered")
    player.start()
    for e in (events[0], events[2], events[1]):
        send(player, e)
    player.close(1.0)
    (m,) = player.report.mismatches
    assert m.kind == "reordered" and player.report.turns_played == 3
    assert "recorded order: conversation.item.create, response.create" in m.message
    assert m.next.startswith("played every event with its recorded replies")


async def test_replay_command_prints_and_writes_the_detail(tmp_path: Path, processes: list[ReplayProcess]) -> None:
    """`rtproxy replay --match strict --report` with the real SDK: stdout and the JSON file show the changed
    field by its path and the events before it."""
    from openai import AsyncOpenAI

    path = tmp_path / "turn.jsonl"
    write_recording(path, {"path": "/v1/realtime", "api": "realtime"}, TEXT_TURN)
    p = spawn_replay([str(path), "--once", "--match", "strict", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    client = AsyncOpenAI(api_key=make_key(), websocket_base_url=p.base_url)
    async with asyncio.timeout(10), client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"instructions": "be long"})  # type: ignore[typeddict-item]
        async for event in conn:
            if event.type == "session.updated":
                break
    code, out, _ = await asyncio.to_thread(p.wait)
    assert code == 1
    assert 'session.instructions: expected "be brief", got "be long"' in out and "[payload]" in out
    (m, _closed) = orjson.loads((tmp_path / "r.json").read_bytes())["connections"][0]["mismatches"]
    assert m["details"] == ['session.instructions: expected "be brief", got "be long"']
    assert m["next"] == "sent an error event, then this event's recorded replies"


def test_a_failing_pytest_test_shows_the_diff(inner: pytest.Pytester) -> None:
    """The plugin fails the test with the same detail: the differing field's path and the replay's next move."""
    path = inner.path / "turn.jsonl"
    write_recording(path, {"path": "/v1/realtime", "api": "realtime"}, TEXT_TURN)
    inner.makepyfile(
        test_it="""
        import asyncio, secrets
        from openai import AsyncOpenAI

        async def go(url):
            client = AsyncOpenAI(api_key="sk-test-" + secrets.token_urlsafe(24), websocket_base_url=url)
            async with client.realtime.connect(model="gpt-realtime") as conn:
                await conn.session.update(session={"instructions": "be long"})
                async for event in conn:
                    if event.type == "session.updated":
                        return

        def test_it(rtproxy_replay):
            replay = rtproxy_replay("turn.jsonl", match="strict")
            asyncio.run(asyncio.wait_for(go(replay.url), 10))
        """
    )
    result = inner.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert 'session.instructions: expected "be brief", got "be long"' in out
    assert "replay: sent an error event, then this event's recorded replies" in out
    assert "closed before the script ended" in out
