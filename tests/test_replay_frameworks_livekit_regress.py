"""Replay fixes found with LiveKit Agents, pinned without the framework.

A barge-in: the client cancels a response while it streams (``response.cancel``, LiveKit's ``interrupt()``, sent
only while a generation is active). The rest of that response (its ``*.done`` events, ``response.done`` with
status ``cancelled``) is what the cancel caused, so a replay sends it after this run's cancel, not with the
``response.create``: a client that cancels once it has heard the first audio is never handed a finished
response it can no longer cancel.
"""

from __future__ import annotations

from typing import Any

import orjson

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.player import Player
from rtproxy.replay.script import build_script
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
