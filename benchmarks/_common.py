"""Helpers shared by the benchmarks: percentiles, medians, child processes, /proc sampling.

Everything here is loopback-only and bounded in time: a child that does not
print its "listening on" line within the timeout is killed and reported.
"""

from __future__ import annotations

import math
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LISTENING = re.compile(r"listening on (?:ws|wss|http)://(?:127\.0\.0\.1|localhost):(\d+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


# --- /proc sampling ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out.extend(int(c) for c in text.split())
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    seen, todo = [], [pid]
    while todo and len(seen) < 1000:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU seconds of a process (all threads) and, with tree, its live descendants."""
    total = 0
    for p in process_tree(pid) if tree else [pid]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def pss_kib(pid: int, *, tree: bool = True) -> int:
    """Proportional set size (/proc/PID/smaps_rollup) in KiB, summed over the process tree: shared pages are
    split between the processes that map them, so the sum is what the tree really holds."""
    total = 0
    for p in process_tree(pid) if tree else [pid]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def memory_kib(pid: int, key: str = "VmHWM", *, tree: bool = True) -> int:
    """A /proc/PID/status memory figure (VmHWM = peak RSS) in KiB, summed over the process tree."""
    total = 0
    for p in process_tree(pid) if tree else [pid]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# --- child processes -----------------------------------------------------------------


@dataclass
class Child:
    """A server started as a subprocess, listening on a loopback port it printed."""

    name: str
    proc: subprocess.Popen[str]
    port: int
    output: list[str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> str:
        """SIGTERM, wait, and return everything it printed (stdout and stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return "".join(self.output) + (out or "") + (err or "")


#: glibc returns freed heap to the kernel eagerly; a small Python server that allocates and frees a
#: 13 KB buffer per message then pays a brk() and page faults per message (10-20% of a relay's
#: latency here). Every process in a benchmark runs with the same, steadier setting.
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(16 << 20), "MALLOC_TOP_PAD_": str(4 << 20)}


def same_malloc_everywhere() -> None:
    """Re-run this process with MALLOC_ENV unless it has it already (glibc reads it at start)."""
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


def spawn(name: str, argv: list[str], timeout: float = 30.0, env: dict[str, str] | None = None) -> Child:
    """Start argv and wait (bounded) for its 'listening on …:PORT' line."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **MALLOC_ENV, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and len(lines) < 200:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = LISTENING.search(line)
            if m:
                return Child(name, proc, int(m.group(1)), lines)
    proc.kill()
    out, _ = proc.communicate()
    raise RuntimeError(f"{name} did not start within {timeout:g} s:\n{''.join(lines)}{out}")


def python_argv(script: str, *args: str) -> list[str]:
    return [sys.executable, script, *args]
