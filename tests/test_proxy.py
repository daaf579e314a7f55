"""End-to-end tests of the recording proxy with the real openai SDK on loopback."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from openai import AsyncOpenAI

from rtproxy.store import Store
from tests.conftest import RunningProxy
from tests.upstream import ScriptedUpstream, tone


def db_frames(db: Path, session_id: str) -> list[tuple[str, str | bytes]]:
    with Store(db) as store:
        return [(f.direction.value, f.data) for f in store.frames(session_id)]


async def text_turn(conn: Any) -> list[Any]:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}
    )
    await conn.response.create()
    events = []
    async for event in conn:
        events.append(event)
        if event.type == "response.done":
            return events
    return events


async def test_ga_text_turn_is_relayed_and_recorded_exactly(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str
) -> None:
    """The GA SDK talks through the proxy; the DB holds exactly the frames each side sent, in order."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        events = await text_turn(conn)
    assert events[-1].type == "response.done"
    assert any(e.type == "response.output_text.delta" for e in events)
    (sid,) = await proxy.settle()
    up = upstream.connections[0]
    assert up.path == "/v1/realtime" and up.query["model"] == "gpt-realtime"
    assert up.headers["Authorization"] == f"Bearer {api_key}"
    frames = db_frames(proxy.db, sid)
    assert [d for side, d in frames if side == "client"] == up.received
    assert [d for side, d in frames if side == "server"] == up.sent
    with Store(proxy.db) as store:
        s = store.session(sid)
    assert s["status"] == "closed" and s["dialect"] == "ga" and s["model"] == "gpt-realtime"
    assert s["client_events"] == len(up.received) and s["server_events"] == len(up.sent)
    assert s["closed_by"] == "client" and s["client_close_code"] == 1000


async def test_beta_audio_turn_is_recorded_with_dialect(
    proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str
) -> None:
    """The beta SDK streams audio up and gets audio deltas back; all of it is recorded, dialect beta."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    pcm = tone(400)
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        await conn.session.update(session={"modalities": ["text", "audio"], "input_audio_format": "pcm16"})
        for i in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        audio = bytearray()
        async for event in conn:
            if event.type == "response.audio.delta":
                audio += base64.b64decode(event.delta)
            if event.type == "response.done":
                break
    assert len(audio) > 0
    (sid,) = await proxy.settle()
    up = upstream.connections[0]
    assert up.dialect == "beta" and up.headers.get("OpenAI-Beta") == "realtime=v1"
    frames = db_frames(proxy.db, sid)
    assert [d for side, d in frames if side == "client"] == up.received
    assert [d for side, d in frames if side == "server"] == up.sent
    with Store(proxy.db) as store:
        s = store.session(sid)
        types = [r["type"] for r in store.event_rows(sid)]
    assert s["dialect"] == "beta"
    assert types.count("input_audio_buffer.append") == 4 and "response.audio.delta" in types


async def test_key_never_reaches_the_database(proxy: RunningProxy, upstream: ScriptedUpstream, api_key: str) -> None:
    """The API key's bytes appear nowhere in the database, its WAL or its shared memory file."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await text_turn(conn)
    await proxy.settle()
    blob = b"".join(p.read_bytes() for p in proxy.db.parent.glob("rt.db*"))
    assert api_key.encode() not in blob
    assert api_key[-4:].encode() in blob  # masked, but still tellable apart
    assert (proxy.db.stat().st_mode & 0o777) == 0o600


def rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def parse(data: str | bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    assert isinstance(value, dict)
    return value
