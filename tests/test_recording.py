"""The JSONL reader's bounds on frame times, directly and through the real `rtproxy import` subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from rtproxy.errors import RecordingError
from rtproxy.recording import MAX_T, read_recording
from tests.conftest import rtproxy_exe

RECORDINGS = Path(__file__).parent.parent / "recordings"
SOURCE = RECORDINGS / "voice-ga.jsonl"


def lines() -> list[bytes]:
    return SOURCE.read_bytes().splitlines()


def with_t(tmp_path: Path, n: int, raw_t: bytes, name: str = "bad.jsonl") -> Path:
    """voice-ga.jsonl with line n's (1-based) "t" replaced by the literal JSON text raw_t."""
    out = lines()
    obj = orjson.loads(out[n - 1])
    marker = 123.456789
    obj["t"] = marker
    out[n - 1] = orjson.dumps(obj).replace(repr(marker).encode(), raw_t, 1)
    path = tmp_path / name
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def import_(path: Path, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rtproxy_exe(), "import", str(path), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )


# Line 3 is the second frame; every later frame's t is larger than these, except where noted.
BAD_TIMES: dict[str, tuple[int, bytes, str]] = {
    "huge": (3, b"1e12", "more than 7 days"),
    "past seven days": (3, str(MAX_T + 1).encode(), "more than 7 days"),
    "huge integer": (3, b"18446744073709551615", "more than 7 days"),
    "negative": (2, b"-1.0", "≥ 0"),
    "infinite": (3, b"1e400", "not valid JSON"),
    "nan": (3, b"NaN", "not valid JSON"),
    "backwards": (len(lines()), b"0.0", "time goes backwards"),
}


@pytest.mark.parametrize("case", list(BAD_TIMES))
def test_reader_refuses_unusable_times_naming_file_and_line(tmp_path: Path, case: str) -> None:
    """A frame time that is negative, non-finite, past 7 days or earlier than the frame before is a
    RecordingError naming the file and the line, not a frame."""
    n, raw, reason = BAD_TIMES[case]
    path = with_t(tmp_path, n, raw)
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    assert (info.value.path, info.value.line) == (str(path), n)
    assert str(info.value).startswith(f"{path}:{n}: ") and reason in str(info.value), str(info.value)


def test_reader_keeps_times_up_to_seven_days(tmp_path: Path) -> None:
    """Times up to the 7-day bound, in order, are read as they were written."""
    out = lines()
    last = orjson.loads(out[-1])
    last["t"] = MAX_T
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join([*out[:-1], orjson.dumps(last)]) + b"\n")
    frames = read_recording(path).frames
    assert frames[-1].t == MAX_T and len(frames) == len(out) - 1


@pytest.mark.parametrize("case", ["huge", "negative", "backwards"])
def test_import_refuses_unusable_times_in_one_line(tmp_path: Path, case: str) -> None:
    """`rtproxy import` of a recording with an unusable time exits 2 with one line naming file:line and
    creates no database."""
    n, raw, reason = BAD_TIMES[case]
    path = with_t(tmp_path, n, raw)
    db = tmp_path / "rt.db"
    done = import_(path, db)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{path}:{n}:" in done.stderr and reason in done.stderr, done.stderr
    assert not db.exists()


def test_import_of_a_recording_with_sane_times_still_works(tmp_path: Path) -> None:
    """The bounds refuse nothing a real recording holds: voice-ga.jsonl imports with exit 0."""
    done = import_(SOURCE, tmp_path / "rt.db")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
