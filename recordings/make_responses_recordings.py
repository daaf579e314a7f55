"""Regenerate the Responses WebSocket mode example recordings in this directory.

    python recordings/make_responses_recordings.py                              # all of them
    python recordings/make_responses_recordings.py responses-agent-two-tools    # one

Each is a real client (the openai-agents ``Runner`` on its Responses WebSocket transport, or the ``openai`` SDK's
``client.responses.connect()``) talking through the real recording proxy to ``tests/responses_upstream.py``'s
ResponsesUpstream, exported with ``rtproxy.recording.write_recording``. The API key is made up at run time and
masked by the proxy; the agents SDK's tracing is off (nothing leaves the machine).

The client flows are plain functions (``FLOWS``) so the tests run the same client against a replay of its own
recording.
"""

from __future__ import annotations

import asyncio
import json
import os
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
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from openai import AsyncOpenAI  # noqa: E402

from tests.responses_upstream import MODEL, ResponsesUpstream  # noqa: E402

TIMEOUT = 20.0
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def make_key() -> str:
    return "sk-test-" + secrets.token_urlsafe(24)


@dataclass
class Run:
    """What a client saw: the final text, the tool calls it ran (name, arguments), every event type received."""

    text: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


# --- the openai SDK: client.responses.connect() --------------------------------------------------------


async def sdk_weather(websocket_base_url: str, *, api_key: str | None = None, city: str = "Paris") -> Run:
    """One socket, two responses: the model calls get_weather, the client answers (previous_response_id)."""
    client = AsyncOpenAI(api_key=api_key or make_key(), websocket_base_url=websocket_base_url)
    run = Run("")
    async with asyncio.timeout(TIMEOUT), client.responses.connect() as conn:
        await conn.send(
            {"type": "response.create", "model": MODEL, "input": f"Weather in {city}?", "tools": [WEATHER_TOOL]}
        )
        previous, outputs = None, []
        for _ in range(2):
            async for event in conn:
                run.events.append(event.type)
                if event.type == "error":
                    raise RuntimeError(f"error event: {event.error.message}")
                if event.type == "response.output_item.done" and event.item.type == "function_call":
                    args = json.loads(event.item.arguments)
                    run.calls.append((event.item.name, args))
                    outputs.append({"type": "function_call_output", "call_id": event.item.call_id, "output": "sunny"})
                if event.type == "response.output_text.done":
                    run.text = event.text
                if event.type == "response.completed":
                    previous = event.response.id
                    break
            if not outputs:
                break
            await conn.send(
                {"type": "response.create", "model": MODEL, "previous_response_id": previous, "input": outputs}
            )
            outputs = []
    return run


# --- openai-agents: Runner on the Responses WebSocket transport -------------------------------------------


async def agent_two_tools(
    websocket_base_url: str, *, api_key: str | None = None, city: str = "Paris", units: str = "celsius"
) -> Run:
    """An agent with two function tools (weather, local time) run by the Responses WebSocket transport."""
    from agents import Agent, function_tool, responses_websocket_session, set_tracing_disabled

    set_tracing_disabled(True)
    run = Run("")

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        run.calls.append(("get_weather", {"city": city}))
        return f"18 degrees {units} and sunny in {city}"

    @function_tool
    def get_time(city: str) -> str:
        """Local time in a city."""
        run.calls.append(("get_time", {"city": city}))
        return f"14:05 in {city}"

    agent = Agent(
        name="assistant", instructions="Use the tools, then answer.", model=MODEL, tools=[get_weather, get_time]
    )
    http_base = websocket_base_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    async with (
        asyncio.timeout(TIMEOUT),
        responses_websocket_session(
            api_key=api_key or make_key(), base_url=http_base, websocket_base_url=websocket_base_url
        ) as session,
    ):
        result = await session.run(agent, f"What is the weather and the time in {city}?")
    run.text = str(result.final_output)
    return run


Flow = Callable[..., Awaitable[Run]]
FLOWS: dict[str, Flow] = {"responses-agent-two-tools": agent_two_tools, "responses-sdk-weather": sdk_weather}
#: The flows whose recordings are committed here.
COMMITTED = ("responses-agent-two-tools", "responses-sdk-weather")


async def record(flow: Flow, target: Path, db: Path) -> tuple[Path, Run]:
    """Record `flow` through the proxy into `db` and export it to `target`."""
    from tests.conftest import record_example

    async with ResponsesUpstream() as up:
        run = await record_example(db, up.url, target, flow)
    return target, run


async def main(names: list[str]) -> None:
    from tests.conftest import write_examples

    await write_examples(names, FLOWS, COMMITTED, record, HERE)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
