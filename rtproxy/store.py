"""The SQLite store: schema, the columns extracted from frames, and queries.

Recording (the bounded ring the proxy writes into and the writer process
that inserts in batches) lives in :mod:`rtproxy.record.recorder`; ``Recorder`` is
importable from here too.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import SessionNotFound, StoreError
from .protocols.secrets import has_secret, redact_bytes, redact_text
from .protocols.wire import Direction, Frame, parse_event, skeleton

#: ``PRAGMA user_version`` once every migration below has run; a database with a higher one is refused.
SCHEMA_VERSION = 4

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
    "owner": str,
    "api": str,
    "variant": str,
    "api_session_id": str,
    "linked_to": str,
}

#: Columns of a session row that belong to the recorder that wrote it, not to the session (never exported or
#: imported).
OWNER_COLUMNS = ("owner_pid", "owner")

#: How long a recorder may go without a heartbeat before its open sessions count as interrupted.
STALE_AFTER = 10.0

#: Bodies of REST exchanges are kept up to this many bytes.
HTTP_BODY_CAP = 64 * 1024


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- session ids -------------------------------------------------------------------------


class _IdClock:
    """Milliseconds plus a counter that never repeats or goes back within a process (the clock may)."""

    COUNTER_MAX = 0xFFF

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0

    def next(self, now_ms: int) -> tuple[int, int]:
        with self.lock:
            if now_ms > self.last_ms:
                self.last_ms, self.counter = now_ms, 0
            elif self.counter < self.COUNTER_MAX:
                self.counter += 1
            else:  # 4096 ids in one millisecond (or a clock gone back): borrow the next millisecond
                self.last_ms, self.counter = self.last_ms + 1, 0
            return self.last_ms, self.counter


_id_clock = _IdClock()


def new_session_id(*, now_ms: int | None = None) -> str:
    """A time-ordered id that is unique by construction: ``20261124-115200-123000-3fa9c2d1``.

    UTC date and time to the millisecond, then a per-process counter (three hex digits: ids made in one
    process never repeat and sort in the order they were made, even when the clock goes back), then 32
    random bits (ids made by two processes in the same millisecond differ). Fixed width, so ids sort as
    strings in time order; the leading date and time is what people type a prefix of. Ids of the older
    ``20261124-115200-3fa9c2`` form are still read everywhere.
    """
    ms, counter = _id_clock.next(time.time_ns() // 1_000_000 if now_ms is None else now_ms)
    when = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    return f"{when:%Y%m%d-%H%M%S}-{ms % 1000:03d}{counter:03x}-{secrets.token_hex(4)}"


def insert_session_sql(columns: Iterable[str]) -> str:
    """A plain ``INSERT`` of a session row with these columns: a second row with the same id is refused
    (``sqlite3.IntegrityError``), never merged into the first (as ``INSERT OR REPLACE`` would)."""
    cols = list(columns)
    unknown = [c for c in cols if c not in SESSION_COLUMNS]
    if unknown:
        raise ValueError(f"not columns of sessions: {', '.join(unknown)}")
    return f"INSERT INTO sessions ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"


def insert_session(conn: sqlite3.Connection, fields: dict[str, Any]) -> None:
    """Insert a session row (not committed); :class:`StoreError` if a session with its id exists."""
    try:
        conn.execute(insert_session_sql(fields), tuple(fields.values()))
    except sqlite3.IntegrityError as e:
        raise StoreError(f"a session with id {fields.get('id')!r} is already recorded: {e}") from e


# --- opening a database, and its migrations ------------------------------------------------


def default_db_path() -> str:
    return os.environ.get("RTPROXY_DB") or "rtproxy.db"


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


#: Pages of new databases. Audio frames are 10-20 KB: in 4 KiB pages each is a chain of overflow pages, and
#: the writer's cost per 13 KB frame (insert, WAL, checkpoint) halves in 64 KiB pages (45 -> 22 us on a
#: 2-core x86 VM, batches of 250); older databases keep theirs.
PAGE_SIZE = 65536


def _create_private(path: str) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm the same mode).

    The directory must exist: a mistyped directory is an error, not a new tree of folders.
    """
    if path == ":memory:" or os.path.exists(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise StoreError(f"cannot create database {path}: directory {parent} {what}")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as e:
        raise StoreError(f"cannot create database {path}: {_reason(e)}") from e


def connect(path: str, *, create: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place (migrated if it was older).

    Anything the OS or SQLite refuses (a missing or unwritable directory, a file that is not a database,
    a newer schema) is a :class:`StoreError` naming the file.
    """
    if not create and path != ":memory:" and not os.path.exists(path):
        raise StoreError(f"no database at {path} (record a session with `rtproxy proxy` first)")
    if create:
        _create_private(path)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database {path}: {e}") from e
    try:
        if path == ":memory:" or os.path.getsize(path) == 0:  # only a database not yet written can choose it
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            _check_version(path, version)
            _migrate(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        if type(e) is sqlite3.DatabaseError:  # SQLITE_NOTADB and kin; OperationalError is the OS saying no
            raise StoreError(f"{path} is not an rtproxy database: {e}") from e
        raise StoreError(f"cannot use database {path}: {e}") from e
    except BaseException:
        conn.close()
        raise
    return conn


def _check_version(path: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer rtproxy (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade rtproxy to read it"
        )


def _sqlite_utils() -> Any:
    """``sqlite_utils``, imported without pandas and numpy.

    It imports both when they are installed, for data-frame column types we never use; in a proxy that is
    80 MB of memory at rest (measured: 127 MB RSS against 45). Where neither is loaded yet they are kept out
    for the length of this import only, so a program that imports them later gets them as usual.
    """
    held = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in held:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import sqlite_utils
    finally:
        for name in held:
            del sys.modules[name]
    return sqlite_utils


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Run the migrations a database has not had, under the write lock (two processes may open an old
    database at once: the second finds the work done)."""
    sqlite_utils = _sqlite_utils()  # only here: every writer process imports this module, few ever migrate

    db = sqlite_utils.Database(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        _check_version(path, version)
        if version < SCHEMA_VERSION:
            _migrations().apply(db)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _migrations() -> Any:
    """The schema, as a sequence of ``sqlite_utils`` migrations (recorded in ``_sqlite_migrations``).

    A database made before migrations were tracked (``user_version`` 1) has the tables of ``m001``
    already; creating them is then a no-op, and only the later steps change it.
    """
    _sqlite_utils()
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

    migrations = Migrations("rtproxy")

    @migrations()
    def m001_sessions_events_http(db: Database) -> None:
        later = ("owner", "api", "variant", "api_session_id", "linked_to")
        v1 = {k: v for k, v in SESSION_COLUMNS.items() if k not in later}
        counts = ("client_events", "server_events", "client_bytes", "server_bytes", "unrecorded")
        db.table("sessions").create(v1, pk="id", defaults=dict.fromkeys(counts, 0), if_not_exists=True)
        events = db.table("events")
        events.create(
            {
                "session_id": str,
                "seq": int,
                "t": float,
                "direction": str,
                "type": str,
                "event_id": str,
                "item_id": str,
                "response_id": str,
                "size": int,
                "text": str,
                "data": bytes,
            },
            not_null=("session_id", "seq", "t", "direction", "size"),
            if_not_exists=True,
        )
        events.create_index(["session_id", "seq"], index_name="events_session_seq", unique=True, if_not_exists=True)
        events.create_index(["session_id", "type"], index_name="events_session_type", if_not_exists=True)
        db.table("http").create(
            {
                "id": int,
                "session_id": str,
                "started_at": str,
                "method": str,
                "path": str,
                "query": str,
                "status": int,
                "request_headers": str,
                "response_headers": str,
                "request_body": str,
                "response_body": str,
                "request_size": int,
                "response_size": int,
                "duration_ms": float,
                "error": str,
            },
            pk="id",
            if_not_exists=True,
        )

    @migrations()
    def m002_recorders_and_session_owner(db: Database) -> None:
        db.table("recorders").create(
            {
                "token": str,
                "host": str,
                "pid": int,
                "pid_namespace": str,
                "started_at": str,
                "heartbeat": str,
                "retired_at": str,
            },
            pk="token",
            if_not_exists=True,
        )
        sessions = db.table("sessions")
        if "owner" not in sessions.columns_dict:
            sessions.add_column("owner", str)
        sessions.create_index(["status"], index_name="sessions_status", if_not_exists=True)

    @migrations()
    def m003_session_api_and_variant(db: Database) -> None:
        """Which WebSocket API a session spoke (realtime, live, responses, unknown) and its variant (Realtime:
        beta/ga; Live: primary/sideband/fork). Every session recorded before is a Realtime one."""
        sessions = db.table("sessions")
        for column in ("api", "variant"):
            if column not in sessions.columns_dict:
                sessions.add_column(column, str)
        db.execute("UPDATE sessions SET api = 'realtime', variant = dialect WHERE api IS NULL")
        sessions.create_index(["api"], index_name="sessions_api", if_not_exists=True)

    @migrations()
    def m004_session_links(db: Database) -> None:
        """The API's own id of a session (Live's ``session.started`` id, or the one a sideband's path names;
        Realtime's ``session.created`` id) and the rtproxy session it belongs with (a sideband's primary).
        Sessions recorded before have neither: they stay unlinked."""
        sessions = db.table("sessions")
        for column in ("api_session_id", "linked_to"):
            if column not in sessions.columns_dict:
                sessions.add_column(column, str)
        sessions.create_index(["api_session_id"], index_name="sessions_api_session_id", if_not_exists=True)

    return migrations


# --- links between sessions ---------------------------------------------------------------


def link_session(conn: sqlite3.Connection, session_id: str, api_session_id: str, variant: str | None) -> None:
    """Note a session's API id and link it with the sessions of the same API session (not committed).

    A sideband or fork links to the latest primary with that id; a primary, once it learns its id, takes the
    sidebands and forks recorded before it that found none.
    """
    conn.execute("UPDATE sessions SET api_session_id = ? WHERE id = ?", (api_session_id, session_id))
    if variant == "primary":
        conn.execute(
            "UPDATE sessions SET linked_to = ? WHERE api_session_id = ? AND id != ? AND linked_to IS NULL"
            " AND variant IN ('sideband', 'fork')",
            (session_id, api_session_id, session_id),
        )
        return
    row = conn.execute(
        "SELECT id FROM sessions WHERE api_session_id = ? AND id != ? AND variant = 'primary'"
        " ORDER BY started_at DESC, id DESC LIMIT 1",
        (api_session_id, session_id),
    ).fetchone()
    if row is not None:
        conn.execute("UPDATE sessions SET linked_to = ? WHERE id = ?", (row[0], session_id))


# --- recorders and the liveness of open sessions ----------------------------------------


def new_recorder_token() -> str:
    """A random token naming one recorder instance (one run of a proxy) in ``recorders``."""
    return secrets.token_hex(16)


def pid_namespace() -> str | None:
    """What makes a PID mean one process: this boot and this PID namespace (Linux); None where unknown.

    Two recorders with the same value see the same processes under the same PIDs, so one can tell that
    the other's process is gone. Elsewhere (macOS, Windows) nothing is concluded from a PID.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        ns = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}:{ns.st_dev}:{ns.st_ino}"


def register_recorder(
    conn: sqlite3.Connection,
    token: str,
    *,
    host: str | None = None,
    pid: int | None = None,
    namespace: str | None = None,
    started_at: str | None = None,
) -> None:
    """Record that the recorder `token` is alive (committed); its sessions carry ``owner = token``.

    `pid` is the recording process (the proxy's); `host` and `namespace` default to this machine's
    (:func:`pid_namespace`).
    """
    now = utcnow()
    with conn:
        conn.execute(
            "INSERT INTO recorders (token, host, pid, pid_namespace, started_at, heartbeat) VALUES (?, ?, ?, ?, ?, ?)",
            (
                token,
                host if host is not None else socket.gethostname(),
                pid,
                namespace if namespace is not None else pid_namespace(),
                started_at or now,
                now,
            ),
        )


def heartbeat(conn: sqlite3.Connection, token: str, *, commit: bool = True) -> bool:
    """Say the recorder `token` is still alive: one UPDATE (committed unless ``commit=False``, when the
    caller's next commit carries it). False if no live recorder has that token (retired, or never
    registered)."""
    cur = conn.execute("UPDATE recorders SET heartbeat = ? WHERE token = ? AND retired_at IS NULL", (utcnow(), token))
    if commit:
        conn.commit()
    return cur.rowcount == 1


def retire_recorder(conn: sqlite3.Connection, token: str) -> None:
    """Record that the recorder `token` has stopped (committed): sessions it left open are interrupted."""
    with conn:
        conn.execute("UPDATE recorders SET retired_at = ? WHERE token = ?", (utcnow(), token))


def _parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _pid_alive(pid: int | None) -> bool:
    """The rule for sessions written before recorders had tokens (``owner_pid`` only, same host assumed).

    Never on Windows: ``os.kill(pid, 0)`` terminates the process there; and no rtproxy that wrote such rows
    ran on Windows, so such a session's recorder is not alive on this machine.
    """
    if not pid:
        return False
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _pid_gone(pid: int) -> bool:
    """True only if no process has this PID (in our namespace: callers make sure it is the recorder's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def mark_interrupted(conn: sqlite3.Connection, stale_after: float = STALE_AFTER) -> int:
    """Sessions left `open` by a recorder that is gone become `interrupted`; returns how many.

    A session with an ``owner`` is gone when that recorder is retired, unknown, or has not sent a heartbeat
    for ``stale_after`` seconds; or at once when it ran on this host in this PID namespace (Linux) and its
    process no longer exists. A live PID alone never keeps a session open (PIDs are reused). A session
    without an owner (written before recorders had tokens) is judged by its ``owner_pid``. Sessions of a
    live recorder stay open.
    """
    now = dt.datetime.now(dt.UTC)
    here, namespace = socket.gethostname(), pid_namespace()
    rows = conn.execute(
        "SELECT s.id, s.owner, s.owner_pid, r.token, r.heartbeat, r.retired_at, r.host, r.pid, r.pid_namespace"
        " FROM sessions s LEFT JOIN recorders r ON r.token = s.owner WHERE s.status = 'open'"
    ).fetchall()
    dead = []
    for sid, owner, owner_pid, token, beat, retired, host, pid, their_namespace in rows:
        if owner is None:
            alive = _pid_alive(owner_pid)
        elif token is None or retired is not None:
            alive = False
        elif namespace is not None and their_namespace == namespace and host == here and pid and _pid_gone(pid):
            alive = False
        else:
            last = _parse_time(beat)
            alive = last is not None and (now - last).total_seconds() <= stale_after
        if not alive:
            dead.append(sid)
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
                " duration=?, client_events=?, server_events=?, client_bytes=?, server_bytes=?"
                " WHERE id=? AND status='open'",
                (last[0] or 0.0, last[2] or 0, last[3] or 0, last[4] or 0, last[5] or 0, sid),
            )
    return len(dead)


# --- extracting the columns queries need -------------------------------------------


def describe(data: str | bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(type, event_id, item_id, response_id) of a frame; Nones if not a JSON object."""
    if not isinstance(data, str) or not data.startswith("{"):
        return None, None, None, None
    try:
        ev = orjson.loads(skeleton(data))
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


# --- the Recorder lives in rtproxy.record.recorder (which builds on this module) ------------


def __getattr__(name: str) -> Any:
    """``from rtproxy.store import Recorder`` keeps working; the class lives in :mod:`rtproxy.record.recorder`."""
    if name in ("Recorder", "RecorderStats"):
        from .record import recorder

        return getattr(recorder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .conversation.cost import SessionCost
    from .record.recorder import Recorder as Recorder
    from .record.recorder import RecorderStats as RecorderStats


# --- reading ------------------------------------------------------------------------


class Store:
    """Read access (and imports, deletes) for the CLI, TUI and replay."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = str(path)
        self.conn = connect(self.path, create=create)
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sessions(self, *, limit: int | None = None, api: str | None = None) -> list[dict[str, Any]]:
        """Sessions newest first (only those of one API if `api` is given), with live counts for sessions still
        open."""
        sql = "SELECT * FROM sessions" + (" WHERE api = ?" if api else "") + " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [dict(r) for r in self.conn.execute(sql, (api,) if api else ())]
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

    def event_type_counts(self, session_id: str) -> list[dict[str, Any]]:
        """How many events of each type each side sent: ``[{"direction", "type", "count"}]``."""
        rows = self.conn.execute(
            "SELECT direction, type, count(*) FROM events WHERE session_id = ? GROUP BY 1, 2 ORDER BY 1, 2",
            (session_id,),
        ).fetchall()
        return [{"direction": d, "type": t, "count": n} for d, t, n in rows]

    def session_cost(self, session_id: str, row: dict[str, Any] | None = None) -> SessionCost:
        """What a stored session cost, from the server events that carry its usage (through the type index)."""
        from .conversation.cost import USAGE_EVENTS, session_cost

        row = row if row is not None else self.session(session_id)
        api = row.get("api") or "realtime"
        events = self.server_events_of_types(session_id, USAGE_EVENTS.get(api, frozenset()))
        return session_cost(api, row.get("model"), events, when=row.get("started_at"))

    def server_events_of_types(self, session_id: str, types: Iterable[str]) -> Iterator[dict[str, Any]]:
        """The server's JSON events of the given types, in seq order (through the (session_id, type) index)."""
        wanted = sorted(set(types))
        if not wanted:
            return
        marks = ",".join("?" * len(wanted))
        cur = self.conn.execute(
            f"SELECT text FROM events WHERE session_id = ? AND direction = 'server' AND type IN ({marks})"
            " AND text IS NOT NULL ORDER BY seq",
            (session_id, *wanted),
        )
        cur.row_factory = None
        for (text,) in cur:
            event = parse_event(text)
            if event is not None:
                yield event

    def linked_sessions(self, session_id: str) -> list[dict[str, Any]]:
        """The sessions linked with this one, both ways (its primary, if it is a sideband; its sidebands and
        forks, if it is a primary), oldest first; each with ``relation``: ``primary`` or ``sideband``/``fork``."""
        rows = self.conn.execute(
            "SELECT id, started_at, api, variant, status, api_session_id, linked_to FROM sessions"
            " WHERE id = (SELECT linked_to FROM sessions WHERE id = ?) OR linked_to = ?"
            " ORDER BY started_at, id",
            (session_id, session_id),
        ).fetchall()
        out = []
        for r in rows:
            row = dict(r)
            row["relation"] = (row["variant"] or "linked") if row["linked_to"] == session_id else "primary"
            out.append(row)
        return out

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

        A session whose id is already present is never replaced: the import gets a fresh id, so importing
        the same file twice keeps both copies (compare the returned id with the file's to tell).
        """
        fields = {
            k: v for k, v in session.items() if k in SESSION_COLUMNS and k not in OWNER_COLUMNS and k != "linked_to"
        }
        fields.setdefault("started_at", utcnow())
        if not fields.get("api"):  # a recording made before sessions carried their API: a Realtime one
            fields["api"] = "realtime"
            fields.setdefault("variant", fields.get("dialect"))
        if fields.get("status") in (None, "open"):
            fields["status"] = "closed"
        wanted = fields.get("id")
        sid = wanted if isinstance(wanted, str) and wanted else new_session_id()
        with self.conn:
            for _ in range(8):  # a fresh id is unique by construction; the bound only keeps the loop finite
                fields["id"] = sid
                try:
                    insert_session(self.conn, _clean(fields))
                    break
                except StoreError:
                    sid = new_session_id()
            else:
                raise StoreError(f"could not find a free session id in {self.path}")
            self.conn.executemany(INSERT_EVENT, (frame_row(sid, f.seq, f.t, f.direction.value, f.data) for f in frames))
            api_sid = fields.get("api_session_id")
            if isinstance(api_sid, str) and api_sid:  # a sideband finds its primary here (and the other way)
                link_session(self.conn, sid, api_sid, fields.get("variant"))
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
