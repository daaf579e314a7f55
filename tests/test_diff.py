"""`rtproxy diff`: two sessions compared by meaning (equal, reordered, changed), across APIs, as a library and a
command."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from rtproxy.conversation.summary import ASSISTANT, USER, Summary, ToolUse, Turn, summarize
from rtproxy.diff import DIFFERENT, NEAR, SAME, Options, diff_frames, diff_summaries
from rtproxy.protocols.wire import Direction, Frame
from rtproxy.recording import read_recording, write_recording
from tests.conftest import rtproxy_exe
from tests.test_replay_server import FLOWS

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "recordings"


def load(name: str) -> tuple[str, dict[str, Any], list[Frame]]:
    rec = read_recording(RECORDINGS / f"{name}.jsonl")
    return name, rec.session, rec.frames


def edited(
    side: tuple[str, dict[str, Any], list[Frame]], frames: list[Frame]
) -> tuple[str, dict[str, Any], list[Frame]]:
    return f"{side[0]} (edited)", side[1], [Frame(i, f.t, f.direction, f.data) for i, f in enumerate(frames)]


def event(frame: Frame) -> dict[str, Any]:
    ev = frame.event
    assert ev is not None
    return ev


def with_event(frame: Frame, ev: dict[str, Any]) -> Frame:
    return Frame(frame.seq, frame.t, frame.direction, orjson.dumps(ev).decode())


def run_diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*rtproxy_exe(), "diff", *args], capture_output=True, text=True, timeout=30)


async def test_two_recordings_of_the_same_client_are_equal(tmp_path: Path) -> None:
    """Recorded twice through the proxy (other ids, timings), the same voice client compares equal; exit 0."""
    flow = FLOWS.FLOWS["voice-ga"]
    a, _ = await FLOWS.record(flow, tmp_path / "a.jsonl", tmp_path / "a.db")
    b, _ = await FLOWS.record(flow, tmp_path / "b.jsonl", tmp_path / "b.db")
    assert a.read_bytes() != b.read_bytes()
    r = run_diff(str(a), str(b), "--ignore", "timing")  # a loaded machine may answer 100 ms slower
    assert r.returncode == 0, r.stdout + r.stderr
    assert "same meaning" in r.stdout and DIFFERENT not in r.stdout
    assert "  events                 4 sent" in r.stdout


def test_audio_is_compared_by_duration_not_chunking() -> None:
    """Splitting every audio append in two changes no meaning."""
    side = load("voice-ga")
    frames: list[Frame] = []
    for f in side[2]:
        ev = f.event
        if f.direction is Direction.CLIENT and ev and ev["type"] == "input_audio_buffer.append":
            raw = base64.b64decode(ev["audio"])
            for half in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                frames.append(with_event(f, {**ev, "audio": base64.b64encode(half).decode()}))
        else:
            frames.append(f)
    result = diff_frames(side, edited(side, frames))
    assert result.same, result.format()
    assert result.a.client[1] == {"type": "input_audio_buffer.append", "audio_ms": 1000.0, "appends": 10}
    assert result.b.client[1]["appends"] == 20


def test_server_events_reordered_without_changing_meaning_are_equal() -> None:
    """The user's transcript arriving after the response instead of before it is the same conversation."""
    side = load("voice-ga")
    late = [f for f in side[2] if (f.event or {}).get("type", "").startswith("conversation.item.input_audio_trans")]
    assert late
    rest = [f for f in side[2] if f not in late]
    result = diff_frames(side, edited(side, rest + late))
    assert result.same, result.format()


def test_client_events_reordered_are_reported_as_moved() -> None:
    """Sending conversation.item.create before session.update is a difference, named as a move."""
    side = load("text-ga")
    frames = list(side[2])
    client = [i for i, f in enumerate(frames) if f.direction is Direction.CLIENT]
    frames[client[0]], frames[client[1]] = frames[client[1]], frames[client[0]]
    result = diff_frames(side, edited(side, frames))
    assert not result.same
    (d,) = result.differences
    assert d.section == "client events" and d.message.startswith("moved to #") and d.a == d.b
    assert f"{d.where}: {d.message}" in result.format()


def test_changed_function_arguments_are_a_difference_on_that_item() -> None:
    """A function call with other arguments is reported on that item, arguments compared as JSON."""
    side = load("function-call-ga")
    frames = [
        f if f.direction is Direction.CLIENT else Frame(f.seq, f.t, f.direction, str(f.data).replace("Paris", "Lyon"))
        for f in side[2]
    ]
    result = diff_frames(side, edited(side, frames))
    (d,) = [d for d in result.differences if d.section == "tools"]
    assert d.where == "#1 get_weather" and d.message.startswith("arguments")
    assert d.a == {"location": "Paris", "unit": "celsius"} and d.b == {"location": "Lyon", "unit": "celsius"}
    # the server's echo of the user's question and the answer changed too; nothing else did
    assert {(d.section, d.where) for d in result.differences} == {
        ("tools", "#1 get_weather"),
        ("turns", "#1 user"),
        ("turns", "#2 assistant"),
    }


async def test_a_changed_answer_exits_1_with_a_readable_summary_and_json(tmp_path: Path) -> None:
    """Another spoken answer differs in the assistant item's transcript; the command exits 1, --json says why."""
    flow = FLOWS.FLOWS["text-ga"]
    other = FLOWS.Flow("text-ga", False, flow.run, {"text": "Bonjour! Comment puis-je aider?"})
    b, _ = await FLOWS.record(other, tmp_path / "b.jsonl", tmp_path / "b.db")
    a = RECORDINGS / "text-ga.jsonl"
    r = run_diff(str(a), str(b))
    assert r.returncode == 1
    assert 'turns, #2 assistant: text "Hello! How can I help you today?" vs "Bonjour!' in r.stdout
    assert any(line.startswith("  #2 assistant") and f" {DIFFERENT} Bonjour!" in line for line in r.stdout.splitlines())
    j = run_diff(str(a), str(b), "--json")
    assert j.returncode == 1
    data = orjson.loads(j.stdout)
    assert data["same"] is False and data["a"]["turns"] == data["b"]["turns"] == 2
    assert {d["section"] for d in data["differences"]} == {"turns"}
    assert data["sections"]["turns"]["differences"] == 1
    row = next(r for r in data["sections"]["turns"]["rows"] if r["where"] == "#2 assistant")
    assert row == {
        "where": "#2 assistant",
        "a": "Hello! How can I help you today?",
        "b": "Bonjour! Comment puis-je aider?",
        "mark": DIFFERENT,
    }
    assert data["a"]["summary"]["turns"][1]["text"] == "Hello! How can I help you today?"
    w = run_diff(str(a), str(b), "--ignore", "wording")
    assert w.returncode == 0, w.stdout
    assert "ignored: wording" in w.stdout and f" {NEAR} Bonjour!" in w.stdout


def test_db_session_references_and_bad_input(tmp_path: Path) -> None:
    """DB#SESSION reads a stored session (equal to its export); unknown ones and bad files exit 2 with one line."""
    from rtproxy.store import Store

    db = tmp_path / "rt.db"
    rec = read_recording(RECORDINGS / "function-call-ga.jsonl")
    with Store(db, create=True) as store:
        store.import_session(rec.session, rec.frames)
    r = run_diff(str(RECORDINGS / "function-call-ga.jsonl"), f"{db}#latest")
    assert r.returncode == 0, r.stderr
    r = run_diff(str(RECORDINGS / "text-ga.jsonl"), f"{db}#nosuch")
    assert r.returncode == 2 and "no session 'nosuch'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    write_recording(bad, {}, [])
    bad.write_text(bad.read_text() + "{oops\n")
    r = run_diff(str(bad), str(RECORDINGS / "text-ga.jsonl"))
    assert r.returncode == 2 and f"{bad}:2: not valid JSON" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", sorted(FLOWS.FLOWS))
async def test_every_example_equals_a_fresh_recording_of_its_client(name: str, tmp_path: Path) -> None:
    """Re-recorded (new server ids, call ids, timings), each example means the same as the committed file."""
    fresh, _ = await FLOWS.record(FLOWS.FLOWS[name], tmp_path / "fresh.jsonl", tmp_path / "fresh.db")
    rec = read_recording(fresh)
    # timing ignored: a fresh run's latency is the fake server's and this machine's load, not the client's
    result = diff_frames(load(name), ("fresh", rec.session, rec.frames), Options(frozenset({"timing"})))
    assert result.same, result.format()
    assert result.a.client and result.a.summary.turns and result.a.summary.usage


# --- across APIs: a Realtime recording against a GPT-Live-shaped summary ----------------------------


def realtime_summary(name: str) -> Summary:
    rec = read_recording(RECORDINGS / f"{name}.jsonl")
    return summarize(rec.session, rec.frames)


def live_weather(**changes: Any) -> Summary:
    """What a GPT-Live session of function-call-ga's conversation looks like: the same words, the weather
    function run by the delegation's Responses backend, billed in seconds, slower to answer."""
    backend = ToolUse(
        "function",
        "get_weather",
        changes.get("arguments", {"location": "Paris", "unit": "celsius"}),
        {"temperature_c": 18},
    )
    delegation = ToolUse("delegation.responses", None, "Look up the weather in Paris", tools=[backend])
    return Summary(
        "live",
        "primary",
        "gpt-live",
        turns=[
            Turn(USER, "what's the weather in Paris", 0.1, 1.4),
            Turn(ASSISTANT, changes.get("answer", "It is 18 degrees in Paris!"), 2.2, 4.0, [delegation], 850.0),
        ],
        errors=changes.get("errors", []),
        usage={"seconds": 12.0, "active_seconds": 12.0},
    )


MIGRATION = Options(frozenset({"model", "usage", "timing"}))


def test_the_same_conversation_on_gpt_live_differs_only_where_a_migration_does() -> None:
    """Same words (case and punctuation aside), the same function via a delegation: the only differences are
    the model, the cost units (tokens against seconds) and the latency; ignoring them, the sessions are equal."""
    result = diff_summaries(("realtime", realtime_summary("function-call-ga")), ("live", live_weather()))
    assert {(d.section, d.where) for d in result.differences} == {
        ("session", "model"),
        ("usage", "units"),
        ("turns", "#2 assistant"),
    }
    units = next(d for d in result.differences if d.section == "usage")
    assert units.message.startswith("only in A: total_tokens, input_tokens") and units.b == [
        "seconds",
        "active_seconds",
    ]
    latency = next(d for d in result.differences if d.section == "turns")
    assert latency.message.startswith("latency 0.3 ms vs 850 ms") and latency.b == 850.0
    marks = {(r.section, r.where): r.mark for r in result.rows}
    assert marks[("session", "api")] == NEAR  # across APIs by design
    assert marks[("turns", "#1 user")] == NEAR and marks[("turns", "#2 assistant")] == NEAR  # same words, other case
    assert marks[("tools", "#1 get_weather")] == SAME and marks[("tools", "  output")] == SAME
    assert marks[("usage", "seconds")] == DIFFERENT and marks[("usage", "input_tokens")] == DIFFERENT
    assert "client events" not in {r.section for r in result.rows}  # only between two Realtime sessions

    ignored = diff_summaries(("realtime", realtime_summary("function-call-ga")), ("live", live_weather()), MIGRATION)
    assert ignored.same, ignored.format()
    assert "ignored: model, timing, usage" in ignored.format() and "same meaning" in ignored.format()


def test_other_tool_arguments_or_words_across_apis_are_differences_until_ignored() -> None:
    """A delegation's function called with other arguments is a tools difference; other words a turns one;
    --ignore tools and --ignore wording remove exactly those."""
    rt = ("realtime", realtime_summary("function-call-ga"))
    live = ("live", live_weather(arguments={"location": "Lyon"}, answer="Eighteen degrees, sunny."))
    result = diff_summaries(rt, live, MIGRATION)
    assert [(d.section, d.where, d.message.split(" ")[0]) for d in result.differences] == [
        ("turns", "#2 assistant", "text"),
        ("tools", "#1 get_weather", "arguments"),
    ]
    assert result.differences[1].b == {"location": "Lyon"}
    looser = Options(MIGRATION.ignore | {"tools", "wording"})
    assert diff_summaries(rt, live, looser).same
    silent = ("live", live_weather(answer=None))
    assert [d.message for d in diff_summaries(rt, silent, looser).differences] == [
        'only in A: assistant "It is 18 degrees in Paris."'
    ]


def test_a_delegation_without_backend_functions_counts_as_the_tool() -> None:
    """A client delegation (no backend functions) is itself the tool compared: named by its kind."""
    s = live_weather()
    s.turns[1].tools = [ToolUse("delegation.client", None, {"task": "weather"})]
    result = diff_summaries(("realtime", realtime_summary("function-call-ga")), ("live", s), MIGRATION)
    (d,) = result.differences
    assert (d.section, d.message) == ("tools", "name get_weather vs delegation.client")


def test_errors_are_compared_by_text_and_can_be_ignored() -> None:
    """An error only one side had is a difference; the same error worded in another case is not."""
    rt = ("realtime", realtime_summary("function-call-ga"))
    result = diff_summaries(rt, ("live", live_weather(errors=["rate_limit_exceeded: Slow down"])), MIGRATION)
    (d,) = result.differences
    assert (d.section, d.message) == ("errors", 'only in B: "rate_limit_exceeded: Slow down"')
    assert diff_summaries(rt, ("live", live_weather(errors=["x"])), Options(MIGRATION.ignore | {"errors"})).same
    a = Summary("live", turns=[], errors=["Rate limit exceeded."])
    assert diff_summaries(("a", a), ("b", Summary("live", errors=["rate limit exceeded"]))).same


def latency_pair(a_ms: float, b_ms: float, options: Options | None = None) -> list[str]:
    turns = [Turn(USER, "hi"), Turn(ASSISTANT, "hello", latency_ms=a_ms)]
    other = [Turn(USER, "hi"), Turn(ASSISTANT, "hello", latency_ms=b_ms)]
    result = diff_summaries(("a", Summary("x", turns=turns)), ("b", Summary("x", turns=other)), options)
    return [d.message for d in result.differences]


def test_latency_is_a_difference_only_past_both_thresholds() -> None:
    """Below 100 ms or below 20% of A's latency, a change is no difference; both thresholds are options."""
    assert latency_pair(500, 580) == []  # 80 ms, 16%
    assert latency_pair(500, 590) == []  # 90 ms, 18%
    assert latency_pair(50, 140) == []  # 180% but 90 ms
    assert latency_pair(500, 450) == []
    assert latency_pair(500, 700) == ["latency 500 ms vs 700 ms (+200 ms)"]
    assert latency_pair(900, 600) == ["latency 900 ms vs 600 ms (-300 ms)"]
    assert latency_pair(50, 140, Options(latency_ms=50)) == ["latency 50.0 ms vs 140 ms (+90 ms)"]
    assert latency_pair(500, 580, Options(latency_pct=10)) == []  # still under 100 ms
    assert latency_pair(500, 700, Options(frozenset({"latency"}))) == []  # alias of timing


def test_ignore_ids_treats_generated_ids_in_tool_outputs_as_equal() -> None:
    """Tool outputs naming server-made ids (call_…, resp_…) differ by default, not with --ignore ids."""

    def with_output(output: Any) -> Summary:
        return Summary("x", turns=[Turn(ASSISTANT, None, tools=[ToolUse("function", "book", {}, output)])])

    a, b = (
        with_output({"booking": "resp_00072b015417", "ok": True}),
        with_output({"booking": "resp_0099ffee1234", "ok": True}),
    )
    assert [(d.where, d.message[:6]) for d in diff_summaries(("a", a), ("b", b)).differences] == [("#1 book", "output")]
    assert diff_summaries(("a", a), ("b", b), Options(frozenset({"ids"}))).same
    other = with_output({"booking": "resp_0099ffee1234", "ok": False})
    assert not diff_summaries(("a", a), ("b", other), Options(frozenset({"ids"}))).same


def test_unknown_ignore_names_are_refused() -> None:
    """Options names what it cannot ignore."""
    with pytest.raises(ValueError, match="cannot ignore colour"):
        Options(frozenset({"colour"}))


def test_the_report_keeps_its_columns_aligned() -> None:
    """Every row of the side-by-side report has its marker in the same column, and each side's value in
    its own column (long values cut)."""
    long = Summary("live", "primary", "gpt-live", turns=[Turn(USER, "What's the weather in Paris? " * 10)])
    result = diff_summaries(("realtime", realtime_summary("function-call-ga")), ("live", long))
    lines = result.format().splitlines()
    rows = [line for line in lines if line.startswith("  ") and any(f" {m} " in line for m in (SAME, NEAR, DIFFERENT))]
    assert len(rows) >= len(result.rows) - 1
    columns = set()
    for line in rows:
        columns.add(
            next(i for i, ch in enumerate(line) if ch in (SAME, NEAR, DIFFERENT) and i > 24 and line[i - 1] == " ")
        )
    assert len(columns) == 1, rows
    assert max(len(line) for line in rows) <= 2 + 22 + 1 + 40 + 3 + 40


def write_live_recording(path: Path) -> None:
    """A GPT-Live session as rtproxy exports it (header naming the API, a few frames)."""
    session = {
        "id": "20261201-000000-live01",
        "api": "live",
        "variant": "primary",
        "path": "/v1/live/sessions",
        "model": "gpt-live",
    }
    frames = [
        Frame(
            0, 0.0, Direction.CLIENT, orjson.dumps({"type": "session.start", "session": {"model": "gpt-live"}}).decode()
        ),
        Frame(1, 0.05, Direction.SERVER, orjson.dumps({"type": "session.started", "event_id": "ev_1"}).decode()),
    ]
    write_recording(path, session, frames)


def test_a_realtime_recording_against_a_live_one_on_the_command_line(tmp_path: Path) -> None:
    """`rtproxy diff realtime.jsonl live.jsonl`: both APIs named, exit 1 (different conversations), --json
    says which sides are which API; no traceback."""
    import importlib.util

    live = tmp_path / "live.jsonl"
    write_live_recording(live)
    rt = str(RECORDINGS / "text-ga.jsonl")
    r = run_diff(rt, str(live))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "(realtime ga, gpt-realtime)" in r.stdout and "(live primary, gpt-live)" in r.stdout
    no_reducer = importlib.util.find_spec("rtproxy.conversation.live") is None
    assert ("note: no GPT-Live reducer in this build" in r.stdout) == no_reducer
    j = run_diff(rt, str(live), "--json", "--ignore", "model", "--ignore", "cost")
    data = orjson.loads(j.stdout)
    assert j.returncode == 1 and (data["a"]["api"], data["b"]["api"]) == ("realtime", "live")
    assert data["ignored"] == ["model", "usage"] and data["b"]["client_events"] is None
    assert set(data["sections"]) == {"session", "turns", "tools", "usage", "errors"}
    assert {d["section"] for d in data["differences"]} <= {"turns", "tools", "errors"}


def test_the_command_line_ignores_and_thresholds(tmp_path: Path) -> None:
    """--ignore is repeatable and checked (a bad name exits 2 with one line); --latency-ms moves the threshold;
    every ignorable name is documented in --help."""
    a = str(RECORDINGS / "voice-ga.jsonl")
    b = str(RECORDINGS / "voice-beta.jsonl")
    r = run_diff(a, b)
    assert r.returncode == 1 and "session, model: model gpt-realtime vs gpt-4o-realtime-preview" in r.stdout
    assert "beta wire, not compared" in r.stdout  # two dialects' client events are compared by their turns
    r = run_diff(a, b, "--ignore", "model")
    assert r.returncode == 0, r.stdout
    # voice-ga answers in 10.6 ms, voice-beta in 10.8 ms: a difference only with thresholds of zero
    r = run_diff(a, b, "--ignore", "model", "--latency-ms", "0", "--latency-pct", "0")
    assert r.returncode == 1 and "turns, #2 assistant: latency 10.6 ms vs 10.8 ms" in r.stdout
    bad = run_diff(a, b, "--ignore", "colour")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "colour" in bad.stderr
    help_text = run_diff("--help").stdout
    for name in ("wording", "timing", "latency", "usage", "cost", "ids", "audio", "errors", "tools", "model"):
        assert name in help_text


def test_an_answer_no_longer_interrupted_is_a_difference_on_its_turn() -> None:
    """cancelled-ga without the client's cancel and truncation: the answer is complete and keeps its
    transcript (the same 300 ms of audio were sent); the turn says so, and the client events name what the
    client stopped sending."""
    side = load("cancelled-ga")
    frames = []
    for f in side[2]:
        ev = event(f)
        if ev["type"] in ("response.cancel", "conversation.item.truncate", "conversation.item.truncated"):
            continue
        data = str(f.data).replace('"cancelled"', '"completed"').replace('"incomplete"', '"completed"')
        frames.append(Frame(f.seq, f.t, f.direction, data))
    result = diff_frames(side, edited(side, frames))
    turn = [(d.where, d.message) for d in result.differences if d.section == "turns"]
    assert turn == [
        ("#2 assistant", 'text null vs "Hello! How can I help you today?"'),
        ("#2 assistant", "interrupted vs complete"),
    ]
    client = sorted(d.message.split(":")[0] for d in result.differences if d.section == "client events")
    assert client == ["only in A", "only in A"]


def test_a_stretch_of_assistant_turns_is_compared_as_one() -> None:
    """GPT-Live saying "Let me check." before the answer, where Realtime called the tool silently: one stretch
    of the assistant each; a wording difference only, which --ignore wording removes."""
    live = live_weather()
    live.turns[1:] = [
        Turn(ASSISTANT, "Let me check.", 1.6, 2.0, [], 700.0, 400.0),
        Turn(ASSISTANT, "It is 18 degrees in Paris.", 2.2, 4.0, live.turns[1].tools, 300.0),
    ]
    rt = ("realtime", realtime_summary("function-call-ga"))
    result = diff_summaries(rt, ("live", live), Options(MIGRATION.ignore | {"audio"}))
    assert [(d.where, d.message) for d in result.differences] == [
        ("#2 assistant", 'text "It is 18 degrees in Paris." vs "Let me check. It is 18 degrees in Paris."')
    ]
    latency = next(r for r in result.rows if r.where == "  latency")
    assert (latency.a, latency.b) == ("0.3 ms", "700 ms (+700 ms)")  # the stretch's first output
    assert diff_summaries(rt, ("live", live), Options(MIGRATION.ignore | {"audio", "wording"})).same


def test_the_realtime_and_live_examples_of_one_conversation_differ_only_where_a_migration_does() -> None:
    """recordings/same-conversation-realtime.jsonl against recordings/live-voice-delegation.jsonl (the same words
    and the same tool call, made by the real SDKs through the real proxy): the turns and the tool agree; what
    differs is the model, the latency and the cost units (tokens against seconds); ignoring those, they are equal."""
    a = str(RECORDINGS / "same-conversation-realtime.jsonl")
    b = str(RECORDINGS / "live-voice-delegation.jsonl")
    out = run_diff(a, b, "--json")
    assert out.returncode == 1, out.stderr
    data = orjson.loads(out.stdout)
    assert {d["section"] for d in data["differences"]} == {"session", "turns", "usage"}
    assert data["a"]["summary"]["api"] == "realtime" and data["b"]["summary"]["api"] == "live"
    tools = [(t["name"], t["arguments"]) for s in ("a", "b") for t in _tools(data[s]["summary"])]
    assert tools == [("get_weather", {"location": "Paris", "unit": "celsius"})] * 2
    same = run_diff(a, b, "--ignore", "model", "--ignore", "timing", "--ignore", "usage")
    assert same.returncode == 0, same.stdout + same.stderr


def _tools(summary: dict[str, object]) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for turn in summary["turns"]:  # type: ignore[attr-defined]
        for tool in turn["tools"]:
            found.extend(tool["tools"] if tool["kind"].startswith("delegation") else [tool])
    return found
