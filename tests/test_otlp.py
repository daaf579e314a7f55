"""Sessions as traces, end to end: a real OTLP receiver (Arize Phoenix's local server, a subprocess), the real
CLI, the real proxy with the real openai SDK; the spans are read back from Phoenix's own REST API."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rtproxy.conversation.cost import price_usage
from rtproxy.store import Store
from tests.conftest import make_key, rtproxy_exe, spawn_proxy
from tests.test_replay_server import FLOWS
from tests.upstream import ScriptedUpstream

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "recordings" / "function-call-ga.jsonl"
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{120,}={0,2}")
#: Phoenix starts in 10-30 s on a busy machine: the bound of its readiness poll.
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Phoenix:
    url: str
    proc: subprocess.Popen[bytes]

    def spans(self, trace_id: str | None = None, session_id: str | None = None) -> list[dict[str, Any]]:
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/v1/projects/default/spans?limit=1000", timeout=10) as r:
            data = json.load(r)["data"]
        return [
            s
            for s in data
            if (trace_id is None or s["context"]["trace_id"] == trace_id)
            and (session_id is None or s["attributes"].get("rtproxy.session.id") == session_id)
        ]

    def trace(self, trace_id: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The spans of one trace once Phoenix holds `count` of them (it ingests in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)  # polling Phoenix's API, bounded by the deadline

    def session_trace(self, session_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            roots = self.spans(session_id=session_id)
            if roots or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polling Phoenix's API, bounded by the deadline
        assert roots, f"no trace of session {session_id} reached Phoenix within {timeout:g} s"
        return self.spans(roots[0]["context"]["trace_id"])


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    exe = shutil.which("phoenix", path=os.path.dirname(sys.executable)) or shutil.which("phoenix")
    assert exe, "arize-phoenix is not installed (pip install -e '.[test]')"
    work = tmp_path_factory.mktemp("phoenix")
    port, grpc = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = work / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "serve"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    import urllib.error
    import urllib.request

    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                ready = r.status == 200
        except (urllib.error.URLError, OSError):
            pass
        if ready:
            break
        time.sleep(0.2)  # polling Phoenix's readiness, bounded by START_TIMEOUT
    if not ready:
        proc.kill()
        proc.wait()
        pytest.fail(f"phoenix serve did not start within {START_TIMEOUT:g} s:\n{log.read_text()[-4000:]}")
    try:
        yield Phoenix(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=timeout)


def imported(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "db"
    done = cli("import", str(RECORDING), "--db", str(db))
    assert done.returncode == 0, done.stderr
    return db, done.stdout.strip().splitlines()[-1]


SENT = re.compile(r"sent session (\S+): (\d+) spans, trace ([0-9a-f]{32})")


def values(spans: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for s in spans:
        out.extend(str(v) for v in s["attributes"].values())
        out.extend(str(e) for e in s.get("events") or [])
    return out


def test_export_sends_root_responses_and_tool_call(phoenix: Phoenix, tmp_path: Path) -> None:
    db, sid = imported(tmp_path)
    done = cli("export", sid, "--db", str(db), "--otlp", phoenix.url)
    assert done.returncode == 0, done.stderr
    m = SENT.search(done.stdout)
    assert m and m.group(1) == sid, done.stdout
    count, trace_id = int(m.group(2)), m.group(3)
    spans = phoenix.trace(trace_id, count)
    assert len(spans) == count == 4
    (root,) = [s for s in spans if s["parent_id"] is None]
    chats = sorted((s for s in spans if s["name"].startswith("chat ")), key=lambda s: s["start_time"])
    (tool,) = [s for s in spans if s["name"].startswith("execute_tool")]
    assert root["name"] == "realtime gpt-realtime"
    assert [c["parent_id"] for c in chats] == [root["context"]["span_id"]] * 2
    assert tool["parent_id"] == chats[0]["context"]["span_id"]
    assert root["start_time"].startswith("2026-11-25T09:16:59.370")  # the recording's own time
    a, c, t = root["attributes"], chats[0]["attributes"], tool["attributes"]
    assert a["gen_ai.system"] == "openai" and a["rtproxy.session.id"] == sid and a["rtproxy.status"] == "closed"
    assert a["gen_ai.request.model"] == "gpt-realtime" and a["gen_ai.usage.input_tokens"] == 240
    assert c["gen_ai.usage.input_tokens"] == 120 and c["gen_ai.usage.output_tokens"] == 67
    assert c["gen_ai.response.model"] == "gpt-realtime" and c["gen_ai.response.id"].startswith("resp_")
    assert c["rtproxy.usage.input_audio_tokens"] == 20
    assert t["gen_ai.tool.name"] == "get_weather" and t["gen_ai.tool.call.id"].startswith("call_")
    with Store(db) as store:
        usage = next(
            f.event["response"]["usage"]
            for f in store.frames(sid)
            if f.event is not None and f.event.get("type") == "response.done"
        )
        cost = price_usage("realtime", usage, "gpt-realtime", when=store.session(sid)["started_at"])
    assert c["rtproxy.cost.price_data"].startswith("genai-prices")
    if cost.total is not None:
        assert c["rtproxy.cost.usd"] == pytest.approx(float(cost.total))
    else:
        assert "rtproxy.cost.usd" not in c and c["rtproxy.cost.reason"]
    assert not [k for s in spans for k in s["attributes"] if "content" in k or k.startswith("gen_ai.tool.call.a")]
    for value in values(spans):
        assert not BASE64_RUN.search(value) and "Bearer" not in value


def test_export_content_only_when_asked(phoenix: Phoenix, tmp_path: Path) -> None:
    db, sid = imported(tmp_path)
    done = cli("export", sid, "--db", str(db), "--otlp", phoenix.url, "--otlp-content")
    assert done.returncode == 0, done.stderr
    m = SENT.search(done.stdout)
    assert m, done.stdout
    spans = phoenix.trace(m.group(3), int(m.group(2)))
    (tool,) = [s for s in spans if s["name"].startswith("execute_tool")]
    assert "Paris" in tool["attributes"]["gen_ai.tool.call.arguments"]
    assert "temperature_c" in tool["attributes"]["gen_ai.tool.call.result"]
    outputs = [s["attributes"].get("rtproxy.content.output") for s in spans]
    assert "It is 18 degrees in Paris." in outputs


def test_export_to_a_dead_collector_is_one_line(tmp_path: Path) -> None:
    db, sid = imported(tmp_path)
    done = cli("export", sid, "--db", str(db), "--otlp", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "cannot send session" in done.stderr and "connection refused" in done.stderr
    bad = cli("export", sid, "--db", str(db), "--otlp", "ftp://127.0.0.1")
    assert bad.returncode == 2 and "http(s) URL" in bad.stderr
    both = cli("export", sid, "--db", str(db), "--otlp", "http://127.0.0.1:9", "-o", str(tmp_path / "x.jsonl"))
    assert both.returncode == 2 and "exactly one of" in both.stderr and not (tmp_path / "x.jsonl").exists()
    alone = cli("export", sid, "--db", str(db), "--otlp-content")
    assert alone.returncode == 2 and "--otlp-content needs --otlp" in alone.stderr


async def run_flow(name: str, base: str, key: str) -> float:
    t0 = time.monotonic()
    await FLOWS.run_flow(FLOWS.FLOWS[name], base, key)
    return time.monotonic() - t0


def sessions(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    with Store(db) as store:
        return store.sessions()


async def wait_sessions(db: Path, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(rows := sessions(db)) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling the database for the writer's commit, bounded
    return rows


async def test_proxy_sends_each_session_as_it_ends(phoenix: Phoenix, tmp_path: Path) -> None:
    db = tmp_path / "db"
    key = make_key()
    async with ScriptedUpstream(exact=True, **FLOWS.FLOWS["same-conversation-realtime"].upstream) as up:
        proxy = spawn_proxy(["--upstream", up.url, "--db", str(db), "--otlp", phoenix.url, "--otlp-content"])
        try:
            await run_flow("same-conversation-realtime", f"ws://127.0.0.1:{proxy.port}/v1", key)
            (row,) = await wait_sessions(db, 1)
            spans = await asyncio.to_thread(phoenix.session_trace, row["id"])
        finally:
            code, _, err = proxy.stop()
    assert code == 0, err
    (root,) = [s for s in spans if s["parent_id"] is None]
    chats = [s for s in spans if s["parent_id"] == root["context"]["span_id"]]
    assert chats and all(s["name"] == "chat gpt-realtime" for s in chats)
    tools = [s for s in spans if s["name"] == "execute_tool get_weather"]
    assert len(tools) == 1 and tools[0]["parent_id"] in {c["context"]["span_id"] for c in chats}
    assert root["attributes"]["rtproxy.client_events"] > 0
    # a voice session with content on: still no audio, and the client's key nowhere
    for value in values(spans):
        assert key not in value and key[-12:] not in value
        assert not BASE64_RUN.search(value), value[:80]
    assert "cannot send traces" not in err


@pytest.fixture(params=["dead", "silent"])
def bad_collector(request: pytest.FixtureRequest) -> Iterator[str]:
    """A collector that is not there (a closed port), or one that takes the connection and never answers."""
    if request.param == "dead":
        yield f"http://127.0.0.1:{free_port()}"
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # never accepted: the kernel completes the handshake, nobody ever answers
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


async def test_a_dead_or_silent_collector_never_delays_or_loses_the_recording(
    tmp_path: Path, bad_collector: str
) -> None:
    db = tmp_path / "db"
    dead = bad_collector
    async with ScriptedUpstream(exact=True, **FLOWS.FLOWS["function-call-ga"].upstream) as up:
        proxy = spawn_proxy(["--upstream", up.url, "--db", str(db), "--otlp", dead])
        try:
            base = f"ws://127.0.0.1:{proxy.port}/v1"
            first = await run_flow("function-call-ga", base, make_key())
            second = await run_flow("function-call-ga", base, make_key())
            # the exporter retries a refused connection for 10 s: a session waiting on it would take that long
            assert first < 5.0 and second < 5.0, (first, second)
            deadline = time.monotonic() + 60
            while "cannot send traces" not in proxy.err_path.read_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # polling the proxy's log for its warning, bounded
        finally:
            code, _, err = proxy.stop(signal.SIGTERM, timeout=30)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "cannot send traces" in line]
    assert len(warned) == 1, err  # once per outage, not per session or span
    assert dead in warned[0] and "the recording is kept" in warned[0]
    assert "Traceback" not in err
    rows = sessions(db)
    assert len(rows) == 2 and all(r["status"] == "closed" and r["ended_at"] for r in rows)
    with Store(db) as store:
        assert all(store.count_events(r["id"]) == r["client_events"] + r["server_events"] > 0 for r in rows)


def test_proxy_refuses_a_bad_otlp_url(tmp_path: Path) -> None:
    done = subprocess.run(
        [*rtproxy_exe(), "proxy", "--db", str(tmp_path / "db"), "--otlp", "not a url"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "http(s) URL" in done.stderr and "Traceback" not in done.stderr
