"""The worker side of a session screen: load the index, run the reducer, follow a live recording.

:class:`SessionFeed` runs in one ``@work(thread=True)`` worker with its own
SQLite connection and hands everything to the UI thread through ``post``
(the screen's ``post_message``). It holds the reducer; other threads that
need it (play, export) take :attr:`lock`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from textual.message import Message

from ..conversation.audio import note_speech_started
from ..conversation.live import LiveSession
from ..conversation.realtime import Conversation
from ..conversation.responses_ws import ResponsesSession
from ..errors import RtproxyError
from ..store import Store
from . import data
from .live_views import LiveViewBuilder
from .messages import ConversationChanged, EventsAppended, LiveChanged, LoadFailed, SessionLoaded
from .responses_views import ResponsesViewBuilder
from .views import ConversationView, ViewBuilder

#: Post a conversation snapshot at most this often while a big session loads (seconds).
SNAPSHOT_EVERY = 1.0
#: Re-read a live session's counts at most this often (seconds): it scans its events.
SUMMARY_EVERY = 2.0
#: Frames fed per hold of the lock.
BATCH = 1_000


class SessionFeed:
    def __init__(self, db: str, session_id: str, poll_interval: float) -> None:
        self.db = db
        self.session_id = session_id
        self.poll_interval = poll_interval
        #: the reducer: a LiveSession for GPT-Live, a ResponsesSession for the Responses WebSocket mode
        self.conversation: Conversation | LiveSession | ResponsesSession = Conversation(keep_audio=True)
        self.speech_started: dict[str, float] = {}  # for barge-ins in the conversation export
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.index_shown = threading.Event()  # set by the screen once the index is on screen
        self.builder = ViewBuilder()
        self.live_builder = LiveViewBuilder()
        self.responses_builder = ResponsesViewBuilder()
        self.index_seq = -1
        self.conv_seq = -1
        self._summary_at = 0.0

    def run(self, post: Callable[[Message], object], cancelled: Callable[[], bool]) -> None:
        """Load everything recorded so far, then poll while the session is open; failures become a message."""
        try:
            self._run(post, cancelled)
        except (RtproxyError, sqlite3.Error) as e:
            post(LoadFailed(f"cannot read session {self.session_id}: {e}"))

    def _run(self, post: Callable[[Message], object], cancelled: Callable[[], bool]) -> None:
        with Store(self.db) as store:
            summary = data.load_session(store, self.session_id)
            if summary.dialect.startswith("live") and not isinstance(self.conversation, LiveSession):
                with self.lock:
                    self.conversation = LiveSession(keep_audio=True)
            if summary.dialect.startswith("responses") and not isinstance(self.conversation, ResponsesSession):
                with self.lock:
                    self.conversation = ResponsesSession()
            post(SessionLoaded(summary))
            live = summary.live
            if live:
                post(LiveChanged(True))
            for rows in data.index_chunks(store, self.session_id):
                if cancelled():
                    return
                self.index_seq = rows[-1][0]
                post(EventsAppended(rows, complete=False))
            post(EventsAppended([], complete=True))
            while not self.index_shown.wait(0.05):  # the list first, then the reducer
                if cancelled():
                    return
            self.feed_frames(store, post, cancelled)
            while live and not cancelled() and not self.stop.wait(self.poll_interval):
                live = self.poll(store, post, cancelled)
            if not live and summary.live:
                post(LiveChanged(False))

    def feed_frames(self, store: Store, post: Callable[[Message], object], cancelled: Callable[[], bool]) -> int:
        """Feed every frame after the last one fed; post snapshots as it goes. The number fed."""
        fed = 0
        last_post = time.monotonic()
        frames = note_speech_started(store.frames(self.session_id, after_seq=self.conv_seq), self.speech_started)
        done = False
        while not done and not cancelled():
            with self.lock:
                for _ in range(BATCH):
                    frame = next(frames, None)
                    if frame is None:
                        done = True
                        break
                    self.conversation.feed(frame)
                    self.conv_seq = frame.seq
                    fed += 1
                if not done and time.monotonic() - last_post >= SNAPSHOT_EVERY:
                    post(ConversationChanged(self.snapshot(), complete=False))
                    last_post = time.monotonic()
        if fed or self.conv_seq < 0:
            with self.lock:
                post(ConversationChanged(self.snapshot(), complete=True))
        return fed

    def snapshot(self) -> ConversationView:
        """The reducer's state for the UI thread (call with the lock held)."""
        conv = self.conversation
        if isinstance(conv, LiveSession):
            return self.live_builder.build(conv)
        if isinstance(conv, ResponsesSession):
            return self.responses_builder.build(conv)
        return self.builder.build(conv)

    def poll(self, store: Store, post: Callable[[Message], object], cancelled: Callable[[], bool]) -> bool:
        """One cheap look for new events; False once the session stopped recording."""
        status = data.session_status(store, self.session_id)
        rows = data.index_rows(store, self.session_id, after_seq=self.index_seq)
        if rows:
            self.index_seq = rows[-1][0]
            post(EventsAppended(rows, complete=True))
            self.feed_frames(store, post, cancelled)
        now = time.monotonic()
        if status != "open" or (rows and now - self._summary_at >= SUMMARY_EVERY):
            self._summary_at = now
            try:
                post(SessionLoaded(data.load_session(store, self.session_id)))
            except RtproxyError:  # deleted meanwhile
                pass
        return status == "open"
