"""`rtproxy show` / `show --events` / `show --json` / `export --audio` of a GPT-Live session, as a real subprocess
on a real SQLite database made by `rtproxy import` of a JSONL recording (events validated by the SDK's models)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import wave
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

import rtproxy
from rtproxy.conversation.live import assemble_live
from rtproxy.protocols.wire import CLIENT, SERVER, Frame
from rtproxy.recording import write_recording
from tests.conftest import rtproxy_exe
from tests.test_live_reducer import _SERVER, LiveScript, b64, responses_delegation, tone, voice_turn

ROOT = str(Path(rtproxy.__file__).resolve().parent.parent)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=120, env=env)


def imported(tmp_path: Path, frames: list[Frame], variant: str = "primary") -> tuple[str, str]:
    """A JSONL recording of the frames imported into a fresh database: (db path, session id)."""
    session = {
        "id": "20261201-live-1",
        "api": "live",
        "variant": variant,
        "path": "/v1/live/sessions",
        "model": "gpt-live-1",
        "status": "closed",
        "started_at": "2026-12-01T10:00:00+00:00",
    }
    jsonl = tmp_path / "live.jsonl"
    write_recording(jsonl, session, frames)
    db = str(tmp_path / "live.db")
    proc = run("import", str(jsonl), "--db", db)
    assert proc.returncode == 0, proc.stderr
    return db, proc.stdout.strip()


def scenario() -> list[Frame]:
    s = LiveScript()
    responses_delegation(s)
    s.at(3.5).said("assistant", ["Anything ", "else ", "for ", "you"], 4200, 500)  # 4.2-6.2 s
    s.said("user", ["No, ", "that's ", "all ", "thanks"], 5500, 400)  # 5.5-7.1 s: barges in
    s.at(5.9).client("session.instructions.append", content="Keep it short.", delegation_id=None, event_id="c_i")
    s.server("session.instructions.appended", start_ms=5900, end_ms=5900, client_event_id="c_i")
    s.at(6.0).server("session.usage.updated", usage={"seconds": 6, "active_seconds": 6, "paused_seconds": 0})
    s.client("session.update", session={"triggers": []}, event_id="c_bad")
    s.server(
        "error",
        error={
            "code": "unknown_parameter",
            "message": "nope",
            "type": "invalid_request_error",
            "client_event_id": "c_bad",
        },
    )
    s.at(7.0).client("session.close", event_id="c_close")
    s.server(
        "session.closed",
        reason="close_requested",
        client_event_id="c_close",
        session={"id": "sess_1", "expires_at": 1_900_000_000, "model": "gpt-live-1", "status": "active"},
        usage={"seconds": 7, "active_seconds": 7, "paused_seconds": 0},
    )
    return s.frames


def test_show_prints_turns_delegations_usage_latency(tmp_path: Path) -> None:
    """`show` of a Live session prints its turns on the timeline with transcripts, the barge-in, the delegation
    with what was asked, the function call and its result, what came back and how long it took, billed seconds,
    latency, the error and the close; no raw-events note."""
    db, sid = imported(tmp_path, scenario())
    proc = run("show", sid, "--db", db)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "live/primary" in out and "does not rebuild" not in out
    assert "USER #1" in out and "Weather in Oslo?" in out
    assert "ASSISTANT #2" in out and "It's 4 degrees." in out and "latency 1300 ms" in out
    assert "DELEGATION del_1 → responses" in out and "took 1.1 s" in out and "first result 300 ms" in out
    assert "asked: 'Weather in Oslo?'" in out
    assert '→ get_weather({"city":"Oslo"})' in out and '← {"temp_c": 4}' in out and "returned: 4 degrees" in out
    assert "150 tokens (in 120 (cached 100) · out 30 (reasoning 10))" in out
    assert "barge-in with turn" in out and "interrupted" in out
    assert "billed 7.0 s (active 7.0 s, paused 0.0 s)" in out
    assert "user → assistant median 1300 ms" in out and "first delegated result median 300 ms" in out
    assert "unknown_parameter: nope" in out and "← session.update" in out
    assert "closed: close_requested" in out
    assert "INSTRUCTIONS" in out and "Keep it short." in out
    assert "anomal" not in out


def test_show_json_turns_delegations_usage_latency(tmp_path: Path) -> None:
    """`show --json` of a Live session: rebuilt, turns, delegations (tools with results), usage, latency."""
    db, sid = imported(tmp_path, scenario())
    proc = run("show", sid, "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    model = orjson.loads(proc.stdout)
    assert model["rebuilt"] is True and model["api"] == "live" and model["model"] == "gpt-live-1"
    assert model["session"]["id"] == sid and model["session"]["variant"] == "primary"
    assert [t["speaker"] for t in model["turns"]] == ["user", "assistant", "assistant", "user"]
    assert model["turns"][1]["latency_ms"] == 1300
    assert model["turns"][2]["interrupted"] is True
    assert model["turns"][3]["overlaps"][0]["kind"] == "barge_in"
    (d,) = model["delegations"]
    assert d["target"] == "responses" and d["duration_ms"] == 1100.0 and d["returned"] == "4 degrees"
    assert d["tools"][0]["name"] == "get_weather" and d["tools"][0]["result"] == '{"temp_c": 4}'
    assert model["usage"] == {"seconds": 7.0, "active_seconds": 7.0, "paused_seconds": 0.0}
    assert model["latency"]["turns_ms"] == [1300] and model["latency"]["first_result_ms"] == [300.0]
    assert model["errors"][0]["client_type"] == "session.update"
    assert model["anomalies"] == []


def test_show_events_knows_live_types(tmp_path: Path) -> None:
    """`show --events` of a Live session lists its events with Live's catalogue (none marked unknown), audio runs
    collapsed with their duration, the nested Responses deltas collapsed per delegation."""
    db, sid = imported(tmp_path, scenario())
    proc = run("show", sid, "--db", db, "--events")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "(unknown type)" not in out
    assert "15 × session.input_audio.append" in out and "1.5 s of audio" in out
    assert "session.delegation.created" in out and "del_1" in out and "offset_ms=1250" in out
    assert "2 × response.event response.function_call_arguments.delta  del_1" in out


def test_show_of_a_garbage_live_session(tmp_path: Path) -> None:
    """A Live session with nothing but garbage still shows (anomalies listed), never a traceback."""
    frames = [Frame(0, 0.0, CLIENT, '{"type": "session.bogus"}'), Frame(1, 0.1, SERVER, '{"type": "error"}')]
    db, sid = imported(tmp_path, frames)
    proc = run("show", sid, "--db", db)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "unknown event types: session.bogus ×1" in proc.stdout


def test_export_audio_per_turn_and_stereo_overlap(tmp_path: Path) -> None:
    """`export --audio` of a Live session writes one WAV per turn with audio and a stereo conversation.wav in
    which the user's and the assistant's speech sit where they were spoken (overlapping in a barge-in)."""
    s = LiveScript()
    voice_turn(s)  # user 0-1.2 s (mic 2 s), assistant 1.5-2.7 s (1.2 s of audio)
    db, sid = imported(tmp_path, s.frames)
    out_dir = tmp_path / "wav"
    proc = run("export", sid, "--db", db, "--audio", str(out_dir))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["001-user.wav", "002-assistant.wav", "conversation.wav"]
    with wave.open(str(out_dir / "conversation.wav")) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 24000
        frames = w.getnframes()
        data = w.readframes(frames)
    assert frames == 24000 * 27 // 10  # ends with the assistant at 2.7 s
    left = [int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data), 4)]
    right = [int.from_bytes(data[i + 2 : i + 4], "little", signed=True) for i in range(0, len(data), 4)]
    at = 24000 // 1000
    assert any(left[: 1200 * at]) and not any(left[1200 * at :])
    assert not any(right[: 1500 * at]) and any(right[1500 * at :])
    live = assemble_live(s.frames)
    assert live.turns[0].audio_ms == 1200


@pytest.mark.parametrize("variant", ["sideband"])
def test_show_of_a_sideband_session(tmp_path: Path, variant: str) -> None:
    """A sideband session (reflected audio with timestamps) shows its turns too."""
    s = LiveScript(sideband=True)
    s.server(
        "session.started",
        session={"id": "sess_1", "expires_at": 1_900_000_000, "model": "gpt-live-1", "status": "active"},
    )
    s.at(1.0).said("user", ["Hello ", "there"], 0, 400)
    s.server("session.input_audio.append", audio="AAAA" * 100)
    db, sid = imported(tmp_path, s.frames, variant)
    proc = run("show", sid, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert "live/sideband" in proc.stdout and "Hello there" in proc.stdout


async def test_tui_shows_live_turns_delegations_and_latency(tmp_path: Path) -> None:
    """The TUI's Conversation tab shows a Live session's turns (transcripts, audio) and its delegation (asked, the
    function call with its result, what came back); the Timeline tab a latency bar per answer and delegation."""
    from textual.widgets import Static

    from rtproxy.tui.app import make_app
    from rtproxy.tui.widgets.conversation import ConversationList
    from tests.test_tui import SIZE, lines_of, opened

    db, sid = imported(tmp_path, scenario())
    app = make_app(db, sid)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        text = "\n".join(lines_of(screen.query_one(ConversationList)))
        await pilot.press("3")
        body = str(app.screen.query_one("#timeline-body", Static).render())
    assert "Weather in Oslo?" in text and "It's 4 degrees." in text and "No, that's all thanks" in text
    assert "delegation" in text and "→ responses: get_weather" in text
    assert '"asked": "Weather in Oslo?",' in text and "4 degrees" in text
    assert "♪ 1.5 s" not in text and "♪ 1.2 s" in text  # the user turn's slice of the microphone stream
    assert "interrupted" in text and "instructions: Keep it short." in text
    assert "turn-2 answer" in text and "first audio 1.3 s" in text
    order = [text.index(s) for s in ("Weather in Oslo?", "→ responses", "It's 4 degrees.", "No, that's all")]
    assert order == sorted(order)
    assert "end of user speech" in body and "delegation" in body and "━" in body


# --- end to end: the openai SDK's Live client, through the real proxy, to a scripted Live server ------


class LiveUpstream:
    """A scripted GPT-Live server on 127.0.0.1 port 0: it answers the SDK's commands with the events a Live
    session sends (each validated by the SDK's ServerEvent union), one voice turn and a client delegation."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.n = 0

    def event(self, kind: str, **fields: Any) -> str:
        self.n += 1
        ev = {"type": kind, **fields}
        if kind != "session.output_audio.delta":
            ev.setdefault("event_id", f"up_{self.n}")
        _SERVER.validate_python(ev)
        return orjson.dumps(ev).decode()

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        appended = 0
        resource = {"id": "sess_up", "expires_at": 1_900_000_000, "model": "gpt-live-1", "status": "active"}
        async for msg in ws:
            ev = orjson.loads(msg.data)
            kind = ev.get("type")
            if kind == "session.start":
                await ws.send_str(self.event("session.started", session=resource, client_event_id=ev.get("event_id")))
            elif kind == "session.input_audio.append":
                appended += 1
                if appended == 10:  # a second of speech heard: transcript, delegation, an answer
                    for i, word in enumerate(["Call ", "my ", "bank"]):
                        await ws.send_str(
                            self.event(
                                "session.input_transcript.delta", delta=word, start_ms=i * 300, end_ms=(i + 1) * 300
                            )
                        )
                    await ws.send_str(
                        self.event(
                            "session.delegation.created",
                            offset_ms=950,
                            delegation={"id": "del_up", "target": "client", "type": "delegation"},
                        )
                    )
            elif kind == "session.commentary.append":
                await ws.send_str(
                    self.event(
                        "session.commentary.appended", start_ms=1000, end_ms=1000, client_event_id=ev.get("event_id")
                    )
                )
                for _ in range(5):
                    await ws.send_str(self.event("session.output_audio.delta", delta=b64(tone(100))))
                for i, word in enumerate(["Calling ", "now."]):
                    await ws.send_str(
                        self.event(
                            "session.output_transcript.delta",
                            delta=word,
                            start_ms=1200 + i * 250,
                            end_ms=1450 + i * 250,
                        )
                    )
                await ws.send_str(self.event("session.usage.updated", usage={"seconds": 2, "active_seconds": 2}))
            elif kind == "session.close":
                await ws.send_str(
                    self.event(
                        "session.closed",
                        reason="close_requested",
                        session=resource,
                        usage={"seconds": 2},
                        client_event_id=ev.get("event_id"),
                    )
                )
                await ws.close()
        return ws

    async def __aenter__(self) -> LiveUpstream:
        app = web.Application()
        app.router.add_get("/v1/live/sessions", self.handler)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_sdk_live_session_through_the_proxy_is_shown_as_a_conversation(tmp_path: Path) -> None:
    """A GPT-Live session driven by the openai SDK's client.live.connect(), recorded through the real proxy from
    a scripted Live server, shows as its turns and client delegation (with the SDK-sent reply) in `rtproxy show`."""
    from openai import AsyncOpenAI

    from tests.conftest import make_key, start_proxy

    async with LiveUpstream() as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            client = AsyncOpenAI(api_key=make_key(), websocket_base_url=running.ws_base)
            async with asyncio.timeout(30), client.live.connect(max_retries=0) as conn:
                await conn.send({"type": "session.start", "event_id": "c_start", "session": {"model": "gpt-live-1"}})
                chunk = b64(tone(100))
                for _ in range(10):
                    await conn.send({"type": "session.input_audio.append", "audio": chunk})
                async for event in conn:
                    if event.type == "session.delegation.created":
                        await conn.send(
                            {
                                "type": "session.commentary.append",
                                "content": "Dialling the bank.",
                                "delegation_id": event.delegation.id,
                                "event_id": "c_reply",
                            }
                        )
                    elif event.type == "session.usage.updated":
                        await conn.send({"type": "session.close", "event_id": "c_close"})
                    elif event.type == "session.closed":
                        break
            (sid,) = await running.settle(1)
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()
    proc = await asyncio.to_thread(run, "show", sid, "--db", str(running.db))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "live/primary" in out and "gpt-live-1" in out
    assert "USER #1" in out and "Call my bank" in out and "ASSISTANT #2" in out and "Calling now." in out
    assert "DELEGATION del_up → client  (answered" in out and "← commentary: Dialling the bank." in out
    assert "latency 300 ms" in out and "billed 2.0 s" in out and "closed: close_requested" in out
    model = orjson.loads((await asyncio.to_thread(run, "show", sid, "--db", str(running.db), "--json")).stdout)
    assert model["audio"]["input_ms"] == 1000 and model["audio"]["output_ms"] == 500
    assert model["turns"][0]["audio_ms"] == 900 and model["turns"][0]["audio_bytes"] == 900 * 48
    assert model["audio"]["input_bytes"] == 1000 * 48 and model["anomalies"] == []


async def test_tui_jumps_between_live_turns_and_their_events(tmp_path: Path) -> None:
    """Enter on a Live turn shows the events with the cursor on its first (no id filter: Live events name no item);
    `o` on an event inside a delegation jumps back to the delegation."""
    from textual.widgets import TabbedContent

    from rtproxy.tui.app import make_app
    from rtproxy.tui.widgets.conversation import ConversationList
    from rtproxy.tui.widgets.event_list import EventList
    from tests.test_tui import SIZE, opened, wait_until

    db, sid = imported(tmp_path, scenario())
    app = make_app(db, sid)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        tabs = screen.query_one(TabbedContent)
        conv = screen.query_one(ConversationList)
        events = screen.query_one(EventList)
        assert conv.move_to_item("turn-2")
        await pilot.press("enter")
        await wait_until(pilot, lambda: tabs.active == "events", what="events of the turn")
        turn = screen.conversation.by_id["turn-2"]
        assert events.view.filter.is_empty
        starts = events.view.starts  # the cursor is on the row (or collapsed run) holding the turn's first event
        here, after = starts[events.cursor], starts[events.cursor + 1]
        assert screen.index.rows[here][0] <= turn.first_seq < screen.index.rows[after][0]
        delegation = screen.conversation.by_id["del_1"]
        events.move_to_seq(delegation.first_seq + 3)
        await pilot.press("o")
        await wait_until(pilot, lambda: tabs.active == "conversation", what="to the delegation")
        assert conv.cursor_item is not None and conv.cursor_item.id == "del_1"


RECORDINGS = Path(__file__).resolve().parent.parent / "recordings"


def test_show_of_the_sdk_made_live_recordings(tmp_path: Path) -> None:
    """The example Live recordings (made with the openai SDK through the proxy, recordings/live-*.jsonl) show as
    conversations: the barge-in cuts the story (the assistant turn interrupted, the user's question a barge-in),
    the delegation calls get_weather with the client's result and the answer is spoken."""
    db = str(tmp_path / "examples.db")
    ids = {}
    for name in ("live-barge-in", "live-voice-delegation"):
        proc = run("import", str(RECORDINGS / f"{name}.jsonl"), "--db", db)
        assert proc.returncode == 0, proc.stderr
        ids[name] = proc.stdout.strip()
    barge = orjson.loads(run("show", ids["live-barge-in"], "--db", db, "--json").stdout)
    turns = [(t["speaker"], t["text"], t["interrupted"]) for t in barge["turns"]]
    assert turns == [
        ("user", "Tell me a story", False),
        ("assistant", "Once upon a time a ", True),
        ("user", "Stop, what time is it?", False),
        ("assistant", "It is noon.", False),
    ]
    assert barge["turns"][2]["overlaps"][0]["kind"] == "barge_in" and barge["latency"]["turns_ms"] == [200, 200]
    assert barge["anomalies"] == [] and barge["unknown_types"] == {}
    weather = orjson.loads(run("show", ids["live-voice-delegation"], "--db", db, "--json").stdout)
    (d,) = weather["delegations"]
    assert d["target"] == "responses" and d["asked"] == "What's the weather in Paris?"
    assert [(t["name"], t["result"]) for t in d["tools"]] == [("get_weather", '{"temperature_c": 18}')]
    assert d["returned"] == "It is 18 degrees and sunny in Paris." and d["status"] == "completed"
    assert weather["anomalies"] == [] and weather["usage"]["seconds"] > 0
    text = run("show", ids["live-voice-delegation"], "--db", db).stdout
    assert '→ get_weather({"location": "Paris", "unit": "celsius"})' in text


def test_show_names_the_linked_sideband(tmp_path: Path) -> None:
    """A primary and its sideband (one Live session id) imported together: `show` of each names the other, and
    `--json` lists the link."""
    s = LiveScript()
    voice_turn(s)
    sb = [f for f in s.frames if f.direction is SERVER]
    db = str(tmp_path / "linked.db")
    ids = {}
    for variant, frames, started in (("primary", s.frames, "10:00:00"), ("sideband", sb, "10:00:01")):
        path = "/v1/live/sessions" + ("/sess_1/attach" if variant == "sideband" else "")
        header = {
            "id": f"20261201-live-{variant}",
            "api": "live",
            "variant": variant,
            "path": path,
            "api_session_id": "sess_1",
            "status": "closed",
            "started_at": f"2026-12-01T{started}+00:00",
        }
        write_recording(tmp_path / f"{variant}.jsonl", header, frames)
        proc = run("import", str(tmp_path / f"{variant}.jsonl"), "--db", db)
        assert proc.returncode == 0, proc.stderr
        ids[variant] = proc.stdout.strip()
    out = run("show", ids["primary"], "--db", db).stdout
    assert f"linked: sideband {ids['sideband']}" in out and "What's the weather?" in out
    assert f"linked: primary {ids['primary']}" in run("show", ids["sideband"], "--db", db).stdout
    model = orjson.loads(run("show", ids["primary"], "--db", db, "--json").stdout)
    assert model["linked"] == [{"id": ids["sideband"], "relation": "sideband"}]


def test_show_linked_of_a_session_without_a_link_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    rec = str(Path(__file__).resolve().parent.parent / "recordings" / "live-barge-in.jsonl")
    imported = subprocess.run([*rtproxy_exe(), "import", rec, "--db", db], capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    out = subprocess.run(
        [*rtproxy_exe(), "show", "latest", "--linked", "--db", db], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no linked primary or sideband" in out.stderr
