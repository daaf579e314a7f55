"""Where does recording's latency go? 13 KB ping-pong through rtproxy stopped at each stage of recording.

    python benchmarks/recorder_breakdown.py               # 10 repetitions, ~1 min
    python benchmarks/recorder_breakdown.py --portable    # also the portable path's stages

Targets, each a separate process in front of the same echo upstream, all on 127.0.0.1:

* ``relay``      — the minimal aiohttp relay of ``proxy_overhead.py`` (the baseline);
* ``unrecorded`` — rtproxy with frames not recorded at all;
* ``unsent``     — frames batched, batches dropped instead of sent to the writer;
* ``unstored``   — batches sent to the writer, which reads and decodes them but stores no frame;
* ``full``       — rtproxy as it ships (fast path; with ``--portable``, the portable path's ``unstored`` and
  ``full`` too).

See ``rtproxy_stages.py`` for how each stage is made. Every repetition runs each target once, the order
rotating, each on a fresh connection after the CPU has settled (a writer's checkpoint must not run in
another target's turn). Printed per target: p50 and p99 of all round trips pooled, and the medians of the
per-repetition ratios against the relay. The step from one stage to the next is what that stage costs.
After each repetition every stage's database is checked to hold what the stage promises (``full``: every
frame; ``unrecorded`` and ``unstored``: none); the script exits 1 if one does not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_overhead as po  # noqa: E402
from _common import median, percentile, python_argv, ratio, same_malloc_everywhere, spawn  # noqa: E402

STAGES = Path(__file__).resolve().parent / "rtproxy_stages.py"


def stage_check(stage: str, db: Path, tally: po.Tally) -> str | None:
    """None if the database holds what `stage` promises (every frame only for ``full``), else what is wrong:
    a stage that silently stored every frame, or lost some, would measure the wrong thing."""
    if stage == "full":
        complete, line = po.check_db(db, tally)
        return None if complete else line
    rows = po.count_events(db)
    if stage == "unsent":  # only the batches that carried a session's row or update went
        return None if rows < tally.frames // 2 else f"{rows} of {tally.frames} frames stored"
    return None if rows == 0 else f"{rows} of {tally.frames} frames stored"


def targets(portable: bool) -> list[tuple[str, str, bool]]:
    """(name, stage, portable) of every rtproxy target."""
    out = [(stage, stage, False) for stage in ("unrecorded", "unsent", "unstored", "full")]
    if portable:
        out += [("unstored-portable", "unstored", True), ("full-portable", "full", True)]
    return out


Rtts = dict[str, list[float]]


async def repetition(
    rep: int, echo_port: int, names: list[tuple[str, str, bool]], n: int, work: Path
) -> tuple[Rtts, list[str]]:
    """One repetition: every target's round-trip times, and what any stage's database got wrong."""
    upstream = f"ws://{po.HOST}:{echo_port}"
    made: list[po.Target] = []
    stages: dict[str, str] = {}
    rtts: Rtts = {}
    try:
        child = spawn("relay", python_argv(po.__file__, "--role", "relay", "--upstream", upstream))
        made.append(po.Target("relay", f"ws://{po.HOST}:{child.port}{po.PATH}", child))
        for name, stage, portable in names:
            db = work / f"{rep}-{name}.db"
            argv = [sys.executable, str(STAGES), stage, "proxy", "--port", "0", "--db", str(db)]
            argv += ["--upstream", f"http://{po.HOST}:{echo_port}"]
            child = spawn(name, argv, env={"RTPROXY_PORTABLE": "1" if portable else "0"})
            made.append(po.Target(name, f"ws://{po.HOST}:{child.port}{po.PATH}", child, db))
            stages[name] = stage
        order = made[rep % len(made) :] + made[: rep % len(made)]
        audio, small = po.audio_event(), po.small_event()
        async with aiohttp.ClientSession() as http:
            for t in made:
                await po.ping_pong(http, t.url, small, 100, t.tally)  # warm up
            for t in order:
                await po.settle(made)
                rtts[t.name] = await po.ping_pong(http, t.url, audio, n, t.tally)
    finally:
        for t in made:
            if t.child is not None:
                t.child.stop()  # the proxy commits everything before it exits
    problems = []
    for t in made:
        if t.db is not None:
            problem = stage_check(stages[t.name], t.db, t.tally)
            if problem is not None:
                problems.append(f"rep {rep + 1} {t.name}: {problem}")
    for f in work.glob(f"{rep}-*"):
        f.unlink(missing_ok=True)
    return rtts, problems


async def main(args: argparse.Namespace) -> int:
    names = targets(args.portable)
    echo = spawn("echo", python_argv(po.__file__, "--role", "echo"))
    runs: list[Rtts] = []
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rtproxy-breakdown-") as tmp:
            for rep in range(args.reps):
                rtts, wrong = await repetition(rep, echo.port, names, args.n, Path(tmp))
                runs.append(rtts)
                problems += wrong
                line = "  ".join(
                    f"{k}={percentile(v, 50) * 1e6:.0f}/{percentile(v, 99) * 1e6:.0f}" for k, v in rtts.items()
                )
                print(f"  rep {rep + 1}: {line} (p50/p99 µs)", flush=True)
    finally:
        echo.stop()
    command = " ".join(["python benchmarks/recorder_breakdown.py", *sys.argv[1:]])
    print()
    print(f"13 KB ping-pong, {args.n} round trips × {args.reps} repetitions ({command})")
    print(f"{'target':18s} {'p50 µs':>7s} {'p99 µs':>7s}   {'p50 ×relay':>10s} {'p99 ×relay':>10s}")
    for name in ["relay", *(n for n, _, _ in names)]:
        pooled = [x for run in runs for x in run[name]]
        r50 = median([ratio(percentile(r[name], 50), percentile(r["relay"], 50)) for r in runs])
        r99 = median([ratio(percentile(r[name], 99), percentile(r["relay"], 99)) for r in runs])
        print(
            f"{name:18s} {percentile(pooled, 50) * 1e6:7.0f} {percentile(pooled, 99) * 1e6:7.0f}"
            f"   {r50:9.2f}× {r99:9.2f}×"
        )
    print()
    for problem in problems:
        print(f"STAGE WRONG: {problem}")
    print("every stage's database held what the stage promises" if not problems else "stages: NOT as promised")
    return 1 if problems else 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10, help="repetitions (default 10)")
    parser.add_argument("-n", type=int, default=1500, help="round trips per target and repetition (default 1500)")
    parser.add_argument("--portable", action="store_true", help="also the portable path's unstored and full stages")
    args = parser.parse_args()
    if args.reps < 1 or args.n < 1:
        parser.error("--reps and -n must be at least 1")
    same_malloc_everywhere()
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
