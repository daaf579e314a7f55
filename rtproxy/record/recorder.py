"""The Recorder: the forwarding path's handle on recording. Frames go, in batches over a pipe, to a writer process.

Measured on two cores, a writer *thread* costs the relay half its throughput
and multiplies its p99 latency: every row it builds holds the GIL the event
loop is waiting for. So recording is split across two processes::

    event loop ── record_frame ──▶ open batch ── once per loop tick ──▶ pipe ──▶ writer process ──▶ SQLite (WAL)
        ▲                                                                            │
        └─────────────── commits ("C batch"), barriers, errors (its stdout) ─────────┘

* :meth:`Recorder.record_frame` appends a small header and the payload to the
  open batch: no system call, no parsing, no lock anyone else holds long. The
  batch is sealed and written to the pipe on the loop's next turn (see
  :mod:`rtproxy.record.transport` for the publication protocol and why it is correct
  on any CPU and OS). When more than ``max_bytes`` (or ``max_frames``) are on
  their way and not yet committed, a frame is dropped, counted per session,
  the session is marked (``unrecorded``) and ``on_overflow`` is called once
  per session: a slow disk never stalls a conversation, and never hides a gap.
* Sessions, session updates and REST exchanges travel in the same batches, so
  the database sees everything in the order it happened. They are never
  dropped, and they are kept until a commit covers them.
* The writer (:mod:`rtproxy.record.writer`) is started with ``sys.executable`` and
  talks over its stdin and stdout (and, on the portable path, a loopback
  socket it connects to) only: no inherited descriptors, shared mappings or
  POSIX signals, so it runs the same on Linux, macOS and Windows.
  If it dies, the proxy notices at once (its stdout ends), says so, counts the
  frames it took with it as unrecorded on their sessions, and starts a new
  one, which gets every session row and update not yet committed.
* Two paths, chosen at run time, one sender (see the transport module): the
  *fast* path (POSIX) writes batches, non-blocking, into the writer's stdin
  pipe; the *portable* path (any OS) into a loopback socket (a Windows pipe
  can neither be non-blocking nor be waited on). On both, a thread writes
  only what the stream cannot take at once; no event loop is needed. The writer's CPU priority is the
  OS's to offer, on either path: idle while it keeps up where Linux lets it
  come back up, else plain nice 19 (macOS, unprivileged Linux; normal
  priority on Windows); ``RTPROXY_WRITER_PRIORITY`` picks another. Through
  a burst's first seconds it keeps to a share of one core (``BurstShare``).
  ``RTPROXY_PORTABLE=1`` (or ``portable=True``) forces the portable path.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import secrets
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..store import (
    _body_text,
    _clean,
    connect,
    mark_interrupted,
    new_recorder_token,
    new_session_id,
    register_recorder,
    retire_recorder,
    utcnow,
)
from .transport import (
    BATCH,
    BINARY,
    SERVER,
    BatchBuilder,
    PipeStream,
    StreamSender,
    fast_path_available,
    loopback_listener,
    socket_sender,
)
from .writer import AdaptivePriority, Writer, decode_records, event_row, lower_priority, may_leave_idle, thread_ids

__all__ = ["AdaptivePriority", "Recorder", "RecorderStats", "Writer", "event_row", "lower_priority", "portable_default"]


def portable_default() -> bool:
    """Is the portable path forced (``RTPROXY_PORTABLE`` set to 1/true/yes), or the only one (Windows)?"""
    return os.name == "nt" or os.environ.get("RTPROXY_PORTABLE", "").strip().lower() in ("1", "true", "yes", "on")


#: What the writer's CPU priority may be (see :func:`rtproxy.record.writer.lower_priority`); ``RTPROXY_WRITER_PRIORITY``
#: picks one, else ``adaptive`` where Linux allows it and ``low`` elsewhere, on either path: the priority is what
#: the OS offers, not what the transport is (``low`` on Linux is how macOS runs, where nice is all there is).
WRITER_PRIORITIES = ("adaptive", "idle", "batch", "low", "normal")

#: Seconds a writer at idle priority may go without a commit while frames wait, before the proxy hurries it.
HURRY_AFTER = 3.0

#: The pipe to the writer holds this much where the OS lets us choose (Linux; elsewhere its default).
PIPE_BYTES = 4 << 20


def _widen_pipe(fd: int) -> None:
    """Let the pipe hold PIPE_BYTES (or the most an unprivileged process may ask for), so a writer that is a
    moment late does not make the proxy keep batches itself."""
    try:
        import fcntl
    except ImportError:  # Windows: the pipe keeps its size
        return
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:  # macOS
        return
    for size in (PIPE_BYTES, 1 << 20):
        try:
            fcntl.fcntl(fd, setsize, size)
            return
        except OSError:
            continue


@dataclass
class RecorderStats:
    queued: int = 0
    written: int = 0
    dropped: int = 0
    queued_bytes: int = 0
    written_bytes: int = 0
    restarts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _InFlight:
    """A batch sent to the writer and not yet covered by a commit."""

    number: int
    nbytes: int
    frames: dict[str, int]
    controls: list[bytes]


class Recorder:
    """Records frames, sessions and REST exchanges through a writer process.

    Every method is safe to call from the event loop and from other threads:
    none blocks, parses or touches SQLite (``flush`` and ``close`` wait, and
    belong on a thread or at shutdown). Without :meth:`start`, ``flush`` and
    ``close`` write in the caller's thread (tests, short scripts).
    """

    #: A writer that dies this many times without committing anything is not started again.
    MAX_FUTILE_RESTARTS = 3

    def __init__(
        self,
        path: str,
        *,
        flush_interval: float = 0.05,
        batch_interval: float = 0.002,
        max_frames: int = 200_000,
        max_bytes: int = 64 * 1024 * 1024,
        writer_priority: str | None = None,
        portable: bool | None = None,
        on_overflow: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.batch_interval = batch_interval
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.portable = portable_default() if portable is None else portable
        if writer_priority is None:
            writer_priority = os.environ.get("RTPROXY_WRITER_PRIORITY", "").strip().lower() or None
        if writer_priority not in WRITER_PRIORITIES:
            writer_priority = "adaptive" if may_leave_idle() else "low"
        self.writer_priority = writer_priority
        self.on_overflow = on_overflow
        self.on_error = on_error
        #: This recorder's name in the database's ``recorders`` table: its sessions' ``owner``; the writer keeps
        #: its heartbeat, so sessions it leaves open are known to be abandoned even when PIDs are reused.
        self.token = new_recorder_token()
        conn = connect(path)
        try:
            self.interrupted = mark_interrupted(conn)
            register_recorder(conn, self.token, pid=os.getpid())
        finally:
            conn.close()
        self._stats = RecorderStats()
        self._writer_lost = 0  # frames failed SQLite writes lost, as the writers reported them
        self._written_base = self._written_bytes_base = self._lost_base = 0  # the counts of writers now gone
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()
        self._batch = BatchBuilder()
        self._batch_numbers = itertools.count(1)
        self._seal_scheduled = False
        self._inflight: deque[_InFlight] = deque()
        self._held_bytes = 0  # payload bytes in the open batch and in flight
        self._held_frames = 0
        self._local: list[bytes] = []  # sealed batches, without a writer process (see _write_here)
        self._barriers: dict[int, threading.Event] = {}
        self._barrier_ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._sender: StreamSender | None = None
        self._open_sessions: set[str] = set()
        self._generation = 0
        self._futile = 0
        self._gone = threading.Event()  # no writer will run again (closed, or given up)
        self._started = False
        self._closing = False
        self._closed = False

    # -- lifecycle --

    def start(self) -> None:
        """Start the writer process."""
        with self._lock:
            self._started = True
            self._spawn()

    def _spawn(self) -> None:
        """Start a writer, its sender and the thread that reads its acks (caller holds the lock)."""
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        argv = [self.path, self.writer_priority, str(self.flush_interval), self.token]
        listener = None
        if self.portable or not fast_path_available():
            listener = loopback_listener()  # the portable path: batches over a loopback socket
            host, port = listener.getsockname()[:2]
            argv += [f"{host}:{port}"]
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", "from rtproxy.record.writer import writer_main; writer_main()", *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,  # same session: with autogroup scheduling, only then does its priority count
            )  # buffered: the ack thread reads lines (a raw pipe would cost a system call per byte)
        except BaseException:
            if listener is not None:
                listener.close()
            raise
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._generation += 1
        if listener is not None:
            key = secrets.token_bytes(32)
            try:  # the key the writer proves itself with: through its stdin, which nobody else can read
                process.stdin.write(key.hex().encode() + b"\n")
                process.stdin.close()
            except OSError:  # it died at once: the ack thread says so
                pass
            self._sender = socket_sender(listener, key, self._lock)
        else:
            fd = os.dup(process.stdin.fileno())
            process.stdin.close()
            _widen_pipe(fd)
            self._sender = StreamSender(PipeStream(fd), self._lock)
        threading.Thread(
            target=self._read_acks,
            args=(process, self._generation),
            name="rtproxy-recorder-acks",
            daemon=True,
        ).start()
        if self.writer_priority == "adaptive":
            threading.Thread(
                target=self._hurry_writer, args=(process,), name="rtproxy-recorder-watchdog", daemon=True
            ).start()

    def _hurry_writer(self, process: subprocess.Popen[bytes], period: float = 0.25) -> None:
        """A writer starved in SCHED_IDLE by a busy machine barely runs, so it cannot notice it is behind; the
        proxy can: frames in flight for HURRY_AFTER seconds without a commit, hurry it (SCHED_BATCH). A burst
        that keeps it from committing for less keeps the CPU for forwarding (see AdaptivePriority)."""
        before: int | None = None
        stuck = 0
        while process.poll() is None and not self._gone.wait(period):
            with self._lock:
                oldest = self._inflight[0].number if self._inflight else None
            stuck = stuck + 1 if oldest is not None and oldest == before else 0
            before = oldest
            if stuck * period >= HURRY_AFTER:
                stuck = 0
                for tid in thread_ids(process.pid):
                    try:
                        os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
                    except (OSError, AttributeError):
                        pass

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is committed; False on timeout."""
        if not self._started:
            self._write_here()
            return True
        if self._gone.is_set():
            return False
        done = threading.Event()
        with self._lock:
            barrier = next(self._barrier_ids)
            self._barriers[barrier] = done
            self._control(("barrier", barrier))
            self._seal()
        ok = done.wait(timeout) and not self._gone.is_set()
        with self._lock:
            self._barriers.pop(barrier, None)
        return ok

    def close(self, timeout: float = 10.0) -> None:
        """Write everything still queued, stop the writer."""
        if self._closed:
            return
        with self._lock:
            self._closed = self._closing = True
        if not self._started:
            self._write_here()
            self._refresh_stats()
            self._retire()
            return
        deadline = time.monotonic() + timeout
        with self._lock:
            self._seal()
            sender, process = self._sender, self._process
        if sender is not None:
            sender.drain(max(0.1, deadline - time.monotonic()))
            sender.close()
        if process is not None:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._report(f"the recorder did not finish within {timeout:g} s; stopped it")
                process.kill()
                process.wait()
        self._gone.set()
        self._refresh_stats()
        self._retire()

    def _retire(self) -> None:
        """Say in the database that this recorder has stopped (what it left open is interrupted)."""
        try:
            conn = connect(self.path)
            try:
                retire_recorder(conn, self.token)
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001 - a database we cannot open now was reported already
            self._report(f"could not mark the recorder stopped in {self.path}: {e}")

    # -- called from the event loop --

    def record_frame(self, session_id: str, seq: int, t: float, direction: str, data: str | bytes) -> bool:
        """Queue one frame (text as str, binary as bytes); False if too much is on its way already and it was
        dropped (counted, reported)."""
        flags = SERVER if direction == "server" else 0
        if isinstance(data, str):
            return self.record_payload(session_id, seq, t, flags, data.encode("utf-8", "surrogatepass"))
        return self.record_payload(session_id, seq, t, flags | BINARY, data)

    def record_payload(self, session_id: str, seq: int, t: float, flags: int, payload: bytes) -> bool:
        """:meth:`record_frame` for a frame already in bytes (a text frame's UTF-8, as it was forwarded), with
        its flags (``SERVER``, ``BINARY``): the proxy's hot path, no copy of the payload but into the batch."""
        n = len(payload)
        with self._lock:
            if self._closed:
                return False
            if (
                self._held_frames < self.max_frames
                and self._held_bytes + n <= self.max_bytes
                and not (self._started and self._gone.is_set())
            ):
                self._batch.add_frame(session_id, flags, seq, t, payload)
                self._held_bytes += n
                self._held_frames += 1
                stats = self._stats
                stats.queued += 1
                stats.queued_bytes += n
                if not self._seal_scheduled:
                    self._schedule_seal()
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
        fields.setdefault("owner", self.token)
        with self._lock:
            if fields["status"] == "open":
                self._open_sessions.add(str(sid))
            self._control(("session", _clean(fields)))
        return str(sid)

    def update_session(self, session_id: str, **fields: Any) -> None:
        with self._lock:
            if "unrecorded" not in fields and session_id in self._dropped:
                fields["unrecorded"] = self._dropped[session_id]
            if fields.get("status") not in (None, "open"):
                self._open_sessions.discard(session_id)
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

    @property
    def writer_pid(self) -> int | None:
        """The process id of the running writer (None without one)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

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
        pickled = pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL)
        self._batch.add_control(pickled)
        self._held_bytes += len(pickled)
        if not self._seal_scheduled:
            self._schedule_seal()

    def _schedule_seal(self) -> None:
        """Seal the open batch ``batch_interval`` seconds from now on the loop (what the loop records meanwhile
        joins it: one pipe write, one wake-up of the writer), or now when not called from a running loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._seal()
            return
        self._seal_scheduled = True
        if self.batch_interval > 0:
            loop.call_later(self.batch_interval, self._seal_later)
        else:
            loop.call_soon(self._seal_later)

    def _seal_later(self) -> None:
        with self._lock:
            self._seal()

    def _seal(self) -> None:
        """Close the open batch and send it (or keep it, without a writer process)."""
        self._seal_scheduled = False
        batch = self._batch
        if not batch.records:
            return
        self._batch = BatchBuilder()
        number = next(self._batch_numbers)
        parts = batch.seal_parts(number)
        nframes = sum(batch.frames.values())
        if not self._started:
            self._local.append(b"".join(parts))
            self._inflight.append(_InFlight(number, batch.nbytes, batch.frames, batch.controls))
            return
        if self._gone.is_set():  # no writer any more: what the batch held is unrecorded
            self._held_bytes -= batch.nbytes
            self._held_frames -= nframes
            self._count_lost(batch.frames)
            return
        self._inflight.append(_InFlight(number, batch.nbytes, batch.frames, batch.controls))
        assert self._sender is not None  # made with the writer, and only gone once _gone is set
        self._sender.send(parts, BATCH.size + batch.length)

    def _committed(self, number: int) -> None:
        """A commit covered every batch up to `number`: forget them."""
        inflight = self._inflight
        while inflight and inflight[0].number <= number:
            done = inflight.popleft()
            self._held_bytes -= done.nbytes
            self._held_frames -= sum(done.frames.values())

    def _count_lost(self, frames: dict[str, int]) -> int:
        lost = 0
        for sid, n in frames.items():
            self._dropped[sid] = self._dropped.get(sid, 0) + n
            self._stats.dropped += n
            lost += n
        return lost

    def _write_here(self) -> None:
        """Without a writer process: write the batches in this thread (tests, short scripts)."""
        with self._lock:
            self._seal()
            writer = Writer(
                self.path, lambda kind, text: self._report(text) if kind == "E" else None, self.flush_interval
            )
            try:
                for sealed in self._local:
                    _, number, _, count = BATCH.unpack_from(sealed)
                    writer.write_batch(number, decode_records(count, sealed[BATCH.size :]))
                writer.commit()
                self._stats.written = writer.written + self._stats.written
                self._stats.written_bytes += writer.written_bytes
                self._local.clear()
                self._committed(writer.batch)
            finally:
                writer.conn.close()

    def _refresh_stats(self) -> None:
        with self._lock:
            self._stats.dropped = sum(self._dropped.values()) + self._writer_lost

    def _read_acks(self, process: subprocess.Popen[bytes], generation: int) -> None:
        """The ack thread of one writer: commits, barriers done, errors; then, if it died, a new writer."""
        assert process.stdout is not None
        stdout = process.stdout
        committed_any = False
        for line in stdout:
            kind, _, text = line.decode("utf-8", "replace").rstrip("\n").partition(" ")
            if kind == "C":
                number, written, written_bytes, lost = (int(x) for x in text.split())
                with self._lock:
                    self._committed(number)
                    self._stats.written = self._written_base + written
                    self._stats.written_bytes = self._written_bytes_base + written_bytes
                    self._writer_lost = self._lost_base + lost
                committed_any = committed_any or number > 0
            elif kind == "B":
                event = self._barriers.get(int(text))
                if event is not None:
                    event.set()
            elif kind == "E":
                self._report(text)
        stdout.close()
        code = process.wait()
        with self._lock:
            self._written_base = self._stats.written
            self._written_bytes_base = self._stats.written_bytes
            self._lost_base = self._writer_lost
            if self._closing:
                return
            self._futile = 0 if committed_any else self._futile + 1
            if self._futile >= self.MAX_FUTILE_RESTARTS:
                self._give_up(code)
            else:
                self._restart(code)

    def _restart(self, code: int) -> None:
        """The writer died: count what it took with it, start a new one, send it every uncommitted control."""
        old = self._sender
        frames, controls = self._take_inflight()
        lost = self._count_lost(frames)
        self._stats.restarts += 1
        try:
            self._spawn()  # while the old pipe is still open: the new one cannot get its fd number
        except OSError as e:
            self._sender = None  # the old one is released below
            self._give_up(code, f"; a new one could not start: {e}")
            return
        finally:
            if old is not None:
                old.abandon()
        pending, self._batch = self._batch, BatchBuilder()
        for pickled in controls:
            self._batch.add_control(pickled)
            self._held_bytes += len(pickled)
        for sid in sorted(self._open_sessions | set(frames)):
            self._control(("update", sid, {"unrecorded": self._dropped.get(sid, 0)}))
        self._batch.extend(pending)  # what was recorded since, after them
        self._seal()
        gone = f"{lost} frame(s) it had not stored are counted as unrecorded" if lost else "no frame was lost"
        self._report_soon(f"the recorder process stopped (exit code {code}); started a new one; {gone}")

    def _give_up(self, code: int, why: str = "") -> None:
        self._gone.set()
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.abandon()
        self._count_lost(self._take_inflight()[0])
        for event in self._barriers.values():
            event.set()
        self._report_soon(
            f"the recorder process stopped (exit code {code}){why}; frames are forwarded but no longer recorded"
        )

    def _take_inflight(self) -> tuple[dict[str, int], list[bytes]]:
        """Forget every batch sent and not committed: the frames they held per session, and their controls."""
        frames: dict[str, int] = {}
        controls: list[bytes] = []
        for batch in self._inflight:
            self._held_bytes -= batch.nbytes
            self._held_frames -= sum(batch.frames.values())
            for sid, n in batch.frames.items():
                frames[sid] = frames.get(sid, 0) + n
            controls += batch.controls
        self._inflight.clear()
        return frames, controls

    def _report_soon(self, message: str) -> None:
        """Report from a thread of its own (the caller holds the lock; on_error may call back into us)."""
        threading.Thread(target=self._report, args=(message,), daemon=True).start()

    def _report(self, message: str) -> None:
        errors = self._stats.errors
        if not errors or errors[-1] != message:
            errors.append(message)
            if self.on_error is not None:
                self.on_error(message)
            else:
                print(f"rtproxy: {message}", file=sys.stderr)
