"""The Node `openai` SDK through `rtproxy proxy --tls`: the client the `--tls` flag exists for.

The Node SDK only speaks wss://, so this is the proof that a Node user can record with rtproxy by
trusting rtproxy's local CA through NODE_EXTRA_CA_CERTS. It needs node and npm; the `openai` and `ws`
packages are installed once into a cache folder (skipped, saying why, where npm cannot fetch them).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import orjson

from rtproxy.store import Store
from tests.conftest import ProxyProcess, spawn_proxy
from tests.node_helpers import node_modules as install
from tests.upstream import ScriptedUpstream

SCRIPT = r"""
const { OpenAI } = require('openai');
const { OpenAIRealtimeWS } = require('openai/realtime/ws');

async function main() {
  const client = new OpenAI({ apiKey: process.env.TEST_KEY, baseURL: process.env.BASE_URL });
  const secret = await client.realtime.clientSecrets.create({ session: { type: 'realtime', model: 'gpt-realtime' } });
  const rt = new OpenAIRealtimeWS({ model: 'gpt-realtime' }, client);
  const types = [];
  let text = '';
  rt.on('error', (err) => { console.error('realtime error:', err.message); process.exit(3); });
  rt.socket.on('open', () => {
    rt.send({ type: 'session.update', session: { type: 'realtime', output_modalities: ['text'] } });
    rt.send({ type: 'conversation.item.create',
              item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Hello from Node' }] } });
    rt.send({ type: 'response.create' });
  });
  rt.on('event', (event) => {
    types.push(event.type);
    if (event.type === 'response.output_text.delta') text += event.delta;
    if (event.type === 'response.done') {
      rt.close();
      console.log(JSON.stringify({ types, text, secretTail: secret.value.slice(-4) }));
    }
  });
}
main().catch((err) => { console.error(err.stack || String(err)); process.exit(2); });
"""


def node_modules() -> Path:
    """A folder with the Node `openai` and `ws` packages installed (once; cached between runs)."""
    return install({"openai@6": "openai/realtime/ws.js", "ws@8": "ws/package.json"})


async def test_node_sdk_records_through_tls(
    upstream: ScriptedUpstream, tmp_path: Path, proxy_process: list[ProxyProcess], api_key: str
) -> None:
    """The Node SDK, trusting only rtproxy's local CA via NODE_EXTRA_CA_CERTS, makes a REST call and a text
    turn over wss://; both are recorded, and its key is not."""
    modules = await asyncio.to_thread(node_modules)
    home, db = tmp_path / "home", tmp_path / "rec.db"
    p = spawn_proxy(["--db", str(db), "--upstream", upstream.url, "--tls"], env={"RTPROXY_HOME": str(home)})
    proxy_process.append(p)
    cert = home / "tls" / "ca.pem"
    script = tmp_path / "turn.js"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "NODE_EXTRA_CA_CERTS": str(cert),
        "NODE_PATH": str(modules / "node_modules"),
        "TEST_KEY": api_key,
        "BASE_URL": f"https://localhost:{p.port}/v1",
    }
    r = await asyncio.to_thread(
        subprocess.run, ["node", str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert out["types"][0] == "session.created" and out["types"][-1] == "response.done"
    assert out["text"] == upstream.reply_text
    code, log, _ = p.stop()
    assert code == 0 and f"NODE_EXTRA_CA_CERTS={cert}" in log
    with Store(db) as store:
        (session,) = store.sessions()
        (rest,) = store.http_exchanges()
        frames = list(store.frames(session["id"]))
    assert session["status"] == "closed" and session["dialect"] == "ga"
    assert [f.data for f in frames if f.direction == "client"] == upstream.connections[0].received
    assert rest["path"] == "/v1/realtime/client_secrets" and rest["status"] == 200
    assert out["secretTail"] in rest["response_body"]
    blob = b"".join(f.read_bytes() for f in tmp_path.glob("rec.db*"))
    assert api_key.encode() not in blob
