"""Schema migrations: a database made by the previous rtproxy (schema 1) opens, upgrades once, and keeps its data.

The schema-1 database is built here from the SQL that rtproxy wrote before migrations were tracked, frozen
below, then opened by the current code: in-process, by several processes at once, and by the CLI.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson

from rtproxy.store import PAGE_SIZE, SCHEMA_VERSION, Store, connect, mark_interrupted
from tests.conftest import rtproxy_exe

#: The schema as rtproxy created it at user_version 1 (before `recorders` and `sessions.owner`).
SCHEMA_V1 = """
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

CLOSED, OPEN = "20261124-115200-3fa9c2", "20261124-115300-0b1c2d"


def make_v1(path: Path, open_pid: int) -> None:
    """A schema-1 database with a closed session (two frames, one REST exchange) and one left open."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO sessions (id, started_at, status, model, client_events, server_events, label, owner_pid)"
        " VALUES (?, '2026-11-24T11:52:00.000Z', 'closed', 'gpt-realtime', 1, 1, 'old', 4242)",
        (CLOSED,),
    )
    conn.execute(
        "INSERT INTO sessions (id, started_at, status, owner_pid) VALUES (?, '2026-11-24T11:53:00.000Z', 'open', ?)",
        (OPEN, open_pid),
    )
    for seq, (direction, text) in enumerate([("client", '{"type":"session.update"}'), ("server", '{"type":"x"}')]):
        conn.execute(
            "INSERT INTO events (session_id, seq, t, direction, type, size, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (CLOSED, seq, seq * 0.5, direction, orjson.loads(text)["type"], len(text), text),
        )
    conn.execute("INSERT INTO http (session_id, method, path, status) VALUES (?, 'POST', '/v1/x', 200)", (CLOSED,))
    conn.commit()
    conn.close()


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def test_a_schema_1_database_is_upgraded_in_place_and_keeps_every_row(tmp_path: Path) -> None:
    """Opening a schema-1 database adds `recorders`, `sessions.owner`, `sessions.api` and `.variant` (its
    sessions become Realtime ones of their dialect), `sessions.api_session_id` and `.linked_to` (empty), records
    the migrations, sets the new user_version, and keeps
    its sessions, frames and REST exchanges readable."""
    db = tmp_path / "old.db"
    make_v1(db, dead_pid())
    conn = connect(str(db))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        kinds = conn.execute("SELECT DISTINCT api, coalesce(variant, dialect, '-') FROM sessions").fetchall()
        dialects = conn.execute("SELECT DISTINCT 'realtime', coalesce(dialect, '-') FROM sessions").fetchall()
        assert kinds and sorted(kinds) == sorted(dialects)
        assert "owner" in columns(conn, "sessions") and "owner_pid" in columns(conn, "sessions")
        assert columns(conn, "recorders") == [
            "token",
            "host",
            "pid",
            "pid_namespace",
            "started_at",
            "heartbeat",
            "retired_at",
        ]
        applied = conn.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id").fetchall()
        assert applied == [
            ("rtproxy", "m001_sessions_events_http"),
            ("rtproxy", "m002_recorders_and_session_owner"),
            ("rtproxy", "m003_session_api_and_variant"),
            ("rtproxy", "m004_session_links"),
        ]
        assert {"api_session_id", "linked_to"} <= set(columns(conn, "sessions"))
        assert conn.execute("SELECT count(*) FROM sessions WHERE api_session_id IS NOT NULL").fetchone()[0] == 0
    finally:
        conn.close()
    with Store(db) as store:
        assert store.session(CLOSED)["label"] == "old"
        assert [f.data for f in store.frames(CLOSED)] == ['{"type":"session.update"}', '{"type":"x"}']
        assert [h["path"] for h in store.http_exchanges(CLOSED)] == ["/v1/x"]
        assert store.resolve("20261124-1153") == OPEN
        assert mark_interrupted(store.conn) == 1  # the open one's old proxy is gone: judged by its pid
        assert store.session(OPEN)["status"] == "interrupted"


def test_a_fresh_database_and_an_upgraded_one_have_the_same_columns(tmp_path: Path) -> None:
    """Created new or migrated from schema 1, every table ends with the same columns and indexes."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    make_v1(old, dead_pid())
    shapes = []
    for path in (old, new):
        conn = connect(str(path))
        try:
            tables = ("sessions", "events", "http", "recorders")
            indexes = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'"))
            shapes.append(({t: columns(conn, t) for t in tables}, indexes))
        finally:
            conn.close()
    assert shapes[0] == shapes[1]


def test_several_processes_opening_an_old_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Three processes open the same schema-1 database at the same moment: all succeed, each migration is
    recorded once, and no row is lost."""
    db = tmp_path / "old.db"
    make_v1(db, dead_pid())
    code = (
        "import sys\nsys.stdin.read()\nfrom rtproxy.store import connect\n"
        "c = connect(sys.argv[1]); print(c.execute('SELECT count(*) FROM sessions').fetchone()[0])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for _ in range(3)
    ]
    for p in procs:  # all are started (and importing) before any of them opens the database
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        p.wait(timeout=60)  # their output is a line or a short error: it fits in the pipe
    results = [(p.stdout.read(), p.stderr.read()) for p in procs if p.stdout is not None and p.stderr is not None]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert [out.strip() for out, _ in results] == ["2", "2", "2"]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 4
    finally:
        conn.close()


def test_the_cli_reads_a_schema_1_database(tmp_path: Path) -> None:
    """`rtproxy sessions --json` on a schema-1 database upgrades it and lists its sessions."""
    db = tmp_path / "old.db"
    make_v1(db, dead_pid())
    done = subprocess.run(
        [*rtproxy_exe(), "sessions", "--db", str(db), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert sorted(s["id"] for s in orjson.loads(done.stdout)) == [CLOSED, OPEN]


def test_new_databases_get_large_pages_and_old_ones_keep_theirs(tmp_path: Path) -> None:
    """A new database is made with 64 KiB pages (audio frames fit a page); one written before keeps its own."""
    new = connect(str(tmp_path / "new.db"))
    assert new.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 65536
    new.close()
    old_path = tmp_path / "old.db"
    old = sqlite3.connect(old_path)
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE notes (x)")
    old.commit()
    old.close()
    conn = connect(str(old_path))  # migrated in place: the schema is added, the page size stays
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def make_v3(path: Path) -> None:
    """A schema-3 database (what rtproxy made before session links) with one Live session."""
    conn = connect(str(path))
    conn.close()
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX sessions_api_session_id")
    raw.execute("ALTER TABLE sessions DROP COLUMN linked_to")
    raw.execute("ALTER TABLE sessions DROP COLUMN api_session_id")
    raw.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_session_links'")
    raw.execute("PRAGMA user_version=3")
    raw.execute(
        "INSERT INTO sessions (id, started_at, status, api, variant, path) VALUES"
        " ('20261201-100000-aaaaaa', '2026-12-01T10:00:00.000Z', 'closed', 'live', 'primary', '/v1/live/sessions')"
    )
    raw.commit()
    raw.close()


def test_a_schema_3_database_gains_session_links_and_keeps_its_sessions(tmp_path: Path) -> None:
    """m004 adds `api_session_id` and `linked_to` to a schema-3 database; its sessions stay, unlinked, and the
    CLI lists them with the new fields in --json."""
    db = tmp_path / "v3.db"
    make_v3(db)
    raw = sqlite3.connect(db)
    assert "linked_to" not in [r[1] for r in raw.execute("PRAGMA table_info(sessions)")]
    raw.close()
    done = subprocess.run(
        [*rtproxy_exe(), "sessions", "--db", str(db), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (row,) = orjson.loads(done.stdout)
    assert row["api"] == "live" and row["api_session_id"] is None and row["linked_to"] is None
    assert row["linked"] == []
    with Store(db) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert store.linked_sessions(row["id"]) == []


def test_migrating_loads_neither_pandas_nor_numpy(tmp_path: Path) -> None:
    """sqlite-utils imports pandas and numpy when they are installed (the test extra installs them): a proxy
    or writer that migrates a database must not carry them (80 MB at rest); a later import still works."""
    code = (
        "import sys; from rtproxy.store import connect; connect(sys.argv[1]).close(); "
        "print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules)); import numpy; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "new.db")], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["[]", "ok"]
