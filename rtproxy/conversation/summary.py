"""One API-neutral view of a conversation: who said what, which tools ran, errors, latency and cost units.

Every reducer can produce a :class:`Summary` (the Realtime reducer, GPT-Live's, the Responses one), so the
views that compare or price sessions (``diff`` across APIs, cost, traces) read one shape, whatever the API.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

    def tools(self) -> list[ToolUse]:
        """Every tool use of every turn, in order."""
        return [tool for turn in self.turns for tool in turn.tools]
