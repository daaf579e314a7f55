"""Each recorded session knows its API and variant (handshake, confirmed by its first events) and its model."""

from __future__ import annotations

import sqlite3

import aiohttp
import orjson
import pytest

from .conftest import RunningProxy
from .upstream import ScriptedUpstream


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
