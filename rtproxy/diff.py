"""Two sessions compared by meaning, not bytes (pure).

What is compared: the sequence of client events (payloads minus volatile
fields; a run of audio appends counts as one entry, by duration), the
conversation items rebuilt by :mod:`rtproxy.conversation.realtime` (type, role, status,
text, transcripts, function names, arguments and outputs, audio by duration),
the responses (status, details, usage, audio duration), and the session's
model and dialect. Ids (event ids, and the item, call and response ids a
client echoes back), timings and chunking are ignored, so two runs of the
same client against the same server compare equal.

Whatever the wire carried, comparing never raises: payloads are cut below
``MAX_DEPTH`` levels of nesting before they are walked, and every value is
shown through a bounded preview.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .conversation.model import MAX_DEPTH, clip, short
from .conversation.realtime import Item, Response, assemble
from .protocols.formats import PCM16, AudioFormat, audio_format, session_audio_formats
from .protocols.wire import Direction, Frame
from .replay.script import AUDIO_APPEND, b64_len, classify, normalise

#: Audio durations closer than this compare equal (milliseconds).
AUDIO_TOLERANCE_MS = 20.0
#: Shown but never compared (how audio was chunked).
UNCOMPARED = frozenset({"appends"})
#: Ids a client event carries that the server made up (another run gets others).
ID_KEYS = frozenset({"id", "item_id", "call_id", "previous_item_id", "response_id"})


@dataclass
class Difference:
    section: str  # "session" | "client events" | "items" | "responses"
    where: str
    message: str
    a: Any = None
    b: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "where": self.where, "message": self.message, "a": self.a, "b": self.b}


@dataclass
class Side:
    """What one session means, as compared."""

    name: str
    session: dict[str, Any]
    client: list[dict[str, Any]]
    items: list[dict[str, Any]]
    responses: list[dict[str, Any]]


@dataclass
class DiffResult:
    a: Side
    b: Side
    differences: list[Difference] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        def counts(s: Side) -> dict[str, Any]:
            return {
                "name": s.name,
                "client_events": len(s.client),
                "items": len(s.items),
                "responses": len(s.responses),
                **s.session,
            }

        return {
            "same": self.same,
            "a": counts(self.a),
            "b": counts(self.b),
            "differences": [d.to_json() for d in self.differences],
        }

    def format(self) -> str:
        lines = [f"rtproxy diff: {self.a.name} vs {self.b.name}"]
        for section, key in (("client events", "client"), ("items", "items"), ("responses", "responses")):
            n = sum(1 for d in self.differences if d.section == section)
            left, right = len(getattr(self.a, key)), len(getattr(self.b, key))
            verdict = "same" if n == 0 else f"{n} difference{'s' if n > 1 else ''}"
            lines.append(f"  {section + ':':15} {left} vs {right}  {verdict}")
        if self.same:
            lines.append("same meaning (ids, timings and audio chunking ignored)")
            return "\n".join(lines)
        lines.append(f"{len(self.differences)} difference{'s' if len(self.differences) > 1 else ''}:")
        lines += [f"  {d.section}, {d.where}: {d.message}" for d in self.differences]
        return "\n".join(lines)


# --- what a session means ------------------------------------------------------------


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


def _arguments(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return clip(orjson.loads(value), MAX_DEPTH)
    except orjson.JSONDecodeError:
        return value


def item_meaning(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": item.type,
        "role": item.role,
        "status": item.status,
        "text": item.text,
        "transcript": item.transcript,
        "audio_ms": round(item.audio_ms, 1),
    }
    if item.type in ("function_call", "function_call_output") or item.name is not None:
        out.update(name=item.name, arguments=_arguments(item.arguments), output=item.output)
    if item.truncated_ms is not None:
        out["truncated_ms"] = item.truncated_ms
    return out


def response_meaning(response: Response) -> dict[str, Any]:
    return {
        "status": response.status,
        "status_details": response.status_details,
        "usage": response.usage,
        "audio_ms": round(response.audio_ms, 1),
        "outputs": len(response.output_item_ids),
    }


def meaning(name: str, session: dict[str, Any], frames: Sequence[Frame]) -> Side:
    conv = assemble(frames, keep_audio=False, session=session)
    return Side(
        name,
        {"model": session.get("model"), "dialect": session.get("dialect") or conv.dialect},
        client_sequence(frames),
        [item_meaning(i) for i in conv.items],
        [response_meaning(r) for r in conv.responses],
    )


# --- comparing ---------------------------------------------------------------------------


def _same(a: Any, b: Any, key: str = "") -> bool:
    if key == "audio_ms" and isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= AUDIO_TOLERANCE_MS
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], k) for k in a if k not in UNCOMPARED)
    return bool(a == b)


def _show(value: Any, width: int = 70) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        text = short(value, width)
    return text if len(text) <= width else text[: width - 1] + "…"


def _label(entry: dict[str, Any]) -> str:
    kind = entry.get("type")
    if kind == AUDIO_APPEND:
        return f"audio ({entry['audio_ms']:.0f} ms in {entry['appends']} appends)"
    if kind is None and "status" in entry:
        return f"response ({short(entry['status'], 30)})"
    if kind == "message":
        return f"{short(entry.get('role'), 30)} message"
    return short(kind, 60)


def _key(entry: dict[str, Any]) -> str:
    """What aligns two entries: their kind (audio runs and responses align by kind alone)."""
    kind = entry.get("type")
    if kind is None and "status" in entry:
        return "response"
    return AUDIO_APPEND if kind == AUDIO_APPEND else _label(entry)


def _field_differences(section: str, where: str, a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        if key in UNCOMPARED:
            continue
        va, vb = a.get(key), b.get(key)
        if not _same(va, vb, key):
            out.append(Difference(section, where, f"{key} {_show(va)} vs {_show(vb)}", va, vb))
    return out


def compare_sequences(section: str, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[Difference]:
    """Align two sequences (by kind) and describe what was added, removed, moved or changed."""
    keys_a, keys_b = [_key(e) for e in a], [_key(e) for e in b]
    out: list[Difference] = []
    removed: list[int] = []
    added: list[int] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False).get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                where = f"#{i + 1}" if i == j else f"#{i + 1} (B #{j + 1})"
                out += _field_differences(section, f"{where} {_label(a[i])}", a[i], b[j])
            continue
        removed += range(i1, i2)
        added += range(j1, j2)
    for i in removed:
        twin = next((j for j in added if _same(a[i], b[j])), None)
        if twin is not None:
            added.remove(twin)
            out.append(Difference(section, f"#{i + 1} {_label(a[i])}", f"moved to #{twin + 1} in B", a[i], b[twin]))
        else:
            out.append(Difference(section, f"#{i + 1} {_label(a[i])}", f"only in A: {_show(a[i])}", a[i], None))
    out += [Difference(section, f"B #{j + 1} {_label(b[j])}", f"only in B: {_show(b[j])}", None, b[j]) for j in added]
    return out


def compare(a: Side, b: Side) -> DiffResult:
    result = DiffResult(a, b)
    result.differences += _field_differences("session", "session", a.session, b.session)
    result.differences += compare_sequences("client events", a.client, b.client)
    result.differences += compare_sequences("items", a.items, b.items)
    result.differences += compare_sequences("responses", a.responses, b.responses)
    return result


def diff_frames(
    a: tuple[str, dict[str, Any], Sequence[Frame]], b: tuple[str, dict[str, Any], Sequence[Frame]]
) -> DiffResult:
    """Compare two sessions given as (name, session header, frames)."""
    return compare(meaning(*a), meaning(*b))
