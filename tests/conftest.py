"""Shared fixtures: a scripted upstream, the proxy in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from aiohttp import web

from rtproxy.record.proxy import Proxy
from rtproxy.store import Recorder, Store
from tests.upstream import ScriptedUpstream

T = TypeVar("T")

pytest_plugins = ("pytester",)

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
for _var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
    os.environ.pop(_var, None)


def make_key() -> str:
    """A fake API key, made at run time so no fixture file holds one."""
    return "sk-test-" + secrets.token_urlsafe(24)


@pytest.fixture
def api_key() -> str:
    return make_key()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as up:
        yield up


@dataclass
class RunningProxy:
    proxy: Proxy
    recorder: Recorder
    db: Path
    port: int

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    async def settle(self, sessions: int = 1) -> list[str]:
        """Wait until `sessions` relays ended and everything is on disk; their ids."""
        ids = await self.proxy.wait_finished(sessions)
        await asyncio.to_thread(self.recorder.flush)
        return ids


def load_recordings_script(name: str) -> Any:
    """recordings/NAME.py as a module (the client flows the example recordings are made with)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "recordings" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def record_example(db: Path, upstream_url: str, target: Path, drive: Callable[[str], Awaitable[T]]) -> T:
    """Run `drive(ws_base)` through a real recording proxy in front of `upstream_url`, recording into `db`, and
    export the one session it made to `target` (how the example recordings in recordings/ are made)."""
    from rtproxy.recording import write_recording

    running, runner = await start_proxy(db, upstream_url, label="example")
    try:
        result = await drive(running.ws_base)
        (sid,) = await running.settle()
    finally:
        await running.proxy.shutdown()
        await runner.cleanup()
        running.recorder.close()
    with Store(db) as store:
        write_recording(target, store.session(sid), store.frames(sid))
    return result


async def write_examples(
    names: list[str],
    flows: Mapping[str, Any],
    default: Iterable[str],
    record: Callable[..., Awaitable[Any]],
    here: Path,
) -> None:
    """The recordings scripts' main: record each named flow (or the default ones) into here/NAME.jsonl."""
    import tempfile

    unknown = [n for n in names if n not in flows]
    if unknown:
        raise SystemExit(f"unknown recording(s) {', '.join(unknown)}; known: {', '.join(flows)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or list(default):
            path, _ = await record(flows[name], here / f"{name}.jsonl", Path(tmp) / f"{name}.db")
            print(f"{path.relative_to(here.parent)}: {path.stat().st_size} bytes")


async def start_proxy(
    db: Path, upstream_url: str, *, portable: bool | None = None, **kwargs: object
) -> tuple[RunningProxy, web.AppRunner]:
    recorder = Recorder(str(db), portable=portable)
    recorder.start()
    proxy = Proxy(recorder, upstream=upstream_url, **kwargs)  # type: ignore[arg-type]
    runner = web.AppRunner(proxy.make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return RunningProxy(proxy, recorder, db, port), runner


@pytest.fixture(params=[pytest.param(False, id="fast"), pytest.param(True, id="portable")])
async def proxy(
    upstream: ScriptedUpstream, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningProxy]:
    """The proxy in-process, recording through a writer process: every test using it runs on both recorder
    paths (the portable one is what Windows takes)."""
    running, runner = await start_proxy(tmp_path / "rt.db", upstream.url, portable=request.param)
    try:
        yield running
    finally:
        await running.proxy.shutdown()
        await runner.cleanup()
        running.recorder.close()


# --- the real command, as a subprocess ------------------------------------------------


def rtproxy_exe() -> list[str]:
    exe = shutil.which("rtproxy", path=os.path.dirname(sys.executable)) or shutil.which("rtproxy")
    assert exe, "the rtproxy console script is not installed (pip install -e .)"
    return [exe]


@dataclass
class ProxyProcess:
    """A `rtproxy proxy` subprocess; its stdout and stderr go to files so nothing is lost or blocks."""

    proc: subprocess.Popen[bytes]
    port: int
    out_path: Path
    err_path: Path

    @property
    def output(self) -> str:
        return self.out_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.output, self.err_path.read_text()


LISTENING = re.compile(r"listening on wss?://[^:]+:(\d+)")


def spawn_proxy(args: list[str], env: dict[str, str] | None = None, timeout: float = 20.0) -> ProxyProcess:
    """Start `rtproxy proxy …` and wait for its 'listening on' line."""
    import tempfile
    import time

    logs = Path(tempfile.mkdtemp(prefix="rtproxy-proc-"))
    out_path, err_path = logs / "stdout", logs / "stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [*rtproxy_exe(), "proxy", "--port", "0", *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        m = LISTENING.search(out_path.read_text())
        if m:
            return ProxyProcess(proc, int(m.group(1)), out_path, err_path)
        time.sleep(0.02)  # polling the log file for the start line
    proc.kill()
    proc.wait()
    raise AssertionError(f"proxy did not start: {out_path.read_text()}\n{err_path.read_text()}")


class HasProcess(Protocol):
    proc: subprocess.Popen[Any]


@pytest.fixture
def processes() -> Iterator[list[HasProcess]]:
    """Subprocesses (replay servers, proxies: anything with a ``proc``) started here are killed at teardown."""
    started: list[HasProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.communicate()


@pytest.fixture
def proxy_process(processes: list[HasProcess]) -> list[HasProcess]:
    """The proxies a test starts (``spawn_proxy``), killed at teardown like everything in ``processes``."""
    return processes
