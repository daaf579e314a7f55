"""How one conversation item reads: a few lines of Rich text (pure, no widgets)."""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.syntax import Syntax
from rich.text import Text

from ...cli.render import seconds, status_reason, tokens
from ..views import ConversationView, ItemView, ResponseView, pretty_json, waveform

SPEAKER_STYLES = {
    "user": "bold green",
    "assistant": "bold cyan",
    "system": "bold magenta",
    "function call": "bold yellow",
    "function output": "bold yellow",
    "delegation": "bold magenta",  # GPT-Live: work handed to the client, a Responses backend or Decisions
}
MAX_JSON_LINES = 40
#: Arguments or output longer than this are cut before highlighting (Pygments runs on the UI thread here).
MAX_JSON_CHARS = 8_000


def ms_text(ms: float) -> str:
    """A latency: whole milliseconds below a second (they matter there), else seconds."""
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def response_line(r: ResponseView) -> Text:
    """`resp_… completed · 412 tokens · created 210 ms · first audio 480 ms · done 2.1 s`."""
    status_style = {"completed": "green", "cancelled": "yellow", "incomplete": "yellow"}.get(r.status or "", "red")
    line = Text("  ↳ ", style="dim")
    line.append(r.id, style="dim")
    line.append(f" {r.status or 'in progress'}", style=status_style if r.status else "italic")
    reason = status_reason(r.status_details)
    if reason:
        line.append(f" ({reason})", style=status_style)
    if r.usage:
        line.append(f" · {tokens(r.usage)}", style="dim")
    for key, label in (
        ("created", "created"),
        ("first_audio", "first audio"),
        ("first_delta", "first delta"),
        ("done", "done"),
    ):
        ms = r.latency_ms.get(key)
        if ms is not None and not (key == "first_delta" and r.latency_ms.get("first_audio") is not None):
            line.append(f" · {label} {ms_text(ms)}", style="dim")
    return line


def wrap(text: str, width: int, console: Console) -> list[str]:
    """Lines of at most ``width`` cells: textwrap for plain ASCII (fast on long transcripts), else Rich."""
    if text.isascii():
        out: list[str] = []
        for paragraph in text.splitlines() or [""]:
            out.extend(textwrap.wrap(paragraph, width, break_on_hyphens=False) or [""])
        return out
    return [line.plain for line in Text(text).wrap(console, width)]


def _json_lines(text: str, console: Console, width: int) -> list[Text]:
    code = pretty_json(text)
    lines = code.splitlines() or [""]
    cut = len(lines) - MAX_JSON_LINES
    if cut > 0:
        lines = lines[:MAX_JSON_LINES]
    code = "\n".join(lines)
    if len(code) > MAX_JSON_CHARS:  # a few very long lines
        code = code[:MAX_JSON_CHARS] + "…"
    highlighted = Syntax(code, "json", theme="ansi_dark").highlight(code)
    out = [Text("    ") + part for part in highlighted.split("\n")]
    if cut > 0:
        out.append(Text(f"    … {cut} more lines", style="dim"))
    return out


def item_lines(item: ItemView, conv: ConversationView, console: Console, width: int) -> list[Text]:
    """The lines of one item at a width: header, body, audio, and its response's summary if it is the last output."""
    head = Text("▌", style=SPEAKER_STYLES.get(item.speaker, "bold"))
    head.append(f" {item.speaker}", style=SPEAKER_STYLES.get(item.speaker, "bold"))
    if item.t_start is not None:
        head.append(f"  {item.t_start:.1f} s", style="dim")
    head.append(f"  {item.id}", style="dim")
    if item.status and item.status != "completed":
        head.append(f"  {item.status}", style="yellow")
    if item.truncated_ms is not None:
        head.append(f"  ✂ truncated at {seconds(item.truncated_ms / 1000)}", style="bold red")
    lines = [head]
    body: list[Text] = []
    if item.type == "delegation":
        body.append(Text(f"  {item.name or '?'}", style="magenta"))
        body.extend(_json_lines(item.arguments or "", console, width))
        if item.output:
            body.append(Text("  ← returned", style="magenta"))
            body.extend(Text("    " + line) for line in wrap(item.output, max(width - 4, 10), console))
        else:
            body.append(Text("  ← nothing yet", style="dim italic"))
    elif item.type == "function_call":
        body.append(
            Text(f"  {item.name or '?'}(", style="yellow")
            + Text(f"call_id={item.call_id}", style="dim")
            + Text(")", style="yellow")
        )
        body.extend(_json_lines(item.arguments or "", console, width))
        if item.output is not None:
            body.append(Text("  → output", style="yellow"))
            body.extend(_json_lines(item.output, console, width))
        else:
            body.append(Text("  → no output yet", style="dim italic"))
    elif item.type == "function_call_output":
        body.append(Text(f"  call_id={item.call_id}", style="dim"))
        body.extend(_json_lines(item.output or "", console, width))
    else:
        words = item.text or item.transcript
        if words:
            style = "italic" if not item.text and item.transcript else ""
            body.extend(Text("  " + line, style=style) for line in wrap(words, max(width - 2, 10), console))
        elif item.audio_ms <= 0:
            body.append(Text("  (no text)", style="dim italic"))
    if item.audio_ms > 0:
        audio = Text("  ♪ ", style="magenta")
        audio.append(seconds(item.audio_ms / 1000), style="magenta")
        audio.append("  ")
        audio.append(waveform(item.peaks), style="magenta")
        body.append(audio)
    lines.extend(body)
    response = conv.response(item.response_id)
    if response is not None and response.output_item_ids and response.output_item_ids[-1] == item.id:
        lines.append(response_line(response))
    return lines
