"""The writer: a process of its own that stores what the proxy recorded, in batches, in SQLite.

It reads batches from its stdin, or on the portable path from a loopback
socket it connects to (see :mod:`rtproxy.record.transport` for the
protocol), extracts type and ids, masks key-shaped strings, inserts with
``executemany`` and commits at least every ``commit_interval`` while there is
work, and soon after the pipe runs dry. After each commit it tells the proxy,
on its stdout, which batch the commit covered (``C``), which barriers are done
(``B``), and any error (``E``). When the proxy goes away its stream ends: it
stores what it still holds, commits and exits. It runs at a lower CPU
priority where the OS lets it come back up (Linux), so it never takes a core
the proxy wants while it keeps up, and through the first seconds of a burst
it keeps to a share of one core (:class:`BurstShare`).
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..protocols import (
    Api,
    Kind,
    api_session_id_from_event,
    api_session_id_from_handshake,
    model_from_event,
    names_api_session_ids,
    refine,
    settled,
)
from ..protocols.secrets import redact_bytes, redact_text
from ..protocols.wire import parse_event, skeleton
from ..store import (
    INSERT_EVENT,
    connect,
    describe,
    heartbeat,
    insert_session_sql,
    link_session,
    mark_interrupted,
)
from .transport import BINARY, CONTROL, FRAME, SERVER, BatchReader, decode_batch

Record = tuple[int, int, str, int, float, Any]


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


def decode_records(count: int, body: bytes | memoryview) -> list[Record]:
    """A batch body as records: text frames as str, binary frames as bytes, controls unpickled."""
    out: list[Record] = []
    for kind, flags, sid, seq, t, view in decode_batch(body, count):
        if kind == CONTROL:
            data: Any = pickle.loads(view)
        elif flags & BINARY:
            data = bytes(view)
        else:
            data = str(view, "utf-8", "surrogatepass")
        out.append((kind, flags, sid, seq, t, data))
    return out


class Writer:
    """Writes records to SQLite in transactions.

    A failed write (a full disk, say) loses the frames of that transaction,
    counted on their sessions (``unrecorded``); the sessions, updates and REST
    exchanges in it are kept and written again once the database takes them.
    """

    def __init__(
        self,
        path: str,
        report: Callable[[str, str], None],
        commit_interval: float,
        clock: Callable[[], float] = time.monotonic,
        token: str | None = None,
    ) -> None:
        self.clock = clock
        self.token = token  # the recorder's: its heartbeat says its open sessions are alive
        self.report = report
        self.commit_interval = commit_interval
        self.conn = connect(path)
        # Checkpoints (copying the WAL into the database: half the cost of storing a 13 KB frame, or more) are ours
        # to time: when the pipe has been dry a while, or when the WAL has grown by CHECKPOINT_BYTES.
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        self.since_checkpoint = 0
        self.sniffing: dict[str, dict[str, Any]] = {}  # sessions whose dialect is not known yet
        self.stopping = False
        self.txn_started: float | None = None
        self.written = self.written_bytes = self.lost = 0
        self.batch = 0  # the last batch written into the open transaction
        self.txn_frames: dict[str, int] = {}  # frames per session in the open transaction
        self.txn_bytes = 0
        self.txn_controls: list[tuple[Any, ...]] = []  # what to write again if the transaction fails
        self.retry: list[tuple[Any, ...]] = []
        self.retry_at = 0.0  # a failed write is tried again no sooner (a full disk is not retried in a loop)
        self.lost_by: dict[str, int] = {}  # frames lost to failed writes, per session
        self.parent_unrecorded: dict[str, int] = {}  # the proxy's own count of dropped frames
        self.barriers: list[int] = []
        self.last_error = ""
        self.next_beat = self.next_sweep = 0.0

    # -- what the process loop calls --

    def write_batch(self, number: int, records: list[Record]) -> None:
        """Insert one batch's records into the open transaction."""
        if self.txn_started is None:
            self.txn_started = self.clock()
        self.write(records)
        self.batch = number

    def due(self) -> bool:
        """Is a commit due (barriers waiting, or the transaction older than the commit interval)?"""
        if self.barriers:
            return True
        return self.txn_started is not None and self.clock() - self.txn_started >= self.commit_interval

    @property
    def open(self) -> bool:
        return self.txn_started is not None or bool(self.barriers)

    def retry_in(self) -> float | None:
        """Seconds until what a failed write kept is tried again (None: nothing kept)."""
        return max(0.0, self.retry_at - self.clock()) if self.retry else None

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
                    row = event_row(sid, seq, t, "server" if flags & SERVER else "client", data, size)
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

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        self.conn.executemany(INSERT_EVENT, rows)
        counts = self.txn_frames
        for row in rows:
            counts[row[0]] = counts.get(row[0], 0) + 1
            self.txn_bytes += row[8]

    def commit(self) -> None:
        """Commit the open transaction; say which batch it covered and which barriers are done."""
        if self.retry and self.clock() >= self.retry_at:
            self.write([])
        try:
            self.conn.commit()
        except sqlite3.Error as e:
            self._failed(e, [], [])
        else:
            self.written += sum(self.txn_frames.values())
            self.written_bytes += self.txn_bytes
            self.since_checkpoint += self.txn_bytes + 1
            self.last_error = ""
        self.txn_frames.clear()
        self.txn_bytes = 0
        self.txn_controls.clear()
        self.txn_started = None
        self.report("C", f"{self.batch} {self.written} {self.written_bytes} {self.lost}")
        for barrier in self.barriers:  # done: everything before it is on disk or counted as lost
            self.report("B", str(barrier))
        self.barriers.clear()
        if self.since_checkpoint > CHECKPOINT_BYTES:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database (PASSIVE: never waits for readers) if anything is new."""
        if not self.since_checkpoint:
            return
        self.since_checkpoint = 0
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as e:
            self.report("E", f"checkpoint failed (the WAL keeps the frames): {e}")

    def keep_alive(self) -> None:
        """Every HEARTBEAT seconds, the recorder's heartbeat; every SWEEP seconds, sessions that other recorders
        abandoned (their heartbeat stale) marked interrupted."""
        now = self.clock()
        if self.token is None or now < self.next_beat:
            return
        self.next_beat = now + HEARTBEAT
        try:
            heartbeat(self.conn, self.token, commit=self.txn_started is None)
            if now >= self.next_sweep:
                self.next_sweep = now + SWEEP
                if self.txn_started is None:
                    mark_interrupted(self.conn)
        except sqlite3.Error as e:
            self.report("E", f"the recorder's heartbeat failed: {e}")

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
        """Learn a session's API, variant and model from its first events (:mod:`rtproxy.protocols`): what its
        handshake said is confirmed or corrected; after SNIFF_FRAMES typed frames it is left as it is."""
        sid, direction, typ, text = row[0], row[3], row[4], row[9]
        state = self.sniffing[sid]
        state["seen"] += 1
        event = parse_event(skeleton(text)) if isinstance(text, str) else None
        kind: Kind = state["kind"]
        changes: dict[str, Any] = {}
        better = refine(kind, direction, typ, event)
        if better is not None and better != kind:
            state["kind"] = kind = better
            changes.update(api=kind.api.value, variant=kind.variant)
            if kind.api is Api.REALTIME and kind.variant:
                changes["dialect"] = kind.variant
        if not state["model"]:
            model = model_from_event(kind, direction, typ, event)
            if model:
                state["model"] = changes["model"] = model
        if changes:
            self._update_session(sid, changes)
        if not state["api_sid"]:
            api_sid = api_session_id_from_event(kind, direction, typ, event)
            if api_sid:
                state["api_sid"] = api_sid
                link_session(self.conn, sid, api_sid, kind.variant)
        wants_id = not state["api_sid"] and names_api_session_ids(kind)
        if (settled(kind) and state["model"] and not wants_id) or state["seen"] >= SNIFF_FRAMES:
            del self.sniffing[sid]

    def _insert_session(self, fields: dict[str, Any]) -> None:
        if fields.get("status") == "open":
            try:
                api = Api(fields.get("api") or Api.UNKNOWN.value)
            except ValueError:
                api = Api.UNKNOWN
            kind = Kind(api, fields.get("variant"))
            api_sid = api_session_id_from_handshake(kind, fields.get("path") or "")
            self.sniffing[fields["id"]] = {"kind": kind, "model": fields.get("model"), "seen": 0, "api_sid": api_sid}
        else:
            api_sid = None
        # OR IGNORE, never OR REPLACE: a session sent again to a new writer (its first one died after the commit
        # but before saying so) is already there; no insert ever replaces another session's row.
        sql = insert_session_sql(fields).replace("INSERT INTO", "INSERT OR IGNORE INTO", 1)
        self.conn.execute(sql, tuple(fields.values()))
        if api_sid:  # a sideband or fork: its path names its primary's API session
            link_session(self.conn, fields["id"], api_sid, fields.get("variant"))

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


# --- CPU priority ----------------------------------------------------------------------


#: The writer's nice value under ``low`` and while first hurried under ``adaptive``: a share of a busy CPU
#: small enough that a flood keeps its throughput (weight 15 against the proxy's 1024; nice 10's 110 cost a
#: 13 KB flood a third of its rate on two cores), never none.
NICE = 19


def lower_priority(priority: str) -> None:
    """Make the writer yield the CPU to the proxy where the OS allows it.

    ``low`` (the portable choice: POSIX nice, so Linux and macOS; Windows keeps normal priority): nice NICE.
    ``batch``: also SCHED_BATCH (Linux), so that waking up never preempts the proxy. ``idle``: SCHED_IDLE, only
    CPU time nothing else wants (it can starve). ``normal``: as the proxy. ``adaptive`` is handled by
    :class:`AdaptivePriority`.
    """
    try:
        if priority == "idle" and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        if priority == "batch" and hasattr(os, "SCHED_BATCH"):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        if priority != "normal" and hasattr(os, "nice"):
            os.nice(NICE)
    except OSError:
        pass


def thread_ids(pid: int | None = None) -> list[int]:
    """The thread ids of a process (this one by default), where Linux sets a scheduling policy or nice value one
    thread at a time; the process id alone (0: the caller) where /proc cannot say."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{'self' if pid is None else pid}/task")]
    except OSError:
        return [0 if pid is None else pid]


def may_leave_idle() -> bool:
    """Can this process move from SCHED_IDLE back to a normal policy? (Linux: root, or RLIMIT_NICE allows it)"""
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
    """SCHED_IDLE while the writer keeps up, and through a burst, so it never takes a core the proxy wants;
    SCHED_BATCH at nice NICE once it has been behind for ``patience`` seconds; nice 0 if it is still behind after
    ``insist`` seconds (a machine busy with other work for long must not starve it); back to idle at nice NICE
    once it has caught up. Only where the process may leave SCHED_IDLE and lower its nice value again (Linux,
    privileged or RLIMIT_NICE); elsewhere the writer runs at plain nice NICE.

    Why a burst stays idle, however large its backlog: a core running a SCHED_IDLE task counts as idle for a task
    that wakes up, one running a nice-19 task does not. Measured on two cores during a 2 s flood of 13 KB frames,
    the writer hurried to nice 19 at once cost the relay a third of its throughput (10.7k-15.5k msg/s against
    18.8k-20.8k left idle) for twice the CPU (0.8-1.0 s against 0.45 s), and every frame over the recorder's
    budget is dropped and counted either way.
    """

    def __init__(
        self,
        patience: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        insist: float = 6.0,
    ) -> None:
        self.patience = patience
        self.insist = insist
        self.clock = clock
        self.urgent = False
        self.desperate = False
        self.behind_since: float | None = None
        self.enabled = may_leave_idle()
        if self.enabled:
            try:
                os.nice(NICE)  # what it runs at when hurried (nice is inherited by the threads it starts)
            except OSError:
                pass
            self._set(os.SCHED_IDLE)

    def __call__(self, backlog: int) -> None:
        if not self.enabled:
            return
        if backlog <= 0:
            self.behind_since = None
            if self.desperate:
                self.desperate = not self._renice(NICE)
            if self.urgent or self._policy() != os.SCHED_IDLE:
                self.urgent = not self._set(os.SCHED_IDLE)
            return
        now = self.clock()
        if self.behind_since is None:
            self.behind_since = now
        if not self.urgent and now - self.behind_since > self.patience:
            self.urgent = self._set(os.SCHED_BATCH)
        if self.urgent and not self.desperate and now - self.behind_since > self.insist:
            self.desperate = self._renice(0)

    @staticmethod
    def _renice(value: int) -> bool:
        """Every thread of the process to this nice value (per thread on Linux)."""
        ok = True
        for tid in thread_ids():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, value)
            except OSError:
                ok = False
        return ok

    @staticmethod
    def _policy() -> int:
        return os.sched_getscheduler(0)

    @staticmethod
    def _set(policy: int) -> bool:
        """Every thread of the process (a policy is per thread on Linux: the pipe reader must follow)."""
        ok = True
        for tid in thread_ids():
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(0))
            except OSError:
                ok = False
        return ok


# --- the process -----------------------------------------------------------------------

#: Reads of the stream are at most this large; at most QUEUED of them wait for the writer (bounded memory).
CHUNK = 1 << 20
QUEUED = 32
#: With the pipe dry, the writer waits this long for more before it commits (fewer commits under a trickle).
LINGER = 0.005
#: Typed frames of a session the writer looks at to learn its API, variant and model.
SNIFF_FRAMES = 64
#: Seconds between the recorder's heartbeats, and between sweeps for sessions other recorders abandoned.
HEARTBEAT, SWEEP = 2.0, 10.0
#: A checkpoint once the WAL has grown by this much, whatever the traffic; else when the pipe is dry for IDLE s.
#: Copying the WAL into the database costs as much CPU as the inserts did (more, for 13 KB audio frames), so a
#: burst is absorbed by the WAL and the copy waits until the pipe is dry: a burst of up to CHECKPOINT_BYTES never
#: pays for it while the proxy is busy. The WAL is cut back to WAL_LIMIT bytes once a checkpoint has emptied it.
CHECKPOINT_BYTES, IDLE = 256 << 20, 0.25
WAL_LIMIT = 64 << 20
#: While behind, for its first BURST_PATIENCE seconds, the writer uses at most this share of one core (see
#: :class:`BurstShare`); ``RTPROXY_WRITER_BURST_SHARE`` sets another (1: no limit).
BURST_SHARE, BURST_PATIENCE = 0.2, 3.0


class BurstShare:
    """Through the first seconds of a burst, the writer keeps to a small share of one core, whatever its backlog.

    On two cores flooded by a client, an upstream and the proxy, the writer at SCHED_IDLE still found 0.5-0.8 s
    of CPU in every 2 s flood of 13 KB frames, and what it ran cost the relay as much throughput as it took CPU
    (its reads of the stream contend with the proxy's writes into it; the kernel's locks and caches are shared):
    the flood went 0.69-0.78x the bare relay's rate; kept to 20% of a core, 0.80-1.02x (benchmarks/
    proxy_overhead.py, both paths, two runs). A burst the
    recorder's budget (64 MiB in flight) holds is stored whole either way, only later; beyond it, frames are
    dropped and counted, as before, just more of them. After ``patience`` seconds behind (a load that lasts,
    not a burst) the limit is lifted, as :class:`AdaptivePriority` hurries the writer then: a steady load is
    recorded whatever it costs. Real traffic never meets it: a voice session is ~65 KB/s, 5 frames a second.
    """

    def __init__(
        self,
        share: float = BURST_SHARE,
        patience: float = BURST_PATIENCE,
        window: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.share = share
        self.patience = patience
        self.window = window
        self.clock, self.cpu, self.sleep = clock, cpu, sleep
        self.behind_since: float | None = None
        self.start = self.used = 0.0

    def __call__(self, behind: bool) -> float:
        """Before the next piece of work: `behind` says whether more waits. Returns the seconds slept."""
        if self.share >= 1.0:
            return 0.0
        now = self.clock()
        if not behind:
            self.behind_since = None
            return 0.0
        if self.behind_since is None or now - self.start >= self.window:
            if self.behind_since is None:
                self.behind_since = now
            self.start, self.used = now, self.cpu()  # a new window
            return 0.0
        if now - self.behind_since >= self.patience:
            return 0.0
        ahead = (self.cpu() - self.used) / self.share - (now - self.start)
        if ahead <= 0:
            return 0.0
        pause = min(ahead, self.window)
        self.sleep(pause)
        return pause


def burst_share_from_env() -> float:
    """RTPROXY_WRITER_BURST_SHARE as a share of one core in (0, 1]; BURST_SHARE if unset or not one."""
    try:
        share = float(os.environ.get("RTPROXY_WRITER_BURST_SHARE", ""))
    except ValueError:
        return BURST_SHARE
    return share if 0.0 < share <= 1.0 else BURST_SHARE


class ChunkPool:
    """At most QUEUED buffers of CHUNK bytes that the stream is read into, used again and again.

    A read into a new buffer each time costs the kernel a page fault per 4 KiB (an allocator hands a 1 MiB
    request fresh pages from mmap): measured on two cores, the writer's system CPU during a 2 s flood of 13 KB
    frames was 0.33-0.41 s that way, 0.17-0.26 s with the pool. Buffers are made when a burst needs them and
    let go when the stream has been quiet (:meth:`shrink`), so memory at rest stays small.
    """

    def __init__(self, limit: int = QUEUED, size: int = CHUNK) -> None:
        self.size = size
        self.limit = limit
        self.made = 0
        self.free: queue.LifoQueue[bytearray] = queue.LifoQueue()  # the last one used is the one in cache
        self.lock = threading.Lock()

    def take(self) -> bytearray:
        """A buffer to read into: a free one, a new one while fewer than `limit` exist, else the next given back."""
        try:
            return self.free.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            if self.made < self.limit:
                self.made += 1
                return bytearray(self.size)
        return self.free.get()

    def give(self, buf: bytearray) -> None:
        self.free.put(buf)

    def shrink(self, keep: int = 1) -> None:
        """Let go of free buffers beyond `keep`."""
        while self.free.qsize() > keep:
            try:
                self.free.get_nowait()
            except queue.Empty:
                break
            with self.lock:
                self.made -= 1


def _read_chunks(
    readinto: Callable[[bytearray], int],
    pool: ChunkPool,
    chunks: queue.Queue[tuple[bytearray, int] | None],
) -> None:
    try:
        while True:
            buf = pool.take()
            n = readinto(buf)
            if not n:
                break
            chunks.put((buf, n))
    except OSError:
        pass
    chunks.put(None)


def _readinto(source: int | socket.socket) -> Callable[[bytearray], int]:
    """How to read `source` into a buffer: a socket (the portable path), or a pipe's fd (the fast path, POSIX
    only, so ``readv`` is there)."""
    if isinstance(source, socket.socket):
        return source.recv_into
    return lambda buf: os.readv(source, [buf])


def serve(
    writer: Writer,
    source: int | socket.socket,
    adjust: Callable[[int], None] | None = None,
    linger: float = LINGER,
    pace: Callable[[bool], float] | None = None,
) -> None:
    """Store batches read from `source` (a pipe's fd, or a socket) until it ends (or a ``stop`` control),
    committing as :meth:`Writer.due` says and whenever the stream has been dry for ``linger`` seconds; ``adjust``
    is told the chunks waiting; ``pace`` is asked before each chunk whether more wait (and may sleep)."""
    chunks: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()  # bounded by the pool's buffers
    pool = ChunkPool()
    threading.Thread(
        target=_read_chunks, args=(_readinto(source), pool, chunks), name="rtproxy-writer-reader", daemon=True
    ).start()
    reader = BatchReader()
    ended = False
    while not ended and not writer.stopping:
        writer.keep_alive()
        retry = writer.retry_in()
        if writer.open:
            wait = linger
        elif retry is not None:
            wait = max(retry, 0.001)
        elif writer.since_checkpoint:
            wait = IDLE
        else:
            wait = HEARTBEAT
        try:
            chunk = chunks.get(timeout=wait)
        except queue.Empty:
            if writer.open or retry is not None:
                writer.commit()  # the pipe is dry (or a failed write is due again)
            elif wait == IDLE:
                writer.checkpoint()  # and has been for a while
                pool.shrink()
            if adjust is not None:
                adjust(0)
            continue
        if chunk is None:
            ended = True
            break
        buf, n = chunk
        if pace is not None:
            pace(not chunks.empty())  # behind: more read and waiting
        for number, count, body in reader.feed(memoryview(buf)[:n]):
            writer.write_batch(number, decode_records(count, body))
        pool.give(buf)  # the records are copies: the buffer may be read into again
        if writer.due():
            writer.commit()
        if adjust is not None:
            adjust(chunks.qsize() * CHUNK)
    if adjust is not None:
        adjust(1 << 62)  # stopping: finish at full speed
    writer.commit()


def _connect(address: str, key_fd: int) -> socket.socket:
    """Connect to the proxy's listener and prove who we are with the key it gave us on `key_fd`."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 200:
        more = os.read(key_fd, 200 - len(line))
        if not more:
            break
        line += more
    key = bytes.fromhex(line.decode("ascii").strip())
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10.0)
    sock.sendall(key)
    sock.settimeout(None)  # buffer sizes stay the OS's: Linux grows a busy socket's, unless one is set
    return sock


def writer_main(argv: list[str] | None = None) -> None:
    """Entry point of the writer process: ``DB PRIORITY COMMIT_INTERVAL [TOKEN [HOST:PORT]]``; batches on stdin,
    or from the loopback socket at HOST:PORT (after sending it the key its stdin's first line holds); acks on
    stdout."""
    args = (argv or sys.argv[1:])[:5]
    path, priority, interval = args[:3]
    token = args[3] if len(args) > 3 else None
    address = args[4] if len(args) > 4 else None
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"):  # meant for the proxy, which then stops us in
        sig = getattr(signal, name, None)  # order; if it dies instead, our stdin ends and we finish
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr  # nothing but acks on the pipe to the proxy
    lock = threading.Lock()

    def report(kind: str, text: str) -> None:
        with lock:
            try:
                os.write(out_fd, f"{kind} {text.replace(chr(10), ' ')}\n".encode())
            except OSError:
                pass

    source: int | socket.socket = in_fd
    if address is not None:  # first, at the priority we were started with: the proxy is holding batches for us
        try:
            source = _connect(address, in_fd)
        except (OSError, ValueError) as e:
            report("E", f"the recorder process cannot reach the proxy at {address}: {e}")
            raise SystemExit(1) from e
    adaptive = AdaptivePriority(patience=BURST_PATIENCE) if priority == "adaptive" else None
    if adaptive is None:
        lower_priority(priority)
    try:
        writer = Writer(path, report, float(interval), token=token)
    except Exception as e:  # noqa: BLE001 - anything that stops us from writing goes to the proxy
        report("E", f"the recorder cannot open {path}: {e}")
        raise SystemExit(1) from e
    pace = BurstShare(burst_share_from_env())
    serve(writer, source, adaptive if adaptive is not None and adaptive.enabled else None, pace=pace)
    writer.conn.close()
    report("X", "")
