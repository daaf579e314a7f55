"""One API-neutral view of a conversation: who said what, which tools ran, errors, latency and cost units.

Every reducer can produce a :class:`Summary` (the Realtime reducer, GPT-Live's, the Responses one), so the
views that compare or price sessions (``diff`` across APIs, cost, traces) read one shape, whatever the API.
:func:`summarize` picks the API's summarizer from :data:`SUMMARIZERS` (one line per API); this module holds
the Realtime one, :func:`summarize_realtime`. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..protocols import UNKNOWN, Api, classify_handshake, refine
from ..protocols.wire import Frame
from .model import MAX_DEPTH, clip

if TYPE_CHECKING:
    from .realtime import Conversation

USER, ASSISTANT = "user", "assistant"


@dataclass(slots=True)
class ToolUse:
    """Work done on the model's behalf: a Realtime function call, a GPT-Live delegation, a Responses tool call.

    ``kind`` says which: ``function`` (a Realtime or Responses function call), ``mcp``, ``custom``,
    ``delegation.responses`` / ``delegation.client`` / ``delegation.decisions`` (GPT-Live), or another tool type
    as the wire names it. ``arguments`` and ``output`` are parsed JSON when they parse, else the text.
    """

    kind: str
    name: str | None = None
    arguments: Any = None
    output: Any = None
    t_start: float | None = None  # seconds on the session timeline
    t_end: float | None = None
    tools: list[ToolUse] = field(default_factory=list)  # what a delegation's backend ran in turn

    @property
    def duration_ms(self) -> float | None:
        if self.t_start is None or self.t_end is None:
            return None
        return max(0.0, (self.t_end - self.t_start) * 1000.0)


@dataclass(slots=True)
class Turn:
    """One stretch of one speaker: what was said (transcript or text), where it sits, what it set off.

    ``latency_ms`` is, for an assistant turn, the time from the end of what it answers (the user's speech or
    the request) to its first output, as a user hears or sees it. ``overlaps`` marks speech over the other
    speaker (barge-in, backchannel); ``interrupted`` a turn cut short.
    """

    speaker: str
    text: str | None = None
    t_start: float | None = None
    t_end: float | None = None
    tools: list[ToolUse] = field(default_factory=list)
    latency_ms: float | None = None
    audio_ms: float | None = None
    interrupted: bool = False
    overlaps: bool = False


@dataclass(slots=True)
class Summary:
    """A conversation, API-neutral. ``usage`` holds cost units by name, summed over the session: token counts
    (``input_tokens``, ``output_tokens``, ``input_audio_tokens``, ``input_cached_tokens``, …) and, for GPT-Live,
    billed seconds (``seconds``, …)."""

    api: str
    variant: str | None = None
    model: str | None = None
    turns: list[Turn] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=dict)
    anomalies: int = 0
    notes: list[str] = field(default_factory=list)  # what the summary could not do (no reducer for the API, …)

    def tools(self) -> list[ToolUse]:
        """Every tool use of every turn, in order."""
        return [tool for turn in self.turns for tool in turn.tools]

    def to_json(self) -> dict[str, Any]:
        """The summary as plain JSON values (tools nested as they are)."""
        return dataclasses.asdict(self)


# --- Realtime -------------------------------------------------------------------------------

#: Where a nested usage object's names go: ``input_token_details.text_tokens`` is ``input_text_tokens``.
_DETAIL_SUFFIXES = ("_token_details", "_tokens_details", "_details")
#: Item roles that are not a speaker's turn (instructions the client added).
_NOT_SPEAKERS = frozenset({"system", "developer"})


def parsed(value: str | None) -> Any:
    """A string from the wire as JSON when it parses (cut at ``MAX_DEPTH``), else as it is."""
    if value is None:
        return None
    try:
        return clip(orjson.loads(value), MAX_DEPTH)
    except orjson.JSONDecodeError:
        return value


def flat_usage(usage: Mapping[str, Any] | None, prefix: str = "", depth: int = 0) -> dict[str, float]:
    """A usage object's numbers by flat name (``input_tokens``, ``input_cached_tokens``, ``output_audio_tokens``).

    Each number keeps its own name: a cached token is counted in ``input_tokens`` and named again in
    ``input_cached_tokens``, never added twice into one unit. Strings, booleans and deeper nesting are left out.
    """
    out: dict[str, float] = {}
    if not isinstance(usage, Mapping) or depth > 4:
        return out
    for key, value in usage.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, Mapping):
            stem = next((key[: -len(s)] for s in _DETAIL_SUFFIXES if key.endswith(s)), key)
            for name, n in flat_usage(value, f"{prefix}{stem}_", depth + 1).items():
                out[name] = out.get(name, 0.0) + n
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[prefix + key] = out.get(prefix + key, 0.0) + float(value)
    return out


def _join(old: str | None, new: str) -> str | None:
    if not new:
        return old
    return new if not old else f"{old}\n{new}"


def _insert_by_time(turns: list[Turn], turn: Turn) -> None:
    """Put ``turn`` before the first turn that started after it (at the end when its time is unknown)."""
    t = turn.t_start
    at = (
        len(turns)
        if t is None
        else next((i for i, x in enumerate(turns) if x.t_start is not None and x.t_start > t), len(turns))
    )
    turns.insert(at, turn)


def summarize_realtime(
    conv_or_frames: Conversation | Sequence[Frame], session: Mapping[str, Any] | None = None
) -> Summary:
    """A Realtime session as a :class:`Summary`: turns in conversation order, tools, latency, errors, usage.

    User turns are the user's messages (typed text or the input audio's transcript); each response is one
    assistant turn (its messages' text or transcript, its function calls as tools with the output the client
    sent back; a response that produced nothing is an empty turn). A turn's latency is from the response's
    trigger to its first audio (else its first delta); a response cancelled or incomplete, or an item
    truncated, marks its turn interrupted.
    """
    from .realtime import Conversation, assemble

    if isinstance(conv_or_frames, Conversation):
        conv = conv_or_frames
    else:
        conv = assemble(conv_or_frames, keep_audio=False, session=dict(session) if session is not None else None)
    row = session if session is not None else conv.session or {}
    model = row.get("model")
    if not isinstance(model, str):
        model = next((c.get("model") for _, c in conv.configs if isinstance(c.get("model"), str)), None)
    variant = row.get("dialect") or row.get("variant") or conv.dialect
    out = Summary("realtime", variant if isinstance(variant, str) else None, model)
    by_response: dict[str, Turn] = {}
    calls: dict[str, ToolUse] = {}
    outputs: dict[str, tuple[Any, float | None]] = {}  # call_id -> output sent before its call was seen
    for item in conv.items:
        if item.type == "function_call_output":
            value = (parsed(item.output), item.t_start)
            tool = calls.get(item.call_id or "")
            if tool is not None:
                tool.output, tool.t_end = value
            elif item.call_id is not None:
                outputs[item.call_id] = value
            continue
        if item.role in _NOT_SPEAKERS:
            continue
        if item.role == "user":
            text = _join(item.text or None, item.transcript)
            out.turns.append(Turn(USER, text, item.t_start, audio_ms=item.audio_ms or None))
            continue
        rid = item.response_id
        turn = by_response.get(rid) if rid is not None else None
        if turn is None:
            turn = Turn(ASSISTANT, t_start=item.t_start)
            out.turns.append(turn)
            if rid is not None:
                by_response[rid] = turn
        if item.type == "message":
            turn.text = _join(turn.text, item.text or item.transcript)
            if item.audio_ms:
                turn.audio_ms = (turn.audio_ms or 0.0) + item.audio_ms
            turn.interrupted |= item.truncated_ms is not None or item.status == "incomplete"
        elif item.type == "function_call" or item.name is not None:
            kind = "function" if item.type == "function_call" else item.type
            tool = ToolUse(kind, item.name, parsed(item.arguments), parsed(item.output), item.t_start)
            if item.call_id is not None:
                calls[item.call_id] = tool
                tool.output, tool.t_end = outputs.pop(item.call_id, (tool.output, None))
            turn.tools.append(tool)
    for r in conv.responses:
        for name, n in flat_usage(r.usage).items():
            out.usage[name] = out.usage.get(name, 0.0) + n
        if r.status == "failed":
            err = (r.status_details or {}).get("error")
            err = err if isinstance(err, dict) else {}
            what = [str(x)[:200] for x in (err.get("code") or err.get("type"), err.get("message")) if x]
            out.errors.append(": ".join(["response failed", *what]))
        turn = by_response.get(r.id)
        if turn is None:  # a response that produced nothing (refused, cancelled at once) is a silent turn
            turn = by_response[r.id] = Turn(ASSISTANT, t_start=r.t_created)
            _insert_by_time(out.turns, turn)
        turn.t_end = r.t_done
        turn.interrupted |= r.status in ("cancelled", "incomplete")
        first = r.t_first_audio if r.t_first_audio is not None else r.t_first_delta
        if r.t_trigger is not None and first is not None:
            turn.latency_ms = round(max(0.0, first - r.t_trigger) * 1000.0, 3)
    for e in conv.errors:
        out.errors.append(f"{e.code or e.type or 'error'}: {e.message or ''}".strip())
    out.errors += [a.message for a in conv.anomalies if a.kind == "transcription_failed"]
    out.anomalies = len(conv.anomalies)
    return out


# --- any API --------------------------------------------------------------------------------

Summarizer = Callable[[Mapping[str, Any] | None, Sequence[Frame]], Summary]
#: Frames looked at to tell a session's API when its row does not say (a session settles in a few).
DETECT_FRAMES = 64


def _realtime(session: Mapping[str, Any] | None, frames: Sequence[Frame]) -> Summary:
    return summarize_realtime(frames, session)


def _live(session: Mapping[str, Any] | None, frames: Sequence[Frame]) -> Summary:
    try:
        module = importlib.import_module(".live", __package__)
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.live":
            raise
        module = None
    summarize_live = getattr(module, "summarize_live", None)
    if not callable(summarize_live):
        return _unsummarized("live", session, "no GPT-Live reducer in this build: its turns are not compared")
    result: Summary = summarize_live(frames, session)
    return result


def _responses(session: Mapping[str, Any] | None, frames: Sequence[Frame]) -> Summary:
    from .responses_ws import summarize_responses

    return summarize_responses(frames, dict(session) if session is not None else None)


#: The summarizer of each API: one line per API.
SUMMARIZERS: dict[str, Summarizer] = {
    Api.REALTIME.value: _realtime,
    Api.LIVE.value: _live,
    Api.RESPONSES.value: _responses,
}


def _unsummarized(api: str, session: Mapping[str, Any] | None, note: str) -> Summary:
    row = session or {}
    model, variant = row.get("model"), row.get("variant")
    return Summary(
        api,
        variant if isinstance(variant, str) else None,
        model if isinstance(model, str) else None,
        notes=[note],
    )


def detect_api(session: Mapping[str, Any] | None, frames: Sequence[Frame]) -> str:
    """A session's API: its row's ``api``; else its path's, else its first frames'; else Realtime (a recording
    made before sessions carried their API, as the store reads one)."""
    row = session or {}
    api = row.get("api")
    if isinstance(api, str) and api:
        return api
    path, query = row.get("path"), row.get("query")
    kind = classify_handshake(path, query if isinstance(query, str) else "") if isinstance(path, str) else UNKNOWN
    for frame in frames[:DETECT_FRAMES]:
        if kind.api is not Api.UNKNOWN:  # the API is known (refining would only learn the variant)
            break
        event = frame.event
        if event is not None:
            kind = refine(kind, frame.direction.value, event.get("type"), event) or kind
    return kind.api.value if kind.api is not Api.UNKNOWN else Api.REALTIME.value


def summarize(session: Mapping[str, Any] | None, frames: Sequence[Frame]) -> Summary:
    """Any session as a :class:`Summary`, by its API's summarizer; an API without one gives no turns, and says so."""
    api = detect_api(session, frames)
    summarizer = SUMMARIZERS.get(api)
    if summarizer is None:
        return _unsummarized(api, session, f"no reducer for API {api!r}: its turns are not compared")
    return summarizer(session, frames)
