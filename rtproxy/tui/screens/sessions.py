"""The sessions screen: every recorded session, newest first, refreshing while the proxy records."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from ...cli.render import seconds
from ...errors import RtproxyError
from .. import data
from ..data import SessionSummary
from ..messages import LoadFailed, SessionDeleted, SessionsChanged, SessionSelected, SessionsLoaded
from .confirm import ConfirmScreen

if TYPE_CHECKING:
    from ..app import RtproxyApp

#: A live session's growing counts refresh at most this often (seconds).
LIVE_RELOAD = 2.0

COLUMNS = (
    ("id", "id"),
    ("started (UTC)", "started"),
    ("duration", "duration"),
    ("model", "model"),
    ("api", "dialect"),
    ("status", "status"),
    ("events", "events"),
    ("tokens", "tokens"),
    ("cost", "cost"),
    ("label", "label"),
)


def status_text(status: str) -> Text:
    if status == "open":
        return Text("● live", style="bold red")
    style = {"closed": "green", "interrupted": "yellow", "rejected": "red", "error": "red"}.get(status, "")
    return Text(status, style=style)


def row_cells(s: SessionSummary) -> tuple[Any, ...]:
    return (
        s.id,
        s.started_at.replace("T", " ").rstrip("Z")[:16],
        Text("" if s.duration is None else seconds(s.duration), justify="right"),
        s.model,
        s.dialect,
        status_text(s.status),
        Text(f"{s.events:,}", justify="right"),
        Text("" if s.tokens is None else f"{s.tokens:,}", justify="right"),
        Text(s.cost, justify="right"),
        s.label,
    )


class SessionsScreen(Screen[None]):
    """A table of sessions; Enter opens one, `d` deletes one after asking."""

    BINDINGS = [
        Binding("enter", "open_session", "Open", priority=True),  # also from the filter box: opens the top match
        Binding("d", "delete_session", "Delete"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("r", "reload", "Reload"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    #: (title, help, action) for the command palette.
    COMMAND_ACTIONS = (
        ("Open session", "Open the highlighted session", "open_session"),
        ("Delete session", "Delete the highlighted session (asks first)", "delete_session"),
        ("Filter sessions", "Type to filter the sessions table", "focus_filter"),
        ("Reload sessions", "Read the sessions table again", "reload"),
    )

    sessions: reactive[list[SessionSummary]] = reactive(list, always_update=True)
    filter_text: reactive[str] = reactive("")

    def __init__(self) -> None:
        super().__init__()
        self._fingerprint: tuple[Any, ...] | None = None
        self._loaded_at = 0.0

    @property
    def rt_app(self) -> RtproxyApp:
        from ..app import RtproxyApp

        assert isinstance(self.app, RtproxyApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static(f"rtproxy · {self.rt_app.db_path}", id="sessions-title", markup=False)
        yield Input(placeholder="filter sessions (id, model, status, label…)   /", id="sessions-filter")
        table: DataTable[Any] = DataTable(id="sessions-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="sessions-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#sessions-table", DataTable)
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self.load()
        self.set_interval(self.rt_app.poll_interval, self.poll)

    # -- workers --

    @work(thread=True, exclusive=True, group="sessions-load")
    def load(self) -> None:
        try:
            sessions = data.load_sessions(self.rt_app.db_path)
        except (RtproxyError, sqlite3.Error) as e:
            self.post_message(LoadFailed(f"cannot read {self.rt_app.db_path}: {e}"))
            return
        self.post_message(SessionsLoaded(sessions))

    @work(thread=True, exclusive=True, group="sessions-poll")
    def poll(self) -> None:
        """Reload when something changed: a new session, one ending, a live one growing.

        Counting a live session's events scans them, so growth alone reloads at
        most every LIVE_RELOAD seconds; new and ended sessions show at once.
        """
        try:
            fingerprint = data.sessions_fingerprint(self.rt_app.db_path)
        except (RtproxyError, sqlite3.Error):
            return  # a busy or vanished database: the next tick tries again
        if fingerprint == self._fingerprint:
            return
        old = self._fingerprint
        only_grew = old is not None and fingerprint[:3] == old[:3] and len(fingerprint) == len(old)
        if only_grew and time.monotonic() - self._loaded_at < LIVE_RELOAD:
            return
        self._fingerprint = fingerprint
        self._loaded_at = time.monotonic()
        self.post_message(SessionsChanged())

    @work(thread=True, group="sessions-delete")
    def delete(self, session_id: str) -> None:
        try:
            data.delete_session(self.rt_app.db_path, session_id)
        except (RtproxyError, sqlite3.Error) as e:
            self.post_message(LoadFailed(f"cannot delete {session_id}: {e}"))
            return
        self.post_message(SessionDeleted(session_id))

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self.query_one("#sessions-status", Static).update(message.text)
        self.notify(message.text, severity="error")

    # -- messages --

    @on(SessionsLoaded)
    def _loaded(self, message: SessionsLoaded) -> None:
        self.sessions = message.sessions

    @on(SessionsChanged)
    def _changed(self) -> None:
        self.load()

    @on(SessionDeleted)
    def _deleted(self, message: SessionDeleted) -> None:
        self.notify(f"deleted session {message.session_id}")
        self.load()

    @on(Input.Changed, "#sessions-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value

    @on(Input.Submitted, "#sessions-filter")
    def _filter_submitted(self) -> None:
        self.query_one("#sessions-table", DataTable).focus()

    @on(DataTable.RowSelected, "#sessions-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(SessionSelected(str(event.row_key.value)))

    # -- reactive --

    def watch_sessions(self) -> None:
        self._fill()

    def watch_filter_text(self) -> None:
        self._fill()

    def shown(self) -> list[SessionSummary]:
        needle = self.filter_text.strip()
        return [s for s in self.sessions if not needle or s.matches(needle)]

    def _fill(self) -> None:
        if not self.is_mounted:
            return
        table = self.query_one("#sessions-table", DataTable)
        current = self.highlighted_id()
        shown = self.shown()
        table.clear()
        for s in shown:
            table.add_row(*row_cells(s), key=s.id)
        if current is not None:
            ids = [s.id for s in shown]
            if current in ids:
                table.move_cursor(row=ids.index(current), animate=False)
        live = sum(1 for s in self.sessions if s.live)
        status = f"{len(shown)} of {len(self.sessions)} sessions" if self.filter_text else f"{len(shown)} sessions"
        if live:
            status += f" · {live} recording"
        self.query_one("#sessions-status", Static).update(status)

    def highlighted_id(self) -> str | None:
        table = self.query_one("#sessions-table", DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return None if key.value is None else str(key.value)

    # -- actions --

    def action_open_session(self) -> None:
        sid = self.highlighted_id()
        if sid is not None:
            self.post_message(SessionSelected(sid))

    def action_delete_session(self) -> None:
        sid = self.highlighted_id()
        if sid is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete(sid)

        self.app.push_screen(ConfirmScreen(f"Delete session {sid} and all its events?"), answered)

    def action_focus_filter(self) -> None:
        self.query_one("#sessions-filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#sessions-filter", Input).value = ""
        self.query_one("#sessions-table", DataTable).focus()

    def action_reload(self) -> None:
        self.load()
