"""Snapshots of the main screens (pytest-textual-snapshot): fixed data, fixed size, no clock.

Regenerate after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and review the SVGs in tests/__snapshots__/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rtproxy.tui.app import make_app
from tests.test_tui import SESSION_META, SIZE, build_db, opened, wait_until

Scene = Callable[[Any], Awaitable[None]]


@pytest.fixture
def relative_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fixture database, named relatively so that its path on screen is the same on every run."""
    monkeypatch.chdir(tmp_path)
    build_db(tmp_path / "demo.db", extra_sessions=2)
    return "demo.db"


async def _settle(pilot: Any) -> None:
    from textual.widgets import Input

    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()


async def sessions_scene(pilot: Any) -> None:
    from textual.widgets import DataTable

    table = pilot.app.screen.query_one("#sessions-table", DataTable)
    await wait_until(pilot, lambda: table.row_count == 3, what="sessions")
    await _settle(pilot)


async def conversation_scene(pilot: Any) -> None:
    await opened(pilot)
    await _settle(pilot)


async def events_scene(pilot: Any) -> None:
    from rtproxy.tui.widgets.event_detail import EventDetail
    from rtproxy.tui.widgets.event_list import EventList

    screen = await opened(pilot)
    await pilot.press("2")
    events = screen.query_one(EventList)
    done = next(n for n, s in enumerate(events.view.starts) if screen.index.rows[s][3] == "response.done")
    events.cursor = done
    detail = screen.query_one(EventDetail)
    await wait_until(pilot, lambda: '"usage"' in detail.text, what="detail of response.done")
    await _settle(pilot)


async def timeline_scene(pilot: Any) -> None:
    await opened(pilot)
    await pilot.press("3")
    await _settle(pilot)


async def confirm_scene(pilot: Any) -> None:
    from rtproxy.tui.screens.confirm import ConfirmScreen

    await sessions_scene(pilot)
    await pilot.press("d")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="confirm")
    await _settle(pilot)


def test_sessions_screen(snap_compare: Any, relative_db: str) -> None:
    """The sessions table: newest first, with duration, model, dialect, status, events, tokens and label."""
    assert snap_compare(make_app(relative_db), terminal_size=SIZE, run_before=sessions_scene)


def test_conversation_tab(snap_compare: Any, relative_db: str) -> None:
    """The conversation as chat: transcripts, audio waveforms, a function call with its output, responses."""
    assert snap_compare(make_app(relative_db, SESSION_META["id"]), terminal_size=SIZE, run_before=conversation_scene)


def test_events_tab(snap_compare: Any, relative_db: str) -> None:
    """The events list with collapsed delta runs, and a response.done in the detail pane."""
    assert snap_compare(make_app(relative_db, SESSION_META["id"]), terminal_size=SIZE, run_before=events_scene)


def test_timeline_tab(snap_compare: Any, relative_db: str) -> None:
    """Latency bars per response and the token totals."""
    assert snap_compare(make_app(relative_db, SESSION_META["id"]), terminal_size=SIZE, run_before=timeline_scene)


def test_delete_confirmation(snap_compare: Any, relative_db: str) -> None:
    """Deleting asks first, in a dialog over the sessions table."""
    assert snap_compare(make_app(relative_db), terminal_size=SIZE, run_before=confirm_scene)


def test_live_conversation_tab(snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPT-Live session's conversation: speech turns on the timeline, a delegation with its function call and
    result, an interrupted answer and the barge-in after it."""
    from rtproxy.protocols.wire import CLIENT, SERVER
    from rtproxy.store import Store
    from tests.test_live_views import scenario

    monkeypatch.chdir(tmp_path)
    frames = scenario()
    meta = {
        "id": "20261201-100000-live01",
        "api": "live",
        "variant": "primary",
        "path": "/v1/live/sessions",
        "model": "gpt-live-1",
        "status": "closed",
        "started_at": "2026-12-01T10:00:00+00:00",
        "duration": frames[-1].t,
        "client_events": sum(f.direction is CLIENT for f in frames),
        "server_events": sum(f.direction is SERVER for f in frames),
    }
    with Store("live.db", create=True) as store:
        sid = store.import_session(meta, frames)
    assert snap_compare(make_app("live.db", sid), terminal_size=SIZE, run_before=conversation_scene)
