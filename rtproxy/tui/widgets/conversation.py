"""The conversation as chat: a Line API list of items, rendered once per change.

Each item is rendered to strips at the current width and cached while its
:class:`~rtproxy.tui.views.ItemView` object stays the same (the worker reuses
unchanged views), so a live session re-renders only the item that grew.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..messages import ItemChosen
from ..views import ConversationView, ItemView, ResponseView
from .item_render import item_lines


class ConversationList(ScrollView, can_focus=True):
    """Items in conversation order; the highlighted one is the target of play/export/jump."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("enter", "choose", "Events of item"),
    ]
    COMPONENT_CLASSES = {"conversation-list--cursor", "conversation-list--separator"}
    DEFAULT_CSS = """
    ConversationList { height: 1fr; }
    ConversationList > .conversation-list--cursor { background: $primary 20%; }
    ConversationList:focus > .conversation-list--cursor { background: $primary 35%; }
    ConversationList > .conversation-list--separator { color: $panel-lighten-2; }
    """

    cursor: reactive[int] = reactive(0, always_update=True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.conversation = ConversationView()
        self._strips: dict[str, tuple[ItemView, ResponseView | None, int, list[Strip]]] = {}
        self._lines: list[tuple[int, int]] = []  # (item index, line in item)
        self._first_line: list[int] = []
        self._width = 0
        self.placeholder = "loading the conversation…"

    @property
    def items(self) -> tuple[ItemView, ...]:
        return self.conversation.items

    @property
    def cursor_item(self) -> ItemView | None:
        items = self.items
        return items[self.cursor] if 0 <= self.cursor < len(items) else None

    # -- data in --

    def set_conversation(self, conv: ConversationView) -> None:
        """Show a new snapshot, keeping the highlighted item (by id) and the scroll position."""
        current = self.cursor_item
        at_end = bool(self.items) and self.cursor == len(self.items) - 1
        was_empty = not self.items
        self.conversation = conv
        self._relayout()
        if current is not None and not at_end:
            self.move_to_item(current.id, scroll=False)
        elif at_end or was_empty:
            self.cursor = len(conv.items) - 1 if at_end else 0
        self.refresh()

    def move_to_item(self, item_id: str, *, scroll: bool = True) -> bool:
        for i, item in enumerate(self.items):
            if item.id == item_id:
                self.cursor = i
                if scroll:
                    self.scroll_to_cursor(center=True)
                return True
        return False

    def _strips_for(self, item: ItemView, width: int) -> list[Strip]:
        response = self.conversation.response(item.response_id)  # its summary line may change after the item
        hit = self._strips.get(item.id)
        if hit is not None and hit[0] is item and hit[1] is response and hit[2] == width:
            return hit[3]
        console = self.app.console
        strips: list[Strip] = []
        for text in item_lines(item, self.conversation, console, width):
            lines = [text] if text.cell_len <= width else list(text.wrap(console, width))
            for line in lines:
                strips.append(Strip(list(line.render(console))).crop_extend(0, width, None))
        strips.append(Strip.blank(width))
        self._strips[item.id] = (item, response, width, strips)
        return strips

    def _relayout(self) -> None:
        width = max(self.scrollable_content_region.width, 20)
        self._width = width
        lines: list[tuple[int, int]] = []
        first: list[int] = []
        for index, item in enumerate(self.items):
            first.append(len(lines))
            lines.extend((index, n) for n in range(len(self._strips_for(item, width))))
        self._lines, self._first_line = lines, first
        self.virtual_size = Size(width, len(lines))

    def on_resize(self, event: events.Resize) -> None:
        if self.scrollable_content_region.width != self._width:
            self._relayout()

    # -- cursor --

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.items) - 1)) if self.items else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self.scroll_to_cursor()

    def scroll_to_cursor(self, center: bool = False) -> None:
        if not self._first_line or self.cursor >= len(self._first_line):
            return
        top_line = self._first_line[self.cursor]
        end_line = self._first_line[self.cursor + 1] if self.cursor + 1 < len(self._first_line) else len(self._lines)
        height = self.scrollable_content_region.height or 1
        if center:
            self.scroll_to(y=max(top_line - height // 3, 0), animate=False)
        elif top_line < self.scroll_offset.y:
            self.scroll_to(y=top_line, animate=False)
        elif end_line > self.scroll_offset.y + height:
            self.scroll_to(y=max(min(top_line, end_line - height), 0), animate=False)

    def action_cursor(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        height = self.scrollable_content_region.height or 1
        target = self.scroll_offset.y + direction * height
        target = max(0, min(target, len(self._lines) - 1))
        if self._lines:
            self.cursor = self._lines[target][0]

    def action_edge(self, end: int) -> None:
        self.cursor = len(self.items) - 1 if end else 0

    def action_choose(self) -> None:
        item = self.cursor_item
        if item is not None:
            self.post_message(ItemChosen(item.id))

    def on_click(self, event: events.Click) -> None:
        line = self.scroll_offset.y + event.y
        if 0 <= line < len(self._lines):
            self.focus()
            index = self._lines[line][0]
            if index == self.cursor and event.chain >= 2:
                self.action_choose()
            self.cursor = index

    # -- rendering --

    def render_line(self, y: int) -> Strip:
        line = self.scroll_offset.y + y
        width = self.scrollable_content_region.width
        if not self.items:
            text = self.placeholder if y == 0 else ""
            return Strip([Segment(text.ljust(width), self.rich_style)])
        if line >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        index, n = self._lines[line]
        strips = self._strips_for(self.items[index], self._width)
        strip = strips[n] if n < len(strips) else Strip.blank(width)
        if index == self.cursor and n < len(strips) - 1:
            strip = strip.apply_style(self.get_component_rich_style("conversation-list--cursor"))
        return strip.apply_style(self.rich_style + Style()).crop_extend(0, width, self.rich_style)
