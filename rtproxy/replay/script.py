"""Replay's script: a recording becomes triggers and the server events they caused; mismatches and reports.


The server events before the first client event are the *greeting*; every
later server event is a reply to the client event that caused it (its
trigger), by what the API's protocol says causes what (the rules'
``new_causes()``, :mod:`rtproxy.replay.apis`): Realtime's ``response.*`` events
belong to the ``response.create`` that started the response,
``session.updated`` to its ``session.update``, an ``error`` to the event it
names…; where nothing better is known, to the latest client event before it.
Client events recorded with no server event between them are a *burst*: a
client may send them in another order on replay. Input audio is matched by its
total length rather than by chunking, in one of two ways the API's rules
choose. Realtime: a run of consecutive ``input_audio_buffer.append`` events is
one step; a reply recorded in the middle of a run (server VAD) is sent once the
client has appended as much audio as had been appended when it was recorded.
GPT-Live (full duplex): audio appends are no steps at all; the client's commands
are, and every reply also waits until this client has streamed as much audio as
the recorded one had when the reply was recorded.

Ids the client makes (Live's ``event_id``, echoed as ``client_event_id``;
Realtime's client item ids and response metadata) are learnt as the client's
events are matched (recorded value → this run's) and substituted in every later
reply that carries them, so clients that correlate by their own ids work.

:class:`Player` is one connection's state machine, h11-style: ``start()``
and ``receive(data, t)`` return the frames to send (with their delays for
``recorded`` pacing); nothing here touches a socket. A turn ends with a
turn-ending client event (``response.create``, ``input_audio_buffer.commit``)
and the rest of its burst. Match policies:

``ordered`` (default)
    each client event must have the type of the next recorded one. An extra
    event is *unexpected* (the script waits); an event found further on in the
    same turn marks the ones it jumped over *missing* (an error event tells the
    client; their replies are not sent). A skipped event that still comes
    before the client has left that turn is played with its replies, and once
    all the skipped ones have come the mismatch becomes *reordered*: a client
    that reorders a burst is reported but never left waiting. One reordering
    is the network's, not the client's: a ``session.update`` sent before the
    client's first recorded event that differs from the first one recorded and
    equals the next is its answer to the greeting, read together with the
    handshake (OpenAI's Agents SDK answers ``session.created`` with one); it is
    played at once, out of turn, and is no mismatch.
``strict``
    as ``ordered``, and the payloads must be equal once volatile fields are
    dropped (``event_id``, client-made item ids, audio compared by length).
``loose``
    client events may arrive in any order within the current turn and the
    next; a step jumped over stays pending until its event comes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ..conversation.model import MAX_DEPTH, clip
from ..errors import ReplayError
from ..protocols.wire import Direction, Frame, skeleton
from .apis import TriggerRules, causes_for, rules_for

POLICIES = ("strict", "ordered", "loose")
#: Realtime's input audio event and the client events that end its turns (each API's are in its rules).
AUDIO_APPEND = "input_audio_buffer.append"
TURN_ENDS = frozenset({"response.create", "input_audio_buffer.commit"})
BINARY, TEXT = "<binary frame>", "<text frame>"
#: A mismatch lists at most this many differing fields, and the last this many events matched before it.
MAX_DETAILS, MAX_PREVIOUS = 12, 3
#: At most this many client-made ids are learnt from a recording (each a string of at most MAX_ID characters).
MAX_IDS, MAX_ID = 4096, 256


def b64_len(value: Any) -> int:
    """Decoded length of a base64 string, without decoding it."""
    if not isinstance(value, str) or not value:
        return 0
    pad = 2 if value.endswith("==") else 1 if value.endswith("=") else 0
    return len(value) * 3 // 4 - pad


def classify(data: str | bytes) -> tuple[str, dict[str, Any] | None]:
    """(type, event) of a client frame; non-JSON frames get a placeholder type."""
    if isinstance(data, bytes):
        return BINARY, None
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return TEXT, None
    if not isinstance(event, dict):
        return TEXT, None
    kind = event.get("type")
    return (kind if isinstance(kind, str) else TEXT), event


# --- the script -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A recorded server frame: sent ``delay`` s after its trigger (scaled by speed)."""

    data: str | bytes
    delay: float
    at_bytes: int = 0  # audio the client must have streamed first (in its run, or in the session if streamed)
    ids: tuple[str, ...] = ()  # the recorded client-made ids this frame carries (substituted on the way out)


@dataclass(frozen=True, slots=True)
class Step:
    """One expected client event (or run of audio appends) and its replies."""

    index: int
    type: str
    t: float
    event: dict[str, Any] | None
    replies: tuple[Reply, ...]
    audio_bytes: int = 0
    appends: int = 0
    at_bytes: int = 0  # streamed audio (Live): what the client had streamed when it sent this command
    starts_burst: bool = True  # a server event was recorded between the client event before and this one

    def summary(self) -> dict[str, Any]:
        """The expected event as a report shows it."""
        if self.type == AUDIO_APPEND and self.appends:
            return {"type": AUDIO_APPEND, "audio_bytes": self.audio_bytes, "appends": self.appends}
        return self.event if self.event is not None else {"type": self.type}


@dataclass(frozen=True)
class Script:
    greeting: tuple[Reply, ...]
    steps: tuple[Step, ...]
    session: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"
    rules: TriggerRules = field(default_factory=lambda: rules_for(None))
    audio_total: int = 0  # streamed audio: all the client streamed

    @property
    def server_events(self) -> int:
        return len(self.greeting) + sum(len(s.replies) for s in self.steps)

    @property
    def server_close(self) -> tuple[int, str] | None:
        """(code, reason) if the recorded server closed the connection itself after the last turn (1006: it
        dropped the connection without a close frame)."""
        code = self.session.get("server_close_code")
        if self.session.get("closed_by") != "upstream" or not isinstance(code, int):
            return None
        if not (1000 <= code < 5000) or code in (1004, 1005, 1015):
            return None
        return code, str(self.session.get("server_close_reason") or "")

    def turn_end(self, index: int) -> int:
        """Index of the step that ends the turn `index` is in (the last step if none): the first turn-ending
        event from `index` on, and the rest of its burst (the client events sent with it, before any answer)."""
        steps = self.steps
        j = next((j for j in range(index, len(steps)) if steps[j].type in self.rules.TURN_ENDS), len(steps) - 1)
        while j + 1 < len(steps) and not steps[j + 1].starts_burst:
            j += 1
        return j


def build_script(
    frames: Iterable[Frame], *, session: dict[str, Any] | None = None, source: str = "<memory>", empty_ok: bool = False
) -> Script:
    """The script of a recording's frames, by its API's rules; ReplayError if it has nothing to replay (unless
    `empty_ok`: one connection of several may have had no answer)."""
    rules = rules_for(session)
    audio_type, streamed = rules.AUDIO_APPEND, rules.AUDIO_STREAM
    causes = causes_for(rules)
    greeting: list[Reply] = []
    built: list[dict[str, Any]] = []  # the steps, their replies still growing
    trigger_t, at_bytes, total = 0.0, 0, 0
    heard = False  # a server frame was recorded since the latest client step (it starts a new burst)
    for frame in frames:
        if frame.direction is Direction.SERVER:
            heard = True
            cause = causes.server(classify(skeleton(frame.data))[1] if isinstance(frame.data, str) else None)
            if cause is None or not built:
                greeting.append(Reply(frame.data, frame.t, total if streamed else at_bytes))  # from connect
                continue
            step = built[min(cause, len(built) - 1)]
            latest = step is built[-1]
            since = trigger_t if latest else step["t"]
            gate = total if streamed else (at_bytes if latest else step["audio_bytes"])
            step["replies"].append(Reply(frame.data, max(0.0, frame.t - since), gate))
            continue
        kind, event = classify(frame.data)
        trigger_t = frame.t
        if kind == audio_type:
            n = b64_len(event.get("audio") if event else None)
            total += n
            if streamed:
                continue
            open_ = built[-1] if built else None
            if open_ is not None and open_["type"] == audio_type:
                open_["audio_bytes"] += n
                open_["appends"] += 1
                at_bytes = open_["audio_bytes"]
                continue
            event = None
        else:
            n = 0
        at_bytes = n
        built.append(
            {
                "index": len(built),
                "type": kind,
                "t": frame.t,
                "event": event,
                "audio_bytes": n,
                "appends": 1 if kind == audio_type else 0,
                "at_bytes": total - n,
                "starts_burst": heard or not built,
                "replies": [],
            }
        )
        causes.client(len(built) - 1, kind, event)
        heard = False
    steps = [Step(**{k: v for k, v in b.items() if k != "replies"}, replies=tuple(b["replies"])) for b in built]
    regroup = getattr(rules, "regroup", None)  # an API whose replies belong to a request other than the latest
    grouped = regroup(steps) if regroup is not None else tuple(steps)
    script = Script(tuple(greeting), grouped, dict(session or {}), source, rules, total)
    if script.server_events == 0 and not empty_ok:
        raise ReplayError(f"{source}: no server events to replay")
    return tag_client_ids(script)


def tag_client_ids(script: Script) -> Script:
    """The script with each reply knowing which recorded client-made ids it carries (as JSON strings)."""
    ids: set[str] = set()
    for step in script.steps:
        for value in script.rules.client_ids(step.event):
            if isinstance(value, str) and value and len(value) <= MAX_ID and len(ids) < MAX_IDS:
                ids.add(value)
    if not ids:
        return script
    tokens = re.compile("|".join(re.escape(orjson.dumps(v).decode()) for v in sorted(ids, key=len, reverse=True)))

    def tag(replies: tuple[Reply, ...]) -> tuple[Reply, ...]:
        out = []
        for r in replies:
            text = skeleton(r.data) if isinstance(r.data, str) else ""  # no id hides in a frame's audio
            found = tuple(sorted({orjson.loads(m) for m in tokens.findall(text)}))
            out.append(replace(r, ids=found) if found else r)
        return tuple(out)

    return replace(script, steps=tuple(replace(s, replies=tag(s.replies)) for s in script.steps))


def substitute(data: str, ids: dict[str, str]) -> str:
    """`data` with every JSON string token of a recorded id (a key of `ids`) replaced by this run's, in one pass."""
    tokens = {orjson.dumps(k).decode(): orjson.dumps(v).decode() for k, v in ids.items()}
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    return pattern.sub(lambda m: tokens[m.group(0)], data)


# --- payload comparison (strict) ---------------------------------------------------------

VOLATILE_KEYS = frozenset({"event_id"})


def normalise(event: Any, kind: str | None = None, depth: int = MAX_DEPTH) -> Any:
    """An event minus volatile fields: event ids, client-made item ids, audio as its length.

    Objects and lists nested deeper than ``depth`` (``MAX_DEPTH``) become one
    stable string each (:func:`deep_text`), so an event nested to orjson's
    1024-level limit is compared without recursion and still equals itself.
    """
    if isinstance(event, dict):
        if depth <= 0:
            return deep_text(event)
        kind = kind or event.get("type")
        out: dict[str, Any] = {}
        for key, value in event.items():
            if key in VOLATILE_KEYS:
                continue
            if key == "audio" and isinstance(value, str):
                out[key] = f"<{b64_len(value)} bytes>"
            elif key == "item" and kind == "conversation.item.create" and isinstance(value, dict):
                out[key] = normalise({k: v for k, v in value.items() if k != "id"}, "item", depth - 1)
            else:
                out[key] = normalise(value, "nested", depth - 1)
        return out
    if isinstance(event, list):
        if depth <= 0:
            return deep_text(event)
        return [normalise(v, "nested", depth - 1) for v in event]
    return event


def deep_text(value: Any) -> str:
    """A JSON value as ``<nested ...>`` text, walked without recursion: keys sorted, event ids
    dropped and audio as its length (as :func:`normalise` does), so equal values give equal text."""
    out: list[str] = []
    stack: list[tuple[bool, Any]] = [(False, value)]  # (already text, item)
    while stack:
        done, v = stack.pop()
        if done:
            out.append(v)
        elif isinstance(v, dict):
            todo: list[tuple[bool, Any]] = [(True, "{")]
            pairs = sorted(((str(k), x) for k, x in v.items() if k not in VOLATILE_KEYS), key=lambda kx: kx[0])
            for i, (k, x) in enumerate(pairs):
                todo.append((True, ("," if i else "") + _scalar(k) + ":"))
                todo.append((True, f'"<{b64_len(x)} bytes>"') if k == "audio" and isinstance(x, str) else (False, x))
            todo.append((True, "}"))
            stack.extend(reversed(todo))
        elif isinstance(v, list):
            todo = [(True, "[")]
            for i, x in enumerate(v):
                if i:
                    todo.append((True, ","))
                todo.append((False, x))
            todo.append((True, "]"))
            stack.extend(reversed(todo))
        else:
            out.append(_scalar(v))
    return f"<nested {''.join(out)}>"


def _scalar(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return repr(value)


def differences(expected: Any, received: Any, path: str = "", limit: int = 5) -> list[str]:
    """Readable differences between two normalised payloads (at most `limit`)."""
    out: list[str] = []
    if isinstance(expected, dict) and isinstance(received, dict):
        for key in list(expected) + [k for k in received if k not in expected]:
            sub = f"{path}.{key}" if path else key
            if key not in received:
                out.append(f"{sub}: missing (expected {_short(expected[key])})")
            elif key not in expected:
                out.append(f"{sub}: unexpected {_short(received[key])}")
            else:
                out += differences(expected[key], received[key], sub, limit - len(out))
            if len(out) >= limit:
                break
    elif isinstance(expected, list) and isinstance(received, list) and len(expected) == len(received):
        for i, (a, b) in enumerate(zip(expected, received, strict=True)):
            out += differences(a, b, f"{path}[{i}]", limit - len(out))
            if len(out) >= limit:
                break
    elif expected != received:
        out.append(f"{path or '(event)'}: expected {_short(expected)}, got {_short(received)}")
    return out[:limit]


def _short(value: Any, width: int = 60) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


# --- the report ----------------------------------------------------------------------------


@dataclass
class Mismatch:
    """One way the client departed from the script, as a failing assertion shows it.

    kind: ``unexpected`` (an event the script did not expect next), ``missing``
    (recorded events the client skipped), ``reordered`` (ordered, strict: the
    skipped events came after all, in another order), ``payload`` (strict: same
    type, other content), ``audio`` (strict: other total audio length),
    ``after_end`` (an event after the script ended), ``closed_early`` (the
    client left before it ended). ``details`` are the paths of the fields that
    differ between ``expected`` and ``received`` (volatile fields dropped,
    base64 audio as its length); ``previous`` the events matched just before;
    ``next`` what the replay did about it.
    """

    kind: str
    message: str
    t: float
    step: int | None = None
    expected: dict[str, Any] | None = None
    received: dict[str, Any] | None = None
    details: list[str] = field(default_factory=list)
    count: int = 1
    previous: list[dict[str, Any]] = field(default_factory=list)  # {"turn": n, "event": {...}}, oldest first
    next: str = ""
    skipped: list[int] = field(default_factory=list)  # missing/reordered: the steps jumped over

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "t": round(self.t, 6),
            "turn": self.step,
            "expected": clip(shown(self.expected)),  # events from the wire may nest past what orjson writes
            "received": clip(shown(self.received)),
            "details": self.details,
            "previous": [{"turn": p.get("turn"), "event": clip(shown(p.get("event")))} for p in self.previous],
            "next": self.next,
            "count": self.count,
        }

    def format(self, number: int) -> list[str]:
        """The mismatch as lines of a failure report: what, expected, received, the fields that differ, the
        events before, and what the replay did."""
        turn = f", turn {self.step + 1}" if self.step is not None else ""
        lines = [f"#{number} at {self.t:.3f} s{turn}: {self.message} [{self.kind}]"]
        if self.expected is not None:
            lines.append(f"   expected: {_short(shown(self.expected), 160)}")
        if self.received is not None:
            lines.append(f"   received: {_short(shown(self.received), 160)}")
        if self.details:
            lines.append("   differences:")
            lines += [f"     {d}" for d in self.details]
        if self.previous:
            lines.append("   after: " + ", ".join(_after(p) for p in self.previous))
        if self.next:
            lines.append(f"   replay: {self.next}")
        return lines


def _after(previous: dict[str, Any]) -> str:
    event = previous.get("event")
    kind = event.get("type") if isinstance(event, dict) else None
    return f"{kind if isinstance(kind, str) else '?'} (turn {previous.get('turn')})"


def shown(value: Any, depth: int = MAX_DEPTH) -> Any:
    """An event as a report shows it: base64 audio as its length, all else as it was."""
    if isinstance(value, dict) and depth > 0:
        return {
            k: (
                f"<{b64_len(v)} bytes of base64 audio>"
                if k in ("audio", "delta") and isinstance(v, str) and len(v) > 64
                else shown(v, depth - 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list) and depth > 0:
        return [shown(v, depth - 1) for v in value]
    return value


@dataclass
class ConnectionReport:
    number: int
    turns_total: int
    path: str = ""
    subprotocol: str | None = None
    turns_played: int = 0
    events_sent: int = 0
    events_received: int = 0
    errors_sent: int = 0
    duration: float = 0.0
    closed: bool = False
    close_code: int | None = None
    mismatches: list[Mismatch] = field(default_factory=list)
    recorded: int | None = None  # the recorded connection it was served (1-based; None: none was left)
    server_close: int | None = None  # the close code the replay sent (or 1006: dropped), as recorded

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "path": self.path,
            "subprotocol": self.subprotocol,
            "turns": {"played": self.turns_played, "total": self.turns_total},
            "events_sent": self.events_sent,
            "events_received": self.events_received,
            "errors_sent": self.errors_sent,
            "duration": round(self.duration, 6),
            "closed": self.closed,
            "close_code": self.close_code,
            "recorded": self.recorded,
            "server_close": self.server_close,
            "ok": self.ok,
            "mismatches": [m.to_json() for m in self.mismatches],
        }


@dataclass
class Report:
    source: str
    policy: str
    pace: str = "instant"
    speed: float = 1.0
    connections: list[ConnectionReport] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # path and query of each recorded connection

    @property
    def mismatches(self) -> list[Mismatch]:
        return [m for c in self.connections for m in c.mismatches]

    @property
    def unserved(self) -> list[int]:
        """Recorded connections (1-based) no client opened, when the recording has several."""
        if len(self.recorded) <= 1:
            return []
        served = {c.recorded for c in self.connections}
        return [k for k in range(1, len(self.recorded) + 1) if k not in served]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unserved

    def to_json(self) -> dict[str, Any]:
        return {
            "recording": self.source,
            "match": self.policy,
            "pace": self.pace,
            "speed": self.speed,
            "ok": self.ok,
            "mismatches": len(self.mismatches),
            "recorded_connections": len(self.recorded) or 1,
            "unserved": self.unserved,
            "connections": [c.to_json() for c in self.connections],
        }

    def format(self) -> str:
        """The report as a person reads it."""
        head = f"rtproxy replay: {self.source} (match {self.policy}, pace {self.pace}"
        lines = [head + (f" x{self.speed:g})" if self.pace == "recorded" else ")")]
        if not self.connections:
            lines.append("  no client connected")
        for c in self.connections:
            verdict = "no mismatch" if c.ok else f"{len(c.mismatches)} mismatch{'es' if len(c.mismatches) > 1 else ''}"
            lines.append(
                f"  connection {c.number} {c.path or '/'}: {c.turns_played}/{c.turns_total} turns played, "
                f"{c.events_sent} events sent, {c.events_received} received, {verdict}"
            )
            if len(self.recorded) > 1 and c.recorded is not None and c.recorded != c.number:
                lines[-1] += f" (recorded connection {c.recorded})"
            if c.server_close is not None:
                lines[-1] += f"; closed by the replay with {c.server_close}, as recorded"
            for i, m in enumerate(c.mismatches, 1):
                lines += ["    " + line for line in m.format(i)]
        for k in self.unserved:
            lines.append(f"  recorded connection {k} {self.recorded[k - 1] or '/'}: never opened")
        return "\n".join(lines)
