"""The Timeline tab: per turn, trigger → created → first audio → done as bars; tokens per response."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ...cli.render import count
from ..views import ConversationView, ResponseView
from .item_render import ms_text

if TYPE_CHECKING:
    from ...conversation.cost import Cost

BAR_WIDTH = 40
#: (segment, from key, to key, style): latencies are ms from the trigger.
SEGMENTS = (
    ("created", None, "created", "yellow"),
    ("first audio", "created", "first_audio", "blue"),
    ("done", "first_audio", "done", "green"),
)
LEGEND = Text.assemble(
    ("trigger ", "dim"),
    ("━━", "yellow"),
    (" created ", "dim"),
    ("━━", "blue"),
    (" first audio/text ", "dim"),
    ("━━", "green"),
    (" done", "dim"),
)


def _points(r: ResponseView) -> dict[str | None, float | None]:
    lat = r.latency_ms
    first = lat.get("first_audio") if lat.get("first_audio") is not None else lat.get("first_delta")
    return {None: 0.0, "created": lat.get("created"), "first_audio": first, "done": lat.get("done")}


def bar(r: ResponseView, scale_ms: float, width: int = BAR_WIDTH) -> Text:
    """One response's latency as a bar of coloured segments, `scale_ms` being the full width."""
    points = _points(r)
    text = Text()
    used = 0
    for _name, _start_key, end_key, style in SEGMENTS:
        end = points.get(end_key)
        if end is None:
            continue
        cells = round(end / scale_ms * width) - used if scale_ms > 0 else 0
        if cells > 0:
            text.append("━" * cells, style=style)
            used += cells
    text.append(" " * max(width - used, 0))
    return text


def _trigger(event_type: str | None) -> str:
    """`input_audio_buffer.speech_stopped` → `speech_stopped`; others as they are."""
    name = (event_type or "?").removeprefix("input_audio_buffer.")
    return name[:18]


def timeline_text(conv: ConversationView, price: Callable[[ResponseView], Cost | None] | None = None) -> Text:
    """The latency table; with `price` (a response's cost, or None), each response's cost and the total."""
    from ...conversation.cost import total

    responses = [r for r in conv.responses]
    if not responses:
        return Text("no responses yet", style="dim italic")
    done = [r.latency_ms.get("done") for r in responses]
    scale = max([d for d in done if d is not None] or [1.0])
    slow = sorted((d for d in done if d is not None), reverse=True)
    threshold = slow[len(slow) // 10] if len(slow) >= 10 else float("inf")
    out = Text()
    out.append_text(LEGEND)
    out.append(f"   full bar = {ms_text(scale)}\n\n", style="dim")
    out.append(
        f"{'#':>4} {'t (s)':>8}  {'trigger':<18} {'latency':<{BAR_WIDTH}} {'1st audio':>9} {'done':>8} "
        f"{'tokens':>7} {'cost':>9}  status\n",
        style="bold",
    )
    costs: list[Cost] = []
    for n, r in enumerate(responses, 1):
        points = _points(r)
        d = r.latency_ms.get("done")
        is_slow = d is not None and d >= threshold
        t = r.t_trigger if r.t_trigger is not None else r.t_created
        out.append(f"{n:>4} {'' if t is None else f'{t:.1f}':>8}  ")
        out.append(f"{_trigger(r.trigger_type):<18} ", style="dim")
        out.append_text(bar(r, scale))
        first = points.get("first_audio")
        out.append(f" {'' if first is None else ms_text(first):>9}")
        out.append(f" {'' if d is None else ms_text(d):>8}", style="bold red" if is_slow else "")
        out.append(f" {'' if r.total_tokens is None else r.total_tokens:>7}")
        cost = price(r) if price is not None else None
        if cost is not None:
            costs.append(cost)
        out.append(f" {'' if cost is None else cost.brief():>9}")
        status = r.status or "in progress"
        out.append(f"  {status}", style="green" if status == "completed" else "yellow")
        if is_slow:
            out.append("  ◀ slow", style="bold red")
        out.append("\n")
    out.append("\n")
    out.append(f"total: {len(responses)} responses, {conv.total_tokens} tokens", style="bold")
    usage_in = sum(count((r.usage or {}).get("input_tokens")) for r in responses)
    usage_out = sum(count((r.usage or {}).get("output_tokens")) for r in responses)
    out.append(f" ({usage_in} in, {usage_out} out)", style="dim")
    if costs:
        out.append(f" · cost {total(costs).label()}", style="bold")
    return out


class Timeline(VerticalScroll):
    """Latency bars and tokens, from the conversation snapshot."""

    DEFAULT_CSS = """
    Timeline { height: 1fr; }
    Timeline > Static { width: auto; padding: 0 1; }
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prices: dict[tuple[str, int | None], Cost] = {}  # (response id, its total tokens) -> cost

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="timeline-body")

    def set_conversation(self, conv: ConversationView, model: str | None = None, when: str | None = None) -> None:
        """Redraw from the conversation; costs are priced once per response and usage (this runs on the UI
        thread at every update of a live session, so a response already priced is not priced again)."""

        def price(r: ResponseView) -> Cost | None:
            if not model or not r.usage:
                return None
            key = (r.id, r.total_tokens)
            cost = self._prices.get(key)
            if cost is None:
                from ...conversation.cost import price_usage

                cost = self._prices[key] = price_usage("realtime", r.usage, model, when=when)
            return cost

        self.query_one("#timeline-body", Static).update(timeline_text(conv, price))
