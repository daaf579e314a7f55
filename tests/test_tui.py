"""The TUI driven headless through Textual's pilot, on real SQLite files built in the test."""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.protocol import CLIENT, SERVER, Direction, Frame
from rtproxy.store import Store
from rtproxy.tui.app import RtproxyApp, make_app

RATE = 24000
SIZE = (120, 40)


# --- fixture data: a small GA voice + text + function-call session, made by hand -------


def tone(ms: int, freq: float = 330.0) -> bytes:
    n = RATE * ms // 1000
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(math.pi * i / n) * math.sin(2 * math.pi * freq * i / RATE)))
        for i in range(n)
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def session_events() -> list[tuple[Direction, float, dict[str, Any]]]:
    """(direction, t, event) of a short GA session: a spoken turn, a text turn with a function call."""
    ev: list[tuple[Direction, float, dict[str, Any]]] = []
    t = 0.0

    def add(direction: Direction, dt: float, event: dict[str, Any]) -> None:
        nonlocal t
        t = round(t + dt, 3)
        ev.append((direction, t, event))

    config = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
              "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                        "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    add(SERVER, 0.05, {"type": "session.created", "event_id": "ev_001", "session": {"id": "sess_1", **config}})
    add(CLIENT, 0.01, {"type": "session.update", "event_id": "cl_001",
                       "session": {"type": "realtime", "instructions": "Be brief."}})
    add(SERVER, 0.02, {"type": "session.updated", "event_id": "ev_002", "session": {"id": "sess_1", **config}})
    # turn 1: the user speaks (server VAD), the assistant answers with audio
    speech = tone(600, 220.0)
    silence = bytes(2 * RATE // 10)
    mic = silence + speech + silence
    chunk = 2 * RATE // 50  # 20 ms
    for n, off in enumerate(range(0, len(mic), chunk)):
        add(CLIENT, 0.02, {"type": "input_audio_buffer.append", "event_id": f"cl_a{n:03d}",
                           "audio": b64(mic[off:off + chunk])})
        if n == 5:
            add(SERVER, 0.001, {"type": "input_audio_buffer.speech_started", "event_id": "ev_010",
                                "audio_start_ms": 100, "item_id": "item_user1"})
    add(SERVER, 0.01, {"type": "input_audio_buffer.speech_stopped", "event_id": "ev_011", "audio_end_ms": 700,
                       "item_id": "item_user1"})
    add(SERVER, 0.01, {"type": "input_audio_buffer.committed", "event_id": "ev_012", "previous_item_id": None,
                       "item_id": "item_user1"})
    add(SERVER, 0.01, {"type": "conversation.item.added", "event_id": "ev_013", "previous_item_id": None,
                       "item": {"id": "item_user1", "type": "message", "role": "user", "status": "completed",
                                "content": [{"type": "input_audio", "transcript": None}]}})
    add(SERVER, 0.01, {"type": "response.created", "event_id": "ev_014",
                       "response": {"id": "resp_1", "object": "realtime.response", "status": "in_progress",
                                    "output": []}})
    add(SERVER, 0.05, {"type": "response.output_item.added", "event_id": "ev_015", "response_id": "resp_1",
                       "output_index": 0, "item": {"id": "item_asst1", "type": "message", "role": "assistant",
                                                   "status": "in_progress", "content": []}})
    add(SERVER, 0.001, {"type": "conversation.item.added", "event_id": "ev_016", "previous_item_id": "item_user1",
                        "item": {"id": "item_asst1", "type": "message", "role": "assistant",
                                 "status": "in_progress", "content": []}})
    add(SERVER, 0.001, {"type": "response.content_part.added", "event_id": "ev_017", "response_id": "resp_1",
                        "item_id": "item_asst1", "output_index": 0, "content_index": 0,
                        "part": {"type": "audio", "transcript": ""}})
    add(SERVER, 0.01, {"type": "conversation.item.input_audio_transcription.completed", "event_id": "ev_018",
                       "item_id": "item_user1", "content_index": 0, "transcript": "What is the weather in Paris?"})
    answer = tone(900, 440.0)
    words = ["It ", "is ", "mild ", "and ", "sunny ", "in ", "Paris."]
    step = len(answer) // len(words) // 2 * 2
    for n, word in enumerate(words):
        add(SERVER, 0.02, {"type": "response.output_audio_transcript.delta", "event_id": f"ev_t{n:02d}",
                           "response_id": "resp_1", "item_id": "item_asst1", "output_index": 0, "content_index": 0,
                           "delta": word})
        add(SERVER, 0.001, {"type": "response.output_audio.delta", "event_id": f"ev_d{n:02d}", "response_id": "resp_1",
                            "item_id": "item_asst1", "output_index": 0, "content_index": 0,
                            "delta": b64(answer[n * step:(n + 1) * step])})
    add(SERVER, 0.01, {"type": "response.output_audio.done", "event_id": "ev_020", "response_id": "resp_1",
                       "item_id": "item_asst1", "output_index": 0, "content_index": 0})
    add(SERVER, 0.001, {"type": "response.output_audio_transcript.done", "event_id": "ev_021",
                        "response_id": "resp_1", "item_id": "item_asst1", "output_index": 0, "content_index": 0,
                        "transcript": "It is mild and sunny in Paris."})
    add(SERVER, 0.001, {"type": "response.output_item.done", "event_id": "ev_022", "response_id": "resp_1",
                        "output_index": 0, "item": {"id": "item_asst1", "type": "message", "role": "assistant",
                                                    "status": "completed",
                                                    "content": [{"type": "output_audio",
                                                                 "transcript": "It is mild and sunny in Paris."}]}})
    add(SERVER, 0.001, {"type": "response.done", "event_id": "ev_023",
                        "response": {"id": "resp_1", "status": "completed", "output": [{"id": "item_asst1"}],
                                     "usage": {"total_tokens": 150, "input_tokens": 100, "output_tokens": 50}}})
    # turn 2: typed text; the assistant calls a function, the client answers, the assistant replies in text
    add(CLIENT, 0.5, {"type": "conversation.item.create", "event_id": "cl_100",
                      "item": {"id": "item_user2", "type": "message", "role": "user",
                               "content": [{"type": "input_text", "text": "Book a table for two at 8pm."}]}})
    add(SERVER, 0.01, {"type": "conversation.item.added", "event_id": "ev_100", "previous_item_id": "item_asst1",
                       "item": {"id": "item_user2", "type": "message", "role": "user", "status": "completed",
                                "content": [{"type": "input_text", "text": "Book a table for two at 8pm."}]}})
    add(CLIENT, 0.01, {"type": "response.create", "event_id": "cl_101"})
    add(SERVER, 0.12, {"type": "response.created", "event_id": "ev_101",
                       "response": {"id": "resp_2", "status": "in_progress", "output": []}})
    add(SERVER, 0.01, {"type": "response.output_item.added", "event_id": "ev_102", "response_id": "resp_2",
                       "output_index": 0, "item": {"id": "item_call1", "type": "function_call", "status": "in_progress",
                                                   "name": "book_table", "call_id": "call_1", "arguments": ""}})
    add(SERVER, 0.001, {"type": "conversation.item.added", "event_id": "ev_103", "previous_item_id": "item_user2",
                        "item": {"id": "item_call1", "type": "function_call", "status": "in_progress",
                                 "name": "book_table", "call_id": "call_1", "arguments": ""}})
    args = '{"people": 2, "time": "20:00"}'
    for n in range(0, len(args), 8):
        add(SERVER, 0.01, {"type": "response.function_call_arguments.delta", "event_id": f"ev_f{n:02d}",
                           "response_id": "resp_2", "item_id": "item_call1", "output_index": 0, "call_id": "call_1",
                           "delta": args[n:n + 8]})
    add(SERVER, 0.01, {"type": "response.function_call_arguments.done", "event_id": "ev_110", "response_id": "resp_2",
                       "item_id": "item_call1", "output_index": 0, "call_id": "call_1", "arguments": args})
    add(SERVER, 0.001, {"type": "response.output_item.done", "event_id": "ev_111", "response_id": "resp_2",
                        "output_index": 0, "item": {"id": "item_call1", "type": "function_call", "status": "completed",
                                                    "name": "book_table", "call_id": "call_1", "arguments": args}})
    add(SERVER, 0.001, {"type": "response.done", "event_id": "ev_112",
                        "response": {"id": "resp_2", "status": "completed", "output": [{"id": "item_call1"}],
                                     "usage": {"total_tokens": 80, "input_tokens": 70, "output_tokens": 10}}})
    add(CLIENT, 0.2, {"type": "conversation.item.create", "event_id": "cl_102",
                      "item": {"id": "item_out1", "type": "function_call_output", "call_id": "call_1",
                               "output": '{"booked": true, "table": 12}'}})
    add(SERVER, 0.01, {"type": "conversation.item.added", "event_id": "ev_120", "previous_item_id": "item_call1",
                       "item": {"id": "item_out1", "type": "function_call_output", "call_id": "call_1",
                                "output": '{"booked": true, "table": 12}'}})
    return ev


def session_frames() -> list[Frame]:
    return [Frame(seq, t, d, orjson.dumps(e).decode()) for seq, (d, t, e) in enumerate(session_events())]


SESSION_META = {
    "id": "20260101-120000-abc123",
    "started_at": "2026-01-01T12:00:00.000Z",
    "ended_at": "2026-01-01T12:00:05.000Z",
    "model": "gpt-realtime",
    "dialect": "ga",
    "status": "closed",
    "label": "weather demo",
    "path": "/v1/realtime",
}


def build_db(path: Path, *, extra_sessions: int = 1) -> str:
    """A database with the hand-made session (and a few older, empty ones); the session's id."""
    frames = session_frames()
    with Store(path, create=True) as store:
        for n in range(extra_sessions):
            store.import_session(
                {"id": f"20251231-0{n}0000-old{n:03d}", "started_at": f"2025-12-31T0{n}:00:00.000Z",
                 "model": "gpt-4o-realtime-preview", "dialect": "beta", "status": "closed", "label": f"old {n}"},
                [Frame(0, 0.0, SERVER, '{"type":"session.created","event_id":"e0","session":{"id":"s"}}')],
            )
        meta = dict(SESSION_META, client_events=sum(f.direction is CLIENT for f in frames),
                    server_events=sum(f.direction is SERVER for f in frames), duration=frames[-1].t)
        return store.import_session(meta, frames)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tui.db"
    build_db(path)
    return path


async def wait_until(pilot: Any, condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Let the app run until a condition holds (bounded in time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)


def session_screen(app: RtproxyApp) -> Any:
    from rtproxy.tui.screens.session import SessionScreen

    screen = app.screen
    assert isinstance(screen, SessionScreen), screen
    return screen


async def opened(pilot: Any) -> Any:
    """The session screen, once its index and conversation are loaded."""
    await wait_until(pilot, lambda: type(pilot.app.screen).__name__ == "SessionScreen", what="session screen")
    screen = session_screen(pilot.app)
    await wait_until(pilot, lambda: screen.index_complete and screen.conversation_complete, what="session loaded")
    await pilot.pause()
    return screen


# --- the sessions screen ------------------------------------------------------------


async def test_sessions_newest_first_and_enter_opens(db: Path) -> None:
    """The sessions table lists sessions newest first, and Enter opens the highlighted one."""
    from textual.widgets import DataTable

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#sessions-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, what="two sessions")
        ids = [str(k.value) for k in table.rows]
        assert ids == [SESSION_META["id"], "20251231-000000-old000"]
        await pilot.press("enter")
        screen = await opened(pilot)
        assert screen.session_id == SESSION_META["id"]
        assert [i.id for i in screen.conversation.items][:2] == ["item_user1", "item_asst1"]
