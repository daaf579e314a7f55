"""The events timeline: a Line API widget that renders only the rows on screen.

It shows an :class:`~rtproxy.tui.index.EventView` over an
:class:`~rtproxy.tui.index.EventIndex` (held by the screen); 400k events
cost one tuple each, never a widget each. Runs of deltas are one line until
opened with Enter (or a click on the line's ``▸``).
"""

from __future__ import annotations

from collections import Counter

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..index import DIRECTION, ITEM_ID, RESPONSE_ID, SEQ, SIZE, TYPE, EventIndex, EventView, T, is_run_type
from ..messages import EventHighlighted, RunToggled

ARROWS = {"client": "→", "server": "←"}
HEADER = f"{'seq':>7}  {'t (s)':>9}  {'':2}{'type':<44} {'item / response':<34} {'size':>7}"


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


def _short(value: str | None, width: int) -> str:
    if not value:
        return ""
    return value if len(value) <= width else value[: width - 1] + "…"


class EventList(ScrollView, can_focus=True):
    """Events as lines: seq, time, direction, type, ids, size."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "edge(0)", "First", show=False),
        Binding("end,G", "edge(1)", "Last", show=False),
        Binding("enter,space", "toggle_run", "Open/close run"),
    ]
    COMPONENT_CLASSES = {
        "event-list--cursor",
        "event-list--client",
        "event-list--server",
        "event-list--run",
    }
    DEFAULT_CSS = """
    EventList { height: 1fr; }
    EventList > .event-list--cursor { background: $primary 50%; text-style: bold; }
    EventList:focus > .event-list--cursor { background: $primary; }
    EventList > .event-list--client { color: $success; }
    EventList > .event-list--server { color: $foreground; }
    EventList > .event-list--run { color: $warning; }
    """

    cursor: reactive[int] = reactive(0, always_update=True)

    def __init__(self, index: EventIndex, view: EventView, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.view = view
        self._run_labels: dict[int, str] = {}

    # -- data in --

    def set_view(self, view: EventView, *, keep_seq: int | None = None) -> None:
        """Show another view (a new filter), keeping the cursor on an event if it is still shown."""
        self.view = view
        self._run_labels.clear()
        self._resize()
        if keep_seq is not None and len(view):
            self.move_to_seq(keep_seq)
        else:
            self.cursor = min(self.cursor, max(len(view) - 1, 0))
        self.refresh()

    def rows_appended(self, offset: int, *, follow: bool = True) -> None:
        """The index grew from row ``offset``: extend the view; follow the tail if the cursor was on it."""
        at_end = follow and self.cursor >= len(self.view) - 1
        last = len(self.view) - 1
        self.view.extend(self.index.rows, offset)
        self._run_labels.pop(last, None)  # the last run may have grown
        self._resize()
        if at_end and last >= 0 and len(self.view) - 1 > last:
            self.cursor = len(self.view) - 1  # the user was watching the tail: keep following it
        self.refresh()

    def move_to_seq(self, seq: int) -> None:
        if not len(self.view):
            return
        self.cursor = self.view.line_of_row(self.index.position(seq))
        self.scroll_to_cursor(center=True)

    def _resize(self) -> None:
        self.virtual_size = Size(len(HEADER) + 4, len(self.view))

    # -- what is selected --

    def line_seq(self, line: int) -> int | None:
        if 0 <= line < len(self.view):
            return int(self.index.rows[self.view.starts[line]][SEQ])
        return None

    @property
    def cursor_seq(self) -> int | None:
        return self.line_seq(self.cursor)

    # -- cursor --

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.view) - 1)) if len(self.view) else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self.scroll_to_cursor()
        seq = self.line_seq(new)
        if seq is not None:
            self.post_message(EventHighlighted(seq))

    def scroll_to_cursor(self, center: bool = False) -> None:
        height = self.scrollable_content_region.height or 1
        top = self.scroll_offset.y
        if center:
            self.scroll_to(y=max(self.cursor - height // 2, 0), animate=False)
        elif self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(self.scrollable_content_region.height - 1, 1)

    def action_edge(self, end: int) -> None:
        self.cursor = len(self.view) - 1 if end else 0

    def action_toggle_run(self) -> None:
        if 0 <= self.cursor < len(self.view) and self.view.heads[self.cursor] >= 0:
            self.post_message(RunToggled(int(self.view.heads[self.cursor])))

    def on_click(self, event: events.Click) -> None:
        line = self.scroll_offset.y + event.y
        if 0 <= line < len(self.view):
            self.focus()
            if line == self.cursor and event.x < 4:
                self.action_toggle_run()
            self.cursor = line

    # -- rendering --

    def run_label(self, line: int) -> str:
        label = self._run_labels.get(line)
        if label is None:
            start, count = self.view.starts[line], self.view.counts[line]
            end = self.view.starts[line + 1] if line + 1 < len(self.view) else len(self.index.rows)
            types = Counter(r[TYPE] for r in self.index.rows[start:end] if is_run_type(r[TYPE]))
            if len(types) == 1:
                label = f"{next(iter(types)) or '?'} ×{count}"
            else:
                parts = ", ".join(f"{_tail(t)} ×{n}" for t, n in types.most_common(3))
                label = f"{count} events: {parts}"
            self._run_labels[line] = label
        return label

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        width = self.scrollable_content_region.width
        if line >= len(self.view):
            return Strip.blank(width, self.rich_style)
        row = self.index.rows[self.view.starts[line]]
        count = self.view.counts[line]
        head = self.view.heads[line]
        if count > 1:
            marker, what = "▸ ", self.run_label(line)
            ids = _short(row[ITEM_ID], 34)
            size = ""
        else:
            marker = "▾ " if head >= 0 and head in self.view.expanded else "  "
            what = row[TYPE] or "(binary frame)"
            ids = _short(" ".join(i for i in (row[ITEM_ID], row[RESPONSE_ID]) if i), 34)
            size = human_size(row[SIZE])
        direction = row[DIRECTION]
        arrow = ARROWS.get(direction, "?")
        text = f"{row[SEQ]:>7}  {row[T]:>9.3f}  {arrow} {marker}{_short(what, 42):<42} {ids:<34} {size:>7}"
        base = self.rich_style
        if line == self.cursor:
            style = base + self.get_component_rich_style("event-list--cursor")
        elif count > 1:
            style = base + self.get_component_rich_style("event-list--run")
        else:
            style = base + self.get_component_rich_style(f"event-list--{direction}", partial=True)
        segments = [Segment(text.ljust(max(width, len(text))), style)]
        strip = Strip(segments).crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, style if line == self.cursor else Style())


def _tail(event_type: str | None) -> str:
    if not event_type:
        return "?"
    parts = event_type.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else event_type
