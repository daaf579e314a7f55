"""A recorded session as an OpenTelemetry trace, sent over OTLP/HTTP (`export --otlp`, `proxy --otlp`).

One trace per session: a root span for the WebSocket connection (API, variant, model, status, close codes),
a span per model response (Realtime) or assistant turn (GPT-Live and any API with a :class:`Summary`), and
under it a span per tool call or delegation (a delegation's backend tools under it). Times are the
recording's own: the session's ``started_at`` plus each frame's offset, so the trace sits beside the app's.

Attributes follow the OpenTelemetry GenAI semantic conventions where they have a name (``gen_ai.system``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.tool.name``, …); the rest are ``rtproxy.*``
(audio and cached tokens, GPT-Live seconds, the cost). No audio and no secret ever goes in an attribute; text,
transcripts and tool arguments/outputs only with ``content=True``, each cut to :data:`MAX_CONTENT` characters.

This is the only module that imports ``opentelemetry``; the CLI imports it only when ``--otlp`` is given. It
uses a private :class:`TracerProvider` (never the process's global one), so rtproxy used as a library never
changes where an application's own spans go. :class:`SessionShipper` sends the proxy's sessions as they end,
from a thread of its own, off the forwarding path.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from .protocols.secrets import redact_text
from .protocols.wire import Direction, Frame

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Span, Tracer

    from .conversation.cost import Cost
    from .conversation.model import Item, Response
    from .conversation.realtime import Conversation
    from .conversation.summary import Summary, ToolUse

#: Characters of content (text, transcript, tool arguments or output) one attribute holds at most.
MAX_CONTENT = 4096
#: Spans one trace holds at most (a session with more responses says how many it left out).
MAX_SPANS = 2000
#: Characters of an error message kept in an attribute.
MAX_MESSAGE = 200
#: Seconds one export may take (retries included) before it counts as failed.
EXPORT_TIMEOUT = 10.0

SYSTEM = "openai"
_NS = 1_000_000_000


# --- time --------------------------------------------------------------------------------------


def _epoch(started_at: Any) -> float:
    """The session's start as seconds since the epoch (now when the row has no usable time)."""
    if isinstance(started_at, str):
        try:
            moment = dt.datetime.fromisoformat(started_at.replace("Z", "+00:00"))
        except ValueError:
            return time.time()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    return time.time()


@dataclass(slots=True)
class _Clock:
    """Session-timeline seconds to epoch nanoseconds, kept within the session's span."""

    start: float  # epoch seconds
    duration: float

    def ns(self, t: float | None, default: float = 0.0) -> int:
        value = default if t is None else t
        value = min(max(0.0, value), self.duration)
        return int((self.start + value) * _NS)


# --- attributes --------------------------------------------------------------------------------


def _content(value: Any) -> str:
    """A piece of content as bounded text with any secret masked."""
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) > MAX_CONTENT:
        text = text[: MAX_CONTENT - 1] + "…"
    return redact_text(text)


def _short(value: Any) -> str:
    text = str(value)
    return redact_text(text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…")


def _usage_attributes(usage: Mapping[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in usage.items():
        number: int | float = int(value) if float(value).is_integer() else float(value)
        if name == "input_tokens":
            out["gen_ai.usage.input_tokens"] = number
        elif name == "output_tokens":
            out["gen_ai.usage.output_tokens"] = number
        out[f"rtproxy.usage.{name}"] = number
    return out


def _cost_attributes(api: str, usage: Any, model: str | None, when: Any) -> dict[str, Any]:
    from .conversation.cost import price_data, price_usage

    cost = price_usage(api, usage, model, when=when)
    return _cost_of(cost, price_data())


def _cost_of(cost: Any, data: str) -> dict[str, Any]:
    out: dict[str, Any] = {"rtproxy.cost.price_data": data}
    if cost.total is not None:
        out["rtproxy.cost.usd"] = float(cost.total)
        if cost.partial:
            out["rtproxy.cost.unpriced"] = cost.partial
    elif cost.low is not None and cost.high is not None:  # the usage leaves it open: both bounds, no guess
        out["rtproxy.cost.usd_low"] = float(cost.low)
        out["rtproxy.cost.usd_high"] = float(cost.high)
    if cost.reason:
        out["rtproxy.cost.reason"] = _short(cost.reason)
    return out


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None left out, strings with secrets masked."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str):
            value = redact_text(value)
        out[key] = value
    return out


# --- building ----------------------------------------------------------------------------------


class _Builder:
    """Spans of one session, made with a tracer, at the recording's times."""

    def __init__(self, tracer: Tracer, session: Mapping[str, Any], content: bool) -> None:
        self.tracer = tracer
        self.session = session
        self.content = content
        duration = session.get("duration")
        self.clock = _Clock(
            _epoch(session.get("started_at")),
            float(duration) if isinstance(duration, int | float) and duration > 0 else 0.0,
        )
        self.spans = 0
        self.left_out = 0

    def start(self, name: str, parent: Span | None, t: float | None, attributes: Mapping[str, Any]) -> Span | None:
        from opentelemetry import trace

        if self.spans >= MAX_SPANS:
            self.left_out += 1
            return None
        self.spans += 1
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=context,
            kind=trace.SpanKind.CLIENT,
            attributes=_clean(attributes),
            start_time=self.clock.ns(t),
        )

    def end(self, span: Span, t: float | None, start: float | None) -> None:
        end = self.clock.ns(t, self.clock.duration)
        span.end(end_time=max(end, self.clock.ns(start)))

    def fail(self, span: Span, error_type: str, message: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", _short(error_type))
        span.set_status(Status(StatusCode.ERROR, _short(message) if message else None))

    # the root ----------------------------------------------------------------------------------

    def root(self, summary: Summary) -> Span:
        row = self.session
        attributes: dict[str, Any] = {
            "gen_ai.system": SYSTEM,
            "gen_ai.operation.name": "realtime" if summary.api == "realtime" else summary.api,
            "gen_ai.request.model": summary.model or row.get("model"),
            "rtproxy.session.id": row.get("id"),
            "rtproxy.session.label": row.get("label"),
            "rtproxy.api": summary.api,
            "rtproxy.variant": row.get("variant") or summary.variant,
            "rtproxy.dialect": row.get("dialect"),
            "rtproxy.status": row.get("status"),
            "rtproxy.closed_by": row.get("closed_by"),
            "rtproxy.client_close_code": row.get("client_close_code"),
            "rtproxy.server_close_code": row.get("server_close_code"),
            "rtproxy.duration_s": self.clock.duration,
            "rtproxy.client_events": row.get("client_events"),
            "rtproxy.server_events": row.get("server_events"),
            "rtproxy.anomalies": summary.anomalies,
            "rtproxy.errors": len(summary.errors),
            "url.path": row.get("path"),
        }
        if row.get("api_session_id"):
            attributes["rtproxy.api_session_id"] = row.get("api_session_id")
        if row.get("linked_to"):
            attributes["rtproxy.linked_to"] = row.get("linked_to")
        name = f"{summary.api} {summary.model or row.get('model') or ''}".strip()
        span = self.start(name, None, 0.0, attributes)
        assert span is not None  # the first span of a trace is never left out
        if row.get("status") in ("error", "rejected", "interrupted"):
            self.fail(span, str(row.get("status")), row.get("reason"))
        for message in summary.errors[:64]:
            kind = _short(message.partition(":")[0])
            span.add_event("rtproxy.error", {"error.type": kind, "message": _short(message)})
        return span

    # Realtime ----------------------------------------------------------------------------------

    def realtime(self, conv: Conversation, summary: Summary, root: Span) -> Summary:
        from .conversation.cost import price_data, price_usage, total
        from .conversation.summary import flat_usage

        model = summary.model
        served = next((c.get("model") for _, c in reversed(conv.configs) if isinstance(c.get("model"), str)), model)
        outputs: dict[str, Item] = {}
        asked: dict[str, str] = {}  # response id -> what the user said last before it
        last_user: str | None = None
        for item in conv.items:
            if item.type == "function_call_output" and item.call_id is not None:
                outputs.setdefault(item.call_id, item)
            elif item.role == "user":
                last_user = "\n".join(t for t in (item.text, item.transcript) if t) or last_user
            elif item.response_id is not None and item.response_id not in asked and last_user is not None:
                asked[item.response_id] = last_user
        costs = []
        data = price_data()
        when = self.session.get("started_at")
        for r in conv.responses:
            cost = price_usage("realtime", r.usage, model, when=when)
            costs.append(cost)
            span = self._response(r, model, served, root, flat_usage(r.usage), _cost_of(cost, data), asked)
            if span is None:
                continue
            if self.content and (text := _text_of(conv, r)):
                span.set_attribute("rtproxy.content.output", _content(text))
            for iid in r.output_item_ids:
                made = conv.item(iid)
                if made is not None and (made.type == "function_call" or (made.name and made.type != "message")):
                    self._call(made, outputs.get(made.call_id or ""), r, span)
            self.end(span, r.t_done, r.t_trigger if r.t_trigger is not None else r.t_created)
        if costs:
            root.set_attributes(_clean(_cost_of(total(costs), data)))
        root.set_attributes(_clean(_usage_attributes(summary.usage)))
        return summary

    def _response(
        self,
        r: Response,
        model: str | None,
        served: str | None,
        root: Span,
        usage: Mapping[str, float],
        cost: Mapping[str, Any],
        asked: Mapping[str, str],
    ) -> Span | None:
        start = r.t_trigger if r.t_trigger is not None else r.t_created
        latency = r.latency_ms
        attributes: dict[str, Any] = {
            "gen_ai.system": SYSTEM,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.response.model": served,
            "gen_ai.response.id": r.id,
            "gen_ai.response.finish_reasons": [r.status] if r.status else None,
            "rtproxy.response.status": r.status,
            "rtproxy.response.trigger": r.trigger_type,
            "rtproxy.latency.first_delta_ms": latency["first_delta"],
            "rtproxy.latency.first_audio_ms": latency["first_audio"],
            "rtproxy.latency.done_ms": latency["done"],
            "rtproxy.audio_ms": round(r.audio_ms, 3) if r.audio_ms else None,
            **_usage_attributes(usage),
            **cost,
        }
        span = self.start(f"chat {model or ''}".strip(), root, start, attributes)
        if span is None:
            return None
        if self.content:
            if r.id in asked:
                span.set_attribute("rtproxy.content.input", _content(asked[r.id]))
        if r.status == "failed":
            err = (r.status_details or {}).get("error")
            err = err if isinstance(err, dict) else {}
            self.fail(span, str(err.get("code") or err.get("type") or "response_failed"), err.get("message"))
        return span

    def _call(self, item: Item, output: Item | None, r: Response, parent: Span) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.system": SYSTEM,
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": item.name,
            "gen_ai.tool.call.id": item.call_id,
            "gen_ai.tool.type": "function" if item.type == "function_call" else item.type,
        }
        if self.content:
            if item.arguments is not None:
                attributes["gen_ai.tool.call.arguments"] = _content(item.arguments)
            if output is not None and output.output is not None:
                attributes["gen_ai.tool.call.result"] = _content(output.output)
        span = self.start(f"execute_tool {item.name or ''}".strip(), parent, item.t_start, attributes)
        if span is None:
            return
        end = output.t_start if output is not None else r.t_done
        if output is None:
            span.set_attribute("rtproxy.tool.output_sent", False)
        self.end(span, end, item.t_start)

    # any API with a Summary (GPT-Live) -------------------------------------------------------------

    def turns(self, summary: Summary, root: Span) -> None:
        from .conversation.summary import ASSISTANT

        prompt: str | None = None
        for turn in summary.turns:
            if turn.speaker != ASSISTANT:
                prompt = turn.text or prompt
                continue
            attributes: dict[str, Any] = {
                "gen_ai.system": SYSTEM,
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": summary.model,
                "rtproxy.latency.first_output_ms": turn.latency_ms,
                "rtproxy.audio_ms": turn.audio_ms,
                "rtproxy.turn.interrupted": turn.interrupted,
            }
            if self.content:
                if prompt:
                    attributes["rtproxy.content.input"] = _content(prompt)
                if turn.text:
                    attributes["rtproxy.content.output"] = _content(turn.text)
            span = self.start(f"chat {summary.model or ''}".strip(), root, turn.t_start, attributes)
            if span is None:
                continue
            for tool in turn.tools:
                self._tool(tool, span, turn.t_end)
            self.end(span, turn.t_end, turn.t_start)
        if summary.usage:
            root.set_attributes(_clean(_usage_attributes(summary.usage)))

    def _tool(self, tool: ToolUse, parent: Span, default_end: float | None, depth: int = 0) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.system": SYSTEM,
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.name,
            "gen_ai.tool.type": tool.kind,
        }
        if self.content:
            if tool.arguments is not None:
                attributes["gen_ai.tool.call.arguments"] = _content(tool.arguments)
            if tool.output is not None:
                attributes["gen_ai.tool.call.result"] = _content(tool.output)
        span = self.start(f"execute_tool {tool.name or tool.kind}", parent, tool.t_start, attributes)
        if span is None:
            return
        end = tool.t_end if tool.t_end is not None else default_end
        if depth < 8:
            for inner in tool.tools:
                self._tool(inner, span, end, depth + 1)
        self.end(span, end, tool.t_start)


def _text_of(conv: Conversation, r: Response) -> str:
    parts = []
    for iid in r.output_item_ids:
        item = conv.item(iid)
        if item is not None and item.type == "message":
            parts.append(item.text or item.transcript)
    return "\n".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Built:
    """What :func:`build` made: the spans count and the trace id (32 hex digits)."""

    spans: int
    trace_id: str
    left_out: int = 0


def build(tracer: Tracer, session: Mapping[str, Any], frames: Iterable[Frame], *, content: bool = False) -> Built:
    """Make the spans of one session (its row and frames) with `tracer`; they end as they are made."""
    from .conversation.summary import detect_api, summarize, summarize_realtime

    frames = frames if isinstance(frames, Sequence) else list(frames)
    api = detect_api(session, frames)
    if api != "realtime":
        from .conversation.cost import USAGE_EVENTS, session_cost

        summary = summarize(session, frames)
        wanted = USAGE_EVENTS.get(api, frozenset())
        events = (f.event for f in frames if f.direction is Direction.SERVER and isinstance(f.data, str))
        usage = (e for e in events if e is not None and e.get("type") in wanted)
        cost = session_cost(api, summary.model or session.get("model"), usage, when=session.get("started_at"))
        return build_from_summary(tracer, session, summary, content=content, cost=cost.total)
    from .conversation.realtime import assemble

    builder = _Builder(tracer, session, content)
    conv = assemble(frames, keep_audio=False, session=dict(session))
    summary = summarize_realtime(conv, session)
    root = builder.root(summary)
    builder.realtime(conv, summary, root)
    return _finish(builder, root, summary)


def build_from_summary(
    tracer: Tracer, session: Mapping[str, Any], summary: Summary, *, content: bool = False, cost: Cost | None = None
) -> Built:
    """The spans of a session from its API-neutral :class:`Summary` (GPT-Live and any API but Realtime, whose
    responses :func:`build` reads from the Realtime reducer): a span per assistant turn, its tools under it.
    `cost` is the session's (from its usage events); without it the Summary's usage is priced."""
    builder = _Builder(tracer, session, content)
    root = builder.root(summary)
    builder.turns(summary, root)
    if cost is not None:
        from .conversation.cost import price_data

        root.set_attributes(_clean(_cost_of(cost, price_data())))
    elif summary.usage:
        when = session.get("started_at")
        root.set_attributes(_clean(_cost_attributes(summary.api, summary.usage, summary.model, when)))
    return _finish(builder, root, summary)


def _finish(builder: _Builder, root: Span, summary: Summary) -> Built:
    if summary.notes:
        root.set_attribute("rtproxy.notes", [_short(n) for n in summary.notes[:8]])
    if builder.left_out:
        root.set_attribute("rtproxy.spans_left_out", builder.left_out)
    builder.end(root, builder.clock.duration, 0.0)
    return Built(builder.spans, format(root.get_span_context().trace_id, "032x"), builder.left_out)


# --- exporting ---------------------------------------------------------------------------------


def traces_url(url: str) -> str:
    """An OTLP/HTTP URL as the exporter wants it: a bare collector address gets ``/v1/traces``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--otlp needs an http(s) URL, got {url!r}")
    if parts.path in ("", "/"):
        return url.rstrip("/") + "/v1/traces"
    return url


class _Captured(logging.Handler):
    """The exporter's own log lines, kept (not printed) so a failure is one line of ours."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 16:
            self.messages.append(record.getMessage())


_quiet_lock = threading.Lock()


def _exporter_logs() -> tuple[_Captured, Callable[[], None]]:
    logger = logging.getLogger("opentelemetry")
    handler = _Captured()
    with _quiet_lock:
        saved = (logger.handlers[:], logger.propagate, logger.level)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.WARNING)

    def restore() -> None:
        with _quiet_lock:
            logger.handlers[:], logger.propagate, _ = saved
            logger.setLevel(saved[2])

    return handler, restore


class ExportError(Exception):
    """The collector did not take the trace (one line saying why)."""


def spans_of(session: Mapping[str, Any], frames: Iterable[Frame], *, content: bool = False) -> tuple[Built, Any]:
    """The finished spans of one session (``ReadableSpan`` objects), made with a private provider."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from . import __version__

    provider = TracerProvider(resource=Resource.create({"service.name": "rtproxy", "service.version": __version__}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("rtproxy", __version__)
    built = build(tracer, session, frames, content=content)
    spans = memory.get_finished_spans()
    provider.shutdown()
    return built, spans


def send(spans: Sequence[ReadableSpan], endpoint: str | None, *, timeout: float = EXPORT_TIMEOUT) -> None:
    """Send finished spans over OTLP/HTTP to `endpoint` (None: the ``OTEL_EXPORTER_OTLP_*`` variables, as the
    exporter reads them); :class:`ExportError` if the collector did not take them."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint) if endpoint else None, timeout=timeout)
    captured, restore = _exporter_logs()
    try:
        result = exporter.export(spans)
    except Exception as e:  # the exporter's transport can raise what it does not catch itself
        raise ExportError(_short(f"{type(e).__name__}: {e}")) from e
    finally:
        restore()
        exporter.shutdown()  # type: ignore[no-untyped-call]
    if result is not SpanExportResult.SUCCESS:
        why = "; ".join(dict.fromkeys(captured.messages)) or "the collector did not accept the spans"
        if "NewConnectionError" in why or "Connection refused" in why:
            why = "no collector answers there (connection refused)"
        elif "timed out" in why.lower() or "ReadTimeout" in why:
            why = f"the collector did not answer within {timeout:g} s"
        raise ExportError(_short(why))


def where(endpoint: str | None) -> str:
    """Where spans go, for a message: the URL, or the variable that sets it."""
    import os

    if endpoint:
        return traces_url(endpoint)
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if os.environ.get(var):
            return redact_text(os.environ[var])
    return "http://localhost:4318/v1/traces"


def export_session(
    session: Mapping[str, Any], frames: Iterable[Frame], endpoint: str | None, *, content: bool = False
) -> Built:
    """Build and send one session's trace; :class:`ExportError` if it was not taken."""
    built, spans = spans_of(session, frames, content=content)
    send(spans, endpoint)
    return built


# --- the proxy's sessions, as they end ---------------------------------------------------------------


class SessionShipper:
    """Sends each session the proxy ends as a trace, from a thread of its own.

    :meth:`submit` only puts the session id on a bounded queue (a full queue drops it, counted), so the
    forwarding path never waits for a collector. The thread waits until the recorder has committed the
    session (`flush`, then the row's ``ended_at``), reads it with its own connection, builds its trace and
    sends it with a timeout. A collector that is down is reported once per outage, and once more when it
    answers again; never per span or per session.
    """

    def __init__(
        self,
        db: str,
        endpoint: str | None,
        *,
        content: bool = False,
        flush: Callable[[float], bool] | None = None,
        warn: Callable[[str], None] = lambda message: None,
        queue_size: int = 256,
        timeout: float = EXPORT_TIMEOUT,
    ) -> None:
        self.db = db
        self.endpoint = endpoint
        self.content = content
        self.flush = flush
        self.warn = warn
        self.timeout = timeout
        self.queue: queue.Queue[str | None] = queue.Queue(queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.down = False
        self._warned_full = False
        self._thread = threading.Thread(target=self._run, name="rtproxy-otlp", daemon=True)
        self._thread.start()

    def submit(self, session_id: str) -> None:
        """Queue a session that ended (never blocks)."""
        try:
            self.queue.put_nowait(session_id)
        except queue.Full:
            self.dropped += 1
            if not self._warned_full:
                self._warned_full = True
                self.warn("the trace exporter is behind: sessions are not being sent (counted at exit)")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, for at most `timeout` seconds, then stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))
        left = self.queue.qsize()
        if self._thread.is_alive() or left:
            self.dropped += left
        if self.dropped:
            self.warn(f"{self.dropped} session(s) not sent as traces")

    def _run(self) -> None:
        while True:
            session_id = self.queue.get()
            if session_id is None:
                return
            try:
                self._ship(session_id)
            except Exception as e:  # a session we cannot read or build is that session's problem only
                self.failed += 1
                self.warn(_short(f"session {session_id} not sent as a trace: {type(e).__name__}: {e}"))

    def _committed(self, session_id: str) -> dict[str, Any] | None:
        from .store import Store

        if self.flush is not None:
            self.flush(self.timeout)
        with Store(self.db) as store:
            for _ in range(100):  # the writer commits within its flush interval; bounded all the same
                row = store.session(session_id)
                if row.get("ended_at"):
                    return row
                time.sleep(0.05)
        return None

    def _ship(self, session_id: str) -> None:
        from .store import Store

        row = self._committed(session_id)
        if row is None:
            self.failed += 1
            self.warn(f"session {session_id} not sent as a trace: it was not committed in time")
            return
        with Store(self.db) as store:
            frames = list(store.frames(session_id))
        built, spans = spans_of(row, frames, content=self.content)
        try:
            send(spans, self.endpoint, timeout=self.timeout)
        except ExportError as e:
            self.failed += 1
            if not self.down:
                self.down = True
                self.warn(
                    f"cannot send traces to {where(self.endpoint)}: {e} (session {session_id}; "
                    "the recording is kept; not reported again until the collector answers)"
                )
            return
        self.sent += 1
        if self.down:
            self.down = False
            self.warn(f"traces reach {where(self.endpoint)} again")
