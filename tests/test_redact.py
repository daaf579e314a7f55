"""Content redaction: the pure rules (rtproxy.redact) and `rtproxy redact` on files and stored sessions."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI

from rtproxy.protocols.formats import decode_b64
from rtproxy.protocols.wire import CLIENT, SERVER, Direction, Frame
from rtproxy.recording import read_recording, write_recording
from rtproxy.redact import JsonMask, Redactor, mask_text, redact_frames
from rtproxy.store import Store
from tests.conftest import RunningProxy, rtproxy_exe
from tests.upstream import ScriptedUpstream, tone

SECRET_WORDS = ("pirate", "Paris", "sunny", "forecasts", "Hello", "help")


def frames_of(*events: tuple[Direction, dict[str, Any] | str | bytes]) -> list[Frame]:
    out = []
    for seq, (direction, ev) in enumerate(events):
        data = orjson.dumps(ev).decode() if isinstance(ev, dict) else ev
        out.append(Frame(seq, seq * 0.01, direction, data))
    return out


def ev(frame: Frame) -> dict[str, Any]:
    value = orjson.loads(frame.data)
    assert isinstance(value, dict)
    return value


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=60)


# --- the pure rules --------------------------------------------------------------------------


def test_words_become_same_length_placeholders_and_ids_stay() -> None:
    """Instructions, input text, transcripts and text deltas are masked to the same length; ids and types stay."""
    frames = frames_of(
        (CLIENT, {"type": "session.update", "event_id": "evt_1", "session": {"instructions": "Talk like a pirate."}}),
        (
            CLIENT,
            {
                "type": "conversation.item.create",
                "item": {
                    "id": "item_u1",
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hi, Bob!"}],
                },
            },
        ),
        (
            SERVER,
            {
                "type": "response.output_audio_transcript.delta",
                "event_id": "ev_9",
                "response_id": "resp_1",
                "item_id": "item_a1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Ahoy 42",
            },
        ),
        (SERVER, {"type": "response.output_audio_transcript.done", "item_id": "item_a1", "transcript": "Ahoy 42"}),
        (
            SERVER,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_u2",
                "transcript": "Où est Paris?",
            },
        ),
        (CLIENT, {"type": "response.create", "response": {"instructions": "Be brief."}}),
    )
    out = list(redact_frames(frames))
    assert [f.seq for f in out] == [f.seq for f in frames] and [f.t for f in out] == [f.t for f in frames]
    assert ev(out[0]) == {
        "type": "session.update",
        "event_id": "evt_1",
        "session": {"instructions": "xxxx xxxx x xxxxxx."},
    }
    assert ev(out[1])["item"]["content"][0] == {"type": "input_text", "text": "xx, xxx!"}
    assert ev(out[1])["item"]["id"] == "item_u1"
    delta = ev(out[2])
    assert delta["delta"] == "xxxx xx" and delta["event_id"] == "ev_9" and delta["response_id"] == "resp_1"
    assert ev(out[3])["transcript"] == "xxxx xx"
    assert ev(out[4])["transcript"] == "xx xxx xxxxx?"
    assert ev(out[5])["response"]["instructions"] == "xx xxxxx."


@pytest.mark.parametrize(
    ("session", "byte"),
    [
        (
            {
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}},
                },
            },
            0x00,
        ),
        ({"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}, 0xFF),
        (
            {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcma"}}, "output": {"format": {"type": "audio/pcma"}}},
            },
            0xD5,
        ),
    ],
)
def test_audio_becomes_silence_of_the_same_length_in_the_session_format(session: dict[str, Any], byte: int) -> None:
    """Appends, deltas and audio content parts become silence of exactly the decoded length, in the session's format."""
    up, down, part = os.urandom(4801), os.urandom(960), os.urandom(333)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    frames = frames_of(
        (SERVER, {"type": "session.updated", "session": session}),
        (CLIENT, {"type": "input_audio_buffer.append", "audio": b64(up)}),
        (SERVER, {"type": "response.output_audio.delta", "item_id": "i1", "delta": b64(down)}),
        (SERVER, {"type": "response.audio.delta", "item_id": "i1", "delta": b64(down)}),
        (
            CLIENT,
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": b64(part)}]},
            },
        ),
    )
    r = Redactor()
    out = [r.feed_frame(f) for f in frames]
    got = [
        decode_b64(ev(out[1])["audio"]),
        decode_b64(ev(out[2])["delta"]),
        decode_b64(ev(out[3])["delta"]),
        decode_b64(ev(out[4])["item"]["content"][0]["audio"]),
    ]
    assert [len(g) for g in got] == [len(up), len(down), len(down), len(part)]
    assert all(set(g) == {byte} for g in got)
    assert r.summary.audio_chunks == 4 and r.summary.changed == 4


def test_non_event_frames_are_masked_and_binary_zeroed() -> None:
    """A non-JSON text frame is masked as text, JSON that is not an object too, a binary frame becomes zeros."""
    frames = frames_of((CLIENT, "secret plan 9"), (CLIENT, '["call", "Bob"]'), (SERVER, b"\x01\x02voice\xff"))
    out = list(redact_frames(frames))
    assert out[0].data == "xxxxxx xxxx x"
    assert out[1].data == '["xxxx", "xxx"]'
    assert out[2].data == bytes(len(b"\x01\x02voice\xff"))


def test_redacting_twice_changes_nothing_more() -> None:
    """Redaction is idempotent: a redacted recording redacts to itself with no change counted."""
    frames = frames_of(
        (CLIENT, {"type": "session.update", "session": {"instructions": "secret"}}),
        (CLIENT, {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x05" * 100).decode()}),
        (SERVER, {"type": "response.function_call_arguments.done", "item_id": "i", "arguments": '{"a": "b", "n": 5}'}),
    )
    once = list(redact_frames(frames))
    again = Redactor()
    assert [again.feed_frame(f) for f in once] == once
    assert again.summary.changed == 0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def _shape(value: Any) -> Any:
    """The structure of a JSON value: keys kept, leaves reduced to their kind."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__ if not isinstance(value, int | float) or isinstance(value, bool) else "number"


@settings(max_examples=60, deadline=None)
@given(value=json_values, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_streamed_arguments_mask_like_the_whole_and_stay_valid_json(value: Any, cuts: list[int]) -> None:
    """Function arguments masked in any delta split join into the masked whole, valid JSON with the same keys."""
    text = orjson.dumps(value).decode()
    whole = JsonMask().feed(text)
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    mask = JsonMask()
    assert "".join(mask.feed(p) for p in pieces) == whole
    assert len(whole) == len(text)
    assert _shape(orjson.loads(whole)) == _shape(value)


def test_mask_text_keeps_length_and_punctuation() -> None:
    """Text masking keeps every non-alphanumeric character and the length in characters."""
    assert mask_text("It's 3 p.m. — déjà vu!") == "xx'x x x.x. — xxxx xx!"


# --- on real recordings ------------------------------------------------------------------------


async def record_tool_and_audio_session(proxy: RunningProxy, api_key: str) -> str:
    """A GA session through the proxy: instructions, audio up, a function call and its output, audio down."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Looks up forecasts",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Talk like a pirate.",
                "tools": [tool],
                "output_modalities": ["audio"],
            }
        )
        pcm = tone(300)
        for i in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        call_id = None
        async for event in conn:
            if event.type == "response.function_call_arguments.done":
                call_id = event.call_id
            if event.type == "response.done":
                break
        assert call_id is not None
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call_id, "output": '{"sky": "sunny", "celsius": 21}'}
        )
        await conn.response.create()
        async for event in conn:
            if event.type == "response.done":
                break
    (sid,) = await proxy.settle()
    return sid


def assert_same_shape(before: list[Frame], after: list[Frame]) -> None:
    """Same frames, seqs, times, directions, types and ids; audio of the same decoded length."""
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert (a.seq, a.t, a.direction) == (b.seq, b.t, b.direction)
        ea, eb = ev(a), ev(b)
        assert list(ea) == list(eb)
        for key in ("type", "event_id", "item_id", "response_id", "call_id"):
            assert ea.get(key) == eb.get(key)
        for key in ("audio", "delta"):
            if ea.get("type", "").endswith(("append", "audio.delta")):
                assert len(decode_b64(ea.get(key))) == len(decode_b64(eb.get(key)))


def assert_no_words(blob: bytes) -> None:
    for word in SECRET_WORDS:
        assert word.encode() not in blob, word


async def test_redact_file_in_place_keeps_shape_imports_and_replays(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path
) -> None:
    """`rtproxy redact FILE` rewrites the file in place: no words left, same shape, still imports and replays."""
    from rtproxy.replay.player import Player
    from rtproxy.replay.script import build_script

    sid = await record_tool_and_audio_session(proxy, api_key)
    path = tmp_path / "call.jsonl"
    with Store(proxy.db) as store:
        write_recording(path, store.session(sid), store.frames(sid))
    before = read_recording(path)
    assert b"pirate" in path.read_bytes() and b"Paris" in path.read_bytes()

    r = await asyncio.to_thread(run, "redact", str(path))
    assert r.returncode == 0, r.stderr
    assert f"redacted {path} in place" in r.stdout and "audio chunks" in r.stdout
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left behind
    assert_no_words(path.read_bytes())
    after = read_recording(path)
    assert_same_shape(before.frames, after.frames)
    args = [ev(f)["arguments"] for f in after.frames if '"response.function_call_arguments.done"' in str(f.data)]
    assert orjson.loads(args[0]).keys() == {"location", "unit"}

    r = await asyncio.to_thread(run, "import", str(path), "--db", str(tmp_path / "fixtures.db"))
    assert r.returncode == 0, r.stderr
    with Store(tmp_path / "fixtures.db") as store:
        assert [f.data for f in store.frames(r.stdout.strip())] == [f.data for f in after.frames]

    # the original client, replayed against the redacted recording, meets no mismatch
    player = Player(build_script(after.frames, session=after.session), "ordered")
    sent = len(player.start())
    for f in before.frames:
        if f.direction is CLIENT:
            sent += len(player.receive(f.data, f.t))
    player.close(after.frames[-1].t, 1000)
    assert player.report.ok, player.report.mismatches
    assert sent == sum(f.direction is SERVER for f in after.frames)

    # and the real `rtproxy replay` serves it to the original client's frames without a mismatch
    from tests.test_replay_server import spawn_replay

    replay = spawn_replay([str(path), "--once"])
    try:
        received = 0
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{replay.base_url}/realtime?model=gpt-realtime", max_msg_size=0)
            for f in before.frames:
                if f.direction is CLIENT:
                    await ws.send_str(f.data)  # type: ignore[arg-type]
            while received < sent:
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                received += 1
            await ws.close()
        code, out, err = await asyncio.to_thread(replay.wait)
    finally:
        if replay.proc.poll() is None:
            replay.proc.kill()
            replay.proc.communicate()
    assert code == 0 and "no mismatch" in out, out + err


async def test_redact_file_to_output_leaves_the_original(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path
) -> None:
    """`rtproxy redact FILE -o OUT` writes the redacted copy and leaves FILE byte for byte as it was."""
    sid = await record_tool_and_audio_session(proxy, api_key)
    path, out = tmp_path / "call.jsonl", tmp_path / "safe.jsonl"
    with Store(proxy.db) as store:
        write_recording(path, store.session(sid), store.frames(sid))
    original = path.read_bytes()
    r = await asyncio.to_thread(run, "redact", str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert path.read_bytes() == original
    assert_no_words(out.read_bytes())
    assert_same_shape(read_recording(path).frames, read_recording(out).frames)


async def test_redact_session_in_the_database_leaves_no_trace(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path
) -> None:
    """`rtproxy redact SESSION --db` rewrites that session's frames; the words leave the database files too."""
    sid = await record_tool_and_audio_session(proxy, api_key)
    with Store(proxy.db) as store:
        before = list(store.frames(sid))
    r = await asyncio.to_thread(run, "redact", sid[:12], "--db", str(proxy.db))
    assert r.returncode == 0, r.stderr
    assert f"redacted session {sid} in {proxy.db}" in r.stdout
    with Store(proxy.db) as store:
        after = list(store.frames(sid))
        rows = store.event_rows(sid)
    assert_same_shape(before, after)
    assert [row["type"] for row in rows] == [ev(f)["type"] for f in before]
    blob = b"".join(p.read_bytes() for p in proxy.db.parent.glob("rt.db*"))
    assert_no_words(blob)


async def test_redact_session_to_a_file_leaves_the_database(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str, tmp_path: Path
) -> None:
    """`rtproxy redact SESSION -o OUT` writes a redacted recording and does not touch the stored session."""
    sid = await record_tool_and_audio_session(proxy, api_key)
    out = tmp_path / "shared.jsonl"
    r = await asyncio.to_thread(run, "redact", "latest", "--db", str(proxy.db), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert_no_words(out.read_bytes())
    with Store(proxy.db) as store:
        assert any("pirate" in str(f.data) for f in store.frames(sid))


async def test_redact_refuses_a_session_still_being_recorded(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str
) -> None:
    """A session the proxy is still recording is not rewritten under it: one line, exit 2, frames untouched."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "Talk like a pirate."})
        async for event in conn:
            if event.type == "session.updated":
                break
        await asyncio.to_thread(proxy.recorder.flush)
        with Store(proxy.db) as store:
            sid = store.resolve("latest")
            before = [f.data for f in store.frames(sid)]
        r = await asyncio.to_thread(run, "redact", sid, "--db", str(proxy.db))
    assert r.returncode == 2 and "still being recorded" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    await proxy.settle()
    with Store(proxy.db) as store:
        assert [f.data for f in store.frames(sid)][: len(before)] == before


def test_redact_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    """A tampered file is refused naming its line and left untouched; an unknown session or file is one line, exit 2."""
    path = tmp_path / "bad.jsonl"
    good = orjson.dumps({"t": 0.0, "dir": "client", "event": {"type": "session.update"}}).decode()
    text = '{"rtproxy": 1, "session": {}}\n' + good + "\n" + '{"t": 0.1, "dir": "sideways", "text": "x"}\n'
    path.write_text(text)
    db = tmp_path / "rt.db"
    sqlite3.connect(db).close()
    Store(db, create=True).close()
    for args, words in (
        ((str(path),), f"{path}:3"),
        ((str(tmp_path / "missing.jsonl"),), "no such file"),
        (("nosuchsession", "--db", str(db)), "no session 'nosuchsession'"),
    ):
        r = run("redact", *args)
        assert r.returncode == 2, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "rt.db"]


def test_a_gpt_live_session_is_redacted_and_still_reads() -> None:
    """recordings/live-voice-delegation.jsonl (made by the real SDK): transcripts of both speakers, appended
    instructions, the delegation's nested Responses text and arguments, the client's tool output and the audio
    of both directions are masked or silenced, same lengths; ids, types and timing stay, and the Live reducer
    rebuilds the same turns and delegation from the result."""
    import base64

    from rtproxy.conversation.live import assemble_live
    from rtproxy.recording import read_recording

    rec = read_recording(Path(__file__).resolve().parent.parent / "recordings" / "live-voice-delegation.jsonl")
    redactor = Redactor()
    out = list(redact_frames(rec.frames, redactor))
    text = "\n".join(f.data for f in out if isinstance(f.data, str))
    for word in ("Paris", "weather in", "18 degrees", '"unit": "celsius"', "celsius"):
        assert word not in text
    for before, after in zip(rec.frames, out, strict=True):
        eb, ea = before.event, after.event
        assert (before.seq, before.t, before.direction) == (after.seq, after.t, after.direction)
        assert eb is not None and ea is not None and eb.get("type") == ea.get("type")
        assert eb.get("event_id") == ea.get("event_id")
        for key in ("audio", "delta"):
            if eb["type"] in ("session.input_audio.append", "session.output_audio.delta") and key in eb:
                raw = base64.b64decode(ea[key])
                assert len(raw) == len(base64.b64decode(eb[key])) and not any(raw)
    a, b = assemble_live(rec.frames, rec.session), assemble_live(out, rec.session)
    assert [t.speaker for t in a.turns] == [t.speaker for t in b.turns]
    assert [len(t.text or "") for t in a.turns] == [len(t.text or "") for t in b.turns]
    assert len(a.delegations) == len(b.delegations) == 1
    assert redactor.summary.audio_chunks > 0 and redactor.summary.changed > 0
