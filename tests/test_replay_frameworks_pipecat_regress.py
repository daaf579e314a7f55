"""Replay fixes found with Pipecat, pinned without it: protocol behaviour a voice agent relies on."""

from __future__ import annotations

from typing import Any

import orjson

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
