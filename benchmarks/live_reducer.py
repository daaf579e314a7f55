"""How fast GPT-Live recordings become conversations: the Live reducer beside the Realtime one, and `show`.

    python benchmarks/live_reducer.py                 # a one-hour session, medians of 3 runs
    python benchmarks/live_reducer.py --minutes 3 --repeat 1     # a quick look
    python benchmarks/live_reducer.py --cli           # also `rtproxy show` as a subprocess on a database

1. A synthetic one-hour GPT-Live primary session, built here: the client's microphone in 20 ms
   ``session.input_audio.append`` chunks for the whole hour (180k events), the assistant's speech in
   40 ms ``session.output_audio.delta`` chunks, transcript fragments for both speakers (with
   ``start_ms``/``end_ms``; a barge-in every 9th exchange), a Responses delegation with a function call every
   8th exchange (about twenty nested ``response.event`` frames each), usage every minute and a close.
2. Events per second through :class:`rtproxy.conversation.live.LiveSession` (keep_audio off and on), next to
   a bare ``orjson.loads`` loop on the same frames and to the Realtime reducer on an equivalent one-hour
   Realtime voice session (``benchmarks/synth.py``). The bar is 200k events/s.
3. ``show`` of the session: in-process (reducer + the text view + ``--json``), and with ``--cli`` the real
   command on a temporary database.

Medians of ``--repeat`` runs; nothing is asserted, the figures are printed.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synth import voice_session, write_db  # noqa: E402
from rtproxy.cli.render_live import live_conversation  # noqa: E402
from rtproxy.conversation.live import LiveSession, assemble_live  # noqa: E402
from rtproxy.conversation.realtime import assemble  # noqa: E402
from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame  # noqa: E402

BAR = 200_000  # events/s through the reducer
WORDS = "the weather in Oslo is cold today with snow later so bring a coat and maybe gloves too".split()


def live_session(minutes: float) -> tuple[dict[str, Any], list[Frame]]:
    """A synthetic GPT-Live primary session of ``minutes``: (session row, frames in order)."""
    frames: list[Frame] = []
    events: list[tuple[float, Direction, dict[str, Any]]] = []
    total_ms = int(minutes * 60_000)
    mic = base64.b64encode(bytes(960)).decode()  # 20 ms of 24 kHz PCM16
    spoken = base64.b64encode(bytes(1920)).decode()  # 40 ms
    fmt = {"type": "audio/pcm", "rate": 24000}
    events.append(
        (0.0, CLIENT, {"type": "session.start", "session": {"model": "gpt-live-1", "audio": {"format": fmt}}})
    )
    resource = {"id": "sess_bench", "expires_at": 2_000_000_000, "model": "gpt-live-1", "status": "active"}
    events.append((0.01, SERVER, {"type": "session.started", "event_id": "e0", "session": resource}))
    for ms in range(0, total_ms, 20):
        events.append((ms / 1000, CLIENT, {"type": "session.input_audio.append", "audio": mic}))
    n = 0
    exchange = 0
    at = 500
    while at + 6000 < total_ms:
        exchange += 1
        # the user speaks 2.5 s, fragments every 250 ms
        for k in range(10):
            s = at + k * 250
            n += 1
            ev = {
                "type": "session.input_transcript.delta",
                "event_id": f"e{n}",
                "delta": WORDS[(n) % len(WORDS)] + " ",
                "start_ms": s,
                "end_ms": s + 250,
            }
            events.append(((s + 300) / 1000, SERVER, ev))
        user_end = at + 2500
        if exchange % 8 == 0:
            did = f"del_{exchange}"
            t0 = (user_end + 50) / 1000
            events.append(
                (
                    t0,
                    SERVER,
                    {
                        "type": "session.delegation.created",
                        "event_id": f"d{exchange}",
                        "delegation": {"id": did, "target": "responses", "type": "delegation"},
                        "offset_ms": user_end,
                    },
                )
            )
            nested = [
                {"type": "response.created", "response": {"id": f"r{exchange}", "status": "in_progress"}},
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {
                        "type": "function_call",
                        "id": f"fc{exchange}",
                        "call_id": f"c{exchange}",
                        "name": "get_weather",
                        "arguments": "",
                    },
                },
            ]
            nested += [
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": f"fc{exchange}",
                    "output_index": 0,
                    "delta": '{"city": "Oslo"}'[i : i + 2],
                }
                for i in range(0, 16, 2)
            ]
            nested += [
                {
                    "type": "response.output_item.added",
                    "output_index": 1,
                    "item": {"type": "message", "id": f"m{exchange}", "role": "assistant", "content": []},
                }
            ]
            nested += [
                {
                    "type": "response.output_text.delta",
                    "item_id": f"m{exchange}",
                    "output_index": 1,
                    "content_index": 0,
                    "delta": w + " ",
                }
                for w in WORDS[:8]
            ]
            nested.append(
                {
                    "type": "response.completed",
                    "response": {
                        "id": f"r{exchange}",
                        "status": "completed",
                        "usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
                    },
                }
            )
            for i, inner in enumerate(nested):
                events.append(
                    (
                        t0 + 0.02 * (i + 1),
                        SERVER,
                        {
                            "type": "response.event",
                            "event_id": f"x{exchange}-{i}",
                            "delegation_id": did,
                            "event": inner,
                        },
                    )
                )
        start = user_end + 400
        speak_ms = 3000
        for k in range(speak_ms // 40):
            events.append(
                ((start + k * 40 * 0.5) / 1000, SERVER, {"type": "session.output_audio.delta", "delta": spoken})
            )
        for k in range(12):
            s = start + k * 250
            n += 1
            ev = {
                "type": "session.output_transcript.delta",
                "event_id": f"e{n}",
                "delta": WORDS[n % len(WORDS)] + " ",
                "start_ms": s,
                "end_ms": s + 250,
            }
            events.append(((s + 100) / 1000, SERVER, ev))
        at = start + speak_ms + (-600 if exchange % 9 == 0 else 600)  # every 9th: the user barges in
        if exchange % 10 == 0:
            secs = at // 1000
            events.append(
                (
                    at / 1000,
                    SERVER,
                    {
                        "type": "session.usage.updated",
                        "event_id": f"u{exchange}",
                        "usage": {"seconds": secs, "active_seconds": secs, "paused_seconds": 0},
                    },
                )
            )
    end = total_ms / 1000
    events.append((end, CLIENT, {"type": "session.close", "event_id": "c_close"}))
    events.append(
        (
            end + 0.01,
            SERVER,
            {
                "type": "session.closed",
                "event_id": "closed",
                "reason": "close_requested",
                "session": resource,
                "usage": {"seconds": end},
            },
        )
    )
    events.sort(key=lambda e: e[0])
    for seq, (t, direction, ev) in enumerate(events):
        frames.append(Frame(seq, t, direction, orjson.dumps(ev).decode()))
    session = {
        "id": "bench-live",
        "api": "live",
        "variant": "primary",
        "path": "/v1/live/sessions",
        "model": "gpt-live-1",
        "status": "closed",
        "label": f"live-bench-{minutes:g}",
        "started_at": "2026-12-01T00:00:00+00:00",
        "duration": end,
    }
    return session, frames


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def baseline(frames: list[Frame]) -> None:
    loads = orjson.loads
    for f in frames:
        if isinstance(f.data, str):
            loads(f.data)


def live_feed(frames: list[Frame], keep: bool) -> LiveSession:
    live = LiveSession(keep_audio=keep)
    feed = live.feed
    for f in frames:
        feed(f)
    return live


def show_in_process(frames: list[Frame], session: dict[str, Any]) -> None:
    live = assemble_live(frames, session, keep_audio=False)
    for _ in live_conversation(live, session):
        pass
    orjson.dumps(live.to_json())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cli", action="store_true", help="also time `rtproxy show` as a subprocess")
    args = p.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {args.repeat} runs\n")
    session, frames = live_session(args.minutes)
    n = len(frames)
    audio = sum(1 for f in frames if "audio" in str(f.data)[:40])
    print(f"GPT-Live session: {args.minutes:g} min, {n} events ({audio} audio)")
    base = timed(lambda: baseline(frames), args.repeat)
    lean = timed(lambda: live_feed(frames, False), args.repeat)
    full = timed(lambda: live_feed(frames, True), args.repeat)
    print(f"  baseline (orjson.loads only)   {n / base:>10,.0f} events/s")
    print(
        f"  Live reducer, keep_audio=False {n / lean:>10,.0f} events/s   "
        f"bar {BAR:,}: {'ok' if n / lean >= BAR else 'UNDER'}"
    )
    print(f"  Live reducer, keep_audio=True  {n / full:>10,.0f} events/s")
    _, rt_frames = voice_session(args.minutes)
    m = len(rt_frames)
    rt_lean = timed(lambda: assemble(rt_frames, keep_audio=False), args.repeat)
    rt_full = timed(lambda: assemble(rt_frames, keep_audio=True), args.repeat)
    print(f"Realtime voice session: {args.minutes:g} min, {m} events")
    print(f"  Realtime reducer, keep_audio=False {m / rt_lean:>10,.0f} events/s")
    print(f"  Realtime reducer, keep_audio=True  {m / rt_full:>10,.0f} events/s")
    rt_frames.clear()
    shown = timed(lambda: show_in_process(frames, session), args.repeat)
    print(f"show in-process (reducer + text view + --json model): {shown:.2f} s")
    if args.cli:
        with tempfile.TemporaryDirectory(prefix="rtproxy-live-bench-") as tmp:
            db = os.path.join(tmp, "bench.db")
            sid = write_db(db, session, frames)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-c", "from rtproxy.cli import main; main()", "show", sid, "--db", db],
                    capture_output=True,
                    check=True,
                    timeout=600,
                )
                times.append(time.perf_counter() - t0)
            print(f"rtproxy show (subprocess, on SQLite): {statistics.median(times):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
