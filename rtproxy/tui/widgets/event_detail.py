"""The detail pane: one event's JSON, syntax-highlighted, audio shown by its length.

A Line API widget: the worker hands it highlighted lines (Rich ``Text``),
it wraps them to its width and renders only the lines on screen, so moving
through events never re-lays out the screen.
"""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

#: Longer payloads are cut in the pane (the full text is in `rtproxy show --events`).
MAX_CHARS = 200_000
THEME = "ansi_dark"


def highlight(text: str, lexer: str) -> list[Text]:
    """Highlighted lines of a payload (call it in a worker: Pygments is not free)."""
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + f"\n… ({len(text) - MAX_CHARS} more characters)"
    if lexer == "text":
        return [Text(line) for line in text.splitlines()] or [Text("")]
    return list(Syntax(text, lexer, theme=THEME).highlight(text).split("\n"))


class EventDetail(ScrollView, can_focus=True):
    """Shows whatever event the screen hands it: a title line, then the payload."""

    BINDINGS = [
        Binding("up", "scroll_up", "Scroll up", show=False),
        Binding("down", "scroll_down", "Scroll down", show=False),
    ]
    COMPONENT_CLASSES = {"event-detail--title"}
    DEFAULT_CSS = """
    EventDetail { height: 1fr; }
    EventDetail > .event-detail--title { text-style: bold; background: $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = "no event selected"
        self.lines: list[Text] = []
        self._wrapped: list[Text] = []
        self._strips: dict[int, Strip] = {}
        self._width = 0

    def show_event(self, title: str, lines: list[Text]) -> None:
        self.title = title
        self.lines = lines
        self._rewrap()
        self.scroll_to(0, 0, animate=False)

    def clear(self, title: str = "no event selected") -> None:
        self.show_event(title, [])

    @property
    def text(self) -> str:
        """The payload as shown (for tests and copying)."""
        return "\n".join(line.plain for line in self.lines)

    def _rewrap(self) -> None:
        width = max(self.scrollable_content_region.width - 1, 20)
        console = self.app.console
        wrapped: list[Text] = [Text(self.title)]
        for line in self.lines:
            wrapped.extend([line] if line.cell_len <= width else line.wrap(console, width))
        self._wrapped = wrapped
        self._strips.clear()
        self._width = width
        self.virtual_size = Size(width, len(wrapped))
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        if max(self.scrollable_content_region.width - 1, 20) != self._width:
            self._rewrap()

    def render_line(self, y: int) -> Strip:
        line = self.scroll_offset.y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if line >= len(self._wrapped):
            return Strip.blank(width, base)
        strip = self._strips.get(line)
        if strip is None:
            text = self._wrapped[line]
            segments = list(text.render(self.app.console))
            strip = Strip(segments)
            if line == 0:
                style = self.get_component_rich_style("event-detail--title")
                strip = strip.apply_style(style).extend_cell_length(width, style)
            self._strips[line] = strip
        return strip.apply_style(base).crop_extend(0, width, base)
