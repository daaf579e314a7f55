"""What differs between platforms, exercised here: the portable recorder path, a small /dev/shm, no ring file.

Windows and macOS cannot run in CI here, so the portable path (what Windows
always takes: a sender thread, the writer at normal priority, plain signal
handlers) is forced on Linux with ``--portable`` / ``RTPROXY_PORTABLE=1`` and
run end to end, beside the fast path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from rtproxy.record.writer import NICE
from tests.conftest import LISTENING, ProxyProcess, rtproxy_exe, spawn_proxy
from tests.upstream import ScriptedUpstream

FRAMES = 120  # of 13 KB each: well over a 1 MiB pipe buffer, and over a few hundred KiB of tmpfs pages


def audio_event(i: int) -> str:
    return orjson.dumps({"type": "input_audio_buffer.append", "event_id": f"evt_{i}", "audio": "QUJD" * 3300}).decode()


async def stream_audio(port: int, frames: int = FRAMES) -> None:
    """One session: `frames` audio events up, then a normal close."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime")
        first = await ws.receive(timeout=10)
        assert "session.created" in first.data
        for i in range(frames):
            await ws.send_str(audio_event(i))
        await ws.close()


def recorded(db: Path) -> tuple[int, list[tuple[str, int]]]:
    conn = sqlite3.connect(db)
    try:
        n = conn.execute("SELECT count(*) FROM events WHERE type = 'input_audio_buffer.append'").fetchone()[0]
        return n, conn.execute("SELECT status, unrecorded FROM sessions").fetchall()
    finally:
        conn.close()


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sockets_of(pid: int) -> list[str]:
    """The sockets a process has open (its fds come and go meanwhile: one closed under us is skipped)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:"):
            found.append(target)
    return found


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_the_portable_path_records_and_stops_cleanly(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess], how: str
) -> None:
    """`rtproxy proxy --portable` (or RTPROXY_PORTABLE=1) records every frame through a loopback socket to its
    writer, stops on SIGTERM through a plain signal handler, and leaves no file in its temporary directory. With
    RTPROXY_WRITER_PRIORITY=low (the env run) the writer runs as it does on macOS, at plain nice 19."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    db = tmp_path / "rt.db"
    args = ["--db", str(db), "--upstream", upstream.url] + (["--portable"] if how == "flag" else [])
    env = {"TMPDIR": str(tmp), **({"RTPROXY_PORTABLE": "1", "RTPROXY_WRITER_PRIORITY": "low"} if how == "env" else {})}
    p = spawn_proxy(args, env=env)
    proxy_process.append(p)
    (writer,) = children(p.proc.pid)
    if how == "env":
        deadline = time.monotonic() + 10
        while os.getpriority(os.PRIO_PROCESS, writer) != NICE and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the writer sets its own priority once it has started: poll, bounded
        assert os.sched_getscheduler(writer) == os.SCHED_OTHER and os.getpriority(os.PRIO_PROCESS, writer) == NICE
    await stream_audio(p.port)
    deadline = time.monotonic() + 10
    while not sockets_of(writer) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # the writer connects once it has started: poll, bounded
    assert sockets_of(writer), "the portable writer reads its batches from a socket"
    code, out, err = p.stop(signal.SIGTERM)
    assert code == 0 and "stopped;" in out, err
    assert recorded(db) == (FRAMES, [("closed", 0)])
    assert list(tmp.iterdir()) == []


async def test_the_fast_path_writes_no_ring_file_anywhere(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess]
) -> None:
    """The recorder's transport is a pipe: recording a session creates nothing in /dev/shm or $TMPDIR, where the
    old shared ring held unredacted frames."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    db = tmp_path / "rt.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url], env={"TMPDIR": str(tmp)})
    proxy_process.append(p)
    await stream_audio(p.port)
    opened = [
        os.readlink(f"/proc/{pid}/fd/{fd}")
        for pid in [p.proc.pid, *children(p.proc.pid)]
        for fd in os.listdir(f"/proc/{pid}/fd")
    ]
    code, _, err = p.stop(signal.SIGTERM)
    assert code == 0, err
    assert recorded(db)[0] == FRAMES
    assert list(tmp.iterdir()) == []
    assert (set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()) == shm
    logs = str(p.out_path.parent)
    files = [f for f in opened if f.startswith("/") and not f.startswith((str(db), logs, "/dev/null", "/dev/pts"))]
    assert not [f for f in files if f.startswith(("/dev/shm", "/tmp", str(tmp))) or "(deleted)" in f], files


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -m (a private mount namespace)")
@pytest.mark.parametrize("size", ["16m", "64m"])
async def test_the_proxy_records_with_a_container_sized_dev_shm(upstream: ScriptedUpstream, size: str) -> None:
    """With a 16 MiB or 64 MiB tmpfs on /dev/shm (Docker's and Kubernetes' default is 64 MiB), the proxy starts,
    records every frame and stops cleanly, and /dev/shm is as empty after as before (the old 64 MiB + 4 KiB ring
    died with SIGBUS on its last page)."""
    tmp = Path(tempfile.mkdtemp(prefix="rtproxy-shm-"))
    db = tmp / "rt.db"
    script = (
        f'mount -t tmpfs -o size={size} tmpfs /dev/shm || exit 97; "$@" & pid=$!; echo "proxy-pid: $pid"; '
        'wait $pid; rc=$?; echo "shm-entries: $(ls -A /dev/shm | wc -l)"; exit $rc'
    )
    out_path = tmp / "out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                *rtproxy_exe(),
                "proxy",
                "--port",
                "0",
                "--db",
                str(db),
                "--upstream",
                upstream.url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            text = out_path.read_text()
            if LISTENING.search(text) and "proxy-pid:" in text:
                break
            await asyncio.sleep(0.02)  # polling the log for the start line, bounded
        m = LISTENING.search(text)
        assert m and proc.poll() is None, text
        pid = int(text.split("proxy-pid:")[1].split()[0])
        await stream_audio(int(m.group(1)))
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(20) == 0, out_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out_path.read_text()
    assert "stopped;" in text and "shm-entries: 0" in text, text
    assert recorded(db) == (FRAMES, [("closed", 0)])
