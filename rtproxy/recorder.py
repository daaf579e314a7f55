"""The Recorder: the forwarding path copies each frame into a shared ring; a writer process stores it.

Measured on two cores, a writer *thread* costs the relay half its throughput
and multiplies its p99 latency: every row it builds holds the GIL the event
loop is waiting for. So recording is split across two processes::

    event loop ── record_frame ──▶ ring (shared memory, bounded) ──▶ writer process ──▶ SQLite (WAL)
        ▲                                                                │
        └──────────── barrier acks, errors, "drained" (a pipe) ──────────┘

* :meth:`Recorder.record_frame` packs a small header and copies the payload
  into the ring: no system call, no parsing, no lock anyone else holds long.
  When the ring is full the frame is dropped, counted per session, the
  session is marked (``unrecorded``) and ``on_overflow`` is called once per
  session: a slow disk never stalls a conversation, and never hides a gap.
* Sessions, session updates and REST exchanges travel through the same ring,
  so the database sees everything in the order it happened. They are never
  dropped: when the ring is full they wait in a small queue of their own and
  frames are dropped until it has drained.
* The writer (:class:`Writer`, run by :func:`writer_main` in a process of its
  own, at a lower CPU priority) extracts type and ids, masks key-shaped
  strings, inserts in batches and commits at least every ``commit_interval``
  (50 ms) while there is work, and at once when the ring runs empty. If the
  proxy dies, the writer drains what the ring still holds, commits and exits.

The ring is a file mapped by both processes (``/dev/shm`` where it exists):
a 64-byte header of counters, then records that never straddle the end. Each
record ends with its own start position, so the reader never takes a record
whose bytes are not all there yet.
"""

from __future__ import annotations

import itertools
import mmap
import os
import pickle
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .protocol import dialect_from_event, parse_event, redact_bytes, redact_text
from .store import INSERT_EVENT, _body_text, _clean, connect, describe, mark_interrupted, new_session_id, utcnow

# --- the ring ------------------------------------------------------------------------

#: Counters at the start of the ring file (u64 words, native order, each stored whole: see
#: Ring.words): write position (producer), read position, frames taken, frames committed, bytes
#: committed, frames lost to write errors, and a flag the proxy raises while controls wait for
#: room (the writer then says "D"rained).
_TAKEN, _WRITTEN, _WRITTEN_BYTES, _LOST, _WAITING = 2, 3, 4, 5, 6
_HEADER = 64
_POS = struct.Struct("<Q")
#: A record: total length (8-aligned), payload length, kind, flags, session-id length, seq,
#: t; then the session id, the payload, padding, and the record's own start position (u64).
_RECORD = struct.Struct("<IIBBHQd")
_SKIP = 0xFFFFFFFF  # "the rest of the ring is empty, continue at its start"
FRAME, CONTROL = 1, 2
_SERVER, _BINARY = 1, 2


class Ring:
    """A single-producer, single-consumer byte ring over a shared mapping."""

    def __init__(self, buf: mmap.mmap, capacity: int) -> None:
        self.buf = buf
        self.capacity = capacity
        # The counters, shared with the other process, as whole words: struct.pack_into zeroes its target
        # before it writes the value, so a reader in the other process could see a position or count of 0.
        self.words = memoryview(buf)[:_HEADER].cast("Q")
        self.seen = list(self.words)  # the highest value of each counter read so far (see latest)
        self.wpos = self.words[0]  # producer's copy
        self.rpos = self.words[1]  # consumer's copy

    @classmethod
    def create(cls, capacity: int) -> tuple[Ring, IO[bytes]]:
        """A new ring in an anonymous file (RAM-backed where /dev/shm exists)."""
        capacity = max(4096, capacity - capacity % 8)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        file = tempfile.TemporaryFile(prefix="rtproxy-ring-", dir=shm)
        file.truncate(_HEADER + capacity)
        return cls(cls.populated(file.fileno(), capacity), capacity), file

    @staticmethod
    def populated(fd: int, capacity: int) -> mmap.mmap:
        """A mapping with every page in place (~0.1 s for 64 MiB, once): otherwise the first lap round the
        ring takes a page fault every 4 KiB, which measured 9 µs instead of 3 µs per 13 KB frame."""
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        return mmap.mmap(fd, _HEADER + capacity, flags=flags)

    def close(self) -> None:
        self.words.release()
        self.buf.close()

    def counters(self) -> tuple[int, ...]:
        return tuple(self.words[:6])

    def counter(self, index: int) -> int:
        return self.words[index]

    def set_counter(self, index: int, value: int) -> None:
        self.words[index] = value

    def latest(self, index: int) -> int:
        """A counter the other process raises (the read position, frames taken), never below a value read
        before: a stale or half-written word must not make a ring with room look full."""
        value, seen = self.words[index], self.seen
        if value < seen[index]:
            return seen[index]
        seen[index] = value
        return value

    # -- producer --

    def put(self, kind: int, flags: int, sid: bytes, seq: int, t: float, payload: bytes) -> bool:
        """Append one record; False (and nothing written) if it does not fit."""
        n = len(payload)
        start = _RECORD.size + len(sid)
        size = (start + n + 15) & ~7  # + the 8-byte trailer, rounded up to 8
        pos, cap, buf = self.wpos, self.capacity, self.buf
        off = pos % cap
        if size > cap - off:  # continue at the start of the ring
            if size > cap or pos + cap - off + size - self.latest(1) > cap:
                return False
            _POS.pack_into(buf, _HEADER + off, _SKIP)
            pos += cap - off
            off = 0
        elif pos + size - self.latest(1) > cap:
            return False
        base = _HEADER + off
        _RECORD.pack_into(buf, base, size, n, kind, flags, len(sid), seq, t)
        buf[base + _RECORD.size : base + start] = sid
        buf[base + start : base + start + n] = payload
        _POS.pack_into(buf, base + size - 8, pos)  # the trailer, then publish the new write position
        self.wpos = self.words[0] = pos + size
        return True

    # -- consumer --

    def take(self, max_records: int = 256, max_bytes: int = 8 << 20) -> list[tuple[int, int, str, int, float, Any]]:
        """Copy out up to max_records complete records (text frames as str) and free their space."""
        buf, cap = self.buf, self.capacity
        end = self.words[0]
        pos = self.rpos
        out: list[tuple[int, int, str, int, float, Any]] = []
        taken = 0
        with memoryview(buf) as view:
            while pos < end and len(out) < max_records and taken < max_bytes:
                off = pos % cap
                base = _HEADER + off
                size = _POS.unpack_from(buf, base)[0] & 0xFFFFFFFF
                if size == _SKIP:
                    pos += cap - off
                    continue
                if size < _RECORD.size + 8 or size > cap - off or _POS.unpack_from(buf, base + size - 8)[0] != pos:
                    break  # not all there yet
                size, n, kind, flags, nsid, seq, t = _RECORD.unpack_from(buf, base)
                start = base + _RECORD.size + nsid
                sid = str(view[base + _RECORD.size : start], "utf-8")
                with view[start : start + n] as body:
                    if kind == CONTROL:
                        data: Any = pickle.loads(body)
                    elif flags & _BINARY:
                        data = bytes(body)
                    else:
                        data = str(body, "utf-8", "surrogatepass")
                out.append((kind, flags, sid, seq, t, data))
                taken += size
                pos += size
        self.rpos = self.words[1] = pos
        return out


# --- the writer (runs in its own process; in-process when never started) -----------


def _may_hold_key(text: str) -> bool:
    """Is ``sk-`` or ``ek_`` anywhere in text? (memchr for the rare '-' and '_', not a 3-byte scan)"""
    for sep, prefix in (("-", "sk"), ("_", "ek")):
        i = text.find(sep, 2)
        while i != -1:
            if text[i - 2 : i] == prefix:
                return True
            i = text.find(sep, i + 1)
    return False


def event_row(session_id: str, seq: int, t: float, direction: str, data: str | bytes, size: int) -> tuple[Any, ...]:
    """The `events` row for a frame of `size` bytes, as :func:`rtproxy.store.frame_row` makes it, faster."""
    if isinstance(data, str):
        if _may_hold_key(data):
            data = redact_text(data)
        typ, eid, iid, rid = describe(data)
        return (session_id, seq, t, direction, typ, eid, iid, rid, size, data, None)
    return (session_id, seq, t, direction, None, None, None, None, size, None, redact_bytes(data))


Record = tuple[int, int, str, int, float, Any]


class Writer:
    """Takes records off the ring and writes them to SQLite in batches.

    A failed write (a full disk, say) loses the frames of that transaction,
    counted on their sessions (``unrecorded``); the sessions, updates and REST
    exchanges in it are kept and written again once the database takes them.
    """

    def __init__(
        self,
        path: str,
        ring: Ring,
        report: Callable[[str, str], None],
        commit_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ring = ring
        self.clock = clock
        self.report = report
        self.commit_interval = commit_interval
        self.conn = connect(path)
        self.sniffing: dict[str, dict[str, Any]] = {}  # sessions whose dialect is not known yet
        self.stopping = False
        self.last_commit = self.clock()
        self.taken, self.written, self.written_bytes, self.lost = ring.counters()[_TAKEN : _LOST + 1]
        self.txn_frames: dict[str, int] = {}  # frames per session in the open transaction
        self.txn_bytes = 0
        self.txn_controls: list[tuple[Any, ...]] = []  # what to write again if the transaction fails
        self.retry: list[tuple[Any, ...]] = []
        self.retry_at = 0.0
        self.lost_by: dict[str, int] = {}  # frames lost to failed writes, per session
        self.parent_unrecorded: dict[str, int] = {}  # the proxy's own count of dropped frames
        self.barriers: list[int] = []
        self.last_error = ""
        self.adjust: Callable[[int], None] | None = None  # see run()

    def run(self, parent: int | None, poll: float = 0.005, max_poll: float = 0.02) -> None:
        """Drain until told to stop, or until the parent is gone and the ring is empty.

        An idle writer polls less and less often (``poll`` doubling up to ``max_poll``); ``self.adjust``, when
        set, is told the backlog (bytes on the ring not yet taken) after every step.
        """
        wait = poll
        while True:
            busy = self.step()
            if self.adjust is not None:
                self.adjust(self.ring.counter(0) - self.ring.rpos)
            if self.stopping:
                break
            if busy:
                wait = poll
            else:
                if parent is not None and os.getppid() != parent:
                    break
                time.sleep(wait)
                wait = min(max_poll, wait * 2)
        if self.adjust is not None:
            self.adjust(1 << 62)  # stopping: finish at full speed
        while self.step():
            pass
        self.commit()

    def step(self) -> bool:
        """Write one batch (and commit when due); True if there was anything new."""
        records = self.ring.take()
        if records or (self.retry and self.clock() >= self.retry_at):
            self.write(records)
        open_txn = bool(self.txn_controls or self.txn_frames)
        due = not records or self.clock() - self.last_commit >= self.commit_interval
        if self.barriers or (open_txn and due):
            self.commit()
        return bool(records)

    def write(self, records: list[Record]) -> None:
        todo: list[Record] = [(CONTROL, 0, "", 0, 0.0, op) for op in self.retry] + records
        self.retry = []
        sniffing = self.sniffing
        rows: list[tuple[Any, ...]] = []
        k = 0
        try:
            while k < len(todo):
                kind, flags, sid, seq, t, data = todo[k]
                if kind == FRAME:
                    size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
                    row = event_row(sid, seq, t, "server" if flags & _SERVER else "client", data, size)
                    rows.append(row)
                    if sid in sniffing and row[4] is not None:
                        self._sniff(row)
                    k += 1
                    continue
                self._insert(rows)
                rows = []
                self._control(data)
                k += 1
            self._insert(rows)
            rows = []
        except sqlite3.Error as e:
            self._failed(e, rows, todo[k:])
        self.taken += sum(1 for r in records if r[0] == FRAME)
        self.ring.set_counter(_TAKEN, self.taken)
        if self.ring.counter(_WAITING):
            self.report("D", "")

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        self.conn.executemany(INSERT_EVENT, rows)
        counts = self.txn_frames
        for row in rows:
            counts[row[0]] = counts.get(row[0], 0) + 1
            self.txn_bytes += row[8]

    def commit(self) -> None:
        try:
            self.conn.commit()
        except sqlite3.Error as e:
            self._failed(e, [], [])
        else:
            self.written += sum(self.txn_frames.values())
            self.written_bytes += self.txn_bytes
            self.ring.set_counter(_WRITTEN, self.written)
            self.ring.set_counter(_WRITTEN_BYTES, self.written_bytes)
            self.last_error = ""
        self.txn_frames.clear()
        self.txn_bytes = 0
        self.txn_controls.clear()
        self.last_commit = self.clock()
        for barrier in self.barriers:  # done: everything before it is on disk or counted as lost
            self.report("B", str(barrier))
        self.barriers.clear()

    def _failed(self, error: sqlite3.Error, rows: list[tuple[Any, ...]], rest: list[Record]) -> None:
        """Roll back; count the frames lost per session; keep every control to write again."""
        try:
            self.conn.rollback()
        except sqlite3.Error:
            pass
        lost = dict(self.txn_frames)
        for sid in [r[0] for r in rows] + [r[2] for r in rest if r[0] == FRAME]:
            lost[sid] = lost.get(sid, 0) + 1
        retry = list(self.txn_controls)
        for record in rest:
            if record[0] == CONTROL:
                op = record[5]
                if op[0] == "barrier":
                    self.barriers.append(op[1])
                elif op[0] == "stop":
                    self.stopping = True
                else:
                    retry.append(op)
        for sid, n in lost.items():
            self.lost_by[sid] = self.lost_by.get(sid, 0) + n
            retry.append(("lost", sid))
        self.lost += sum(lost.values())
        self.ring.set_counter(_LOST, self.lost)
        self.retry = retry + self.retry
        self.retry_at = self.clock() + self.commit_interval
        self.txn_frames.clear()
        self.txn_bytes = 0
        self.txn_controls.clear()
        message = f"recording failed, frames not written: {error}"
        if message != self.last_error:
            self.last_error = message
            self.report("E", message)

    def _control(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "barrier":
            self.barriers.append(op[1])
            return
        if kind == "stop":
            self.stopping = True
            return
        self.txn_controls.append(op)
        if kind == "session":
            self._insert_session(op[1])
        elif kind == "update":
            self._update_session(op[1], op[2])
        elif kind == "http":
            self._insert_row("http", op[1])
        elif kind == "lost":
            self._update_session(op[1], {})

    def _sniff(self, row: tuple[Any, ...]) -> None:
        """Learn a session's dialect (and model) from the events it carries."""
        sid, typ = row[0], row[4]
        state = self.sniffing[sid]
        event = parse_event(row[9]) if typ in ("session.created", "session.updated") else None
        if event is not None and not state.get("model"):
            session = event.get("session")
            if isinstance(session, dict) and isinstance(session.get("model"), str):
                state["model"] = session["model"]
                self._update_session(sid, {"model": session["model"]})
        dialect = dialect_from_event(typ, event)
        if dialect is not None:
            self._update_session(sid, {"dialect": dialect.value})
            del self.sniffing[sid]

    def _insert_session(self, fields: dict[str, Any]) -> None:
        if fields.get("status") == "open" and not fields.get("dialect"):
            self.sniffing[fields["id"]] = {"model": fields.get("model")}
        self._insert_row("sessions", fields, "INSERT OR REPLACE")

    def _update_session(self, session_id: str, fields: dict[str, Any]) -> None:
        if fields.get("status") not in (None, "open"):
            self.sniffing.pop(session_id, None)
        if "unrecorded" in fields:
            self.parent_unrecorded[session_id] = fields["unrecorded"]
        if session_id in self.lost_by:  # the proxy's drops plus what failed writes lost
            fields = {**fields, "unrecorded": self.parent_unrecorded.get(session_id, 0) + self.lost_by[session_id]}
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.conn.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*fields.values(), session_id))

    def _insert_row(self, table: str, fields: dict[str, Any], verb: str = "INSERT") -> None:
        cols, marks = ", ".join(fields), ", ".join("?" for _ in fields)
        self.conn.execute(f"{verb} INTO {table} ({cols}) VALUES ({marks})", tuple(fields.values()))


def lower_priority(priority: str) -> None:
    """Make the writer yield the CPU to the proxy (Linux; elsewhere a nice value).

    ``batch``: nice 19 and SCHED_BATCH, so that waking up never preempts the
    proxy, yet it keeps a small share on a busy machine. ``idle``: SCHED_IDLE,
    only CPU time nothing else wants (a flush can wait long on a busy
    machine). ``low``: nice 19 only. ``normal``: as the proxy. Measured on 2
    cores: with ``low`` a flood lost 10-20% of its throughput to the writer;
    with ``batch`` or ``idle`` it lost none; round-trip p99 through the proxy
    was 2.5x the bare relay's with ``batch``, 1.1-1.5x with ``idle``.
    ``adaptive`` is handled by :class:`AdaptivePriority`.
    """
    try:
        if priority == "idle" and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        if priority == "batch" and hasattr(os, "SCHED_BATCH"):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        if priority != "normal":
            os.nice(19)
    except OSError:
        pass


def _may_leave_idle() -> bool:
    """Can this process move from SCHED_IDLE back to a normal policy? (root, or RLIMIT_NICE allows it)"""
    if not hasattr(os, "SCHED_IDLE") or not hasattr(os, "SCHED_BATCH"):
        return False
    if os.geteuid() == 0:
        return True
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
        return soft == resource.RLIM_INFINITY or soft >= 20 - os.getpriority(os.PRIO_PROCESS, 0)
    except (ImportError, AttributeError, OSError):
        return False


class AdaptivePriority:
    """SCHED_IDLE while the writer keeps up, so it never takes a core the proxy wants; SCHED_BATCH at the
    proxy's own nice value once it falls behind (a backlog over ``high`` bytes, or frames waiting longer than
    ``patience`` seconds: a machine busy with other work must not starve it), back to idle once it has caught
    up. Where the process may not leave SCHED_IDLE again (unprivileged, RLIMIT_NICE 0) it uses ``batch``."""

    def __init__(self, capacity: int, patience: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.high = capacity // 8
        self.patience = patience
        self.clock = clock
        self.urgent = False
        self.behind_since: float | None = None
        self.enabled = _may_leave_idle()
        if not self.enabled:
            lower_priority("batch")
            return
        self._set(os.SCHED_IDLE)

    def __call__(self, backlog: int) -> None:
        if backlog <= 0:
            self.behind_since = None
            if self.urgent or self._policy() != os.SCHED_IDLE:  # the proxy's watchdog may have hurried us
                self.urgent = not self._set(os.SCHED_IDLE)
            return
        now = self.clock()
        if self.behind_since is None:
            self.behind_since = now
        if not self.urgent and (backlog > self.high or now - self.behind_since > self.patience):
            self.urgent = self._set(os.SCHED_BATCH)

    @staticmethod
    def _policy() -> int:
        return os.sched_getscheduler(0)

    @staticmethod
    def _set(policy: int) -> bool:
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))
            return True
        except OSError:
            return False


def writer_main(argv: list[str] | None = None) -> None:
    """Entry point of the writer process: ``DB RING_FD ACK_FD CAPACITY PARENT_PID PRIORITY COMMIT_INTERVAL``."""
    path, ring_fd, ack_fd, capacity, parent, priority, interval = (argv or sys.argv[1:])[:7]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # meant for the proxy, which then stops us in
        signal.signal(sig, signal.SIG_IGN)  # order; if it dies instead, we drain the ring and exit
    adaptive = AdaptivePriority(int(capacity)) if priority == "adaptive" else None
    if adaptive is None:
        lower_priority(priority)
    ring = Ring(Ring.populated(int(ring_fd), int(capacity)), int(capacity))
    os.close(int(ring_fd))
    acks = os.fdopen(int(ack_fd), "wb", buffering=0)

    def report(kind: str, text: str) -> None:
        try:
            acks.write(f"{kind} {text.replace(chr(10), ' ')}\n".encode())
        except OSError:
            pass

    try:
        writer = Writer(path, ring, report, float(interval))
    except Exception as e:  # noqa: BLE001 - anything that stops us from writing goes to the proxy
        report("E", f"the recorder cannot open {path}: {e}")
        raise SystemExit(1) from e
    if adaptive is not None and adaptive.enabled:
        writer.adjust = adaptive
    writer.run(int(parent))
    writer.conn.close()
    report("X", "")


# --- the Recorder (the proxy's side) -------------------------------------------------


@dataclass
class RecorderStats:
    queued: int = 0
    written: int = 0
    dropped: int = 0
    queued_bytes: int = 0
    written_bytes: int = 0
    errors: list[str] = field(default_factory=list)


class Recorder:
    """Records frames, sessions and REST exchanges through a writer process.

    Every method is safe to call from the event loop: none blocks, parses or
    touches SQLite (``flush`` and ``close`` wait, and belong on a thread or at
    shutdown). When the ring holds ``max_bytes`` (or ``max_frames`` frames not
    yet taken), frames are dropped, counted per session (:meth:`dropped_for`,
    the session's ``unrecorded`` column) and reported through ``on_overflow``
    once per session; sessions, updates and REST exchanges are never dropped.
    """

    def __init__(
        self,
        path: str,
        *,
        flush_interval: float = 0.05,
        max_frames: int = 200_000,
        max_bytes: int = 64 * 1024 * 1024,
        writer_priority: str = "adaptive",
        on_overflow: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.writer_priority = writer_priority
        self.on_overflow = on_overflow
        self.on_error = on_error
        conn = connect(path)
        try:
            self.interrupted = mark_interrupted(conn)
        finally:
            conn.close()
        self._ring, self._file = Ring.create(max_bytes)
        self._stats = RecorderStats()
        self._dropped: dict[str, int] = {}
        self._pending: deque[bytes] = deque()  # control records waiting for room in the ring
        self._lock = threading.Lock()
        self._barriers: dict[int, threading.Event] = {}
        self._barrier_ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._acks: threading.Thread | None = None
        self._writer_gone = threading.Event()
        self._closed = False

    # -- lifecycle --

    def start(self) -> None:
        """Start the writer process (without it, ``flush`` and ``close`` write in the caller's thread)."""
        read_fd, write_fd = os.pipe()
        ring_fd = self._file.fileno()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        argv = [
            self.path,
            ring_fd,
            write_fd,
            self._ring.capacity,
            os.getpid(),
            self.writer_priority,
            self.flush_interval,
        ]
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from rtproxy.recorder import writer_main; writer_main()", *map(str, argv)],
                pass_fds=(ring_fd, write_fd),
                stdin=subprocess.DEVNULL,
                env=env,  # same session: with autogroup scheduling, only then does its priority count
            )
        finally:
            os.close(write_fd)
        self._acks = threading.Thread(
            target=self._read_acks, args=(read_fd,), name="rtproxy-recorder-acks", daemon=True
        )
        self._acks.start()
        if self.writer_priority == "adaptive" and _may_leave_idle():
            threading.Thread(target=self._hurry_writer, name="rtproxy-recorder-watchdog", daemon=True).start()

    def _hurry_writer(self, period: float = 0.25) -> None:
        """A writer starved in SCHED_IDLE by a busy machine barely runs, so it cannot notice it is behind;
        the proxy can. Frames that were on the ring two periods ago and are still there: hurry it."""
        process, ring = self._process, self._ring
        before: int | None = None
        stuck = 0
        while process is not None and not self._writer_gone.wait(period):
            wpos, rpos = ring.counter(0), ring.counter(1)  # write and read positions
            stuck = stuck + 1 if before is not None and rpos < before else 0
            before = wpos
            if stuck >= 2:
                stuck = 0
                try:
                    os.sched_setscheduler(process.pid, os.SCHED_BATCH, os.sched_param(0))
                except OSError:
                    pass

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is committed; False on timeout."""
        if self._process is None:
            self._write_here()
            return True
        done = threading.Event()
        with self._lock:
            barrier = next(self._barrier_ids)
            self._barriers[barrier] = done
            self._control(("barrier", barrier))
        ok = done.wait(timeout) and not self._writer_gone.is_set()
        with self._lock:
            self._barriers.pop(barrier, None)
        return ok

    def close(self, timeout: float = 10.0) -> None:
        """Write everything still queued, stop the writer, release the ring."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
        if self._process is None:
            self._write_here()
        else:
            with self._lock:
                self._control(("stop",))
            deadline = time.monotonic() + timeout
            while self._pending and not self._writer_gone.wait(0.01) and time.monotonic() < deadline:
                with self._lock:
                    self._push_pending()
            try:
                self._process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._report(f"the recorder did not finish within {timeout:g} s; stopped it")
                self._process.kill()
                self._process.wait()
            if self._acks is not None:
                self._acks.join(1.0)
        self._refresh_stats()
        self._ring.close()
        self._file.close()

    # -- called from the event loop --

    def record_frame(self, session_id: str, seq: int, t: float, direction: str, data: str | bytes) -> bool:
        """Queue one frame; False if the ring was full and it was dropped (counted, reported)."""
        if isinstance(data, str):
            payload, flags = data.encode("utf-8", "surrogatepass"), _SERVER if direction == "server" else 0
        else:
            payload, flags = data, (_SERVER if direction == "server" else 0) | _BINARY
        stats = self._stats
        with self._lock:
            if self._closed:
                return False
            ring = self._ring
            if (
                not self._pending
                and stats.queued - ring.latest(_TAKEN) < self.max_frames
                and ring.put(FRAME, flags, session_id.encode(), seq, t, payload)
            ):
                stats.queued += 1
                stats.queued_bytes += len(payload)
                return True
            first = self._drop(session_id)
        if first and self.on_overflow is not None:
            self.on_overflow(session_id)
        return False

    def open_session(self, **fields: Any) -> str:
        """Queue a new session row; returns its id."""
        sid = fields.setdefault("id", new_session_id())
        fields.setdefault("started_at", utcnow())
        fields.setdefault("status", "open")
        fields.setdefault("owner_pid", os.getpid())
        with self._lock:
            self._control(("session", _clean(fields)))
        return str(sid)

    def update_session(self, session_id: str, **fields: Any) -> None:
        with self._lock:
            if "unrecorded" not in fields and session_id in self._dropped:
                fields["unrecorded"] = self._dropped[session_id]
            self._control(("update", session_id, _clean(fields)))

    def record_http(self, **fields: Any) -> None:
        for key in ("request_body", "response_body"):
            body = fields.get(key)
            if isinstance(body, bytes):
                fields[key] = _body_text(body)
        with self._lock:
            self._control(("http", _clean(fields)))

    def dropped_for(self, session_id: str) -> int:
        return self._dropped.get(session_id, 0)

    @property
    def stats(self) -> RecorderStats:
        """Counts so far: queued and dropped here, written by the writer."""
        self._refresh_stats()
        return self._stats

    # -- internals (callers hold self._lock unless noted) --

    def _drop(self, session_id: str) -> bool:
        """Count a dropped frame; True if it is the session's first."""
        self._stats.dropped += 1
        count = self._dropped.get(session_id, 0) + 1
        self._dropped[session_id] = count
        if count == 1:  # mark the session now, so a live view (or a crash) shows the gap
            self._control(("update", session_id, {"unrecorded": 1}))
        return count == 1

    def _control(self, op: tuple[Any, ...]) -> None:
        self._pending.append(pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL))
        self._push_pending()

    def _push_pending(self) -> None:
        pending, ring = self._pending, self._ring
        while pending and ring.put(CONTROL, 0, b"", 0, 0.0, pending[0]):
            pending.popleft()
        ring.set_counter(_WAITING, len(pending))

    def _write_here(self) -> None:
        """Without a writer process: drain the ring in this thread (tests, short scripts)."""
        with self._lock:
            writer = Writer(
                self.path,
                self._ring,
                lambda kind, text: self._report(text) if kind == "E" else None,
                self.flush_interval,
            )
            try:
                while True:
                    self._push_pending()
                    if not writer.step() and not self._pending:
                        break
                writer.commit()
            finally:
                writer.conn.close()

    def _refresh_stats(self) -> None:
        with self._lock:
            if self._ring.buf.closed:
                return
            _, _, _, written, written_bytes, lost = self._ring.counters()
        self._stats.written, self._stats.written_bytes = written, written_bytes
        self._stats.dropped = sum(self._dropped.values()) + lost

    def _read_acks(self, fd: int) -> None:
        """The ack thread: barriers done, errors, the ring drained (room for waiting controls)."""
        with os.fdopen(fd, "rb") as acks:
            for line in acks:
                kind, _, text = line.decode("utf-8", "replace").rstrip("\n").partition(" ")
                self._ack(kind, text)
        self._writer_gone.set()
        with self._lock:
            for event in self._barriers.values():
                event.set()
        if not self._closed:
            self._report("the recorder process stopped; frames are forwarded but no longer recorded")

    def _ack(self, kind: str, text: str) -> None:
        if kind == "B":
            event = self._barriers.get(int(text))
            if event is not None:
                event.set()
        elif kind == "E":
            self._report(text)
        if self._pending and kind != "E":
            with self._lock:
                self._push_pending()

    def _report(self, message: str) -> None:
        errors = self._stats.errors
        if not errors or errors[-1] != message:
            errors.append(message)
            if self.on_error is not None:
                self.on_error(message)
            else:
                print(f"rtproxy: {message}", file=sys.stderr)
