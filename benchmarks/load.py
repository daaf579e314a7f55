"""Load: many voice sessions at real-time rate through `rtproxy proxy`, idle connections, and a client that stalls.

    python benchmarks/load.py            # 100 sessions x 60 s, 1,000 idle connections, 15 s slow-client phase
    python benchmarks/load.py --quick    # 10 sessions x 5 s, 100 idle connections, 3 s slow-client phase

Three processes, all on 127.0.0.1: a scripted Realtime upstream (this file,
``--role upstream``), the real ``rtproxy proxy`` recording to a fresh
database in a temporary directory, and the clients (this process).

* voice: each session appends 24 kHz PCM16 audio every 20-100 ms (its own
  interval, real-time rate) while the upstream streams 50 ms audio deltas
  back at real-time rate; run once direct to the upstream (the baseline) and
  once through the proxy. One-way latency is measured per frame in both
  directions (CLOCK_MONOTONIC is shared by the processes); the proxy's added
  latency is the proxied percentile minus the direct one. Every frame is
  counted where it was sent and in the database (per direction, must be
  equal); the proxy's CPU and peak RSS come from /proc.
* idle: N connections held open through a fresh proxy; RSS per connection.
* slow client: one client that never reads while the upstream floods it,
  beside ordinary voice sessions: the proxy's RSS over time (must level off:
  backpressure reaches the upstream), and the other sessions' latency
  against a run without the slow client.

Bars (issue 6, 2 cores): 100 x 60 s with no frame lost, added p99 < 5 ms,
proxy RSS < 300 MB; idle connections < 100 KB each.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Child, cpu_seconds, memory_kib, percentile, pss_kib, python_argv, spawn  # noqa: E402

HOST = "127.0.0.1"
RATE = 24000
DELTA_MS = 50
FLOOD_LIMIT = 200_000  # the upstream's flood of a stalled client stops here at the latest
TIMEOUT = 30.0  # no single wait may take longer


def audio_b64(ms: int, seed: int) -> str:
    rng = random.Random(seed)
    return base64.b64encode(rng.randbytes(RATE * 2 * ms // 1000)).decode()


def stamp(text: str) -> float:
    """The send time embedded at the end of a frame's event_id (``…_<monotonic>``)."""
    i = text.find('"event_id":"') + 12
    j = text.find('"', i)
    return float(text[text.rfind("_", i, j) + 1 : j])


# --- the scripted upstream (its own process) ----------------------------------------------


async def serve_upstream() -> None:
    groups: dict[str, dict[str, Any]] = {}  # per `model` query value: which client group
    delta = audio_b64(DELTA_MS, 1)

    def group(model: str) -> dict[str, Any]:
        return groups.setdefault(model, {"received": 0, "sent": 0, "lat": [], "flood_sent": 0})

    async def voice(ws: web.WebSocketResponse, stop: asyncio.Event, stats: dict[str, Any]) -> None:
        start, k = time.monotonic(), 0
        while not stop.is_set() and not ws.closed:
            k += 1
            await asyncio.sleep(max(0.0, start + k * DELTA_MS / 1000 - time.monotonic()))
            if stop.is_set() or ws.closed:
                return
            await ws.send_str(
                f'{{"type":"response.output_audio.delta","event_id":"d{k}_{time.monotonic():.6f}",'
                f'"response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,'
                f'"delta":"{delta}"}}'
            )
            stats["sent"] += 1

    async def flood(ws: web.WebSocketResponse, stop: asyncio.Event, stats: dict[str, Any]) -> None:
        for k in range(FLOOD_LIMIT):
            if stop.is_set() or ws.closed:
                return
            await ws.send_str(
                f'{{"type":"response.output_audio.delta","event_id":"f{k}_{time.monotonic():.6f}","delta":"{delta}"}}'
            )
            stats["sent"] += 1
            stats["flood_sent"] += 1

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/stats":
            out = web.json_response(groups)
            if request.query.get("reset"):
                groups.clear()
            return out
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        stats = group(request.query.get("model", ""))
        await ws.send_str('{"type":"session.created","event_id":"s_0","session":{"type":"realtime"}}')
        stats["sent"] += 1
        mode = request.query.get("mode", "voice")
        stop = asyncio.Event()
        senders = {"voice": voice, "flood": flood}
        sender = asyncio.ensure_future(senders[mode](ws, stop, stats)) if mode in senders else None
        lat = stats["lat"]
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                stats["received"] += 1
                if msg.data.startswith('{"type":"input_audio_buffer.append"'):
                    lat.append(time.monotonic() - stamp(msg.data))
                elif '"bench.end"' in msg.data:
                    stop.set()
                    if sender is not None:
                        await sender
                    await ws.send_str('{"type":"bench.ended","event_id":"e_0"}')
                    stats["sent"] += 1
        except ConnectionError:
            pass
        finally:
            stop.set()
            if sender is not None:
                sender.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=2048)
    await site.start()
    print(f"upstream: listening on http://{HOST}:{site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


# --- clients (this process) ---------------------------------------------------------------


@dataclass
class Voice:
    """What the clients of one voice phase sent and received."""

    sessions: int = 0
    sent: int = 0
    received: int = 0
    audio_ms: float = 0.0  # audio appended (up) plus audio received (down)
    down_lat: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def voice_session(
    http: aiohttp.ClientSession, url: str, i: int, duration: float, out: Voice, seed: int, model: str
) -> None:
    rng = random.Random(seed * 1000 + i)
    interval_ms = rng.randrange(20, 101, 10)
    chunk = audio_b64(interval_ms, seed + i)
    ws = await asyncio.wait_for(http.ws_connect(f"{url}/v1/realtime?model={model}&mode=voice", max_msg_size=0), TIMEOUT)
    out.sessions += 1
    ended = asyncio.Event()

    async def read() -> None:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                break
            out.received += 1
            data = msg.data
            if data.startswith('{"type":"response.output_audio.delta"'):
                out.down_lat.append(time.monotonic() - stamp(data))
                out.audio_ms += DELTA_MS
            elif '"bench.ended"' in data:
                ended.set()

    reader = asyncio.ensure_future(read())
    loop = asyncio.get_running_loop()
    start = loop.time() + rng.random() * interval_ms / 1000
    k = 0
    try:
        while k * interval_ms / 1000 < duration:
            await asyncio.sleep(max(0.0, start + k * interval_ms / 1000 - loop.time()))
            await ws.send_str(
                f'{{"type":"input_audio_buffer.append","event_id":"b{i}_{k}_{time.monotonic():.6f}","audio":"{chunk}"}}'
            )
            out.sent += 1
            out.audio_ms += interval_ms
            k += 1
        await ws.send_str('{"type":"bench.end","event_id":"end_0"}')
        out.sent += 1
        await asyncio.wait_for(ended.wait(), TIMEOUT)
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
        out.failures.append(f"session {i}: {type(e).__name__}: {e}")
    finally:
        await ws.close()
        reader.cancel()


async def voice_phase(
    url: str, sessions: int, duration: float, seed: int, model: str = "load", out: Voice | None = None
) -> Voice:
    out = out if out is not None else Voice()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(voice_session(http, url, i, duration, out, seed, model) for i in range(sessions)))
    return out


async def warm_up(url: str, up: Child, seconds: float = 0.5) -> None:
    """Two short sessions first, so start-up costs (imports, the recorder's first batch) are not measured."""
    await voice_phase(url, 2, seconds, seed=9, model="warmup")
    await upstream_stats(up)


async def upstream_stats(up: Child, reset: bool = True) -> dict[str, dict[str, Any]]:
    """What the upstream received and sent, per client group (the `model` of their URL)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{HOST}:{up.port}/stats" + ("?reset=1" if reset else "")) as resp:
            return dict(await resp.json())


def rtproxy_argv() -> list[str]:
    exe = shutil.which("rtproxy", path=os.path.dirname(sys.executable)) or shutil.which("rtproxy")
    if exe is None:
        raise SystemExit("load: the rtproxy command is not installed (pip install -e .)")
    return [exe]


STARTED: list[Child] = []  # every proxy this run started: stopped at the end even if a phase fails


def start_proxy(up: Child, db: Path) -> Child:
    STARTED.append(child := _spawn_proxy(up, db))
    return child


def _spawn_proxy(up: Child, db: Path) -> Child:
    return spawn(
        "rtproxy", [*rtproxy_argv(), "proxy", "--port", "0", "--db", str(db), "--upstream", f"http://{HOST}:{up.port}"]
    )


def own(pid: int, key: str) -> float:
    """A figure of the process itself (not its children): CPU seconds, or a /proc status field in KiB."""
    if key == "cpu":
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children, in MB (see _common.pss_kib)."""
    return pss_kib(pid) / 1024


class PeakPss:
    """Samples a process tree's PSS every `every` seconds while in use; `.peak` in MB."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every, self.peak = pid, every, 0.0
        self._done = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    async def __aenter__(self) -> PeakPss:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done.set()
        if self._task is not None:
            await self._task
        self.peak = max(self.peak, pss_mb(self.pid))

    async def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, pss_mb(self.pid))
            try:
                await asyncio.wait_for(self._done.wait(), self.every)
            except TimeoutError:
                pass


class Backlog:
    """Samples, every second, how many frames the clients have exchanged through the proxy that are not in the
    database yet (the recorder's backlog); `.peak` frames at `.peak_at` seconds."""

    def __init__(self, db: Path, live: Voice, every: float = 1.0) -> None:
        self.db, self.live, self.every = db, live, every
        self.peak, self.peak_at = 0, 0.0
        self._done = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    def _rows(self) -> int:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0])
        finally:
            conn.close()

    async def __aenter__(self) -> Backlog:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        base, t0 = await asyncio.to_thread(self._rows), time.monotonic()
        while not self._done.is_set():
            try:
                await asyncio.wait_for(self._done.wait(), self.every)
            except TimeoutError:
                pass
            exchanged = self.live.sent + self.live.received
            behind = exchanged - (await asyncio.to_thread(self._rows) - base)
            if behind > self.peak:
                self.peak, self.peak_at = behind, time.monotonic() - t0


def db_counts(db: Path, model: str = "load") -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        rows = dict(
            conn.execute(
                "SELECT direction, count(*) FROM events WHERE session_id IN "
                "(SELECT id FROM sessions WHERE model = ?) GROUP BY direction",
                (model,),
            ).fetchall()
        )
        unrecorded = conn.execute("SELECT coalesce(sum(unrecorded), 0) FROM sessions").fetchone()[0]
        sessions = conn.execute("SELECT count(*) FROM sessions WHERE model = ?", (model,)).fetchone()[0]
    finally:
        conn.close()
    return {
        "client": rows.get("client", 0),
        "server": rows.get("server", 0),
        "unrecorded": unrecorded,
        "sessions": sessions,
    }


def lat_ms(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50) * 1000, "p99": percentile(values, 99) * 1000, "n": len(values)}


# --- phases ---------------------------------------------------------------------------------


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def phase_load(up: Child, workdir: Path, sessions: int, duration: float) -> dict[str, Any]:
    """Sessions direct (alone), then through the proxy beside a tenth as many direct probes (the baseline
    measured in the same seconds: other work on a shared machine hits both alike)."""
    direct_url = f"http://{HOST}:{up.port}"
    await warm_up(direct_url, up, min(0.5, duration / 4))
    direct = await voice_phase(direct_url, sessions, duration, seed=1)
    direct_up = (await upstream_stats(up)).get("load", {})
    db = workdir / "load.db"
    proxy = start_proxy(up, db)
    await warm_up(f"http://{HOST}:{proxy.port}", up, min(0.5, duration / 4))
    probes = max(1, sessions // 10)
    cpu0, own0, up0, me0, machine0 = (
        cpu_seconds(proxy.pid),
        own(proxy.pid, "cpu"),
        cpu_seconds(up.pid),
        time.process_time(),
        cpu_jiffies(),
    )
    t0 = time.monotonic()
    live = Voice()
    async with PeakPss(proxy.pid) as pss, Backlog(db, live) as backlog:
        proxied, probed = await asyncio.gather(
            voice_phase(f"http://{HOST}:{proxy.port}", sessions, duration, seed=1, out=live),
            voice_phase(direct_url, probes, duration, seed=3, model="probe"),
        )
    wall = time.monotonic() - t0
    cpu, own_cpu = cpu_seconds(proxy.pid) - cpu0, own(proxy.pid, "cpu") - own0
    ours = cpu + cpu_seconds(up.pid) - up0 + time.process_time() - me0
    machine1 = cpu_jiffies()
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (machine1[0] - machine0[0]) / ticks
    capacity = (machine1[1] - machine0[1]) / ticks
    peak_tree, peak_own = memory_kib(proxy.pid, "VmHWM"), own(proxy.pid, "VmHWM")
    stats = await upstream_stats(up)
    proxied_up, probe_up = stats.get("load", {}), stats.get("probe", {})
    log = proxy.stop()
    counts = db_counts(db)
    db_bytes = sum(p.stat().st_size for p in workdir.glob("load.db*"))
    up_dir = {"sent": proxied.sent, "upstream_received": proxied_up["received"], "recorded": counts["client"]}
    down_dir = {"sent": proxied_up["sent"], "client_received": proxied.received, "recorded": counts["server"]}
    latency = {}
    for name, alone, beside, through in (
        ("up", direct_up["lat"], probe_up["lat"], proxied_up["lat"]),
        ("down", direct.down_lat, probed.down_lat, proxied.down_lat),
    ):
        a, b, p = lat_ms(alone), lat_ms(beside), lat_ms(through)
        latency[name] = {
            "direct_alone": a,
            "direct_beside": b,
            "proxied": p,
            "added_p50": p["p50"] - b["p50"],
            "added_p99": p["p99"] - b["p99"],
        }
    return {
        "sessions": sessions,
        "probes": probes,
        "duration_s": duration,
        "wall_s": wall,
        "up": up_dir,
        "down": down_dir,
        "unrecorded": counts["unrecorded"],
        "db_sessions": counts["sessions"],
        "lost": (up_dir["sent"] - up_dir["recorded"]) + (down_dir["sent"] - down_dir["recorded"]),
        "latency_ms": latency,
        "proxy_cpu_s": cpu,
        "proxy_own_cpu_s": own_cpu,
        "proxy_cpu_pct": 100 * cpu / wall,
        "recorder_backlog_peak_frames": backlog.peak,
        "recorder_backlog_peak_at_s": backlog.peak_at,
        "recorder_backlog_peak_s": backlog.peak / max((proxied.sent + proxied.received) / wall, 1e-9),
        "machine_busy_pct": 100 * busy / capacity,
        "others_cpu_s": max(0.0, busy - ours),
        "capacity_cpu_s": capacity,
        "proxy_peak_rss_mb": peak_tree / 1024,
        "proxy_own_peak_rss_mb": peak_own / 1024,
        "proxy_peak_pss_mb": pss.peak,
        "db_mb": db_bytes / 2**20,
        "audio_min": proxied.audio_ms / 60000,
        "db_mb_per_audio_min": db_bytes / 2**20 / max(proxied.audio_ms / 60000, 1e-9),
        "failures": direct.failures + proxied.failures + probed.failures,
        "warnings": [line.strip() for line in log.splitlines() if "WARNING" in line],
    }


async def phase_idle(up: Child, workdir: Path, n: int) -> dict[str, Any]:
    proxy = start_proxy(up, workdir / "idle.db")
    url = f"http://{HOST}:{proxy.port}/v1/realtime?model=idle&mode=idle"
    socks: list[aiohttp.ClientWebSocketResponse] = []
    refused: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> None:
            try:
                ws = await asyncio.wait_for(http.ws_connect(url), TIMEOUT)
                await asyncio.wait_for(ws.receive(), TIMEOUT)  # session.created: the relay is up
            except (TimeoutError, aiohttp.ClientError) as e:
                refused.append(f"{type(e).__name__}: {getattr(e, 'status', '')} {e}".strip())
                return
            socks.append(ws)

        await one()  # warm up: lazy imports, first allocations
        await socks.pop().close()
        before = own(proxy.pid, "VmRSS"), pss_mb(proxy.pid)
        for start in range(0, n, 100):
            await asyncio.gather(*(one() for _ in range(min(100, n - start))))
            if refused:  # the proxy stopped taking connections: measure what it holds
                break
        after = own(proxy.pid, "VmRSS"), pss_mb(proxy.pid)
        await asyncio.gather(*(ws.close() for ws in socks))
    proxy.stop()
    held = max(len(socks), 1)
    return {
        "asked": n,
        "connections": len(socks),
        "refused": len(refused),
        "first_refusal": refused[:1],
        "pss_before_mb": before[1],
        "pss_after_mb": after[1],
        "kb_per_connection": (after[1] - before[1]) * 1024 / held,
        "own_kb_per_connection": (after[0] - before[0]) / held,
    }


async def stalled_client(port: int) -> socket.socket:
    """A client that completes the handshake (mode=flood) and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (HOST, port))
    await loop.sock_sendall(
        sock,
        (
            f"GET /v1/realtime?model=slow&mode=flood HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ).encode(),
    )
    head = await asyncio.wait_for(loop.sock_recv(sock, 1024), TIMEOUT)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"the stalled client was refused: {head[:80]!r}")
    return sock


async def phase_slow(up: Child, workdir: Path, sessions: int, seconds: float) -> dict[str, Any]:
    proxy = start_proxy(up, workdir / "slow.db")
    url = f"http://{HOST}:{proxy.port}"
    await warm_up(url, up, min(0.5, seconds / 4))
    alone = await voice_phase(url, sessions, seconds, seed=2)
    await upstream_stats(up)
    sock = await stalled_client(proxy.port)
    samples: list[tuple[float, float, int]] = []
    done = asyncio.Event()

    async def sample() -> None:
        t0 = time.monotonic()
        while not done.is_set():
            flood = (await upstream_stats(up, reset=False)).get("slow", {}).get("flood_sent", 0)
            samples.append((time.monotonic() - t0, pss_mb(proxy.pid), flood))
            try:
                await asyncio.wait_for(done.wait(), 0.25)
            except TimeoutError:
                pass

    sampler = asyncio.ensure_future(sample())
    beside = await voice_phase(url, sessions, seconds, seed=2)
    done.set()
    await sampler
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    proxy.stop()
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] or samples
    return {
        "seconds": seconds,
        "sessions": sessions,
        "rss_mb": {"start": samples[0][1], "peak": max(s[1] for s in samples), "end": samples[-1][1]},
        "rss_growth_second_half_mb": half[-1][1] - half[0][1],
        "flood_sent": {"at_half": half[0][2], "at_end": samples[-1][2]},
        "others_down_p99_ms": {"alone": lat_ms(alone.down_lat)["p99"], "beside_slow": lat_ms(beside.down_lat)["p99"]},
        "failures": alone.failures + beside.failures,
    }


# --- report -----------------------------------------------------------------------------------


def report(r: dict[str, Any]) -> None:
    load, idle, slow = r["load"], r["idle"], r["slow"]
    print(f"\nrtproxy load — {r['command']}  ({r['cores']} cores, load average at start {r['loadavg']})")
    print(
        f"\nvoice: {load['sessions']} sessions x {load['duration_s']:g} s through the proxy "
        f"({load['wall_s']:.1f} s wall)"
    )
    for d in ("up", "down"):
        print(f"  {d:<4} frames  " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in load[d].items()))
    print(f"  frames lost or unrecorded: {load['lost']} (sessions marked unrecorded: {load['unrecorded']})")
    print(
        f"  one-way latency, ms (p50/p99): direct alone before; direct beside (the baseline: {load['probes']} "
        "direct sessions in the same seconds); through the proxy; added = proxy - beside"
    )
    for d in ("up", "down"):
        lat = load["latency_ms"][d]
        print(
            f"  {d:<4} alone {lat['direct_alone']['p50']:.2f}/{lat['direct_alone']['p99']:.2f}"
            f" | beside {lat['direct_beside']['p50']:.2f}/{lat['direct_beside']['p99']:.2f}"
            f" | proxied {lat['proxied']['p50']:.2f}/{lat['proxied']['p99']:.2f}"
            f" | added {lat['added_p50']:+.2f}/{lat['added_p99']:+.2f}"
        )
    print(
        f"  machine during the run: {load['machine_busy_pct']:.0f}% of {r['cores']} cores busy; other processes "
        f"(not this benchmark) used {load['others_cpu_s']:.0f} of {load['capacity_cpu_s']:.0f} CPU s"
    )
    print(
        f"  proxy CPU {load['proxy_cpu_s']:.1f} s ({load['proxy_cpu_pct']:.0f}% of one core; event loop process "
        f"{load['proxy_own_cpu_s']:.1f} s, recorder the rest)"
    )
    print(
        f"  recorder backlog (frames through the proxy not yet in the database, sampled each second): peak "
        f"{load['recorder_backlog_peak_frames']} frames (~{load['recorder_backlog_peak_s']:.1f} s of traffic) at "
        f"{load['recorder_backlog_peak_at_s']:.0f} s"
    )
    print(
        f"  proxy memory: peak PSS {load['proxy_peak_pss_mb']:.0f} MB (proxy + writer, shared pages counted "
        f"once); peak RSS {load['proxy_own_peak_rss_mb']:.0f} MB proxy, {load['proxy_peak_rss_mb']:.0f} MB summed "
        f"over both"
    )
    print(
        f"  database {load['db_mb']:.1f} MB for {load['audio_min']:.1f} min of audio (both directions): "
        f"{load['db_mb_per_audio_min']:.2f} MB per minute of audio"
    )
    if idle["refused"]:
        print(
            f"\nidle: asked for {idle['asked']} connections; the proxy refused some after {idle['connections']}: "
            f"{idle['first_refusal'][0]}"
        )
    print(
        f"\nidle: {idle['connections']} connections held: {idle['kb_per_connection']:.1f} KB each "
        f"(PSS of proxy + recorder; the proxy process's RSS alone: {idle['own_kb_per_connection']:.1f} KB), "
        f"PSS {idle['pss_before_mb']:.0f} → {idle['pss_after_mb']:.0f} MB"
    )
    print(
        f"\nslow client: a client that never reads, flooded, beside {slow['sessions']} voice sessions for "
        f"{slow['seconds']:g} s"
    )
    rss = slow["rss_mb"]
    print(
        f"  proxy PSS start {rss['start']:.0f} MB, peak {rss['peak']:.0f} MB, end {rss['end']:.0f} MB; growth over "
        f"the second half {slow['rss_growth_second_half_mb']:+.1f} MB"
    )
    print(
        f"  upstream flood frames sent: {slow['flood_sent']['at_half']} at half time, {slow['flood_sent']['at_end']}"
        f" at the end (of {FLOOD_LIMIT} it would send unhindered)"
    )
    p = slow["others_down_p99_ms"]
    print(f"  other sessions' down p99: {p['alone']:.2f} ms alone, {p['beside_slow']:.2f} ms beside the slow client")
    bars = r["bars"]
    print("\nbars: " + "; ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in bars.items()))
    notes = load["failures"] + slow["failures"] + load["warnings"]
    for f in notes[:5]:
        print(f"  ! {f}")
    if len(notes) > 5:
        print(f"  ! … and {len(notes) - 5} more (all in --json)")


async def main(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * args.idle + 4 * args.sessions + 256
    if soft < need:  # children (upstream, proxy) inherit the raised limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    command = "python benchmarks/load.py " + " ".join(sys.argv[1:])
    result: dict[str, Any] = {
        "command": command.strip(),
        "cores": os.cpu_count(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    up = spawn("upstream", python_argv(__file__, "--role", "upstream"))
    try:
        with tempfile.TemporaryDirectory(prefix="rtproxy-load-") as tmp:
            work = Path(tmp)
            result["load"] = await phase_load(up, work, args.sessions, args.duration)
            result["idle"] = await phase_idle(up, work, args.idle)
            result["slow"] = await phase_slow(up, work, max(1, min(args.sessions, 10)), args.slow_seconds)
    finally:
        for child in STARTED:
            if child.proc.poll() is None:
                child.stop()
        up.stop()
    load, idle, slow = result["load"], result["idle"], result["slow"]
    result["bars"] = {
        "no frame lost": load["lost"] == 0 and load["unrecorded"] == 0 and not load["failures"],
        "added p99 < 5 ms": max(load["latency_ms"][d]["added_p99"] for d in ("up", "down")) < 5.0,
        "proxy memory < 300 MB": load["proxy_peak_pss_mb"] < 300,
        f"{args.idle} idle < 100 KB/connection": idle["kb_per_connection"] < 100 and not idle["refused"],
        "slow client bounded": slow["rss_growth_second_half_mb"] < 20 and slow["flood_sent"]["at_end"] < FLOOD_LIMIT,
    }
    report(result)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if result["bars"]["no frame lost"] else 1


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 sessions x 5 s, 100 idle, 3 s slow-client phase")
    parser.add_argument("--sessions", type=int, help="concurrent voice sessions (default 100)")
    parser.add_argument("--duration", type=float, help="seconds each voice session streams (default 60)")
    parser.add_argument("--idle", type=int, help="idle connections to hold (default 1000)")
    parser.add_argument("--slow-seconds", type=float, help="length of each slow-client run (default 15)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--role", choices=("upstream",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        asyncio.run(serve_upstream())
        return 0
    quick = {"sessions": 10, "duration": 5.0, "idle": 100, "slow_seconds": 3.0}
    full = {"sessions": 100, "duration": 60.0, "idle": 1000, "slow_seconds": 15.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
