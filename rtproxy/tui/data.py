"""What the TUI's workers read from the store, one connection per worker thread.

Nothing here runs on the UI thread: screens call these from
``@work(thread=True)`` workers and post the results as messages. Each
function opens its own :class:`~rtproxy.store.Store` (SQLite connections are
not shared between threads) unless handed one by a long-running worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..cli.render import api_label
from ..protocols.wire import Frame
from ..store import Store
from .index import Row

#: Rows fetched per round trip when loading a big session's index.
INDEX_CHUNK = 50_000


@dataclass(frozen=True)
class SessionSummary:
    """One line of the sessions table."""

    id: str
    started_at: str
    duration: float | None
    model: str
    dialect: str  # api/variant: realtime/ga, live/sideband, responses (see render.api_label)
    status: str
    events: int
    tokens: int | None
    label: str
    path: str
    cost: str = ""  # Cost.brief(): $0.0302, bounds, or ?

    @property
    def live(self) -> bool:
        return self.status == "open"

    def matches(self, needle: str) -> bool:
        hay = " ".join((self.id, self.started_at, self.model, self.dialect, self.status, self.label, self.path))
        return needle.lower() in hay.lower()


def summarise(row: dict[str, Any], tokens: int | None = None, cost: str = "") -> SessionSummary:
    return SessionSummary(
        id=str(row["id"]),
        started_at=str(row.get("started_at") or ""),
        duration=row.get("duration"),
        model=str(row.get("model") or ""),
        dialect=api_label(row),
        status=str(row.get("status") or ""),
        events=int(row.get("client_events") or 0) + int(row.get("server_events") or 0),
        tokens=tokens,
        label=str(row.get("label") or ""),
        path=str(row.get("path") or ""),
        cost=cost,
    )


def session_tokens(store: Store, session_ids: list[str]) -> dict[str, int]:
    """Total tokens per session, summed from the usage of its `response.done` events."""
    out: dict[str, int] = {}
    for sid in session_ids:
        total = session_tokens_for(store, sid)
        if total is not None:
            out[sid] = total
    return out


def load_sessions(db: str) -> list[SessionSummary]:
    """All sessions, newest first."""
    with Store(db) as store:
        rows = store.sessions()
        tokens = session_tokens(store, [r["id"] for r in rows])
        return [summarise(r, tokens.get(r["id"]), store.session_cost(r["id"], r).total.brief()) for r in rows]


def sessions_fingerprint(db: str) -> tuple[Any, ...]:
    """Something that changes when the sessions table would: cheap enough to poll every second."""
    with Store(db) as store:
        head = tuple(store.conn.execute("SELECT count(*), max(id), max(ended_at) FROM sessions").fetchone())
        live = store.conn.execute(
            "SELECT s.id, s.status, (SELECT max(seq) FROM events e WHERE e.session_id = s.id)"
            " FROM sessions s WHERE s.status = 'open'"
        ).fetchall()
        return head + tuple(tuple(r) for r in live)


def delete_session(db: str, session_id: str) -> None:
    with Store(db) as store:
        store.delete_session(session_id)


def load_session(store: Store, session_id: str) -> SessionSummary:
    row = store.session(session_id)
    return summarise(row, session_tokens_for(store, session_id), store.session_cost(session_id, row).total.brief())


def session_status(store: Store, session_id: str) -> str | None:
    """A session's status, None if it is gone: one indexed lookup, for polling."""
    row = store.conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return None if row is None else str(row[0])


def session_tokens_for(store: Store, session_id: str) -> int | None:
    """Tokens of a session's responses: the integer total_tokens of each response.done, whatever else they hold.

    ``total()`` (a float, never an overflow) of the values that are JSON integers: a string, a list or a
    number too big for SQLite in one event must not make the screen fail.
    """
    row = store.conn.execute(
        "SELECT count(v), total(v) FROM (SELECT CASE WHEN json_valid(text)"
        " AND json_type(text, '$.response.usage.total_tokens') = 'integer'"
        " THEN json_extract(text, '$.response.usage.total_tokens') END AS v"
        " FROM events WHERE session_id = ? AND type = 'response.done')",
        (session_id,),
    ).fetchone()
    if not row[0] or not math.isfinite(row[1]):
        return None
    return int(row[1])


def index_rows(store: Store, session_id: str, *, after_seq: int = -1, limit: int | None = None) -> list[Row]:
    """Index rows (no payloads) as plain tuples: the lean form of :meth:`Store.event_rows`."""
    sql = (
        "SELECT seq, t, direction, type, item_id, response_id, size FROM events"
        " WHERE session_id = ? AND seq > ? ORDER BY seq"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    cur = store.conn.execute(sql, (session_id, after_seq))
    cur.row_factory = None
    rows: list[Row] = cur.fetchall()
    return rows


def index_chunks(
    store: Store, session_id: str, *, after_seq: int = -1, chunk: int = INDEX_CHUNK
) -> Iterator[list[Row]]:
    """All index rows after a seq, in chunks (the first one small, so the list shows at once)."""
    size = min(chunk, 2_000)
    while True:
        rows = index_rows(store, session_id, after_seq=after_seq, limit=size)
        if rows:
            yield rows
        if len(rows) < size:
            return
        after_seq = rows[-1][0]
        size = chunk


def load_frame(db: str, session_id: str, seq: int) -> Frame | None:
    with Store(db) as store:
        return store.frame(session_id, seq)


def search_text(db: str, session_id: str, needle: str) -> frozenset[int]:
    """Seqs of the events whose payload contains a text (case-insensitive for ASCII)."""
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with Store(db) as store:
        rows = store.conn.execute(
            "SELECT seq FROM events WHERE session_id = ? AND text LIKE ? ESCAPE '\\'", (session_id, pattern)
        ).fetchall()
    return frozenset(int(r[0]) for r in rows)
