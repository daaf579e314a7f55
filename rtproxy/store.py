"""The SQLite store: schema, the columns extracted from frames, and queries.

Recording (the bounded ring the proxy writes into and the writer process
that inserts in batches) lives in :mod:`rtproxy.recorder`; ``Recorder`` is
importable from here too.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import SessionNotFound, StoreError
from .protocol import Direction, Frame, has_secret, redact_bytes, redact_text

SCHEMA_VERSION = 1

SESSION_COLUMNS: dict[str, type] = {
    "id": str,
    "started_at": str,
    "ended_at": str,
    "path": str,
    "query": str,
    "model": str,
    "dialect": str,
    "upstream": str,
    "client_addr": str,
    "request_headers": str,
    "response_headers": str,
    "subprotocol": str,
    "status": str,
    "reason": str,
    "closed_by": str,
    "client_close_code": int,
    "client_close_reason": str,
    "server_close_code": int,
    "server_close_reason": str,
    "client_events": int,
    "server_events": int,
    "client_bytes": int,
    "server_bytes": int,
    "unrecorded": int,
    "duration": float,
    "label": str,
    "owner_pid": int,
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    started_at TEXT, ended_at TEXT, path TEXT, query TEXT, model TEXT, dialect TEXT,
    upstream TEXT, client_addr TEXT, request_headers TEXT, response_headers TEXT,
    subprotocol TEXT, status TEXT, reason TEXT, closed_by TEXT,
    client_close_code INTEGER, client_close_reason TEXT,
    server_close_code INTEGER, server_close_reason TEXT,
    client_events INTEGER DEFAULT 0, server_events INTEGER DEFAULT 0,
    client_bytes INTEGER DEFAULT 0, server_bytes INTEGER DEFAULT 0,
    unrecorded INTEGER DEFAULT 0, duration REAL, label TEXT, owner_pid INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, t REAL NOT NULL, direction TEXT NOT NULL,
    type TEXT, event_id TEXT, item_id TEXT, response_id TEXT, size INTEGER NOT NULL,
    text TEXT, data BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS events_session_seq ON events (session_id, seq);
CREATE INDEX IF NOT EXISTS events_session_type ON events (session_id, type);
CREATE TABLE IF NOT EXISTS http (
    id INTEGER PRIMARY KEY, session_id TEXT, started_at TEXT, method TEXT, path TEXT, query TEXT,
    status INTEGER, request_headers TEXT, response_headers TEXT,
    request_body TEXT, response_body TEXT, request_size INTEGER, response_size INTEGER,
    duration_ms REAL, error TEXT
);
"""

#: Bodies of REST exchanges are kept up to this many bytes.
HTTP_BODY_CAP = 64 * 1024


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_session_id() -> str:
    """A sortable, readable id: ``20261124-115200-3fa9c2``."""
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def default_db_path() -> str:
    return os.environ.get("RTPROXY_DB") or "rtproxy.db"


def _create_private(path: str) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm the same mode)."""
    if path != ":memory:" and not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def connect(path: str, *, create: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place."""
    if not create and path != ":memory:" and not os.path.exists(path):
        raise StoreError(f"no database at {path} (record a session with `rtproxy proxy` first)")
    if create:
        _create_private(path)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not an rtproxy database: {e}") from e
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"{path} was written by a newer rtproxy (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade rtproxy to read it"
        )
    if version < SCHEMA_VERSION:
        _migrate(conn, version)
    return conn


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a database up to SCHEMA_VERSION, one step at a time."""
    with conn:
        if version < 1:
            conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_interrupted(conn: sqlite3.Connection) -> int:
    """Sessions left `open` by a recorder that is gone become `interrupted`."""
    rows = conn.execute("SELECT id, owner_pid FROM sessions WHERE status = 'open'").fetchall()
    dead = [sid for sid, pid in rows if not _pid_alive(pid)]
    with conn:
        for sid in dead:
            last = conn.execute(
                "SELECT max(t), count(*), "
                "sum(direction='client'), sum(direction='server'), "
                "sum(CASE WHEN direction='client' THEN size END), sum(CASE WHEN direction='server' THEN size END) "
                "FROM events WHERE session_id = ?",
                (sid,),
            ).fetchone()
            conn.execute(
                "UPDATE sessions SET status='interrupted', reason=coalesce(reason, 'recorder stopped without closing'),"
                " duration=?, client_events=?, server_events=?, client_bytes=?, server_bytes=? WHERE id=?",
                (last[0] or 0.0, last[2] or 0, last[3] or 0, last[4] or 0, last[5] or 0, sid),
            )
    return len(dead)


# --- extracting the columns queries need -------------------------------------------


def describe(data: str | bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(type, event_id, item_id, response_id) of a frame; Nones if not a JSON object."""
    if not isinstance(data, str) or not data.startswith("{"):
        return None, None, None, None
    try:
        ev = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None, None, None
    if not isinstance(ev, dict):
        return None, None, None, None
    typ = ev.get("type")
    item_id = ev.get("item_id")
    if item_id is None:
        item = ev.get("item")
        if isinstance(item, dict):
            item_id = item.get("id")
    response_id = ev.get("response_id")
    if response_id is None:
        resp = ev.get("response")
        if isinstance(resp, dict):
            response_id = resp.get("id")
    return _s(typ), _s(ev.get("event_id")), _s(item_id), _s(response_id)


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def frame_row(session_id: str, seq: int, t: float, direction: str, data: str | bytes) -> tuple[Any, ...]:
    """The `events` row for a frame, with anything key-shaped masked."""
    if isinstance(data, str):
        size = len(data.encode("utf-8")) if not data.isascii() else len(data)
        if has_secret(data):
            data = redact_text(data)
        typ, eid, iid, rid = describe(data)
        return (session_id, seq, t, direction, typ, eid, iid, rid, size, data, None)
    size = len(data)
    return (session_id, seq, t, direction, None, None, None, None, size, None, redact_bytes(data))


INSERT_EVENT = (
    "INSERT OR REPLACE INTO events"
    " (session_id, seq, t, direction, type, event_id, item_id, response_id, size, text, data)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


def _body_text(body: bytes) -> str:
    head = body[:HTTP_BODY_CAP]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes of binary>"
    if len(body) > HTTP_BODY_CAP:
        text += f"… <{len(body) - HTTP_BODY_CAP} more bytes>"
    return redact_text(text)


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Row values SQLite takes: dicts and lists as JSON text, secrets masked."""
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, dict | list):
            v = orjson.dumps(v).decode()
        if isinstance(v, str):
            v = redact_text(v)
        out[k] = v
    return out


# --- the Recorder lives in rtproxy.recorder (which builds on this module) ------------


def __getattr__(name: str) -> Any:
    """``from rtproxy.store import Recorder`` keeps working; the class lives in :mod:`rtproxy.recorder`."""
    if name in ("Recorder", "RecorderStats"):
        from . import recorder

        return getattr(recorder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .recorder import Recorder as Recorder
    from .recorder import RecorderStats as RecorderStats


# --- reading ------------------------------------------------------------------------


class Store:
    """Read access (and imports, deletes) for the CLI, TUI and replay."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = str(path)
        self.conn = connect(self.path, create=create)
        self.conn.row_factory = sqlite3.Row

    @property
    def db(self) -> Any:
        """The connection as a ``sqlite_utils.Database`` (imported lazily: every writer process imports this module)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sessions(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Sessions newest first, with live counts for sessions still open."""
        sql = "SELECT * FROM sessions ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [dict(r) for r in self.conn.execute(sql)]
        for row in rows:
            if row["status"] == "open":
                row.update(self._live_counts(row["id"]))
        return rows

    def _live_counts(self, session_id: str) -> dict[str, Any]:
        r = self.conn.execute(
            "SELECT max(t), sum(direction='client'), sum(direction='server'),"
            " sum(CASE WHEN direction='client' THEN size END), sum(CASE WHEN direction='server' THEN size END)"
            " FROM events WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        return {
            "duration": r[0] or 0.0,
            "client_events": r[1] or 0,
            "server_events": r[2] or 0,
            "client_bytes": r[3] or 0,
            "server_bytes": r[4] or 0,
        }

    def resolve(self, ref: str) -> str:
        """A session id from an id, a unique id prefix, or ``latest``."""
        if ref == "latest":
            row = self.conn.execute("SELECT id FROM sessions ORDER BY started_at DESC, id DESC LIMIT 1").fetchone()
            if row is None:
                raise SessionNotFound(ref, [])
            return str(row[0])
        ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM sessions WHERE id = ? OR id LIKE ? ESCAPE '\\'", (ref, _like_prefix(ref))
            )
        ]
        if ref in ids:
            return ref
        if len(ids) == 1:
            return str(ids[0])
        if len(ids) > 1:
            raise SessionNotFound(ref, sorted(ids), ambiguous=True)
        everything = [r[0] for r in self.conn.execute("SELECT id FROM sessions")]
        close = difflib.get_close_matches(ref, everything, n=5, cutoff=0.5)
        if not close:
            close = [i for i in everything if ref in i][:5]
        raise SessionNotFound(ref, close)

    def session(self, session_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise SessionNotFound(session_id, [])
        out = dict(row)
        if out["status"] == "open":
            out.update(self._live_counts(session_id))
        return out

    def frames(self, session_id: str, *, after_seq: int = -1, limit: int | None = None) -> Iterator[Frame]:
        """Frames of a session in seq order, those with seq > after_seq."""
        sql = "SELECT seq, t, direction, text, data FROM events WHERE session_id = ? AND seq > ? ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cur = self.conn.execute(sql, (session_id, after_seq))
        cur.row_factory = None
        directions = {d.value: d for d in Direction}
        while True:
            chunk = cur.fetchmany(4096)
            if not chunk:
                return
            for seq, t, direction, text, data in chunk:
                yield Frame(seq, t, directions[direction], text if text is not None else bytes(data or b""))

    def event_rows(self, session_id: str, *, after_seq: int = -1, limit: int | None = None) -> list[dict[str, Any]]:
        """Event index rows (no payloads): seq, t, direction, type, ids, size."""
        sql = (
            "SELECT seq, t, direction, type, event_id, item_id, response_id, size FROM events"
            " WHERE session_id = ? AND seq > ? ORDER BY seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [dict(r) for r in self.conn.execute(sql, (session_id, after_seq))]

    def frame(self, session_id: str, seq: int) -> Frame | None:
        return next(self.frames(session_id, after_seq=seq - 1, limit=1), None)

    def count_events(self, session_id: str) -> int:
        return int(self.conn.execute("SELECT count(*) FROM events WHERE session_id = ?", (session_id,)).fetchone()[0])

    def http_exchanges(self, session_id: str | None = None) -> list[dict[str, Any]]:
        if session_id is None:
            return [dict(r) for r in self.conn.execute("SELECT * FROM http ORDER BY id")]
        rows = self.conn.execute("SELECT * FROM http WHERE session_id = ? ORDER BY id", (session_id,))
        return [dict(r) for r in rows]

    def delete_session(self, session_id: str) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            self.conn.execute("DELETE FROM http WHERE session_id = ?", (session_id,))
            self.conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def import_session(self, session: dict[str, Any], frames: Iterable[Frame]) -> str:
        """Insert a whole session in one transaction; returns its id.

        A session whose id is already present gets a fresh id, so importing
        the same file twice keeps both copies.
        """
        fields = {k: v for k, v in session.items() if k in SESSION_COLUMNS}
        sid = str(fields.get("id") or new_session_id())
        if self.conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone():
            sid = new_session_id()
        fields["id"] = sid
        fields.setdefault("started_at", utcnow())
        if fields.get("status") in (None, "open"):
            fields["status"] = "closed"
        fields.pop("owner_pid", None)
        clean = _clean(fields)
        with self.conn:
            cols = ", ".join(clean)
            self.conn.execute(
                f"INSERT INTO sessions ({cols}) VALUES ({', '.join('?' for _ in clean)})", tuple(clean.values())
            )
            self.conn.executemany(INSERT_EVENT, (frame_row(sid, f.seq, f.t, f.direction.value, f.data) for f in frames))
        return sid

    def replace_frames(self, session_id: str, frames: Iterable[Frame]) -> None:
        """Rewrite a session's frames (used by `redact`)."""
        with self.conn:
            self.conn.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            self.conn.executemany(
                INSERT_EVENT, (frame_row(session_id, f.seq, f.t, f.direction.value, f.data) for f in frames)
            )


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
