"""pytest fixtures that replay recorded sessions (Realtime, GPT-Live, Responses), and record them when asked.

::

    async def test_voice_turn(rtproxy_replay):
        replay = rtproxy_replay("recordings/voice-ga.jsonl", match="ordered")
        client = AsyncOpenAI(api_key="test", websocket_base_url=replay.url)
        ...                                  # the code under test, unchanged
        assert replay.received[0]["type"] == "session.update"

A GPT-Live recording is served the same way (``client.live.connect()`` with
the same ``websocket_base_url``): the client's commands and the length of the
audio it streams drive the replay, and its own event ids come back as
``client_event_id``. So is a Responses WebSocket mode recording (an agent on
openai-agents' Responses WebSocket transport, or ``client.responses.connect()``):
give the agent ``websocket_base_url=replay.url`` (and ``base_url=replay.base_url``);
a request whose input, instructions or tools changed fails the test.

The replay server runs in-process (on a thread of its own, so sync and async
tests alike can use it) on 127.0.0.1. When the test's client departs from the
recording, the test fails with the replay report (each mismatch with the
expected and received events, the fields that differ, the events before and
what the replay did); ``check=False`` lets the test inspect ``replay.report``
itself instead.

A recording (cassette) holds every connection the test opened, in order: one
per call, or the SDK's reconnection after a drop. Replay serves the test's
k-th connection with the k-th recorded one, closed or dropped as recorded, and
the report (and the test's failure) covers them all, a recorded connection the
test never opened included.

Record modes, as in vcrpy and pytest-recording. In a recording mode ``url``
points at a recording proxy to ``--rtproxy-upstream`` (default
https://api.openai.com) and the session is written to the recording file when
the test ends; the client talks to the real API with whatever credentials it
holds.

- ``none`` (the default): only replay. A missing recording fails the test,
  naming the file and how to record it; nothing but 127.0.0.1 is contacted,
  the upstream never.
- ``once``: record when the recording file does not exist, replay it when it
  does.
- ``all``: record always, overwriting the recording.
- ``new_episodes``: accepted for vcrpy users and the same as ``all``. vcrpy
  replays the requests its cassette holds and records only the new ones; a
  Realtime session is one stateful conversation (every server event depends on
  all the client events before it), so a recorded session cannot be replayed
  in part and continued live: what is new can only be captured by recording
  the session again.

The mode comes from, first to last: ``--rtproxy-record-mode`` on the command
line (``--rtproxy-record`` is short for ``all``), which overrides the tests'
own choices so ``--rtproxy-record-mode=none`` keeps a whole run offline; the
``record_mode=`` argument of the fixture factory; the test's marker
``@pytest.mark.rtproxy(record_mode="once")``; ``none``.
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

from .replay.script import Report

if TYPE_CHECKING:  # the server (aiohttp, the store) loads when a test first asks for a replay
    from .replay.server import ReplayServer

T = TypeVar("T")
HANDLES = pytest.StashKey[list["RtproxyReplay"]]()
SETTLE_TIMEOUT = 5.0
RECORD_MODES = ("none", "once", "new_episodes", "all")
MARKER = "rtproxy"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rtproxy", "rtproxy: replay recorded OpenAI Realtime and GPT-Live sessions")
    group.addoption(
        "--rtproxy-record-mode",
        choices=RECORD_MODES,
        default=None,
        help="When tests using rtproxy_replay record against the real upstream: none (default: replay only, a "
        "missing recording fails the test), once (record missing recordings), all or new_episodes (re-record "
        "every recording). Overrides the tests' own record_mode.",
    )
    group.addoption(
        "--rtproxy-record",
        action="store_true",
        default=False,
        help="Short for --rtproxy-record-mode=all.",
    )
    group.addoption(
        "--rtproxy-upstream",
        default="https://api.openai.com",
        metavar="URL",
        help="Upstream to record from (default https://api.openai.com).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(record_mode=...): the rtproxy_replay record mode of this test, one of "
        f"{', '.join(RECORD_MODES)} (--rtproxy-record-mode on the command line overrides it)",
    )


def _check_mode(mode: object, where: str) -> str:
    if mode not in RECORD_MODES:
        pytest.fail(f"rtproxy: record_mode {mode!r} ({where}) is not one of {', '.join(RECORD_MODES)}", pytrace=False)
    return str(mode)


def resolve_record_mode(request: pytest.FixtureRequest, argument: str | None = None) -> str:
    """The record mode of this test: the command line, else the factory's argument, else the marker, else none."""
    config = request.config
    cli = config.getoption("rtproxy_record_mode")
    if cli is not None:
        return str(cli)
    if config.getoption("rtproxy_record"):
        return "all"
    if argument is not None:
        return _check_mode(argument, "rtproxy_replay argument")
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None and "record_mode" in marker.kwargs:
        return _check_mode(marker.kwargs["record_mode"], f"@pytest.mark.{MARKER}")
    return "none"


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

    def __init__(self, path: Path, loop: _Loop, *, mode: str, check: bool, record_mode: str = "none") -> None:
        self.path, self.mode, self.check, self.record_mode = path, mode, check, record_mode
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
        from .replay.server import ReplayServer, load_scripts, start

        scripts = load_scripts(self.path)
        self._server = ReplayServer(scripts, policy=match, pace=pace, speed=speed, keep_received=True)
        self._runner, self.port = self._loop.run(start(self._server))

    def start_recording(self, upstream: str) -> None:
        from .record.proxy import Proxy
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
        from .protocols.wire import Direction
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
        from .recording import write_connections
        from .store import Store

        _, recorder, db, tmp = self._recording
        recorder.close()
        try:
            with Store(db) as store:
                sessions = [s for s in reversed(store.sessions()) if s["status"] != "rejected"]
                if not sessions:
                    warnings.warn(f"rtproxy: no session was recorded for {self.path}", stacklevel=1)
                    return
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_connections(self.path, [(s, store.frames(s["id"])) for s in sessions])
        finally:
            tmp.cleanup()


@pytest.fixture
def rtproxy_replay(request: pytest.FixtureRequest) -> Iterator[Callable[..., RtproxyReplay]]:
    """A factory: ``rtproxy_replay(path, match="ordered", pace="instant", speed=1.0, check=True, record_mode=None)``.

    Relative paths are taken from the rootdir. The returned object has
    ``url`` (pass it as ``websocket_base_url``), ``received`` and ``report``.
    ``record_mode`` (none, once, new_episodes, all) is this call's record mode
    unless the command line sets one; see the module docstring.
    """
    config = request.config
    handles: list[RtproxyReplay] = []
    request.node.stash[HANDLES] = handles
    loop: list[_Loop] = []

    def factory(
        path: str | Path,
        *,
        match: str = "ordered",
        pace: str = "instant",
        speed: float = 1.0,
        check: bool = True,
        record_mode: str | None = None,
    ) -> RtproxyReplay:
        target = Path(path)
        if not target.is_absolute():
            target = config.rootpath / target
        mode = resolve_record_mode(request, record_mode)
        record = mode in ("all", "new_episodes") or (mode == "once" and not target.exists())
        if not record and not target.exists():
            pytest.fail(
                f"rtproxy: no recording at {target} (record mode none: tests only replay). Record it with "
                f"`pytest --rtproxy-record-mode=once {request.node.nodeid}`, which connects to "
                f"{config.getoption('rtproxy_upstream')} with your client's credentials",
                pytrace=False,
            )
        if not loop:
            loop.append(_Loop())
        handle = RtproxyReplay(target, loop[0], mode="record" if record else "replay", check=check, record_mode=mode)
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
