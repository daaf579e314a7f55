"""Every view survives any JSON the wire carries: realistic event types, arbitrary field values and shapes.

The reducer, the text views (`show`, `show --events`, `show --json`), `diff`
and the TUI's session screen are fed event sequences whose ``type`` comes from
the event catalogue but whose fields hold anything JSON can: strings where
objects are expected, lists, null, huge numbers, deep nesting. Nothing may
raise, output stays bounded, and what the reducer could not use is an anomaly.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rtproxy.cli import render
from rtproxy.conversation.model import MAX_AUDIO_MS, MAX_OUTPUT_ITEMS, MAX_PARTS
from rtproxy.conversation.realtime import Conversation, assemble
from rtproxy.diff import diff_frames
from rtproxy.protocols.realtime import CLIENT_EVENTS, SERVER_EVENTS, canonical_type
from rtproxy.protocols.wire import CLIENT, SERVER, Frame
from rtproxy.store import Store
from rtproxy.tui.app import make_app
from rtproxy.tui.payload import render_payload
from rtproxy.tui.widgets.event_detail import highlight
from tests.conftest import rtproxy_exe

IDS = ["i1", "i2", "r1", "r2", "c1"]
#: Fields the catalogue's events carry, and what they hold in a well-formed event.
FIELDS = {
    "event_id": st.sampled_from(["e1", "e2"]),
    "item_id": st.sampled_from(IDS),
    "response_id": st.sampled_from(IDS),
    "previous_item_id": st.sampled_from([*IDS, None, "root"]),
    "output_index": st.integers(0, 3),
    "content_index": st.integers(0, 3),
    "delta": st.sampled_from(["hi", "AAAA", '{"a"']),
    "text": st.just("hello"),
    "transcript": st.just("hello"),
    "arguments": st.just('{"x": 1}'),
    "name": st.just("f"),
    "call_id": st.just("c1"),
    "audio": st.just("AAAAAAAA"),
    "audio_start_ms": st.integers(0, 1000),
    "audio_end_ms": st.integers(0, 1000),
}
KEYS = [*FIELDS, "item", "response", "part", "session", "error", "status", "usage", "status_details", "output"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()  # json.dumps writes any int; orjson reads the ones past 64 bits as floats
    | st.sampled_from([0, -1, 2**63 - 1, 10**9, 300_000, 1e308, -1e308, 0.5])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(IDS)
)


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(keys) | st.text(max_size=5), inner, max_size=5)
        ),
        max_leaves=12,
    )


ANY = json_values(KEYS)
#: A value of the shape the wire uses for each object-valued field (so the handlers get past their first check).
OBJECTS = {
    "item": st.fixed_dictionaries(
        {"id": st.sampled_from(IDS)},
        optional={
            "type": st.sampled_from(["message", "function_call", "function_call_output", "mcp_call"]) | ANY,
            "role": st.sampled_from(["user", "assistant"]) | ANY,
            "content": st.lists(st.dictionaries(st.sampled_from(["type", "text", "transcript", "audio"]), ANY)) | ANY,
            "call_id": st.just("c1") | ANY,
            "output": ANY,
            "arguments": ANY,
            "status": ANY,
        },
    ),
    "response": st.fixed_dictionaries(
        {"id": st.sampled_from(IDS)},
        optional={
            "status": st.sampled_from(["completed", "failed", "cancelled"]) | ANY,
            "status_details": st.fixed_dictionaries({}, optional={"error": ANY, "reason": ANY, "type": ANY}) | ANY,
            "usage": st.fixed_dictionaries(
                {}, optional={"total_tokens": ANY, "input_tokens": ANY, "output_tokens": ANY}
            )
            | ANY,
            "output": st.lists(ANY, max_size=3) | ANY,
            "output_audio_format": ANY,
            "audio": ANY,
        },
    ),
    "session": st.fixed_dictionaries(
        {},
        optional={
            "model": ANY,
            "audio": st.fixed_dictionaries(
                {}, optional={"input": st.fixed_dictionaries({"format": ANY}), "output": ANY}
            )
            | ANY,
            "input_audio_format": ANY,
            "output_audio_format": ANY,
        },
    ),
    "error": st.fixed_dictionaries({}, optional={"message": ANY, "code": ANY, "type": ANY, "event_id": ANY}) | ANY,
    "part": st.dictionaries(st.sampled_from(["type", "text", "transcript"]), ANY) | ANY,
}


@st.composite
def events(draw: st.DrawFn) -> tuple[bool, Any]:
    """(from the client, event): a catalogue type, fields well-formed, absent or anything at all."""
    client = draw(st.booleans())
    kind = draw(st.sampled_from(sorted(CLIENT_EVENTS if client else SERVER_EVENTS)))
    event: dict[str, Any] = {"type": kind}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=7, unique=True)):
        good = FIELDS[key] if key in FIELDS else OBJECTS[key] if key in OBJECTS else ANY
        event[key] = draw(good | ANY)
    return client, event


def deep(n: int) -> str:
    """JSON text of a value nested n lists deep (kept as text: hypothesis cannot print it as a value)."""
    return "[" * n + '"x"' + "]" * n


#: Shapes that crashed a view once (each kept as an example of the property).
KNOWN = [
    (False, {"type": "response.created", "response": {"id": "r1", "status": "in_progress"}}),
    (False, {"type": "response.output_item.added", "response_id": "r1", "item": {"id": "i1", "type": "message"}}),
    (
        False,
        {"type": "response.done", "response": {"id": "r1", "status": "failed", "status_details": {"error": "boom"}}},
    ),
    (False, {"type": "response.output_text.delta", "item_id": "i1", "content_index": 10**9, "delta": "x"}),
    (
        False,
        {"type": "response.done", "response": {"id": "r2", "usage": {"total_tokens": "many", "input_tokens": [1]}}},
    ),
    (False, '{"type": "response.done", "response": {"id": "r2", "status_details": {"reason": %s}}}' % deep(300)),
    (False, '{"type": "error", "error": {"message": %s, "code": ["x", "y"]}}' % deep(300)),
    (False, '{"type": "conversation.item.added", "item": {"id": "i1", "type": %s}}' % deep(300)),
    (True, '{"type": "response.create", "response": %s}' % deep(300)),
    (True, '{"type": "session.update", "session": %s}' % deep(1000)),
    (True, {"event_id": "e1"}),
    (
        False,
        {
            "type": "response.output_item.done",
            "response_id": "r1",
            "item": {"id": "c2", "type": "function_call", "call_id": "c1", "name": "f", "arguments": deep(300)},
        },
    ),
    (
        False,
        {
            "type": "conversation.item.added",
            "item": {"id": "c3", "type": "function_call_output", "call_id": "c1", "output": deep(1000)},
        },
    ),
    (False, {"type": "conversation.item.truncated", "item_id": "i1", "audio_end_ms": 1e308}),
]


def frames_of(evs: list[tuple[bool, Any]]) -> list[Frame]:
    out = []
    for seq, (client, event) in enumerate(evs):
        text = json.dumps(event) if not isinstance(event, str | bytes) else event
        out.append(Frame(seq, seq * 0.01, CLIENT if client else SERVER, text))
    return out


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _has_id(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("id"), str)


#: What each handled event needs to be usable (canonical type -> test of the event), as the reducer reads it.
DELTAS = ("response.output_text.delta", "response.output_audio_transcript.delta", "response.output_audio.delta")
NEEDS: dict[str, Any] = {
    **{k: lambda e: type(e.get("delta")) is str and _index_ok(e) for k in DELTAS},
    "response.function_call_arguments.delta": lambda e: type(e.get("delta")) is str,
    "response.output_text.done": lambda e: isinstance(e.get("text"), str) and _index_ok(e),
    "response.output_audio_transcript.done": lambda e: isinstance(e.get("transcript"), str) and _index_ok(e),
    "response.content_part.added": lambda e: isinstance(e.get("part"), dict) and _index_ok(e),
    "response.content_part.done": lambda e: isinstance(e.get("part"), dict) and _index_ok(e),
    "response.function_call_arguments.done": lambda e: isinstance(e.get("arguments"), str),
    "response.created": lambda e: _has_id(e.get("response")),
    "response.done": lambda e: _has_id(e.get("response")),
    "conversation.item.added": lambda e: _has_id(e.get("item")),
    "conversation.item.created": lambda e: _has_id(e.get("item")),
    "conversation.item.done": lambda e: _has_id(e.get("item")),
    "response.output_item.added": lambda e: _has_id(e.get("item")) and _index_ok(e, "output_index"),
    "response.output_item.done": lambda e: _has_id(e.get("item")) and _index_ok(e, "output_index"),
    "conversation.item.deleted": lambda e: isinstance(e.get("item_id"), str),
    "session.created": lambda e: isinstance(e.get("session"), dict),
    "session.updated": lambda e: isinstance(e.get("session"), dict),
    "error": lambda e: isinstance(e.get("error"), dict),
    "input_audio_buffer.speech_started": lambda e: isinstance(e.get("item_id"), str) and _ms_ok(e, "audio_start_ms"),
    "input_audio_buffer.speech_stopped": lambda e: isinstance(e.get("item_id"), str) and _ms_ok(e, "audio_end_ms"),
}
CLIENT_NEEDS: dict[str, Any] = {
    "input_audio_buffer.append": lambda e: isinstance(e.get("audio"), str),
    "session.update": lambda e: isinstance(e.get("session"), dict),
}


def _index_ok(event: dict[str, Any], key: str = "content_index") -> bool:
    value = event.get(key)
    return value is None or (type(value) is int and 0 <= value < MAX_PARTS)


def _ms_ok(event: dict[str, Any], key: str) -> bool:
    value = event.get(key)
    return value is None or (_is(value, int | float) and 0 <= value <= MAX_AUDIO_MS)


def unusable(client: bool, event: dict[str, Any]) -> bool:
    """Whether the reducer cannot use an event (so it must have recorded an anomaly for it)."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return False
    needs = (CLIENT_NEEDS if client else NEEDS).get(canonical_type(kind))
    return needs is not None and not needs(event)


SESSION = {"id": "20260101-000000-hostil", "model": "gpt-realtime", "status": "closed", "dialect": None}
sessions = st.lists(events() | st.tuples(st.booleans(), st.sampled_from(["not json", "[1]", b"\x00\x01"])), max_size=25)


def check_views(evs: list[tuple[bool, Any]], other: list[tuple[bool, Any]]) -> Conversation:
    """Reduce, render every text view and diff; assert bounded output and anomalies for what was unusable."""
    frames, frames_b = frames_of(evs), frames_of(other)
    size_in = sum(len(f.data) for f in frames) + 1
    conv = assemble(frames, session=dict(SESSION))
    model = orjson.dumps(conv.to_json(), option=orjson.OPT_NON_STR_KEYS)
    text = "\n".join(render.conversation(conv, dict(SESSION), color=True))
    events_text = "\n".join(render.timeline(frames, color=True))
    result = diff_frames(("a", dict(SESSION), frames), ("b", dict(SESSION), frames_b))
    diff_text = result.format()
    diff_json = orjson.dumps(result.to_json(), option=orjson.OPT_NON_STR_KEYS)
    bound = 50 * size_in + 20_000
    for out in (model, text, events_text, diff_text, diff_json):
        assert len(out) <= bound, (len(out), size_in)
    for item in conv.items:
        assert len(item.parts) <= MAX_PARTS
    for r in conv.responses:
        assert len(r.output_item_ids) <= MAX_OUTPUT_ITEMS
    for frame in frames:  # the TUI's detail pane
        highlight(*render_payload(frame.data, frame.direction, (conv.input_format, conv.output_format)))
    flagged = {a.seq for a in conv.anomalies}
    for frame, (client, event) in zip(frames, evs, strict=True):
        if isinstance(event, dict) and unusable(client, event):
            assert frame.seq in flagged, (frame.seq, event, conv.anomalies)
    return conv


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sessions, sessions)
@example(KNOWN, KNOWN[:5])
def test_every_text_view_survives_any_event_shapes(evs: list[tuple[bool, Any]], other: list[tuple[bool, Any]]) -> None:
    """Reducer, show, show --events, show --json and diff never raise on any field shapes, and stay bounded."""
    check_views(evs, other)


def test_huge_indices_are_cheap_and_flagged() -> None:
    """The 300000 and 10**9 content_index deltas of the issue reduce to anomalies, with no parts made."""
    evs = [
        (False, {"type": "conversation.item.added", "item": {"id": "i1", "type": "message", "content": []}}),
        (False, {"type": "response.output_text.delta", "item_id": "i1", "content_index": 300_000, "delta": "x"}),
        (False, {"type": "response.output_audio.delta", "item_id": "i1", "content_index": 10**9, "delta": "AAAA"}),
    ]
    conv = check_views(evs, evs)
    assert [(a.seq, a.kind) for a in conv.anomalies] == [(1, "bad_index"), (2, "bad_index")]
    assert conv.items[0].parts == []


# --- the TUI -------------------------------------------------------------------------------------


def build_db(path: Path, sessions: list[list[tuple[bool, Any]]]) -> list[str]:
    """A real SQLite file holding one session per event list; their ids."""
    sids = []
    with Store(path, create=True) as store:
        for n, evs in enumerate(sessions):
            frames = frames_of(evs)
            meta = dict(
                SESSION,
                id=f"20260101-0000{n:02d}-hostil",
                started_at=f"2026-01-01T00:00:{n:02d}Z",
                client_events=sum(f.direction is CLIENT for f in frames),
                server_events=sum(f.direction is SERVER for f in frames),
                duration=0.5,
            )
            sids.append(store.import_session(meta, frames))
    return sids


async def walk_sessions(db: Path, sids: list[str]) -> None:
    """From the sessions table, open each session's screen, wait for it to load, visit every tab and event."""
    from rtproxy.tui.screens.session import SessionScreen
    from rtproxy.tui.screens.sessions import SessionsScreen
    from rtproxy.tui.widgets.event_list import EventList

    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        for sid in sids:
            deadline = time.monotonic() + 15
            while not isinstance(app.screen, SessionsScreen):
                assert time.monotonic() < deadline, "the sessions screen did not show"
                await pilot.pause(0.02)
            screen = SessionScreen(sid)
            await app.push_screen(screen)
            while not (screen.index_complete and screen.conversation_complete):
                assert time.monotonic() < deadline, f"session {sid} did not load"
                await pilot.pause(0.02)
            await pilot.press("2")
            event_list = screen.query_one(EventList)
            lines = len(event_list.view)
            for line in sorted({0, lines // 3, 2 * lines // 3, lines - 1}):
                event_list.cursor = line  # the detail pane renders that event (every payload: check_views)
                await pilot.pause()
            await pilot.press("3")
            await pilot.pause()
            assert app.screen is screen and app.is_running
            assert "cannot read" not in str(screen.query_one("#session-title").render())
            app.pop_screen()


def test_tui_opens_a_session_of_known_hostile_shapes(tmp_path: Path) -> None:
    """The sessions table and a session screen show every tab and event of a session holding shapes that crashed it."""
    db = tmp_path / "tui.db"
    asyncio.run(walk_sessions(db, build_db(db, [KNOWN])))


@pytest.mark.slow
@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(many=st.lists(sessions, min_size=2, max_size=2))
def test_tui_survives_any_event_shapes(tmp_path: Path, many: list[list[tuple[bool, Any]]]) -> None:
    """The TUI's sessions table and session screens (conversation, events, detail pane, timeline) take any shapes."""
    db = tmp_path / f"tui-{time.monotonic_ns()}.db"
    asyncio.run(walk_sessions(db, build_db(db, many)))


# --- the command line, end to end ------------------------------------------------------------------

#: Address space a CLI subprocess may use: the 10**9 content_index once asked for far more.
CLI_MEMORY = 1 << 30


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `rtproxy` console script with its memory capped."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CLI_MEMORY, CLI_MEMORY))

    return subprocess.run(
        [*rtproxy_exe(), *args], capture_output=True, text=True, timeout=60, preexec_fn=cap, env={**os.environ}
    )


def test_show_export_and_diff_survive_the_issues_events(tmp_path: Path) -> None:
    """show (all three forms), export (JSONL and audio) and diff run on the issue's events: no traceback,
    bounded output, the huge indices reported as anomalies."""
    issue = [
        (False, {"type": "conversation.item.added", "item": {"id": "i1", "type": "message", "content": []}}),
        (False, {"type": "response.output_text.delta", "item_id": "i1", "content_index": 300_000, "delta": "x"}),
        (False, {"type": "response.output_audio.delta", "item_id": "i1", "content_index": 10**9, "delta": "AAAA"}),
        *KNOWN,
    ]
    db = tmp_path / "hostile.db"
    a, b = build_db(db, [issue, KNOWN[3:]])
    size_in = sum(len(f.data) for f in frames_of(issue))
    runs = {
        "show": cli("show", a, "--db", str(db)),
        "events": cli("show", a, "--events", "--db", str(db)),
        "json": cli("show", a, "--json", "--db", str(db)),
        "export": cli("export", a, "-o", str(tmp_path / "a.jsonl"), "--db", str(db)),
        "audio": cli("export", a, "--audio", str(tmp_path / "wav"), "--db", str(db)),
        "diff": cli("diff", f"{db}#{a}", f"{db}#{b}"),
        "diff --json": cli("diff", f"{db}#{a}", f"{db}#{b}", "--json"),
    }
    for name, r in runs.items():
        assert "Traceback" not in r.stderr and r.returncode == (1 if name.startswith("diff") else 0), (name, r.stderr)
        assert len(r.stdout) <= 50 * size_in, (name, len(r.stdout))
    model = orjson.loads(runs["json"].stdout)
    assert {(1, "bad_index"), (2, "bad_index")} <= {(x["seq"], x["kind"]) for x in model["anomalies"]}
    assert model["items"][0]["parts"] == []
    assert "anomalies" in runs["show"].stdout and "(boom)" in runs["show"].stdout
    assert orjson.loads(runs["diff --json"].stdout)["same"] is False


def test_a_huge_function_call_renders_in_bounded_lines() -> None:
    """A function call whose arguments are a megabyte on one line (or JSON nested past orjson's limit)
    renders in the conversation tab as a bounded number of characters."""
    from rich.console import Console

    from rtproxy.tui.views import ConversationView, ItemView
    from rtproxy.tui.widgets.item_render import MAX_JSON_CHARS, item_lines

    for arguments in ("x" * 1_000_000, '{"a": "' + "y" * 1_000_000 + '"}', deep(1000)):
        item = ItemView(
            "c1", "function_call", None, None, "", "", "f", "c1", arguments, deep(300), 0.0, (), None, None, 0, 1, 0.0
        )
        lines = item_lines(item, ConversationView(), Console(width=100), 100)
        assert sum(len(line.plain) for line in lines) <= 3 * MAX_JSON_CHARS


# --- GPT-Live: the Live reducer and its views --------------------------------------------------------

LIVE_IDS = ["del_1", "del_2", "c1", "e1"]
LIVE_FIELDS = {
    "event_id": st.sampled_from(LIVE_IDS),
    "client_event_id": st.sampled_from(LIVE_IDS),
    "delegation_id": st.sampled_from([*LIVE_IDS, None]),
    "delta": st.sampled_from(["hi ", "AAAA", "there"]),
    "audio": st.just("AAAAAAAA"),
    "content": st.just("be brief"),
    "start_ms": st.integers(0, 5000),
    "end_ms": st.integers(0, 5000),
    "offset_ms": st.integers(0, 5000),
    "reason": st.sampled_from(["close_requested", "expired"]),
}
LIVE_KEYS = [*LIVE_FIELDS, "delegation", "event", "usage", "session", "error", "item", "code", "message"]
LIVE_ANY = json_values(LIVE_KEYS + ["type", "id", "response", "item_id", "output_index"])
NESTED_TYPES = [
    "response.created",
    "response.completed",
    "response.failed",
    "response.output_item.added",
    "response.output_item.done",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.reasoning_summary_text.delta",
    "error",
]
LIVE_OBJECTS = {
    "delegation": st.fixed_dictionaries(
        {"id": st.sampled_from(LIVE_IDS)},
        optional={"target": st.sampled_from(["client", "responses", "decisions"]) | LIVE_ANY, "response_id": LIVE_ANY},
    ),
    "event": st.fixed_dictionaries(
        {"type": st.sampled_from(NESTED_TYPES) | LIVE_ANY},
        optional={
            "response": st.fixed_dictionaries(
                {"id": st.sampled_from(["r1", "r2"])},
                optional={"status": LIVE_ANY, "usage": LIVE_ANY, "output": st.lists(LIVE_ANY, max_size=3)},
            )
            | LIVE_ANY,
            "item": st.fixed_dictionaries(
                {"id": st.sampled_from(["fc1", "m1"])},
                optional={"type": st.sampled_from(["function_call", "message"]) | LIVE_ANY, "call_id": LIVE_ANY},
            )
            | LIVE_ANY,
            "item_id": st.sampled_from(["fc1", "m1"]) | LIVE_ANY,
            "delta": st.just("x") | LIVE_ANY,
            "arguments": LIVE_ANY,
            "decision": st.fixed_dictionaries({}, optional={"answers": st.lists(LIVE_ANY, max_size=3)}) | LIVE_ANY,
        },
    ),
    "usage": st.fixed_dictionaries({}, optional={"seconds": LIVE_ANY, "active_seconds": LIVE_ANY}) | LIVE_ANY,
    "session": st.fixed_dictionaries(
        {}, optional={"model": LIVE_ANY, "id": LIVE_ANY, "audio": st.fixed_dictionaries({"format": LIVE_ANY})}
    )
    | LIVE_ANY,
    "item": st.fixed_dictionaries({"call_id": st.just("c1") | LIVE_ANY}, optional={"output": LIVE_ANY}) | LIVE_ANY,
}


@st.composite
def live_events(draw: st.DrawFn) -> tuple[bool, Any]:
    """(from the client, event): a Live catalogue type, fields well-formed, absent or anything at all."""
    from rtproxy.protocols import live

    client = draw(st.booleans())
    kind = draw(st.sampled_from(sorted(live.CLIENT_EVENTS if client else live.SERVER_EVENTS)))
    event: dict[str, Any] = {"type": kind}
    for key in draw(st.lists(st.sampled_from(LIVE_KEYS), max_size=7, unique=True)):
        good = LIVE_FIELDS[key] if key in LIVE_FIELDS else LIVE_OBJECTS[key] if key in LIVE_OBJECTS else LIVE_ANY
        event[key] = draw(good | LIVE_ANY)
    return client, event


LIVE_SESSION = {"id": "20260101-000000-hostlv", "model": "gpt-live-1", "status": "closed", "api": "live"}
live_sessions = st.lists(
    live_events() | st.tuples(st.booleans(), st.sampled_from(["not json", "[1]", b"\x00\x01"])), max_size=25
)
LIVE_KNOWN = [
    (False, {"type": "session.delegation.created", "delegation": {"id": "del_1", "target": "responses"}}),
    (False, {"type": "response.event", "delegation_id": "del_1", "event": {"type": "response.created"}}),
    (False, {"type": "response.event", "delegation_id": "del_1", "event": {"type": "response.output_text.delta"}}),
    (False, {"type": "response.event", "delegation_id": "del_1", "event": {"type": "error", "code": deep(300)}}),
    (False, {"type": "session.output_transcript.delta", "delta": "x", "start_ms": 1e308, "end_ms": 0}),
    (False, {"type": "session.input_transcript.delta", "delta": "hi", "start_ms": 5, "end_ms": 1}),
    (False, {"type": "session.started", "session": {"audio": {"format": {"type": "audio/pcm", "rate": 10**9}}}}),
    (False, {"type": "decision.event", "delegation_id": "del_1", "event": {"decision": {"answers": [deep(300)]}}}),
    (False, {"type": "session.closed", "usage": {"seconds": 10**30}, "reason": deep(300)}),
    (True, {"type": "response.item.create", "item": {"call_id": "c1", "output": deep(1000)}}),
    (True, {"type": "session.commentary.append", "content": "x", "delegation_id": ["del_1"]}),
    (False, {"type": "session.output_audio.delta", "delta": "AAAA"}),
]
#: What each Live event needs to be usable, as the reducer reads it (else an anomaly is due).
LIVE_NEEDS: dict[str, Any] = {
    "session.output_audio.delta": lambda e: isinstance(e.get("delta"), str),
    "session.input_audio.append": lambda e: isinstance(e.get("audio"), str),
    "session.input_transcript.delta": lambda e: isinstance(e.get("delta"), str) and _span_ok(e),
    "session.output_transcript.delta": lambda e: isinstance(e.get("delta"), str) and _span_ok(e),
    "session.delegation.created": lambda e: _has_id(e.get("delegation")),
    "session.usage.updated": lambda e: isinstance(e.get("usage"), dict),
    "error": lambda e: isinstance(e.get("error"), dict),
}


def _span_ok(event: dict[str, Any]) -> bool:
    return all(_is(event.get(k), int | float) and 0 <= event[k] <= MAX_AUDIO_MS for k in ("start_ms", "end_ms"))


def check_live_views(evs: list[tuple[bool, Any]]) -> None:
    """The Live reducer, show, show --json, show --events, the Summary and the TUI snapshot on any shapes."""
    from rtproxy.cli.render_live import live_conversation
    from rtproxy.conversation import audio
    from rtproxy.conversation.live import assemble_live
    from rtproxy.conversation.live_summary import summary_of
    from rtproxy.tui.live_views import LiveViewBuilder

    frames = frames_of(evs)
    size_in = sum(len(f.data) for f in frames) + 1
    live = assemble_live(frames, dict(LIVE_SESSION))
    model = orjson.dumps(live.to_json(), option=orjson.OPT_NON_STR_KEYS)
    text = "\n".join(live_conversation(live, dict(LIVE_SESSION), color=True))
    events_text = "\n".join(render.timeline(frames, color=True, api="live"))
    summary = summary_of(live, dict(LIVE_SESSION))
    view = LiveViewBuilder().build(live)
    left, right, rate = audio.live_tracks(live)
    audio.stereo_mix(left, right, rate)
    bound = 50 * size_in + 20_000
    for out in (model, text, events_text):
        assert len(out) <= bound, (len(out), size_in)
    assert len(summary.turns) <= len(frames) and len(view.items) <= len(frames)
    flagged = {a.seq for a in live.anomalies}
    for frame, (_client, event) in zip(frames, evs, strict=True):
        needs = LIVE_NEEDS.get(event.get("type")) if isinstance(event, dict) else None
        if needs is not None and not needs(event):
            assert frame.seq in flagged, (frame.seq, event, live.anomalies)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(live_sessions)
@example(LIVE_KNOWN)
def test_every_live_view_survives_any_event_shapes(evs: list[tuple[bool, Any]]) -> None:
    """The Live reducer and every view of it (show, --json, --events, Summary, TUI snapshot, audio) never raise
    on any field shapes, stay bounded, and flag what they could not use."""
    check_live_views(evs)


def test_tui_opens_a_live_session_of_hostile_shapes(tmp_path: Path) -> None:
    """A Live session of hostile shapes opens in the TUI: every tab and event shows, no failure."""
    db = tmp_path / "tui-live.db"
    with Store(db, create=True) as store:
        frames = frames_of(LIVE_KNOWN)
        meta = dict(
            LIVE_SESSION,
            started_at="2026-01-01T00:00:00Z",
            duration=0.5,
            client_events=sum(f.direction is CLIENT for f in frames),
            server_events=sum(f.direction is SERVER for f in frames),
        )
        sid = store.import_session(meta, frames)
    asyncio.run(walk_sessions(db, [sid]))
