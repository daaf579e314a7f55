"""How recorded frames travel from the proxy's event loop to the writer process: batches over a pipe or a socket.

Nothing is shared between the two processes but an OS byte stream, so the
ordering that matters comes from the kernel, on any CPU and OS: every byte a
``write()`` or ``send()`` put into the stream is visible, in order, to the
``read()`` that returns it. No shared memory, no memory barriers to get right,
and nothing on disk: a pipe or a loopback socket lives in kernel memory, so
no unredacted frame ever lands in a file.

Publication protocol
--------------------

1. The proxy *encodes* each record (a frame, or a pickled control such as a
   new session) as ``_RECORD`` header + session id + payload, and appends it
   to the open batch in memory (:class:`BatchBuilder`). The first record of a
   batch asks the event loop to *seal* it a moment later, so one batch holds
   everything recorded meanwhile.
2. Sealing prepends the batch header (``_BATCH``: magic, batch number, body
   length, record count) and hands the batch's buffers to a *sender*. A batch
   is either written completely or not at all from the writer's point of view:
   the reader waits until the body length it was promised has arrived.
3. The sender (:class:`StreamSender`) writes batches to the stream in the
   order they were sealed, never blocking the caller: a non-blocking
   ``writev()`` from whoever sealed the batch (the event loop) when nothing is
   waiting; what the stream cannot take at once waits in the sender's backlog
   for its thread, which waits for room with ``select`` and writes it, a
   slice at a time. The fast path (POSIX) writes into the writer's stdin, a
   pipe; the portable path (any OS, Windows included, where a pipe can
   neither be non-blocking nor be waited on) into a loopback TCP socket the
   writer connected to and proved itself on with a key only it was given.
   Neither asks anything of the event loop. The sender counts the bytes not
   yet in the stream (``backlog``) so the recorder can bound its memory.
4. The writer reads the stream in chunks (:class:`BatchReader` reassembles
   batches from them), stores a batch's records, and after each commit tells
   the proxy, over its stdout, the number of the last batch the commit covers.
   Until then the proxy keeps the batch's controls (to send again to a new
   writer if this one dies) and its per-session frame counts (to count as
   unrecorded what a dead writer took with it).
"""

from __future__ import annotations

import functools
import hmac
import itertools
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

#: A record: kind, flags, session-id length, payload length, seq, t (seconds); then session id and payload.
RECORD = struct.Struct("<BBHIQd")
#: A batch: magic, batch number, body length, record count; then the records.
BATCH = struct.Struct("<4sQII")
MAGIC = b"RTB1"
FRAME, CONTROL = 1, 2
SERVER, BINARY = 1, 2
#: The largest batch the reader accepts (a frame is at most 16 MiB; a batch a little more than its frames).
MAX_BATCH = 1 << 30


class TransportError(Exception):
    """The pipe carried bytes that are not a batch (a bug, never the wire's fault)."""


class _FrameHead(struct.Struct):
    """A frame record's header with one session's id packed in (one ``pack`` per frame, no concatenation)."""

    def __init__(self, sid: bytes) -> None:
        super().__init__(f"{RECORD.format}{len(sid)}s")
        self.sid = sid
        self.nsid = len(sid)


_HEADS: dict[str, _FrameHead] = {}


def _frame_head(sid: str) -> _FrameHead:
    head = _HEADS.get(sid)
    if head is None:
        if len(_HEADS) >= 4096:  # ids of sessions long gone: start again (bounded, whatever the proxy's uptime)
            _HEADS.clear()
        head = _HEADS[sid] = _FrameHead(sid.encode())
    return head


class BatchBuilder:
    """The open batch: encoded records, their count and size, frames per session, and its controls."""

    __slots__ = ("parts", "length", "records", "nbytes", "frames", "controls")

    def __init__(self) -> None:
        self.parts: list[bytes] = [b""]  # [0]: the batch header, filled in by seal
        self.length = 0  # of the body
        self.records = 0
        self.nbytes = 0
        self.frames: dict[str, int] = {}
        self.controls: list[bytes] = []

    def add_frame(self, sid: str, flags: int, seq: int, t: float, payload: bytes) -> None:
        head = _frame_head(sid)
        n = len(payload)
        parts = self.parts
        parts.append(head.pack(FRAME, flags, head.nsid, n, seq, t, head.sid))
        parts.append(payload)
        self.length += head.size + n
        self.records += 1
        self.nbytes += n
        frames = self.frames
        frames[sid] = frames.get(sid, 0) + 1

    def add_control(self, pickled: bytes) -> None:
        self.parts.append(RECORD.pack(CONTROL, 0, 0, len(pickled), 0, 0.0))
        self.parts.append(pickled)
        self.length += RECORD.size + len(pickled)
        self.records += 1
        self.nbytes += len(pickled)
        self.controls.append(pickled)

    def seal_parts(self, number: int) -> list[bytes]:
        """The batch as the buffers it is made of, header first (written with writev: no copy here)."""
        self.parts[0] = BATCH.pack(MAGIC, number, self.length, self.records)
        return self.parts

    def seal(self, number: int) -> bytes:
        """The batch as one bytes object."""
        return b"".join(self.seal_parts(number))

    def extend(self, other: BatchBuilder) -> None:
        """Append another open batch's records to this one."""
        self.parts += other.parts[1:]
        self.length += other.length
        self.records += other.records
        self.nbytes += other.nbytes
        for sid, n in other.frames.items():
            self.frames[sid] = self.frames.get(sid, 0) + n
        self.controls += other.controls


def decode_batch(body: memoryview | bytes, count: int) -> Iterator[tuple[int, int, str, int, float, memoryview]]:
    """The records of one batch body: (kind, flags, session id, seq, t, payload view)."""
    view = memoryview(body)
    off, size, unpack = 0, RECORD.size, RECORD.unpack_from
    sids: dict[bytes, str] = {}  # a batch holds a few sessions' frames: each id decoded once
    for _ in range(count):
        kind, flags, nsid, n, seq, t = unpack(view, off)
        off += size
        key = bytes(view[off : off + nsid])
        sid = sids.get(key)
        if sid is None:
            sid = sids[key] = str(key, "utf-8")
        off += nsid
        yield kind, flags, sid, seq, t, view[off : off + n]
        off += n
    if off != len(view):
        raise TransportError(f"batch body of {len(view)} bytes held {off} bytes of records")


class BatchReader:
    """Reassembles batches from the chunks a stream read returns.

    Bodies come back as views of the chunk they arrived in, not copies: a batch that arrived whole in one chunk
    costs no copy at all; only the bytes of a batch that spans reads are copied, once, into a buffer of its own.
    So a chunk may be read into again as soon as the batches it returned have been used.
    """

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[tuple[int, int, memoryview]]:
        """Add a chunk; return the batches now complete, as (number, record count, body)."""
        out: list[tuple[int, int, memoryview]] = []
        view = memoryview(chunk)
        pos, head, size = 0, BATCH.size, len(view)
        if self.buf:  # a batch begun in an earlier chunk: complete it from the front of this one
            buf = self.buf
            if len(buf) < head:
                pos = min(head - len(buf), size)
                buf += view[:pos]
                if len(buf) < head:
                    return out
            magic, number, length, count = BATCH.unpack_from(buf, 0)
            if magic != MAGIC or length > MAX_BATCH:
                raise TransportError(f"not a batch at the start of a held chunk: {bytes(buf[:8])!r}")
            take = min(head + length - len(buf), size - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) < head + length:
                return out
            self.buf = bytearray()
            out.append((number, count, memoryview(buf)[head:]))
        while size - pos >= head:
            magic, number, length, count = BATCH.unpack_from(view, pos)
            if magic != MAGIC or length > MAX_BATCH:
                self.buf += view[pos:]  # kept for what the caller reports; nothing after it is a batch
                raise TransportError(f"not a batch at byte {pos}: {bytes(view[pos : pos + 8])!r}")
            if size - pos - head < length:
                break
            out.append((number, count, view[pos + head : pos + head + length]))
            pos += head + length
        if pos < size:
            self.buf += view[pos:]
        return out


# --- senders -------------------------------------------------------------------------


Buffer = bytes | memoryview
#: Buffers per writev call (POSIX guarantees at least 16; Linux and macOS allow 1024).
IOV_MAX = 1024


#: What the sender's thread writes of a backlog at a time, holding the recorder's lock (which the relay loop takes
#: for every frame): copying a 4 MiB backlog into a pipe in one go held it for a millisecond or more.
WRITE_SLICE = 256 << 10


def write_some(fd: int, buffers: deque[Buffer], limit: int | None = None) -> int:
    """One ``writev`` (POSIX: the fast path's pipe) of what `buffers` hold, at most `limit` bytes, so batches are
    never joined; the buffers written are removed, a partly written one cut. Returns the bytes written; raises
    what the write raises."""
    done = os.writev(fd, _head(buffers, limit))
    _consume(buffers, done)
    return done


def _head(buffers: deque[Buffer], limit: int | None) -> list[Buffer]:
    """The first buffers (at most IOV_MAX) holding at most `limit` bytes; a first one longer than that, cut."""
    if limit is None:
        return list(itertools.islice(buffers, IOV_MAX))
    out: list[Buffer] = []
    total = 0
    for buffer in itertools.islice(buffers, IOV_MAX):
        if total + len(buffer) > limit:
            if not out:
                out.append(memoryview(buffer)[:limit])
            break
        out.append(buffer)
        total += len(buffer)
    return out


def _consume(buffers: deque[Buffer], done: int) -> None:
    """Remove the first `done` bytes of `buffers` (whole buffers, and the written part of a partly written one)."""
    left = done
    while left:
        head = buffers[0]
        if len(head) <= left:
            left -= len(head)
            buffers.popleft()
        else:
            buffers[0] = memoryview(head)[left:]
            left = 0


def close_fd(fd: int) -> int:
    """Close fd if it is one (-1 is none), ignoring errors; returns -1, for ``self.fd = close_fd(self.fd)``: an
    fd is closed once, never a second time after its number may have gone to another file."""
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    return -1


class Stream:
    """One end of the byte stream to the writer, non-blocking: what a :class:`StreamSender` writes through."""

    def send(self, buffers: deque[Buffer], limit: int | None) -> int:
        """Write some of `buffers` (at most `limit` bytes), removing what went; BlockingIOError if nothing could."""
        raise NotImplementedError

    def wait_writable(self, timeout: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PipeStream(Stream):
    """The fast path's stream: the writer's stdin, a pipe (POSIX: non-blocking, and ``select`` waits on it)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    def send(self, buffers: deque[Buffer], limit: int | None) -> int:
        return write_some(self.fd, buffers, limit)

    def wait_writable(self, timeout: float) -> None:
        select.select([], [self.fd], [], timeout)

    def close(self) -> None:
        self.fd = close_fd(self.fd)


class SocketStream(Stream):
    """The portable path's stream: a loopback TCP socket (every OS can make one non-blocking and wait on it)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    def send(self, buffers: deque[Buffer], limit: int | None) -> int:
        return send_some(self.sock, buffers, limit)

    def wait_writable(self, timeout: float) -> None:
        select.select([], [self.sock], [], timeout)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)  # the writer reads to the end of what it was sent
        except OSError:
            pass
        self.sock.close()


class StreamSender:
    """Writes batches to the writer's stream without ever blocking the caller, on any OS, loop or none.

    ``send`` (the caller holds the recorder's lock, which serialises sends) writes a batch at once when nothing
    is waiting and the stream takes it: the usual case, one system call per sealed batch from the event loop.
    What the stream cannot take, and anything sent before the stream exists, waits in the backlog for the
    sender's thread, which waits for room with ``select`` and writes it in order, under the same lock. The
    thread sleeps while the stream keeps up; when it works (a backlog after a burst), its copies into the
    kernel run with the GIL released, beside the relay loop instead of in it (copying a 4 MiB backlog into a
    pipe from the loop held it for a millisecond at a time).

    For the portable path, `connect` is called on the thread first, with a test of whether the sender is closing:
    it returns the stream once the writer has connected and proved itself (:func:`accept_writer`), or None if it
    never did.
    """

    def __init__(
        self,
        stream: Stream | None,
        lock: threading.Lock,
        connect: Callable[[Callable[[], bool]], Stream | None] | None = None,
    ) -> None:
        self.lock = lock
        self.stream = stream
        self.waiting: deque[Buffer] = deque()
        self.backlog = 0  # bytes handed to the sender and not yet in the stream
        self.broken = False
        self.closing = False
        self.connected = threading.Event()  # set once the stream exists, or once it never will
        if stream is not None:
            self.connected.set()
        self.wake = threading.Event()  # the thread has work: a backlog, or closing
        self.thread = threading.Thread(target=self._run, args=(connect,), name="rtproxy-recorder-sender", daemon=True)
        self.thread.start()

    def send(self, batch: list[bytes], size: int) -> None:
        """Queue a sealed batch (its buffers, `size` bytes in all); the caller holds the lock."""
        if self.broken:
            return
        idle = not self.waiting
        self.waiting.extend(batch)
        self.backlog += size
        if self.stream is None:  # not connected yet: the thread writes it all once the writer is there
            return
        if idle:
            self._write_some(None)
        if self.waiting and not self.broken:
            self.wake.set()

    def _write_some(self, limit: int | None) -> None:
        """Write what waits until the stream is full (or `limit` bytes have gone)."""
        stream, waiting = self.stream, self.waiting
        assert stream is not None
        left = limit
        while waiting and (left is None or left > 0):
            try:
                done = stream.send(waiting, left)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._broke()
                return
            self.backlog -= done
            if left is not None:
                left -= done

    def _broke(self) -> None:
        self.broken = True
        self.waiting.clear()
        self.backlog = 0

    def _run(self, connect: Callable[[Callable[[], bool]], Stream | None] | None) -> None:
        if connect is not None:
            stream = connect(lambda: self.closing)
            with self.lock:
                if stream is None or self.closing:
                    if stream is not None:
                        stream.close()
                    self._broke()
                    self.connected.set()
                    return
                self.stream = stream
                self._write_some(None)
                if self.waiting and not self.broken:
                    self.wake.set()
            self.connected.set()
        stream = self.stream
        assert stream is not None
        while True:
            self.wake.wait()
            with self.lock:
                if self.closing:
                    return
                if not self.waiting or self.broken:
                    self.wake.clear()
                    continue
            try:
                stream.wait_writable(0.25)  # bounded: closing is noticed even if the stream never drains
            except (OSError, ValueError):  # closed under us: abandoned
                return
            with self.lock:
                if self.closing:
                    return
                if not self.broken:
                    self._write_some(WRITE_SLICE)  # a slice at a time: the lock is the relay loop's too
                if not self.waiting or self.broken:
                    self.wake.clear()

    def drain(self, timeout: float) -> bool:
        """Write what waits, for at most `timeout` seconds (the caller may be the loop: the thread writes a slice
        at a time, this writes it all, still bounded, as a writer that stopped reading must not hang a shutdown)."""
        deadline = time.monotonic() + timeout
        if not self.connected.wait(timeout):
            return False
        while True:
            with self.lock:
                stream = self.stream
                if self.broken or not self.waiting or stream is None:
                    return self.broken or not self.waiting
                self._write_some(None)
                if not self.waiting or self.broken:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                stream.wait_writable(min(left, 0.25))
            except (OSError, ValueError):
                return False

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.wake.set()
        if self.thread is not threading.current_thread():
            self.thread.join(5.0)
        with self.lock:
            stream, self.stream = self.stream, None
            if stream is not None:
                stream.close()

    def abandon(self) -> None:
        self.broken = True
        threading.Thread(target=self.close, name="rtproxy-recorder-sender-close", daemon=True).start()


#: Seconds the writer has to connect to the portable path's listener and prove itself.
CONNECT_TIMEOUT = 30.0


def accept_writer(listener: socket.socket, key: bytes, closing: Callable[[], bool]) -> Stream | None:
    """The writer's connection on `listener` once it has sent `key` (a connection that does not is closed,
    having received nothing, so no other local process can pose as the writer); None if it never came. The
    listener is closed either way."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    try:
        listener.settimeout(0.25)  # short waits: close() and abandon() are noticed
        while not closing() and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return None
            try:
                conn.settimeout(5.0)
                got = b""
                while len(got) < len(key):
                    more = conn.recv(len(key) - len(got))
                    if not more:
                        break
                    got += more
                if hmac.compare_digest(got, key):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return SocketStream(conn)
            except OSError:
                pass
            conn.close()
        return None
    finally:
        listener.close()


def socket_sender(listener: socket.socket, key: bytes, lock: threading.Lock) -> StreamSender:
    """The portable path's sender: batches wait until the writer has connected to `listener` with `key`."""
    return StreamSender(None, lock, functools.partial(accept_writer, listener, key))


def send_some(sock: socket.socket, buffers: deque[Buffer], limit: int | None = None) -> int:
    """One send of what `buffers` hold, at most `limit` bytes (sendmsg, a writev, where the OS has it), removing
    what was sent."""
    if hasattr(sock, "sendmsg"):
        done = sock.sendmsg(_head(buffers, limit))
    else:  # Windows: one buffer at a time
        done = sock.send(buffers[0] if limit is None else memoryview(buffers[0])[:limit])
    _consume(buffers, done)
    return done


def loopback_listener() -> socket.socket:
    """A listening TCP socket on loopback (IPv4, else IPv6), on a port the OS picks."""
    error: OSError | None = None
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            return socket.create_server((host, 0), family=family, backlog=8)
        except OSError as e:
            error = e
    assert error is not None
    raise error


def fast_path_available() -> bool:
    """Can batches go through the writer's stdin? (POSIX: a pipe can be made non-blocking and waited on)"""
    return os.name != "nt"
