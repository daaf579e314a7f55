"""Session ids: unique by construction, time-ordered, old ids still read; an insert never replaces a session.

Real SQLite files in tmp_path, real processes for ids made at once, the `rtproxy` console script for import.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rtproxy.errors import StoreError
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import write_recording
from rtproxy.store import Store, insert_session, insert_session_sql, new_session_id
from tests.conftest import rtproxy_exe

NEW_ID = re.compile(r"^\d{8}-\d{6}-\d{3}[0-9a-f]{3}-[0-9a-f]{8}$")
OLD_ID = "20261124-115200-3fa9c2"


def frames(n: int, tag: str) -> list[Frame]:
    return [
        Frame(i, i * 0.1, Direction.CLIENT if i % 2 else Direction.SERVER, f'{{"type":"{tag}.{i}"}}') for i in range(n)
    ]


def test_ids_made_in_one_process_never_repeat_and_sort_in_the_order_they_were_made() -> None:
    """Ids made quickly in one process are all distinct, of the documented shape, and sort as strings in order made."""
    ids = [new_session_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    assert all(NEW_ID.match(i) for i in ids[:100])
    assert ids[0][:15] <= ids[-1][:15]  # the readable date-time prefix people type


def test_ids_stay_unique_and_ordered_when_a_millisecond_overflows_or_the_clock_goes_back() -> None:
    """More ids than the counter holds in one millisecond, then a clock that goes back: still distinct and in order."""
    base = 1_900_000_000_000
    same_ms = [new_session_id(now_ms=base) for _ in range(5000)]
    backwards = [new_session_id(now_ms=base - 60_000) for _ in range(10)]
    ids = same_ms + backwards
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    assert same_ms[0].startswith("20300317-") and same_ms[0] < same_ms[4096]


def test_ids_made_by_several_processes_at_once_never_collide(tmp_path: Path) -> None:
    """Four processes making ids in the same milliseconds produce no id twice."""
    code = "from rtproxy.store import new_session_id\nprint('\\n'.join(new_session_id() for _ in range(5000)))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ})
        for _ in range(4)
    ]
    ids: list[str] = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        ids += out.split()
    assert len(ids) == 20_000 and len(set(ids)) == 20_000


def test_insert_session_refuses_a_second_row_with_an_id_and_keeps_the_first(tmp_path: Path) -> None:
    """A plain INSERT: a second session with the same id is an error and the first row is untouched."""
    with Store(tmp_path / "rt.db", create=True) as store:
        sid = new_session_id()
        with store.conn:
            insert_session(store.conn, {"id": sid, "status": "closed", "label": "first"})
        with pytest.raises(StoreError, match=sid), store.conn:
            insert_session(store.conn, {"id": sid, "status": "open", "label": "second"})
        assert [tuple(r) for r in store.conn.execute("SELECT label, status FROM sessions")] == [("first", "closed")]
        assert insert_session_sql(["id", "label"]) == "INSERT INTO sessions (id, label) VALUES (?, ?)"
        with pytest.raises(ValueError, match="nope"):
            insert_session_sql(["id", "nope"])


def test_ids_of_the_old_form_are_read_resolved_and_listed_alongside_new_ones(tmp_path: Path) -> None:
    """A session with an old-style id imports under that id, resolves by prefix, and lists next to new-style ids."""
    with Store(tmp_path / "rt.db", create=True) as store:
        old = store.import_session({"id": OLD_ID, "started_at": "2026-11-24T11:52:00.000Z"}, frames(2, "a"))
        new = store.import_session({}, frames(2, "b"))
        assert old == OLD_ID and NEW_ID.match(new)
        assert store.resolve("20261124-1152") == OLD_ID
        assert store.resolve(new[:22]) == new
        assert [s["id"] for s in store.sessions()] == [new, OLD_ID]


def test_importing_a_file_whose_id_is_taken_keeps_both_sessions(tmp_path: Path) -> None:
    """`rtproxy import` of a recording whose id is already in the database imports it under a new id, says so on
    stderr, and leaves the other session's row and frames exactly as they were."""
    db = tmp_path / "rt.db"
    with Store(db, create=True) as store:
        sid = store.import_session({"id": OLD_ID, "label": "mine", "model": "gpt-a"}, frames(3, "mine"))
    before = sqlite3.connect(db).execute("SELECT * FROM sessions").fetchall()
    path = tmp_path / "theirs.jsonl"
    write_recording(path, {"id": sid, "label": "theirs", "model": "gpt-b"}, frames(5, "theirs"))
    done = subprocess.run(
        [*rtproxy_exe(), "import", str(path), "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    copy = done.stdout.strip()
    assert copy != sid and NEW_ID.match(copy)
    assert f"already holds a session {sid}; imported as {copy}" in done.stderr
    with Store(db) as store:
        assert store.session(sid)["label"] == "mine" and store.session(copy)["label"] == "theirs"
        assert [f.data for f in store.frames(sid)] == [f.data for f in frames(3, "mine")]
        assert [f.data for f in store.frames(copy)] == [f.data for f in frames(5, "theirs")]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchall() == before
    finally:
        conn.close()
