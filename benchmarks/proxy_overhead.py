"""What does recording cost? rtproxy vs a bare WebSocket hop vs no hop at all.

    python benchmarks/proxy_overhead.py            # full run (5 repetitions, ~4 min)
    python benchmarks/proxy_overhead.py --quick    # short run (3 repetitions, ~1.5 min)

Four ways from a client to an echo upstream, all on 127.0.0.1:

* ``direct``  — the client talks to the echo upstream;
* ``relay``   — through a minimal aiohttp relay written below (the bare cost of
  a Python WebSocket hop: receive, send, nothing else);
* ``rtproxy`` — through the real ``rtproxy proxy`` command, recording to a
  SQLite database in a temporary directory (the fast path);
* ``portable`` — the same with ``RTPROXY_PORTABLE=1``: the recorder path every
  OS can take (batches over a loopback socket instead of a pipe). The writer's
  CPU priority is what the OS offers, on both paths; run the benchmark with
  ``RTPROXY_WRITER_PRIORITY=low`` to measure the writer at plain nice 19, as
  it runs on macOS and for unprivileged Linux users.

Upstream, relay/proxy and clients are separate processes, so the CPU time and
peak memory printed for the relay and rtproxy are theirs alone. Workloads,
each on fresh connections:

* ping-pong round trips of a 1 KiB JSON event and of a 13 KB
  ``input_audio_buffer.append`` (200 ms of 24 kHz PCM16 as base64): p50, p99;
* flood: one connection sends as fast as it can for 2 s (at most 1,000
  messages unanswered) while reading the echoes; messages/s echoed. The next
  workload starts once the database holds every frame, and how long that took
  after the flood is printed;
* 50 concurrent connections each streaming audio-sized events at 10/s:
  round-trip p50, p99.

In each repetition the targets run every workload in turn (the order
rotating), so that a busy moment on a shared machine hits them alike; each
workload waits until no target's processes use the CPU (a writer copying its
WAL into the database after a flood must not run during another target's
turn), and each repetition's databases are deleted once checked (gigabytes in
the page cache would slow the repetitions after it). Values
are medians over the repetitions; ratios are medians of the per-repetition
ratios. Every process runs with the same glibc malloc settings (see
_common.MALLOC_ENV), or a small relay pays for heap trimming on every message.
After each repetition the proxy is stopped and the database is checked to
hold every frame the clients sent and received (row count), or, if frames
had to be dropped, that their sessions say how many. A last check floods
rtproxy with three times its recorder's ring: memory stays bounded, and what
could not be recorded is counted, marked on the session, and warned about.
Also printed: CPU per 13 KB round trip of the whole process tree (proxy and
writer) and memory at rest (PSS of the tree after the warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Child,
    cpu_seconds,
    median,
    memory_kib,
    percentile,
    pss_kib,
    python_argv,
    ratio,
    same_malloc_everywhere,
    spawn,
)

HOST = "127.0.0.1"
PATH = "/v1/realtime?model=gpt-realtime"
RECEIVE_TIMEOUT = 30.0  # no single echo may take longer than this


# --- payloads ------------------------------------------------------------------------


def audio_event(seed: int = 7) -> str:
    """A 13 KB `input_audio_buffer.append`: 200 ms of 24 kHz PCM16 speech-like noise."""
    rng = random.Random(seed)
    pcm = bytearray()
    for i in range(4800):
        sample = int(8000 * math.sin(2 * math.pi * 220 * i / 24000) + rng.gauss(0, 1500))
        pcm += max(-32768, min(32767, sample)).to_bytes(2, "little", signed=True)
    event = {
        "type": "input_audio_buffer.append",
        "event_id": "evt_bench_0001",
        "audio": base64.b64encode(bytes(pcm)).decode(),
    }
    return orjson.dumps(event).decode()


def small_event(size: int = 1024) -> str:
    """A JSON event of exactly `size` bytes (a text item)."""
    head = {
        "type": "conversation.item.create",
        "event_id": "evt_bench_0002",
        "item": {
            "id": "item_bench_01",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": ""}],
        },
    }
    skeleton = orjson.dumps(head).decode()
    pad = size - len(skeleton)
    head["item"]["content"][0]["text"] = ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:pad]  # type: ignore[index]
    out = orjson.dumps(head).decode()
    assert len(out) == size
    return out


# --- the servers (run as child processes of this script) -----------------------------


async def serve_echo() -> None:
    """An upstream that echoes every frame back, as sent."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    await _serve(handle, "echo")


async def serve_relay(upstream: str) -> None:
    """The minimal relay: connect upstream, then copy frames both ways. No recording, no checks."""
    http = aiohttp.ClientSession()

    async def pump(src: Any, dst: Any) -> None:
        async for msg in src:
            if msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
        await dst.close()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        async with http.ws_connect(upstream + request.path_qs, max_msg_size=0) as up:
            client = web.WebSocketResponse(max_msg_size=0)
            await client.prepare(request)
            await asyncio.gather(pump(client, up), pump(up, client))
        return client

    await _serve(handle, "relay")


async def _serve(handler: Callable[[web.Request], Any], name: str) -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"{name}: listening on ws://{HOST}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


# --- client workloads (run in this process) ------------------------------------------


@dataclass
class Tally:
    """Frames the clients sent and received in one repetition, and connections made."""

    frames: int = 0
    connections: int = 0


async def _connect(http: aiohttp.ClientSession, url: str, tally: Tally) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url, max_msg_size=0, autoping=True)
    tally.connections += 1
    return ws


async def _echo(ws: aiohttp.ClientWebSocketResponse) -> None:
    msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
    if msg.type is not WSMsgType.TEXT:
        raise RuntimeError(f"expected an echo, got {msg.type.name} {msg.data!r}")


async def ping_pong(http: aiohttp.ClientSession, url: str, payload: str, n: int, tally: Tally) -> list[float]:
    """Round-trip times (seconds) of n messages, one at a time, after a short warm-up."""
    warmup = min(50, n)
    ws = await _connect(http, url, tally)
    rtts: list[float] = []
    try:
        for i in range(warmup + n):
            t = time.perf_counter()
            await ws.send_str(payload)
            await _echo(ws)
            if i >= warmup:
                rtts.append(time.perf_counter() - t)
    finally:
        await ws.close()
    tally.frames += 2 * (warmup + n)
    return rtts


async def flood(
    http: aiohttp.ClientSession, url: str, payload: str, seconds: float, tally: Tally, window: int = 1000
) -> float:
    """Messages per second echoed when one connection sends back to back for `seconds` (at most `window`
    unanswered at a time, so no buffer grows without bound), counted until the last echo."""
    ws = await _connect(http, url, tally)
    room = asyncio.Semaphore(window)
    sent = 0
    try:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def send() -> None:
            nonlocal sent
            while time.perf_counter() < end:
                await room.acquire()
                await ws.send_str(payload)
                sent += 1

        sender = asyncio.ensure_future(send())
        received = 0
        while not sender.done() or received < sent:
            await _echo(ws)
            received += 1
            room.release()
        elapsed = time.perf_counter() - t0
        await sender
    finally:
        await ws.close()
    tally.frames += 2 * sent
    return sent / elapsed


async def streams(
    http: aiohttp.ClientSession, url: str, payload: str, conns: int, rate: float, seconds: float, tally: Tally
) -> list[float]:
    """Round-trip times of `conns` connections each sending `rate` messages a second for `seconds`."""
    per_conn = max(1, int(rate * seconds))
    sockets = [await _connect(http, url, tally) for _ in range(conns)]
    rtts: list[float] = []
    start = time.perf_counter() + 0.05

    async def one(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        sent: deque[float] = deque()

        async def send() -> None:
            for k in range(per_conn):
                due = start + (i / conns + k) / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the load, not synchronisation
                sent.append(time.perf_counter())
                await ws.send_str(payload)

        sender = asyncio.ensure_future(send())
        for _ in range(per_conn):
            await _echo(ws)
            rtts.append(time.perf_counter() - sent.popleft())
        await sender

    try:
        await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    tally.frames += 2 * per_conn * conns
    return rtts


# --- one repetition against one target -----------------------------------------------


@dataclass
class Plan:
    pingpong_small: int
    pingpong_audio: int
    flood_seconds: float
    stream_seconds: float
    conns: int = 50
    rate: float = 10.0


def count_events(db: Path) -> int:
    """Frames the database accounts for: stored, or counted on their session as not recorded."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        return rows + int(conn.execute("SELECT coalesce(sum(unrecorded), 0) FROM sessions").fetchone()[0])
    finally:
        conn.close()


async def caught_up(db: Path | None, frames: int, timeout: float = 120.0) -> float:
    """Seconds until the database accounts for `frames` frames (rtproxy's recorder drains a burst after it; what
    it had to drop is counted on the session); 0 without db."""
    if db is None:
        return 0.0
    t0 = time.perf_counter()
    while count_events(db) < frames and time.perf_counter() - t0 < timeout:
        await asyncio.sleep(0.05)  # polling a file another process writes, bounded by timeout
    return time.perf_counter() - t0


async def settle(targets: list[Target], period: float = 0.1, quiet: float = 0.01, timeout: float = 15.0) -> None:
    """Wait (bounded) until no target's process tree is using the CPU, so one target's background work (a writer
    still copying its WAL into the database after a flood) never runs during the next target's workload."""
    children = [t.child.pid for t in targets if t.child is not None]

    def busy() -> float:
        return sum(cpu_seconds(pid) for pid in children)

    t0, before = time.perf_counter(), busy()
    while time.perf_counter() - t0 < timeout:
        await asyncio.sleep(period)  # sampling /proc, bounded by timeout
        now = busy()
        if now - before < quiet:
            return
        before = now


@dataclass
class Target:
    """One way to reach the echo upstream, measured workload by workload, interleaved with the others."""

    name: str
    url: str
    child: Child | None = None
    db: Path | None = None  # rtproxy's database: after a flood, wait until it holds every frame
    tally: Tally = field(default_factory=Tally)
    figures: dict[str, float] = field(default_factory=dict)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the relay/proxy process itself, and of its children (rtproxy's writer)."""
        if self.child is None:
            return math.nan, math.nan
        own = cpu_seconds(self.child.pid, tree=False)
        return own, cpu_seconds(self.child.pid) - own


async def run_workloads(targets: list[Target], plan: Plan, rep: int) -> None:
    """Each workload on every target in turn (the order rotating with rep), so that a noisy moment on a shared
    machine hits all of them alike, and ratios can be taken pair by pair."""
    small, audio = small_event(), audio_event()
    order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
    timeout = aiohttp.ClientTimeout(total=None, connect=10.0)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def each(phase: str, work: Callable[[Target], Any]) -> None:
            for target in order:
                await settle(targets)
                c0 = target.cpu()
                await work(target)
                c1 = target.cpu()
                for i, who in enumerate(("proxy", "writer")):
                    key = f"cpu_{who}_{phase}"
                    target.figures[key] = target.figures.get(key, 0.0) + c1[i] - c0[i]

        async def warm(t: Target) -> None:
            await ping_pong(http, t.url, small, 100, t.tally)

        def pings(label: str, payload: str, n: int) -> Callable[[Target], Any]:
            async def run(t: Target) -> None:
                rtts = await ping_pong(http, t.url, payload, n, t.tally)
                t.figures[f"rtt_{label}_p50"] = percentile(rtts, 50) * 1e6
                t.figures[f"rtt_{label}_p99"] = percentile(rtts, 99) * 1e6
                t.figures[f"n_{label}"] = n + min(50, n)  # with the warm-up round trips

            return run

        def flooding(label: str, payload: str) -> Callable[[Target], Any]:
            async def run(t: Target) -> None:
                t.figures[f"flood_{label}"] = await flood(http, t.url, payload, plan.flood_seconds, t.tally)
                t.figures[f"drain_{label}"] = await caught_up(t.db, t.tally.frames)  # CPU of the drain counts too

            return run

        async def stream(t: Target) -> None:
            rtts = await streams(http, t.url, audio, plan.conns, plan.rate, plan.stream_seconds, t.tally)
            t.figures["stream_p50"], t.figures["stream_p99"] = percentile(rtts, 50) * 1e3, percentile(rtts, 99) * 1e3

        await each("warmup", warm)
        for t in targets:
            if t.child is not None:
                t.figures["pss_rest"] = pss_kib(t.child.pid) / 1024
        await each("pingpong_small", pings("small", small, plan.pingpong_small))
        await each("pingpong_audio", pings("audio", audio, plan.pingpong_audio))
        await each("flood", flooding("small", small))
        await each("flood", flooding("audio", audio))
        await each("streams", stream)
        for t in targets:
            cpu = t.figures.get("cpu_proxy_pingpong_audio", math.nan) + t.figures.get("cpu_writer_pingpong_audio", 0)
            t.figures["cpu_audio_rt"] = cpu / t.figures["n_audio"] * 1e6
    for t in targets:
        if t.child is not None:
            own = memory_kib(t.child.pid, tree=False) / 1024
            t.figures["rss_proxy"], t.figures["rss_writer"] = own, memory_kib(t.child.pid) / 1024 - own


def check_db(db: Path, tally: Tally) -> tuple[bool, str]:
    """Does the database hold every frame the clients sent and received?"""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        sessions, unrecorded, still_open = conn.execute(
            "SELECT count(*), coalesce(sum(unrecorded), 0), coalesce(sum(status = 'open'), 0) FROM sessions"
        ).fetchone()
        ok_int = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    detail = (
        f"{rows} rows for {tally.frames} frames, {sessions}/{tally.connections} sessions, "
        f"{unrecorded} marked unrecorded, integrity {ok_int}"
    )
    complete = rows == tally.frames and sessions == tally.connections and not still_open and ok_int == "ok"
    accounted = rows + unrecorded == tally.frames and sessions == tally.connections
    # a flood longer than the recorder's budget must drop frames (two cores cannot store 13 KB frames as fast
    # as they can forward them): that passes if every dropped frame is counted on its session
    return complete or accounted, (
        "complete: " if complete else "accounted: " if accounted else "MISSING FRAMES: "
    ) + detail


RTPROXY_COMMAND: list[str] = []  # --rtproxy: another rtproxy command to measure (an older checkout, say)


def rtproxy_argv() -> list[str]:
    if RTPROXY_COMMAND:
        return RTPROXY_COMMAND
    exe = shutil.which("rtproxy", path=os.path.dirname(sys.executable)) or shutil.which("rtproxy")
    if exe is None:
        raise SystemExit("proxy_overhead: the rtproxy command is not installed (pip install -e .)")
    return [exe]


# --- orchestration -------------------------------------------------------------------

METRICS: list[tuple[str, str, bool]] = [  # key, label, higher is better
    ("rtt_small_p50", "round trip 1 KiB   p50 (µs)", False),
    ("rtt_small_p99", "round trip 1 KiB   p99 (µs)", False),
    ("rtt_audio_p50", "round trip 13 KB   p50 (µs)", False),
    ("rtt_audio_p99", "round trip 13 KB   p99 (µs)", False),
    ("flood_small", "flood 1 KiB      (msg/s)", True),
    ("flood_audio", "flood 13 KB      (msg/s)", True),
    ("stream_p50", "50 streams 10/s   p50 (ms)", False),
    ("stream_p99", "50 streams 10/s   p99 (ms)", False),
]
BAR = {
    "rtt_small_p50": 1.25,
    "rtt_small_p99": 1.25,
    "rtt_audio_p50": 1.25,
    "rtt_audio_p99": 1.25,
    "flood_small": 0.8,
    "flood_audio": 0.8,
}


@dataclass
class Results:
    runs: dict[str, list[dict[str, float]]] = field(
        default_factory=lambda: {"direct": [], "relay": [], "rtproxy": [], "portable": []}
    )
    checks: list[str] = field(default_factory=list)
    complete: bool = True

    def med(self, target: str, key: str) -> float:
        return median([r.get(key, math.nan) for r in self.runs[target]])

    def paired(self, a: str, b: str, key: str) -> float:
        """The median over repetitions of a/b, each pair measured back to back."""
        pairs = zip(self.runs[a], self.runs[b], strict=False)
        return median([ratio(x.get(key, math.nan), y.get(key, math.nan)) for x, y in pairs])


async def repetition(rep: int, echo: Child, plan: Plan, results: Results, workdir: Path, names: list[str]) -> None:
    targets: list[Target] = []
    try:
        for name in names:
            if name == "direct":
                targets.append(Target(name, f"ws://{HOST}:{echo.port}{PATH}"))
            elif name == "relay":
                argv = python_argv(__file__, "--role", "relay", "--upstream", f"ws://{HOST}:{echo.port}")
                child = spawn("relay", argv)
                targets.append(Target(name, f"ws://{HOST}:{child.port}{PATH}", child))
            else:
                db = workdir / f"rep{rep}-{name}.db"
                argv = [
                    *rtproxy_argv(),
                    "proxy",
                    "--port",
                    "0",
                    "--db",
                    str(db),
                    "--upstream",
                    f"http://{HOST}:{echo.port}",
                ]
                child = spawn(name, argv, env={"RTPROXY_PORTABLE": "1" if name == "portable" else "0"})
                targets.append(Target(name, f"ws://{HOST}:{child.port}{PATH}", child, db))
        await run_workloads(targets, plan, rep)
    finally:
        outputs = {t.name: t.child.stop() for t in targets if t.child is not None}
    for t in targets:
        results.runs[t.name].append(t.figures)
        if t.db is not None:
            complete, line = check_db(t.db, t.tally)
            for suffix in ("", "-wal", "-shm"):  # a rep's gigabyte must not crowd the next reps' page cache
                Path(f"{t.db}{suffix}").unlink(missing_ok=True)
            results.complete &= complete
            results.checks.append(f"rep {rep + 1}: {line}")
            if not complete:
                said = outputs.get(t.name, "").splitlines()[-4:]
                results.checks.append("  proxy said: " + " | ".join(x.strip() for x in said))
        shown = "  ".join(f"{key}={t.figures[key]:.0f}" for key, _, _ in METRICS)
        print(f"  rep {rep + 1} {t.name:8s} {shown}", flush=True)


def report(results: Results, plan: Plan, reps: int, command: str) -> None:
    def fmt(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v < 10 else f"{v:.1f}"

    def rfmt(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.2f}×"

    print()
    print(f"rtproxy proxy overhead — medians of {reps} repetitions ({command})")
    print("values: median over repetitions; ratios: median of the per-repetition ratios (each pair back to back)")
    print(
        f"ping-pong {plan.pingpong_small} × 1 KiB, {plan.pingpong_audio} × 13 KB; "
        f"flood {plan.flood_seconds:g} s each of 1 KiB and 13 KB; "
        f"{plan.conns} streams × {plan.rate:g}/s × {plan.stream_seconds:g} s"
    )
    head = (
        f"{'metric':30s} {'direct':>9s} {'relay':>9s} {'rtproxy':>9s} {'portable':>9s} {'rtp/relay':>10s} "
        f"{'port/relay':>10s}  bar"
    )
    print(head)
    print("-" * len(head))
    verdict = True
    for key, label, higher in METRICS:
        d, r, p, q = (results.med(t, key) for t in ("direct", "relay", "rtproxy", "portable"))
        vs_relay, portable_vs_relay = results.paired("rtproxy", "relay", key), results.paired("portable", "relay", key)
        bar = ""
        if key in BAR:
            marks = []
            for v in (vs_relay, portable_vs_relay):
                if math.isnan(v):
                    continue
                ok = v >= BAR[key] if higher else v <= BAR[key]
                verdict &= ok
                marks.append("ok" if ok else "MISSED")
            bar = f"{'≥' if higher else '≤'} {BAR[key]:g}× {'/'.join(marks)}"
        print(
            f"{label:30s} {fmt(d):>9s} {fmt(r):>9s} {fmt(p):>9s} {fmt(q):>9s} {rfmt(vs_relay):>10s} "
            f"{rfmt(portable_vs_relay):>10s}  {bar}"
        )
    for name in ("rtproxy", "portable"):
        drains = results.med(name, "drain_small"), results.med(name, "drain_audio")
        print(
            f"{name}: the database held every flooded frame {drains[0]:.2f} s (1 KiB) and {drains[1]:.2f} s (13 KB) "
            "after the flood ended"
        )
    print()
    print(f"{'process tree (medians)':34s} {'relay':>9s} {'rtproxy':>9s} {'portable':>9s}")
    rows = (
        ("CPU µs per 13 KB round trip", "cpu_audio_rt"),
        ("  of it the writer, CPU s", "cpu_writer_pingpong_audio"),
        ("memory at rest, PSS MiB", "pss_rest"),
        ("peak RSS MiB, proxy", "rss_proxy"),
        ("peak RSS MiB, writer", "rss_writer"),
    )
    for label, key in rows:
        cells = [results.med(t, key) for t in ("relay", "rtproxy", "portable")]
        print(f"{label:34s} {fmt(cells[0]):>9s} {fmt(cells[1]):>9s} {fmt(cells[2]):>9s}")
    if results.checks:
        print()
        print("database check after each repetition:")
        for line in results.checks:
            print("  " + line)
    print()
    print(
        "bar (latency ≤ 1.25× relay, flood ≥ 0.8× relay, every frame recorded; both paths): "
        + ("met" if verdict and results.complete else "NOT met")
    )


RING_MIB = 64  # what rtproxy's recorder may hold on its way to the database (Recorder max_bytes)


async def overload(echo: Child, workdir: Path, factor: float) -> str:
    """Flood rtproxy with at least `factor` times its recorder's budget in 13 KB events: memory must stay
    bounded, every frame must be either recorded or counted as unrecorded on its session."""
    audio = audio_event()
    seconds = 4.0
    db = workdir / "overload.db"
    child = spawn(
        "rtproxy",
        [*rtproxy_argv(), "proxy", "--port", "0", "--db", str(db), "--upstream", f"http://{HOST}:{echo.port}"],
    )
    tally = Tally()
    try:
        async with aiohttp.ClientSession() as http:
            rate = await flood(http, f"ws://{HOST}:{child.port}{PATH}", audio, seconds, tally)
        own, tree = memory_kib(child.pid, tree=False) / 1024, memory_kib(child.pid) / 1024
    finally:
        output = child.stop()
    _, line = check_db(db, tally)
    warned = "cannot keep up" in output
    budget = tally.frames * len(audio) / 2**20 / RING_MIB
    return (
        f"overload: {tally.frames // 2} × 13 KB flooded in {seconds:g} s ({budget:.1f}×"
        f" the {RING_MIB} MiB the recorder may hold) at {rate:,.0f} msg/s; "
        f"peak RSS proxy {own:.0f} MiB, writer {tree - own:.0f} MiB; {line}; "
        f"overflow warning printed: {'yes' if warned else 'no'}"
    )


async def main(args: argparse.Namespace) -> int:
    if args.quick:
        plan = Plan(pingpong_small=500, pingpong_audio=500, flood_seconds=1.0, stream_seconds=2.0)
    else:
        plan = Plan(pingpong_small=1500, pingpong_audio=1500, flood_seconds=2.0, stream_seconds=5.0)
    reps = args.reps or (3 if args.quick else 5)
    targets = [t for t in ("direct", "relay", "rtproxy", "portable") if t in args.targets.split(",")]
    results = Results()
    echo = spawn("echo", python_argv(__file__, "--role", "echo"))
    try:
        with tempfile.TemporaryDirectory(prefix="rtproxy-bench-") as tmp:
            for rep in range(reps):
                await repetition(rep, echo, plan, results, Path(tmp), targets)
            overloaded = await overload(echo, Path(tmp), 3.0) if "rtproxy" in targets and args.overload else ""
    finally:
        echo.stop()
    command = " ".join(["python benchmarks/proxy_overhead.py", *sys.argv[1:]])
    keys = {k for runs in results.runs.values() for run in runs for k in run}
    for t in ("direct", "relay", "rtproxy", "portable"):
        if not results.runs[t]:
            results.runs[t].append(dict.fromkeys(keys, math.nan))
    report(results, plan, reps, command)
    if overloaded:
        print(overloaded)
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(
                {"plan": plan.__dict__, "runs": results.runs, "checks": results.checks}, option=orjson.OPT_INDENT_2
            )
        )
    return 0 if results.complete else 1


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run: fewer messages, 3 repetitions")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, or 3 with --quick)")
    parser.add_argument("--targets", default="direct,relay,rtproxy,portable", help="comma-separated subset to run")
    parser.add_argument("--json", help="also write every repetition's figures to this file")
    parser.add_argument(
        "--no-overload",
        dest="overload",
        action="store_false",
        help="skip the last check: a flood of 3× rtproxy's ring (bounded memory, drops counted)",
    )
    parser.add_argument(
        "--rtproxy",
        metavar="COMMAND",
        help="the rtproxy command to measure, split on spaces (default: the installed `rtproxy`)",
    )
    parser.add_argument("--role", choices=("echo", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is None:
        same_malloc_everywhere()
    if args.rtproxy:
        RTPROXY_COMMAND[:] = args.rtproxy.split()
    if args.role == "echo":
        asyncio.run(serve_echo())
        return 0
    if args.role == "relay":
        asyncio.run(serve_relay(args.upstream))
        return 0
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
