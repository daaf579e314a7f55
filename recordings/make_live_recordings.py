"""Regenerate the GPT-Live example recordings in this directory.

    python recordings/make_live_recordings.py                         # all of them
    python recordings/make_live_recordings.py live-barge-in           # one

Each is the real ``openai`` SDK (``client.live.connect()``) talking through the real recording proxy to
``tests/live_upstream.py``'s LiveUpstream, exported with ``rtproxy.recording.write_recording``. The API key is made
up at run time and masked by the proxy. Every client command carries an ``event_id`` the client makes afresh on
each run (as real clients do), so a replay must echo this run's ids, not the recording's.

The client flows are plain functions (``FLOWS``) so the tests run the same client against a replay of its own
recording. A flow streams its microphone audio in fixed amounts and waits for the server only while silent, so
every command lands at the same place on the audio timeline on every run.
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

from tests.live_upstream import MODEL, RATE, LiveUpstream, silence, tone  # noqa: E402

Events = list[dict[str, Any]]
TIMEOUT = 15.0
CHUNK = RATE * 2 // 10  # 100 ms of PCM16 at 24 kHz

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


def new_event_id() -> str:
    """A fresh client event id (a new one every run)."""
    return "evt_" + secrets.token_hex(8)


class Client:
    """A Live connection with the ids it sent and the events it received."""

    def __init__(self, conn: Any, chunk: int = CHUNK) -> None:
        self.conn, self.chunk = conn, chunk
        self.events: Events = []
        self.sent_ids: list[str] = []

    def eid(self) -> str:
        self.sent_ids.append(new_event_id())
        return self.sent_ids[-1]

    async def stream(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), self.chunk):
            await self.conn.session.input_audio.append(audio=base64.b64encode(pcm[i : i + self.chunk]).decode())

    async def until(self, kind: str, nested: str | None = None, limit: int = 5000) -> dict[str, Any]:
        """Read events until one of type `kind` (whose nested Responses event is `nested`, if given)."""
        for _ in range(limit):
            event = (await self.conn.recv()).to_dict(warnings=False)
            self.events.append(event)
            if event["type"] == kind and (nested is None or event.get("event", {}).get("type") == nested):
                return event
        raise AssertionError(f"no {kind} within {limit} events")

    async def start(self, **session: Any) -> dict[str, Any]:
        config = {
            "model": MODEL,
            "instructions": "You are a friendly weather assistant.",
            "audio": {"format": {"type": "audio/pcm", "rate": RATE}},
            **session,
        }
        await self.conn.session.start(session=config, event_id=self.eid())
        return await self.until("session.started")

    async def close(self) -> None:
        await self.conn.session.close(event_id=self.eid())
        await self.until("session.closed")


async def voice_delegation(c: Client) -> None:
    """One spoken question; the Live model delegates it to Responses, which calls get_weather; the client runs the
    tool (response.item.create + response.create); the backend's answer is spoken."""
    await c.start(delegation={"type": "responses", "responses": {"model": "gpt-5.5", "tools": [WEATHER_TOOL]}})
    await c.stream(tone(1000) + silence(300))
    done = await c.until("response.event", "response.completed")
    assert done["event"]["response"]["status"] == "completed"
    call = next(e["event"]["item"] for e in c.events if e.get("event", {}).get("type") == "response.output_item.done")
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temperature_c": 18}'}
    await c.conn.response.item.create(item=output, event_id=c.eid())
    await c.conn.response.create(event_id=c.eid())
    await c.stream(silence(1500))
    await c.until("session.usage.updated")
    await c.close()


async def client_delegation(c: Client) -> None:
    """One spoken question delegated to the client, which answers with session.instructions.append."""
    await c.start(delegation={"type": "client"})
    await c.stream(tone(1000) + silence(300))
    created = await c.until("session.delegation.created")
    await c.conn.session.instructions.append(
        content="It is 18 degrees and sunny in Paris.", delegation_id=created["delegation"]["id"], event_id=c.eid()
    )
    await c.until("session.instructions.appended")
    await c.stream(silence(1500))
    await c.until("session.usage.updated")
    await c.close()


async def barge_in(c: Client) -> None:
    """The user asks for a story, interrupts the assistant 400 ms into it with a new question, and hears the
    short answer to that one."""
    await c.start()
    await c.stream(tone(800) + silence(300) + silence(400) + tone(600, 240.0) + silence(300) + silence(600))
    await c.until("session.usage.updated")
    await c.close()


@dataclass(frozen=True)
class Flow:
    name: str
    run: Callable[[Client], Awaitable[None]]
    upstream: dict[str, Any] = field(default_factory=dict)


STORY = "Once upon a time a small cloud drifted over Paris looking for a place to rain and found none at all today."
FLOWS = {
    f.name: f
    for f in (
        Flow("live-voice-delegation", voice_delegation),
        Flow("live-client-delegation", client_delegation),
        Flow(
            "live-barge-in",
            barge_in,
            {"user": ("Tell me a story", "Stop, what time is it?"), "replies": (STORY, "It is noon.")},
        ),
    )
}
#: The flows whose recordings are committed here.
COMMITTED = ("live-voice-delegation", "live-barge-in")


def make_key() -> str:
    return "sk-test-" + secrets.token_urlsafe(24)


@dataclass
class Run:
    events: Events
    sent_ids: list[str]


async def run_flow(flow: Flow, websocket_base_url: str, *, chunk: int = CHUNK, api_key: str | None = None) -> Run:
    """Run a flow's client once against a server (proxy or replay)."""
    client = AsyncOpenAI(api_key=api_key or make_key(), websocket_base_url=websocket_base_url)
    async with asyncio.timeout(TIMEOUT), client.live.connect() as conn:
        c = Client(conn, chunk)
        await flow.run(c)
        return Run(c.events, c.sent_ids)


async def record(flow: Flow, target: Path, db: Path) -> tuple[Path, Run]:
    """Record `flow` through the proxy into `db` and export it to `target`."""
    from tests.conftest import record_example

    async with LiveUpstream(**flow.upstream) as up:
        run = await record_example(db, up.url, target, lambda base: run_flow(flow, base))
    return target, run


async def main(names: list[str]) -> None:
    from tests.conftest import write_examples

    await write_examples(names, FLOWS, COMMITTED, record, HERE)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
