"""The Textual app of `rtproxy tui`: sessions, then one session's conversation, events and timeline.

Built by :func:`make_app` so the CLI, the tests and the benchmark build it
the same way. Styles live in ``rtproxy.tcss`` beside this file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from textual import on
from textual.app import App
from textual.binding import Binding

from .commands import ActionsProvider
from .messages import SessionSelected
from .screens.help import HelpScreen
from .screens.session import SessionScreen
from .screens.sessions import SessionsScreen

#: How often a live session (and the sessions table) is polled for changes, in seconds.
POLL_INTERVAL = 0.5
#: The GIL switch interval while the app runs (Python's default is 0.005 s).
SWITCH_INTERVAL = 0.001


class RtproxyApp(App[None]):
    """Browse, follow live, and listen to recorded Realtime sessions."""

    CSS_PATH = "rtproxy.tcss"
    TITLE = "rtproxy"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(
        self,
        db_path: str,
        session: str | None = None,
        *,
        poll_interval: float = POLL_INTERVAL,
        export_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.db_path = db_path
        self.initial_session = session
        self.poll_interval = poll_interval
        self.export_dir = Path(export_dir) if export_dir is not None else Path(os.getcwd())
        self._switch_interval = sys.getswitchinterval()

    def on_mount(self) -> None:
        # Workers run the reducer in threads; a short switch interval hands the GIL
        # back to the UI thread within a millisecond when a key arrives.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        if self.initial_session is not None:
            self.push_screen(SessionScreen(self.initial_session))
        else:
            self.push_screen(SessionsScreen())

    def on_unmount(self) -> None:
        sys.setswitchinterval(self._switch_interval)

    @on(SessionSelected)
    def _session_selected(self, message: SessionSelected) -> None:
        self.push_screen(SessionScreen(message.session_id))

    def show_sessions(self) -> None:
        """Back to the sessions table (opened on demand when the app started on a session)."""
        if len(self.screen_stack) > 2:
            self.pop_screen()
        else:
            self.switch_screen(SessionsScreen())

    def action_sessions(self) -> None:
        if isinstance(self.screen, SessionScreen):
            self.show_sessions()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def make_app(
    db_path: str | Path,
    session: str | None = None,
    *,
    poll_interval: float = POLL_INTERVAL,
    export_dir: str | Path | None = None,
) -> RtproxyApp:
    """The app over a database, opening on the sessions table or on one session (an id)."""
    return RtproxyApp(str(db_path), session, poll_interval=poll_interval, export_dir=export_dir)
