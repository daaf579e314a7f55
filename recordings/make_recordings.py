"""Regenerate the example recordings in this directory.

    python recordings/make_recordings.py            # all of them
    python recordings/make_recordings.py voice-ga   # one

Each recording is the real ``openai`` SDK talking through the real recording
proxy (``rtproxy.record.proxy``) to ``tests/upstream.py``'s ScriptedUpstream, which
answers like the Realtime API with real PCM16 audio; the session is then
exported with ``rtproxy.recording.write_recording``. The API key is made up
at run time and masked by the proxy, so no file here holds one.

The client flows are plain functions (``FLOWS``), so the tests can run the
same client against a replay of its own recording.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI  # noqa: E402

from tests.upstream import RATE, ScriptedUpstream, tone  # noqa: E402

Events = list[dict[str, Any]]
TIMEOUT = 15.0


async def until(conn: Any, kind: str, events: Events, limit: int = 2000) -> dict[str, Any]:
    """Read events (into `events`) until one of type `kind`; bounded in count."""
    for _ in range(limit):
        event = (await conn.recv()).to_dict(warnings=False)
        events.append(event)
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} within {limit} events")


def user_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def text_turn(conn: Any, beta: bool) -> Events:
    """One typed question, one text answer."""
    events: Events = []
    session = {"modalities": ["text"]} if beta else {"type": "realtime", "output_modalities": ["text"]}
    await conn.session.update(session=session)
    await conn.conversation.item.create(item=user_text("Hello there"))
    await conn.response.create()
    await until(conn, "response.done", events)
    return events


async def voice_turn(conn: Any, beta: bool) -> Events:
    """One second of speech up (ten 100 ms appends, manual commit), a spoken answer down."""
    events: Events = []
    if beta:
        session: dict[str, Any] = {
            "modalities": ["text", "audio"],
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "turn_detection": None,
        }
    else:
        session = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcm", "rate": RATE}},
            },
        }
    await conn.session.update(session=session)
    pcm = tone(1000, 180.0)
    step = RATE * 2 // 10
    for i in range(0, len(pcm), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + step]).decode())
    await conn.input_audio_buffer.commit()
    await conn.response.create()
    await until(conn, "response.done", events)
    return events


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}


async def function_call(conn: Any, beta: bool) -> Events:
    """The model calls get_weather; the client answers with the call's output; the model answers in text."""
    events: Events = []
    mods = {"modalities": ["text"]} if beta else {"type": "realtime", "output_modalities": ["text"]}
    await conn.session.update(session={**mods, "tools": [WEATHER_TOOL]})
    await conn.conversation.item.create(item=user_text("What's the weather in Paris?"))
    await conn.response.create()
    done = await until(conn, "response.done", events)
    call = next(i for i in done["response"]["output"] if i["type"] == "function_call")
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temperature_c": 18}'}
    await conn.conversation.item.create(item=output)
    await conn.response.create()
    await until(conn, "response.done", events)
    return events


async def voice_function_call(conn: Any, beta: bool) -> Events:
    """Realtime's side of recordings/live-voice-delegation.jsonl: the same spoken question ("What's the weather in
    Paris?"), the same get_weather call and output, the same spoken answer (for a cross-API `rtproxy diff`)."""
    events: Events = []
    session = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": None},
            "output": {"format": {"type": "audio/pcm", "rate": RATE}},
        },
        "tools": [WEATHER_TOOL],
    }
    await conn.session.update(session=session)
    pcm = tone(1000, 180.0)
    step = RATE * 2 // 10
    for i in range(0, len(pcm), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + step]).decode())
    await conn.input_audio_buffer.commit()
    await conn.response.create()
    done = await until(conn, "response.done", events)
    call = next(i for i in done["response"]["output"] if i["type"] == "function_call")
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temperature_c": 18}'}
    await conn.conversation.item.create(item=output)
    await conn.response.create()
    await until(conn, "response.done", events)
    return events


async def cancelled(conn: Any, beta: bool) -> Events:
    """The user interrupts a spoken answer: response.cancel after three audio deltas, then truncate what played."""
    events: Events = []
    session = {"modalities": ["text", "audio"]} if beta else {"type": "realtime", "output_modalities": ["audio"]}
    await conn.session.update(session=session)
    await conn.conversation.item.create(item=user_text("Tell me a long story"))
    await conn.response.create()
    delta = "response.audio.delta" if beta else "response.output_audio.delta"
    deltas, item_id, played = 0, None, 0
    for _ in range(2000):
        event = (await conn.recv()).to_dict(warnings=False)
        events.append(event)
        if event["type"] == delta:
            deltas += 1
            item_id = event["item_id"]
            played += len(base64.b64decode(event["delta"])) * 1000 // (2 * RATE)
            if deltas == 3:
                await conn.response.cancel()
        if event["type"] == "response.done":
            break
    assert item_id is not None
    await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=played)
    await until(conn, "conversation.item.truncated", events)
    return events


@dataclass(frozen=True)
class Flow:
    name: str
    beta: bool
    run: Callable[[Any, bool], Awaitable[Events]]
    upstream: dict[str, Any] = field(default_factory=dict)


FLOWS = {
    f.name: f
    for f in (
        Flow("text-ga", False, text_turn),
        Flow("text-beta", True, text_turn),
        Flow("voice-ga", False, voice_turn, {"audio_ms": 1000, "text": "It is sunny in Paris."}),
        Flow("voice-beta", True, voice_turn, {"audio_ms": 1000, "text": "It is sunny in Paris."}),
        Flow("function-call-ga", False, function_call, {"text": "It is 18 degrees in Paris."}),
        Flow("cancelled-ga", False, cancelled, {"audio_ms": 3000, "chunk_delay": 0.02}),
        Flow(
            "same-conversation-realtime",
            False,
            voice_function_call,
            {"audio_ms": 800, "text": "It is 18 degrees and sunny in Paris."},
        ),
    )
}


def make_key() -> str:
    return "sk-test-" + secrets.token_urlsafe(24)


async def run_flow(flow: Flow, websocket_base_url: str, api_key: str | None = None) -> Events:
    """Run a flow's client once against a server (proxy or replay); the events it received."""
    client = AsyncOpenAI(api_key=api_key or make_key(), websocket_base_url=websocket_base_url)
    realtime = client.beta.realtime if flow.beta else client.realtime
    model = "gpt-4o-realtime-preview" if flow.beta else "gpt-realtime"
    async with asyncio.timeout(TIMEOUT):
        async with realtime.connect(model=model) as conn:
            return await flow.run(conn, flow.beta)


async def record(flow: Flow, target: Path, db: Path) -> tuple[Path, Events]:
    """Record `flow` through the proxy into `db` and export it to `target`; the events the client received."""
    from tests.conftest import record_example

    async with ScriptedUpstream(exact=True, **flow.upstream) as up:
        events = await record_example(db, up.url, target, lambda base: run_flow(flow, base))
    return target, events


async def main(names: list[str]) -> None:
    from tests.conftest import write_examples

    await write_examples(names, FLOWS, FLOWS, record, HERE)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
