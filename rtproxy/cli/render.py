"""Recorded sessions as text for people: the conversation, and the event timeline.

Pure: functions take a session row, a :class:`~rtproxy.conversation.realtime.Conversation`
or an iterable of frames, and yield lines. Styling (click's ANSI styles) is
applied only when asked for, so the command line decides (a terminal gets
colour, a pipe plain text).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from ..conversation.model import short
from ..protocols.formats import PCM16, AudioFormat, audio_format, session_audio_formats
from ..protocols.realtime import canonical_type, is_known
from ..protocols.wire import Direction, Frame, parse_event

if TYPE_CHECKING:
    from ..conversation.cost import Cost, SessionCost
    from ..conversation.model import ErrorInfo, Item, Response
    from ..conversation.realtime import Conversation

#: Text previews in the timeline are cut to this many characters.
PREVIEW = 60


class Styler:
    """click.style when colour is on, the identity otherwise."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, **style: Any) -> str:
        return click.style(text, **style) if self.color and text else text


# --- small formatters -----------------------------------------------------------------


def seconds(s: float) -> str:
    """A duration for people: ``40 ms``, ``0.6 s``, ``12.3 s``, ``2:05``, ``1:02:05``."""
    if s < 0.1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    n = int(round(s))
    return f"{n // 3600}:{n % 3600 // 60:02d}:{n % 60:02d}" if n >= 3600 else f"{n // 60}:{n % 60:02d}"


def clock(t: float | None) -> str:
    """A session time as ``m:ss.s`` (``h:mm:ss`` past an hour)."""
    if t is None:
        return "    -  "
    if t >= 3600:
        n = int(t)
        return f"{n // 3600}:{n % 3600 // 60:02d}:{n % 60:02d}"
    return f"{int(t) // 60:2d}:{t % 60:04.1f}"


def preview(text: str, limit: int = PREVIEW) -> str:
    """One line of at most `limit` characters, quoted."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def count(value: Any) -> int:
    """A count (of tokens) from the wire as an int: 0 unless it is a non-negative whole number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**63:
        return 0
    return int(value)


def b64_len(value: Any) -> int:
    """Bytes held by a base64 string, without decoding it."""
    if not isinstance(value, str) or not value:
        return 0
    return len(value) * 3 // 4 - (2 if value.endswith("==") else 1 if value.endswith("=") else 0)


# --- the event timeline ------------------------------------------------------------------

#: Event types a timeline collapses into runs (besides every ``*.delta``).
COLLAPSED = frozenset({"input_audio_buffer.append", "session.input_audio.append"})
#: Audio-carrying event types and the field holding their base64 audio.
AUDIO_FIELDS = {
    "input_audio_buffer.append": "audio",
    "response.output_audio.delta": "delta",
    "session.input_audio.append": "audio",  # GPT-Live
    "session.output_audio.delta": "delta",
}
#: GPT-Live events nesting another API's event (``response.event``: a Responses stream event).
NESTED = "response.event"


def collapsible(event_type: str) -> bool:
    return event_type.endswith(".delta") or event_type in COLLAPSED


@dataclass
class Run:
    """Events of one type for one item within a stretch of consecutive deltas."""

    direction: str
    type: str
    item_id: str | None
    t: float
    first_seq: int
    last_seq: int
    count: int = 0
    audio_bytes: int = 0
    audio_format: AudioFormat | None = None
    text: list[str] = field(default_factory=list)
    text_len: int = 0

    def add(self, seq: int, event: Mapping[str, Any]) -> None:
        self.count += 1
        self.last_seq = seq
        audio_field = AUDIO_FIELDS.get(self.type)
        if audio_field is not None:
            self.audio_bytes += b64_len(event.get(audio_field))
        elif self.text_len <= PREVIEW:
            inner = event.get("event") if self.type.startswith(NESTED + " ") else None
            delta = (inner if isinstance(inner, Mapping) else event).get("delta")
            if isinstance(delta, str):
                self.text.append(delta)
                self.text_len += len(delta)


def _columns(t: float, seqs: str, direction: str, what: str) -> str:
    return f"{t:10.3f}  {seqs:>13}  {direction:<6}  {what}"


def _run_line(run: Run, style: Styler) -> str:
    seqs = str(run.first_seq) if run.count == 1 else f"{run.first_seq}-{run.last_seq}"
    what = style(run.type, fg="cyan" if run.direction == "server" else "yellow")
    if run.count > 1:
        what = f"{run.count} × {what}"
    if run.item_id:
        what += f"  {run.item_id}"
    if run.audio_bytes:
        fmt = run.audio_format or PCM16
        what += f"  {seconds(fmt.duration_ms(run.audio_bytes) / 1000)} of audio"
    elif run.text:
        what += f"  {preview(''.join(run.text))}"
    return _columns(run.t, seqs, run.direction, what)


def _ids(event: Mapping[str, Any]) -> list[str]:
    out = []
    for key in ("response_id", "item_id"):
        value = event.get(key)
        if isinstance(value, str):
            out.append(value)
    for key in ("response", "item"):
        obj = event.get(key)
        if isinstance(obj, Mapping) and isinstance(obj.get("id"), str):
            out.append(obj["id"])
    return out


def event_details(event: Mapping[str, Any]) -> str:
    """The few fields of an event that say what happened, on one line."""
    kind = canonical_type(short(event.get("type"), 200))
    bits = [short(i, PREVIEW) for i in _ids(event)]
    err = event.get("error")
    if kind == "error" and isinstance(err, Mapping):
        bits += [short(err.get("code") or err.get("type") or ""), preview(short(err.get("message") or "", 1000))]
    resp = event.get("response")
    if isinstance(resp, Mapping):
        bits.append(short(resp.get("status") or ""))
        usage = resp.get("usage")
        if isinstance(usage, Mapping) and usage.get("total_tokens") is not None:
            bits.append(f"{short(usage['total_tokens'], 20)} tokens")
    item = event.get("item")
    if isinstance(item, Mapping):
        bits += [short(item.get(k)) for k in ("type", "role", "name") if item.get(k)]
        said = _item_text(item)
        if said:
            bits.append(preview(said))
    for key in ("audio_start_ms", "audio_end_ms"):
        if isinstance(event.get(key), int | float):
            bits.append(f"{key}={event[key]}")
    for key in ("text", "transcript", "arguments"):
        if isinstance(event.get(key), str):
            bits.append(preview(event[key]))
    session = event.get("session")
    if isinstance(session, Mapping) and session.get("model"):
        bits.append(short(session["model"]))
    bits += _live_details(event)
    return "  ".join(b for b in bits if b)


def _live_details(event: Mapping[str, Any]) -> list[str]:
    """GPT-Live fields (no Realtime event has them): delegation, timeline span, nested event, appended content."""
    bits = []
    delegation = event.get("delegation")
    if isinstance(delegation, Mapping):
        bits += [short(delegation.get(k), PREVIEW) for k in ("id", "target") if isinstance(delegation.get(k), str)]
    for key in ("delegation_id", "offset_ms", "start_ms", "end_ms", "reason"):
        value = event.get(key)
        if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
            bits.append(f"{key}={short(value, PREVIEW)}")
    inner = event.get("event")
    if isinstance(inner, Mapping) and isinstance(inner.get("type"), str):
        bits.append(f"[{short(inner['type'], PREVIEW)}]")
    usage = event.get("usage")
    if isinstance(usage, Mapping) and isinstance(usage.get("seconds"), int | float):
        bits.append(f"{short(usage['seconds'], 20)} s billed")
    if isinstance(event.get("content"), str):
        bits.append(preview(event["content"]))
    return bits


def _item_text(item: Mapping[str, Any]) -> str:
    """What an item event carries to read: its text, transcript, arguments or output."""
    for key in ("output", "arguments"):
        if isinstance(item.get(key), str) and item[key]:
            return str(item[key])
    content = item.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                for key in ("text", "transcript"):
                    if isinstance(part.get(key), str) and part[key]:
                        return str(part[key])
    return ""


class Timeline:
    """Frames in, timeline lines out; runs of consecutive deltas collapse per (type, item)."""

    def __init__(self, *, color: bool = False, api: str | None = None) -> None:
        self.style = Styler(color)
        self.known = _catalogue(api)
        self.input_format: AudioFormat = PCM16
        self.output_format: AudioFormat = PCM16
        self._runs: dict[tuple[str, str, str | None], Run] = {}

    def header(self) -> str:
        return self.style(_columns(0, "seq", "dir", "event").replace("     0.000", "         t"), bold=True)

    def feed(self, frame: Frame) -> list[str]:
        """Lines completed by this frame (a run is printed once a non-delta event ends it)."""
        event = parse_event(frame.data)
        direction = frame.direction.value
        if event is None or not isinstance(event.get("type"), str):
            return [*self.flush(), self._odd(frame)]
        kind = canonical_type(event["type"])
        inner = event.get("event") if kind == NESTED else None
        if isinstance(inner, Mapping) and isinstance(inner.get("type"), str) and collapsible(inner["type"]):
            kind = f"{NESTED} {short(inner['type'], PREVIEW)}"  # a nested stream's deltas collapse like any
        if collapsible(kind):
            item_id = event.get("item_id") if isinstance(event.get("item_id"), str) else None
            if item_id is None and isinstance(event.get("delegation_id"), str):
                item_id = short(event["delegation_id"], PREVIEW)
            key = (direction, kind, item_id)
            run = self._runs.get(key)
            if run is None:
                fmt = self.input_format if frame.direction is Direction.CLIENT else self.output_format
                run = self._runs[key] = Run(direction, kind, item_id, frame.t, frame.seq, frame.seq, audio_format=fmt)
            run.add(frame.seq, event)
            return []
        lines = self.flush()
        if kind in ("session.start", "session.started") and isinstance(event.get("session"), Mapping):
            live_audio = event["session"].get("audio")  # GPT-Live: one format both ways, fixed at startup
            live_fmt = audio_format(live_audio.get("format")) if isinstance(live_audio, Mapping) else None
            if live_fmt is not None:
                self.input_format = self.output_format = live_fmt
        if kind in ("session.created", "session.updated") and isinstance(event.get("session"), Mapping):
            inp, out = session_audio_formats(event["session"])
            self.input_format = inp or self.input_format
            self.output_format = out or self.output_format
        style: dict[str, Any] = {"fg": "cyan" if direction == "server" else "yellow"}
        if kind == "error":
            style = {"fg": "red", "bold": True}
        what = self.style(event["type"], **style)
        if not self._is_known(event["type"], frame.direction):
            what += self.style(" (unknown type)", fg="magenta")
        details = event_details(event)
        lines.append(_columns(frame.t, str(frame.seq), direction, f"{what}  {details}" if details else what))
        return lines

    def _is_known(self, event_type: str, direction: Direction) -> bool:
        if self.known is None:
            return is_known(event_type, direction)
        return event_type in self.known[0 if direction is Direction.CLIENT else 1]

    def flush(self) -> list[str]:
        """Lines for the runs in progress (call at the end)."""
        lines = [_run_line(run, self.style) for run in self._runs.values()]
        self._runs.clear()
        return lines

    def _odd(self, frame: Frame) -> str:
        if isinstance(frame.data, bytes):
            what = f"binary frame, {len(frame.data)} bytes"
        else:
            what = f"text frame (not a JSON event): {preview(frame.data)}"
        return _columns(frame.t, str(frame.seq), frame.direction.value, self.style(what, fg="magenta"))


def _catalogue(api: str | None) -> tuple[frozenset[str], frozenset[str]] | None:
    """(client, server) event types of a non-Realtime API that has a catalogue; None: the Realtime one."""
    from ..protocols import Api, client_event_types, server_event_types

    if api in (None, "realtime"):
        return None
    try:
        which = Api(api)
    except ValueError:
        return None
    client, server = client_event_types(which), server_event_types(which)
    return (client, server) if client or server else None


def timeline(frames: Iterable[Frame], *, color: bool = False, api: str | None = None) -> Iterator[str]:
    """The whole timeline of a session, header first (``api`` says whose catalogue names the known types)."""
    tl = Timeline(color=color, api=api)
    yield tl.header()
    for frame in frames:
        yield from tl.feed(frame)
    yield from tl.flush()


# --- the conversation ---------------------------------------------------------------------

#: Conversation text is wrapped to this width (after the indent).
WIDTH = 107
INDENT = " " * 11
#: Anomalies listed at the end of a conversation (the rest are counted).
MAX_LISTED = 20


def api_label(session: Mapping[str, Any]) -> str:
    """``api/variant`` of a session (``realtime/ga``, ``live/sideband``, ``responses``); sessions recorded before
    rtproxy stored the API are Realtime ones of their dialect."""
    api = session.get("api") or ("realtime" if session.get("dialect") else None)
    variant = session.get("variant") or (session.get("dialect") if api == "realtime" else None)
    if not api:
        return "-"
    return f"{api}/{variant}" if variant else str(api)


def session_title(session: Mapping[str, Any], style: Styler) -> list[str]:
    """Two lines naming the session: id, model, API/variant, status; when, how long, how much."""
    first = "  ".join(
        [style(f"Session {session.get('id', '?')}", bold=True)]
        + ([str(session["model"])] if session.get("model") else [])
        + [api_label(session)]
        + [_status(str(session.get("status") or "?"), style)]
    )
    bits = []
    if session.get("started_at"):
        bits.append(f"started {str(session['started_at'])[:19].replace('T', ' ')} UTC")
    if isinstance(session.get("duration"), int | float):
        bits.append(f"lasted {seconds(float(session['duration']))}")
    events = (session.get("client_events") or 0) + (session.get("server_events") or 0)
    if events:
        bits.append(
            f"{events} events ({session.get('client_events') or 0} client, {session.get('server_events') or 0} server)"
        )
    if session.get("unrecorded"):
        bits.append(style(f"{session['unrecorded']} frames not recorded", fg="red"))
    if session.get("label"):
        bits.append(f"label {session['label']!r}")
    if session.get("reason") and session.get("status") not in ("open", "closed"):
        bits.append(f"reason: {session['reason']}")
    return [first, style(" · ".join(bits), dim=True)]


def _status(status: str, style: Styler) -> str:
    if status in ("completed", "closed"):
        return style(status, fg="green")
    if status in ("in_progress", "open"):
        return style(status, fg="blue")
    return style(status, fg="red")


def _wrap(text: str, style: Styler | None = None, **how: Any) -> list[str]:
    """Text wrapped to WIDTH under the indent, each line styled after wrapping (so colour never moves a break)."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        wrapped = textwrap.wrap(para, WIDTH - len(INDENT)) or [""]
        lines += [INDENT + (style(line, **how) if style is not None else line) for line in wrapped]
    return [line.rstrip() for line in lines]


def tokens(usage: Mapping[str, Any] | None) -> str:
    """``187 tokens (in 120: text 100, audio 20, cached 64 · out 67: text 17, audio 50)``."""
    if not usage:
        return "no usage"

    def side(name: str, total: Any, details: Any) -> str:
        parts = []
        if isinstance(details, Mapping):
            parts = [f"{short(k, 30).removesuffix('_tokens')} {count(v)}" for k, v in details.items() if count(v)]
            parts = parts[:8]
        return f"{name} {short(total, 20)}" + (f": {', '.join(parts)}" if parts else "")

    inner = " · ".join(
        side(name, usage.get(f"{key}_tokens"), usage.get(f"{key}_token_details"))
        for name, key in (("in", "input"), ("out", "output"))
        if usage.get(f"{key}_tokens") is not None
    )
    total = usage.get("total_tokens")
    if total is None:
        return inner or "no usage"
    return f"{short(total, 20)} tokens" + (f" ({inner})" if inner else "")


def latency(response: Response) -> str:
    """``latency after input_audio_buffer.commit: created 12 ms · first audio 340 ms · done 900 ms``."""
    ms = response.latency_ms or {}
    names = (("created", "created"), ("first_delta", "first delta"), ("first_audio", "first audio"), ("done", "done"))
    bits = [f"{label} {ms[key]:.0f} ms" for key, label in names if isinstance(ms.get(key), int | float)]
    if not bits:
        return "latency unknown (no trigger recorded)"
    return f"latency after {response.trigger_type or 'trigger'}: " + " · ".join(bits)


def response_lines(response: Response, style: Styler, cost: Cost | None = None) -> list[str]:
    """The per-response summary: status, tokens and cost, then latency and the audio produced."""
    bits = [f"╰ {response.id}", _status(response.status or "in_progress", style)]
    details = response.status_details
    reason = status_reason(details)
    if reason:
        bits.append(f"({reason})")
    bits += ["·", tokens(response.usage)]
    if cost is not None and (cost.known or cost.bounded):
        bits += ["·", cost.label().split(" (")[0]]
    second = latency(response)
    if response.audio_ms:
        second += f" · audio {seconds(response.audio_ms / 1000)}"
        if response.t_first_audio is not None and response.t_done is not None:
            second += f" made in {seconds(max(0.0, response.t_done - response.t_first_audio))}"
    pad = INDENT[:-2]
    return [pad + style(" ".join(bits), dim=True), pad + "  " + style(second, dim=True)]


def status_reason(details: Any) -> str:
    """Why a response ended as it did, from its status_details of any shape ("" if it does not say)."""
    if not isinstance(details, Mapping):
        return ""
    reason = details.get("reason") or details.get("error")
    if isinstance(reason, Mapping):
        reason = reason.get("message") or reason.get("code") or reason.get("type")
    return short(reason, PREVIEW) if reason else ""


def _speaker(item: Item) -> str:
    if item.type == "function_call":
        return "assistant"
    if item.type == "function_call_output":
        return "tool"
    return item.role or item.type


def item_lines(item: Item, calls: Mapping[str, Item], style: Styler) -> list[str]:
    """An item as a turn: time, speaker, audio; its text, transcript or call."""
    who = _speaker(item)
    colour = {"user": "yellow", "assistant": "cyan", "tool": "magenta", "system": "blue"}.get(who, "white")
    head = f"{clock(item.t_start)}  {style(who.upper(), fg=colour, bold=True)}"
    notes = []
    if item.audio_ms:
        notes.append(f"audio {seconds(item.audio_ms / 1000)}")
    if item.truncated_ms is not None:
        notes.append(style(f"cut at {seconds(item.truncated_ms / 1000)}", fg="red"))
    if item.status and item.status != "completed":
        notes.append(_status(item.status, style))
    if item.type not in ("message", "function_call", "function_call_output"):
        notes.append(item.type)
    lines = [head + (f"  ({', '.join(notes)})" if notes else "")]
    if item.type == "function_call":
        lines += _wrap(f"→ {item.name or '?'}({item.arguments or ''})")
        lines.append(INDENT + style(f"call_id {item.call_id}", dim=True))
        if item.output is None:
            lines.append(INDENT + style("(no output)", dim=True))
        return lines
    if item.type == "function_call_output":
        call = calls.get(item.call_id or "")
        name = call.name if call is not None and call.name else "function"
        lines += _wrap(f"← {name}: {item.output or ''}")
        lines.append(INDENT + style(f"call_id {item.call_id}", dim=True))
        return lines
    text, transcript = item.text, item.transcript
    if text:
        lines += _wrap(text)
    if transcript and transcript != text:
        lines += _wrap(transcript, style, italic=True) if text else _wrap(transcript)
    if not text and not transcript:
        if item.truncated_ms is not None:
            lines.append(INDENT + style("(transcript dropped: the user cut this off)", dim=True))
        elif item.audio_ms:
            lines.append(INDENT + style("(no transcript)", dim=True))
        else:
            lines.append(INDENT + style("(empty)", dim=True))
    return lines


def conversation(
    conv: Conversation,
    session: Mapping[str, Any] | None = None,
    *,
    color: bool = False,
    cost: SessionCost | None = None,
) -> Iterator[str]:
    """The conversation as a person reads it: one block per item, a summary line per response (with its cost,
    when `cost` is given)."""
    style = Styler(color)
    if session:
        yield from session_title(session, style)
        yield ""
    items = conv.items
    calls = {i.call_id: i for i in items if i.type == "function_call" and i.call_id}
    last_of: dict[str, int] = {}
    for n, item in enumerate(items):
        if item.response_id:
            last_of[item.response_id] = n
    pending = [r for r in conv.responses if r.id not in last_of]  # responses with no item shown
    by_id = {r.id: r for r in conv.responses}
    costs = dict(cost.parts) if cost is not None else {}
    for n, item in enumerate(items):
        while pending and item.t_start is not None and (pending[0].t_created or 0.0) <= item.t_start:
            yield from _bare_response(pending.pop(0), style)
        yield from item_lines(item, calls, style)
        if item.response_id and last_of.get(item.response_id) == n and item.response_id in by_id:
            yield from response_lines(by_id[item.response_id], style, costs.get(f"response {item.response_id}"))
    for response in pending:
        yield from _bare_response(response, style)
    yield from footer(conv, style)
    if cost is not None:
        yield cost_line(cost, style)


def cost_line(cost: SessionCost, style: Styler) -> str:
    """The session's cost and which price data priced it."""
    from ..conversation.cost import price_data

    return style(f"cost {cost.label()} · priced by {price_data()}", bold=cost.total.known)


def _bare_response(response: Response, style: Styler) -> list[str]:
    """A response that left no item in the conversation (cancelled early, failed, deleted)."""
    return [
        f"{clock(response.t_created)}  {style('(a response with no item)', dim=True)}",
        *response_lines(response, style),
    ]


def footer(conv: Conversation, style: Styler) -> Iterator[str]:
    """Totals, then errors, anomalies and unknown event types, if any."""
    items = conv.items
    user_ms = sum(i.audio_ms for i in items if i.role == "user")
    bot_ms = sum(i.audio_ms for i in items if i.role != "user")
    total = sum(count((r.usage or {}).get("total_tokens")) for r in conv.responses)
    yield ""
    yield style(
        f"{len(items)} items · {len(conv.responses)} responses · {total} tokens · "
        f"user audio {seconds(user_ms / 1000)} · assistant audio {seconds(bot_ms / 1000)}",
        bold=True,
    )
    if conv.errors:
        yield style(f"{len(conv.errors)} error(s):", fg="red", bold=True)
        for err in conv.errors:
            yield "  " + style(error_text(err), fg="red")
    if conv.anomalies:
        n = len(conv.anomalies)
        yield style(f"{n} anomal{'y' if n == 1 else 'ies'}:", fg="magenta")
        for a in conv.anomalies[:MAX_LISTED]:
            yield f"  seq {a.seq}  {a.kind}: {a.message}"
        if n > MAX_LISTED:
            yield f"  … and {n - MAX_LISTED} more (all of them in `show --json`)"
    if conv.unknown_types:
        listed = ", ".join(f"{k} ×{v}" for k, v in conv.unknown_types.most_common())
        yield style(f"unknown event types: {listed}", fg="magenta")


def error_text(err: ErrorInfo) -> str:
    """An error event for a person: when, code, message, and the client event it names."""
    text = f"{clock(err.t).strip()}  seq {err.seq}  {err.code or err.type or 'error'}: {err.message or ''}"
    if err.param:
        text += f" (param {err.param})"
    if err.client_type is not None:
        text += f"  ← {err.client_type} (seq {err.client_seq})"
    elif err.event_id:
        text += f"  ← client event {err.event_id}"
    return text
