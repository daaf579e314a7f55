"""pytest fixtures that replay recorded Realtime sessions, and record them when asked.

::

    async def test_voice_turn(rtproxy_replay):
        replay = rtproxy_replay("recordings/voice-ga.jsonl", match="ordered")
        client = AsyncOpenAI(api_key="test", websocket_base_url=replay.url)
        ...                                  # the code under test, unchanged
        assert replay.received[0]["type"] == "session.update"

The replay server runs in-process (on a thread of its own, so sync and async
tests alike can use it) on 127.0.0.1. When the test's client departs from the
recording, the test fails with the replay report; ``check=False`` lets the
test inspect ``replay.report`` itself instead.

Record mode, in the spirit of vcrpy: with ``--rtproxy-record``, or when the
recording file does not exist yet, ``url`` points at a recording proxy to
``--rtproxy-upstream`` (default https://api.openai.com) and the session is
written to the recording file when the test ends. Without it nothing but
127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import warnings
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .replay import Report

if TYPE_CHECKING:  # the server (aiohttp, the store) loads when a test first asks for a replay
    from .replay_server import ReplayServer

T = TypeVar("T")
HANDLES = pytest.StashKey[list["RtproxyReplay"]]()
SETTLE_TIMEOUT = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rtproxy", "rtproxy: replay recorded OpenAI Realtime sessions")
    group.addoption(
        "--rtproxy-record",
        action="store_true",
        default=False,
        help="Record the sessions of tests using rtproxy_replay against the real upstream, "
        "overwriting their recordings.",
    )
    group.addoption(
        "--rtproxy-upstream",
        default="https://api.openai.com",
        metavar="URL",
        help="Upstream to record from (default https://api.openai.com).",
    )


class _Loop:
    """An event loop on a daemon thread; coroutines run there with a timeout."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rtproxy-replay", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class RtproxyReplay:
    """A replay (or recording) server for one recording file."""

    def __init__(self, path: Path, loop: _Loop, *, mode: str, check: bool) -> None:
        self.path, self.mode, self.check = path, mode, check
        self._loop = loop
        self.port = 0
        self._server: ReplayServer | None = None
        self._runner: Any = None
        self._recording: Any = None  # (Proxy, Recorder, db path, tmpdir) in record mode

    @property
    def url(self) -> str:
        """The WebSocket base URL, as the openai SDK's ``websocket_base_url`` (ends in /v1)."""
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def base_url(self) -> str:
        """The HTTP base URL (REST calls are forwarded in record mode only)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def report(self) -> Report:
        if self._server is None:
            return Report(str(self.path), "record")
        return self._server.report

    @property
    def received(self) -> list[Any]:
        """The events the client sent, every connection in turn (parsed JSON; other frames as sent)."""
        if self._server is not None:
            return [e for p in list(self._server.players) for e in list(p.received)]
        return self._recorded_client_events()

    # -- lifecycle --

    def start_replay(self, match: str, pace: str, speed: float) -> None:
        from .replay_server import ReplayServer, load_script, start

        script = load_script(self.path)
        self._server = ReplayServer(script, policy=match, pace=pace, speed=speed, keep_received=True)
        self._runner, self.port = self._loop.run(start(self._server))

    def start_recording(self, upstream: str) -> None:
        from .proxy import Proxy
        from .store import Recorder

        tmp = tempfile.TemporaryDirectory(prefix="rtproxy-record-")
        db = Path(tmp.name) / "record.db"
        recorder = Recorder(str(db))
        recorder.start()

        async def serve() -> tuple[Any, Any, int]:
            from aiohttp import web

            proxy = Proxy(recorder, upstream=upstream, label=f"pytest {self.path.name}")
            runner = web.AppRunner(proxy.make_app(), handle_signals=False, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return proxy, runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        proxy, self._runner, self.port = self._loop.run(serve())
        self._recording = (proxy, recorder, db, tmp)

    def settle(self) -> None:
        """Wait (bounded) until no client connection is open."""
        if self._server is not None:
            self._loop.run(self._server.wait_idle(SETTLE_TIMEOUT), SETTLE_TIMEOUT + 5)
        elif self._recording is not None:
            proxy = self._recording[0]

            async def idle() -> None:
                for _ in range(int(SETTLE_TIMEOUT / 0.01)):
                    if not proxy.relays:
                        return
                    await asyncio.sleep(0.01)

            self._loop.run(idle(), SETTLE_TIMEOUT + 5)

    def verify(self) -> None:
        """Fail the test with the report if a connection departed from the recording."""
        if self._server is None or not self.check:
            return
        self.settle()
        if not self.report.ok:
            pytest.fail(self.report.format(), pytrace=False)

    def close(self) -> None:
        if self._server is not None:
            self._loop.run(self._server.shutdown())
        if self._recording is not None:
            self._loop.run(self._recording[0].shutdown())
        if self._runner is not None:
            self._loop.run(self._runner.cleanup())
        if self._recording is not None:
            self._write_recording()

    def _recorded_client_events(self) -> list[Any]:
        from .protocol import Direction
        from .store import Store

        if self._recording is None:
            return []
        _, recorder, db, _ = self._recording
        recorder.flush()
        with Store(db) as store:
            ids = [s["id"] for s in store.sessions() if s["status"] != "rejected"]
            frames = [f for sid in reversed(ids) for f in store.frames(sid)]
        return [f.event if f.event is not None else f.data for f in frames if f.direction is Direction.CLIENT]

    def _write_recording(self) -> None:
        from .recording import write_recording
        from .store import Store

        _, recorder, db, tmp = self._recording
        recorder.close()
        try:
            with Store(db) as store:
                sessions = [s for s in reversed(store.sessions()) if s["status"] != "rejected"]
                if not sessions:
                    warnings.warn(f"rtproxy: no session was recorded for {self.path}", stacklevel=1)
                    return
                if len(sessions) > 1:
                    warnings.warn(
                        f"rtproxy: {len(sessions)} sessions recorded; {self.path} keeps the first", stacklevel=1
                    )
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_recording(self.path, sessions[0], store.frames(sessions[0]["id"]))
        finally:
            tmp.cleanup()


@pytest.fixture
def rtproxy_replay(request: pytest.FixtureRequest) -> Iterator[Callable[..., RtproxyReplay]]:
    """A factory: ``rtproxy_replay(path, match="ordered", pace="instant", speed=1.0, check=True)``.

    Relative paths are taken from the rootdir. The returned object has
    ``url`` (pass it as ``websocket_base_url``), ``received`` and ``report``.
    """
    config = request.config
    handles: list[RtproxyReplay] = []
    request.node.stash[HANDLES] = handles
    loop: list[_Loop] = []

    def factory(
        path: str | Path, *, match: str = "ordered", pace: str = "instant", speed: float = 1.0, check: bool = True
    ) -> RtproxyReplay:
        target = Path(path)
        if not target.is_absolute():
            target = config.rootpath / target
        if not loop:
            loop.append(_Loop())
        record = bool(config.getoption("rtproxy_record")) or not target.exists()
        handle = RtproxyReplay(target, loop[0], mode="record" if record else "replay", check=check)
        handles.append(handle)
        if record:
            handle.start_recording(str(config.getoption("rtproxy_upstream")))
        else:
            handle.start_replay(match, pace, speed)
        return handle

    try:
        yield factory
    finally:
        for handle in handles:
            handle.close()
        if loop:
            loop[0].stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After a passing test body, fail it if one of its replays saw a mismatch."""
    result = yield
    for handle in item.stash.get(HANDLES, []):
        handle.verify()
    return result
