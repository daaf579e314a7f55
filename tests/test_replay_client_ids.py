"""Ids the client makes are echoed from this run in a replay: Realtime's client item ids, with the real SDK."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from rtproxy.recording import write_recording
from rtproxy.replay.server import ReplayServer, load_script, start
from rtproxy.store import Store
from tests.conftest import make_key, start_proxy
from tests.upstream import ScriptedUpstream


async def turn(url: str, item_id: str) -> list[dict[str, Any]]:
    """A typed question whose item id the client makes; the events received until the answer is done."""
    client = AsyncOpenAI(api_key=make_key(), websocket_base_url=url)
    events: list[dict[str, Any]] = []
    item = {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    async with asyncio.timeout(10), client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item=item)
        await conn.response.create()
        async for event in conn:
            events.append(event.to_dict(warnings=False))
            if event.type == "response.done" or len(events) > 500:
                break
    return events


async def test_a_realtime_client_item_id_comes_back_as_this_runs(tmp_path: Path) -> None:
    """Recorded with one client item id and replayed (strict) to a client that makes another, every event naming
    the item (its conversation.item.added, the answer's previous_item_id) names this run's id."""
    recorded_id, new_id = "item_" + secrets.token_hex(6), "item_" + secrets.token_hex(6)
    async with ScriptedUpstream() as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            recorded = await turn(running.ws_base, recorded_id)
            (sid,) = await running.settle()
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()
    with Store(tmp_path / "rt.db") as store:
        write_recording(tmp_path / "turn.jsonl", store.session(sid), store.frames(sid))
    server = ReplayServer(load_script(tmp_path / "turn.jsonl"), policy="strict")
    runner, port = await start(server)
    try:
        replayed = await turn(f"ws://127.0.0.1:{port}/v1", new_id)
        await server.wait_closed(1, timeout=5)
    finally:
        await server.shutdown()
        await runner.cleanup()
    assert server.report.ok, server.report.format()
    text = str(replayed)
    assert recorded_id in str(recorded) and recorded_id not in text
    added = next(e for e in replayed if e["type"] == "conversation.item.added")
    assert added["item"]["id"] == new_id
    assert any(e.get("previous_item_id") == new_id for e in replayed if e is not added)
    assert str(recorded).replace(recorded_id, new_id) == text  # nothing else changed
