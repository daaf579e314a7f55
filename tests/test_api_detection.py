"""Each recorded session knows its API and variant (handshake, confirmed by its first events) and its model."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess

import aiohttp
import orjson
import pytest

from tests.conftest import RunningProxy, rtproxy_exe
from tests.upstream import ScriptedUpstream


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=60)


async def one_session(proxy: RunningProxy, path: str, *events: dict[str, object]) -> dict[str, object]:
    """Open `path` through the proxy, send `events`, read one server event, close; the stored session row."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{proxy.port}{path}")
        for event in events:
            await ws.send_str(orjson.dumps(event).decode())
        await ws.receive(timeout=10)
        await ws.close()
    (sid,) = await proxy.settle(1)
    conn = sqlite3.connect(proxy.db)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("path", "events", "api", "variant", "model"),
    [
        (
            "/v1/realtime?model=gpt-realtime",
            [{"type": "session.update", "session": {"type": "realtime"}}],
            "realtime",
            "ga",
            "gpt-realtime",
        ),
        (
            "/v1/live/sessions",
            [{"type": "session.start", "session": {"model": "gpt-live-1"}}],
            "live",
            "primary",
            "gpt-live-1",
        ),
        ("/v1/live/sessions/sess_123/attach", [], "live", "sideband", None),
        (
            "/v1/responses",
            [{"type": "response.create", "model": "gpt-5.1", "input": "hi"}],
            "responses",
            None,
            "gpt-5.1",
        ),
        ("/v1/somewhere-new", [], "realtime", "ga", None),  # unknown path: the events say Realtime
    ],
)
async def test_a_session_is_stored_with_its_api_variant_and_model(
    proxy: RunningProxy,
    upstream: ScriptedUpstream,
    path: str,
    events: list[dict[str, object]],
    api: str,
    variant: str | None,
    model: str | None,
) -> None:
    """Realtime, GPT-Live (primary, sideband) and Responses sessions are told apart by the handshake and the
    first events, and their model comes from where each API carries it (the scripted upstream answers every
    path with Realtime's session.created, which is how an unknown path becomes a Realtime session)."""
    row = await one_session(proxy, path, *events)
    assert (row["api"], row["variant"]) == (api, variant)
    if model is not None:
        assert row["model"] == model


async def test_show_of_a_responses_session_is_rebuilt_by_the_responses_reducer(
    proxy: RunningProxy, upstream: ScriptedUpstream
) -> None:
    """`rtproxy show` of a Responses WebSocket session rebuilds it with the Responses reducer (not the Realtime
    one): the request with its model and input; the scripted Realtime upstream's session.created, no Responses
    event, is an anomaly; `--json` has the request."""
    row = await one_session(proxy, "/v1/responses", {"type": "response.create", "model": "gpt-5.1", "input": "hi"})
    r = await asyncio.to_thread(run, "show", str(row["id"]), "--db", str(proxy.db))
    assert r.returncode == 0, r.stderr
    assert "responses" in r.stdout and "does not rebuild" not in r.stdout
    assert "REQUEST #1" in r.stdout and "USER 'hi'" in r.stdout and "1 request · 0 responses" in r.stdout
    assert "unknown responses event type 'session.created'" in r.stdout
    r = await asyncio.to_thread(run, "show", str(row["id"]), "--db", str(proxy.db), "--json")
    out = orjson.loads(r.stdout)
    assert out["session"]["api"] == "responses" and out["requests"][0]["model"] == "gpt-5.1"
    assert out["requests"][0]["input"] == [{"type": "message", "role": "user", "text": "hi"}]


async def test_show_of_a_live_session_is_rebuilt_by_the_live_reducer(
    proxy: RunningProxy, upstream: ScriptedUpstream
) -> None:
    """`rtproxy show` of a GPT-Live session recorded through the proxy rebuilds it with the Live reducer (not the
    Realtime one, not the raw-events note): the model from session.start; `--json` says rebuilt."""
    row = await one_session(proxy, "/v1/live/sessions", {"type": "session.start", "session": {"model": "gpt-live-1"}})
    r = await asyncio.to_thread(run, "show", str(row["id"]), "--db", str(proxy.db))
    assert r.returncode == 0, r.stderr
    assert "live/primary" in r.stdout and "does not rebuild" not in r.stdout and "0 turns" in r.stdout
    r = await asyncio.to_thread(run, "show", str(row["id"]), "--db", str(proxy.db), "--json")
    out = orjson.loads(r.stdout)
    assert out["rebuilt"] is True and out["session"]["api"] == "live" and out["model"] == "gpt-live-1"
    assert out["turns"] == [] and out["delegations"] == []
