"""What the OS or SQLite refuses, every command says in one line naming the file, and exits 2 (no traceback).

Each case runs the real `rtproxy` console script. The paths are ones even root cannot use: under a regular
file, in a missing directory, in /proc (no new files), /proc/self/mem (reads fail with EIO), and a database
file whose pages after the first were overwritten (SQLite: malformed).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import write_recording
from rtproxy.store import Store
from tests.conftest import rtproxy_exe


@pytest.fixture
def place(tmp_path: Path) -> dict[str, str]:
    """Paths for the cases: a good recording and database, a damaged database, unusable places."""
    frames = [Frame(i, i * 0.1, Direction.CLIENT, f'{{"type":"x.{i}","pad":"{"p" * 2000}"}}') for i in range(50)]
    good_db = tmp_path / "good.db"
    with Store(good_db, create=True) as store:
        sid = store.import_session({"label": "good"}, frames)
    recording = tmp_path / "good.jsonl"
    write_recording(recording, {"id": sid}, frames)
    damaged = tmp_path / "damaged.db"
    with Store(damaged, create=True) as store:
        store.import_session({"label": "damaged"}, frames)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = damaged.stat().st_size
    with open(damaged, "r+b") as fh:  # page 1 (the schema) stays; every table's pages become garbage
        fh.seek(4096)
        fh.write(b"\xa5" * (size - 4096))
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    return {
        "good_db": str(good_db),
        "recording": str(recording),
        "damaged": str(damaged),
        "under_file": str(afile / "x.db"),
        "missing_dir": str(tmp_path / "missing" / "x.db"),
        "proc_new": "/proc/rtproxy-test.db",
        "proc_mem": "/proc/self/mem",
        "afile": str(afile),
    }


def one_line_error(args: list[str], path: str, timeout: float = 30.0) -> str:
    """Run `rtproxy ARGS`; assert exit 2 and exactly one stderr line naming `path`, no traceback; return it."""
    done = subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1, done.stderr
    assert path in lines[0] and lines[0].startswith("rtproxy: error: "), lines[0]
    return lines[0]


PROXY = ["proxy", "--port", "0", "--upstream", "http://127.0.0.1:9"]


@pytest.mark.parametrize("where", ["under_file", "missing_dir", "proc_new", "proc_mem", "damaged"])
def test_proxy_with_a_database_it_cannot_create_or_read(place: dict[str, str], where: str) -> None:
    """`rtproxy proxy --db` into an unusable place or onto a damaged database: one line naming it, exit 2."""
    one_line_error([*PROXY, "--db", place[where]], place[where])
    assert not Path(place["missing_dir"]).parent.exists()  # a mistyped directory is not created


def test_proxy_tls_with_a_certificate_directory_it_cannot_create(place: dict[str, str], tmp_path: Path) -> None:
    """`rtproxy proxy --tls` whose certificate directory cannot be made: one line naming it, exit 2, and the
    database is not touched."""
    home = str(Path(place["afile"]) / "certs")
    db = tmp_path / "never.db"
    done = subprocess.run(
        [*rtproxy_exe(), *PROXY, "--tls", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "RTPROXY_HOME": home},
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and home in lines[0], done.stderr
    assert not db.exists()


@pytest.mark.parametrize("where", ["under_file", "missing_dir", "proc_new", "proc_mem", "damaged"])
def test_import_into_a_database_it_cannot_create_or_write(place: dict[str, str], where: str) -> None:
    """`rtproxy import FILE --db` into an unusable place or a damaged database: one line naming it, exit 2."""
    one_line_error(["import", place["recording"], "--db", place[where]], place[where])


READERS = {
    "sessions": ["sessions"],
    "show": ["show", "latest"],
    "show-events": ["show", "latest", "--events"],
    "export": ["export", "latest", "-o", "-"],
    "export-audio": ["export", "latest", "--audio", "{tmp}/wav"],
    "replay": ["replay", "--session", "latest", "--port", "0"],
    "redact": ["redact", "latest"],
    "tui": ["tui", "latest"],
}


@pytest.mark.parametrize("where", ["proc_mem", "damaged"])
@pytest.mark.parametrize("command", list(READERS))
def test_reading_commands_on_a_database_the_os_or_sqlite_refuses(
    place: dict[str, str], command: str, where: str, tmp_path: Path
) -> None:
    """sessions, show, export, replay, redact and tui on an unreadable or damaged database: one line naming it."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in READERS[command]]
    one_line_error([*args, "--db", place[where]], place[where])


@pytest.mark.parametrize("where", ["proc_mem", "damaged"])
def test_diff_with_a_database_side_the_os_or_sqlite_refuses(place: dict[str, str], where: str) -> None:
    """`rtproxy diff DB#latest FILE` on an unreadable or damaged database: one line naming it, exit 2."""
    one_line_error(["diff", f"{place[where]}#latest", place["recording"]], place[where])


def test_files_in_places_that_cannot_hold_them(place: dict[str, str], tmp_path: Path) -> None:
    """Output and input files under a regular file (export -o, export --audio, redact, replay, diff): one line."""
    target = str(Path(place["afile"]) / "out.jsonl")
    one_line_error(["export", "latest", "--db", place["good_db"], "-o", target], target)
    wavs = str(Path(place["afile"]) / "wav")
    one_line_error(["export", "latest", "--db", place["good_db"], "--audio", wavs], wavs)
    missing = str(Path(place["afile"]) / "in.jsonl")
    one_line_error(["redact", missing], missing)
    one_line_error(["redact", place["recording"], "-o", target], target)
    one_line_error(["replay", missing, "--port", "0"], missing)
    one_line_error(["diff", missing, place["recording"]], missing)
