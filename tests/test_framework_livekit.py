"""LiveKit Agents (livekit-agents + livekit-plugins-openai 1.8.9) recorded through ``rtproxy proxy`` and replayed
with ``rtproxy replay --once`` (real subprocesses, loopback only): the framework's own clients (their aiohttp
WebSockets, their event handling, their generation streams) driven through their model-session APIs and pointed
at the proxy, then at the replay, by ``base_url`` only. Two parts: the Realtime ``RealtimeModel`` and the GPT-Live
``GPTLiveModel``.

Dialects: ``RealtimeModel`` speaks GA (no ``OpenAI-Beta`` header, nested session config,
``conversation.item.added``, ``response.output_*`` names) to OpenAI. LiveKit never sends ``OpenAI-Beta:
realtime=v1``; its beta dialect is Azure's dated API (``api_version``, as ``with_azure`` sets it) on
``/openai/realtime?api-version=…&deployment=…`` with an ``api-key`` header: flat session config
(``modalities``, ``input_audio_format``, ``turn_detection``…) in, beta names (``conversation.item.created``,
``response.audio.delta``…) out, which it maps to GA names itself. Both are covered (the scripted upstream
speaks beta on that path with ``azure_beta``; rtproxy detects the dialect from the events). GPT-Live has one.

Ids LiveKit makes itself (Realtime): every client event's ``event_id`` (``session_update_…``,
``instructions_update_…``, ``tools_update_…``, ``chat_ctx_create_…``, ``response_create_…``); its chat-context
items' ``item.id`` (it waits for ``conversation.item.added`` naming each, 5 s) and their ``previous_item_id``;
``response.metadata.client_event_id`` (``generate_reply`` resolves when a ``response.created`` echoes it, else
fails after 10 s); a function call output's item id. On a reconnection it sends its items again under the same
ids (server-made ones too). GPT-Live: every command's ``event_id`` (``session_start_…``, ``tool_output_…``,
``response_create_…``, ``append_…``), echoed by the server as ``client_event_id``.

Found with it, fixed in rtproxy and pinned in ``tests/test_replay_frameworks_livekit_regress.py``: a barge-in
(``interrupt()``, sent only while a generation is active) failed to replay, as the cancelled response's tail
was sent with its ``response.create`` (:mod:`rtproxy.replay.realtime`: the tail belongs to the
``response.cancel``); and a server's drop of a GPT-Live session that LiveKit keeps streaming audio into was
replayed before the audio the recorded client had sent first (:attr:`rtproxy.replay.player.Player.closable`).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.recording import read_connections
from rtproxy.replay.script import build_script
from tests.conftest import ProxyProcess, make_key, rtproxy_exe, spawn_proxy
from tests.live_upstream import LiveUpstream
from tests.test_replay_server import ReplayProcess, spawn_replay
from tests.upstream import ScriptedUpstream, tone

lk_openai = pytest.importorskip("livekit.plugins.openai")
aiohttp = pytest.importorskip("aiohttp")
from livekit import rtc  # noqa: E402
from livekit.agents import llm  # noqa: E402

pytestmark = pytest.mark.slow

REPLY = "It is sunny in Paris."
QUESTION, RESULT = "What's the weather in Paris?", "sunny, 21 C"
TIMEOUT = 15.0
AZURE_VERSION = "2024-10-01-preview"


@llm.function_tool
async def get_weather(location: str, unit: str) -> str:
    """The weather in a city.

    Args:
        location: the city
        unit: celsius or fahrenheit
    """
    return "sunny"


@dataclass
class Seen:
    """What LiveKit's model session reported to the app in one session."""

    calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments)
    text: list[str] = field(default_factory=list)  # each message's text (or audio transcript)
    audio: list[int] = field(default_factory=list)  # each message's audio bytes
    user_transcripts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    generations: int = 0
    # the wire as LiveKit's session reports it (its openai_client_event_queued / openai_server_event_received)
    made: dict[str, list[str]] = field(default_factory=dict, compare=False)  # ids LiveKit made, by kind
    echoed: dict[str, list[str]] = field(default_factory=dict, compare=False)  # the same ids in server events
    server_errors: list[dict[str, Any]] = field(default_factory=list, compare=False)
    notes: list[str | None] = field(default_factory=list)  # the chat context's messages, as LiveKit mirrors it

    def client_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "conversation.item.create" and event["item"]["id"] not in self.made.get("server", []):
            self.made.setdefault("item", []).append(event["item"]["id"])  # not one the server made (re-sent)
        elif kind == "response.create":
            self.made.setdefault("response", []).append(event["response"]["metadata"]["client_event_id"])

    def server_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "conversation.item.added":
            item_id = event["item"]["id"]
            into = self.echoed if item_id in self.made.get("item", []) else self.made
            into.setdefault("item" if into is self.echoed else "server", []).append(item_id)
        elif kind == "response.created":
            metadata = event["response"].get("metadata") or {}
            self.echoed.setdefault("response", []).append(metadata.get("client_event_id"))
        elif kind == "error":
            self.server_errors.append(event["error"])


def model_for(base: str, dialect: str, http: aiohttp.ClientSession, query: str = "", *, vad: bool = False) -> Any:
    """LiveKit's OpenAI RealtimeModel pointed at `base` (the proxy or the replay) through base_url only (with
    `query` in it: LiveKit keeps a base URL's query in the URL it connects to); turn taking by the app, or
    (`vad`) LiveKit's default: the server's (semantic VAD, which starts responses and cuts them on speech)."""
    common: dict[str, Any] = {"api_key": make_key(), "http_session": http}
    if not vad:
        common["turn_detection"] = None
    tail = f"?{query}" if query else ""
    if dialect == "beta":
        return lk_openai.realtime.RealtimeModel(
            base_url=f"{base}/openai{tail}",
            api_version=AZURE_VERSION,
            azure_deployment="gpt-4o-realtime-preview",
            **common,
        )
    return lk_openai.realtime.RealtimeModel(base_url=f"{base}/v1{tail}", **common)


def frames_of(pcm: bytes) -> Iterator[rtc.AudioFrame]:
    """PCM16 at 24 kHz as 20 ms frames, as a room's audio track delivers them."""
    for i in range(0, len(pcm), 960):
        chunk = pcm[i : i + 960]
        yield rtc.AudioFrame(chunk, 24000, 1, len(chunk) // 2)


def watch(session: Any, seen: Seen) -> None:
    session.on("openai_client_event_queued", seen.client_event)
    session.on("openai_server_event_received", seen.server_event)
    session.on("error", lambda e: seen.errors.append(str(e.error)))
    session.on(
        "input_audio_transcription_completed",
        lambda e: seen.user_transcripts.append(e.transcript) if e.is_final else None,
    )


async def read_generation(gen: Any, seen: Seen) -> None:
    """Everything one generation streams: its function calls, and each message's text and audio."""
    seen.generations += 1

    async def calls() -> None:
        async for call in gen.function_stream:
            seen.calls.append((call.name, call.arguments))

    async def messages() -> None:
        async for msg in gen.message_stream:

            async def text(msg: Any = msg) -> str:
                return "".join([t async for t in msg.text_stream])

            async def audio(msg: Any = msg) -> int:
                return sum([len(f.data.tobytes()) async for f in msg.audio_stream])

            said, n = await asyncio.gather(text(), audio())
            seen.text.append(said)
            seen.audio.append(n)

    await asyncio.gather(calls(), messages())


DROP = "close_after=5&close_once=1&close_code=1011"  # the upstream drops the first connection after 5 events


async def text_turn_with_tool(base: str, dialect: str, user_text: str, tool_result: str) -> Seen:
    """One LiveKit session over two connections: instructions and a tool (a burst of session.updates sent as it
    connects), a typed user message synced through the chat context (LiveKit's item id), a reply that calls the
    tool; the server drops the connection (1011) and LiveKit reconnects by itself, sending its session and its
    whole chat context again (its own item ids a second time); then the tool's output synced (another item of
    LiveKit's) and the spoken answer on the new connection."""
    seen = Seen()
    async with aiohttp.ClientSession() as http:
        session = model_for(base, dialect, http, DROP).session()
        watch(session, seen)
        reconnected = asyncio.Event()
        session.on("session_reconnected", lambda _e: reconnected.set())
        synced = asyncio.Event()
        session.on("remote_item_added", lambda _e: synced.set())
        try:
            async with asyncio.timeout(TIMEOUT):
                await session.update_instructions("You are a weather bot.")
                await session.update_tools([get_weather])
                ctx = llm.ChatContext.empty()
                ctx.add_message(role="user", content=user_text)
                await session.update_chat_ctx(ctx)
                await read_generation(await session.generate_reply(), seen)
                await reconnected.wait()
                while len(session.chat_ctx.items) < 2:  # the re-sent items, confirmed on the new connection
                    synced.clear()
                    await synced.wait()
                call = next(i for i in session.chat_ctx.items if i.type == "function_call")
                ctx = session.chat_ctx.copy()
                ctx.items.append(
                    llm.FunctionCallOutput(call_id=call.call_id, name=call.name, output=tool_result, is_error=False)
                )
                await session.update_chat_ctx(ctx)
                await read_generation(await session.generate_reply(), seen)
        finally:
            await session.aclose()
    return seen


async def voice_turn(base: str, dialect: str) -> Seen:
    """Another LiveKit session: the app syncs a typed note and then corrects it (LiveKit deletes the item and
    creates it again under its same id); half a second of the user's voice pushed as audio frames, committed
    and answered in one burst (appends, input_audio_buffer.commit, response.create); the app interrupts the
    spoken answer as soon as its first audio frame plays (barge-in): LiveKit sends response.cancel, the server
    ends the response as cancelled."""
    seen = Seen()
    async with aiohttp.ClientSession() as http:
        session = model_for(base, dialect, http).session()
        watch(session, seen)
        heard = asyncio.Event()
        session.on("input_audio_transcription_completed", lambda _e: heard.set())
        try:
            async with asyncio.timeout(TIMEOUT):
                ctx = llm.ChatContext.empty()
                note = ctx.add_message(role="user", content="I am in Pariss.")
                await session.update_chat_ctx(ctx)
                ctx = session.chat_ctx.copy()
                ctx.items[0] = llm.ChatMessage(id=note.id, role="user", content=["I am in Paris."])
                await session.update_chat_ctx(ctx)  # conversation.item.delete, then .create, of LiveKit's id
                seen.notes = [m.text_content for m in session.chat_ctx.items if m.type == "message"]
                for frame in frames_of(tone(500, 180.0)):
                    session.push_audio(frame)
                session.commit_audio()
                gen = await session.generate_reply()
                seen.generations += 1
                msg = await anext(aiter(gen.message_stream))
                frames = aiter(msg.audio_stream)
                first = await anext(frames)
                session.interrupt()
                rest = [len(f.data.tobytes()) async for f in frames]
                seen.audio.append(len(first.data.tobytes()) + sum(rest))
                seen.text.append("".join([t async for t in msg.text_stream]))
                await heard.wait()
        finally:
            await session.aclose()
    return seen


async def server_vad_turn(base: str, dialect: str) -> Seen:
    """A LiveKit session with its default turn taking (the server's VAD): the app only streams the caller's
    audio; the server finds the end of speech, commits and answers by itself; the caller talks over the answer
    once its first audio frame plays, which cuts it (turn_detected), and the server answers that turn too."""
    seen = Seen()
    generations: asyncio.Queue[Any] = asyncio.Queue()
    async with aiohttp.ClientSession() as http:
        session = model_for(base, dialect, http, vad=True).session()
        watch(session, seen)
        session.on("generation_created", generations.put_nowait)
        try:
            async with asyncio.timeout(TIMEOUT):
                for frame in frames_of(tone(500, 180.0) + bytes(24000 * 2 * 3 // 10)):
                    session.push_audio(frame)
                gen = await generations.get()
                seen.generations += 1
                msg = await anext(aiter(gen.message_stream))
                frames = aiter(msg.audio_stream)
                first = await anext(frames)
                for frame in frames_of(tone(400, 180.0) + bytes(24000 * 2 * 3 // 10)):  # the caller barges in
                    session.push_audio(frame)
                rest = [len(f.data.tobytes()) async for f in frames]
                seen.audio.append(len(first.data.tobytes()) + sum(rest))
                seen.text.append("".join([t async for t in msg.text_stream]))
                await read_generation(await generations.get(), seen)
                while len(seen.user_transcripts) < 2:
                    heard = asyncio.get_running_loop().create_future()
                    session.once("input_audio_transcription_completed", heard.set_result)
                    await heard
        finally:
            await session.aclose()
    return seen


# --- recording through the proxy, exporting, replaying (real subprocesses) ---------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), *args], capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Cassette:
    path: Path
    dialect: str
    recorded: list[Seen]


async def conversation(base: str, dialect: str, user_text: str = QUESTION, tool_result: str = RESULT) -> list[Seen]:
    """The app: its three LiveKit sessions, one after the other."""
    return [
        await text_turn_with_tool(base, dialect, user_text, tool_result),
        await voice_turn(base, dialect),
        await server_vad_turn(base, dialect),
    ]


async def record(tmp: Path, dialect: str) -> Cassette:
    """Both LiveKit sessions run through `rtproxy proxy` (a subprocess) in front of the scripted upstream, one
    after the other (three connections: the first session reconnects); all exported together into one
    cassette."""
    db = tmp / f"{dialect}.db"
    async with ScriptedUpstream(
        text=REPLY, echo_metadata=True, azure_beta=True, audio_ms=3000, chunk_delay=0.02, vad=True
    ) as up:
        proxy: ProxyProcess = await asyncio.to_thread(spawn_proxy, ["--upstream", up.url, "--db", str(db)])
        try:
            base = f"http://127.0.0.1:{proxy.port}"
            seen = await conversation(base, dialect)
        finally:
            code, out, err = await asyncio.to_thread(proxy.stop)
        assert [c.dialect for c in up.connections] == [dialect] * 4
    assert code == 0, out + err
    listed = orjson.loads(run("sessions", "--db", str(db), "--json").stdout)
    ids = sorted(s["id"] for s in listed)
    target = tmp / f"livekit-{dialect}.jsonl"
    done = run("export", *ids, "--db", str(db), "-o", str(target))
    assert done.returncode == 0, done.stderr
    return Cassette(target, dialect, seen)


async def replay(cassette: Path, run_flow: Any, *args: str) -> tuple[Any, int, str, dict[str, Any]]:
    """`rtproxy replay FILE --once` (a subprocess) serving `run_flow(base)`; (what it returned, exit code,
    output, report)."""
    report = cassette.with_suffix(".report.json")
    report.unlink(missing_ok=True)  # one replay's report, never an earlier one's
    p: ReplayProcess = await asyncio.to_thread(spawn_replay, [str(cassette), "--once", "--report", str(report), *args])
    try:
        base = p.base_url.removesuffix("/v1").replace("ws://", "http://", 1)
        got = await run_flow(base)
        code, out, err = await asyncio.to_thread(p.wait)
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.communicate()
    return got, code, out + err, orjson.loads(report.read_bytes()) if report.exists() else {}


# --- the tests ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["ga", "beta"])
def cassette(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Cassette:
    """The app recorded once per dialect through the proxy (a fresh recording, three connections)."""
    dialect = request.param
    return asyncio.run(record(tmp_path_factory.mktemp(f"livekit-{dialect}"), dialect))


def test_the_recording_has_livekits_ids_bursts_and_four_connections(cassette: Cassette) -> None:
    """What was recorded: the tool call and its spoken answer, the drop and LiveKit's reconnection, the user's
    transcribed voice and the interrupted answer, the server-VAD turn cut by the caller's barge-in and the
    next answer; four connections in the one cassette; bursts of client events with nothing from the server
    between (LiveKit's session.updates and its first item as it connects; the audio, its commit and
    response.create); no key on disk."""
    tools, voice, vad = cassette.recorded
    assert tools.calls == [("get_weather", '{"location": "Paris", "unit": "celsius"}')]
    assert tools.text == [REPLY] and tools.audio == [3 * 48000] and tools.generations == 2
    assert tools.errors == ["OpenAI Realtime API connection closed unexpectedly"]  # the drop; LiveKit reconnected
    assert voice.user_transcripts == [QUESTION]
    assert voice.text[0] and REPLY.startswith(voice.text[0]) and voice.text[0] != REPLY  # cut off
    assert 0 < voice.audio[0] < 3 * 48000
    assert vad.user_transcripts == [QUESTION] * 2 and vad.generations == 2
    assert vad.text[1] == REPLY and REPLY.startswith(vad.text[0]) and vad.text[0] != REPLY  # barged in on
    connections = read_connections(cassette.path)
    assert len(connections) == 4 and connections[0].session["closed_by"] == "upstream"
    assert [c.session["dialect"] for c in connections] == [cassette.dialect] * 4
    assert "sk-test-" not in cassette.path.read_text()
    scripts = [build_script(c.frames, session=c.session) for c in connections]
    opening = [(s.type, s.starts_burst) for s in scripts[0].steps[:4]]
    assert opening == [("session.update", True)] + [("session.update", False)] * 2 + [
        ("conversation.item.create", False)
    ]
    spoken = [(s.type, s.starts_burst) for s in scripts[2].steps]
    run = spoken.index(("input_audio_buffer.append", True))
    assert spoken[run + 1 : run + 3] == [("input_audio_buffer.commit", False), ("response.create", False)]
    edited = [s.event for s in scripts[2].steps if s.type.startswith("conversation.item.") and s.event]
    assert [e["type"] for e in edited] == ["conversation.item.create", "conversation.item.delete"] + [
        "conversation.item.create"
    ]
    assert edited[0]["item"]["id"] == edited[1]["item_id"] == edited[2]["item"]["id"]  # LiveKit's id, reused
    assert voice.notes == ["I am in Paris."]
    # the reconnection sends the session and the whole chat context again, LiveKit's own item id included
    created = [s.event["item"]["id"] for s in scripts[1].steps if s.type == "conversation.item.create" and s.event]
    assert tools.made["item"][0] in created
    # server VAD: the app sends only audio after its session.update; the server's answers ride on it
    assert [s.type for s in scripts[3].steps] == ["session.update", "input_audio_buffer.append"]


async def test_livekit_gets_its_conversation_back_from_the_replay(cassette: Cassette) -> None:
    """`rtproxy replay --once --match strict` of the cassette serves a fresh run of the app (new ids of
    LiveKit's own) all four connections: LiveKit reports the same tool call, text, audio, transcripts and
    interruptions (its own and the server's); every item and response it made is echoed with this run's id;
    the report passes."""
    got, code, out, report = await replay(
        cassette.path, lambda base: conversation(base, cassette.dialect), "--match", "strict"
    )
    assert code == 0, out
    assert report["ok"] and [c["recorded"] for c in report["connections"]] == [1, 2, 3, 4]
    assert got == cassette.recorded
    for now, then in zip(got, cassette.recorded, strict=True):
        mine, before = set(now.made.get("item", [])), set(then.made.get("item", []))
        assert not mine & before  # a fresh run: LiveKit made other ids
        assert set(now.echoed.get("item", [])) == mine  # each item LiveKit created, named by this run's id
        assert now.echoed["response"] == now.made.get("response", [None] * now.generations)  # metadata, this run's
        assert now.server_errors == []


@pytest.mark.parametrize(
    ("change", "path", "connections"),
    [
        ({"user_text": "What's the weather in Rome?"}, "item.content[0].text", [1]),
        ({"tool_result": "rain, 12 C"}, "item.output", [2]),
    ],
    ids=["user-text", "tool-result"],
)
async def test_a_changed_app_gets_a_mismatch_it_is_told_of(
    cassette: Cassette, change: dict[str, str], path: str, connections: list[int]
) -> None:
    """The app changed (other user text, or another tool result): strict replay reports a payload mismatch
    naming the field, on the connection that sent it (LiveKit's reconnection re-sends the user item as the
    server confirmed it: the recorded one); LiveKit receives the replay's error event naming the event it
    sent; the replay exits 1 and nothing hangs."""
    got, code, out, report = await replay(
        cassette.path, lambda base: conversation(base, cassette.dialect, **change), "--match", "strict"
    )
    assert code == 1, out
    bad = [c["number"] for c in report["connections"] if not c["ok"]]
    assert bad == connections, out
    mismatches = [m for c in report["connections"] for m in c["mismatches"]]
    assert {m["kind"] for m in mismatches} == {"payload"}
    assert all(any(d.startswith(path) for d in m["details"]) for m in mismatches), out
    errors = [e for seen in got for e in seen.server_errors]
    assert errors and all(e["code"] == "rtproxy_replay_mismatch" for e in errors)
    assert all(e["event_id"].startswith("chat_ctx_create_") for e in errors)  # LiveKit's id of its item create


@pytest.mark.parametrize("cassette", ["ga"], indirect=True)
async def test_ordered_and_loose_replay_it_too(cassette: Cassette) -> None:
    """The default policy (ordered) and loose serve the same run (GA) with no mismatch."""
    for policy in ("ordered", "loose"):
        got, code, out, report = await replay(
            cassette.path, lambda base: conversation(base, cassette.dialect), "--match", policy
        )
        assert code == 0 and report["ok"], out
        assert got == cassette.recorded


# --- GPT-Live: LiveKit's GPTLiveModel ----------------------------------------------------------------


@dataclass
class Heard:
    """What LiveKit's GPT-Live session reported to the app."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    user: str = ""  # the caller's words, as transcribed
    said: str = ""  # the assistant's words (its transcript deltas)
    answers: list[str] = field(default_factory=list)  # the words of each answer
    audio: int = 0  # bytes of the assistant's audio
    errors: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list, compare=False)  # the event ids LiveKit gave its commands
    echoed: list[str] = field(default_factory=list, compare=False)  # client_event_id of the server's events
    server_errors: list[dict[str, Any]] = field(default_factory=list, compare=False)


async def live_turn(base: str, delegation: str, answer: str = RESULT, turns: int = 1) -> Heard:
    """One GPT-Live session (LiveKit's GPTLiveModel): instructions (and, delegating to Responses, the tool) go in
    session.start; the caller's voice streams as audio. Delegating to Responses, the backend calls the tool
    (nested response.event) and the app answers it (LiveKit sends response.item.create and response.create in
    one burst); delegating to the client, the app answers the delegation LiveKit reports with
    append_commentary naming it. The assistant then speaks while the app streams silence (one 100 ms chunk of
    speech per 100 ms of input: full duplex)."""
    heard = Heard()
    server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    asked: asyncio.Queue[Any] = asyncio.Queue()  # LiveKit's function calls, or its client delegations
    async with aiohttp.ClientSession() as http:
        model = lk_openai.realtime.GPTLiveModel(
            base_url=f"{base}/v1", api_key=make_key(), http_session=http, delegation=delegation
        )
        session = model.session()
        session.on("openai_server_event_received", server.put_nowait)
        session.on("openai_client_event_queued", lambda e: heard.made.append(e.get("event_id") or e["type"]))
        session.on("function_call" if delegation == "responses" else "delegation_created", asked.put_nowait)
        session.on("error", lambda e: heard.errors.append(str(e.error)))
        reconnected = asyncio.Event()
        session.on("session_reconnected", lambda _e: reconnected.set())
        session.on("transcript_delta", lambda e: setattr(heard, "said", heard.said + e.text))
        session.on("input_audio_transcription_completed", lambda e: setattr(heard, "user", e.transcript))

        async def until(*kinds: str, answered: bool = False) -> dict[str, Any]:
            """The next server event of one of these types (answered: one echoing a command's id)."""
            while True:
                event = await server.get()
                if event.get("client_event_id"):
                    heard.echoed.append(event["client_event_id"])
                if event["type"] == "error":
                    heard.server_errors.append(event["error"])
                if event["type"] in kinds and (event.get("client_event_id") or not answered):
                    return event

        async def audio() -> None:
            async for frame in session.audio_stream:
                heard.audio += len(frame.frame.data.tobytes())

        async def ask() -> None:
            """One turn: the caller's question, the delegated work answered, the answer heard."""
            for frame in frames_of(tone(600, 180.0) + bytes(24000 * 2 * 3 // 10)):
                session.push_audio(frame)
            work = await asked.get()
            if delegation == "responses":
                heard.calls.append((work.name, work.arguments))
                output = llm.FunctionCallOutput(call_id=work.call_id, name=work.name, output=answer, is_error=False)
                await session._append_items([output])
                await until("response.event", answered=True)  # the backend's answer to the tool output
            else:
                heard.calls.append(("delegation", work.pending_transcript))
                session.append_commentary(answer, delegation_id=work.id)
                await until("session.commentary.appended")
            said = len(heard.said)
            for _ in range(50):  # the assistant speaks one 100 ms chunk per 100 ms of input
                for frame in frames_of(bytes(24000 * 2 // 10)):
                    session.push_audio(frame)
                spoken = await until("session.output_audio.delta", "session.usage.updated")
                if spoken["type"] == "session.usage.updated":  # all of the answer was said
                    break
            heard.answers.append(heard.said[said:])

        reader = asyncio.create_task(audio())
        try:
            async with asyncio.timeout(TIMEOUT):
                tools = [get_weather] if delegation == "responses" else []
                await session._update_session(instructions="You are a weather bot.", tools=tools)
                for turn in range(turns):
                    if turn:  # the server dropped the connection after the answer: LiveKit reconnects
                        await reconnected.wait()
                    await until("session.started")
                    await ask()
        finally:
            await session.aclose()
            await asyncio.wait_for(reader, TIMEOUT)
    return heard


async def live_conversation(base: str, answer: str = RESULT) -> list[Heard]:
    """The GPT-Live app: a session delegating to Responses (two turns: the server drops the connection after the
    first and LiveKit reconnects), then one delegating to the client."""
    return [await live_turn(base, "responses", answer, turns=2), await live_turn(base, "client", answer)]


async def record_live(tmp: Path) -> tuple[Path, list[Heard]]:
    """The GPT-Live app recorded through `rtproxy proxy` (a subprocess) from the scripted Live upstream; its two
    sessions exported together."""
    db = tmp / "live.db"
    async with LiveUpstream(replies=(REPLY,), drop_first=True) as up:
        proxy: ProxyProcess = await asyncio.to_thread(spawn_proxy, ["--upstream", up.url, "--db", str(db)])
        try:
            heard = await live_conversation(f"http://127.0.0.1:{proxy.port}")
        finally:
            code, out, err = await asyncio.to_thread(proxy.stop)
        assert len(up.connections) == 3
    assert code == 0, out + err
    ids = sorted(s["id"] for s in orjson.loads(run("sessions", "--db", str(db), "--json").stdout))
    target = tmp / "livekit-live.jsonl"
    done = run("export", *ids, "--db", str(db), "-o", str(target))
    assert done.returncode == 0, done.stderr
    return target, heard


@pytest.fixture(scope="module")
def live_cassette(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Heard]]:
    return asyncio.run(record_live(tmp_path_factory.mktemp("livekit-live")))


def test_the_gpt_live_recording_has_a_reconnection_both_delegations_and_a_burst(
    live_cassette: tuple[Path, list[Heard]],
) -> None:
    """Recorded: the backend's tool call and its spoken answer, twice, across the server's drop (1011, at the
    app's next audio chunk) and LiveKit's reconnection, which starts a new session seeded with the conversation
    so far; the client delegation answered by commentary; the tool output and response.create sent in one
    burst; three connections in the one cassette."""
    path, (backend, client) = live_cassette
    assert backend.calls == [("get_weather", '{"location": "Paris", "unit": "celsius"}')] * 2
    assert backend.answers == [REPLY, REPLY] and backend.errors == ["OpenAI Live API connection closed unexpectedly"]
    assert client.calls == [("delegation", QUESTION)] and client.answers == [RESULT] and client.errors == []
    assert backend.user == client.user == QUESTION and backend.audio > 0 and client.audio > 0
    connections = read_connections(path)
    assert [c.session["api"] for c in connections] == ["live"] * 3
    assert connections[0].session["closed_by"] == "upstream" and connections[0].session["server_close_code"] == 1011
    first, again = (build_script(c.frames, session=c.session).steps for c in connections[:2])
    burst = [(s.type, s.starts_burst) for s in first if s.type.startswith("response.")]
    assert burst == [("response.item.create", True), ("response.create", False)]
    assert again[0].type == "session.start" and again[0].event is not None
    seeded = [part["text"] for item in again[0].event["session"]["input"] for part in item["content"]]
    assert seeded[0] == QUESTION and seeded[-1] == REPLY and f"Tool get_weather returned {RESULT}" in seeded


async def test_livekit_gpt_live_gets_its_sessions_back_from_the_replay(
    live_cassette: tuple[Path, list[Heard]],
) -> None:
    """`rtproxy replay --once --match strict` serves a fresh run of the GPT-Live app all three connections (the
    drop replayed where it was recorded, after the app's next chunk of audio; LiveKit reconnects): LiveKit
    reports the same tool calls, delegation, transcripts and audio; every client_event_id it gets back is one
    of this run's command ids; the report passes."""
    path, recorded = live_cassette
    got, code, out, report = await replay(path, live_conversation, "--match", "strict")
    assert code == 0 and report["ok"], out
    assert [c["server_close"] for c in report["connections"]][0] == 1011
    assert got == recorded
    for now, then in zip(got, recorded, strict=True):
        assert now.echoed and set(now.echoed) <= set(now.made)
        assert not set(now.made) & set(then.made) - {"session.input_audio.append", "session.close"}  # fresh ids


async def test_a_changed_gpt_live_app_gets_a_mismatch_it_is_told_of(live_cassette: tuple[Path, list[Heard]]) -> None:
    """Another tool result (and commentary): strict replay reports payload mismatches on every connection,
    LiveKit gets the Live error events naming its commands and reports errors; exit 1, nothing hangs."""
    path, _ = live_cassette
    got, code, out, report = await replay(path, lambda base: live_conversation(base, "rain, 12 C"), "--match", "strict")
    assert code == 1, out
    assert all(not c["ok"] for c in report["connections"]), out
    details = [d for c in report["connections"] for m in c["mismatches"] for d in m["details"]]
    assert any(d.startswith("item.output") for d in details) and any(d.startswith("content") for d in details), out
    for heard in got:
        assert heard.server_errors and {e["code"] for e in heard.server_errors} == {"rtproxy_replay_mismatch"}
        assert {e["client_event_id"] for e in heard.server_errors} <= set(heard.made)
        assert "GPT-Live returned an error" in heard.errors


async def test_gpt_live_replays_under_ordered_and_loose_too(live_cassette: tuple[Path, list[Heard]]) -> None:
    """The default policy (ordered) and loose serve the GPT-Live app too, the drop included, with no mismatch."""
    path, recorded = live_cassette
    for policy in ("ordered", "loose"):
        got, code, out, report = await replay(path, live_conversation, "--match", policy)
        assert code == 0 and report["ok"], out
        assert got == recorded
