"""GPT-Live end to end: the real ``openai`` SDK (``client.live.connect()``, ``client.live.sideband.connect()``)
through the real recording proxy to the scripted Live upstream; what is on disk is what crossed the wire."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import AsyncOpenAI
from openai.types.live import ClientEvent, ConnectServerEvent, ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from rtproxy.store import Store
from tests.conftest import RunningProxy, load_recordings_script, rtproxy_exe
from tests.live_upstream import Connection, LiveUpstream

ROOT = Path(__file__).resolve().parent.parent


LIVE = load_recordings_script("make_live_recordings")
SERVER: TypeAdapter[Any] = TypeAdapter(ServerEvent)
SIDEBAND: TypeAdapter[Any] = TypeAdapter(ConnectServerEvent)
CLIENT: TypeAdapter[Any] = TypeAdapter(ClientEvent)
NESTED: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
async def upstream() -> AsyncIterator[LiveUpstream]:
    """The Live upstream in place of the Realtime one (the `proxy` fixture relays to it)."""
    async with LiveUpstream() as up:
        yield up


def validate(conn: Connection) -> None:
    """Every event the upstream sent validates against the SDK's union for its connection; nested Responses
    events against the Responses stream union; every client frame against the client union."""
    union = SERVER if conn.kind == "primary" else SIDEBAND
    for text in conn.sent:
        event = union.validate_json(text)
        if event.type == "response.event":
            NESTED.validate_python(event.event)
    if conn.kind == "primary":
        for text in conn.received:
            assert isinstance(text, str)
            CLIENT.validate_json(text)


def frames_by_direction(db: Path, sid: str) -> tuple[list[str | bytes], list[str | bytes]]:
    with Store(db) as store:
        frames = list(store.frames(sid))
    assert [f.seq for f in frames] == list(range(len(frames)))
    return [f.data for f in frames if f.direction.value == "client"], [
        f.data for f in frames if f.direction.value == "server"
    ]


@pytest.mark.parametrize("name", ["live-voice-delegation", "live-client-delegation", "live-barge-in"])
async def test_every_live_frame_is_recorded_in_order_byte_for_byte(
    name: str, proxy: RunningProxy, upstream: LiveUpstream, api_key: str
) -> None:
    """A Live conversation through the proxy is on disk frame for frame, both directions, in order, as the
    upstream received and sent it; the session is api live, variant primary, with the model of session.start;
    every event validates against the SDK's models; the key is nowhere in the database."""
    flow = LIVE.FLOWS[name]
    upstream.user, upstream.replies = (
        flow.upstream.get("user", upstream.user),
        flow.upstream.get("replies", upstream.replies),
    )
    run = await LIVE.run_flow(flow, proxy.ws_base, api_key=api_key)
    (sid,) = await proxy.settle()
    (conn,) = upstream.connections
    client, server = frames_by_direction(proxy.db, sid)
    assert client == conn.received and server == conn.sent
    assert len(run.events) == len(conn.sent)
    validate(conn)
    with Store(proxy.db) as store:
        s = store.session(sid)
    assert (s["api"], s["variant"], s["model"], s["status"]) == ("live", "primary", "gpt-live-1", "closed")
    assert s["path"] == "/v1/live/sessions"
    started = orjson.loads(server[0])
    assert started["type"] == "session.started" and s["api_session_id"] == started["session"]["id"]
    assert started["client_event_id"] == run.sent_ids[0]
    assert api_key.encode() not in proxy.db.read_bytes()


async def test_a_sideband_is_recorded_beside_its_primary_and_linked_to_it(
    proxy: RunningProxy, upstream: LiveUpstream, api_key: str
) -> None:
    """A sideband attached to a session is recorded as its own session (variant sideband, the API session id
    from its path), byte for byte, with the reflected events; each links to the other (Store.linked_sessions)."""
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=proxy.ws_base)
    seen: list[dict[str, Any]] = []

    async def watch(session_id: str) -> None:
        async with client.live.sideband.connect(session_id=session_id) as side:
            for _ in range(5000):
                event = (await side.recv()).to_dict(warnings=False)
                seen.append(event)
                if event["type"] == "session.closed":
                    return

    async with asyncio.timeout(15), client.live.connect() as conn:
        c = LIVE.Client(conn)
        started = await c.start(delegation={"type": "client"})
        watcher = asyncio.create_task(watch(started["session"]["id"]))
        await asyncio.wait_for(upstream.attached.wait(), 10)
        await c.stream(LIVE.tone(1000) + LIVE.silence(300))
        created = await c.until("session.delegation.created")
        await conn.session.instructions.append(
            content="It is 18 degrees in Paris.", delegation_id=created["delegation"]["id"], event_id=c.eid()
        )
        await c.stream(LIVE.silence(1500))
        await c.until("session.usage.updated")
        await c.close()
        await asyncio.wait_for(watcher, 10)
    primary_id, sideband_id = await proxy.settle(2)
    primary, side = upstream.connections
    assert (primary.kind, side.kind) == ("primary", "sideband")
    validate(side)
    types = [e["type"] for e in seen]
    assert "session.input_audio.append" in types and types[-1] == "session.closed"
    assert all("start_ms" in e for e in seen if e["type"] == "session.output_audio.delta")
    with Store(proxy.db) as store:
        sessions = {s["id"]: s for s in store.sessions()}
        by_variant = {s["variant"]: s for s in sessions.values()}
        p, sb = by_variant["primary"], by_variant["sideband"]
        assert {p["id"], sb["id"]} == {primary_id, sideband_id}
        assert sb["path"] == f"/v1/live/sessions/{started['session']['id']}/attach"
        assert p["api_session_id"] == sb["api_session_id"] == started["session"]["id"]
        assert sb["linked_to"] == p["id"] and p["linked_to"] is None
        assert [(r["id"], r["relation"]) for r in store.linked_sessions(p["id"])] == [(sb["id"], "sideband")]
        assert [(r["id"], r["relation"]) for r in store.linked_sessions(sb["id"])] == [(p["id"], "primary")]
    client_frames, server_frames = frames_by_direction(proxy.db, sb["id"])
    assert client_frames == side.received and server_frames == side.sent
    done = subprocess.run(
        [*rtproxy_exe(), "sessions", "--db", str(proxy.db)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert lines[sb["id"]].endswith(f"-> {p['id']}") and lines[p["id"]].endswith(f"<- {sb['id']}")
    listed = orjson.loads(
        subprocess.run(
            [*rtproxy_exe(), "sessions", "--db", str(proxy.db), "--json"], capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert {r["id"]: r["linked"] for r in listed} == {p["id"]: [sb["id"]], sb["id"]: [p["id"]]}
    # one session seen by two connections, shown as one: the same turns, from either id; a session with no
    # link cannot be shown --linked (one line, exit 2)

    def show(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*rtproxy_exe(), "show", *args, "--db", str(proxy.db)], capture_output=True, text=True, timeout=60
        )

    alone = orjson.loads(show(p["id"], "--json").stdout)
    for ref in (p["id"], sb["id"]):
        merged = show(ref, "--linked", "--json")
        assert merged.returncode == 0, merged.stderr
        data = orjson.loads(merged.stdout)
        assert data["merged"] == [p["id"], sb["id"]]
        assert [t["text"] for t in data["turns"]] == [t["text"] for t in alone["turns"]]
        assert data["turns"] and data["session"]["id"] == p["id"]
    text = show(sb["id"], "--linked").stdout
    assert f"primary {p['id']} and sideband {sb['id']}, shown as one session" in text
