"""`rtproxy diff`: two sessions compared by meaning (equal, reordered, changed), as a library and a command."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.diff import diff_frames
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import read_recording, write_recording
from tests.conftest import rtproxy_exe
from tests.test_replay_server import FLOWS

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "recordings"


def load(name: str) -> tuple[str, dict[str, Any], list[Frame]]:
    rec = read_recording(RECORDINGS / f"{name}.jsonl")
    return name, rec.session, rec.frames


def edited(
    side: tuple[str, dict[str, Any], list[Frame]], frames: list[Frame]
) -> tuple[str, dict[str, Any], list[Frame]]:
    return f"{side[0]} (edited)", side[1], [Frame(i, f.t, f.direction, f.data) for i, f in enumerate(frames)]


def event(frame: Frame) -> dict[str, Any]:
    ev = frame.event
    assert ev is not None
    return ev


def with_event(frame: Frame, ev: dict[str, Any]) -> Frame:
    return Frame(frame.seq, frame.t, frame.direction, orjson.dumps(ev).decode())


def run_diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), "diff", *args], capture_output=True, text=True, timeout=30)


async def test_two_recordings_of_the_same_client_are_equal(tmp_path: Path) -> None:
    """Recorded twice through the proxy (other ids, timings), the same voice client compares equal; exit 0."""
    flow = FLOWS.FLOWS["voice-ga"]
    a, _ = await FLOWS.record(flow, tmp_path / "a.jsonl", tmp_path / "a.db")
    b, _ = await FLOWS.record(flow, tmp_path / "b.jsonl", tmp_path / "b.db")
    assert a.read_bytes() != b.read_bytes()
    r = run_diff(str(a), str(b))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "client events:  4 vs 4  same" in r.stdout and "same meaning" in r.stdout


def test_audio_is_compared_by_duration_not_chunking() -> None:
    """Splitting every audio append in two changes no meaning."""
    side = load("voice-ga")
    frames: list[Frame] = []
    for f in side[2]:
        ev = f.event
        if f.direction is Direction.CLIENT and ev and ev["type"] == "input_audio_buffer.append":
            raw = base64.b64decode(ev["audio"])
            for half in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                frames.append(with_event(f, {**ev, "audio": base64.b64encode(half).decode()}))
        else:
            frames.append(f)
    result = diff_frames(side, edited(side, frames))
    assert result.same, result.format()
    assert result.a.client[1] == {"type": "input_audio_buffer.append", "audio_ms": 1000.0, "appends": 10}
    assert result.b.client[1]["appends"] == 20


def test_server_events_reordered_without_changing_meaning_are_equal() -> None:
    """The user's transcript arriving after the response instead of before it is the same conversation."""
    side = load("voice-ga")
    late = [f for f in side[2] if (f.event or {}).get("type", "").startswith("conversation.item.input_audio_trans")]
    assert late
    rest = [f for f in side[2] if f not in late]
    result = diff_frames(side, edited(side, rest + late))
    assert result.same, result.format()


def test_client_events_reordered_are_reported_as_moved() -> None:
    """Sending conversation.item.create before session.update is a difference, named as a move."""
    side = load("text-ga")
    frames = list(side[2])
    client = [i for i, f in enumerate(frames) if f.direction is Direction.CLIENT]
    frames[client[0]], frames[client[1]] = frames[client[1]], frames[client[0]]
    result = diff_frames(side, edited(side, frames))
    assert not result.same
    (d,) = result.differences
    assert d.section == "client events" and d.message.startswith("moved to #") and d.a == d.b
    assert f"{d.where}: {d.message}" in result.format()


def test_changed_function_arguments_are_a_difference_on_that_item() -> None:
    """A function call with other arguments is reported on that item, arguments compared as JSON."""
    side = load("function-call-ga")
    frames = [
        f if f.direction is Direction.CLIENT else Frame(f.seq, f.t, f.direction, str(f.data).replace("Paris", "Lyon"))
        for f in side[2]
    ]
    result = diff_frames(side, edited(side, frames))
    (d,) = [d for d in result.differences if "function_call" in d.where]
    assert d.section == "items" and d.message.startswith("arguments")
    assert d.a == {"location": "Paris", "unit": "celsius"} and d.b == {"location": "Lyon", "unit": "celsius"}


async def test_a_changed_answer_exits_1_with_a_readable_summary_and_json(tmp_path: Path) -> None:
    """Another spoken answer differs in the assistant item's transcript; the command exits 1, --json says why."""
    flow = FLOWS.FLOWS["text-ga"]
    other = FLOWS.Flow("text-ga", False, flow.run, {"text": "Bonjour! Comment puis-je aider?"})
    b, _ = await FLOWS.record(other, tmp_path / "b.jsonl", tmp_path / "b.db")
    a = RECORDINGS / "text-ga.jsonl"
    r = run_diff(str(a), str(b))
    assert r.returncode == 1
    assert 'items, #2 assistant message: text "Hello! How can I help you today?" vs "Bonjour!' in r.stdout
    j = run_diff(str(a), str(b), "--json")
    assert j.returncode == 1
    data = orjson.loads(j.stdout)
    assert data["same"] is False and data["a"]["items"] == data["b"]["items"] == 2
    assert {d["section"] for d in data["differences"]} == {"items"}


def test_db_session_references_and_bad_input(tmp_path: Path) -> None:
    """DB#SESSION reads a stored session (equal to its export); unknown ones and bad files exit 2 with one line."""
    from rtproxy.store import Store

    db = tmp_path / "rt.db"
    rec = read_recording(RECORDINGS / "function-call-ga.jsonl")
    with Store(db, create=True) as store:
        store.import_session(rec.session, rec.frames)
    r = run_diff(str(RECORDINGS / "function-call-ga.jsonl"), f"{db}#latest")
    assert r.returncode == 0, r.stderr
    r = run_diff(str(RECORDINGS / "text-ga.jsonl"), f"{db}#nosuch")
    assert r.returncode == 2 and "no session 'nosuch'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    write_recording(bad, {}, [])
    bad.write_text(bad.read_text() + "{oops\n")
    r = run_diff(str(bad), str(RECORDINGS / "text-ga.jsonl"))
    assert r.returncode == 2 and f"{bad}:2: not valid JSON" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", sorted(FLOWS.FLOWS))
async def test_every_example_equals_a_fresh_recording_of_its_client(name: str, tmp_path: Path) -> None:
    """Re-recorded (new server ids, call ids, timings), each example means the same as the committed file."""
    fresh, _ = await FLOWS.record(FLOWS.FLOWS[name], tmp_path / "fresh.jsonl", tmp_path / "fresh.db")
    rec = read_recording(fresh)
    result = diff_frames(load(name), ("fresh", rec.session, rec.frames))
    assert result.same, result.format()
    assert result.a.client and result.a.items and result.a.responses
