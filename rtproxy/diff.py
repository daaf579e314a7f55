"""Two sessions compared by meaning, not bytes, whatever their APIs (pure).

Each side becomes a :class:`~rtproxy.conversation.summary.Summary` (:func:`summarize` picks the API's
reducer), so a Realtime recording compares with a GPT-Live one. Compared, section by section:

- ``session``: the model, and the variant (Realtime's dialect) when both sides speak one API;
- ``turns``: what the user and the assistant said, each speaker's stretch as one turn (:func:`spoken_turns`),
  aligned (``difflib`` on speaker + normalised text: case, whitespace and punctuation do not count), with
  each assistant turn's latency (a difference only past
  :attr:`Options.latency_ms` *and* :attr:`Options.latency_pct`), audio duration and interruption;
- ``tools``: which tools ran, with which arguments and results: Realtime function calls, and for GPT-Live
  the functions a delegation's backend ran (a delegation without any counts itself);
- ``usage``: cost units by name; units in both are compared, units only on one side (tokens against
  seconds) are shown side by side and named as one difference;
- ``errors``;
- ``client events``, when both sides are Realtime of one dialect: what the client sent, in order (event and item ids
  ignored, audio by duration, not chunking).

:data:`IGNORABLE` names what a migration is expected to change (``--ignore``): ignored comparisons are still
shown (marked ``~`` where they differ) but are not differences. Whatever the wire carried, comparing never
raises and every value is shown through a bounded preview.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .conversation.cost import USAGE_EVENTS, SessionCost, dollars, session_cost
from .conversation.model import MAX_DEPTH, clip, short
from .conversation.summary import ASSISTANT, Summary, ToolUse, Turn, detect_api, summarize
from .protocols.formats import PCM16, AudioFormat, audio_format, session_audio_formats
from .protocols.wire import Direction, Frame
from .replay.script import AUDIO_APPEND, b64_len, classify, normalise

#: Audio durations closer than this compare equal (milliseconds).
AUDIO_TOLERANCE_MS = 20.0
#: Shown but never compared (how audio was chunked).
UNCOMPARED = frozenset({"appends"})
#: Ids a client event carries that the server made up (another run gets others).
ID_KEYS = frozenset({"id", "item_id", "call_id", "previous_item_id", "response_id"})
#: What ``--ignore`` accepts, and what each leaves out of the differences.
IGNORABLE: dict[str, str] = {
    "wording": "assistant text compared loosely: only whether a turn said something",
    "timing": "latency per turn not compared (alias: latency)",
    "usage": "cost units not compared (alias: cost)",
    "ids": "id-shaped strings (call_…, item_…, resp_…) in arguments, outputs and client events compare equal",
    "audio": "audio durations not compared (turns and appended audio)",
    "errors": "errors not compared",
    "tools": "tool names, arguments and outputs not compared",
    "model": "the model and the API's variant (Realtime dialect) not compared",
}
ALIASES = {"latency": "timing", "cost": "usage"}
SAME, NEAR, DIFFERENT = "=", "~", "≠"
SECTIONS = ("session", "turns", "tools", "usage", "errors", "client events")
_ID = re.compile(r"[a-z]{2,12}_(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{8,64}")
_LABEL, _COLUMN = 22, 40


@dataclass(frozen=True)
class Options:
    """What to leave out (names of :data:`IGNORABLE`, aliases allowed) and the tolerances."""

    ignore: frozenset[str] = frozenset()
    latency_ms: float = 100.0  # latency deltas below this are no difference ...
    latency_pct: float = 20.0  # ... nor those below this percentage of A's latency
    audio_ms: float = AUDIO_TOLERANCE_MS

    def __post_init__(self) -> None:
        names = frozenset(ALIASES.get(n, n) for n in self.ignore)
        unknown = sorted(names - IGNORABLE.keys())
        if unknown:
            raise ValueError(f"cannot ignore {', '.join(unknown)} (choose from {', '.join(IGNORABLE)})")
        object.__setattr__(self, "ignore", names)


@dataclass
class Difference:
    section: str  # one of SECTIONS
    where: str
    message: str
    a: Any = None
    b: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "where": self.where, "message": self.message, "a": self.a, "b": self.b}


@dataclass
class Row:
    """One line of the side-by-side report: what A and B show there, and the marker between them."""

    section: str
    where: str
    a: str
    b: str
    mark: str

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "a": self.a, "b": self.b, "mark": self.mark}


@dataclass
class Side:
    """What one session means, as compared: its summary and, for Realtime, what its client sent."""

    name: str
    session: dict[str, Any]
    summary: Summary
    client: list[dict[str, Any]] | None = None
    cost: SessionCost | None = None

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "name": self.name,
            "api": s.api,
            "variant": s.variant,
            "model": s.model,
            "turns": len(s.turns),
            "tools": len(effective_tools(s)),
            "errors": len(s.errors),
            "usage": s.usage,
            "client_events": None if self.client is None else len(self.client),
            "notes": s.notes,
            "summary": s.to_json(),
        }


@dataclass
class DiffResult:
    a: Side
    b: Side
    options: Options = field(default_factory=Options)
    rows: list[Row] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        sections = {
            name: {
                "rows": [r.to_json() for r in self.rows if r.section == name],
                "differences": sum(1 for d in self.differences if d.section == name),
            }
            for name in SECTIONS
            if any(r.section == name for r in self.rows)
        }
        o = self.options
        return {
            "same": self.same,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "ignored": sorted(o.ignore),
            "thresholds": {"latency_ms": o.latency_ms, "latency_pct": o.latency_pct, "audio_ms": o.audio_ms},
            "sections": sections,
            "differences": [d.to_json() for d in self.differences],
        }

    def format(self) -> str:
        """The side-by-side report: a header per side, then each section's rows, then the differences."""
        lines = [f"rtproxy diff: {self.a.name} vs {self.b.name}"]
        for tag, side in (("A", self.a), ("B", self.b)):
            s = side.summary
            what = " ".join(x for x in (s.api, s.variant) if x)
            lines.append(f"  {tag}: {short(side.name, 70)}  ({what}, {short(s.model or 'model unknown', 40)})")
            lines += [f"     note: {short(n, 100)}" for n in s.notes]
        lines.append("")
        lines.append(f"  {'':{_LABEL}} {'A':{_COLUMN}}   B")
        for section in SECTIONS:
            rows = [r for r in self.rows if r.section == section]
            if not rows:
                continue
            n = sum(1 for d in self.differences if d.section == section)
            lines.append(f"{section}" + (f"  ({n} difference{'s' if n != 1 else ''})" if n else ""))
            for r in rows:
                label = short(r.where, _LABEL)
                lines.append(
                    f"  {label:{_LABEL}} {short(r.a, _COLUMN):{_COLUMN}} {r.mark} {short(r.b, _COLUMN)}".rstrip()
                )
        lines.append("")
        if self.options.ignore:
            lines.append(f"ignored: {', '.join(sorted(self.options.ignore))}")
        if self.same:
            lines.append("same meaning (ids, chunking and small latency changes ignored)")
            return "\n".join(lines)
        lines.append(f"{len(self.differences)} difference{'s' if len(self.differences) > 1 else ''}:")
        lines += [f"  {d.section}, {d.where}: {d.message}" for d in self.differences]
        return "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------------


def normal_text(text: str | None) -> str:
    """Text as compared: NFKC, case-folded, punctuation dropped (dashes and slashes split words), one space."""
    if not text:
        return ""
    out = []
    for ch in unicodedata.normalize("NFKC", text).casefold():
        cat = unicodedata.category(ch)
        if cat.startswith("P"):
            if cat == "Pd" or ch == "/":
                out.append(" ")
            continue
        out.append(ch)
    return " ".join("".join(out).split())


def _one_line(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def _show(value: Any, width: int = 70) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        text = short(value, width)
    return text if len(text) <= width else text[: width - 1] + "…"


def _mask_ids(value: Any, depth: int = MAX_DEPTH) -> Any:
    """Id-shaped strings replaced by ``<id>`` (for ``--ignore ids``)."""
    if isinstance(value, str):
        return "<id>" if _ID.fullmatch(value) else value
    if depth <= 0:
        return value
    if isinstance(value, dict):
        return {k: _mask_ids(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_ids(v, depth - 1) for v in value]
    return value


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if abs(value) < 100 else f"{value:.0f} ms"


def _delta_ms(delta: float) -> str:
    return f"{delta:+.1f} ms" if abs(delta) < 10 else f"{delta:+.0f} ms"


def _pairs(
    a: Sequence[Any], b: Sequence[Any], key: Callable[[Any], str], group: Callable[[Any], str]
) -> list[tuple[int | None, int | None]]:
    """Indices of ``a`` and ``b`` aligned by ``key``; in a changed stretch, entries of one ``group`` pair up in
    order (a changed answer is that turn changed, not one turn removed and another added)."""
    out: list[tuple[int | None, int | None]] = []
    ka, kb = [key(x) for x in a], [key(x) for x in b]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
        if op == "equal":
            out += zip(range(i1, i2), range(j1, j2), strict=True)
            continue
        ga, gb = [group(x) for x in a[i1:i2]], [group(x) for x in b[j1:j2]]
        for op2, x1, x2, y1, y2 in difflib.SequenceMatcher(None, ga, gb, autojunk=False).get_opcodes():
            if op2 == "equal":
                out += zip(range(i1 + x1, i1 + x2), range(j1 + y1, j1 + y2), strict=True)
                continue
            out += [(i, None) for i in range(i1 + x1, i1 + x2)]
            out += [(None, j) for j in range(j1 + y1, j1 + y2)]
    return out


class _Report:
    """Collects rows and differences while the sections are compared."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.rows: list[Row] = []
        self.differences: list[Difference] = []

    def ignores(self, what: str) -> bool:
        return what in self.options.ignore

    def row(
        self,
        section: str,
        where: str,
        shown: tuple[str, str],
        same: bool,
        why: str = "",
        values: tuple[Any, Any] = (None, None),
        *,
        ignored: bool = False,
        near: bool = False,
        of: str | None = None,
    ) -> None:
        """A row showing A and B; when not ``same`` and not ``ignored`` also a difference (``why``, ``values``) on
        ``of`` (the turn or tool a detail row belongs to; the row's own label by default). ``near``: the same by
        meaning, not identical."""
        mark = SAME if same and not near else NEAR if same or ignored else DIFFERENT
        self.rows.append(Row(section, where, shown[0], shown[1], mark))
        if not same and not ignored:
            self.differences.append(Difference(section, of or where.strip(), why, *values))

    def one_side(
        self, section: str, where: str, in_a: bool, shown: str, what: str, value: Any, ignored: bool = False
    ) -> None:
        """A row for what only one side has."""
        side = "A" if in_a else "B"
        self.row(
            section,
            where,
            (shown, "—") if in_a else ("—", shown),
            False,
            f"only in {side}: {what}",
            (value, None) if in_a else (None, value),
            ignored=ignored,
        )

    def none(self, section: str) -> None:
        self.row(section, "(none)", ("—", "—"), True)


# --- sections ---------------------------------------------------------------------------------


def _compare_session(r: _Report, a: Summary, b: Summary) -> None:
    s, ignored = "session", r.ignores("model")
    r.row(s, "api", (a.api, b.api), True, near=a.api != b.api)  # across APIs by design: shown, not a difference
    fields = [("variant", a.variant, b.variant)] if a.api == b.api else []
    for what, va, vb in [*fields, ("model", a.model, b.model)]:
        sa, sb = va or "—", vb or "—"
        r.row(s, what, (sa, sb), sa == sb, f"{what} {sa} vs {sb}", (va, vb), ignored=ignored)
    if a.anomalies or b.anomalies:
        r.row(s, "anomalies", (str(a.anomalies), str(b.anomalies)), True, near=a.anomalies != b.anomalies)


def spoken_turns(summary: Summary) -> list[Turn]:
    """The turns compared as speech: those that only ran tools left to the tools section, and each stretch of
    one speaker taken as one turn (a Realtime tool call then its answer, or GPT-Live's "let me check" then
    the answer, is what the assistant said between two user turns). A stretch's latency is its first
    output's: the first of its turns with text or audio."""
    out: list[Turn] = []
    for turn in summary.turns:
        if turn.tools and not (turn.text or turn.audio_ms):
            continue
        last = out[-1] if out else None
        if last is None or last.speaker != turn.speaker:
            out.append(
                Turn(
                    turn.speaker,
                    turn.text,
                    turn.t_start,
                    turn.t_end,
                    list(turn.tools),
                    turn.latency_ms,
                    turn.audio_ms,
                    turn.interrupted,
                    turn.overlaps,
                )
            )
            continue
        if turn.text:
            last.text = f"{last.text} {turn.text}" if last.text else turn.text
        if turn.audio_ms:
            last.audio_ms = (last.audio_ms or 0.0) + turn.audio_ms
        if last.latency_ms is None:
            last.latency_ms = turn.latency_ms
        last.t_end, last.interrupted, last.overlaps = (
            turn.t_end,
            last.interrupted or turn.interrupted,
            last.overlaps or turn.overlaps,
        )
        last.tools += turn.tools
    return out


def _turn_key(turn: Turn, wording: bool) -> str:
    if wording and turn.speaker == ASSISTANT:
        return f"{turn.speaker}:{bool(turn.text)}"
    return f"{turn.speaker}:{normal_text(turn.text)}"


def _said(turn: Turn) -> str:
    return _one_line(turn.text) or "(no text)"


def _compare_turn(r: _Report, where: str, ta: Turn, tb: Turn) -> None:
    s, o = "turns", r.options
    na, nb = normal_text(ta.text), normal_text(tb.text)
    loose = r.ignores("wording") and ta.speaker == ASSISTANT
    same_text = na == nb or (loose and bool(na) == bool(nb))
    why = f"text {_show(ta.text)} vs {_show(tb.text)}"
    r.row(s, where, (_said(ta), _said(tb)), same_text, why, (ta.text, tb.text), near=ta.text != tb.text)
    la, lb = ta.latency_ms, tb.latency_ms
    if la is not None and lb is not None:
        delta = lb - la
        small = abs(delta) < o.latency_ms or abs(delta) < o.latency_pct / 100.0 * abs(la)
        shown = _ms(lb) if _ms(la) == _ms(lb) else f"{_ms(lb)} ({_delta_ms(delta)})"
        why = f"latency {_ms(la)} vs {_ms(lb)} ({_delta_ms(delta)})"
        r.row(
            s,
            "  latency",
            (_ms(la), shown),
            small,
            why,
            (la, lb),
            ignored=r.ignores("timing"),
            near=_ms(la) != _ms(lb),
            of=where,
        )
    elif la is not None or lb is not None:  # one side cannot tell: shown, not compared
        r.row(s, "  latency", (_ms(la), _ms(lb)), True, near=True)
    if ta.audio_ms or tb.audio_ms:
        aa, ab = ta.audio_ms or 0.0, tb.audio_ms or 0.0
        r.row(
            s,
            "  audio",
            (_ms(aa), _ms(ab)),
            abs(aa - ab) <= o.audio_ms,
            f"audio {_ms(aa)} vs {_ms(ab)}",
            (ta.audio_ms, tb.audio_ms),
            ignored=r.ignores("audio"),
            near=round(aa) != round(ab),
            of=where,
        )
    if ta.interrupted != tb.interrupted:
        ia, ib = ("interrupted" if t.interrupted else "complete" for t in (ta, tb))
        r.row(s, "  interrupted", (ia, ib), False, f"{ia} vs {ib}", (ta.interrupted, tb.interrupted), of=where)


def _compare_turns(r: _Report, a: Summary, b: Summary) -> None:
    ta, tb = spoken_turns(a), spoken_turns(b)
    wording = r.ignores("wording")
    for i, j in _pairs(ta, tb, lambda t: _turn_key(t, wording), lambda t: t.speaker):
        if i is not None and j is not None:
            where = f"#{i + 1} {ta[i].speaker}" if i == j else f"#{i + 1}/B#{j + 1} {ta[i].speaker}"
            _compare_turn(r, where, ta[i], tb[j])
        elif i is not None:
            t = ta[i]
            r.one_side("turns", f"#{i + 1} {t.speaker}", True, _said(t), f"{t.speaker} {_show(t.text)}", t.text)
        elif j is not None:
            t = tb[j]
            r.one_side("turns", f"B#{j + 1} {t.speaker}", False, _said(t), f"{t.speaker} {_show(t.text)}", t.text)
    if not ta and not tb:
        r.none("turns")


def effective_tools(summary: Summary) -> list[ToolUse]:
    """The tools that ran, in order: a delegation counts as the tools its backend ran (itself if none)."""
    out: list[ToolUse] = []
    stack: list[tuple[ToolUse, int]] = [(t, 0) for t in reversed(summary.tools())]
    while stack:
        tool, depth = stack.pop()
        if tool.tools and depth < MAX_DEPTH:
            stack += [(t, depth + 1) for t in reversed(tool.tools)]
        else:
            out.append(tool)
    return out


def _tool_name(tool: ToolUse) -> str:
    return tool.name if isinstance(tool.name, str) else tool.kind


def _compare_tool(r: _Report, where: str, x: ToolUse, y: ToolUse) -> None:
    s, ignored = "tools", r.ignores("tools")
    prep: Callable[[Any], Any] = _mask_ids if r.ignores("ids") else (lambda v: v)
    nx, ny = _tool_name(x), _tool_name(y)
    if nx != ny:  # another tool: its name is the difference; its arguments and output are only shown
        r.row(s, where, (nx, ny), False, f"name {nx} vs {ny}", (x.name, y.name), ignored=ignored)
    for what, va, vb in (("arguments", x.arguments, y.arguments), ("output", x.output, y.output)):
        same = prep(va) == prep(vb)
        if nx != ny:
            r.rows.append(Row(s, f"  {what}", _show(va), _show(vb), SAME if same else NEAR if ignored else DIFFERENT))
            continue
        label = where if what == "arguments" else f"  {what}"
        why = f"{what} {_show(va)} vs {_show(vb)}"
        r.row(s, label, (_show(va), _show(vb)), same, why, (va, vb), ignored=ignored, of=where)


def _compare_tools(r: _Report, a: Summary, b: Summary) -> None:
    s, ignored = "tools", r.ignores("tools")
    ta, tb = effective_tools(a), effective_tools(b)
    for i, j in _pairs(ta, tb, _tool_name, lambda t: "tool"):
        if i is not None and j is not None:
            same_name = _tool_name(ta[i]) == _tool_name(tb[j])
            _compare_tool(r, f"#{i + 1} " + (_tool_name(ta[i]) if same_name else "tool"), ta[i], tb[j])
        elif i is not None:
            x = ta[i]
            what = f"{_tool_name(x)} {_show(x.arguments)}"
            r.one_side(s, f"#{i + 1} {_tool_name(x)}", True, _show(x.arguments), what, x.arguments, ignored)
        elif j is not None:
            y = tb[j]
            what = f"{_tool_name(y)} {_show(y.arguments)}"
            r.one_side(s, f"B#{j + 1} {_tool_name(y)}", False, _show(y.arguments), what, y.arguments, ignored)
    if not ta and not tb:
        r.none(s)


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e15 else f"{value:.3e}"


def _compare_usage(r: _Report, a: Summary, b: Summary) -> None:
    s, ignored = "usage", r.ignores("usage")
    ua, ub = a.usage, b.usage
    for name in [*ua, *(k for k in ub if k not in ua)]:
        if name in ua and name in ub:
            va, vb = ua[name], ub[name]
            same = abs(va - vb) <= 1e-9 * max(1.0, abs(va), abs(vb))
            shown = _number(vb) if same else f"{_number(vb)} ({vb - va:+g})"
            why = f"{name} {_number(va)} vs {_number(vb)} ({vb - va:+g})"
            r.row(s, name, (_number(va), shown), same, why, (va, vb), ignored=ignored)
        else:  # a unit only one side counts: shown here, the difference named once below
            shown_a, shown_b = (_number(u[name]) if name in u else "—" for u in (ua, ub))
            r.rows.append(Row(s, name, shown_a, shown_b, NEAR if ignored else DIFFERENT))
    only_a, only_b = [k for k in ua if k not in ub], [k for k in ub if k not in ua]
    if (only_a or only_b) and not ignored:
        parts = [f"only in {side}: {', '.join(names)}" for side, names in (("A", only_a), ("B", only_b)) if names]
        r.differences.append(Difference(s, "units", "; ".join(parts), only_a, only_b))
    if not ua and not ub:
        r.none(s)


def _compare_cost(r: _Report, a: Side, b: Side) -> None:
    """The cost of each side (the question a model migration asks), in the usage section: a difference when
    both are priced exactly and differ; bounds and unknowns are shown, not judged."""
    if a.cost is None or b.cost is None:
        return
    ca, cb = a.cost.total, b.cost.total
    if ca.total is not None and cb.total is not None:
        delta = cb.total - ca.total
        same = delta == 0
        sign = "+" if delta >= 0 else "-"
        shown = ca.label(), cb.label() if same else f"{cb.label()} ({sign}{dollars(abs(delta))})"
        why = f"cost {ca.label()} vs {cb.label()} ({sign}{dollars(abs(delta))})"
        r.row("usage", "cost", shown, same, why, (float(ca.total), float(cb.total)), ignored=r.ignores("usage"))
    else:
        r.rows.append(Row("usage", "cost", ca.label(), cb.label(), NEAR))


def _compare_errors(r: _Report, a: Summary, b: Summary) -> None:
    s, ignored = "errors", r.ignores("errors")
    for i, j in _pairs(a.errors, b.errors, normal_text, lambda e: "error"):
        if i is not None and j is not None:
            ea, eb = a.errors[i], b.errors[j]
            same = normal_text(ea) == normal_text(eb)
            r.row(
                s, f"#{i + 1}", (ea, eb), same, f"{_show(ea)} vs {_show(eb)}", (ea, eb), ignored=ignored, near=ea != eb
            )
        elif i is not None:
            r.one_side(s, f"#{i + 1}", True, a.errors[i], _show(a.errors[i]), a.errors[i], ignored)
        elif j is not None:
            r.one_side(s, f"B#{j + 1}", False, b.errors[j], _show(b.errors[j]), b.errors[j], ignored)
    if not a.errors and not b.errors:
        r.none(s)


# --- client events (Realtime against Realtime) ----------------------------------------------------


def client_sequence(frames: Iterable[Frame]) -> list[dict[str, Any]]:
    """Client events normalised; each run of appends becomes one entry with its audio duration."""
    out: list[dict[str, Any]] = []
    fmt: AudioFormat = PCM16
    run: dict[str, Any] | None = None
    for frame in frames:
        kind, event = classify(frame.data)
        if event is not None:
            event = clip(event, MAX_DEPTH)
        if event is not None and kind in ("session.update", "session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict):
                fmt = session_audio_formats(session)[0] or audio_format(session.get("input_audio_format")) or fmt
        if frame.direction is not Direction.CLIENT:
            continue
        if kind == AUDIO_APPEND:
            ms = fmt.duration_ms(b64_len(event.get("audio") if event else None))
            if run is None:
                run = {"type": AUDIO_APPEND, "audio_ms": 0.0, "appends": 0}
                out.append(run)
            run["audio_ms"] += ms
            run["appends"] += 1
            continue
        run = None
        out.append(_without_ids(normalise(event)) if event is not None else {"type": kind})
    for entry in out:
        if entry.get("type") == AUDIO_APPEND:
            entry["audio_ms"] = round(entry["audio_ms"], 1)
    return out


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in ID_KEYS}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _label(entry: Mapping[str, Any]) -> str:
    kind = entry.get("type")
    if kind == AUDIO_APPEND:
        return f"audio ({entry['audio_ms']:.0f} ms in {entry['appends']} appends)"
    return short(kind, 60)


class _EventRules:
    """How two client events compare under the options (audio by duration, ids masked or not)."""

    def __init__(self, options: Options) -> None:
        self.audio = "audio" not in options.ignore
        self.ids = "ids" in options.ignore
        self.tolerance = options.audio_ms

    def same(self, a: Any, b: Any, key: str = "") -> bool:
        if key == "audio_ms" and isinstance(a, int | float) and isinstance(b, int | float):
            return not self.audio or abs(a - b) <= self.tolerance
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(self.same(a[k], b[k], k) for k in a if k not in UNCOMPARED)
        if self.ids:
            a, b = _mask_ids(a), _mask_ids(b)
        return bool(a == b)

    def fields(self, where: str, a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            if key in UNCOMPARED:
                continue
            va, vb = a.get(key), b.get(key)
            if not self.same(va, vb, key):
                out.append(Difference("client events", where, f"{key} {_show(va)} vs {_show(vb)}", va, vb))
        return out


def compare_client_events(
    a: list[dict[str, Any]], b: list[dict[str, Any]], options: Options | None = None
) -> list[Difference]:
    """Align two client sequences (by kind) and describe what was added, removed, moved or changed."""
    rules = _EventRules(options or Options())
    key: Callable[[Mapping[str, Any]], str] = lambda e: AUDIO_APPEND if e.get("type") == AUDIO_APPEND else _label(e)  # noqa: E731
    out: list[Difference] = []
    removed: list[int] = []
    added: list[int] = []
    keys_a, keys_b = [key(e) for e in a], [key(e) for e in b]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False).get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                where = f"#{i + 1}" if i == j else f"#{i + 1} (B #{j + 1})"
                out += rules.fields(f"{where} {_label(a[i])}", a[i], b[j])
            continue
        removed += range(i1, i2)
        added += range(j1, j2)
    for i in removed:
        twin = next((j for j in added if rules.same(a[i], b[j])), None)
        where = f"#{i + 1} {_label(a[i])}"
        if twin is not None:
            added.remove(twin)
            out.append(Difference("client events", where, f"moved to #{twin + 1} in B", a[i], b[twin]))
        else:
            out.append(Difference("client events", where, f"only in A: {_show(a[i])}", a[i], None))
    out += [
        Difference("client events", f"B #{j + 1} {_label(b[j])}", f"only in B: {_show(b[j])}", None, b[j])
        for j in added
    ]
    return out


def _compare_client(r: _Report, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    found = compare_client_events(a, b, r.options)
    r.rows.append(Row("client events", "events", f"{len(a)} sent", f"{len(b)} sent", DIFFERENT if found else SAME))
    for d in found:
        r.rows.append(Row("client events", d.where, _show(d.a, _COLUMN), _show(d.b, _COLUMN), DIFFERENT))
    r.differences += found


# --- the whole ---------------------------------------------------------------------------------


def compare(a: Side, b: Side, options: Options | None = None) -> DiffResult:
    """Every section of two sides compared under ``options``."""
    options = options or Options()
    r = _Report(options)
    _compare_session(r, a.summary, b.summary)
    _compare_turns(r, a.summary, b.summary)
    _compare_tools(r, a.summary, b.summary)
    _compare_usage(r, a.summary, b.summary)
    _compare_cost(r, a, b)
    _compare_errors(r, a.summary, b.summary)
    if a.client is not None and b.client is not None:
        if a.summary.variant == b.summary.variant:
            _compare_client(r, a.client, b.client)
        else:  # two dialects name the same requests differently: the turns above compare their meaning
            va, vb = (f"{s.variant or '?'} wire, not compared" for s in (a.summary, b.summary))
            r.rows.append(Row("client events", "events", va, vb, NEAR))
    return DiffResult(a, b, options, r.rows, r.differences)


def meaning(name: str, session: Mapping[str, Any] | None, frames: Sequence[Frame]) -> Side:
    """One side from a session row (or JSONL header) and its frames."""
    row = dict(session or {})
    summary = summarize(row, frames)
    api = detect_api(row, frames)
    client = client_sequence(frames) if api == "realtime" else None
    wanted = USAGE_EVENTS.get(api, frozenset())
    events = (f.event for f in frames if f.direction is Direction.SERVER and isinstance(f.data, str))
    usage_events = (e for e in events if e is not None and e.get("type") in wanted)
    cost = session_cost(api, summary.model or row.get("model"), usage_events, when=row.get("started_at"))
    return Side(name, row, summary, client, cost)


def diff_frames(
    a: tuple[str, Mapping[str, Any], Sequence[Frame]],
    b: tuple[str, Mapping[str, Any], Sequence[Frame]],
    options: Options | None = None,
) -> DiffResult:
    """Compare two sessions given as (name, session header, frames)."""
    return compare(meaning(*a), meaning(*b), options)


def diff_summaries(a: tuple[str, Summary], b: tuple[str, Summary], options: Options | None = None) -> DiffResult:
    """Compare two summaries (from any reducers, or built by hand) given as (name, summary)."""
    return compare(Side(a[0], {}, a[1]), Side(b[0], {}, b[1]), options)
