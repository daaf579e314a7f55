"""Which `open` sessions are still being recorded: recorders with tokens and heartbeats, not a PID alone.

Real SQLite files in tmp_path; real processes for the PIDs of the old rule.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rtproxy import store as store_module
from rtproxy.store import (
    connect,
    heartbeat,
    insert_session,
    mark_interrupted,
    new_recorder_token,
    new_session_id,
    pid_namespace,
    register_recorder,
    retire_recorder,
)


def ago(seconds: float) -> str:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_session(conn: sqlite3.Connection, **fields: object) -> str:
    sid = new_session_id()
    with conn:
        insert_session(conn, {"id": sid, "status": "open", **fields})
    return sid


def statuses(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT id, status FROM sessions").fetchall())


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_sessions_of_a_live_recorder_stay_open_and_those_of_a_gone_one_are_interrupted(tmp_path: Path) -> None:
    """Owner retired, unknown, or silent for longer than stale_after: interrupted; owner heartbeating: open."""
    conn = connect(str(tmp_path / "rt.db"))
    live, stale, retired = new_recorder_token(), new_recorder_token(), new_recorder_token()
    for token in (live, stale, retired):
        register_recorder(conn, token, pid=os.getpid())
    with conn:
        conn.execute("UPDATE recorders SET heartbeat = ? WHERE token = ?", (ago(60), stale))
    retire_recorder(conn, retired)
    keep = open_session(conn, owner=live)
    gone = [open_session(conn, owner=stale), open_session(conn, owner=retired), open_session(conn, owner="unknown")]
    assert mark_interrupted(conn, stale_after=10.0) == 3
    got = statuses(conn)
    assert got[keep] == "open" and [got[s] for s in gone] == ["interrupted"] * 3
    assert mark_interrupted(conn, stale_after=10.0) == 0
    conn.close()


def test_a_live_pid_does_not_keep_a_silent_recorders_sessions_open(tmp_path: Path) -> None:
    """A session whose owner_pid is a live process (here, this one) but whose recorder stopped heartbeating is
    interrupted: liveness does not rest on a PID, which may have been reused or belong to another namespace."""
    conn = connect(str(tmp_path / "rt.db"))
    token = new_recorder_token()
    register_recorder(conn, token, pid=os.getpid())
    sid = open_session(conn, owner=token, owner_pid=os.getpid())
    with conn:
        conn.execute("UPDATE recorders SET heartbeat = ? WHERE token = ?", (ago(30), token))
    assert mark_interrupted(conn, stale_after=10.0) == 1
    assert statuses(conn)[sid] == "interrupted"
    conn.close()


def test_a_recorder_whose_process_is_gone_from_this_pid_namespace_is_gone_at_once(tmp_path: Path) -> None:
    """A recorder registered from this host and PID namespace whose process has exited is gone without waiting
    for its heartbeat to go stale; the same dead PID from another namespace (a container) proves nothing."""
    if pid_namespace() is None:
        pytest.skip("PID namespaces are known on Linux only; elsewhere only heartbeats count")
    conn = connect(str(tmp_path / "rt.db"))
    here, there = new_recorder_token(), new_recorder_token()
    pid = dead_pid()
    register_recorder(conn, here, pid=pid)
    register_recorder(conn, there, pid=pid, namespace="another-boot:0:4026531836")
    mine, theirs = open_session(conn, owner=here), open_session(conn, owner=there)
    assert mark_interrupted(conn, stale_after=60.0) == 1
    got = statuses(conn)
    assert (got[mine], got[theirs]) == ("interrupted", "open")
    conn.close()


def test_a_heartbeat_is_one_update_and_keeps_a_recorder_alive(tmp_path: Path) -> None:
    """`heartbeat` runs exactly one statement (an UPDATE) besides the transaction it joins, brings a stale
    recorder's sessions back within stale_after, and reports False for a retired or unknown token."""
    conn = connect(str(tmp_path / "rt.db"))
    token = new_recorder_token()
    register_recorder(conn, token)
    with conn:
        conn.execute("UPDATE recorders SET heartbeat = ? WHERE token = ?", (ago(60), token))
    sid = open_session(conn, owner=token)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert heartbeat(conn, token, commit=False) is True
    conn.set_trace_callback(None)
    work = [s for s in statements if s.split()[0] not in ("BEGIN", "COMMIT")]  # the transaction it joins
    assert len(work) == 1 and work[0].startswith("UPDATE recorders")
    conn.commit()
    assert mark_interrupted(conn, stale_after=10.0) == 0 and statuses(conn)[sid] == "open"
    retire_recorder(conn, token)
    assert heartbeat(conn, token) is False and heartbeat(conn, "never-registered") is False
    assert mark_interrupted(conn) == 1 and statuses(conn)[sid] == "interrupted"
    conn.close()


def test_a_heartbeat_from_another_connection_is_seen(tmp_path: Path) -> None:
    """The writer's heartbeat on its own connection keeps the sessions open for a second process's check."""
    db = str(tmp_path / "rt.db")
    writer, reader = connect(db), connect(db)
    token = new_recorder_token()
    register_recorder(writer, token)
    sid = open_session(writer, owner=token)
    with writer:
        writer.execute("UPDATE recorders SET heartbeat = ? WHERE token = ?", (ago(60), token))
    assert heartbeat(writer, token)
    assert mark_interrupted(reader, stale_after=5.0) == 0 and statuses(reader)[sid] == "open"
    writer.close()
    reader.close()


def test_sessions_written_before_tokens_are_judged_by_their_pid(tmp_path: Path) -> None:
    """An open session with only owner_pid (an older rtproxy) is interrupted when that process is gone and stays
    open while it runs."""
    conn = connect(str(tmp_path / "rt.db"))
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        alive = open_session(conn, owner_pid=sleeper.pid)
        gone = open_session(conn, owner_pid=dead_pid())
        nobody = open_session(conn)
        assert mark_interrupted(conn) == 2
        got = statuses(conn)
        assert (got[alive], got[gone], got[nobody]) == ("open", "interrupted", "interrupted")
    finally:
        assert sleeper.stdin is not None
        sleeper.stdin.close()
        sleeper.wait(10)
    assert mark_interrupted(conn) == 1 and statuses(conn)[alive] == "interrupted"
    conn.close()


def test_on_windows_the_old_rule_never_signals_a_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows (where os.kill(pid, 0) terminates the process) a pid-only session is interrupted without
    os.kill being called; token-owned sessions are judged as anywhere else."""
    conn = connect(str(tmp_path / "rt.db"))
    token = new_recorder_token()
    register_recorder(conn, token)
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    calls: list[tuple[int, int]] = []
    try:
        legacy = open_session(conn, owner_pid=sleeper.pid)
        owned = open_session(conn, owner=token, owner_pid=sleeper.pid)
        monkeypatch.setattr(store_module.sys, "platform", "win32")
        monkeypatch.setattr(store_module.os, "kill", lambda pid, sig: calls.append((pid, sig)))
        assert mark_interrupted(conn) == 1
        monkeypatch.undo()
        assert calls == []
        got = statuses(conn)
        assert (got[legacy], got[owned]) == ("interrupted", "open")
        assert sleeper.poll() is None
    finally:
        assert sleeper.stdin is not None
        sleeper.stdin.close()
        sleeper.wait(10)
    conn.close()
