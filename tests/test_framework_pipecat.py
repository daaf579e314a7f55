"""Pipecat (pipecat-ai) voice agents recorded through the real proxy and replayed offline to a fresh run.

Pipecat's ``OpenAIRealtimeLLMService`` is its own Realtime client (``websockets``, its own pydantic events, its
own event loop) and speaks the GA dialect only: it opens ``{base_url}?model=…`` with an ``Authorization`` header
and no ``OpenAI-Beta`` header, and its receive loop knows GA event names only (``response.output_audio.delta``,
``conversation.item.added``), so a beta session is not something it can have; these tests cover GA. The ids it
makes itself: every client event's ``event_id`` (a uuid4) and every ``conversation.item.create``'s ``item.id``
(a uuid4 hex), both new on every run; it waits for ``conversation.item.added`` of its own items (to tell them
from the model's) and answers tool calls by the server's ``call_id``. Once ``session.updated`` arrives it sends
its context as a burst: ``conversation.item.create`` per message, ``session.update`` (tools, instructions) and
``response.create``, nothing from the server between. Under server VAD it streams the microphone as
``input_audio_buffer.append`` and, on ``speech_started``, truncates what the bot was saying at
``min(wall time, audio received)``: a value of its clock, different on every run.

The app here is a real ``Pipeline`` (context aggregators, the service, a collector) run by a ``WorkerRunner``
(pipecat 1.14's names for PipelineTask/PipelineRunner), pointed at the proxy or the replay through ``base_url``
only, with a registered tool. Two of Pipecat's own timing races are kept out of the app so that a strict replay
is deterministic: the tool is the service's, not the context's (the first ``session.update``, sent on
``session.created``, carries the context's tools only if the context came first), and the aggregator does not
broadcast interruptions (the one it sends with the transcript races the answer's first audio delta).

Pipecat's ``OpenAILiveLLMService`` targets ``/v1/live/sessions`` (GPT-Live, one dialect): ``session.start`` on
its first context, input audio only once ``session.started`` came, a uuid4 ``event_id`` on every command (the
server echoes it as ``client_event_id``), and with ``ResponsesDelegation`` it runs the app's tools for the
delegated Responses backend (``response.item.create`` with the output, then ``response.create``); it is covered
against ``tests/live_upstream.py`` below.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("pipecat.services.openai.realtime.llm")

from loguru import logger  # noqa: E402  (pipecat's logger; its debug lines would flood the output)
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema  # noqa: E402
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallInProgressFrame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMRunFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.llm_service import FunctionCallParams  # noqa: E402
from pipecat.services.openai.live.llm import OpenAILiveLLMService, ResponsesDelegation  # noqa: E402
from pipecat.services.openai.realtime import events  # noqa: E402
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService  # noqa: E402
from pipecat.services.openai.responses.llm import OpenAIResponsesLLMSettings  # noqa: E402
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from rtproxy.recording import read_connections  # noqa: E402
from tests.conftest import make_key, rtproxy_exe, spawn_proxy  # noqa: E402
from tests.live_upstream import LiveUpstream, silence  # noqa: E402
from tests.test_replay_server import spawn_replay  # noqa: E402
from tests.upstream import RATE, ScriptedUpstream, tone  # noqa: E402

logger.remove()
logger.add(sys.stderr, level="WARNING")

pytestmark = pytest.mark.slow

WEATHER = FunctionSchema(
    name="get_weather",
    description="The weather in a city.",
    properties={"location": {"type": "string"}, "unit": {"type": "string"}},
    required=["location"],
)
SUNNY = {"temperature": 21, "sky": "clear"}
MINI, SHORT = "gpt-realtime-mini", "Hello there!"  # the second session's model, and what the upstream says to it


@dataclass
class Heard:
    """What the pipeline reported to the app: the assistant's words, its audio, tool calls and errors."""

    text: str = ""
    audio: bytearray = field(default_factory=bytearray)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    responses: int = 0
    transcripts: list[str] = field(default_factory=list)  # what the user said, as the service transcribed it


class Ears(FrameProcessor):
    """Before the service: records the user's final transcripts, which it pushes upstream."""

    def __init__(self, heard: Heard) -> None:
        super().__init__()
        self.heard = heard

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction is FrameDirection.UPSTREAM:
            self.heard.transcripts.append(frame.text)
        await self.push_frame(frame, direction)


class Collector(FrameProcessor):
    """Records what the service emits downstream, and tells `progress` of a tool call and of an answer's end."""

    def __init__(self, heard: Heard, progress: asyncio.Condition) -> None:
        super().__init__()
        self.heard, self.progress = heard, progress

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSTextFrame) or (isinstance(frame, LLMTextFrame) and frame.append_to_context):
            self.heard.text += frame.text
        elif isinstance(frame, OutputAudioRawFrame):  # TTSAudioRawFrame (Realtime), SpeechOutputAudioRawFrame (Live)
            self.heard.audio += frame.audio
        elif isinstance(frame, FunctionCallInProgressFrame):
            self.heard.calls.append((frame.function_name, dict(frame.arguments)))
            async with self.progress:
                self.progress.notify_all()
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.heard.responses += 1
            async with self.progress:
                self.progress.notify_all()
        await self.push_frame(frame, direction)


async def converse(
    url: str,
    question: str | None,
    *,
    tool_result: dict[str, Any] | None = None,
    text_only: bool = False,
    model: str = "gpt-realtime",
) -> Heard:
    """One Pipecat session at `url` (its base_url): the user's typed question, answered (with `tool_result` a
    tool call first, then the answer), or with no question the bot greeting and then the user speaking into
    the microphone under the server's VAD, answered; what the app was told, once the answers ended or an error
    came (10 s at most for each)."""
    heard, progress = Heard(), asyncio.Condition()
    # the tool is the service's (init-provided), so every session.update carries it, however soon the
    # session.created comes (the context's tools would join only the updates sent once the context came)
    props = events.SessionProperties(
        output_modalities=["text"] if text_only else ["audio"],
        tools=ToolsSchema(standard_tools=[WEATHER] if tool_result is not None else []),
    )
    llm = OpenAIRealtimeLLMService(
        api_key=make_key(),
        base_url=url,
        settings=OpenAIRealtimeLLMService.Settings(
            model=model, session_properties=props, system_instruction="You talk about the weather."
        ),
    )
    if tool_result is not None:

        async def get_weather(params: FunctionCallParams) -> None:
            await params.result_callback(tool_result)

        llm.register_function("get_weather", get_weather)
    messages: list[Any] = [{"role": "user", "content": question}] if question is not None else []
    context = LLMContext(messages=messages)
    # the server's speech_started already truncates what the bot was saying; the aggregator's interruption,
    # which comes with the transcript, would race the answer's first audio (a second truncate, or none)
    turns = ExternalUserTurnStrategies(enable_interruptions=False)
    pair = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(user_turn_strategies=turns))
    collector = Collector(heard, progress)
    stages = [pair.user(), Ears(heard), llm, collector, pair.assistant()]
    worker = pipeline_worker(stages, heard, progress)

    async def answered(n: int) -> None:
        """Until `n` answers ended, an error came, or the pipeline stopped (10 s at most)."""

        async def reached() -> None:
            async with progress:
                await progress.wait_for(lambda: heard.responses >= n or bool(heard.errors))

        waiting = asyncio.ensure_future(reached())
        async with asyncio.timeout(10):
            await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())
    try:
        await worker.queue_frame(LLMRunFrame())
        await answered(1)
        if question is None and not heard.errors:  # the greeting ended: the user speaks
            await worker.queue_frames(microphone())
        if tool_result is not None or question is None:
            await answered(2)
        await worker.queue_frame(EndFrame())
        async with asyncio.timeout(10):
            await running
    finally:
        if not running.done():
            await worker.cancel()
            await asyncio.wait_for(running, 10)
    return heard


def microphone() -> list[Frame]:
    """What a transport hears: 20 ms frames of speech (600 ms), then 200 ms of silence."""
    pcm = tone(600) + bytes(RATE * 2 // 5)
    return [
        InputAudioRawFrame(audio=pcm[i : i + 960], sample_rate=RATE, num_channels=1) for i in range(0, len(pcm), 960)
    ]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=timeout, check=False)


def pipeline_worker(stages: list[Any], heard: Heard, progress: asyncio.Condition) -> PipelineWorker:
    """A worker running `stages`, whose pipeline errors go to `heard.errors` (waking whoever waits on `progress`)."""
    worker = PipelineWorker(Pipeline(stages), enable_rtvi=False)

    @worker.event_handler("on_pipeline_error")
    async def on_error(_worker: PipelineWorker, frame: ErrorFrame) -> None:
        heard.errors.append(frame.error)
        async with progress:
            progress.notify_all()

    return worker


async def app(url: str, *, second: str = "Say hello.") -> list[Heard]:
    """The app's three sessions at `url`: a typed question answered by voice after a tool call, a typed question
    answered in text (the `second` one), and the user speaking under server VAD."""
    return [
        await converse(url, "What's the weather in Paris?", tool_result=SUNNY),
        await converse(url, second, text_only=True, model=MINI),
        await converse(url, None),
    ]


async def record(tmp_path: Path, processes: list[Any]) -> tuple[Path, list[Heard]]:
    """The app's sessions through `rtproxy proxy` (a subprocess) from the scripted upstream (server VAD on),
    exported together into one cassette; what the app heard in each."""
    db, cassette = tmp_path / "rec.db", tmp_path / "pipecat.jsonl"
    async with ScriptedUpstream(exact=True, new_model=MINI, new_text=SHORT, vad=True) as up:
        proxy = spawn_proxy(["--db", str(db), "--upstream", up.url, "--label", "pipecat"])
        processes.append(proxy)
        heard = await app(f"ws://127.0.0.1:{proxy.port}/v1/realtime")
        async with asyncio.timeout(10):
            for conn in up.connections:
                await conn.closed.wait()
        code, out, err = await asyncio.to_thread(proxy.stop)
        assert code == 0, out + err
    assert len(up.connections) == 3 and all(c.dialect == "ga" for c in up.connections)
    done = run("export", "--db", str(db), "--label", "pipecat", "-o", str(cassette))
    assert done.returncode == 0, done.stderr
    assert [c.session["api"] for c in read_connections(cassette)] == ["realtime"] * 3
    return cassette, heard


def sent_by_client(cassette: Path) -> list[list[dict[str, Any]]]:
    """The client events of each recorded connection."""
    return [
        [orjson.loads(f.data) for f in c.frames if f.direction.value == "client" and isinstance(f.data, str)]
        for c in read_connections(cassette)
    ]


def told(heard: Heard) -> tuple[Any, ...]:
    return heard.text, bytes(heard.audio), heard.calls, heard.transcripts, heard.errors


async def test_pipecat_sessions_recorded_through_the_proxy_replay_to_a_fresh_run(
    tmp_path: Path, processes: list[Any]
) -> None:
    """Three Pipecat sessions (a tool call then a voice answer; a text answer; the user's voice under server
    VAD, which Pipecat interrupts with a truncate) recorded through the proxy and exported as one cassette
    replay (strict, `rtproxy replay --once`) to a fresh Pipecat run, whose own new event and item ids come
    back: each session hears the same words, audio, transcript and tool call, and the report passes."""
    cassette, recorded = await record(tmp_path, processes)
    tool, text, voice = recorded
    assert tool.calls == [("get_weather", {"location": "Paris", "unit": "celsius"})]
    assert tool.text == "Hello! How can I help you today?" and len(tool.audio) > 0 and not tool.errors
    assert (text.text, bytes(text.audio), text.errors) == (SHORT, b"", [])
    assert voice.transcripts == ["What's the weather in Paris?"] and len(voice.audio) > 0 and not voice.errors
    client = sent_by_client(cassette)
    burst = [e["type"] for e in client[0][1:4]]
    assert burst == ["conversation.item.create", "session.update", "response.create"]  # one burst, as sent
    made = {e["item"]["id"] for c in client for e in c if e["type"] == "conversation.item.create"}
    print(client)
    assert len(made) == 3  # the typed questions and the tool's output: item ids Pipecat made
    assert "conversation.item.truncate" in [e["type"] for e in client[2]]

    report = tmp_path / "report.json"
    replay = spawn_replay([str(cassette), "--once", "--match", "strict", "--report", str(report)])
    processes.append(replay)
    replayed = await app(f"{replay.base_url}/realtime")
    code, out, err = await asyncio.to_thread(replay.wait)
    assert code == 0, out + err
    assert [told(h) for h in replayed] == [told(h) for h in recorded]
    result = orjson.loads(report.read_bytes())
    assert result["ok"] and result["recorded_connections"] == 3
    assert [c["turns"]["played"] == c["turns"]["total"] for c in result["connections"]] == [True] * 3


async def test_a_changed_question_is_a_clear_mismatch_pipecat_sees(tmp_path: Path, processes: list[Any]) -> None:
    """The same app whose second session asks something else: the replay answers the changed
    conversation.item.create with an error event, which Pipecat reports to the app as a pipeline error naming
    the field, and `rtproxy replay` exits 1 with a report naming it; nothing waits past its timeout."""
    cassette, _ = await record(tmp_path, processes)
    report = tmp_path / "report.json"
    replay = spawn_replay([str(cassette), "--once", "--match", "strict", "--report", str(report)])
    processes.append(replay)
    same, changed, voice = await app(f"{replay.base_url}/realtime", second="Say goodbye.")
    code, out, err = await asyncio.to_thread(replay.wait)
    assert code == 1, out + err
    assert not same.errors and same.calls == [("get_weather", {"location": "Paris", "unit": "celsius"})]
    assert not voice.errors and voice.transcripts == ["What's the weather in Paris?"]
    assert any("rtproxy replay" in e and "item.content[0].text" in e for e in changed.errors), changed.errors
    result = orjson.loads(report.read_bytes())
    assert [c["ok"] for c in result["connections"]] == [True, False, True]
    (mismatch,) = result["connections"][1]["mismatches"]
    assert mismatch["kind"] == "payload" and mismatch["received"]["type"] == "conversation.item.create"
    assert mismatch["details"] == ['item.content[0].text: expected "Say hello.", got "Say goodbye."']
    assert "Say goodbye." in out and "connection 2" in out


# --- GPT-Live: OpenAILiveLLMService (/v1/live/sessions) -----------------------------------------------------


def mic(pcm: bytes) -> list[Frame]:
    return [
        InputAudioRawFrame(audio=pcm[i : i + 960], sample_rate=RATE, num_channels=1) for i in range(0, len(pcm), 960)
    ]


async def live_converse(url: str, result: dict[str, Any]) -> Heard:
    """One Pipecat GPT-Live session at `url` (its base_url), delegating to a Responses backend whose tool the
    app runs: the user asks, the backend calls get_weather (answered with `result`), the assistant speaks while
    the microphone goes on streaming; what the app was told (10 s at most for each step)."""
    heard, progress = Heard(), asyncio.Condition()
    llm = OpenAILiveLLMService(
        api_key=make_key(),
        base_url=url,
        delegation=ResponsesDelegation(settings=OpenAIResponsesLLMSettings(model="gpt-5.5")),
    )

    async def get_weather(params: FunctionCallParams) -> None:
        await params.result_callback(result)

    llm.register_function("get_weather", get_weather)
    started: list[str] = []

    @llm.event_handler("on_session_started")
    async def on_started(_llm: OpenAILiveLLMService, session: Any) -> None:
        started.append(session.id)
        async with progress:
            progress.notify_all()

    pair = LLMContextAggregatorPair(LLMContext(tools=ToolsSchema(standard_tools=[WEATHER])))
    stages = [pair.user(), Ears(heard), llm, Collector(heard, progress), pair.assistant()]
    worker = pipeline_worker(stages, heard, progress)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())

    async def until(what: Any) -> bool:
        """Until `what()` holds, an error came or the pipeline stopped (10 s at most); whether it holds."""

        async def reached() -> None:
            async with progress:
                await progress.wait_for(lambda: what() or bool(heard.errors))

        waiting = asyncio.ensure_future(reached())
        async with asyncio.timeout(10):
            await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        return bool(what()) and not heard.errors

    try:
        await worker.queue_frame(LLMRunFrame())  # the first context starts the session (session.start)
        if await until(lambda: started):  # audio before session.started is dropped by the service
            await worker.queue_frames(mic(tone(600) + silence(400)))
            if await until(lambda: heard.calls):  # the assistant speaks while the microphone streams
                await worker.queue_frames(mic(silence(3000)))
                await until(lambda: heard.responses >= 1)
        await worker.queue_frame(EndFrame())  # session.close, then session.closed
        async with asyncio.timeout(15):
            await running
    finally:
        if not running.done():
            await worker.cancel()
            await asyncio.wait_for(running, 10)
    return heard


LIVE_SUNNY = {"temperature": 18, "sky": "sunny"}


async def record_live(tmp_path: Path, processes: list[Any]) -> tuple[Path, list[Heard]]:
    """Two Pipecat GPT-Live sessions through `rtproxy proxy` from the scripted Live upstream, exported together."""
    db, cassette = tmp_path / "live.db", tmp_path / "pipecat-live.jsonl"
    async with LiveUpstream() as up:
        proxy = spawn_proxy(["--db", str(db), "--upstream", up.url, "--label", "pipecat-live"])
        processes.append(proxy)
        url = f"ws://127.0.0.1:{proxy.port}/v1/live/sessions"
        heard = [await live_converse(url, LIVE_SUNNY), await live_converse(url, LIVE_SUNNY)]
        async with asyncio.timeout(10):
            for conn in up.connections:
                await conn.closed.wait()
        code, out, err = await asyncio.to_thread(proxy.stop)
        assert code == 0, out + err
    assert [c.kind for c in up.connections] == ["primary", "primary"]
    done = run("export", "--db", str(db), "--label", "pipecat-live", "-o", str(cassette))
    assert done.returncode == 0, done.stderr
    assert [c.session["api"] for c in read_connections(cassette)] == ["live", "live"]
    return cassette, heard


async def test_pipecat_live_sessions_recorded_through_the_proxy_replay_to_a_fresh_run(
    tmp_path: Path, processes: list[Any]
) -> None:
    """GPT-Live (one dialect): two Pipecat sessions delegating to a Responses backend, the app's tool answering
    it, recorded through the proxy and exported as one cassette, replay (strict, --once) to a fresh run whose
    own event ids come back as client_event_id: the same transcript, tool call, spoken words and audio."""
    cassette, recorded = await record_live(tmp_path, processes)
    for heard in recorded:
        assert heard.transcripts == ["What's the weather in Paris?"] and not heard.errors
        assert heard.calls == [("get_weather", {"location": "Paris", "unit": "celsius"})]
        assert heard.text == "It is 18 degrees and sunny in Paris." and len(heard.audio) > 0
    client = sent_by_client(cassette)
    assert [e["type"] for e in client[0] if e["type"] != "session.input_audio.append"] == [
        "session.start",
        "response.item.create",
        "response.create",
        "session.close",
    ]
    assert len({e["event_id"] for c in client for e in c}) == sum(len(c) for c in client)  # uuids Pipecat made

    report = tmp_path / "report.json"
    replay = spawn_replay([str(cassette), "--once", "--match", "strict", "--report", str(report)])
    processes.append(replay)
    url = f"{replay.base_url}/live/sessions"
    replayed = [await live_converse(url, LIVE_SUNNY), await live_converse(url, LIVE_SUNNY)]
    code, out, err = await asyncio.to_thread(replay.wait)
    assert code == 0, out + err
    assert [told(h) for h in replayed] == [told(h) for h in recorded]
    result = orjson.loads(report.read_bytes())
    assert result["ok"] and result["recorded_connections"] == 2


async def test_a_changed_live_tool_result_is_a_clear_mismatch_pipecat_sees(
    tmp_path: Path, processes: list[Any]
) -> None:
    """The app's tool now answers otherwise: the replay answers the changed response.item.create with GPT-Live's
    error event, which Pipecat reports to the app, and `rtproxy replay` exits 1 naming the field."""
    cassette, _ = await record_live(tmp_path, processes)
    report = tmp_path / "report.json"
    replay = spawn_replay([str(cassette), "--once", "--match", "strict", "--report", str(report)])
    processes.append(replay)
    url = f"{replay.base_url}/live/sessions"
    changed = await live_converse(url, {"temperature": 30, "sky": "rain"})
    same = await live_converse(url, LIVE_SUNNY)
    code, out, err = await asyncio.to_thread(replay.wait)
    assert code == 1, out + err
    assert not same.errors and any("rtproxy replay" in e and "item.output" in e for e in changed.errors)
    result = orjson.loads(report.read_bytes())
    assert [c["ok"] for c in result["connections"]] == [False, True]
    (mismatch,) = result["connections"][0]["mismatches"]
    assert mismatch["kind"] == "payload" and mismatch["received"]["type"] == "response.item.create"
    assert [d.split(":")[0] for d in mismatch["details"]] == ["item.output"]
