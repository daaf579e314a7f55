"""How fast `rtproxy tui SESSION` opens a session of 1k, 100k and 400k events, headless.

For each size it builds (once, cached in --workdir) a synthetic voice session
with benchmarks/synth.py, then measures, in this process:

- baseline: the time to SELECT the session's event index (seq, t, direction,
  type, ids, size) from SQLite into Python tuples, the least any viewer
  that lists every event must pay;
- paint: launch (App.run_test) to the first rendered session screen;
- rows: launch to the first events listed (the list is usable from then on,
  while the rest of the index streams in);
- index: launch to the Events tab holding every event;
- key: after the index is loaded, median (and max) delay of a cursor key
  (from the key event to the cursor moved) while the reducer still runs;
- filter: applying a type filter (`response.*`) to the whole index;
- conversation: launch to the reassembled conversation (reducer in a worker).

Each is the median of --repeat runs, printed with its ratio to the baseline.
The bar (issue 5): a 400k-event session opens and is responsive in < 2 s.

    python benchmarks/tui_open.py                       # 1k, 100k, 400k
    python benchmarks/tui_open.py --sizes 1000 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual import events  # noqa: E402
from textual.widgets import TabbedContent  # noqa: E402

from benchmarks import synth  # noqa: E402
from rtproxy.store import Store  # noqa: E402
from rtproxy.tui.app import RtproxyApp, make_app  # noqa: E402
from rtproxy.tui.data import index_rows  # noqa: E402
from rtproxy.tui.index import EventFilter  # noqa: E402
from rtproxy.tui.screens.session import SessionScreen  # noqa: E402
from rtproxy.tui.widgets.event_list import EventList  # noqa: E402

SIZE = (120, 40)
TIMEOUT = 300.0
KEYS = 10


API = "realtime"


def build(workdir: Path, n: int) -> tuple[Path, str]:
    """A database holding one synthetic voice session cut to n events (cached)."""
    path = workdir / f"tui-open-{API}-{n}.db"
    if path.exists():
        with Store(path) as store:
            return path, store.resolve("latest")
    minutes = n / 6500 + 0.5
    if API == "live":
        from benchmarks.live_reducer import live_session

        session, frames = live_session(n / 3900 + 0.5)
    else:
        session, frames = synth.voice_session(minutes)
    frames = frames[:n]
    session = dict(session, status="closed")
    print(f"  built {len(frames)} events ({frames[-1].t / 60:.1f} min) in {path}", file=sys.stderr)
    return path, synth.write_db(path, session, frames)


def baseline(path: Path, sid: str) -> float:
    with Store(path) as store:
        t0 = time.perf_counter()
        rows = index_rows(store, sid)
        elapsed = time.perf_counter() - t0
    assert rows
    return elapsed


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll without Pilot.pause (which waits for the app to go idle, animations included)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.001)


async def _key(app: RtproxyApp, key: str, done: Callable[[], bool]) -> float:
    """Seconds from a key event posted to the app until its effect is in the widget's state."""
    t = time.perf_counter()
    app.post_message(events.Key(key, None))
    await _until(done, key)
    return time.perf_counter() - t


async def open_once(path: Path, sid: str) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    app = make_app(path, sid)
    async with app.run_test(size=SIZE):

        def screen() -> SessionScreen | None:
            s = app.screen
            return s if isinstance(s, SessionScreen) else None

        await _until(lambda: screen() is not None, "session screen")
        s = screen()
        assert s is not None
        await _until(lambda: s.first_paint_at is not None, "first paint")
        out["paint"] = (s.first_paint_at or 0.0) - t0
        await _until(lambda: len(s.index) > 0, "first rows")
        out["rows"] = time.perf_counter() - t0
        await _until(lambda: s.index_complete, "index")
        out["index"] = time.perf_counter() - t0
        out["conv_busy"] = float(not s.conversation_complete)
        await _key(app, "2", lambda: s.query_one(TabbedContent).active == "events")
        events_list = s.query_one(EventList)
        delays = []
        for _ in range(KEYS):  # cursor moves while the reducer runs in its worker
            line = events_list.cursor
            delays.append(await _key(app, "down", lambda line=line: events_list.cursor == line + 1))  # type: ignore[misc]
            await asyncio.sleep(0.02)
        out["key"] = statistics.median(delays)
        out["key_max"] = max(delays)
        t2 = time.perf_counter()
        s.event_filter = EventFilter(types="response.*")
        await _until(lambda: events_list.view.filter.types == "response.*", "filter")
        out["filter"] = time.perf_counter() - t2
        await _until(lambda: s.conversation_complete, "conversation")
        out["conversation"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 400_000])
    p.add_argument("--api", choices=("realtime", "live"), default="realtime", help="which synthetic session")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rtproxy-bench"))
    args = p.parse_args(argv)
    global API
    API = args.api
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"{'events':>8} {'baseline':>9} | {'paint':>14} {'rows':>6} {'index':>14} {'key (max)':>15} {'filter':>7} "
        f"{'conversation':>18}"
    )
    for n in args.sizes:
        path, sid = build(args.workdir, n)
        base = statistics.median(baseline(path, sid) for _ in range(args.repeat))
        runs = []
        for _ in range(args.repeat):
            gc.collect()  # free the previous run's session outside the timings (one app per process in real use)
            runs.append(asyncio.run(open_once(path, sid)))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

        def cell(key: str, width: int = 14, med: dict[str, float] = med, base: float = base) -> str:
            return f"{med[key]:6.2f}s ×{med[key] / base:5.1f}".rjust(width)

        key = f"{med['key'] * 1000:5.0f}ms ({med['key_max'] * 1000:4.0f})"
        print(
            f"{n:>8} {base:8.3f}s | {cell('paint')} {med['rows']:5.2f}s {cell('index')} {key:>15} "
            f"{med['filter']:6.3f}s {cell('conversation', 18)}"
        )
    print("ratios are to the baseline (SELECT of the event index); the bar: 400k opens and responds in < 2 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
