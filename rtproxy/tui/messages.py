"""Messages of the TUI: what happened, posted by workers and widgets, handled by screens.

Past-tense dataclasses. Workers post the data they read (the UI thread never
touches SQLite); widgets post what the user did. Frequent ones define
``can_replace`` so that a burst merges in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message

from .data import SessionSummary
from .index import EventView, Row
from .views import ConversationView


@dataclass
class SessionsLoaded(Message):
    """The sessions table was read (newest first)."""

    sessions: list[SessionSummary]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SessionsLoaded)


@dataclass
class SessionsChanged(Message):
    """The poll saw the sessions table change: a new session, one ending, a live one growing."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SessionsChanged)


@dataclass
class SessionDeleted(Message):
    session_id: str


@dataclass
class SessionSelected(Message):
    """The user chose a session to open."""

    session_id: str


@dataclass
class SessionLoaded(Message):
    """A session's metadata was (re)read."""

    session: SessionSummary


@dataclass
class EventsAppended(Message):
    """Index rows of events were read: a chunk of the first load, or new events of a live session."""

    rows: list[Row]
    complete: bool  # the initial load is done


@dataclass
class ViewComputed(Message):
    """A filter was applied to the whole index, off the UI thread."""

    view: EventView
    rows_seen: int  # index length the view was computed over
    generation: int


@dataclass
class SearchFinished(Message):
    """A free-text search over payloads ended."""

    needle: str
    seqs: frozenset[int]


@dataclass
class EventLoaded(Message):
    """The payload of one event was read, rendered for the detail pane."""

    seq: int
    title: str
    lines: list[Text]


@dataclass
class ConversationChanged(Message):
    """The reducer has taken in more events."""

    view: ConversationView
    complete: bool  # every event recorded so far has been fed

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ConversationChanged) and not message.complete


@dataclass
class LiveChanged(Message):
    """The session started or stopped recording."""

    live: bool


@dataclass
class EventHighlighted(Message):
    """The cursor of the event list moved to an event."""

    seq: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EventHighlighted)


@dataclass
class RunToggled(Message):
    """The user opened or closed a collapsed run of deltas."""

    head_seq: int


@dataclass
class ItemChosen(Message):
    """The user asked to see an item's events."""

    item_id: str


@dataclass
class AudioFinished(Message):
    """A play or export request ended: say so in a notification."""

    text: str
    error: bool = False


@dataclass
class LoadFailed(Message):
    """A worker could not read the store (session deleted, database gone or locked)."""

    text: str
