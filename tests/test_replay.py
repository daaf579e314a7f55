"""The pure replay core: script building, the three match policies, audio runs, the report."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtproxy.errors import ReplayError
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.replay.player import Player, Send
from rtproxy.replay.script import AUDIO_APPEND, Script, b64_len, build_script, normalise


def frames(*spec: tuple[float, str, dict[str, Any] | bytes]) -> list[Frame]:
    out = []
    for seq, (t, side, ev) in enumerate(spec):
        data = ev if isinstance(ev, bytes) else orjson.dumps(ev).decode()
        out.append(Frame(seq, t, Direction(side), data))
    return out


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def append(n_bytes: int, event_id: str = "evt") -> dict[str, Any]:
    return ev(AUDIO_APPEND, event_id=event_id, audio=base64.b64encode(bytes(n_bytes)).decode())


def send(player: Player, event: dict[str, Any] | bytes, t: float = 0.0) -> list[Send]:
    return player.receive(event if isinstance(event, bytes) else orjson.dumps(event).decode(), t)


def types(sends: list[Send]) -> list[str]:
    return [orjson.loads(s.data)["type"] for s in sends]


def errors(sends: list[Send]) -> list[dict[str, Any]]:
    return [e["error"] for e in map(lambda s: orjson.loads(s.data), sends) if e["type"] == "error"]


TEXT_TURN = frames(
    (0.00, "server", ev("session.created", event_id="e1", session={"id": "sess_1"})),
    (0.01, "client", ev("session.update", event_id="c1", session={"instructions": "be brief"})),
    (0.03, "server", ev("session.updated", event_id="e2", session={"id": "sess_1"})),
    (
        0.05,
        "client",
        ev(
            "conversation.item.create",
            event_id="c2",
            item={
                "id": "item_c1",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hi"}],
            },
        ),
    ),
    (0.06, "server", ev("conversation.item.added", event_id="e3", item={"id": "item_c1"})),
    (0.07, "client", ev("response.create", event_id="c3")),
    (0.10, "server", ev("response.created", event_id="e4", response={"id": "resp_1"})),
    (0.25, "server", ev("response.output_text.delta", event_id="e5", delta="Hello")),
    (0.40, "server", ev("response.done", event_id="e6", response={"id": "resp_1", "status": "completed"})),
)


def client_events(fs: list[Frame]) -> list[dict[str, Any]]:
    return [orjson.loads(f.data) for f in fs if f.direction is Direction.CLIENT]


def play_all(script: Script, events: list[dict[str, Any]], policy: str = "ordered") -> tuple[Player, list[Send]]:
    player = Player(script, policy)
    out = player.start()
    for e in events:
        out += send(player, e)
    player.close(1.0)
    return player, out


def test_greeting_and_triggers_follow_the_latest_client_event() -> None:
    """Server events before the first client event are the greeting; later ones reply to the latest client event."""
    script = build_script(TEXT_TURN, source="x.jsonl")
    assert types([Send(r.data) for r in script.greeting]) == ["session.created"]
    assert [s.type for s in script.steps] == ["session.update", "conversation.item.create", "response.create"]
    assert [len(s.replies) for s in script.steps] == [1, 1, 3]
    assert [round(r.delay, 3) for r in script.steps[2].replies] == [0.03, 0.18, 0.33]
    assert script.server_events == 6


def test_a_recording_without_server_events_is_refused_by_name() -> None:
    """A recording with no server events cannot be replayed, and the error names its source."""
    only_client = frames((0.0, "client", ev("session.update")))
    with pytest.raises(ReplayError, match="empty.jsonl: no server events"):
        build_script(only_client, source="empty.jsonl")
    with pytest.raises(ReplayError):
        build_script([], source="empty.jsonl")


def test_ordered_replay_of_the_same_client_sends_every_recorded_event_in_order() -> None:
    """Sending the recorded client events back yields the recorded server frames, verbatim, and no mismatch."""
    player, out = play_all(build_script(TEXT_TURN), client_events(TEXT_TURN))
    assert [s.data for s in out] == [f.data for f in TEXT_TURN if f.direction is Direction.SERVER]
    assert player.report.ok and player.report.turns_played == 3 and player.report.events_sent == 6


def test_an_unexpected_event_gets_an_error_and_the_script_waits() -> None:
    """Under ordered, an extra event is answered with invalid_request_error naming both types; the script resumes."""
    player = Player(build_script(TEXT_TURN))
    player.start()
    out = send(player, ev("response.cancel", event_id="evt_x"))
    (err,) = errors(out)
    assert err["type"] == "invalid_request_error" and err["event_id"] == "evt_x"
    assert "expected session.update, got response.cancel" in err["message"]
    assert types(out) == ["error"]
    assert types(send(player, client_events(TEXT_TURN)[0])) == ["session.updated"]
    (m,) = player.report.mismatches
    assert m.kind == "unexpected" and m.expected == client_events(TEXT_TURN)[0] and m.step == 0


def test_a_skipped_event_is_reported_missing_and_its_replies_are_not_sent() -> None:
    """Under ordered, jumping ahead within the turn marks the skipped events missing and plays the one that came."""
    events = client_events(TEXT_TURN)
    player, out = play_all(build_script(TEXT_TURN), [events[0], events[2]])
    assert "conversation.item.added" not in types(out)
    assert types(out)[-4:] == ["error", "response.created", "response.output_text.delta", "response.done"]
    (m,) = player.report.mismatches
    assert m.kind == "missing" and "skipped 1 recorded event (conversation.item.create)" in m.message


def test_strict_ignores_volatile_fields_but_not_content() -> None:
    """Strict compares payloads without event ids, client item ids and audio bytes; a changed text is a mismatch."""
    events = client_events(TEXT_TURN)
    renamed = [dict(e, event_id=f"other_{i}") for i, e in enumerate(events)]
    renamed[1] = dict(renamed[1], item=dict(renamed[1]["item"], id="item_other"))
    assert play_all(build_script(TEXT_TURN), renamed, "strict")[0].report.ok
    changed = list(events)
    changed[1] = ev(
        "conversation.item.create",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bye"}]},
    )
    player, out = play_all(build_script(TEXT_TURN), changed, "strict")
    (m,) = player.report.mismatches
    assert m.kind == "payload" and m.details == ['item.content[0].text: expected "Hi", got "Bye"']
    assert "conversation.item.added" in types(out)  # a payload difference still plays the turn
    assert play_all(build_script(TEXT_TURN), changed, "ordered")[0].report.ok


def test_loose_tolerates_reordering_within_a_turn_that_ordered_reports() -> None:
    """Loose accepts the turn's events in another order and sends each event's own replies."""
    events = client_events(TEXT_TURN)
    swapped = [events[1], events[0], events[2]]
    player, out = play_all(build_script(TEXT_TURN), swapped, "loose")
    assert player.report.ok and player.report.turns_played == 3
    assert types(out)[:3] == ["session.created", "conversation.item.added", "session.updated"]
    assert not play_all(build_script(TEXT_TURN), swapped, "ordered")[0].report.ok


def test_loose_keeps_a_jumped_step_pending_until_it_comes() -> None:
    """Under loose a session.update recorded early but sent after response.create still matches."""
    events = client_events(TEXT_TURN)
    player, out = play_all(build_script(TEXT_TURN), [events[1], events[2], events[0]], "loose")
    assert player.report.ok and types(out)[-1] == "session.updated"


def test_closing_early_and_extra_events_after_the_end_are_mismatches() -> None:
    """A client that leaves before the end, or sends more after it, gets a mismatch of that kind."""
    events = client_events(TEXT_TURN)
    early, _ = play_all(build_script(TEXT_TURN), events[:1])
    (m,) = early.report.mismatches
    assert (
        m.kind == "closed_early" and "2 recorded client events never came (next: conversation.item.create)" in m.message
    )
    late, out = play_all(build_script(TEXT_TURN), [*events, ev("response.create")])
    assert [m.kind for m in late.report.mismatches] == ["after_end"] and types(out)[-1] == "error"


VOICE = frames(
    (0.00, "server", ev("session.created")),
    (0.10, "client", append(4800)),
    (0.20, "client", append(4800)),
    (0.21, "server", ev("input_audio_buffer.speech_started")),
    (0.30, "client", append(4800)),
    (0.40, "client", append(2400)),
    (0.45, "server", ev("input_audio_buffer.speech_stopped")),
    (0.50, "client", ev("input_audio_buffer.commit")),
    (0.51, "server", ev("input_audio_buffer.committed")),
)


def test_appends_become_one_step_matched_by_total_length_not_chunking() -> None:
    """Four appends form one step of 16800 bytes; a client chunking differently matches under strict."""
    script = build_script(VOICE)
    assert [(s.type, s.audio_bytes, s.appends) for s in script.steps] == [
        (AUDIO_APPEND, 16800, 4),
        ("input_audio_buffer.commit", 0, 0),
    ]
    assert [r.at_bytes for r in script.steps[0].replies] == [9600, 16800]
    rechunked = [append(8400), append(8400), ev("input_audio_buffer.commit")]
    player, out = play_all(script, rechunked, "strict")
    assert player.report.ok
    assert types(out) == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]


def test_vad_replies_wait_for_enough_audio() -> None:
    """A reply recorded mid-run is sent once the client has appended as much audio as had been appended then."""
    player = Player(build_script(VOICE))
    player.start()
    assert send(player, append(4800)) == []
    assert types(send(player, append(4801))) == ["input_audio_buffer.speech_started"]
    assert types(send(player, ev("input_audio_buffer.commit"))) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]


def test_a_different_audio_length_is_a_strict_mismatch_only() -> None:
    """Strict reports other total audio; ordered and loose accept it."""
    shorter = [append(4800), ev("input_audio_buffer.commit")]
    player, _ = play_all(build_script(VOICE), shorter, "strict")
    (m,) = player.report.mismatches
    assert m.kind == "audio" and "recorded 16800 bytes" in m.message and "received 4800 bytes" in m.message
    assert play_all(build_script(VOICE), shorter, "ordered")[0].report.ok


def test_an_unexpected_audio_run_is_one_mismatch_with_one_error() -> None:
    """Audio where none was recorded gives one error and one mismatch counting the appends, not one per chunk."""
    player = Player(build_script(TEXT_TURN))
    player.start()
    out = [s for _ in range(5) for s in send(player, append(100))]
    assert types(out) == ["error"]
    (m,) = player.report.mismatches
    assert m.count == 5 and m.received == {"type": AUDIO_APPEND, "audio_bytes": 500, "appends": 5}


def test_non_json_frames_are_steps_and_replies() -> None:
    """Binary frames from the client are matched by kind; binary replies are sent as bytes."""
    script = build_script(
        frames((0.0, "server", ev("session.created")), (0.1, "client", b"\x00\x01"), (0.2, "server", b"\x02"))
    )
    player = Player(script)
    player.start()
    assert [s.data for s in send(player, b"\x09")] == [b"\x02"]


def test_report_reads_well_and_serialises() -> None:
    """The text report names each mismatch with its turn; the JSON report carries the same facts."""
    player, _ = play_all(build_script(TEXT_TURN, source="t.jsonl"), client_events(TEXT_TURN)[1:])
    from rtproxy.replay.script import Report

    report = Report("t.jsonl", "ordered", connections=[player.report])
    text = report.format()
    assert "connection 1 /: 2/3 turns played, 5 events sent, 2 received, 1 mismatch" in text
    assert "turn 1: expected session.update, got conversation.item.create" in text
    data = orjson.loads(orjson.dumps(report.to_json()))
    assert data["ok"] is False and data["mismatches"] == 1
    assert data["connections"][0]["mismatches"][0]["kind"] == "missing"


def test_normalise_and_b64_len() -> None:
    """Audio is replaced by its decoded length and event ids vanish at any depth."""
    raw = bytes(range(7))
    assert b64_len(base64.b64encode(raw).decode()) == 7
    e = ev(AUDIO_APPEND, event_id="x", audio=base64.b64encode(raw).decode(), nested={"event_id": 1, "k": [1]})
    assert normalise(e) == {"type": AUDIO_APPEND, "audio": "<7 bytes>", "nested": {"k": [1]}}


CLIENT_KINDS = [
    "session.update",
    "conversation.item.create",
    "response.create",
    AUDIO_APPEND,
    "input_audio_buffer.commit",
    "response.cancel",
]


@st.composite
def recordings(draw: st.DrawFn) -> list[Frame]:
    spec: list[tuple[float, str, dict[str, Any] | bytes]] = []
    t = 0.0
    for i in range(draw(st.integers(1, 25))):
        t += draw(st.floats(0, 0.5))
        if draw(st.booleans()):
            spec.append((t, "server", ev("server.event", n=i)))
        else:
            kind = draw(st.sampled_from(CLIENT_KINDS))
            spec.append((t, "client", append(draw(st.integers(1, 300))) if kind == AUDIO_APPEND else ev(kind, n=i)))
    spec.append((t, "server", ev("server.last")))
    return frames(*spec)


@settings(max_examples=60, deadline=None)
@given(recordings(), st.sampled_from(["strict", "ordered", "loose"]))
def test_replaying_the_recorded_client_reproduces_the_recorded_server(fs: list[Frame], policy: str) -> None:
    """For any recording and policy, the recorded client events yield the recorded server frames in order."""
    player, out = play_all(build_script(fs), client_events(fs), policy)
    assert player.report.ok, player.report.mismatches
    assert [s.data for s in out] == [f.data for f in fs if f.direction is Direction.SERVER]
    delays = [s.delay for s in out]
    assert all(d >= 0 for d in delays)


@st.composite
def shuffled_turns(draw: st.DrawFn) -> tuple[list[Frame], list[dict[str, Any]]]:
    """A recording without audio, and its client events shuffled within each turn."""
    spec: list[tuple[float, str, dict[str, Any] | bytes]] = [(0.0, "server", ev("session.created"))]
    for i in range(draw(st.integers(1, 20))):
        kind = draw(st.sampled_from(["session.update", "conversation.item.create", "response.create"]))
        spec.append((0.0, "client", ev(kind, n=i)))
        spec += [(0.0, "server", ev("reply", to=i, k=k)) for k in range(draw(st.integers(0, 2)))]
    fs = frames(*spec)
    turns: list[list[dict[str, Any]]] = [[]]
    for e in client_events(fs):
        turns[-1].append(e)
        if e["type"] == "response.create":
            turns.append([])
    return fs, [e for turn in turns for e in draw(st.permutations(turn))]


@settings(max_examples=60, deadline=None)
@given(shuffled_turns())
def test_loose_accepts_any_order_within_each_turn(case: tuple[list[Frame], list[dict[str, Any]]]) -> None:
    """Under loose, client events shuffled within their turns match, and every recorded server frame is sent once."""
    fs, events = case
    player, out = play_all(build_script(fs), events, "loose")
    assert player.report.ok, player.report.mismatches
    assert sorted(str(s.data) for s in out) == sorted(str(f.data) for f in fs if f.direction is Direction.SERVER)


def nested_text(kind: str, levels: int, leaf: str = "1", event_id: str = '"c1"') -> str:
    """A client event whose `session` nests `levels` objects deep (orjson reads 1024, writes only 255)."""
    return f'{{"type":"{kind}","event_id":{event_id},"session":' + '{"a":' * levels + leaf + "}" * levels + "}"


def test_normalise_of_an_event_nested_1000_deep_is_bounded_and_stable() -> None:
    """normalise walks a 1000-level event without RecursionError; the deep part becomes one stable string,
    equal for equal events (event ids still dropped) and different for a different leaf."""
    deep = orjson.loads(nested_text("session.update", 1000))
    same = orjson.loads(nested_text("session.update", 1000, event_id='"other"'))
    other = orjson.loads(nested_text("session.update", 1000, leaf="2"))
    n = normalise(deep)
    assert n == normalise(same) and n != normalise(other)
    assert "event_id" not in n
    orjson.dumps(n)  # shallow enough to write (a report, a diff)
    depth, node = 0, n["session"]
    while isinstance(node, dict):
        depth, node = depth + 1, node["a"]
    assert isinstance(node, str) and node.startswith("<nested {") and depth < 20


def test_a_1000_deep_client_event_matches_itself_in_a_replay() -> None:
    """A recorded client event nested 1000 deep replays under strict matching: the same event plays its turn
    without a mismatch, a different leaf is a payload mismatch whose report still serialises."""
    recorded = [
        Frame(0, 0.0, Direction.SERVER, orjson.dumps(ev("session.created", event_id="e1")).decode()),
        Frame(1, 0.01, Direction.CLIENT, nested_text("session.update", 1000)),
        Frame(2, 0.02, Direction.SERVER, orjson.dumps(ev("session.updated", event_id="e2")).decode()),
    ]
    script = build_script(recorded)
    for policy in ("strict", "ordered", "loose"):
        player = Player(script, policy)
        out = player.start() + player.receive(nested_text("session.update", 1000, event_id='"x"'), 0.01)
        player.close(1.0)
        assert player.report.ok and types(out) == ["session.created", "session.updated"], policy
    player = Player(script, "strict")
    out = player.start() + player.receive(
        nested_text("session.update", 1000, "2", event_id="[" * 900 + "]" * 900), 0.01
    )
    (m,) = player.report.mismatches
    assert m.kind == "payload" and types(out) == ["session.created", "error", "session.updated"]
    assert errors(out)[0]["code"] == "rtproxy_replay_mismatch"
    from rtproxy.replay.script import Report

    data = orjson.loads(orjson.dumps(Report("t.jsonl", "strict", connections=[player.report]).to_json()))
    assert data["connections"][0]["mismatches"][0]["kind"] == "payload"
