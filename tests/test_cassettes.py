"""Recordings of several connections: the JSONL format, export and import of several sessions, replay of
connection k as the k-th recorded one (drops and reconnects included) and the report covering them all."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.errors import RecordingError
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import iter_recording, read_connections, read_recording, write_connections, write_recording
from rtproxy.replay.server import ReplayServer, load_scripts, start
from tests.conftest import make_key, rtproxy_exe
from tests.test_pytest_plugin import QUIET, inner, threaded_upstream
from tests.test_replay_server import ReplayProcess, spawn_replay

__all__ = ["inner"]  # the pytester fixture this module's plugin test uses

ROOT = Path(__file__).resolve().parent.parent


def turn(session_id: str, answer: str) -> list[Frame]:
    """One text turn: session.update, response.create, and the server's answers."""
    spec: list[tuple[float, str, dict[str, Any]]] = [
        (0.00, "server", {"type": "session.created", "event_id": "e1", "session": {"id": session_id}}),
        (0.01, "client", {"type": "session.update", "session": {"type": "realtime"}}),
        (0.02, "server", {"type": "session.updated", "event_id": "e2", "session": {"id": session_id}}),
        (0.03, "client", {"type": "response.create"}),
        (0.04, "server", {"type": "response.created", "event_id": "e3", "response": {"id": f"resp_{answer}"}}),
        (
            0.05,
            "server",
            {"type": "response.output_text.delta", "event_id": "e4", "response_id": f"resp_{answer}", "delta": answer},
        ),
        (0.06, "server", {"type": "response.done", "event_id": "e5", "response": {"id": f"resp_{answer}"}}),
    ]
    return [Frame(i, t, Direction(d), orjson.dumps(e).decode()) for i, (t, d, e) in enumerate(spec)]


def header(sid: str, **fields: Any) -> dict[str, Any]:
    return {"id": sid, "path": "/v1/realtime", "query": "model=gpt-realtime", "api": "realtime", **fields}


def two_connections(path: Path, drop: int | None = None) -> Path:
    """A recording of two connections; the first ended by the server with `drop` (else by the client)."""
    first = header("20261201-000000-aaaaaa", label="cassette")
    if drop is not None:
        first.update(closed_by="upstream", server_close_code=drop, server_close_reason="")
    write_connections(
        path,
        [(first, turn("sess_1", "one")), (header("20261201-000001-bbbbbb", label="cassette"), turn("sess_2", "two"))],
    )
    return path


def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rtproxy_exe(), *args, "--db", str(db)], capture_output=True, text=True, timeout=60, check=False
    )


# --- the format ---------------------------------------------------------------------------------


def test_connections_round_trip_and_an_old_single_connection_file_is_unchanged(tmp_path: Path) -> None:
    """Each connection starts with a header line of its own; the reader gives them back in order, times counted
    from each one's start; a one-connection file is still format 1, byte for byte as before, and reads as one."""
    path = two_connections(tmp_path / "two.jsonl")
    lines = path.read_bytes().splitlines()
    headers = [orjson.loads(line) for line in lines if b'"rtproxy"' in line[:24]]
    assert [h["rtproxy"] for h in headers] == [2, 2] and [h["session"]["id"][-6:] for h in headers] == [
        "aaaaaa",
        "bbbbbb",
    ]
    connections = read_connections(path)
    assert [len(c.frames) for c in connections] == [7, 7]
    assert [c.frames[0].t for c in connections] == [0.0, 0.0]
    assert orjson.loads(connections[1].frames[-1].data)["response"]["id"] == "resp_two"
    first = read_recording(path)  # the single-connection API reads the first
    assert first.session["id"].endswith("aaaaaa") and len(first.frames) == 7
    session, frames = iter_recording(path)
    assert len(list(frames)) == 7

    old = ROOT / "recordings" / "text-ga.jsonl"
    assert [len(c.frames) for c in read_connections(old)] == [len(read_recording(old).frames)]
    rec = read_recording(old)
    write_recording(tmp_path / "again.jsonl", rec.session, rec.frames)
    assert (tmp_path / "again.jsonl").read_bytes() == old.read_bytes()


def test_a_bad_line_in_a_later_connection_is_named(tmp_path: Path) -> None:
    """A malformed frame in the second connection is refused with its line number."""
    path = two_connections(tmp_path / "two.jsonl")
    lines = path.read_bytes().splitlines()
    lines[10] = b'{"t": 0.5, "dir": "sideways", "event": {}}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(RecordingError, match=r'two\.jsonl:11: "dir"'):
        read_connections(path)


# --- export and import (subprocesses, real SQLite) --------------------------------------------------


def test_export_of_several_sessions_and_import_of_their_file(tmp_path: Path) -> None:
    """Sessions chosen by id, --label, --since and --last export as one file of connections, oldest first;
    importing it makes one session per connection; choosing nothing is one line and exit 2."""
    db = tmp_path / "a.db"
    write_recording(
        tmp_path / "1.jsonl",
        header("20261201-000000-aaaaaa", label="checkout", started_at="2026-12-01T00:00:00.000Z"),
        turn("s1", "one"),
    )
    write_recording(
        tmp_path / "2.jsonl",
        header("20261201-000001-bbbbbb", label="other", started_at="2026-12-01T00:00:01.000Z"),
        turn("s2", "two"),
    )
    write_recording(
        tmp_path / "3.jsonl",
        header("20261201-000002-cccccc", label="checkout", started_at="2026-12-01T00:00:02.000Z"),
        turn("s3", "three"),
    )
    for n in (1, 2, 3):
        assert run("import", str(tmp_path / f"{n}.jsonl"), db=db).returncode == 0

    def exported(*args: str) -> list[str]:
        out = tmp_path / "out.jsonl"
        done = run("export", *args, "-o", str(out), db=db)
        assert done.returncode == 0, done.stderr
        return [c.session["id"][-6:] for c in read_connections(out)]

    assert exported("--label", "checkout") == ["aaaaaa", "cccccc"]
    assert exported("--last", "2") == ["bbbbbb", "cccccc"]
    assert exported("--since", "2026-12-01T00:00:01") == ["bbbbbb", "cccccc"]
    assert exported("--label", "checkout", "--last", "1") == ["cccccc"]
    assert exported("20261201-000002", "20261201-000000") == ["cccccc", "aaaaaa"]  # the order given
    assert exported("latest") == ["cccccc"]

    exported("--label", "checkout")
    imported = run("import", str(tmp_path / "out.jsonl"), db=tmp_path / "b.db")
    assert imported.returncode == 0, imported.stderr
    assert [line[-6:] for line in imported.stdout.split()] == ["aaaaaa", "cccccc"]

    nothing = run("export", "--since", "1d", "-o", str(tmp_path / "none.jsonl"), db=db)
    assert nothing.returncode == 2 and "no session matches --since '1d'" in nothing.stderr
    assert "Traceback" not in nothing.stderr and not (tmp_path / "none.jsonl").exists()
    help_text = run("export", "--help", db=db).stdout
    assert "--label TEXT" in help_text and "--since TIME" in help_text and "--last N" in help_text


def test_a_bad_later_connection_imports_nothing(tmp_path: Path) -> None:
    """A file whose second connection has a bad line is refused whole: no session of it is in the database."""
    path = two_connections(tmp_path / "two.jsonl")
    lines = path.read_bytes().splitlines()
    lines[-1] = b"not json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = run("import", str(path), db=tmp_path / "c.db")
    assert done.returncode == 2 and "two.jsonl:16:" in done.stderr and not (tmp_path / "c.db").exists()


# --- replay ---------------------------------------------------------------------------------------


async def served(path: Path, **kwargs: Any) -> AsyncIterator[tuple[ReplayServer, str]]:
    server = ReplayServer(load_scripts(path), **kwargs)
    runner, port = await start(server)
    try:
        yield server, f"ws://127.0.0.1:{port}/v1"
    finally:
        await server.shutdown()
        await runner.cleanup()


async def one_turn(url: str) -> str:
    """A turn with the real SDK on a connection of its own; the text answered."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=make_key(), websocket_base_url=url)
    text = ""
    async with asyncio.timeout(5), client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime"})
        await conn.response.create()
        async for event in conn:
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type == "response.done":
                break
    return text


async def test_each_connection_is_served_by_the_recorded_one_in_order(tmp_path: Path) -> None:
    """Two SDK connections get the first and the second recorded connection; the report covers both; a
    cassette whose second connection never comes fails, naming it."""
    path = two_connections(tmp_path / "two.jsonl")
    async for server, url in served(path):
        assert [await one_turn(url), await one_turn(url)] == ["one", "two"]
        await server.wait_closed(2, timeout=5)
        assert server.report.ok, server.report.format()
        assert [c.recorded for c in server.report.connections] == [1, 2]
    async for server, url in served(path):
        await one_turn(url)
        await server.wait_closed(1, timeout=5)
        assert not server.report.ok and server.report.unserved == [2]
        assert "recorded connection 2 /v1/realtime?model=gpt-realtime: never opened" in server.report.format()
        assert server.report.to_json()["unserved"] == [2]


@pytest.mark.parametrize("code", [1011, 1012, 1006])
async def test_a_recorded_drop_replays_as_the_same_drop_and_the_sdk_reconnects(tmp_path: Path, code: int) -> None:
    """The first recorded connection ended with the server closing (1011, 1012) or vanishing (1006) after its
    turn: the replay does the same at that point, the SDK's on_reconnecting sees that code and reconnects,
    and the new connection plays the second recorded one."""
    from openai import AsyncOpenAI

    path = two_connections(tmp_path / "drop.jsonl", drop=code)
    async for server, url in served(path):
        client = AsyncOpenAI(api_key=make_key(), websocket_base_url=url)
        codes: list[int] = []
        texts: list[str] = []
        created = 0

        def on_reconnecting(event: Any, codes: list[int] = codes) -> None:
            codes.append(event.close_code)

        async with (
            asyncio.timeout(10),
            client.realtime.connect(model="gpt-realtime", on_reconnecting=on_reconnecting) as conn,
        ):
            async for event in conn:
                if event.type == "session.created":
                    created += 1
                    texts.append("")
                    await conn.session.update(session={"type": "realtime"})
                    await conn.response.create()
                elif event.type == "response.output_text.delta":
                    texts[-1] += event.delta
                elif event.type == "response.done" and created == 2:
                    break
        await server.wait_closed(2, timeout=5)
        assert codes == [code] and texts == ["one", "two"]
        assert server.report.ok, server.report.format()
        assert [c.server_close for c in server.report.connections] == [code, None]
        assert f"closed by the replay with {code}, as recorded" in server.report.format()


async def test_replay_once_serves_every_recorded_connection_then_exits(
    tmp_path: Path, processes: list[ReplayProcess]
) -> None:
    """`rtproxy replay --once` of a two-connection file waits for both, then exits 0 with a report of both."""
    path = two_connections(tmp_path / "two.jsonl")
    p = spawn_replay([str(path), "--once", "--report", str(tmp_path / "r.json")])
    processes.append(p)
    assert [await one_turn(p.base_url), await one_turn(p.base_url)] == ["one", "two"]
    code, out, err = await asyncio.to_thread(p.wait)
    assert code == 0, out + err
    assert "connection 2 /v1/realtime?model=gpt-realtime: 2/2 turns played" in out
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["recorded_connections"] == 2 and [c["recorded"] for c in report["connections"]] == [1, 2]


# --- the pytest plugin ------------------------------------------------------------------------------

TWO_CALLS = """
from client import turn

def test_calls(rtproxy_replay):
    replay = rtproxy_replay("cassettes/calls.jsonl")
    for _ in range({calls}):
        assert turn(replay.url)[-1] == "response.done"
"""


def test_the_plugin_records_every_connection_into_its_cassette_and_replays_them_in_order(
    inner: pytest.Pytester,
) -> None:
    """Under --rtproxy-record-mode=once a test that opens two connections gets both in its one cassette; the
    replay run serves both offline; a changed test that opens only one fails, naming the connection it skipped."""
    inner.makepyfile(test_it=TWO_CALLS.format(calls=2))
    target = inner.path / "cassettes" / "calls.jsonl"
    with threaded_upstream() as up:
        args = (*QUIET, f"--rtproxy-upstream={up.url}")
        inner.runpytest(*args, "--rtproxy-record-mode=once").assert_outcomes(passed=1)
        assert len(up.connections) == 2
        assert [c.session["status"] for c in read_connections(target)] == ["closed", "closed"]
        inner.runpytest(*args).assert_outcomes(passed=1)
        assert len(up.connections) == 2  # replayed, not recorded again
        inner.makepyfile(test_it=TWO_CALLS.format(calls=1))
        result = inner.runpytest(*args)
        result.assert_outcomes(failed=1)
        assert "recorded connection 2 /v1/realtime?model=gpt-realtime: never opened" in result.stdout.str()
        assert len(up.connections) == 2


RECONNECTING = """
import asyncio, secrets
from openai import AsyncOpenAI

async def go(url):
    client = AsyncOpenAI(api_key="sk-test-" + secrets.token_urlsafe(24), websocket_base_url=url)
    codes, done = [], 0

    def on_reconnecting(event):
        codes.append(event.close_code)
        return {"extra_query": {}}  # the scripted upstream's drop was asked for by the first query only

    async with client.realtime.connect(
        model="gpt-realtime", extra_query={"close_after": "2", "close_code": "1011"}, on_reconnecting=on_reconnecting
    ) as conn:
        async for event in conn:
            if event.type == "session.created":
                await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                await conn.response.create()
            elif event.type == "response.done":
                done += 1
                if len(codes) == 1:
                    return codes, done

def test_reconnects(rtproxy_replay):
    replay = rtproxy_replay("cassettes/drop.jsonl")
    codes, done = asyncio.run(asyncio.wait_for(go(replay.url), 20))
    assert codes == [1011] and done == 2
"""


def test_a_drop_recorded_through_the_proxy_replays_as_the_same_drop_for_the_sdk(inner: pytest.Pytester) -> None:
    """A test whose upstream closes its first connection with 1011 (the SDK reconnects) records both
    connections, the first as closed by the upstream with 1011; replayed offline, the replay closes the first
    the same way at the same point, the SDK reconnects again and the test passes without the upstream."""
    inner.makepyfile(test_it=RECONNECTING)
    target = inner.path / "cassettes" / "drop.jsonl"
    with threaded_upstream() as up:
        args = (*QUIET, f"--rtproxy-upstream={up.url}")
        inner.runpytest(*args, "--rtproxy-record-mode=once").assert_outcomes(passed=1)
        assert len(up.connections) == 2
        first, second = (c.session for c in read_connections(target))
        assert (first["closed_by"], first["server_close_code"]) == ("upstream", 1011)
        assert "close_after=2" in first["query"] and "close_after" not in second["query"]
        inner.runpytest(*args).assert_outcomes(passed=1)
        assert len(up.connections) == 2


def test_redacting_a_file_of_several_connections_keeps_them_all(tmp_path: Path) -> None:
    """`rtproxy redact FILE -o OUT` rewrites every connection, not only the first."""
    path = two_connections(tmp_path / "two.jsonl")
    done = run("redact", str(path), "-o", str(tmp_path / "out.jsonl"), db=tmp_path / "unused.db")
    assert done.returncode == 0, done.stderr
    out = read_connections(tmp_path / "out.jsonl")
    assert [len(c.frames) for c in out] == [7, 7]
    assert [c.session["id"][-6:] for c in out] == ["aaaaaa", "bbbbbb"]


async def test_connections_are_matched_by_path_and_query_where_the_recorded_ones_differ(tmp_path: Path) -> None:
    """Recorded connections for two models: a client that opens the second model's first gets its recording."""
    path = tmp_path / "models.jsonl"
    write_connections(
        path,
        [
            (header("20261201-000000-aaaaaa", query="model=gpt-a"), turn("s1", "a")),
            (header("20261201-000001-bbbbbb", query="model=gpt-b"), turn("s2", "b")),
        ],
    )
    from openai import AsyncOpenAI

    async def ask(url: str, model: str) -> str:
        client = AsyncOpenAI(api_key=make_key(), websocket_base_url=url)
        text = ""
        async with asyncio.timeout(5), client.realtime.connect(model=model) as conn:
            await conn.session.update(session={"type": "realtime"})
            await conn.response.create()
            async for event in conn:
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type == "response.done":
                    return text
        return text

    async for server, url in served(path):
        assert [await ask(url, "gpt-b"), await ask(url, "gpt-a")] == ["b", "a"]
        await server.wait_closed(2, timeout=5)
        assert server.report.ok and [c.recorded for c in server.report.connections] == [2, 1]


async def test_replay_of_several_sessions_of_a_database(tmp_path: Path, processes: list[ReplayProcess]) -> None:
    """`rtproxy replay --session A --session B` serves the database's sessions as connections, in that order."""
    db = tmp_path / "a.db"
    imported = run("import", str(two_connections(tmp_path / "two.jsonl")), db=db)
    first, second = imported.stdout.split()
    p = spawn_replay(["--db", str(db), "--session", second, "--session", first, "--once"])
    processes.append(p)
    assert [await one_turn(p.base_url), await one_turn(p.base_url)] == ["two", "one"]
    code, out, err = await asyncio.to_thread(p.wait)
    assert code == 0, out + err
