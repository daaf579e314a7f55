"""The recording transport and the writer process, on both paths (fast: a pipe the loop writes; portable: a socket).

Producer (the Recorder, in this process) and consumer (the writer process)
run at once, at full speed; every frame carries its own checksum, and the
SQLite file is read back to check each one's bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtproxy.record.recorder import Recorder
from rtproxy.record.transport import (
    BATCH,
    CONTROL,
    FRAME,
    MAGIC,
    BatchBuilder,
    BatchReader,
    TransportError,
    decode_batch,
    loopback_listener,
    socket_sender,
    write_some,
)
from rtproxy.record.writer import ChunkPool, Writer, decode_records
from tests.test_store import rows

PATHS = [pytest.param(False, id="fast"), pytest.param(True, id="portable")]


def checked_frame(i: int, size: int) -> str:
    """A JSON text frame whose body ends with the sha256 of what precedes it."""
    body = f'{{"type":"input_audio_buffer.append","seq":{i},"audio":"' + "QUJD" * (size // 4) + '"'
    return body + f',"sha":"{hashlib.sha256(body.encode()).hexdigest()}"}}'


def intact(text: str) -> bool:
    body, _, tail = text.rpartition(',"sha":"')
    return hashlib.sha256(body.encode()).hexdigest() == tail[:-2]


# --- the portable path's socket ---------------------------------------------------------


def read_until_closed(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    sock.settimeout(10.0)
    got = bytearray()
    while len(got) < limit:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_a_limited_write_sends_at_most_its_slice_and_keeps_the_rest_in_order() -> None:
    """The sender's thread writes a backlog a slice at a time: each write takes at most `limit` bytes (cutting a
    first buffer longer than that), removes exactly what went, and the bytes arrive whole and in order."""
    from collections import deque

    r, w = os.pipe()
    os.set_blocking(w, False)  # a write that ignored its limit fails the assertion below instead of hanging
    try:
        parts = [os.urandom(n) for n in (100, 5000, 70_000, 10, 3000)]
        waiting: deque[bytes | memoryview] = deque(parts)
        sizes = []
        got = b""
        while waiting:
            sizes.append(write_some(w, waiting, 4096))
            while len(got) < sum(sizes):  # read what went before the pipe could fill
                got += os.read(r, 1 << 20)
        assert max(sizes) <= 4096 and sum(sizes) == sum(map(len, parts))
        assert got == b"".join(parts)
    finally:
        os.close(r)
        os.close(w)


def test_the_socket_sender_sends_nothing_to_a_connection_without_the_key() -> None:
    """Another local process that connects first (or sends a wrong key) is closed having received nothing; the
    writer that proves itself then gets every batch, including those sent before anyone connected, in order."""
    listener = loopback_listener()
    address = listener.getsockname()[:2]
    key = os.urandom(32)
    lock = threading.Lock()
    sender = socket_sender(listener, key, lock)
    batches = [[f"batch {i} ".encode(), os.urandom(i * 997)] for i in range(40)]
    with lock:
        for parts in batches[:20]:  # nobody connected yet: they wait
            sender.send(parts, sum(map(len, parts)))
    assert sender.backlog == sum(len(b) for parts in batches[:20] for b in parts)
    impostor = socket.create_connection(address, timeout=10.0)
    impostor.sendall(b"x" * 32)
    assert read_until_closed(impostor) == b""  # closed on it, nothing sent
    impostor.close()
    silent = socket.create_connection(address, timeout=10.0)
    silent.sendall(key[:31])  # a prefix of the key is not the key
    silent.shutdown(socket.SHUT_WR)
    assert read_until_closed(silent) == b""
    silent.close()
    writer = socket.create_connection(address, timeout=10.0)
    writer.sendall(key)
    assert sender.connected.wait(10.0) and not sender.broken
    with lock:
        for parts in batches[20:]:
            sender.send(parts, sum(map(len, parts)))
    assert sender.drain(10.0)
    sender.close()
    assert read_until_closed(writer) == b"".join(b for parts in batches for b in parts)
    assert sender.backlog == 0
    writer.close()


def test_the_socket_sender_waits_out_a_full_socket_without_blocking_the_caller() -> None:
    """A writer that does not read for a while: sends return at once, the backlog grows, and once it reads again
    the sender's thread delivers everything in order."""
    listener = loopback_listener()
    key = os.urandom(32)
    lock = threading.Lock()
    sender = socket_sender(listener, key, lock)
    writer = socket.create_connection(listener.getsockname()[:2], timeout=10.0)
    writer.sendall(key)
    assert sender.connected.wait(10.0)
    chunk = os.urandom(1 << 20)

    def produce() -> None:
        for i in range(48):  # 48 MiB: far more than any socket buffer holds
            with lock:
                sender.send([i.to_bytes(4, "big"), chunk], 4 + len(chunk))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    producer.join(30.0)  # the reader reads nothing until every send has returned: a blocking send would hang here
    assert not producer.is_alive()
    assert sender.backlog > 0  # the socket filled up: the rest waits for the thread
    got = read_until_closed(writer, limit=48 * (4 + len(chunk)))
    assert got == b"".join(i.to_bytes(4, "big") + chunk for i in range(48))
    assert sender.drain(10.0) and sender.backlog == 0
    sender.close()
    writer.close()


# --- batches ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=30),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=20),
)
def test_batches_survive_any_split_of_the_pipe_stream(payloads: list[bytes], cuts: list[int]) -> None:
    """However reads cut the byte stream, the reader returns every batch whole, in order, and nothing more."""
    stream = b""
    for number, payload in enumerate(payloads, 1):
        batch = BatchBuilder()
        batch.add_frame("s", 2, number, 0.5, payload)
        batch.add_control(b"c" * number)
        stream += batch.seal(number)
    reader, got, pos, k = BatchReader(), [], 0, 0
    while pos < len(stream):
        step = cuts[k % len(cuts)]
        got += reader.feed(stream[pos : pos + step])
        pos, k = pos + step, k + 1
    assert [n for n, _, _ in got] == list(range(1, len(payloads) + 1))
    for (number, count, body), payload in zip(got, payloads, strict=True):
        records = list(decode_batch(body, count))
        assert [(r[0], r[3], bytes(r[5])) for r in records] == [(FRAME, number, payload), (CONTROL, 0, b"c" * number)]
    assert reader.buf == bytearray()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=30),
    st.integers(min_value=1, max_value=700),
)
def test_one_read_buffer_used_again_and_again_loses_nothing(payloads: list[bytes], size: int) -> None:
    """As the writer reads: every chunk into the same buffer, its batches used before the next read. Batches that
    arrived whole are views of the buffer (no copy); only one that spans reads has a buffer of its own."""
    stream = b"".join(_one_frame_batch(number, payload) for number, payload in enumerate(payloads, 1))
    reader, buf, got, pos = BatchReader(), bytearray(size), [], 0
    while pos < len(stream):
        n = min(size, len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        pos += n
        for number, count, body in reader.feed(memoryview(buf)[:n]):
            got += [(number, bytes(r[5])) for r in decode_batch(body, count)]  # used now, as the writer does
            spans = body.obj is not buf
            head = BATCH.size + len(body)
            assert spans or head <= n, "a view of the buffer can only be a batch the read held whole"
    assert got == list(enumerate(payloads, 1))
    assert reader.buf == bytearray()


def test_a_batch_that_arrived_whole_is_not_copied() -> None:
    """A chunk of whole batches comes back as views of that chunk; the tail of a batch cut by the read is held,
    then completed from the front of the next chunk, and the rest of that chunk is not copied."""
    a, b, c = _one_frame_batch(1, b"a" * 50), _one_frame_batch(2, b"b" * 50), _one_frame_batch(3, b"c" * 50)
    first = bytearray(a + b[:10])
    reader = BatchReader()
    [(number, _, body)] = reader.feed(first)
    assert number == 1 and body.obj is first
    assert bytes(reader.buf) == b[:10]
    second = bytearray(b[10:] + c)
    (n2, _, body2), (n3, _, body3) = reader.feed(second)
    assert (n2, n3) == (2, 3)
    assert body2.obj is not second and body3.obj is second
    assert reader.buf == bytearray()


def test_the_chunk_pool_is_bounded_and_uses_its_buffers_again() -> None:
    """The writer's read buffers: made only up to the limit, the last one given back is the next one taken, and
    once the stream is quiet all but one are let go."""
    pool = ChunkPool(limit=3, size=16)
    taken = [pool.take() for _ in range(3)]
    assert pool.made == 3 and len({id(b) for b in taken}) == 3
    for buf in taken:
        pool.give(buf)
    assert pool.take() is taken[-1]
    pool.give(taken[-1])
    pool.shrink()
    assert pool.made == 1 and pool.free.qsize() == 1
    assert len(pool.take()) == 16 and pool.made == 1


def _one_frame_batch(number: int, payload: bytes) -> bytes:
    batch = BatchBuilder()
    batch.add_frame("s", 2, number, 0.5, payload)
    return batch.seal(number)


def test_bytes_that_are_not_a_batch_are_refused() -> None:
    """A stream that does not start with a batch header raises TransportError, it is never guessed at."""
    with pytest.raises(TransportError):
        BatchReader().feed(BATCH.pack(b"XXXX", 1, 0, 0))
    assert BatchReader().feed(BATCH.pack(MAGIC, 1, 10, 1)) == []  # a header alone: waits for its body
    reader = BatchReader()
    assert reader.feed(b"XX") == []  # a header cut by the read: refused once it is whole
    with pytest.raises(TransportError):
        reader.feed(BATCH.pack(b"XXXX", 1, 0, 0)[2:])


def test_the_writer_commits_at_least_every_interval_while_busy(tmp_path: Path) -> None:
    """Batches go into one transaction until the commit interval has passed; the commit says which batch."""
    db = tmp_path / "rt.db"
    now = [0.0]
    acks: list[tuple[str, str]] = []
    writer = Writer(str(db), lambda kind, text: acks.append((kind, text)), commit_interval=0.05, clock=lambda: now[0])
    try:
        for number in range(1, 4):
            batch = BatchBuilder()
            for seq in range(10):
                batch.add_frame("s", 0, number * 10 + seq, 0.0, b'{"type":"x"}')
            sealed = batch.seal(number)
            writer.write_batch(number, decode_records(10, sealed[BATCH.size :]))
            if number == 2:
                now[0] = 0.06
            if writer.due():
                writer.commit()
            visible = rows(db, "SELECT count(*) FROM events")[0][0]
            assert visible == (0 if number == 1 else 20)
        assert acks == [("C", "2 20 240 0")]
        writer.commit()
        assert acks[-1] == ("C", "3 30 360 0") and rows(db, "SELECT count(*) FROM events")[0][0] == 30
    finally:
        writer.conn.close()


# --- producer and consumer at once -----------------------------------------------------


async def produce(rec: Recorder, sid: str, frames: list[str], burst: int) -> list[bool]:
    """Record frames from the event loop in bursts of `burst` per loop turn (as a relay does)."""
    accepted = []
    for i, frame in enumerate(frames):
        accepted.append(rec.record_frame(sid, i, i / 1000, "client" if i % 2 else "server", frame))
        if i % burst == burst - 1:
            await asyncio.sleep(0)
    return accepted


@pytest.mark.parametrize("portable", PATHS)
async def test_every_frame_arrives_intact_at_full_speed(tmp_path: Path, portable: bool) -> None:
    """3,000 frames of 0 B to 300 KB, recorded as fast as the loop can, reach the file in order, each one
    byte for byte (its checksum verified), through a pipe that fills many times over."""
    db = tmp_path / "rt.db"
    rng = random.Random(7)
    frames = [checked_frame(i, rng.choice([0, 10, 1000, 13_000, 60_000, 300_000])) for i in range(3000)]
    rec = Recorder(str(db), portable=portable, max_bytes=1 << 30, max_frames=1 << 20)
    rec.start()
    sid = rec.open_session(path="/v1/realtime")
    accepted = await produce(rec, sid, frames, burst=40)
    rec.update_session(sid, status="closed")
    assert await asyncio.to_thread(rec.flush, 60.0)
    rec.close()
    assert all(accepted) and rec.stats.dropped == 0 and rec.stats.written == len(frames)
    stored = rows(db, "SELECT seq, direction, text, size FROM events ORDER BY seq")
    assert [r[0] for r in stored] == list(range(len(frames)))
    assert all(intact(r[2]) and r[2] == frames[r[0]] and r[3] == len(frames[r[0]]) for r in stored)
    assert [r[1] for r in stored[:2]] == ["server", "client"]
    assert rows(db, "SELECT status, unrecorded FROM sessions") == [("closed", 0)]


@pytest.mark.parametrize("portable", PATHS)
async def test_a_full_transport_drops_whole_frames_and_counts_every_one(tmp_path: Path, portable: bool) -> None:
    """With a small bound, a flood overflows it: the frames that went are intact, the ones that did not are
    counted on the session, and sent = recorded + unrecorded exactly."""
    db = tmp_path / "rt.db"
    frames = [checked_frame(i, 20_000) for i in range(4000)]
    overflowed: list[str] = []
    rec = Recorder(str(db), portable=portable, max_bytes=1 << 20, on_overflow=overflowed.append)
    rec.start()
    sid = rec.open_session()
    accepted = await produce(rec, sid, frames, burst=500)
    rec.update_session(sid, status="closed")
    assert await asyncio.to_thread(rec.flush, 60.0)
    rec.close()
    dropped = accepted.count(False)
    assert dropped > 0 and overflowed == [sid]
    stored = rows(db, "SELECT seq, text FROM events ORDER BY seq")
    assert [r[0] for r in stored] == [i for i, ok in enumerate(accepted) if ok]
    assert all(intact(r[1]) for r in stored)
    assert rows(db, "SELECT unrecorded FROM sessions") == [(dropped,)]
    assert len(stored) + dropped == len(frames)


@pytest.mark.parametrize("portable", PATHS)
def test_recording_from_plain_threads_without_a_loop(tmp_path: Path, portable: bool) -> None:
    """Four threads recording at once, with no event loop anywhere, lose and mix up nothing."""
    db = tmp_path / "rt.db"
    rec = Recorder(str(db), portable=portable)
    rec.start()
    sids = [rec.open_session() for _ in range(4)]

    def run(sid: str) -> None:
        for i in range(500):
            assert rec.record_frame(sid, i, 0.0, "server", checked_frame(i, 100))

    threads = [threading.Thread(target=run, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert rec.flush(30.0)
    rec.close()
    for sid in sids:
        seqs = rows(db, "SELECT seq, text FROM events WHERE session_id = ? ORDER BY seq", sid)
        assert [s for s, _ in seqs] == list(range(500)) and all(intact(t) for _, t in seqs)


# --- the writer dies -------------------------------------------------------------------


@pytest.mark.parametrize("portable", PATHS)
async def test_a_killed_writer_is_noticed_replaced_and_its_gap_counted(tmp_path: Path, portable: bool) -> None:
    """Killing the writer mid-stream: within a second the proxy says so and runs a new writer; the session
    row and everything recorded after are stored, and what the dead writer took with it is counted, so
    stored + unrecorded = sent."""
    db = tmp_path / "rt.db"
    errors: list[str] = []
    noticed = threading.Event()

    def on_error(message: str) -> None:
        errors.append(message)
        noticed.set()

    rec = Recorder(str(db), portable=portable, on_error=on_error)
    rec.start()
    sid = rec.open_session(path="/v1/realtime")
    other = rec.open_session(path="/v1/realtime")  # open, no frames: still marked
    first = rec.writer_pid
    assert first is not None
    sent = 0
    for i in range(300):
        rec.record_frame(sid, sent, 0.0, "client", checked_frame(sent, 5000))
        sent += 1
        if i % 20 == 0:
            await asyncio.sleep(0)
    os.kill(first, 9)
    killed = time.monotonic()
    assert await asyncio.to_thread(noticed.wait, 5.0)
    assert time.monotonic() - killed < 1.0
    assert "recorder process stopped" in errors[0] and "started a new one" in errors[0]
    for _ in range(200):
        rec.record_frame(sid, sent, 0.0, "server", checked_frame(sent, 5000))
        sent += 1
        await asyncio.sleep(0)
    rec.update_session(sid, status="closed")
    assert await asyncio.to_thread(rec.flush, 30.0)
    assert rec.writer_pid not in (None, first) and rec.stats.restarts == 1
    rec.close()
    stored = rows(db, "SELECT seq, text FROM events WHERE session_id = ? ORDER BY seq", sid)
    ((status, unrecorded),) = rows(db, "SELECT status, unrecorded FROM sessions WHERE id = ?", sid)
    assert status == "closed" and all(intact(t) for _, t in stored)
    assert len(stored) + unrecorded == sent and rec.dropped_for(sid) == unrecorded
    assert {s for s, _ in stored} >= set(range(300, sent))  # everything after the restart
    assert rows(db, "SELECT status FROM sessions WHERE id = ?", other) == [("open",)]


def test_a_writer_that_cannot_start_is_given_up_on_loudly(tmp_path: Path) -> None:
    """A writer that dies before it ever commits is restarted a few times, then the proxy says recording
    stopped, and every frame recorded after that is counted as unrecorded, never silently lost."""
    db = tmp_path / "rt.db"
    errors: list[str] = []
    gave_up = threading.Event()

    def on_error(message: str) -> None:
        errors.append(message)
        if "no longer recorded" in message:
            gave_up.set()

    rec = Recorder(str(db), on_error=on_error)
    (tmp_path / "sub").write_text("a file where the database's directory should be")
    rec.path = str(tmp_path / "sub" / "rt.db")  # what the writer process is told to open
    rec.start()
    sid = rec.open_session()
    assert gave_up.wait(30.0), errors
    assert any("cannot open" in e for e in errors)
    assert not rec.record_frame(sid, 0, 0.0, "client", "{}")
    assert rec.dropped_for(sid) == 1 and not rec.flush(1.0)
    rec.close()


async def test_a_flush_from_the_loop_itself_does_not_wait_on_the_loop(tmp_path: Path) -> None:
    """flush() called on the event loop's own thread with more queued than the pipe holds still completes:
    it writes what waits itself instead of leaving it to the loop it is blocking."""
    db = tmp_path / "rt.db"
    rec = Recorder(str(db), portable=False)
    rec.start()
    sid = rec.open_session()
    for i in range(100):
        rec.record_frame(sid, i, 0.0, "client", checked_frame(i, 100_000))  # 10 MB in one loop turn
    started = time.monotonic()
    assert rec.flush(20.0)
    assert time.monotonic() - started < 10.0
    rec.close()
    assert rows(db, "SELECT count(*) FROM events")[0][0] == 100


def test_a_writer_behind_for_long_is_hurried_further() -> None:
    """Adaptive priority: idle while caught up and through a burst; SCHED_BATCH at nice 19 once behind for longer
    than its patience; nice 0 only after `insist` seconds still behind (a flood of a few seconds keeps the CPU
    for forwarding); all undone once caught up."""
    import os as _os

    from rtproxy.record.writer import NICE, AdaptivePriority

    now = [0.0]
    calls: list[tuple[str, int]] = []

    class Recording(AdaptivePriority):
        def _set(self, policy: int) -> bool:  # type: ignore[override]
            calls.append(("policy", policy))
            return True

        def _policy(self) -> int:  # type: ignore[override]
            return [v for k, v in calls if k == "policy"][-1]

        def _renice(self, value: int) -> bool:  # type: ignore[override]
            calls.append(("nice", value))
            return True

    p = Recording(patience=0.5, clock=lambda: now[0], insist=5.0)
    if not p.enabled:
        pytest.skip("this process may not leave SCHED_IDLE again: the writer runs at plain nice 19")
    calls.clear()
    for t in (0.0, 0.6, 4.9):
        now[0] = t
        p(1000)
    assert calls == [("policy", _os.SCHED_BATCH)]
    now[0] = 5.1
    p(1000)
    assert calls[-1] == ("nice", 0) and p.desperate
    p(0)
    assert calls[-2:] == [("nice", NICE), ("policy", _os.SCHED_IDLE)] and not p.urgent and not p.desperate


def test_through_a_burst_the_writer_keeps_to_its_share_of_a_core() -> None:
    """BurstShare: while work waits, CPU used beyond `share` of the wall time is paid back by sleeping; nothing
    when caught up, when under its share, or once behind for longer than its patience (a load that lasts)."""
    from rtproxy.record.writer import BurstShare

    now, cpu, slept = [0.0], [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    pace = BurstShare(share=0.2, patience=3.0, window=0.5, clock=lambda: now[0], cpu=lambda: cpu[0], sleep=sleep)
    assert pace(True) == 0.0  # the burst begins: a window opens
    now[0], cpu[0] = 0.1, 0.01  # 10% of a core: under its share
    assert pace(True) == 0.0
    now[0], cpu[0] = 0.2, 0.06  # 0.06 s of CPU is 0.3 s at 20%: sleep the 0.1 s still owed
    assert pace(True) == pytest.approx(0.1) and now[0] == pytest.approx(0.3)
    now[0], cpu[0] = 0.35, 0.2  # far ahead: a sleep is at most one window
    assert pace(True) == pytest.approx(0.5)
    assert pace(False) == 0.0 and pace.behind_since is None  # caught up
    now[0], cpu[0] = 10.0, 1.0
    pace(True)
    for t in (10.6, 11.2, 11.8, 12.4, 13.0):  # behind for 3 s, each window over its share
        now[0], cpu[0] = t, cpu[0] + 0.25
        pace(True)
    before = len(slept)
    now[0], cpu[0] = 13.2, cpu[0] + 0.2
    assert pace(True) == 0.0 and len(slept) == before  # patience run out: no limit
    assert BurstShare(share=1.0, sleep=sleep)(True) == 0.0


@pytest.mark.parametrize(("value", "share"), [("", 0.2), ("0.5", 0.5), ("1", 1.0), ("0", 0.2), ("lots", 0.2)])
def test_the_burst_share_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, share: float) -> None:
    from rtproxy.record.writer import burst_share_from_env

    monkeypatch.setenv("RTPROXY_WRITER_BURST_SHARE", value)
    assert burst_share_from_env() == share


def test_a_paced_writer_is_asked_before_every_chunk_and_stores_every_frame(tmp_path: Path) -> None:
    """serve() with a BurstShare that has to sleep: more than three reads' worth of 13 KB frames through a real
    pipe all reach the database, byte for byte, and the pace is asked before each chunk."""
    from rtproxy.record.writer import CHUNK, BurstShare, serve

    payloads = [hashlib.sha256(str(i).encode()).hexdigest().encode() * 400 for i in range(260)]  # 12.8 KB each
    stream = b"".join(_one_frame_batch(number, payload) for number, payload in enumerate(payloads, 1))
    assert len(stream) > 3 * CHUNK
    asked: list[bool] = []
    share = BurstShare(share=0.05)

    def pace(behind: bool) -> float:
        asked.append(behind)
        return share(behind)

    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(stream)

    feeder = threading.Thread(target=feed)
    feeder.start()
    db = tmp_path / "rt.db"
    writer = Writer(str(db), lambda kind, text: None, commit_interval=0.05)
    try:
        serve(writer, r, pace=pace)
    finally:
        feeder.join(10.0)
        writer.conn.close()
        os.close(r)
    assert len(asked) >= 4  # at least one call per read of at most CHUNK bytes
    stored = rows(db, "SELECT seq, data FROM events ORDER BY seq")
    assert stored == [(number, payload) for number, payload in enumerate(payloads, 1)]
