"""The Recorder: overflow, crash marking, file mode (its transport and writer process: test_recorder.py).

Real SQLite files in tmp_path throughout; the writer runs in-process (``flush``
and ``close`` without ``start``) except where a test is about the writer
process itself.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtproxy.protocols.wire import Direction
from rtproxy.record.recorder import event_row
from rtproxy.store import (
    INSERT_EVENT,
    Recorder,
    Store,
    connect,
    frame_row,
    heartbeat,
    insert_session,
    mark_interrupted,
    new_recorder_token,
    new_session_id,
    register_recorder,
    retire_recorder,
)


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def event(typ: str, **fields: Any) -> str:
    return orjson.dumps({"type": typ, "event_id": f"evt_{typ}", **fields}).decode()


def test_frames_sessions_and_http_exchanges_are_written_in_order_and_exactly(tmp_path: Path) -> None:
    """Text (JSON, non-JSON, non-ASCII) and binary frames come back byte for byte, in seq order, with ids and sizes."""
    db = tmp_path / "rt.db"
    rec = Recorder(str(db))
    sid = rec.open_session(path="/v1/realtime", model="gpt-realtime")
    frames: list[str | bytes] = [
        event("session.created", session={"model": "gpt-realtime", "audio": {}}),
        event("response.output_text.delta", response_id="resp_1", item_id="item_1", delta="héllo ✓"),
        event("conversation.item.created", item={"id": "item_2", "type": "message"}),
        "not json at all",
        b"\x00\x01binary\xff",
    ]
    for seq, data in enumerate(frames):
        assert rec.record_frame(sid, seq, seq / 10, "client" if seq % 2 else "server", data)
    rec.record_http(method="POST", path="/v1/realtime/client_secrets", status=200, response_body=b'{"value":"x"}')
    rec.update_session(sid, status="closed", client_events=2, server_events=3)
    rec.close()
    with Store(db) as store:
        got = list(store.frames(sid))
        index = store.event_rows(sid)
        session = store.session(sid)
        (http,) = store.http_exchanges()
    assert [f.data for f in got] == frames and [f.seq for f in got] == list(range(len(frames)))
    assert [f.direction for f in got] == [Direction.SERVER, Direction.CLIENT] * 2 + [Direction.SERVER]
    assert [r["type"] for r in index] == [
        "session.created",
        "response.output_text.delta",
        "conversation.item.created",
        None,
        None,
    ]
    assert index[1]["response_id"] == "resp_1" and index[1]["item_id"] == "item_1" and index[2]["item_id"] == "item_2"
    assert [r["size"] for r in index] == [len(f.encode()) if isinstance(f, str) else len(f) for f in frames]
    assert session["status"] == "closed" and session["dialect"] == "ga" and session["model"] == "gpt-realtime"
    assert http["status"] == 200 and http["response_body"] == '{"value":"x"}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
ids = st.one_of(
    st.none(), st.integers(0, 99), st.text(max_size=12), st.sampled_from(["item_1", "resp_1", "sk-" + "a" * 20])
)


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["event", "text", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=64)) + draw(st.sampled_from([b"", b"sk-" + b"k" * 24]))
    if kind == "text":
        return draw(st.text(max_size=60)) + draw(st.sampled_from(["", " ek_" + "e" * 20, " sk-" + "s" * 30]))
    ev: dict[str, Any] = {"type": draw(st.one_of(st.text(max_size=30), st.integers(0, 9)))}
    for key in ("event_id", "item_id", "response_id", "previous_item_id"):
        if draw(st.booleans()):
            ev[key] = draw(ids)
    for key in ("item", "response"):
        if draw(st.booleans()):
            ev[key] = draw(st.one_of(json_values, st.fixed_dictionaries({"id": ids})))
    if draw(st.booleans()):
        ev["extra"] = draw(json_values)
    return orjson.dumps(ev).decode()


@settings(max_examples=300, deadline=None)
@given(frames())
def test_the_writers_rows_are_the_stores_rows(data: str | bytes) -> None:
    """The writer's fast row (key check by memchr) equals store.frame_row for any frame, keys masked alike."""
    size = len(data.encode()) if isinstance(data, str) else len(data)
    assert event_row("s", 3, 0.5, "client", data, size) == frame_row("s", 3, 0.5, "client", data)


def test_a_full_queue_drops_frames_counts_them_and_marks_the_session(tmp_path: Path) -> None:
    """When the ring is full frames are dropped (never controls): counted per session, reported once, and the
    session row says how many were not recorded."""
    db = tmp_path / "rt.db"
    overflowed: list[str] = []
    rec = Recorder(str(db), max_bytes=64 * 1024, on_overflow=overflowed.append)
    a, b = rec.open_session(), rec.open_session()
    frame = event("input_audio_buffer.append", audio="A" * 2000)
    accepted = [rec.record_frame(a, seq, 0.0, "client", frame) for seq in range(100)]
    assert not all(accepted) and accepted.index(False) > 10
    dropped = accepted.count(False)
    assert rec.record_frame(b, 0, 0.0, "client", frame) is False  # the ring is still full
    rec.update_session(a, status="closed", client_events=100)  # waits for room, never dropped
    assert overflowed == [a, b]
    assert rec.dropped_for(a) == dropped and rec.dropped_for(b) == 1 and rec.stats.dropped == dropped + 1
    rec.close()
    recorded = rows(db, "SELECT seq FROM events WHERE session_id = ? ORDER BY seq", a)
    assert [r[0] for r in recorded] == [i for i, ok in enumerate(accepted) if ok]
    assert rows(db, "SELECT id, status, unrecorded FROM sessions ORDER BY id") == sorted(
        [(a, "closed", dropped), (b, "open", 1)]
    )


def test_max_frames_bounds_the_queue_by_count_too(tmp_path: Path) -> None:
    """With room for bytes but not for more frames, the frame is dropped and counted."""
    rec = Recorder(str(tmp_path / "rt.db"), max_frames=5)
    sid = rec.open_session()
    assert [rec.record_frame(sid, i, 0.0, "server", "{}") for i in range(7)] == [True] * 5 + [False] * 2
    assert rec.dropped_for(sid) == 2
    rec.close()


def test_the_writer_process_records_without_a_flush_and_stops_in_order(tmp_path: Path) -> None:
    """With the writer process running, frames reach the file on their own; close() leaves nothing behind."""
    db = tmp_path / "rt.db"
    rec = Recorder(str(db))
    rec.start()
    sid = rec.open_session()
    for seq in range(50):
        rec.record_frame(sid, seq, 0.0, "client", event("input_audio_buffer.append", audio="QUJD" * 100))
    assert rec.flush(10.0)
    assert rows(db, "SELECT count(*) FROM events")[0][0] == 50 and rec.stats.written == 50
    for seq in range(50, 80):
        rec.record_frame(sid, seq, 0.0, "server", event("response.done"))
    rec.update_session(sid, status="closed")
    rec.close()
    assert rec.stats.written == 80 and rec.stats.dropped == 0
    assert rows(db, "SELECT count(*), max(seq) FROM events")[0] == (80, 79)
    assert rows(db, "SELECT status FROM sessions") == [("closed",)]


def test_sessions_left_open_by_a_dead_recorder_are_marked_interrupted(tmp_path: Path) -> None:
    """Opening the database for recording marks sessions of a gone owner (a retired recorder) `interrupted`, with
    their counts; sessions of a live recorder (heartbeating, though its PID is ours) stay open."""
    db = tmp_path / "rt.db"
    conn = connect(str(db))
    live, retired = new_recorder_token(), new_recorder_token()
    register_recorder(conn, live, pid=os.getpid())
    register_recorder(conn, retired, pid=os.getpid())
    retire_recorder(conn, retired)
    gone, alive = new_session_id(), new_session_id()
    with conn:
        insert_session(conn, {"id": gone, "status": "open", "owner": retired, "owner_pid": os.getpid()})
        insert_session(conn, {"id": alive, "status": "open", "owner": live, "owner_pid": os.getpid()})
        conn.executemany(
            INSERT_EVENT,
            [frame_row(gone, seq, seq * 1.5, "client" if seq else "server", "x" * 10) for seq in range(3)],
        )
    assert heartbeat(conn, live)
    again = Recorder(str(db))
    again.close()
    assert again.interrupted == 1
    got = dict(
        (r[0], r[1:])
        for r in rows(db, "SELECT id, status, duration, client_events, server_events, client_bytes FROM sessions")
    )
    assert got[gone] == ("interrupted", 3.0, 2, 1, 20) and got[alive][0] == "open"
    assert mark_interrupted(conn) == 0
    conn.close()


def test_the_database_files_are_private(tmp_path: Path) -> None:
    """The database and its WAL files are created 0600, whatever the umask."""
    db = tmp_path / "rt.db"
    old = os.umask(0o022)
    try:
        rec = Recorder(str(db))
        rec.record_frame(rec.open_session(), 0, 0.0, "client", "{}")
        rec.close()
    finally:
        os.umask(old)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("rt.db")]
    assert db in files and all(p.stat().st_mode & 0o777 == 0o600 for p in files)


def test_adaptive_priority_idles_while_caught_up_and_hurries_when_behind() -> None:
    """The writer runs SCHED_IDLE while it keeps up and through a burst, however large its backlog, moves to
    SCHED_BATCH once it has been behind for longer than its patience, and goes back to idle once caught up."""
    import os

    from rtproxy.record.recorder import AdaptivePriority

    now = [0.0]
    policies: list[int] = []

    class Recording(AdaptivePriority):
        def _set(self, policy: int) -> bool:  # type: ignore[override]
            policies.append(policy)
            return True

        def _policy(self) -> int:  # type: ignore[override]
            return policies[-1]

    p = Recording(patience=0.5, clock=lambda: now[0])
    if not p.enabled:
        pytest.skip("unprivileged without RLIMIT_NICE: the writer uses plain `batch`, nothing adaptive to check")
    assert policies == [os.SCHED_IDLE]
    p(1000)  # a little behind, just now
    now[0] = 0.4
    p(1000)
    p(1 << 30)  # a burst: a large backlog alone does not hurry it
    assert policies == [os.SCHED_IDLE] and not p.urgent
    now[0] = 0.6  # behind for longer than its patience: a busy machine is starving it
    p(1000)
    assert policies[-1] == os.SCHED_BATCH and p.urgent
    p(0)
    assert policies[-1] == os.SCHED_IDLE and not p.urgent
    p(9 << 20)  # behind again: the patience starts over
    assert policies[-1] == os.SCHED_IDLE and not p.urgent


_bulk = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", min_size=0, max_size=4000)
_short = st.one_of(st.none(), st.text(max_size=12), st.integers(-(2**63), 2**63 - 1), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    typ=_short,
    eid=_short,
    iid=_short,
    rid=_short,
    bulk=_bulk,
    key=st.sampled_from(["audio", "delta", "transcript"]),
    nested=st.booleans(),
    escaped=st.booleans(),
    extra=st.text(max_size=30),
)
def test_describing_a_frame_from_its_skeleton_gives_what_the_whole_frame_gives(
    typ: Any, eid: Any, iid: Any, rid: Any, bulk: str, key: str, nested: bool, escaped: bool, extra: str
) -> None:
    """Cutting a long audio/delta string out before parsing (the writer's fast path) never changes the type
    and ids found, wherever the bulk sits, whatever else the frame holds (quotes and escapes included)."""
    from rtproxy.store import skeleton

    value = bulk + ('\\"' if escaped else "")
    body: dict[str, Any] = {"type": typ, "event_id": eid, "note": extra}
    holder = {"item": {"id": iid, "content": [{key: value}]}} if nested else {key: value, "item_id": iid}
    ev = {**body, **holder, "response": {"id": rid}}
    text = orjson.dumps(ev).decode()
    whole = orjson.loads(text)
    expected = tuple(
        v if isinstance(v, str) else None
        for v in (
            whole.get("type"),
            whole.get("event_id"),
            whole.get("item_id") if whole.get("item_id") is not None else whole.get("item", {}).get("id"),
            whole["response"]["id"],
        )
    )
    assert store_describe(text) == expected
    assert orjson.loads(skeleton(text)).keys() == whole.keys()


def store_describe(text: str) -> tuple[str | None, ...]:
    from rtproxy.store import describe

    return describe(text)
