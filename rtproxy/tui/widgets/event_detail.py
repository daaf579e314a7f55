"""The detail pane: one event's JSON, syntax-highlighted, audio shown by its length."""

from __future__ import annotations

from rich.syntax import Syntax
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

#: Longer payloads are cut in the pane (the full text is in `rtproxy show --events`).
MAX_CHARS = 200_000


class EventDetail(VerticalScroll):
    """Shows whatever event the screen hands it."""

    DEFAULT_CSS = """
    EventDetail { height: 1fr; }
    EventDetail > #detail-title { text-style: bold; padding: 0 1; background: $panel; }
    """

    def compose(self) -> ComposeResult:
        yield Static("no event selected", id="detail-title", markup=False)
        yield Static("", id="detail-body")

    def show_event(self, title: str, text: str, lexer: str) -> None:
        if len(text) > MAX_CHARS:
            text = text[:MAX_CHARS] + f"\n… ({len(text) - MAX_CHARS} more characters)"
        self.query_one("#detail-title", Static).update(title)
        body = self.query_one("#detail-body", Static)
        body.update(Syntax(text, lexer, theme="ansi_dark", word_wrap=True, background_color="default"))
        self.scroll_home(animate=False)

    def clear(self, title: str = "no event selected") -> None:
        self.query_one("#detail-title", Static).update(title)
        self.query_one("#detail-body", Static).update("")
