"""`rtproxy rerun` of a recording of several connections (format 2): every connection in order, each a new session
of its own, labelled, with its own diff; or only the one --connection K names. Real subprocess, scripted upstream."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from rtproxy.recording import read_recording, write_connections
from rtproxy.store import Store
from tests.conftest import make_key, rtproxy_exe
from tests.test_rerun import FUNCTION_CALL, FUNCTION_CALL_TEXT, NEW_MODEL, run_rerun
from tests.upstream import ScriptedUpstream


def two_connections(tmp_path: Path) -> Path:
    """function-call-ga twice, as an app that reconnected would have recorded it."""
    rec = read_recording(FUNCTION_CALL)
    path = tmp_path / "two.jsonl"
    write_connections(path, [(rec.session, rec.frames), (rec.session, rec.frames)])
    return path


async def test_every_connection_is_rerun_in_order_each_a_session_of_its_own(tmp_path: Path) -> None:
    """Two connections: two upstream connections one after the other, two new sessions labelled by connection,
    a diff for each, exit 0 when both mean the same."""
    path, db = two_connections(tmp_path), tmp_path / "r.db"
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT) as up:
        code, out, err = await run_rerun(
            str(path), "--upstream", up.url, "--db", str(db), "--speed", "0", key=make_key()
        )
        assert len(up.connections) == 2
    assert code == 0, out + err
    assert "connection 1 of 2:" in out and "connection 2 of 2:" in out
    assert out.count("same meaning") == 2 and "2 connections rerun: all the same" in out
    with Store(db) as store:
        rows = sorted(store.sessions(), key=lambda r: r["started_at"])
    assert [r["label"] for r in rows] == ["rerun of two.jsonl (connection 1)", "rerun of two.jsonl (connection 2)"]
    assert all(r["status"] == "closed" for r in rows)


async def test_a_difference_in_any_connection_is_exit_1_and_named(tmp_path: Path) -> None:
    """A new model that calls the tool differently diverges in both connections: each is reported where it
    stopped, the summary names the connections that differ, exit 1; --json lists both."""
    path = two_connections(tmp_path)
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT, new_model=NEW_MODEL) as up:
        base = [str(path), "--upstream", up.url, "--db", str(tmp_path / "r.db"), "--model", NEW_MODEL, "--speed", "0"]
        code, out, err = await run_rerun(*base, key=make_key())
        assert code == 1, out + err
        assert out.count("stopped at turn 2:") == 2 and "2 connections rerun: connections 1, 2 differ" in out
        code, out, err = await run_rerun(*base, "--json", key=make_key())
    assert code == 1, out + err
    report = orjson.loads(out)
    assert [c["connection"] for c in report["connections"]] == [1, 2]
    assert not report["same"] and not report["complete"]
    assert all("fahrenheit" in c["stopped"] for c in report["connections"])


async def test_connection_k_reruns_only_that_one(tmp_path: Path) -> None:
    """--connection 2: one upstream connection, the session labelled as the second; the JSON says which."""
    path, db = two_connections(tmp_path), tmp_path / "r.db"
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT) as up:
        args = [str(path), "--upstream", up.url, "--db", str(db), "--connection", "2", "--speed", "0", "--json"]
        code, out, err = await run_rerun(*args, key=make_key())
        assert len(up.connections) == 1
    assert code == 0, out + err
    report = orjson.loads(out)
    (only,) = report["connections"]
    assert only["connection"] == 2 and only["label"] == "rerun of two.jsonl (connection 2)" and only["same"]


async def test_a_connection_that_is_not_there_is_one_line_exit_2(tmp_path: Path) -> None:
    """--connection 3 of a recording of two: exit 2, one line saying how many it has."""
    path = two_connections(tmp_path)
    args = [str(path), "--upstream", "http://127.0.0.1:9", "--db", str(tmp_path / "r.db"), "--connection", "3"]
    code, out, err = await run_rerun(*args, key=make_key())
    assert code == 2, out + err
    assert "--connection 3, but it has 2 connections" in err and len(err.strip().splitlines()) == 1


async def test_a_connection_without_client_events_is_named_and_the_others_rerun(tmp_path: Path) -> None:
    """A recorded connection that never got to send anything (a refused reconnect) is said to be left out; the
    other is rerun and decides the verdict."""
    rec = read_recording(FUNCTION_CALL)
    path = tmp_path / "refused-then-ok.jsonl"
    write_connections(path, [({**rec.session, "status": "rejected"}, []), (rec.session, rec.frames)])
    async with ScriptedUpstream(text=FUNCTION_CALL_TEXT) as up:
        args = [str(path), "--upstream", up.url, "--db", str(tmp_path / "r.db"), "--speed", "0"]
        code, out, err = await run_rerun(*args, key=make_key())
    assert code == 0, out + err
    assert "connection 1 not rerun: the recording has no client events to send" in out
    assert "connection 2 of 2:" in out and "same meaning" in out


def test_help_says_how_several_connections_are_rerun() -> None:
    """`rtproxy rerun --help` names --connection and what happens to every connection and to a sideband."""
    out = subprocess.run([*rtproxy_exe(), "rerun", "--help"], capture_output=True, text=True, timeout=30).stdout
    for words in ("--connection", "several connections", "rerun in order", "sideband", "GPT-Live"):
        assert words in out, words
