"""The I/O shell of ``rtproxy rerun``: a :class:`~rtproxy.replay.rerun.Plan` played against a real server.

An in-process recording proxy (:mod:`rtproxy.record.proxy`, the same code ``rtproxy proxy`` runs) listens on
127.0.0.1, port 0, in front of the upstream, and the rerun connects through it: the new session is recorded
exactly as any other. One task reads the server's frames into a :class:`~rtproxy.replay.rerun.RunState`; the
player sends each step once the state is :meth:`~rtproxy.replay.rerun.RunState.ready` for it, after its recorded
delay (scaled by ``speed``; 0 sends as fast as the server allows). Every wait is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from ..errors import UpstreamError
from ..record.proxy import Proxy
from ..store import Recorder
from .rerun import Plan, Step
from .rerun_ids import Call
from .rerun_live import APPENDED
from .rerun_state import MAX_EXTRA_ROUNDS, Divergence, Handler, RunState

Progress = Callable[[str], None]


@dataclass
class RerunResult:
    """How a rerun went; the session it recorded is ``session_id`` in the database."""

    session_id: str | None
    turns: int
    played: int = 0  # turns whose steps were all sent
    sent: int = 0  # frames sent
    stopped: Divergence | None = None  # a divergence or a timeout ended it early
    handled: list[tuple[Call, str]] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.stopped is None


class _Player:
    def __init__(
        self,
        plan: Plan,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        speed: float,
        timeout: float,
        handlers: Mapping[str, Handler],
        progress: Progress,
    ) -> None:
        self.plan, self.ws = plan, ws
        self.speed, self.timeout, self.handlers, self.progress = speed, timeout, handlers, progress
        self.state = RunState(plan)
        self.changed = asyncio.Event()
        self.server_closed = False
        self.loop = asyncio.get_running_loop()
        self.last_sent = self.loop.time()

    async def read(self) -> None:
        """Feed every server frame to the state until the connection ends."""
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.state.feed_server(msg.data)
                    self.changed.set()
        finally:
            self.server_closed = True
            self.changed.set()

    async def until(
        self, ready: Callable[[], bool], what: Callable[[], str], stuck: Callable[[], str | None]
    ) -> str | None:
        """Wait until `ready()`; None, or why not (a timeout, the server gone, or nothing more can come)."""
        deadline = self.loop.time() + self.timeout
        while not ready():
            reason = stuck()
            if reason is not None:
                return reason
            if self.server_closed:
                return f"the server closed the connection while the rerun waited for {what()}"
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return f"timed out after {self.timeout:g} s waiting for {what()}"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except (TimeoutError, asyncio.TimeoutError):
                pass
        return None

    async def _send_frame(self, data: str | bytes, what: str, turn: int) -> Divergence | None:
        try:
            if isinstance(data, bytes):
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(data)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as e:
            return Divergence(turn, f"the connection failed while sending {what}: {e}")
        self.last_sent = self.loop.time()
        return None

    async def answer_extra_calls(self, step: Step | None, turn: int) -> Divergence | None:
        """Answer, with --tools handlers, the calls the new model made where the recording made none (and the
        GPT-Live client delegations it did not have)."""
        state = self.state
        while True:
            call = state.extra_call(step)
            if call is not None:
                frames = state.extra_answer(call, self.handlers, turn)
                if isinstance(frames, Divergence):
                    return frames
                failed = await self._answer_one(call, frames, turn)
            elif (delegation := state.extra_delegation(step)) is not None:
                failed = await self._answer_delegation(delegation, turn)
            else:
                return None
            if failed is not None:
                return failed

    async def _answer_delegation(self, delegation: tuple[str, str, str], turn: int) -> Divergence | None:
        """Send a handler's reply to a client delegation; wait until the server acknowledged it."""
        state = self.state
        before = state.milestones[APPENDED]
        frame = state.delegation_answer(delegation, self.handlers, turn)
        if isinstance(frame, Divergence):
            return frame
        failed = await self._send_frame(frame, "the reply to a delegation", turn)
        if failed is not None:
            return failed
        state.sent(None)
        reason = await self.until(
            lambda: state.milestones[APPENDED] > before, lambda: f"{APPENDED} of the reply", lambda: None
        )
        return Divergence(turn, reason) if reason is not None else None

    async def _answer_one(self, call: Call, frames: list[str], turn: int) -> Divergence | None:
        """Send a call's output and response.create; wait until the response they provoke is over."""
        state = self.state
        before = state.done
        for data in frames:
            failed = await self._send_frame(data, f"the output of {call.name}", turn)
            if failed is not None:
                return failed
            state.sent(None)

        def answered() -> bool:
            return state.done > before and state.idle

        reason = await self.until(answered, lambda: f"the answer after {call.name}'s output", lambda: None)
        return Divergence(turn, reason) if reason is not None else None

    async def wait_ready(self, step: Step | None, turn: int) -> Divergence | None:
        """Wait until `step` (None: the end) may go, answering on the way the GPT-Live client delegations the
        recording did not have (a full-duplex server may wait for them before it says what the step waits for)."""
        state = self.state
        if step is None:
            ready, what, stuck = state.final_ready, state.final_waiting_for, state.delegation_mismatch
        else:
            ready, what, stuck = (
                (lambda: state.ready(step)),
                (lambda: state.waiting_for(step)),
                (lambda: state.stuck(step)),
            )
        for _ in range(MAX_EXTRA_ROUNDS + 1):  # delegation_answer refuses past MAX_EXTRA_ROUNDS
            reason = await self.until(lambda: ready() or state.extra_delegation(step) is not None, what, stuck)
            if reason is not None:
                return Divergence(turn, reason)
            delegation = state.extra_delegation(step)
            if delegation is None:
                return None
            failed = await self._answer_delegation(delegation, turn)
            if failed is not None:
                return failed
        return None

    async def send(self, step: Step, turn: int) -> Divergence | None:
        state = self.state
        waited = not state.ready(step)
        stop = await self.wait_ready(step, turn)
        if stop is not None:
            return stop
        extra = await self.answer_extra_calls(step, turn)
        if extra is not None:
            return extra
        now = self.loop.time()
        anchor = now if waited else self.last_sent
        if self.speed > 0 and step.delay > 0:
            pause = anchor + step.delay / self.speed - now
            if pause > 0:
                await asyncio.sleep(pause)  # pacing: the recorded client's pause, not a synchronisation
        data, divergence = state.answer(step, turn, self.handlers)
        if divergence is not None:
            return divergence
        failed = await self._send_frame(data, f"step {step.index + 1}", turn)
        if failed is not None:
            return failed
        state.sent(step.event)
        return None

    async def play(self, result: RerunResult) -> None:
        turns = self.plan.turns
        for turn in turns:
            self.progress(f"rerun: turn {turn.number} of {len(turns)} ({len(turn.steps)} client events)")
            for step in turn.steps:
                stop = await self.send(step, turn.number)
                if stop is not None:
                    result.stopped = stop
                    return
                result.sent += 1
            result.played += 1
        last = turns[-1].number
        stop = await self.wait_ready(None, last)
        if stop is not None:
            result.stopped = stop
            return
        result.stopped = await self.answer_extra_calls(None, last)


async def rerun(
    plan: Plan,
    *,
    upstream: str,
    db: str,
    label: str,
    api_key: str,
    speed: float = 1.0,
    timeout: float = 60.0,
    handlers: Mapping[str, Handler] | None = None,
    progress: Progress = lambda line: None,
    portable: bool | None = None,
) -> RerunResult:
    """Play `plan` against `upstream` through an in-process recording proxy writing to `db`."""
    (result,) = await rerun_each(
        [(plan, label)],
        upstream=upstream,
        db=db,
        api_key=api_key,
        speed=speed,
        timeout=timeout,
        handlers=handlers,
        progress=progress,
        portable=portable,
    )
    return result


async def rerun_each(
    plans: Sequence[tuple[Plan, str]],
    *,
    upstream: str,
    db: str,
    api_key: str,
    speed: float = 1.0,
    timeout: float = 60.0,
    handlers: Mapping[str, Handler] | None = None,
    progress: Progress = lambda line: None,
    portable: bool | None = None,
) -> list[RerunResult]:
    """Play each (plan, label) in order, each on a connection of its own (a new session, labelled), through one
    in-process recording proxy writing to `db`."""
    recorder = Recorder(db, portable=portable)
    recorder.start()
    proxy = Proxy(recorder, upstream=upstream, connect_timeout=min(timeout, 600.0))
    runner = web.AppRunner(proxy.make_app(), handle_signals=False, access_log=None)
    results: list[RerunResult] = []
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession(trust_env=False) as http:
            for plan, label in plans:
                proxy.label = label  # read when the relay opens its session
                result = RerunResult(None, len(plan.turns))
                results.append(result)
                before = len(proxy.finished)
                await _connect_and_play(http, port, plan, api_key, result, speed, timeout, handlers or {}, progress)
                try:
                    ids = await proxy.wait_finished(before + 1, timeout=10.0)
                except (TimeoutError, asyncio.TimeoutError):
                    ids = []
                result.session_id = ids[before] if len(ids) > before else None
    finally:
        await proxy.shutdown()
        await runner.cleanup()
        await asyncio.to_thread(recorder.close)
    return results


async def _connect_and_play(
    http: aiohttp.ClientSession,
    port: int,
    plan: Plan,
    api_key: str,
    result: RerunResult,
    speed: float,
    timeout: float,
    handlers: Mapping[str, Handler],
    progress: Progress,
) -> None:
    target = plan.path + (f"?{plan.query}" if plan.query else "")
    headers = dict(plan.headers)
    headers[plan.auth_header] = f"Bearer {api_key}" if plan.auth_header == "Authorization" else api_key
    try:
        ws = await asyncio.wait_for(
            http.ws_connect(
                URL(f"http://127.0.0.1:{port}{target}", encoded=True),
                headers=headers,
                protocols=plan.subprotocols,
                max_msg_size=0,
                autoping=True,
            ),
            timeout + 5.0,
        )
    except aiohttp.WSServerHandshakeError as e:
        raise UpstreamError(f"the upstream refused the connection: {e.status} {e.message}") from e
    except (TimeoutError, asyncio.TimeoutError) as e:
        raise UpstreamError(f"the upstream did not answer the handshake within {timeout:g} s") from e
    except (aiohttp.ClientError, OSError) as e:
        raise UpstreamError(f"cannot connect: {e}") from e
    player = _Player(plan, ws, speed=speed, timeout=timeout, handlers=handlers, progress=progress)
    reader = asyncio.ensure_future(player.read())
    try:
        await player.play(result)
    finally:
        await ws.close(code=1000)
        try:
            await asyncio.wait_for(reader, 5.0)
        except (TimeoutError, asyncio.TimeoutError):
            reader.cancel()
        result.handled = list(player.state.handled)
        result.server_errors = list(player.state.errors)
