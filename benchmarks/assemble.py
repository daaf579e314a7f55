"""How fast recordings become conversations: the reducer, `show` and `export --audio`.

    python benchmarks/assemble.py                   # everything (about a minute)
    python benchmarks/assemble.py --minutes 10      # a shorter voice session for show/export
    python benchmarks/assemble.py --no-cli          # reducer only

1. Events per second through :class:`rtproxy.conversation.realtime.Conversation` for a
   text-heavy and an audio-heavy synthetic recording (``benchmarks/synth.py``),
   next to a baseline measured in the same run on the same frames: a bare
   loop that only ``orjson.loads`` each frame. The ratio says what the
   reducer costs on top of parsing; the bar is 200k text events/s.
2. A one-hour 24 kHz voice session (about 400k events, half of them audio)
   is imported into a temporary database, then ``rtproxy show`` and
   ``rtproxy export --audio`` run on it as subprocesses, each timed from
   start to exit (bars: 5 s and 10 s). If the commands are not installed,
   the same work is timed in-process (assemble + to_json; assemble + every
   WAV + conversation.wav).

Medians of ``--repeat`` runs; nothing is asserted, the figures are printed.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synth import count_audio, text_session, voice_session, write_db  # noqa: E402
from rtproxy.conversation import audio
from rtproxy.conversation.realtime import Conversation, assemble  # noqa: E402
from rtproxy.protocols.wire import Frame  # noqa: E402

TEXT_BAR = 200_000  # events/s through the reducer
SHOW_BAR = 5.0  # seconds for `show` on a one-hour session
EXPORT_BAR = 10.0  # seconds for `export --audio` on a one-hour session


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs (garbage collected between runs)."""
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


def reducer_rates(label: str, frames: list[Frame], repeat: int) -> None:
    n = len(frames)
    base = timed(lambda: baseline(frames), repeat)
    lean = timed(lambda: assemble(frames, keep_audio=False), repeat)
    full = timed(lambda: assemble(frames, keep_audio=True), repeat)
    print(f"{label}: {n} events ({count_audio(frames)} audio)")
    print(f"  baseline (orjson.loads only)   {n / base:>10,.0f} events/s")
    print(f"  reducer, keep_audio=False      {n / lean:>10,.0f} events/s   ratio to baseline {base / lean:.2f}")
    print(f"  reducer, keep_audio=True       {n / full:>10,.0f} events/s   ratio to baseline {base / full:.2f}")


def cli() -> list[str] | None:
    """The `rtproxy` command of this environment, if it has `show` and `export`."""
    exe = shutil.which("rtproxy", path=str(Path(sys.executable).parent)) or shutil.which("rtproxy")
    if exe is None:
        return None
    for command in ("show", "export"):
        probe = subprocess.run([exe, command, "--help"], capture_output=True, timeout=60)
        if probe.returncode != 0:
            return None
    return [exe]


def run(cmd: list[str], repeat: int) -> tuple[float, float, str]:
    """Median wall time and CPU time (user + system) of a subprocess; its stderr tail if it failed."""
    times, cpu, err = [], [], ""
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, timeout=600)
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:][0] if proc.stderr else "failed"
    return statistics.median(times), statistics.median(cpu), err


def export_in_process(frames: list[Frame], directory: Path) -> int:
    """What `export --audio` does, without the store: every item's WAV and conversation.wav (causal placement)."""
    speech_started: dict[str, float] = {}
    conv = assemble(audio.note_speech_started(frames, speech_started), keep_audio=True)
    user, assistant = conv.audio_tracks()
    rate = max((item.audio_rate for _, item in user + assistant), default=24000)
    at_rate: dict[str, bytes] = {}
    n = 0
    for i, item in enumerate(conv.items):
        if item.audio_ms <= 0:
            continue
        pcm = item.pcm16()
        audio.write_wav(directory / f"{i:04d}-{item.role}-{item.id}.wav", pcm, item.audio_rate)
        n += 1
        at_rate[item.id] = pcm if item.audio_rate == rate else audio.resample(pcm, item.audio_rate, rate)
    left, right = audio.causal_tracks(audio.conversation_clips(conv, at_rate, speech_started), rate)
    audio.write_wav(directory / "conversation.wav", audio.stereo_mix(left, right, rate), rate, channels=2)
    return n + 1


def _reuse(db: str, session: dict[str, object]) -> str | None:
    """The id of this synthetic session if ``db`` already holds it (from an earlier --db run)."""
    if not os.path.exists(db):
        return None
    from rtproxy.store import Store

    with Store(db) as store:
        for row in store.sessions():
            if row["label"] == session["label"] and row["duration"] == session["duration"]:
                return str(row["id"])
    return None


def verdict(seconds: float, bar: float) -> str:
    return "ok" if seconds < bar else "OVER THE BAR"


def hour(minutes: float, repeat: int, use_cli: bool, keep_db: str | None = None) -> None:
    t0 = time.perf_counter()
    session, frames = voice_session(minutes)
    made = time.perf_counter() - t0
    print(f"\nvoice session: {minutes:g} min, {len(frames)} events ({count_audio(frames)} audio), made in {made:.1f} s")
    reducer_rates("  audio-heavy, whole session", frames, 1)
    exe = cli() if use_cli else None
    with tempfile.TemporaryDirectory(prefix="rtproxy-bench-") as tmp:
        if exe is not None:
            db = keep_db or os.path.join(tmp, "bench.db")
            t0 = time.perf_counter()
            sid = _reuse(db, session) or write_db(db, session, frames)
            print(f"  in the database {db} after {time.perf_counter() - t0:.1f} s")
            del frames
            gc.collect()
            base, base_cpu, _ = run([sys.executable, "-c", "import rtproxy.cli"], repeat)
            show = run([*exe, "show", sid, "--db", db], repeat)
            as_json = run([*exe, "show", sid, "--db", db, "--json"], repeat)
            export = run([*exe, "export", sid, "--db", db, "--audio", os.path.join(tmp, "wav")], repeat)
            wavs = list(Path(tmp, "wav").glob("*.wav"))
            size = sum(p.stat().st_size for p in wavs) / 1e6
            print(f"  (load average {os.getloadavg()[0]:.1f}; CPU seconds are what the command itself used)")
            print(f"  baseline: python -c 'import rtproxy.cli'  {base:6.2f} s wall {base_cpu:6.2f} s CPU")
            for label, (wall, cpu, err), bar in (
                ("show", show, SHOW_BAR),
                ("show --json", as_json, SHOW_BAR),
                ("export --audio", export, EXPORT_BAR),
            ):
                print(
                    f"  rtproxy {label:<15} {wall:6.2f} s wall {cpu:6.2f} s CPU   bar {bar:g} s: {verdict(wall, bar)}"
                    f"  {err}"
                )
            print(f"  export wrote {len(wavs)} WAV files, {size:.0f} MB")
            return
        print("  (no `rtproxy show`/`export` installed: timing the same work in-process)")

        def show_work() -> None:
            conv = Conversation(keep_audio=False)
            for f in frames:
                conv.feed(f)
            orjson.dumps(conv.to_json())

        out = Path(tmp, "wav")
        out.mkdir()
        show = timed(show_work, repeat)
        export = timed(lambda: export_in_process(frames, out), repeat)
        print(f"  assemble + to_json             {show:6.2f} s   bar {SHOW_BAR:g} s: {verdict(show, SHOW_BAR)}")
        print(f"  assemble + all WAVs            {export:6.2f} s   bar {EXPORT_BAR:g} s: {verdict(export, EXPORT_BAR)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--text-events", type=int, default=200_000, help="size of the text-heavy recording")
    p.add_argument("--audio-minutes", type=float, default=10.0, help="length of the audio-heavy recording")
    p.add_argument("--minutes", type=float, default=60.0, help="length of the voice session for show/export")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-cli", action="store_true", help="time show/export in-process even if rtproxy is installed")
    p.add_argument("--reducer-only", action="store_true", help="skip the show/export part")
    p.add_argument("--db", help="keep the one-hour session in this database and reuse it on later runs")
    args = p.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {args.repeat} runs\n")
    for dialect in ("ga", "beta"):
        _, frames = text_session(args.text_events, dialect)
        reducer_rates(f"text-heavy ({dialect})", frames, args.repeat)
    _, frames = voice_session(args.audio_minutes)
    reducer_rates(f"audio-heavy ({args.audio_minutes:g} min voice, ga)", frames, args.repeat)
    del frames
    if not args.reducer_only:
        hour(args.minutes, args.repeat, not args.no_cli, args.db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
