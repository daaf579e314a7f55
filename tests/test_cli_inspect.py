"""`rtproxy show`, `export` and `import` on sessions recorded from the real openai SDK through the proxy."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import wave
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner
from openai import AsyncOpenAI

from rtproxy.cli import main, run
from rtproxy.protocols.wire import parse_event
from rtproxy.recording import HEADER_FIELDS
from rtproxy.store import Store
from tests.conftest import RunningProxy, rtproxy_exe
from tests.upstream import RATE, ScriptedUpstream, tone

MODELS = {"ga": "gpt-realtime", "beta": "gpt-4o-realtime-preview"}
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}
USER_AUDIO_MS = 1000
CUT_MS = 300


async def until_done(conn: Any, timeout: float = 10.0) -> list[Any]:
    """Events up to and including the next response.done."""
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in conn:
            events.append(event)
            if event.type == "response.done":
                break
    return events


async def record_session(proxy: RunningProxy, api_key: str, dialect: str = "ga") -> str:
    """A voice session through the proxy with the real SDK, in either dialect: a spoken question, a function
    call and its output, a spoken answer cut off by the user, then a typed follow-up answered in text."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    ga = dialect == "ga"
    connect = client.realtime.connect(model=MODELS["ga"]) if ga else client.beta.realtime.connect(model=MODELS["beta"])
    async with connect as conn:  # type: ignore[attr-defined]
        if ga:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"], "tools": [TOOL]})
        else:
            await conn.session.update(session={"modalities": ["text", "audio"], "tools": [TOOL]})
        pcm = tone(USER_AUDIO_MS)
        for i in range(0, len(pcm), 9600):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 9600]).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        call = next(e.item for e in await until_done(conn) if e.type == "response.output_item.done")
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}
        )
        await conn.response.create()
        answer = next(e.item for e in await until_done(conn) if e.type == "response.output_item.done")
        await conn.conversation.item.truncate(item_id=answer.id, content_index=0, audio_end_ms=CUT_MS)
        await conn.session.update(session={"type": "realtime", "tools": []} if ga else {"tools": []})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks!"}]}
        )
        await conn.response.create(response={"output_modalities": ["text"]} if ga else {"modalities": ["text"]})
        await until_done(conn)
    (sid,) = await proxy.settle()
    return sid


async def record_ga_session(proxy: RunningProxy, api_key: str) -> str:
    return await record_session(proxy, api_key, "ga")


def cli(*args: str, db: Path | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the installed `rtproxy` console script."""
    extra = ["--db", str(db)] if db is not None else []
    return subprocess.run(
        [*rtproxy_exe(), *args, *extra], capture_output=True, text=True, timeout=timeout, env={**os.environ}
    )


def inproc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command line in this process (same code path as the console script)."""
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def frames_of(db: Path, sid: str) -> list[tuple[str, float, Any]]:
    """(direction, t, payload) per frame; JSON events compared as objects (whitespace is not kept)."""
    with Store(db) as store:
        out = []
        for f in store.frames(sid):
            event = parse_event(f.data)
            out.append((f.direction.value, round(f.t, 6), event if event is not None else f.data))
        return out


def db_counts(db: Path) -> tuple[int, int]:
    with Store(db) as store:
        return (
            store.conn.execute("SELECT count(*) FROM sessions").fetchone()[0],
            store.conn.execute("SELECT count(*) FROM events").fetchone()[0],
        )


# --- export / import ---------------------------------------------------------------------


async def test_export_then_import_gives_back_frames_and_metadata(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path
) -> None:
    """`rtproxy export` then `rtproxy import` (real processes) restores every frame, its time and the session row."""
    sid = await record_ga_session(proxy, api_key)
    out = tmp_path / "rec.jsonl"
    done = cli("export", sid[:12], "-o", str(out), db=proxy.db)
    assert done.returncode == 0, done.stderr
    other = tmp_path / "other.db"
    done = cli("import", str(out), db=other)
    assert done.returncode == 0, done.stderr
    new_sid = done.stdout.strip()
    assert new_sid == sid  # a fresh database keeps the id
    assert frames_of(other, new_sid) == frames_of(proxy.db, sid)
    with Store(proxy.db) as a, Store(other) as b:
        before, after = a.session(sid), b.session(new_sid)
        assert a.count_events(sid) == b.count_events(new_sid) > 20
    for key in HEADER_FIELDS:
        if key in ("request_headers", "response_headers"):
            assert orjson.loads(after[key]) == orjson.loads(before[key])
        else:
            assert after[key] == before[key], key
    again = tmp_path / "again.jsonl"
    assert cli("export", new_sid, "-o", str(again), db=other).returncode == 0
    assert again.read_bytes() == out.read_bytes()
    assert api_key not in out.read_text()


async def test_export_to_stdout_and_import_twice(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-o -` writes the same JSONL to stdout; importing it into its own database gives a second, new session id."""
    sid = await record_ga_session(proxy, api_key)
    path = tmp_path / "rec.jsonl"
    assert inproc(capsys, "export", "latest", "--db", str(proxy.db), "-o", str(path))[0] == 0
    code = run(["export", "latest", "--db", str(proxy.db), "-o", "-"])
    out = capsys.readouterr().out
    assert code == 0 and out.encode() == path.read_bytes()
    code, out, err = inproc(capsys, "import", str(path), "--db", str(proxy.db))
    assert code == 0, err
    copy = out.strip()
    assert copy != sid and frames_of(proxy.db, copy) == frames_of(proxy.db, sid)


def tamper(lines: list[bytes], n: int, change: Any) -> list[bytes]:
    """Line n (1-based) of a recording, its JSON changed by `change`."""
    obj = orjson.loads(lines[n - 1])
    change(obj)
    return [*lines[: n - 1], orjson.dumps(obj), *lines[n:]]


async def test_import_refuses_a_broken_file_and_imports_nothing(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated or tampered recording is refused with its file:line in one line, exit 2, the DB unchanged."""
    await record_ga_session(proxy, api_key)
    good = tmp_path / "good.jsonl"
    assert cli("export", "latest", "-o", str(good), db=proxy.db).returncode == 0
    lines = good.read_bytes().splitlines()
    n = len(lines)

    def set_t(o: dict[str, Any]) -> None:
        o["t"] = 0.0

    cases = {
        "truncated": ([*lines[:-1], lines[-1][: len(lines[-1]) // 2]], n, "not valid JSON"),
        "bad direction": (tamper(lines, n - 3, lambda o: o.update(dir="sideways")), n - 3, '"dir"'),
        "time backwards": (tamper(lines, n - 1, set_t), n - 1, "time goes backwards"),
        "bad header": ([b'{"session": {}}', *lines[1:]], 1, "not an rtproxy recording"),
    }
    before = db_counts(proxy.db)
    for name, (content, line, reason) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '-')}.jsonl"
        bad.write_bytes(b"\n".join(content) + b"\n")
        if name == "truncated":  # one real process: the console script says the same
            done = cli("import", str(bad), db=proxy.db)
            code, out, err = done.returncode, done.stdout, done.stderr
        else:
            code, out, err = inproc(capsys, "import", str(bad), "--db", str(proxy.db))
        assert code == 2, name
        assert out == "" and err.count("\n") == 1 and "Traceback" not in err, name
        assert f"{bad}:{line}:" in err and reason in err, (name, err)
        assert db_counts(proxy.db) == before, name
    fresh = tmp_path / "fresh.db"
    code, _, err = inproc(capsys, "import", str(tmp_path / "truncated.jsonl"), "--db", str(fresh))
    assert code == 2 and not fresh.exists()


async def test_wrong_session_reference_is_one_line_with_close_matches(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown SESSION exits 2 with one line naming close matches; so do conflicting options and an
    unwritable output."""
    sid = await record_ga_session(proxy, api_key)
    wrong = sid[:-1] + ("0" if sid[-1] != "0" else "1")
    for args in (["show", wrong], ["export", wrong, "-o", "-"], ["show", wrong, "--events"]):
        code, out, err = inproc(capsys, *args, "--db", str(proxy.db))
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and f"no session {wrong!r}" in err and sid in err
    code, _, err = inproc(capsys, "export", sid, "--db", str(proxy.db))
    assert code == 2 and "exactly one of" in err
    code, _, err = inproc(capsys, "show", sid, "--events", "--json", "--db", str(proxy.db))
    assert code == 2 and err.count("\n") == 1
    nowhere = proxy.db.parent / "no-such-dir" / "x.jsonl"
    code, _, err = inproc(capsys, "export", sid, "-o", str(nowhere), "--db", str(proxy.db))
    assert code == 2 and err.count("\n") == 1 and f"cannot write {nowhere}" in err
    done = cli("show", "nope", db=proxy.db.parent / "missing.db")
    assert done.returncode == 2 and "no database" in done.stderr and done.stderr.count("\n") == 1


# --- show --events ---------------------------------------------------------------------------


async def test_show_events_collapses_runs_of_deltas(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str
) -> None:
    """`show --events` prints every non-delta event once and each run of deltas as one counted line with audio time."""
    sid = await record_ga_session(proxy, api_key)
    done = cli("show", sid, "--events", db=proxy.db)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "\x1b[" not in text  # no styling into a pipe
    with Store(proxy.db) as store:
        rows = store.event_rows(sid)
    plain = [r for r in rows if not (r["type"] or "").endswith(".delta") and r["type"] != "input_audio_buffer.append"]
    for r in plain:
        assert re.search(rf"^\s+[\d.]+\s+{r['seq']}\s+{r['direction']}\s+{re.escape(r['type'])}\b", text, re.M), r
    appends = sum(r["type"] == "input_audio_buffer.append" for r in rows)
    assert re.search(rf"{appends} × input_audio_buffer.append\s+{USER_AUDIO_MS / 1000:.1f} s of audio", text)
    audio = [r for r in rows if r["type"] == "response.output_audio.delta"]
    item = audio[0]["item_id"]
    line = rf"{len(audio)} × response.output_audio.delta\s+{item}\s+{upstream.audio_ms / 1000:.1f} s of audio"
    assert re.search(line, text)
    assert len(text.splitlines()) < len(rows)


# --- every command documents itself ------------------------------------------------------


def test_every_command_has_help_text() -> None:
    """Each `rtproxy` command has a help text and answers --help with exit 0."""
    assert main.commands
    runner = CliRunner()
    for name, command in main.commands.items():
        assert isinstance(command, click.Command)
        assert (command.help or "").strip(), name
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output and (command.help or "").split("\n")[0].strip()[:30] in result.output
    done = cli("show", "--help")
    assert done.returncode == 0 and "--events" in done.stdout and "--json" in done.stdout


# --- show -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_show_reads_as_a_conversation(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, capsys: pytest.CaptureFixture[str], dialect: str
) -> None:
    """`show` prints each turn in order with its speaker, transcript or text, the call with its arguments and
    output, audio durations (the cut one shortened), and per response its status, tokens and latency."""
    sid = await record_session(proxy, api_key, dialect)
    done = cli("show", sid, db=proxy.db)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "\x1b[" not in text
    tokens = "187 tokens (in 120: text 100, audio 20, cached 64 · out 67: text 17, audio 50)"
    expected = [
        f"Session {sid}",
        MODELS[dialect],
        dialect,
        "closed",
        "USER",
        "audio 1.0 s",
        "What's the weather in Paris?",
        "ASSISTANT",
        '→ get_weather({"location": "Paris", "unit": "celsius"})',
        "completed",
        tokens,
        "created ",
        "TOOL",
        '← get_weather: {"temp_c": 21}',
        "ASSISTANT",
        f"audio {CUT_MS / 1000:.1f} s",
        f"cut at {CUT_MS / 1000:.1f} s",
        "transcript dropped",
        "completed",
        tokens,
        "first audio ",
        f"audio {upstream.audio_ms / 1000:.1f} s made in",
        "USER",
        "Thanks!",
        "ASSISTANT",
        upstream.reply_text,
        "completed",
        tokens,
        "first delta ",
        "6 items · 3 responses · 561 tokens",
    ]
    at = 0
    for piece in expected:
        found = text.find(piece, at)
        assert found >= 0, f"{piece!r} not found after {text[at : at + 200]!r}"
        at = found + len(piece)
    assert re.findall(r"created (\d+) ms", text) and len(re.findall(r"done \d+ ms", text)) == 3
    code, out, err = inproc(capsys, "show", sid, "--db", str(proxy.db))
    assert code == 0 and out == text


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_show_json_has_the_model_for_programs(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, capsys: pytest.CaptureFixture[str], dialect: str
) -> None:
    """`show --json` prints the session row, items (text, transcript, audio_ms, call fields) and responses."""
    sid = await record_session(proxy, api_key, dialect)
    code, out, err = inproc(capsys, "show", sid[:10], "--json", "--db", str(proxy.db))
    assert code == 0, err
    model = orjson.loads(out)
    session = model["session"]
    assert session["id"] == sid and session["model"] == MODELS[dialect]
    assert session["dialect"] == dialect and session["status"] == "closed"
    items = model["items"]
    keys = {"id", "type", "role", "status", "text", "transcript", "audio_ms"}
    assert all(keys <= set(item) for item in items)
    assert [i["type"] for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
        "message",
    ]
    user, call, output, spoken, typed, answer = items
    assert user["role"] == "user" and user["transcript"] == "What's the weather in Paris?"
    assert user["audio_ms"] == pytest.approx(USER_AUDIO_MS)
    assert call["name"] == "get_weather" and json_args(call["arguments"]) == {"location": "Paris", "unit": "celsius"}
    assert call["call_id"] == output["call_id"] and call["output"] == output["output"] == '{"temp_c": 21}'
    assert spoken["role"] == "assistant" and spoken["audio_ms"] == pytest.approx(CUT_MS) and spoken["transcript"] == ""
    assert typed["text"] == "Thanks!" and answer["text"] == upstream.reply_text
    responses = model["responses"]
    assert len(responses) == 3 and all(r["status"] == "completed" for r in responses)
    assert all(r["usage"]["total_tokens"] == 187 for r in responses)
    for r in responses:
        latency = r["latency_ms"]
        assert latency["created"] is not None and 0 <= latency["created"] <= latency["done"]
    assert responses[1]["latency_ms"]["first_audio"] is not None


def json_args(arguments: str) -> Any:
    return orjson.loads(arguments)


# --- export --audio ------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getframerate(), w.readframes(w.getnframes())


def channel(stereo: bytes, which: int) -> bytes:
    """One channel of interleaved 16-bit stereo."""
    return b"".join(stereo[i : i + 2] for i in range(which * 2, len(stereo), 4))


async def test_export_audio_writes_items_and_a_stereo_conversation(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path
) -> None:
    """`export --audio` writes a WAV per item with audio, sorted in conversation order, holding exactly what was
    heard (the cut answer cut), and conversation.wav with the user on the left and the assistant on the right."""
    sid = await record_ga_session(proxy, api_key)
    out = tmp_path / "audio"
    done = cli("export", sid, "--audio", str(out), db=proxy.db)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names[-1] == "conversation.wav"
    user_wav, bot_wav = names[:-1]
    assert re.fullmatch(r"001-user-item_\w+\.wav", user_wav) and re.fullmatch(r"004-assistant-item_\w+\.wav", bot_wav)
    said = tone(USER_AUDIO_MS)
    heard = tone(upstream.audio_ms, 330.0)[: RATE * 2 * CUT_MS // 1000]
    assert read_wav(out / user_wav) == (1, RATE, said)
    assert read_wav(out / bot_wav) == (1, RATE, heard)
    channels, rate, mix = read_wav(out / "conversation.wav")
    assert (channels, rate) == (2, RATE)
    left, right = channel(mix, 0), channel(mix, 1)
    assert said in left and heard in right
    assert left.replace(said, b"").strip(b"\0") == b""  # nothing but the user on the left
    assert right.replace(heard, b"").strip(b"\0") == b""  # nothing but the answer on the right
    assert right.index(heard) > left.index(said)
