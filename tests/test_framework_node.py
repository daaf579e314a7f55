"""Node voice-agent frameworks recorded through `rtproxy proxy` and replayed by `rtproxy replay --once`.

`openai-realtime-api` (npm 1.0.x, transitive-bullshit's typed descendant of OpenAI's realtime-api-beta client):
its `RealtimeClient` keeps the conversation itself and speaks the beta dialect only: its Node socket always sends
`OpenAI-Beta: realtime=v1` (the browser one the `openai-beta.realtime-v1` subprotocol) and its conversation has
processors for beta event names only (`conversation.item.created`, `response.text.delta`, `response.audio.delta`),
so a GA session would leave it with no items; GA is not covered. It makes an `event_id` (`evt_` + nanoid) for
every client event; the app sets a user item's id through `client.realtime.send`. It is pointed at the proxy by
its `url` option (ws:// on loopback; it adds `?model=`).

Each test runs the framework's own client twice in one Node process (two connections: a typed question answered
by a tool the client registered with `addTool`, then spoken input appended and committed), prints what the
framework's own API reports as JSON, records it through the proxy subprocess, exports both sessions into one
cassette, and replays it (strict) to a fresh run of the framework, whose ids are new.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ProxyProcess, rtproxy_exe, spawn_proxy
from tests.node_helpers import node_modules
from tests.test_replay_server import ReplayProcess, processes, spawn_replay
from tests.upstream import ScriptedUpstream

__all__ = ["processes"]  # the fixture that kills replay subprocesses left running

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
RTAPI = {"openai-realtime-api@1": "openai-realtime-api/dist/index.js", "ws@8": "ws/package.json"}
TOOL_RESULT = {"temperature_c": 21, "sky": "clear"}
AUDIO_SAMPLES = 24000 * 3 // 4  # 750 ms of PCM16 at 24 kHz

RTAPI_FLOW = r"""
import { RealtimeClient } from 'openai-realtime-api';

const cfg = JSON.parse(process.env.FLOW);
const TIMEOUT = 10000;

function within(what, promise) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

function when(emitter, name, test) {
  return new Promise((resolve) => {
    const check = (event) => { if (test(event)) { emitter.off(name, check); resolve(event); } };
    emitter.on(name, check);
  });
}

function watch(client) {
  const seen = { types: [], errors: [], eventIds: [] };
  client.realtime.on('server.*', (event) => {
    seen.types.push(event.type);
    if (event.type === 'error') seen.errors.push(event.error?.message ?? '');
  });
  client.realtime.on('client.*', (event) => seen.eventIds.push(event.event_id));
  return seen;
}

function items(client) {
  return client.conversation.getItems().map((item) => ({
    id: item.id, type: item.type, role: item.role ?? null, status: item.status,
    text: item.formatted.text, transcript: item.formatted.transcript, audioSamples: item.formatted.audio?.length ?? 0,
    tool: item.formatted.tool ?? null, output: item.formatted.output ?? null,
  }));
}

// Connection 1: a typed question, answered with a call of the tool the client registered, then with text.
async function textTurn() {
  const client = new RealtimeClient({
    url: cfg.url, apiKey: cfg.key, sessionConfig: { modalities: ['text'], instructions: 'You are a weather bot.' },
  });
  const seen = watch(client);
  const toolCalls = [];
  client.addTool(
    { name: 'get_weather', description: 'The weather in a city',
      parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] } },
    async (args) => { toolCalls.push(args); return cfg.toolResult; },
  );
  const responses = [];
  client.realtime.on('server.response.done', (event) => responses.push(event.response.id));
  const answered = when(client.realtime, 'server.response.done', () => responses.length >= 2);
  await within('connect', client.connect());
  await within('session.created', client.waitForSessionCreated());
  // a burst: session.update, a user item whose id the app makes, response.create
  client.updateSession({ instructions: 'Be brief.' });
  client.realtime.send('conversation.item.create', {
    item: { id: cfg.itemId, type: 'message', role: 'user', content: [{ type: 'input_text', text: cfg.userText }] },
  });
  client.createResponse();
  await within('two responses', answered);
  const out = { ...seen, toolCalls, responses, items: items(client) };
  client.disconnect();
  return out;
}

// Connection 2: spoken input appended in three parts; createResponse commits it before response.create.
async function voiceTurn() {
  const client = new RealtimeClient({
    url: cfg.url, apiKey: cfg.key, sessionConfig: { modalities: ['text', 'audio'] },
  });
  const seen = watch(client);
  const answered = when(client.realtime, 'server.response.done', () => true);
  const heard = when(client, 'conversation.updated', (e) => e.item?.role === 'user' && !!e.item.formatted.transcript);
  await within('connect', client.connect());
  await within('session.created', client.waitForSessionCreated());
  const samples = Int16Array.from({ length: cfg.audioSamples }, (_, i) => Math.round(8000 * Math.sin(i / 9)));
  const third = Math.floor(samples.length / 3);
  for (const part of [samples.slice(0, third), samples.slice(third, 2 * third), samples.slice(2 * third)]) {
    client.appendInputAudio(part);
  }
  client.createResponse();
  const done = await within('response.done', answered);
  await within('user transcript', heard);
  const out = { ...seen, responses: [done.response.id], items: items(client) };
  client.disconnect();
  return out;
}

try {
  console.log(JSON.stringify({ text: await textTurn(), voice: await voiceTurn() }));
  process.exit(0);
} catch (err) {
  console.error(err.stack || String(err));
  process.exit(2);
}
"""


def run_node(script: Path, modules: Path, flow: dict[str, Any]) -> dict[str, Any]:
    """Run a flow script (an ES module beside a node_modules link to the cache); what it printed."""
    link = script.parent / "node_modules"
    if not link.exists():
        link.symlink_to(modules / "node_modules", target_is_directory=True)
    env = {**os.environ, "FLOW": orjson.dumps(flow).decode()}
    r = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=script.parent)
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout.strip().splitlines()[-1])


def export(db: Path, out: Path) -> list[dict[str, Any]]:
    """`rtproxy export A B …` of every session of `db` (listed by `rtproxy sessions --json`) into one cassette,
    oldest first; the sessions."""
    listed = subprocess.run(
        [*rtproxy_exe(), "sessions", "--db", str(db), "--json"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    sessions = sorted(orjson.loads(listed.stdout), key=lambda s: s["id"])
    ids = [s["id"] for s in sessions]
    done = subprocess.run(
        [*rtproxy_exe(), "export", *ids, "--db", str(db), "-o", str(out)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return sessions


async def record(
    tmp_path: Path, upstream: ScriptedUpstream, started: list[ProxyProcess], flow: dict[str, Any], script: str
) -> tuple[dict[str, Any], Path, list[dict[str, Any]]]:
    """Run the framework through a `rtproxy proxy` subprocess in front of `upstream`; what it saw, the cassette
    of its sessions, and the sessions as listed."""
    modules = await asyncio.to_thread(node_modules, RTAPI)
    db = tmp_path / "rec.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url])
    started.append(p)
    path = tmp_path / "record" / "flow.mjs"
    path.parent.mkdir()
    path.write_text(script)
    seen = await asyncio.to_thread(run_node, path, modules, {**flow, "url": f"ws://127.0.0.1:{p.port}/v1/realtime"})
    code, _, err = p.stop()
    assert code == 0, err
    cassette = tmp_path / "cassette.jsonl"
    return seen, cassette, await asyncio.to_thread(export, db, cassette)


async def replay(
    tmp_path: Path, cassette: Path, flow: dict[str, Any], script: str, started: list[ReplayProcess]
) -> tuple[dict[str, Any] | None, int, dict[str, Any], str]:
    """A fresh run of the framework against `rtproxy replay CASSETTE --once --match strict`; what it saw (None if
    it failed), the replay's exit code, its JSON report and its stdout."""
    modules = await asyncio.to_thread(node_modules, RTAPI)
    report = tmp_path / "report.json"
    r = spawn_replay([str(cassette), "--once", "--match", "strict", "--report", str(report)])
    started.append(r)
    path = tmp_path / f"replay-{secrets.token_hex(3)}" / "flow.mjs"
    path.parent.mkdir()
    path.write_text(script)
    try:
        seen: dict[str, Any] | None = await asyncio.to_thread(
            run_node, path, modules, {**flow, "url": f"ws://127.0.0.1:{r.port}/v1/realtime"}
        )
    except AssertionError:
        seen = None
    code, out, err = await asyncio.to_thread(r.wait, 20.0)
    assert report.exists(), out + err
    return seen, code, orjson.loads(report.read_bytes()), out


def flow(**changes: Any) -> dict[str, Any]:
    """The app's inputs: a new client item id each run, the question, the tool's answer, how much it says."""
    base = {
        "key": "sk-test-" + secrets.token_urlsafe(16),
        "itemId": "item_app" + secrets.token_hex(6),
        "userText": "What's the weather in Paris?",
        "toolResult": TOOL_RESULT,
        "audioSamples": AUDIO_SAMPLES,
    }
    return {**base, **changes}


def check_conversation(seen: dict[str, Any], flow: dict[str, Any], upstream: ScriptedUpstream) -> None:
    """What the framework reports of both connections: the tool call and its answer, the text and the voice."""
    text, voice = seen["text"], seen["voice"]
    assert text["errors"] == [] and voice["errors"] == []
    assert text["toolCalls"] == [{"location": "Paris", "unit": "celsius"}]
    assert [i["type"] for i in text["items"]] == ["message", "function_call", "function_call_output", "message"]
    user, call, output, answer = text["items"]
    assert user["role"] == "user" and answer["role"] == "assistant"
    assert user["id"] == flow["itemId"] and user["text"] == flow["userText"]
    assert call["tool"]["name"] == "get_weather" and orjson.loads(call["tool"]["arguments"])["location"] == "Paris"
    assert output["output"] == orjson.dumps(flow["toolResult"]).decode()
    assert answer["text"] == upstream.reply_text and answer["status"] == "completed"
    assert len(text["responses"]) == 2
    said, reply = voice["items"]
    assert said["role"] == "user" and said["transcript"] == "What's the weather in Paris?"
    assert said["audioSamples"] == flow["audioSamples"]
    assert reply["role"] == "assistant" and reply["transcript"] == upstream.reply_text
    assert reply["audioSamples"] == 24000 * upstream.audio_ms // 1000


async def test_openai_realtime_api_records_and_replays_both_connections(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess], processes: list[ReplayProcess]
) -> None:
    """openai-realtime-api (beta) records its two connections through the proxy; a fresh run against the replay
    of their cassette (new event ids, a new client item id) gets the same conversation back from the
    framework's API, its own ids echoed, and the strict replay reports no mismatch."""
    first = flow()
    recorded, cassette, sessions = await record(tmp_path, upstream, proxy_process, first, RTAPI_FLOW)
    check_conversation(recorded, first, upstream)
    assert len(sessions) == 2 and {s["dialect"] for s in sessions} == {"beta"}
    assert [c.dialect for c in upstream.connections] == ["beta", "beta"]
    again = flow()
    seen, code, report, out = await replay(tmp_path, cassette, again, RTAPI_FLOW, processes)
    assert code == 0 and report["ok"], out
    assert seen is not None
    check_conversation(seen, again, upstream)
    assert first["itemId"] not in str(seen) and set(seen["text"]["eventIds"]).isdisjoint(recorded["text"]["eventIds"])
    assert [c["recorded"] for c in report["connections"]] == [1, 2]


async def test_openai_realtime_api_with_another_tool_result_gets_a_mismatch(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess], processes: list[ReplayProcess]
) -> None:
    """The same app whose tool answers differently: the strict replay sends the framework an error event naming
    the tool output it did not expect (the app sees it), still finishes both connections, and exits 1 with the
    payload mismatch in its report."""
    _, cassette, _ = await record(tmp_path, upstream, proxy_process, flow(), RTAPI_FLOW)
    changed = flow(toolResult={"temperature_c": 35, "sky": "storm"})
    seen, code, report, out = await replay(tmp_path, cassette, changed, RTAPI_FLOW, processes)
    assert code == 1 and not report["ok"], out
    assert seen is not None and seen["voice"]["errors"] == []
    (error,) = seen["text"]["errors"]
    assert error.startswith("rtproxy replay: conversation.item.create: payload differs") and "output" in error
    (mismatch,) = report["connections"][0]["mismatches"]
    assert mismatch["kind"] == "payload" and mismatch["expected"]["item"]["type"] == "function_call_output"
    assert any(d.startswith("item.output") for d in mismatch["details"])
    assert report["connections"][1]["ok"]
