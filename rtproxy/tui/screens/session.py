"""The session screen: Conversation, Events and Timeline tabs over one recorded session.

A :class:`~rtproxy.tui.feed.SessionFeed` worker loads the event index in
chunks (the screen paints at once, the list fills as they arrive), then runs
the reducer and posts conversation snapshots, then follows the recording
while it is live. Filters over big indexes are computed in workers too.
"""

from __future__ import annotations

import gc
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Select, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from .. import data, player
from ..commands import SESSION_ACTIONS
from ..data import SessionSummary
from ..feed import SessionFeed
from ..index import ITEM_ID, RESPONSE_ID, SEQ, EventFilter, EventIndex, EventView
from ..messages import (
    AudioFinished,
    ConversationChanged,
    EventHighlighted,
    EventLoaded,
    EventsAppended,
    ItemChosen,
    LiveChanged,
    LoadFailed,
    RunToggled,
    SearchFinished,
    SessionLoaded,
    ViewComputed,
)
from ..payload import render_payload
from ..views import ConversationView
from ..widgets.conversation import ConversationList
from ..widgets.event_detail import EventDetail, highlight
from ..widgets.event_list import HEADER, EventList, human_size
from ..widgets.timeline import Timeline

if TYPE_CHECKING:
    from ..app import RtproxyApp

#: Indexes up to this many rows are filtered on the UI thread (it takes a few ms); bigger ones in a worker.
SYNC_FILTER_ROWS = 20_000
#: Typing in a filter box applies after this pause (seconds).
FILTER_DEBOUNCE = 0.25
DIRECTIONS = [("↔ both", "all"), ("→ client", "client"), ("← server", "server")]


class SessionScreen(Screen[None]):
    """One session: what was said (Conversation), what was sent (Events), how fast (Timeline)."""

    BINDINGS = [
        Binding("escape", "back", "Sessions"),
        Binding("1", "show_tab('conversation')", "Conversation"),
        Binding("2", "show_tab('events')", "Events"),
        Binding("3", "show_tab('timeline')", "Timeline"),
        Binding("p", "play", "Play"),
        Binding("w", "export_item", "Export WAV"),
        Binding("W", "export_conversation", "Export conversation", show=False),
        Binding("t", "focus_filter('types')", "Type filter", show=False),
        Binding("i", "focus_filter('ids')", "Id filter", show=False),
        Binding("s", "focus_filter('text')", "Search", show=False),
        Binding("D", "cycle_direction", "Direction", show=False),
        Binding("c", "toggle_collapse", "Collapse runs", show=False),
        Binding("x", "clear_filters", "Clear filters", show=False),
        Binding("o", "event_item", "Item of event", show=False),
        Binding("b", "back_to_item", "Back to item", show=False),
    ]
    COMMAND_ACTIONS = SESSION_ACTIONS

    live: reactive[bool] = reactive(False)
    event_filter: reactive[EventFilter] = reactive(EventFilter, always_update=True)

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id
        self.summary: SessionSummary | None = None
        self.index = EventIndex()
        self.index_complete = False
        self.conversation = ConversationView()
        self.conversation_complete = False
        self.expanded: frozenset[int] = frozenset()
        self.feed: SessionFeed | None = None
        self._generation = 0
        self._pending_seq: int | None = None
        self._jump_item: str | None = None
        self._detail_seq: int | None = None
        self._filter_timer: Timer | None = None
        self._players: list[subprocess.Popen[bytes]] = []
        self.last_notice = ""  # the latest play/export outcome, as notified
        self.first_paint_at: float | None = None  # perf_counter() of the first frame drawn (for the benchmark)

    @property
    def rt_app(self) -> RtproxyApp:
        from ..app import RtproxyApp

        assert isinstance(self.app, RtproxyApp)
        return self.app

    # -- layout --

    def compose(self) -> ComposeResult:
        with Horizontal(id="session-bar"):
            yield Static(f"session {self.session_id}", id="session-title", markup=False)
            yield Static("", id="live-indicator")
        with TabbedContent(initial="conversation", id="tabs"):
            with TabPane("Conversation", id="conversation"):
                yield ConversationList(id="conversation-list")
            with TabPane("Events", id="events"):
                with Horizontal(id="event-filters"):
                    yield Input(placeholder="type glob: response.* -*.delta  (t)", id="filter-types")
                    yield Select(DIRECTIONS, value="all", allow_blank=False, id="filter-direction")
                    yield Input(placeholder="item / response id  (i)", id="filter-ids")
                    yield Input(placeholder="search payloads, Enter  (s)", id="filter-text")
                with Vertical(id="events-body"):
                    with Vertical(id="events-top"):
                        yield Static(HEADER, id="events-header", markup=False)
                        yield EventList(self.index, self.index.view(EventFilter()), id="event-list")
                        yield Static("loading events…", id="events-status", markup=False)
                    yield EventDetail(id="event-detail")
            with TabPane("Timeline", id="timeline"):
                yield Timeline(id="timeline-view")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)
        self.query_one(ConversationList).focus()
        self.feed = SessionFeed(self.rt_app.db_path, self.session_id, self.rt_app.poll_interval)
        self.run_feed()

    def _painted(self) -> None:
        self.first_paint_at = time.perf_counter()

    def on_unmount(self) -> None:
        gc.unfreeze()  # what was frozen for this session may be collected again
        if self.feed is not None:
            self.feed.stop.set()
        for proc in self._players:
            if proc.poll() is None:
                proc.terminate()

    # -- workers --

    @work(thread=True, exclusive=True, group="feed")
    def run_feed(self) -> None:
        worker = get_current_worker()
        assert self.feed is not None
        self.feed.run(self.post_message, lambda: worker.is_cancelled)

    @work(thread=True, exclusive=True, group="view")
    def compute_view(self, flt: EventFilter, expanded: frozenset[int], generation: int) -> None:
        end = len(self.index.rows)
        view = self.index.view(flt, expanded, end)
        self.post_message(ViewComputed(view, end, generation))

    @work(thread=True, exclusive=True, group="detail")
    def load_detail(self, seq: int) -> None:
        frame = data.load_frame(self.rt_app.db_path, self.session_id, seq)
        if frame is None:
            self.post_message(EventLoaded(seq, f"event {seq} is gone", []))
            return
        text, lexer = render_payload(frame.data, frame.direction, self.conversation.formats)
        arrow = "→ client" if frame.direction == "client" else "← server"
        title = f"#{seq}  {frame.t:.3f} s  {arrow}  {human_size(len(frame.data))}"
        self.post_message(EventLoaded(seq, title, highlight(text, lexer)))

    @work(thread=True, exclusive=True, group="search")
    def search(self, needle: str) -> None:
        self.post_message(SearchFinished(needle, data.search_text(self.rt_app.db_path, self.session_id, needle)))

    @work(thread=True, group="audio")
    def audio_job(self, what: str, item_id: str | None) -> None:
        if self.feed is None:
            return
        job = player.AudioJob(
            self.feed.conversation,
            self.feed.lock,
            self.session_id,
            Path(self.rt_app.export_dir),
            self.feed.speech_started,
        )
        outcome = job.run(what, item_id)
        if outcome.process is not None:
            self._players.append(outcome.process)
        self.post_message(AudioFinished(outcome.text, outcome.error))

    # -- what the feed sends --

    @on(SessionLoaded)
    def _session_loaded(self, message: SessionLoaded) -> None:
        s = self.summary = message.session
        parts = [f"session {s.id}", s.model or "?", s.dialect or "?", s.status, f"{s.events:,} events"]
        if s.tokens is not None:
            parts.append(f"{s.tokens:,} tokens")
        if s.label:
            parts.append(s.label)
        self.query_one("#session-title", Static).update(" · ".join(parts))

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self.live = False
        self.query_one("#session-title", Static).update(message.text)
        self.query_one(ConversationList).placeholder = message.text
        self.query_one(ConversationList).refresh()
        self.notify(message.text, severity="error")

    @on(LiveChanged)
    def _live_changed(self, message: LiveChanged) -> None:
        self.live = message.live

    def watch_live(self, live: bool) -> None:
        indicator = self.query_one("#live-indicator", Static)
        indicator.update("● LIVE" if live else "")
        indicator.set_class(live, "live")

    @on(EventsAppended)
    def _events_appended(self, message: EventsAppended) -> None:
        offset = len(self.index)
        if message.rows:
            self.index.append(message.rows)
            self.query_one(EventList).rows_appended(offset, follow=self.index_complete)
        if message.complete and not self.index_complete:
            self.index_complete = True
            gc.freeze()  # 400k index tuples: keep the cyclic GC from rescanning them on every collection
            if self.feed is not None:
                self.call_after_refresh(self.feed.index_shown.set)
        self._update_events_status()

    @on(ConversationChanged)
    def _conversation_changed(self, message: ConversationChanged) -> None:
        self.conversation = message.view
        if message.complete and not self.conversation_complete:
            gc.freeze()
        self.conversation_complete = message.complete
        conv_list = self.query_one(ConversationList)
        if message.complete and not message.view.items:
            conv_list.placeholder = "no conversation items (yet)"
        conv_list.set_conversation(message.view)
        s = self.summary
        self.query_one(Timeline).set_conversation(
            message.view, s.model if s is not None else None, s.started_at if s is not None else None
        )

    # -- the events tab --

    def _update_events_status(self) -> None:
        event_list = self.query_one(EventList)
        total = len(self.index)
        loading = "" if self.index_complete else " (loading…)"
        shown = len(event_list.view)
        flt = event_list.view.filter
        what = f"{total:,} events{loading}"
        if not flt.is_empty:
            what += f" · filter matches {shown:,} lines"
        elif shown != total:
            what += f" · {shown:,} lines (runs collapsed, c to expand)"
        self.query_one("#events-status", Static).update(what)

    def watch_event_filter(self, flt: EventFilter) -> None:
        self._apply_view()

    def _apply_view(self, keep_seq: int | None = None) -> None:
        self._generation += 1
        if keep_seq is None:
            keep_seq = self.query_one(EventList).cursor_seq
        self._pending_seq = keep_seq
        if len(self.index) <= SYNC_FILTER_ROWS:
            view = self.index.view(self.event_filter, self.expanded)
            self._show_view(view)
        else:
            self.compute_view(self.event_filter, self.expanded, self._generation)

    @on(ViewComputed)
    def _view_computed(self, message: ViewComputed) -> None:
        if message.generation != self._generation:
            return  # a newer filter is on its way
        message.view.extend(self.index.rows, message.rows_seen)
        self._show_view(message.view)

    def _show_view(self, view: EventView) -> None:
        self.query_one(EventList).set_view(view, keep_seq=self._pending_seq)
        self._pending_seq = None
        self._update_events_status()

    @on(Input.Changed, "#filter-types, #filter-ids")
    def _filter_typed(self) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        delay = 0.0 if len(self.index) <= SYNC_FILTER_ROWS else FILTER_DEBOUNCE
        if delay:
            self._filter_timer = self.set_timer(delay, self._read_filters)
        else:
            self._read_filters()

    def _read_filters(self) -> None:
        self.event_filter = replace(
            self.event_filter,
            types=self.query_one("#filter-types", Input).value,
            ids=self.query_one("#filter-ids", Input).value.strip(),
        )

    @on(Input.Submitted, "#filter-types, #filter-ids")
    def _filter_submitted(self) -> None:
        self.query_one(EventList).focus()

    @on(Input.Submitted, "#filter-text")
    def _search_submitted(self, event: Input.Submitted) -> None:
        needle = event.value.strip()
        if needle:
            self.query_one("#events-status", Static).update(f"searching payloads for {needle!r}…")
            self.search(needle)
        else:
            self.event_filter = replace(self.event_filter, seqs=None)
        self.query_one(EventList).focus()

    @on(SearchFinished)
    def _search_finished(self, message: SearchFinished) -> None:
        if self.query_one("#filter-text", Input).value.strip() == message.needle:
            self.event_filter = replace(self.event_filter, seqs=message.seqs)

    @on(Select.Changed, "#filter-direction")
    def _direction_changed(self, event: Select.Changed) -> None:
        value = None if event.value in ("all", Select.BLANK) else str(event.value)
        if value != self.event_filter.direction:
            self.event_filter = replace(self.event_filter, direction=value)

    @on(RunToggled)
    def _run_toggled(self, message: RunToggled) -> None:
        self.expanded = self.expanded ^ {message.head_seq}
        self._apply_view(keep_seq=message.head_seq)

    @on(EventHighlighted)
    def _event_highlighted(self, message: EventHighlighted) -> None:
        if message.seq != self._detail_seq:
            self._detail_seq = message.seq
            self.load_detail(message.seq)

    @on(EventLoaded)
    def _event_loaded(self, message: EventLoaded) -> None:
        if message.seq == self._detail_seq:
            self.query_one(EventDetail).show_event(message.title, message.lines)

    # -- jumping between the conversation and the events --

    @on(ItemChosen)
    def _item_chosen(self, message: ItemChosen) -> None:
        item = self.conversation.by_id.get(message.item_id)
        if item is None:
            return
        self._jump_item = item.id
        self.query_one("#tabs", TabbedContent).active = "events"
        if self.conversation.dialect != "live":  # GPT-Live events name no item: jump to the turn's first event
            ids = self.query_one("#filter-ids", Input)
            with ids.prevent(Input.Changed):
                ids.value = item.id
            self.event_filter = replace(self.event_filter, ids=item.id)
        self._apply_view(keep_seq=item.first_seq)
        self.query_one(EventList).focus()

    def action_back_to_item(self) -> None:
        if self._jump_item is None:
            self.notify("no item to go back to: choose one in the Conversation tab with Enter")
            return
        self.query_one("#tabs", TabbedContent).active = "conversation"
        conv_list = self.query_one(ConversationList)
        conv_list.move_to_item(self._jump_item)
        conv_list.focus()

    def action_event_item(self) -> None:
        event_list = self.query_one(EventList)
        if not len(event_list.view):
            return
        row = self.index.rows[event_list.view.starts[event_list.cursor]]
        item_id = row[ITEM_ID]
        if item_id is None and row[RESPONSE_ID] is not None:
            response = self.conversation.response(row[RESPONSE_ID])
            item_id = response.output_item_ids[0] if response and response.output_item_ids else None
        if self.conversation.dialect == "live":  # GPT-Live events name no item: the turn or delegation spanning it
            seq = row[SEQ]
            spans = [i for i in self.conversation.items if i.first_seq <= seq <= i.last_seq]
            item_id = min(spans, key=lambda i: i.last_seq - i.first_seq).id if spans else None
        if item_id is None or item_id not in self.conversation.by_id:
            self.notify("this event belongs to no item of the conversation", severity="warning")
            return
        self.query_one("#tabs", TabbedContent).active = "conversation"
        conv_list = self.query_one(ConversationList)
        conv_list.move_to_item(item_id)
        conv_list.focus()

    # -- actions --

    def action_back(self) -> None:
        if isinstance(self.focused, Input):  # leave the filter box, not the screen
            self.query_one(EventList).focus()
            return
        self.rt_app.show_sessions()

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        if tab == "conversation":
            self.query_one(ConversationList).focus()
        elif tab == "events":
            self.query_one(EventList).focus()

    def action_focus_filter(self, which: str) -> None:
        self.query_one("#tabs", TabbedContent).active = "events"
        self.query_one(f"#filter-{which}", Input).focus()

    def action_cycle_direction(self) -> None:
        select: Select[str] = self.query_one("#filter-direction", Select)
        order = [v for _, v in DIRECTIONS]
        current = select.value if select.value in order else "all"
        select.value = order[(order.index(str(current)) + 1) % len(order)]

    def action_toggle_collapse(self) -> None:
        self.event_filter = replace(self.event_filter, collapse=not self.event_filter.collapse)

    def action_clear_filters(self) -> None:
        for name in ("types", "ids", "text"):
            box = self.query_one(f"#filter-{name}", Input)
            with box.prevent(Input.Changed):
                box.value = ""
        self.query_one("#filter-direction", Select).value = "all"
        self.event_filter = EventFilter(collapse=self.event_filter.collapse)

    def _target_item(self) -> str | None:
        tabs = self.query_one("#tabs", TabbedContent)
        if tabs.active == "events":
            event_list = self.query_one(EventList)
            if len(event_list.view):
                row = self.index.rows[event_list.view.starts[event_list.cursor]]
                if row[ITEM_ID]:
                    return row[ITEM_ID]
        item = self.query_one(ConversationList).cursor_item
        return item.id if item is not None else None

    def action_play(self) -> None:
        self._audio("play")

    def action_export_item(self) -> None:
        self._audio("export")

    def action_export_conversation(self) -> None:
        self.audio_job("conversation", None)

    def _audio(self, what: str) -> None:
        item_id = self._target_item()
        if item_id is None:
            self.notify("no item selected", severity="warning")
            return
        if not self.conversation_complete and item_id not in self.conversation.by_id:
            self.notify("the conversation is still loading", severity="warning")
            return
        self.audio_job(what, item_id)

    @on(AudioFinished)
    def _audio_finished(self, message: AudioFinished) -> None:
        self.last_notice = message.text
        self.notify(message.text, severity="error" if message.error else "information")
