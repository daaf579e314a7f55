"""How fast does `rtproxy replay` play a one-hour voice session to a real client?

    python benchmarks/replay.py                 # one hour (benchmarks/synth.py), 3 repetitions
    python benchmarks/replay.py --minutes 10 --repeat 1
    python benchmarks/replay.py --api live       # a one-hour GPT-Live session (benchmarks/live_reducer.py)

The session is synthetic (``benchmarks.synth.voice_session``: microphone audio
in 20 ms appends for the whole hour, server VAD, responses with audio,
function calls, barge-ins), written as JSONL. Two servers, each its own
process on 127.0.0.1, serve it to the same client, a ``websockets`` client
(the library the openai SDK uses) that streams the recorded client events as
fast as the server takes them while reading everything the server sends:

* ``baseline`` — a bare aiohttp server (below) that sends every recorded
  server frame as soon as the client connects and reads without matching:
  the cost of moving these frames through Python WebSockets at all;
* ``rtproxy``  — ``rtproxy replay FILE --pace instant --once --report R``:
  the script is matched event by event (audio runs by length), each turn's
  replies sent when its trigger arrives.

Printed per server (median of the repetitions): time to load the recording
(process start to listening), session time (client connect to the last
server event), time to the first event after connecting, and the ratios
rtproxy / baseline, with the CPU seconds server and client each spent during
the session: on two cores, a client whose CPU time is close to the session
time is the bottleneck, not the server. Bars (issue 4): session < 5 s, first event < 20 ms. The
replay's own report must show no mismatch, and the client must have
received every recorded server event.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from benchmarks._common import cpu_seconds, median, ratio  # noqa: E402
from rtproxy.protocols.wire import Direction  # noqa: E402
from rtproxy.recording import iter_recording  # noqa: E402

READY = re.compile(r"(?:listening|replaying .*) on ws://127\.0\.0\.1:(\d+)")


# --- the baseline server (run as `python benchmarks/replay.py --serve-baseline FILE`) -------------


async def serve_baseline(path: str) -> None:
    from aiohttp import WSMsgType, web

    _, frames = iter_recording(path)
    server_frames = [f.data for f in frames if f.direction is Direction.SERVER]
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, compress=False)
        await ws.prepare(request)

        async def send_all() -> None:
            for data in server_frames:
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)

        sender = asyncio.ensure_future(send_all())
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
        sender.cancel()
        done.set()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"baseline: listening on ws://127.0.0.1:{port}", flush=True)
    await asyncio.wait_for(done.wait(), 600)
    await runner.cleanup()


# --- the client -------------------------------------------------------------------------------------


@dataclass
class Run:
    load_s: float
    session_s: float
    first_event_ms: float
    server_cpu_s: float
    client_cpu_s: float
    received: int
    ok: bool


def start(argv: list[str], timeout: float = 120.0) -> tuple[subprocess.Popen[str], int, float]:
    """Start a server; (process, port, seconds until it listened)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = READY.search(line)
            if m:
                return proc, int(m.group(1)), time.perf_counter() - t0
    proc.kill()
    raise RuntimeError(f"{argv[:3]} did not start:\n{''.join(lines)}{proc.communicate()[0]}")


async def drive(
    port: int,
    client_frames: list[str | bytes],
    expected: int,
    timeout: float,
    server_pid: int | None = None,
    path: str = "/v1/realtime?model=gpt-realtime",
) -> tuple[float, float, int, float]:
    """(session s, first event ms, server events received, server CPU s) for one client run.

    The client starts reading at once and streams its events without waiting for a greeting (a GPT-Live
    server says nothing before the client's session.start); the first event's time is when it arrives."""
    import websockets

    got = 0
    first = math.nan
    t0 = time.perf_counter()
    async with asyncio.timeout(timeout):
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None, compression=None) as ws:

            async def read() -> None:
                nonlocal got, first
                while got < expected:
                    await ws.recv()
                    if got == 0:
                        first = (time.perf_counter() - t0) * 1000
                    got += 1

            reader = asyncio.ensure_future(read())
            for data in client_frames:
                await ws.send(data)
            await reader
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(server_pid) if server_pid else math.nan
    return elapsed, first, got, cpu


def one(kind: str, path: Path, client_frames: list[str | bytes], expected: int, timeout: float, ws_path: str) -> Run:
    report = path.with_suffix(f".{os.getpid()}.report.json")
    if kind == "rtproxy":
        argv = [
            sys.executable,
            "-c",
            "from rtproxy.cli import entry; entry()",
            "replay",
            str(path),
            "--port",
            "0",
            "--once",
            "--report",
            str(report),
        ]
    else:
        argv = [sys.executable, __file__, "--serve-baseline", str(path)]
    proc, port, load_s = start(argv)
    try:
        cpu0, mine0 = cpu_seconds(proc.pid), time.process_time()
        session_s, first_ms, got, cpu1 = asyncio.run(drive(port, client_frames, expected, timeout, proc.pid, ws_path))
        client_cpu = time.process_time() - mine0
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    ok = got == expected
    if kind == "rtproxy":
        data = orjson.loads(report.read_bytes())
        report.unlink()
        ok = ok and data["ok"] and proc.returncode == 0
        if not data["ok"]:
            print(out[-2000:], file=sys.stderr)
    return Run(load_s, session_s, first_ms, cpu1 - cpu0, client_cpu, got, ok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument(
        "--api",
        choices=("realtime", "live"),
        default="realtime",
        help="realtime: benchmarks/synth.py's voice session; live: benchmarks/live_reducer.py's GPT-Live session",
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0, help="per client run, seconds")
    ap.add_argument("--serve-baseline", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_baseline:
        asyncio.run(serve_baseline(args.serve_baseline))
        return 0

    from benchmarks.synth import voice_session, write_jsonl

    with tempfile.TemporaryDirectory(prefix="rtproxy-bench-") as tmp:
        path = Path(tmp) / f"{args.api}-{args.minutes:g}min.jsonl"
        if args.api == "live":
            from benchmarks.live_reducer import live_session

            session, frames = live_session(args.minutes)
        else:
            session, frames = voice_session(args.minutes)
        write_jsonl(path, session, frames)
        client_frames = [f.data for f in frames if f.direction is Direction.CLIENT]
        ws_path = str(session.get("path") or "/v1/realtime") + ("?" + session["query"] if session.get("query") else "")
        expected = len(frames) - len(client_frames)
        print(
            f"session: {args.minutes:g} min of {args.api} voice, {len(frames)} events ({len(client_frames)} client, "
            f"{expected} server), {path.stat().st_size / 1e6:.0f} MB of JSONL"
        )
        del frames, session
        runs: dict[str, list[Run]] = {"baseline": [], "rtproxy": []}
        for i in range(args.repeat):
            for kind in runs:
                r = one(kind, path, client_frames, expected, args.timeout, ws_path)
                runs[kind].append(r)
                print(
                    f"  run {i + 1} {kind:8}: load {r.load_s:6.2f} s  session {r.session_s:6.2f} s  "
                    f"first event {r.first_event_ms:7.2f} ms  CPU server {r.server_cpu_s:5.2f} s "
                    f"client {r.client_cpu_s:5.2f} s  received {r.received}  {'ok' if r.ok else 'FAILED'}"
                )
    metrics = ("load_s", "session_s", "first_event_ms", "server_cpu_s", "client_cpu_s")
    med = {k: {m: median([getattr(r, m) for r in v]) for m in metrics} for k, v in runs.items()}
    print()
    widths = (8, 10, 15, 13, 13)
    heads = ("load s", "session s", "first event ms", "server CPU s", "client CPU s")
    print(f"{'median':10} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)))
    for k, m in med.items():
        print(f"{k:10} " + " ".join(f"{m[x]:{w}.2f}" for x, w in zip(metrics, widths, strict=True)))
    rt, base = med["rtproxy"], med["baseline"]
    cells = " ".join(f"{ratio(rt[m], base[m]):{w}.2f}" for m, w in zip(metrics, widths, strict=True))
    print(f"{'ratio':10} {cells}   (rtproxy / baseline)")
    ok = all(r.ok for v in runs.values() for r in v)
    bars = rt["session_s"] < 5.0 and rt["first_event_ms"] < 20.0
    print(
        f"bars: session < 5 s: {'met' if rt['session_s'] < 5.0 else 'MISSED'} ({rt['session_s']:.2f} s); "
        f"first event < 20 ms: {'met' if rt['first_event_ms'] < 20.0 else 'MISSED'} ({rt['first_event_ms']:.2f} ms); "
        f"every run complete and without mismatch: {'yes' if ok else 'NO'}"
    )
    return 0 if ok and bars else 1


if __name__ == "__main__":
    sys.exit(main())
