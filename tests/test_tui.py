"""The TUI driven headless through Textual's pilot, on real SQLite files built in the test."""

from __future__ import annotations

import base64
import math
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame
from rtproxy.store import Recorder, Store
from rtproxy.tui.app import RtproxyApp, make_app
from rtproxy.tui.index import EventFilter, EventIndex
from rtproxy.tui.payload import render_payload

RATE = 24000
SIZE = (120, 40)


# --- fixture data: a small GA voice + text + function-call session, made by hand -------


def tone(ms: int, freq: float = 330.0) -> bytes:
    n = RATE * ms // 1000
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(math.pi * i / n) * math.sin(2 * math.pi * freq * i / RATE)))
        for i in range(n)
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def session_events() -> list[tuple[Direction, float, dict[str, Any]]]:
    """(direction, t, event) of a short GA session: a spoken turn, a text turn with a function call."""
    ev: list[tuple[Direction, float, dict[str, Any]]] = []
    t = 0.0

    def add(direction: Direction, dt: float, event: dict[str, Any]) -> None:
        nonlocal t
        t = round(t + dt, 3)
        ev.append((direction, t, event))

    config = {
        "type": "realtime",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}},
        },
    }
    add(SERVER, 0.05, {"type": "session.created", "event_id": "ev_001", "session": {"id": "sess_1", **config}})
    add(
        CLIENT,
        0.01,
        {"type": "session.update", "event_id": "cl_001", "session": {"type": "realtime", "instructions": "Be brief."}},
    )
    add(SERVER, 0.02, {"type": "session.updated", "event_id": "ev_002", "session": {"id": "sess_1", **config}})
    # turn 1: the user speaks (server VAD), the assistant answers with audio
    speech = tone(600, 220.0)
    silence = bytes(2 * RATE // 10)
    mic = silence + speech + silence
    chunk = 2 * RATE // 50  # 20 ms
    for n, off in enumerate(range(0, len(mic), chunk)):
        add(
            CLIENT,
            0.02,
            {"type": "input_audio_buffer.append", "event_id": f"cl_a{n:03d}", "audio": b64(mic[off : off + chunk])},
        )
        if n == 5:
            add(
                SERVER,
                0.001,
                {
                    "type": "input_audio_buffer.speech_started",
                    "event_id": "ev_010",
                    "audio_start_ms": 100,
                    "item_id": "item_user1",
                },
            )
    add(
        SERVER,
        0.01,
        {
            "type": "input_audio_buffer.speech_stopped",
            "event_id": "ev_011",
            "audio_end_ms": 700,
            "item_id": "item_user1",
        },
    )
    add(
        SERVER,
        0.01,
        {
            "type": "input_audio_buffer.committed",
            "event_id": "ev_012",
            "previous_item_id": None,
            "item_id": "item_user1",
        },
    )
    add(
        SERVER,
        0.01,
        {
            "type": "conversation.item.added",
            "event_id": "ev_013",
            "previous_item_id": None,
            "item": {
                "id": "item_user1",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        },
    )
    add(
        SERVER,
        0.01,
        {
            "type": "response.created",
            "event_id": "ev_014",
            "response": {"id": "resp_1", "object": "realtime.response", "status": "in_progress", "output": []},
        },
    )
    add(
        SERVER,
        0.05,
        {
            "type": "response.output_item.added",
            "event_id": "ev_015",
            "response_id": "resp_1",
            "output_index": 0,
            "item": {
                "id": "item_asst1",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "conversation.item.added",
            "event_id": "ev_016",
            "previous_item_id": "item_user1",
            "item": {
                "id": "item_asst1",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "response.content_part.added",
            "event_id": "ev_017",
            "response_id": "resp_1",
            "item_id": "item_asst1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "audio", "transcript": ""},
        },
    )
    add(
        SERVER,
        0.01,
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": "ev_018",
            "item_id": "item_user1",
            "content_index": 0,
            "transcript": "What is the weather in Paris?",
        },
    )
    answer = tone(900, 440.0)
    words = ["It ", "is ", "mild ", "and ", "sunny ", "in ", "Paris."]
    step = len(answer) // len(words) // 2 * 2
    for n, word in enumerate(words):
        add(
            SERVER,
            0.02,
            {
                "type": "response.output_audio_transcript.delta",
                "event_id": f"ev_t{n:02d}",
                "response_id": "resp_1",
                "item_id": "item_asst1",
                "output_index": 0,
                "content_index": 0,
                "delta": word,
            },
        )
        add(
            SERVER,
            0.001,
            {
                "type": "response.output_audio.delta",
                "event_id": f"ev_d{n:02d}",
                "response_id": "resp_1",
                "item_id": "item_asst1",
                "output_index": 0,
                "content_index": 0,
                "delta": b64(answer[n * step : (n + 1) * step]),
            },
        )
    add(
        SERVER,
        0.01,
        {
            "type": "response.output_audio.done",
            "event_id": "ev_020",
            "response_id": "resp_1",
            "item_id": "item_asst1",
            "output_index": 0,
            "content_index": 0,
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "response.output_audio_transcript.done",
            "event_id": "ev_021",
            "response_id": "resp_1",
            "item_id": "item_asst1",
            "output_index": 0,
            "content_index": 0,
            "transcript": "It is mild and sunny in Paris.",
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "response.output_item.done",
            "event_id": "ev_022",
            "response_id": "resp_1",
            "output_index": 0,
            "item": {
                "id": "item_asst1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_audio", "transcript": "It is mild and sunny in Paris."}],
            },
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "response.done",
            "event_id": "ev_023",
            "response": {
                "id": "resp_1",
                "status": "completed",
                "output": [{"id": "item_asst1"}],
                "usage": {"total_tokens": 150, "input_tokens": 100, "output_tokens": 50},
            },
        },
    )
    # turn 2: typed text; the assistant calls a function, the client answers, the assistant replies in text
    add(
        CLIENT,
        0.5,
        {
            "type": "conversation.item.create",
            "event_id": "cl_100",
            "item": {
                "id": "item_user2",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Book a table for two at 8pm."}],
            },
        },
    )
    add(
        SERVER,
        0.01,
        {
            "type": "conversation.item.added",
            "event_id": "ev_100",
            "previous_item_id": "item_asst1",
            "item": {
                "id": "item_user2",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": "Book a table for two at 8pm."}],
            },
        },
    )
    add(CLIENT, 0.01, {"type": "response.create", "event_id": "cl_101"})
    add(
        SERVER,
        0.12,
        {
            "type": "response.created",
            "event_id": "ev_101",
            "response": {"id": "resp_2", "status": "in_progress", "output": []},
        },
    )
    add(
        SERVER,
        0.01,
        {
            "type": "response.output_item.added",
            "event_id": "ev_102",
            "response_id": "resp_2",
            "output_index": 0,
            "item": {
                "id": "item_call1",
                "type": "function_call",
                "status": "in_progress",
                "name": "book_table",
                "call_id": "call_1",
                "arguments": "",
            },
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "conversation.item.added",
            "event_id": "ev_103",
            "previous_item_id": "item_user2",
            "item": {
                "id": "item_call1",
                "type": "function_call",
                "status": "in_progress",
                "name": "book_table",
                "call_id": "call_1",
                "arguments": "",
            },
        },
    )
    args = '{"people": 2, "time": "20:00"}'
    for n in range(0, len(args), 8):
        add(
            SERVER,
            0.01,
            {
                "type": "response.function_call_arguments.delta",
                "event_id": f"ev_f{n:02d}",
                "response_id": "resp_2",
                "item_id": "item_call1",
                "output_index": 0,
                "call_id": "call_1",
                "delta": args[n : n + 8],
            },
        )
    add(
        SERVER,
        0.01,
        {
            "type": "response.function_call_arguments.done",
            "event_id": "ev_110",
            "response_id": "resp_2",
            "item_id": "item_call1",
            "output_index": 0,
            "call_id": "call_1",
            "arguments": args,
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "response.output_item.done",
            "event_id": "ev_111",
            "response_id": "resp_2",
            "output_index": 0,
            "item": {
                "id": "item_call1",
                "type": "function_call",
                "status": "completed",
                "name": "book_table",
                "call_id": "call_1",
                "arguments": args,
            },
        },
    )
    add(
        SERVER,
        0.001,
        {
            "type": "response.done",
            "event_id": "ev_112",
            "response": {
                "id": "resp_2",
                "status": "completed",
                "output": [{"id": "item_call1"}],
                "usage": {"total_tokens": 80, "input_tokens": 70, "output_tokens": 10},
            },
        },
    )
    add(
        CLIENT,
        0.2,
        {
            "type": "conversation.item.create",
            "event_id": "cl_102",
            "item": {
                "id": "item_out1",
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"booked": true, "table": 12}',
            },
        },
    )
    add(
        SERVER,
        0.01,
        {
            "type": "conversation.item.added",
            "event_id": "ev_120",
            "previous_item_id": "item_call1",
            "item": {
                "id": "item_out1",
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"booked": true, "table": 12}',
            },
        },
    )
    return ev


def session_frames() -> list[Frame]:
    return [Frame(seq, t, d, orjson.dumps(e).decode()) for seq, (d, t, e) in enumerate(session_events())]


SESSION_META = {
    "id": "20260101-120000-abc123",
    "started_at": "2026-01-01T12:00:00.000Z",
    "ended_at": "2026-01-01T12:00:05.000Z",
    "model": "gpt-realtime",
    "dialect": "ga",
    "status": "closed",
    "label": "weather demo",
    "path": "/v1/realtime",
}


def build_db(path: Path, *, extra_sessions: int = 1) -> str:
    """A database with the hand-made session (and a few older, empty ones); the session's id."""
    frames = session_frames()
    with Store(path, create=True) as store:
        for n in range(extra_sessions):
            store.import_session(
                {
                    "id": f"20251231-0{n}0000-old{n:03d}",
                    "started_at": f"2025-12-31T0{n}:00:00.000Z",
                    "model": "gpt-4o-realtime-preview",
                    "dialect": "beta",
                    "status": "closed",
                    "label": f"old {n}",
                },
                [Frame(0, 0.0, SERVER, '{"type":"session.created","event_id":"e0","session":{"id":"s"}}')],
            )
        meta = dict(
            SESSION_META,
            client_events=sum(f.direction is CLIENT for f in frames),
            server_events=sum(f.direction is SERVER for f in frames),
            duration=frames[-1].t,
        )
        return store.import_session(meta, frames)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tui.db"
    build_db(path)
    return path


async def wait_until(pilot: Any, condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Let the app run until a condition holds (bounded in time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)


def session_screen(app: RtproxyApp) -> Any:
    from rtproxy.tui.screens.session import SessionScreen

    screen = app.screen
    assert isinstance(screen, SessionScreen), screen
    return screen


async def opened(pilot: Any) -> Any:
    """The session screen, once its index and conversation are loaded."""
    await wait_until(pilot, lambda: type(pilot.app.screen).__name__ == "SessionScreen", what="session screen")
    screen = session_screen(pilot.app)
    await wait_until(pilot, lambda: screen.index_complete and screen.conversation_complete, what="session loaded")
    await pilot.pause()
    return screen


# --- the sessions screen ------------------------------------------------------------


async def test_sessions_newest_first_and_enter_opens(db: Path) -> None:
    """The sessions table lists sessions newest first, and Enter opens the highlighted one."""
    from textual.widgets import DataTable

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#sessions-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, what="two sessions")
        ids = [str(k.value) for k in table.rows]
        assert ids == [SESSION_META["id"], "20251231-000000-old000"]
        await pilot.press("enter")
        screen = await opened(pilot)
        assert screen.session_id == SESSION_META["id"]
        assert [i.id for i in screen.conversation.items][:2] == ["item_user1", "item_asst1"]


def lines_of(widget: Any) -> list[str]:
    """What a Line API widget shows, top to bottom, as plain text (every line, not just the visible ones)."""
    height = widget.virtual_size.height
    saved = widget.scroll_offset.y
    out = []
    for y in range(height):
        widget.scroll_to(y=y, animate=False, immediate=True)
        out.append(widget.render_line(y - widget.scroll_offset.y).text.rstrip())
    widget.scroll_to(y=saved, animate=False, immediate=True)
    return out


async def test_sessions_filter_narrows_the_table(db: Path) -> None:
    """Typing in the filter box keeps only the sessions whose id, model, status or label match."""
    from textual.widgets import DataTable

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#sessions-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, what="two sessions")
        await pilot.press("slash", *"weather")
        await wait_until(pilot, lambda: table.row_count == 1, what="filtered")
        assert [str(k.value) for k in table.rows] == [SESSION_META["id"]]
        await pilot.press("escape")
        await wait_until(pilot, lambda: table.row_count == 2, what="filter cleared")


async def test_delete_asks_first(db: Path) -> None:
    """`d` asks for confirmation; `n` keeps the session, `y` deletes it from the database."""
    from textual.widgets import DataTable

    from rtproxy.tui.screens.confirm import ConfirmScreen

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#sessions-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, what="two sessions")
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm dialog")
        await pilot.press("n")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="dialog closed")
        assert table.row_count == 2
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm dialog")
        await pilot.press("y")
        await wait_until(pilot, lambda: table.row_count == 1, what="row deleted")
    with Store(db) as store:
        assert [s["id"] for s in store.sessions()] == ["20251231-000000-old000"]
        assert store.count_events(SESSION_META["id"]) == 0


async def test_sessions_table_follows_the_recorder(tmp_path: Path) -> None:
    """A session that a Recorder starts while the app runs appears, marked live, then closed."""
    from textual.widgets import DataTable

    db = tmp_path / "live.db"
    build_db(db, extra_sessions=0)
    recorder = Recorder(str(db))
    recorder.start()
    try:
        app = make_app(db, poll_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#sessions-table", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1, what="one session")
            sid = recorder.open_session(model="gpt-realtime", path="/v1/realtime", started_at="2030-01-01T00:00:00Z")
            recorder.record_frame(sid, 0, 0.0, "server", '{"type":"session.created","event_id":"e1","session":{}}')
            recorder.flush()
            await wait_until(pilot, lambda: table.row_count == 2, what="new session row")
            assert str(table.coordinate_to_cell_key((0, 0)).row_key.value) == sid
            assert "live" in str(table.get_cell(sid, "status"))
            recorder.update_session(sid, status="closed")
            recorder.flush()
            await wait_until(pilot, lambda: "closed" in str(table.get_cell(sid, "status")), what="closed")
    finally:
        recorder.close()


# --- the session screen -------------------------------------------------------------


async def test_conversation_reads_as_chat(db: Path) -> None:
    """The Conversation tab shows transcripts, text, pretty-printed function arguments and
    output, audio with duration and waveform, and per response its status, tokens and latency."""
    from rtproxy.tui.widgets.conversation import ConversationList

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        text = "\n".join(lines_of(screen.query_one(ConversationList)))
    assert "What is the weather in Paris?" in text
    assert "It is mild and sunny in Paris." in text
    assert "Book a table for two at 8pm." in text
    assert "book_table(call_id=call_1)" in text
    assert '"people": 2,' in text and '"time": "20:00"' in text  # indented JSON, one key a line
    assert '"booked": true,' in text
    assert "♪ 0.9 s" in text and "♪ 0.6 s" in text
    assert "█" in text  # a waveform
    assert "resp_1 completed · 150 tokens" in text
    assert "first audio" in text and "resp_2 completed · 80 tokens" in text
    order = [text.index(s) for s in ("weather in Paris", "mild and sunny", "Book a table", "book_table(")]
    assert order == sorted(order)


async def test_events_filters(db: Path) -> None:
    """Type globs (with exclusions), the direction selector, ids and payload search narrow the event list."""
    from textual.widgets import Input

    from rtproxy.tui.index import TYPE
    from rtproxy.tui.widgets.event_list import EventList

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        events = screen.query_one(EventList)

        def shown() -> list[tuple[Any, ...]]:
            return [screen.index.rows[i] for i in events.view.starts]

        await pilot.press("t", *"response.*")
        await wait_until(pilot, lambda: events.view.filter.types == "response.*", what="type filter")
        assert shown() and all(r[TYPE].startswith("response.") for r in shown())
        screen.query_one("#filter-types", Input).value = "response.* -*.delta"  # as if typed on
        await wait_until(pilot, lambda: events.view.filter.types.endswith("-*.delta"), what="exclusion")
        assert shown() and not any(r[TYPE].endswith(".delta") for r in shown())
        screen.query_one("#filter-types", Input).focus()
        await pilot.press("escape")  # leaves the input, not the screen
        assert screen.focused is events
        await pilot.press("x", "D")
        await wait_until(pilot, lambda: events.view.filter.direction == "client", what="client only")
        assert shown() and {r[2] for r in shown()} == {"client"}
        await pilot.press("x", "i")
        screen.query_one("#filter-ids", Input).value = "resp_2"
        await pilot.press("enter")
        await wait_until(pilot, lambda: events.view.filter.ids == "resp_2", what="id filter")
        assert shown() and all("resp_2" in (r[4], r[5]) for r in shown())
        await pilot.press("x", "s")
        screen.query_one("#filter-text", Input).value = "sunny"
        await pilot.press("enter")
        await wait_until(pilot, lambda: events.view.filter.seqs is not None, what="search")
        with Store(db) as store:
            expected = {f.seq for f in store.frames(SESSION_META["id"]) if "sunny" in str(f.data)}
        assert {r[0] for r in screen.index.rows if r[0] in events.view.filter.seqs} == expected
        assert len(expected) >= 2


async def test_delta_runs_collapse_and_open(db: Path) -> None:
    """Runs of appends and deltas are one line each; Enter opens a run, `c` turns collapsing off."""
    from rtproxy.tui.widgets.event_list import EventList

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("2")
        events = screen.query_one(EventList)
        total = len(screen.index)
        collapsed = len(events.view)
        assert collapsed < total
        listing = lines_of(events)
        run_line = next(n for n, line in enumerate(listing) if "input_audio_buffer.append ×" in line)
        count = events.view.counts[run_line]
        assert count > 1 and f"input_audio_buffer.append ×{count}" in listing[run_line]
        events.cursor = run_line
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(events.view) == collapsed + count - 1, what="run opened")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(events.view) == collapsed, what="run closed")
        await pilot.press("c")
        await wait_until(pilot, lambda: len(events.view) == total, what="no collapsing")


async def test_detail_pane_shows_json_without_audio(db: Path) -> None:
    """The selected event's JSON is shown indented, its base64 audio replaced by size and duration."""
    from rtproxy.tui.widgets.event_detail import EventDetail
    from rtproxy.tui.widgets.event_list import EventList

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("2")
        events = screen.query_one(EventList)
        detail = screen.query_one(EventDetail)
        line = next(
            n
            for n, start in enumerate(events.view.starts)
            if screen.index.rows[start][3] == "input_audio_buffer.append"
        )
        events.cursor = line
        await wait_until(pilot, lambda: "input_audio_buffer.append" in detail.text, what="detail loaded")
        assert '"audio": "<base64 audio, 960 bytes, 20 ms>"' in detail.text
        assert '\n  "event_id": "cl_a000",' in detail.text
        events.cursor = 0
        await wait_until(pilot, lambda: "session.created" in detail.text, what="first event")
        assert '"model": "gpt-realtime"' in detail.text


async def test_jump_between_conversation_and_events(db: Path) -> None:
    """Enter on an item shows its events (filtered, cursor on its first); `b` goes back to it; `o` jumps from
    an event to its item."""
    from textual.widgets import TabbedContent

    from rtproxy.tui.index import ITEM_ID, SEQ
    from rtproxy.tui.widgets.conversation import ConversationList
    from rtproxy.tui.widgets.event_list import EventList

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        tabs = screen.query_one(TabbedContent)
        conv = screen.query_one(ConversationList)
        events = screen.query_one(EventList)
        assert conv.move_to_item("item_call1")
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: tabs.active == "events" and events.view.filter.ids == "item_call1", what="events of the item"
        )
        call = screen.conversation.by_id["item_call1"]
        assert events.cursor_seq == call.first_seq
        assert all(screen.index.rows[i][ITEM_ID] == "item_call1" for i in events.view.starts)
        await pilot.press("b")
        await wait_until(pilot, lambda: tabs.active == "conversation", what="back")
        assert conv.cursor_item is not None and conv.cursor_item.id == "item_call1"
        await pilot.press("x")  # clear the filter, pick an event of the first assistant item
        await wait_until(pilot, lambda: events.view.filter.is_empty, what="cleared")
        await pilot.press("2")
        target = next(r for r in screen.index.rows if r[ITEM_ID] == "item_asst1")
        events.move_to_seq(target[SEQ])
        await pilot.press("o")
        await wait_until(pilot, lambda: tabs.active == "conversation", what="to the item")
        assert conv.cursor_item is not None and conv.cursor_item.id == "item_asst1"


async def test_timeline_shows_latency_and_tokens(db: Path) -> None:
    """The Timeline tab has a bar per response with its trigger, first audio, done, tokens, and the total."""
    from textual.widgets import Static

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("3")
        body = str(app.screen.query_one("#timeline-body", Static).render())
    assert "speech_stopped" in body and "response.create" in body
    assert "━" in body
    assert "total: 2 responses, 230 tokens (170 in, 60 out)" in body
    assert "113 ms" in body  # first audio of resp_1: 1.003 + 0.001 - 0.891 s


async def test_export_wavs_and_play(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`w` writes the item's audio as WAV, `W` the conversation as stereo WAV, `p` starts a system player
    with a WAV of the item (here a script standing in for aplay), or says none is there."""
    import wave

    out = tmp_path / "out"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    played = tmp_path / "played.wav"
    fake = bin_dir / "aplay"
    fake.write_text(f'#!/bin/sh\nfor last; do :; done\n{shutil.which("cp")} "$last" {played}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    app = make_app(db, SESSION_META["id"], export_dir=out)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        from rtproxy.tui.widgets.conversation import ConversationList

        assert screen.query_one(ConversationList).move_to_item("item_asst1")
        await pilot.press("w")
        item_wav = out / f"{SESSION_META['id']}-item_asst1.wav"
        await wait_until(pilot, lambda: "wrote" in screen.last_notice, what="item exported")
        asst_start = screen.conversation.by_id["item_asst1"].t_start
        await pilot.press("W")
        conv_wav = out / f"{SESSION_META['id']}-conversation.wav"
        await wait_until(pilot, lambda: "conversation.wav" in screen.last_notice, what="conversation exported")
        await pilot.press("p")
        await wait_until(pilot, lambda: screen.last_notice.startswith("playing"), what="playing")
        for proc in screen._players:
            proc.wait(timeout=10)
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        await pilot.press("p")
        await wait_until(pilot, lambda: "no audio player" in screen.last_notice, what="no player")
    samples = sum(
        len(base64.b64decode(e["delta"])) // 2
        for _d, _t, e in session_events()
        if e["type"] == "response.output_audio.delta"
    )
    with wave.open(str(item_wav)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, RATE, samples)
    with wave.open(str(conv_wav)) as w:
        assert w.getnchannels() == 2  # user left, assistant right, placed at the time they were heard
        assert abs(w.getnframes() - (round(asst_start * RATE) + samples)) <= 1
    with wave.open(str(played)) as w:
        assert w.getnframes() == samples


async def test_live_session_grows_on_screen(tmp_path: Path) -> None:
    """While a Recorder writes a session, the open screen shows LIVE, takes in new events and items
    without moving the user's cursor, and drops LIVE when the session closes."""
    from textual.widgets import Static

    from rtproxy.tui.widgets.conversation import ConversationList
    from rtproxy.tui.widgets.event_list import EventList

    db = tmp_path / "rec.db"
    frames = session_frames()
    cut = next(n for n, f in enumerate(frames) if '"response.done"' in str(f.data))  # resp_1 not done yet
    recorder = Recorder(str(db))
    recorder.start()
    try:
        sid = recorder.open_session(model="gpt-realtime", path="/v1/realtime")
        for f in frames[:cut]:
            recorder.record_frame(sid, f.seq, f.t, f.direction.value, f.data)
        recorder.flush()
        app = make_app(db, sid, poll_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            screen = await opened(pilot)
            indicator = screen.query_one("#live-indicator", Static)
            await wait_until(pilot, lambda: "LIVE" in str(indicator.render()), what="LIVE shown")
            assert [i.id for i in screen.conversation.items] == ["item_user1", "item_asst1"]
            conv = screen.query_one(ConversationList)
            assert "resp_1 in_progress" in "\n".join(lines_of(conv))
            await pilot.press("2")
            events = screen.query_one(EventList)
            events.cursor = 3
            await pilot.pause()
            place = events.cursor_seq
            for f in frames[cut:]:
                recorder.record_frame(sid, f.seq, f.t, f.direction.value, f.data)
            recorder.flush()
            await wait_until(pilot, lambda: len(screen.index) == len(frames), what="new events listed")
            await wait_until(pilot, lambda: "item_out1" in screen.conversation.by_id, what="new items")
            assert events.cursor_seq == place and events.cursor == 3
            assert [i.id for i in conv.items][-1] == "item_out1"
            await pilot.press("1")
            assert "resp_1 completed · 150 tokens" in "\n".join(lines_of(conv))  # the finished item's response
            recorder.update_session(sid, status="closed")
            recorder.flush()
            await wait_until(pilot, lambda: "LIVE" not in str(indicator.render()), what="LIVE gone")
            assert not screen.live
    finally:
        recorder.close()


async def test_help_and_command_palette(db: Path) -> None:
    """`?` opens the help; the command palette lists the screen's actions and runs them."""
    from textual.command import CommandList, CommandPalette
    from textual.widgets import TabbedContent

    from rtproxy.tui.screens.help import HelpScreen

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="help closed")
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: CommandPalette.is_open(app), what="palette")
        await pilot.press(*"timeline")
        commands = app.screen.query_one(CommandList)
        await wait_until(
            pilot, lambda: commands.option_count > 0 and commands.highlighted is not None, what="matching command"
        )
        assert "Show timeline" in str(commands.get_option_at_index(commands.highlighted).prompt)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.query_one(TabbedContent).active == "timeline", what="timeline")


async def test_escape_goes_to_the_sessions(db: Path) -> None:
    """Opened on a session, Escape shows the sessions table with that session in it."""
    from textual.widgets import DataTable

    from rtproxy.tui.screens.sessions import SessionsScreen

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="sessions")
        table = app.screen.query_one("#sessions-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, what="rows")


# --- pure parts -----------------------------------------------------------------------


def test_index_views() -> None:
    """Filters combine (globs, exclusions, direction, id prefix, search hits) and runs fold and open."""
    frames = session_frames()
    from rtproxy.store import describe

    rows = []
    for f in frames:
        typ, _eid, iid, rid = describe(f.data)
        rows.append((f.seq, f.t, f.direction.value, typ, iid, rid, len(f.data)))
    index = EventIndex(rows)
    assert index.append(rows[-3:]) == 0  # repeated rows are ignored
    everything = index.view(EventFilter(collapse=False))
    assert len(everything) == len(rows)
    collapsed = index.view(EventFilter())
    assert sum(collapsed.counts) == len(rows) and len(collapsed) < len(rows)
    head = next(index.rows[s][0] for s, c in zip(collapsed.starts, collapsed.counts, strict=True) if c > 1)
    opened_view = index.view(EventFilter(), frozenset({head}))
    assert len(opened_view) > len(collapsed)
    server_items = index.view(EventFilter(types="conversation.item.*", direction="server", collapse=False))
    assert {index.rows[s][3] for s in server_items.starts} == {
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
    }
    no_deltas = index.view(EventFilter(types="-*.delta -input_audio_buffer.*", collapse=False))
    assert not any(
        index.rows[s][3].endswith(".delta") or index.rows[s][3].startswith("input_audio_buffer.")
        for s in no_deltas.starts
    )
    by_id = index.view(EventFilter(ids="item_u", collapse=False))
    assert {index.rows[s][4] for s in by_id.starts} == {"item_user1", "item_user2"}
    hits = index.view(EventFilter(seqs=frozenset({0, 5, 70}), collapse=False))
    assert [index.rows[s][0] for s in hits.starts] == [0, 5, 70]
    assert collapsed.line_of_row(index.position(head + 1)) == collapsed.line_of_row(index.position(head))


def test_payload_rendering() -> None:
    """Audio fields become `<base64 audio, N bytes, X ms>` at the session's format; binary and text frames show."""
    from rtproxy.protocols.formats import ULAW

    append = orjson.dumps({"type": "input_audio_buffer.append", "audio": b64(bytes(4800))}).decode()
    text, lexer = render_payload(append, CLIENT)
    assert lexer == "json" and '"audio": "<base64 audio, 4800 bytes, 100 ms>"' in text
    text, _ = render_payload(append, CLIENT, (ULAW, None))
    assert "<base64 audio, 4800 bytes, 600 ms>" in text
    delta = orjson.dumps({"type": "response.audio.delta", "delta": b64(bytes(480))}).decode()
    assert "<base64 audio, 480 bytes, 10 ms>" in render_payload(delta, SERVER)[0]
    text_delta = orjson.dumps({"type": "response.text.delta", "delta": "x" * 100}).decode()
    assert "x" * 100 in render_payload(text_delta, SERVER)[0]
    assert render_payload("not json", SERVER) == ("not json", "text")
    assert render_payload(b"\x00\x01", SERVER)[0].startswith("<binary frame, 2 bytes>")


def test_cli_tui_errors_and_lazy_import(tmp_path: Path) -> None:
    """`rtproxy tui` names a missing database or session in one line (exit 2), and `import rtproxy.cli`
    does not import Textual."""
    import subprocess
    import sys

    exe = [sys.executable, "-c", "from rtproxy.cli import entry; entry()"]
    missing = subprocess.run(
        [*exe, "tui", "--db", str(tmp_path / "none.db")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "none.db" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    db = tmp_path / "x.db"
    build_db(db)
    unknown = subprocess.run(
        [*exe, "tui", "nosuchsession", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2 and "nosuchsession" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, rtproxy.cli; print('textual' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "False"


async def test_mouse_selects_events_items_and_tabs(db: Path) -> None:
    """Clicking a tab shows it, clicking an event row selects it, clicking an item highlights it."""
    from textual.widgets import TabbedContent

    from rtproxy.tui.widgets.conversation import ConversationList
    from rtproxy.tui.widgets.event_list import EventList

    app = make_app(db, SESSION_META["id"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        tabs = screen.query_one(TabbedContent)
        await pilot.click("#tabs Tab#--content-tab-events")
        await wait_until(pilot, lambda: tabs.active == "events", what="events tab")
        events = screen.query_one(EventList)
        await pilot.click(EventList, offset=(20, 4))
        await wait_until(pilot, lambda: events.cursor == events.scroll_offset.y + 4, what="row clicked")
        await pilot.click("#tabs Tab#--content-tab-conversation")
        await wait_until(pilot, lambda: tabs.active == "conversation", what="conversation tab")
        conv = screen.query_one(ConversationList)
        line = conv._first_line[2]  # the first line of the third item
        await pilot.click(ConversationList, offset=(10, line - conv.scroll_offset.y))
        await wait_until(pilot, lambda: conv.cursor == 2, what="item clicked")


async def test_a_missing_session_is_said_not_crashed_on(db: Path) -> None:
    """A session that is not (or no longer) in the database is reported on screen; the app keeps running."""
    from rtproxy.tui.widgets.conversation import ConversationList

    app = make_app(db, "20990101-000000-gone00")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "SessionScreen", what="session screen")
        conv = app.screen.query_one(ConversationList)
        await wait_until(
            pilot, lambda: "cannot read session 20990101-000000-gone00" in conv.placeholder, what="the failure shown"
        )
        assert app.is_running
        await pilot.press("escape")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "SessionsScreen", what="sessions")


def test_real_command_in_a_terminal(db: Path) -> None:
    """`rtproxy tui latest` in a pseudo-terminal draws the session and quits on `q` with exit code 0."""
    import os
    import select

    pty = pytest.importorskip("pty")
    from tests.conftest import rtproxy_exe

    pid, fd = pty.fork()
    if pid == 0:  # the child: the real console script, never back into pytest
        try:
            os.environ.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
            exe = rtproxy_exe()
            os.execv(exe[0], [*exe, "tui", "latest", "--db", str(db)])
        finally:
            os._exit(127)
    out = b""
    sent = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and b"weather demo" in out and b"mild and sunny" in out:
                os.write(fd, b"q")
                sent = True
    finally:
        if not sent:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert sent, out[-2000:]
    assert os.waitstatus_to_exitcode(status) == 0


# --- the conversation export matches the CLI's ------------------------------------------------


def cli_import_and_export(recording: Path, tmp_path: Path) -> tuple[Path, str, bytes]:
    """`rtproxy import` the recording into a fresh DB and `rtproxy export --audio` it (real subprocesses):
    the DB, the session id and the CLI's conversation.wav bytes."""
    import os
    import subprocess

    from tests.conftest import rtproxy_exe

    db = tmp_path / "rt.db"
    env = {**os.environ}
    done = subprocess.run(
        [*rtproxy_exe(), "import", str(recording), "--db", str(db)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    sid = done.stdout.strip().splitlines()[-1]
    out = tmp_path / "cli"
    done = subprocess.run(
        [*rtproxy_exe(), "export", sid, "--audio", str(out), "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return db, sid, (out / "conversation.wav").read_bytes()


RECORDINGS = Path(__file__).parent.parent / "recordings"


async def test_conversation_export_is_the_clis_conversation_wav(tmp_path: Path) -> None:
    """`W` in the session screen writes the same conversation.wav, byte for byte, as `rtproxy export --audio`
    for voice-ga.jsonl: the answer placed after the question it answers, not on top of it."""
    import wave

    db, sid, cli_wav = cli_import_and_export(RECORDINGS / "voice-ga.jsonl", tmp_path)
    out = tmp_path / "tui"
    app = make_app(db, sid, export_dir=out)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        with screen.feed.lock:
            conv = screen.feed.conversation
            user = next(i for i in conv.items if i.role == "user" and i.audio_ms > 0)
            answer = next(i for i in conv.items if i.role == "assistant" and i.audio_ms > 0)
            spans = user.audio_ms, answer.audio_ms, answer.t_start
        await pilot.press("W")
        await wait_until(pilot, lambda: "conversation.wav" in screen.last_notice, what="conversation exported")
    tui_wav = (out / f"{sid}-conversation.wav").read_bytes()
    assert tui_wav == cli_wav
    with wave.open(str(out / f"{sid}-conversation.wav")) as w:
        frames = w.getnframes() / w.getframerate() * 1000
    user_ms, answer_ms, answer_at = spans
    assert answer_at is not None and answer_at * 1000 < user_ms  # recorded on top of the question...
    assert abs(frames - (user_ms + answer_ms)) <= 1  # ...played after it


def test_conversation_export_keeps_a_barge_in_as_the_cli_does(tmp_path: Path) -> None:
    """export_conversation (what `W` runs), given the speech_started times, writes the CLI's conversation.wav
    for a session where the user spoke over an answer still being generated (the overlap kept); called
    directly, because the session screen's feed does not yet note speech_started."""
    from rtproxy.conversation.audio import note_speech_started
    from rtproxy.conversation.realtime import assemble
    from rtproxy.recording import write_recording
    from rtproxy.tui.player import export_conversation
    from tests.test_audio import barge_in_script

    events = sorted(barge_in_script("speech_started").events, key=lambda e: e[1])  # in time order, as recorded
    recording = tmp_path / "barge-in.jsonl"
    session = {"id": "20261201-000000-barge0", "started_at": "2026-12-01T00:00:00.000Z", "dialect": "ga"}
    frames = [Frame(n, t, Direction(d), orjson.dumps(e).decode()) for n, (d, t, e) in enumerate(events)]
    write_recording(recording, session, frames)
    db, sid, cli_wav = cli_import_and_export(recording, tmp_path)
    speech_started: dict[str, float] = {}
    with Store(db) as store:
        conv = assemble(note_speech_started(store.frames(sid), speech_started), keep_audio=True)
    assert speech_started  # the barge-in is told by speech_started alone (no truncate, no cancel)
    path = export_conversation(tmp_path / "tui", sid, conv, speech_started)
    assert path is not None and path.read_bytes() == cli_wav
    without = export_conversation(tmp_path / "tui-without", sid, conv)
    assert without is not None and without.read_bytes() != cli_wav  # the times are what keeps the overlap
