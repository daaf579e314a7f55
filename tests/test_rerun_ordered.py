"""`ordered` replay: a client event that comes after the turn it belongs to was closed is `missing` from that turn
(and counts in the next turn on its own); `reordered` is only for an event late within its turn."""

from __future__ import annotations

from typing import Any

from rtproxy.protocols.wire import Frame
from rtproxy.replay.player import Player
from rtproxy.replay.script import Report, build_script
from tests.test_replay import client_events, ev, frames, send

ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}


def turns(*firsts: str) -> list[Frame]:
    """One turn per name: that client event (an item, or a session.update), response.create, the answer."""
    out: list[tuple[float, str, dict[str, Any]]] = [(0.0, "server", ev("session.created", session={"id": "s"}))]
    for n, first in enumerate(firsts, start=1):
        t = n / 10
        opening = (
            ev("conversation.item.create", event_id=f"c{n}a", item={**ITEM, "id": f"item_{n}"})
            if first == "item"
            else ev("session.update", event_id=f"c{n}a", session={"instructions": "brief"})
        )
        out += [
            (t + 0.01, "client", opening),
            (t + 0.02, "server", ev("conversation.item.added" if first == "item" else "session.updated")),
            (t + 0.03, "client", ev("response.create", event_id=f"c{n}b")),
            (t + 0.04, "server", ev("response.created", response={"id": f"resp_{n}"})),
            (t + 0.05, "server", ev("response.done", response={"id": f"resp_{n}", "status": "completed"})),
        ]
    return frames(*out)


def shown(player: Player) -> str:
    return Report("t.jsonl", "ordered", connections=[player.report]).format()


def play(recording: list[Frame], order: list[int]) -> Player:
    events = client_events(recording)
    player = Player(build_script(recording), "ordered")
    player.start()
    for i in order:
        send(player, events[i])
    player.close(1.0)
    return player


def test_an_item_a_turn_late_is_missing_from_its_turn_not_reordered() -> None:
    """Turn 1's item comes after turn 1's response.create, with turn 2's: turn 1 reports it missing; in turn 2 it
    stands for turn 2's item, so the second item is the unexpected one there. Both turns are reported, and
    nothing is called reordered."""
    player = play(turns("item", "item"), [1, 0, 2, 3])
    kinds = [(m.kind, m.step) for m in player.report.mismatches]
    assert kinds == [("missing", 0), ("unexpected", 3)], shown(player)
    assert "turn 1" in shown(player) and "reordered" not in shown(player)
    assert player.report.turns_played == 3


def test_an_event_late_within_its_turn_is_still_reordered() -> None:
    """The next turn expects no such event: the late item belongs to its own turn, and is `reordered` (every event
    played)."""
    player = play(turns("item", "update"), [1, 0, 2, 3])
    assert [(m.kind, m.step) for m in player.report.mismatches] == [("reordered", 0)], shown(player)
    assert player.report.turns_played == 4
