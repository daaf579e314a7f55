"""Node voice-agent frameworks recorded through `rtproxy proxy` and replayed by `rtproxy replay --once`.

`openai-realtime-api` (npm 1.0.x, transitive-bullshit's typed descendant of OpenAI's realtime-api-beta client):
its `RealtimeClient` keeps the conversation itself and speaks the beta dialect only: its Node socket always sends
`OpenAI-Beta: realtime=v1` (the browser one the `openai-beta.realtime-v1` subprotocol) and its conversation has
processors for beta event names only (`conversation.item.created`, `response.text.delta`, `response.audio.delta`),
so a GA session would leave it with no items; GA is not covered. It makes an `event_id` (`evt_` + nanoid) for
every client event; the app sets a user item's id through `client.realtime.send`. It answers a function call on
`response.output_item.done` (before `response.done`) with the tool's output item and `response.create`, and
`createResponse()` commits appended audio before `response.create` (a burst). It is pointed at the proxy by its
`url` option (ws:// on loopback; it adds `?model=`).

`@openai/agents-realtime` (OpenAI's Agents SDK for JS, 0.x): a `RealtimeSession` of a `RealtimeAgent` over the
`OpenAIRealtimeWebSocket` transport, given the URL (with `?model=`) by its `url` option. It speaks GA only (no
beta header or subprotocol; its event parsers know GA names only), so beta is not covered. Its ids: response.create
`event_id`s `agents_js_response_create_N`, history requests' `agents_create_N` with the app's own item id
(`updateHistory`); it sends its `session.update` when the socket opens and another (tracing) on `session.created`,
runs the agent's tool on `response.output_item.done` and waits for `response.done` before its next
`response.create`, and answers `conversation.item.input_audio_transcription.completed` with
`conversation.item.retrieve` (the scripted upstream answers it with `retrieve=True`).

Each test runs the framework's own client twice in one Node process (two connections: a typed question answered
with a tool call the client runs itself, then spoken input appended and committed), prints what the framework's
own API reports as JSON, records it through the proxy subprocess, exports both sessions into one cassette, and
replays it (strict) to a fresh run of the framework, whose ids are new.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ProxyProcess, rtproxy_exe, spawn_proxy
from tests.node_helpers import node_modules
from tests.test_replay_server import ReplayProcess, spawn_replay
from tests.upstream import ScriptedUpstream

pytestmark = pytest.mark.slow

TOOL_RESULT = {"temperature_c": 21, "sky": "clear"}
AUDIO_SAMPLES = 24000 * 3 // 4  # 750 ms of PCM16 at 24 kHz


@dataclass(frozen=True)
class Framework:
    """A Node framework under test: the npm packages it needs (spec: a file proving it installed), the app's
    flow script (an ES module printing what the framework reported as JSON), and what the URL it is given ends
    with after the proxy's or replay's address."""

    packages: dict[str, str]
    script: str
    path: str = "/v1/realtime"


#: What both Node flows begin with: their settings (the FLOW environment variable) and a bounded wait.
PRELUDE = r"""
const cfg = JSON.parse(process.env.FLOW);
const TIMEOUT = 10000;

function within(what, promise) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}
"""

RTAPI_FLOW = (
    r"""
import { RealtimeClient } from 'openai-realtime-api';
"""
    + PRELUDE
    + r"""
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
)
RTAPI = Framework({"openai-realtime-api@1": "openai-realtime-api/dist/index.js", "ws@8": "ws/package.json"}, RTAPI_FLOW)


@dataclass
class Run:
    """One run of a framework's flow script: its exit code, what it printed (None if it failed), its stderr."""

    code: int
    seen: dict[str, Any] | None
    stderr: str

    def ok(self) -> dict[str, Any]:
        assert self.code == 0 and self.seen is not None, self.stderr
        return self.seen


async def run_node(folder: Path, fw: Framework, flow: dict[str, Any], port: int) -> Run:
    """Run the framework's flow (an ES module in `folder`, beside a node_modules link to the cache) against the
    server on `port`."""
    modules = await asyncio.to_thread(node_modules, fw.packages)
    folder.mkdir()
    (folder / "node_modules").symlink_to(modules / "node_modules", target_is_directory=True)
    (folder / "flow.mjs").write_text(fw.script)
    env = {**os.environ, "FLOW": orjson.dumps({**flow, "url": f"ws://127.0.0.1:{port}{fw.path}"}).decode()}
    r = await asyncio.to_thread(
        subprocess.run, ["node", "flow.mjs"], capture_output=True, text=True, timeout=60, env=env, cwd=folder
    )
    lines = r.stdout.strip().splitlines()
    return Run(r.returncode, orjson.loads(lines[-1]) if r.returncode == 0 and lines else None, r.stderr)


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
    tmp_path: Path, upstream: ScriptedUpstream, started: list[ProxyProcess], flow: dict[str, Any], fw: Framework
) -> tuple[dict[str, Any], Path, list[dict[str, Any]]]:
    """Run the framework through a `rtproxy proxy` subprocess in front of `upstream`; what it saw, the cassette
    of its sessions, and the sessions as listed."""
    db = tmp_path / "rec.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url])
    started.append(p)
    seen = (await run_node(tmp_path / "record", fw, flow, p.port)).ok()
    code, _, err = p.stop()
    assert code == 0, err
    cassette = tmp_path / "cassette.jsonl"
    return seen, cassette, await asyncio.to_thread(export, db, cassette)


async def replay(
    tmp_path: Path, cassette: Path, flow: dict[str, Any], fw: Framework, started: list[ReplayProcess]
) -> tuple[Run, int, dict[str, Any], str]:
    """A fresh run of the framework against `rtproxy replay CASSETTE --once --match strict`; the run, the
    replay's exit code, its JSON report and its stdout."""
    report = tmp_path / "report.json"
    r = spawn_replay([str(cassette), "--once", "--match", "strict", "--report", str(report)])
    started.append(r)
    run = await run_node(tmp_path / f"replay-{secrets.token_hex(3)}", fw, flow, r.port)
    code, out, err = await asyncio.to_thread(r.wait, 20.0)
    assert report.exists(), out + err
    return run, code, orjson.loads(report.read_bytes()), out


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
    recorded, cassette, sessions = await record(tmp_path, upstream, proxy_process, first, RTAPI)
    check_conversation(recorded, first, upstream)
    assert len(sessions) == 2 and {s["dialect"] for s in sessions} == {"beta"}
    assert [c.dialect for c in upstream.connections] == ["beta", "beta"]
    again = flow()
    run, code, report, out = await replay(tmp_path, cassette, again, RTAPI, processes)
    assert code == 0 and report["ok"], out
    seen = run.ok()
    check_conversation(seen, again, upstream)
    assert first["itemId"] not in str(seen) and set(seen["text"]["eventIds"]).isdisjoint(recorded["text"]["eventIds"])
    assert [c["recorded"] for c in report["connections"]] == [1, 2]


async def test_openai_realtime_api_with_another_tool_result_gets_a_mismatch(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess], processes: list[ReplayProcess]
) -> None:
    """The same app whose tool answers differently: the strict replay sends the framework an error event naming
    the tool output it did not expect (the app sees it), still finishes both connections, and exits 1 with the
    payload mismatch in its report."""
    _, cassette, _ = await record(tmp_path, upstream, proxy_process, flow(), RTAPI)
    changed = flow(toolResult={"temperature_c": 35, "sky": "storm"})
    run, code, report, out = await replay(tmp_path, cassette, changed, RTAPI, processes)
    assert code == 1 and not report["ok"], out
    seen = run.ok()
    assert seen["voice"]["errors"] == []
    (error,) = seen["text"]["errors"]
    assert error.startswith("rtproxy replay: conversation.item.create: payload differs") and "output" in error
    (mismatch,) = report["connections"][0]["mismatches"]
    assert mismatch["kind"] == "payload" and mismatch["expected"]["item"]["type"] == "function_call_output"
    assert any(d.startswith("item.output") for d in mismatch["details"])
    assert report["connections"][1]["ok"]


# --- @openai/agents-realtime ----------------------------------------------------------------------------------

AGENTS_FLOW = (
    r"""
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';
"""
    + PRELUDE
    + r"""
function when(emitter, name, test) {
  return new Promise((resolve) => {
    const check = (...args) => { if (test(...args)) { emitter.off(name, check); resolve(args); } };
    emitter.on(name, check);
  });
}

function open(config, tools) {
  const agent = new RealtimeAgent({ name: 'weather', instructions: 'You are a weather bot.', tools });
  const transport = new OpenAIRealtimeWebSocket({ url: cfg.url });
  const session = new RealtimeSession(agent, {
    transport, model: 'gpt-realtime', config: { ...config, audio: { input: { turnDetection: null } } },
  });
  const seen = { types: [], errors: [] };
  session.on('transport_event', (event) => seen.types.push(event.type));
  session.on('error', (e) => seen.errors.push(String(e.error?.error?.message ?? e.error?.message ?? e.error)));
  return { session, transport, seen };
}

function history(session) {
  return session.history.map((item) => ({
    id: item.itemId, type: item.type, role: item.role ?? null, status: item.status ?? null,
    name: item.name ?? null, arguments: item.arguments ?? null, output: item.output ?? null,
    text: (item.content ?? []).map((c) => c.text ?? c.transcript ?? '').join(''),
  }));
}

// Connection 1: an item the app makes (its own id) and a typed question in one burst; a tool call; a text answer.
async function textTurn() {
  const toolCalls = [];
  const getWeather = tool({
    name: 'get_weather', description: 'The weather in a city', strict: false,
    parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'],
                  additionalProperties: true },
    execute: async (args) => { toolCalls.push(args); return cfg.toolResult; },
  });
  const { session, transport, seen } = open({ outputModalities: ['text'] }, [getWeather]);
  const turns = [];
  transport.on('turn_done', (event) => turns.push(event.response.id));
  const answered = when(transport, 'turn_done', () => turns.length >= 2);
  await within('connect', session.connect({ apiKey: cfg.key }));
  session.updateHistory((old) => [...old, {
    itemId: cfg.itemId, type: 'message', role: 'user', status: 'completed',
    content: [{ type: 'input_text', text: 'I am in Paris.' }],
  }]);
  session.sendMessage(cfg.userText);
  await within('two responses', answered);
  const out = { ...seen, toolCalls, responses: turns, history: history(session) };
  session.close();
  return out;
}

// Connection 2: spoken input in three appends, the last committing it; then response.create; an audio answer.
async function voiceTurn() {
  const { session, transport, seen } = open({ outputModalities: ['audio'] }, []);
  let audioBytes = 0;
  session.on('audio', (event) => { audioBytes += event.data.byteLength; });
  const answered = when(transport, 'turn_done', () => true);
  const retrieved = when(session, 'transport_event', (e) => e.type === 'conversation.item.retrieved');
  await within('connect', session.connect({ apiKey: cfg.key }));
  const samples = Int16Array.from({ length: cfg.audioSamples }, (_, i) => Math.round(8000 * Math.sin(i / 9)));
  const third = Math.floor(samples.length / 3);
  session.sendAudio(samples.slice(0, third).buffer);
  session.sendAudio(samples.slice(third, 2 * third).buffer);
  session.sendAudio(samples.slice(2 * third).buffer, { commit: true });
  transport.requestResponse();
  const [done] = await within('response.done', answered);
  await within('conversation.item.retrieved', retrieved);
  const out = { ...seen, audioBytes, responses: [done.response.id], history: history(session) };
  session.close();
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
)
AGENTS = Framework(
    {"@openai/agents-realtime@0": "@openai/agents-realtime/dist/index.mjs", "ws@8": "ws/package.json"},
    AGENTS_FLOW,
    "/v1/realtime?model=gpt-realtime",
)


@pytest.fixture
async def agents_upstream() -> AsyncIterator[ScriptedUpstream]:
    """The scripted upstream answering conversation.item.retrieve (the Agents SDK retrieves transcribed items)."""
    async with ScriptedUpstream(retrieve=True) as up:
        yield up


def check_agents_conversation(seen: dict[str, Any], flow: dict[str, Any], upstream: ScriptedUpstream) -> None:
    """What the Agents SDK's session reports of both connections: its history (the app's own item, the question,
    the tool call with its output, the answer), the tool's arguments, the voice turn's transcripts and audio."""
    text, voice = seen["text"], seen["voice"]
    assert text["errors"] == [] and voice["errors"] == []
    assert text["toolCalls"] == [{"location": "Paris", "unit": "celsius"}] and len(text["responses"]) == 2
    assert [i["type"] for i in text["history"]] == ["message", "message", "function_call", "message"]
    mine, asked, call, answer = text["history"]
    assert mine["id"] == flow["itemId"] and mine["text"] == "I am in Paris." and asked["text"] == flow["userText"]
    assert call["name"] == "get_weather" and call["output"] == orjson.dumps(flow["toolResult"]).decode()
    assert answer["role"] == "assistant" and answer["text"] == upstream.reply_text
    said, reply = voice["history"]
    assert said["role"] == "user" and said["text"] == "What's the weather in Paris?"
    assert reply["role"] == "assistant" and reply["text"] == upstream.reply_text
    assert voice["audioBytes"] == 2 * 24000 * upstream.audio_ms // 1000


async def test_agents_realtime_records_and_replays_both_connections(
    agents_upstream: ScriptedUpstream,
    tmp_path: Path,
    proxy_process: list[ProxyProcess],
    processes: list[ReplayProcess],
) -> None:
    """@openai/agents-realtime (GA) records its two connections through the proxy; a fresh run against the strict
    replay of their cassette, with another app-made item id, gets the same history, tool call and audio back
    and the replay reports no mismatch."""
    first = flow()
    recorded, cassette, sessions = await record(tmp_path, agents_upstream, proxy_process, first, AGENTS)
    check_agents_conversation(recorded, first, agents_upstream)
    assert len(sessions) == 2 and {s["dialect"] for s in sessions} == {"ga"}
    again = flow()
    run, code, report, out = await replay(tmp_path, cassette, again, AGENTS, processes)
    assert code == 0 and report["ok"], out
    seen = run.ok()
    check_agents_conversation(seen, again, agents_upstream)
    assert first["itemId"] not in str(seen)


async def test_agents_realtime_asking_another_question_gets_a_mismatch(
    agents_upstream: ScriptedUpstream,
    tmp_path: Path,
    proxy_process: list[ProxyProcess],
    processes: list[ReplayProcess],
) -> None:
    """The same agent app asking another question: the strict replay answers the changed conversation.item.create
    with an error event the session reports to the app, still plays both connections to their end, and exits 1
    with the payload mismatch naming the text."""
    _, cassette, _ = await record(tmp_path, agents_upstream, proxy_process, flow(), AGENTS)
    changed = flow(userText="Will it rain in Lyon?")
    run, code, report, out = await replay(tmp_path, cassette, changed, AGENTS, processes)
    assert code == 1 and not report["ok"], out
    seen = run.ok()
    assert seen["voice"]["errors"] == [] and len(seen["text"]["responses"]) == 2
    (error,) = seen["text"]["errors"]
    assert error.startswith("rtproxy replay: conversation.item.create: payload differs")
    (mismatch,) = report["connections"][0]["mismatches"]
    assert (
        mismatch["kind"] == "payload" and mismatch["received"]["item"]["content"][0]["text"] == "Will it rain in Lyon?"
    )
    assert any(d.startswith("item.content[0].text") for d in mismatch["details"])
    assert report["connections"][1]["ok"]
