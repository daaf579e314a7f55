"""A Responses WebSocket mode session as text for people: each request and the response that answered it.

Pure, like :mod:`rtproxy.cli.render` (whose formatters it shares): takes a reduced
:class:`~rtproxy.conversation.responses_ws.ResponsesSession` and the session row, yields lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..conversation.model import short
from ..conversation.responses_ws import Request, ResponsesSession
from .render import INDENT, MAX_LISTED, Styler, _wrap, clock, preview, session_title
from .render_live import response_line

__all__ = ["responses_conversation"]

#: Input items shown per request (the rest are counted): an agent resends its whole conversation each time.
MAX_INPUT_SHOWN = 6


def _ms(ms: float | None) -> str:
    return "?" if ms is None else f"{ms:.0f} ms"


def request_lines(req: Request, style: Styler, *, lanes: bool) -> list[str]:
    """A request: when, lane, model, what it carries (new input items), tools offered; then its response."""
    lane = f" lane {short(req.stream_id, 40)}" if lanes else ""
    head = style(f"REQUEST #{req.index + 1}", fg="yellow", bold=True)
    notes = [short(req.model, 40)] if req.model else []
    notes.append(f"{req.input_count} input item{'s' if req.input_count != 1 else ''}")
    if req.tools_count:
        notes.append(f"tools: {', '.join(short(t, 30) for t in req.tools[:8])}")
    if req.previous_response_id:
        notes.append(f"after {short(req.previous_response_id, 40)}")
    lines = [f"{clock(req.t)}  {head}{lane}  ({' · '.join(notes)})"]
    if req.instructions and req.index == 0:
        lines.append(INDENT + style("instructions: " + preview(req.instructions, 80), dim=True))
    shown = req.input[-MAX_INPUT_SHOWN:]
    if len(req.input) > len(shown):
        lines.append(INDENT + style(f"… {len(req.input) - len(shown)} earlier input items", dim=True))
    for item in shown:
        if item.type == "message":
            who = style((item.role or "?").upper(), fg="yellow" if item.role == "user" else "cyan")
            lines.append(f"{INDENT}{who} {preview(item.text, 90)}")
        elif item.type.endswith("_output"):
            lines.append(f"{INDENT}↳ output of {short(item.call_id, 40)}: {preview(str(item.output), 70)}")
        elif item.call_id is not None:
            lines.append(f"{INDENT}{style('call', dim=True)} {short(item.name, 40)}({preview(item.text, 60)})")
        else:
            lines.append(INDENT + style(short(item.type, 40), dim=True))
    return lines


def response_block(book: ResponsesSession, req: Request, style: Styler) -> list[str]:
    resp = req.response
    if resp is None:
        return [INDENT + style("(no response)", fg="red")]
    head = style("ASSISTANT", fg="cyan", bold=True)
    lines = [f"{clock(resp.t_created)}  {head}  {short(resp.id, 60)}"]
    for item in resp.items:
        if item.type == "reasoning":
            if item.summary:
                lines += _wrap("reasoning: " + item.summary, style, dim=True)
        elif item.type == "message":
            if item.text:
                lines += _wrap(item.text)
            if item.refusal:
                lines += _wrap("refusal: " + item.refusal, style, fg="red")
        elif item.is_tool_call:
            what = f"{short(item.type.removesuffix('_call'), 30)} {short(item.name, 40) if item.name else ''}".strip()
            lines.append(f"{INDENT}→ {what}({preview(item.arguments, 80)})" if item.arguments else f"{INDENT}→ {what}")
    lat = req.latency_ms
    lines.append(
        f"{INDENT}{response_line(resp, style).strip()}"
        + f" · request → created {_ms(lat['created'])}, first token {_ms(lat['first_token'])}, done {_ms(lat['done'])}"
    )
    return lines


def responses_conversation(
    book: ResponsesSession, session: Mapping[str, Any] | None = None, *, color: bool = False
) -> Iterator[str]:
    """The session as a person reads it: request, response, request… in the order they were sent."""
    style = Styler(color)
    if session:
        yield from session_title(session, style)
        yield ""
    lanes = any(lane is not None for lane in book.lanes)
    for req in book.requests:
        yield from request_lines(req, style, lanes=lanes)
        yield from response_block(book, req, style)
        yield ""
    answered = {r.response.id for r in book.requests if r.response is not None}
    for resp in book.responses:
        if resp.id not in answered:
            yield f"{clock(resp.t_created)}  {style('unrequested response', fg='magenta')} {short(resp.id, 60)}"
    yield from footer(book, style)


def footer(book: ResponsesSession, style: Styler) -> Iterator[str]:
    """Totals (requests, responses, tool calls, tokens), latency, errors and anomalies."""
    usage = book.usage()
    calls = sum(len(r.tool_calls) for r in book.responses)
    lanes = [lane for lane in book.lanes if lane is not None]

    def counted(count: int, what: str) -> str:
        return f"{count} {what}{'' if count == 1 else 's'}"

    bits = [counted(len(book.requests), "request"), counted(len(book.responses), "response")]
    bits.append(counted(calls, "tool call"))
    if lanes:
        bits.append(counted(len(lanes), "lane"))
    if usage:
        tok = f"{usage.get('total_tokens', 0)} tokens (in {usage.get('input_tokens', 0)}"
        tok += f", cached {usage.get('cached_tokens', 0)} · out {usage.get('output_tokens', 0)}"
        tok += f", reasoning {usage.get('reasoning_tokens', 0)})"
        bits.append(tok)
    yield style(" · ".join(bits), bold=True)
    firsts = sorted(v for r in book.requests if (v := r.latency_ms["first_token"]) is not None)
    if firsts:
        yield f"latency request → first token: median {_ms(firsts[len(firsts) // 2])}, worst {_ms(firsts[-1])}"
    if book.steers:
        yield f"steers: {len(book.steers)} (details in `show --json`)"
    if book.streams.errors:
        yield style(f"{len(book.streams.errors)} error(s):", fg="red", bold=True)
        for _, t, e in book.streams.errors[:MAX_LISTED]:
            yield "  " + style(
                f"{clock(t).strip()}  {short(e.get('code'), 60)}: {short(e.get('message'), 200)}", fg="red"
            )
    if book.anomalies:
        n = len(book.anomalies)
        yield style(f"{n} anomal{'y' if n == 1 else 'ies'}:", fg="magenta")
        for a in book.anomalies[:MAX_LISTED]:
            yield f"  seq {a.seq}  {a.kind}: {a.message}"
        if n > MAX_LISTED:
            yield f"  … and {n - MAX_LISTED} more (all of them in `show --json`)"
