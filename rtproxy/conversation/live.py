"""GPT-Live events into a conversation: the pure, incremental reducer every Live view shares.

Feed frames (or parsed events) in order, read the state at any time::

    live = LiveSession()
    for frame in store.frames(sid):
        live.feed(frame)
    live.turns         # speech turns on the session timeline: speaker, transcript, audio, overlaps, latency
    live.delegations   # work handed to the client / a Responses backend / Decisions: asked, done, returned
    live.usage         # the latest session.usage.updated (or session.closed's final usage)
    live.to_json()     # the `rtproxy show --json` model

The rules, from the ``openai`` SDK's ``openai.types.live`` models:

- **Turns.** User and assistant speak on one timeline (ms from the session's start). Transcript fragments
  (``session.input_transcript.delta`` / ``session.output_transcript.delta``) carry ``start_ms``/``end_ms`` and no
  done event: a fragment continues its speaker's current turn unless it starts more than :data:`TURN_GAP_MS`
  after it, or the other speaker has since taken a turn in the gap (begun after it ended, finished before).
- **Audio.** The client's ``session.input_audio.append`` stream (or, on a sideband, the server's reflected
  copy) is the input timeline: byte offsets are ms from the start; a user turn's audio is its slice. Primary
  output audio has no timestamps and plays in order: the chunks that arrive up to an assistant turn's last
  fragment are its audio, those after it the next turn's. Audio is counted from its base64 length; with
  ``keep_audio`` the chunks are kept to be decoded on demand.
- **Overlaps.** Two turns of different speakers whose spans intersect, or where one starts the moment the other
  stops (as a barge-in cuts the assistant's transcript): the later one is a ``barge_in`` if the earlier one
  stopped before it did (an assistant turn so cut is ``interrupted``), else a ``backchannel``.
- **Latency** (as users hear it): from the end of the user turn an assistant turn answers to its start.
- **Delegations.** ``session.delegation.created`` opens one; ``response.event`` (a nested Responses stream,
  reduced by :class:`rtproxy.conversation.responses.ResponseStreams`), ``decision.event`` and the client's
  ``session.{instructions,thinking,commentary}.append`` naming its ``delegation_id`` fill it; the client's
  ``response.item.create`` with a ``function_call_output`` returns a tool's result.

A sideband connection carries the same session's events: :func:`merge_connections` lays a primary's and its
sideband's frames on one timeline, and :meth:`LiveSession.feed` takes each with its ``connection``; a server
event seen on both (same ``event_id``) counts once, and each audio stream is taken from the first connection
that carried it. Bad input never raises: it becomes an :class:`Anomaly`; every list from the wire is bounded.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from ..protocols.formats import audio_format
from ..protocols.wire import CLIENT, Direction, Frame
from .live_delegations import DelegationRules
from .live_model import ASSISTANT, USER, Appended, AudioStream, Delegation, SpeechTurn
from .live_turns import TURN_GAP_MS, TurnRules, link_turns
from .model import MAX_MESSAGE, RATES, Anomaly, ErrorInfo, b64_size, clip, short, str_or_none
from .responses import ResponseStreams

if TYPE_CHECKING:
    from .summary import Summary

__all__ = ["LiveSession", "assemble_live", "merge_connections", "summarize_live", "TURN_GAP_MS"]

Event = dict[str, Any]
Handler = Callable[[float, Event, int, str], None]

MAX_NOTES = 1_000  # configs, infos, mutes, pauses, decision triggers, correlations kept
#: Client event ids remembered for correlation (the oldest forgotten past this).
MAX_CLIENT_IDS = 100_000
PRIMARY, SIDEBAND = "primary", "sideband"
#: Entries of a list ``to_json`` cuts (the rest are counted in the reducer).
MAX_LISTED = 100
#: Client commands the server never acknowledges (their ids come back only in an error).
_UNACKED = frozenset({"session.input_audio.append", "response.item.create", "response.create"})

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

_IGNORED_SERVER = frozenset(
    {
        "session.output_audio.fixture.playing",
        "session.output_audio.fixture.played",
        "decision.item.created",
        "decision.item.deleted",
        "transport.dtmf.received",
        "transport.dtmf.send",
        "transport.dtmf.sent",
        "transport.ringing",
        "transport.answered",
    }
)
_IGNORED_CLIENT = frozenset(
    {
        "session.output_audio.fixture.play",
        "decision.create",
        "decision.item.create",
        "decision.item.delete",
        "response.create",
        "transport.dtmf.send",
    }
)


class LiveSession(TurnRules, DelegationRules):
    """Incremental reducer of one GPT-Live session (one or more connections): feed in order, read any time."""

    def __init__(self, *, keep_audio: bool = True, session: dict[str, Any] | None = None, merged: bool = False) -> None:
        """``session``: the session row (a ``sideband`` variant makes its frames the sideband's); ``merged``: frames
        of more than one connection will be fed (each with its ``connection``), so server events are de-duplicated."""
        self.keep_audio = keep_audio
        self.session = session
        variant = session.get("variant") if isinstance(session, dict) else None
        #: the connection of frames fed without one: the session's own (a sideband's reflected audio is PCM16 24 kHz)
        self.connection = SIDEBAND if variant == SIDEBAND else PRIMARY
        self.model: str | None = None
        self.session_id: str | None = None
        self.configs: list[tuple[float, str, dict[str, Any]]] = []  # (t, event type, session object)
        self.turns: list[SpeechTurn] = []
        self.delegations: list[Delegation] = []
        self.appended: list[Appended] = []
        self.usage: dict[str, float] = {}
        self.context_ratio: float | None = None
        self.usage_updates = 0
        self.closed: dict[str, Any] | None = None  # reason, usage, t
        self.close_requested: float | None = None
        self.mutes: list[tuple[float, float, bool]] = []  # (t, input ms, muted)
        self.pauses: list[tuple[float, str]] = []  # sideband: (t, paused|resumed)
        self.infos: list[tuple[int, float, str, str]] = []
        self.triggers: list[dict[str, Any]] = []  # decision.event of transcript triggers (no delegation)
        self.errors: list[ErrorInfo] = []
        self.anomalies: list[Anomaly] = []
        self.unknown_types: Counter[str] = Counter()
        self.answered: dict[str, tuple[int, str]] = {}  # client event id -> (seq, type) of the first answer
        self.events_fed = 0
        self.non_json = 0
        self.binary_frames = 0
        self.duplicates = 0
        self.connections: Counter[str] = Counter()
        self.input = AudioStream(keep=keep_audio)
        self.output = AudioStream(keep=keep_audio)
        self.book = ResponseStreams(self._flag)
        self._current: dict[str, SpeechTurn | None] = {USER: None, ASSISTANT: None}
        self._out_mark = 0  # output bytes when the latest assistant fragment arrived
        self._delegations: dict[str, Delegation] = {}
        self._by_response_id: dict[str, Delegation] = {}
        self._calls: dict[str, Delegation] = {}  # call_id -> delegation (of tool calls seen)
        self._appends: dict[str, Appended] = {}  # client event id -> appended context awaiting its ack
        self._client_events: dict[str, tuple[int, str]] = {}
        self._seen: dict[str, str] = {}  # server event id -> connection, once a second connection is fed
        self._multi = merged
        self._handlers: tuple[dict[str, Handler], dict[str, Handler]] = (self._client_table(), self._server_table())

    def _client_table(self) -> dict[str, Handler]:
        table: dict[str, Handler] = {
            "session.input_audio.append": self._on_input_audio,
            "session.start": self._on_config,
            "session.update": self._on_config,
            "session.close": self._on_close_request,
            "session.input_audio.mute": self._noop,
            "session.input_audio.unmute": self._noop,
            "session.instructions.append": self._on_append,
            "session.thinking.append": self._on_append,
            "session.commentary.append": self._on_append,
            "response.item.create": self._on_item_create,
        }
        table.update(dict.fromkeys(_IGNORED_CLIENT, self._noop))
        return table

    def _server_table(self) -> dict[str, Handler]:
        table: dict[str, Handler] = {
            "session.output_audio.delta": self._on_output_audio,
            "session.input_audio.append": self._on_input_audio,
            "session.input_transcript.delta": self._on_user_transcript,
            "session.output_transcript.delta": self._on_assistant_transcript,
            "response.event": self._on_response_event,
            "session.started": self._on_config,
            "session.updated": self._on_config,
            "session.closed": self._on_closed,
            "session.usage.updated": self._on_usage,
            "session.delegation.created": self._on_delegation,
            "decision.event": self._on_decision,
            "session.input_audio.muted": self._on_muted,
            "session.input_audio.unmuted": self._on_muted,
            "session.instructions.appended": self._on_appended,
            "session.thinking.appended": self._on_appended,
            "session.commentary.appended": self._on_appended,
            "session.paused": self._on_paused,
            "session.resumed": self._on_paused,
            "info": self._on_info,
            "error": self._on_error,
            "transport.failed": self._on_error,
        }
        table.update(dict.fromkeys(_IGNORED_SERVER, self._noop))
        return table

    # --- feeding -----------------------------------------------------------------------

    def feed(self, frame: Frame, connection: str | None = None) -> None:
        """Take one frame of any kind; non-JSON and binary frames are only counted."""
        self.events_fed += 1
        data = frame.data
        if type(data) is not str:
            self.binary_frames += 1
            return
        try:
            event = _loads(data)
        except _JSONDecodeError:
            self.non_json += 1
            return
        if type(event) is not dict:
            self.non_json += 1
            return
        self._dispatch(frame.direction, frame.t, event, frame.seq, connection or self.connection)

    def feed_event(
        self,
        direction: Direction | str,
        t: float,
        event: dict[str, Any],
        seq: int = -1,
        connection: str | None = None,
    ) -> None:
        """Take one already-parsed event."""
        self.events_fed += 1
        if not isinstance(event, dict):
            self.non_json += 1
            return
        t = float(t) if isinstance(t, int | float) else 0.0
        self._dispatch(direction, t, event, seq, connection or self.connection)

    def _dispatch(self, direction: Direction | str, t: float, event: Event, seq: int, conn: str) -> None:
        etype = event.get("type")
        client = direction is CLIENT or direction == "client"
        if type(etype) is not str:
            self._unknown(t, event, seq, conn)
            return
        handler = self._handlers[0 if client else 1].get(etype)
        if handler is None:
            handler = self._unknown
        if self._multi or conn != self.connection:
            if self._duplicate(client, event, conn, seq):
                return
        elif client:
            eid = event.get("event_id")
            if type(eid) is str:
                self._remember_client(eid, seq, etype)
        try:
            handler(t, event, seq, conn)
        except Exception as e:  # noqa: BLE001 - bad input becomes an anomaly, never an exception
            self._flag(seq, "malformed", f"{short(etype)}: {type(e).__name__}: {short(str(e), 100)}")

    def _duplicate(self, client: bool, event: Event, conn: str, seq: int) -> bool:
        """With two connections fed, is this server event one already taken from the other?"""
        self._multi = True
        self.connections[conn] += 1
        eid = event.get("event_id")
        if type(eid) is not str:
            return False
        if client:
            self._remember_client(eid, seq, str(event.get("type")))
            return False
        seen = self._seen.get(eid)
        if seen is not None and seen != conn:
            self.duplicates += 1
            return True
        if len(self._seen) < MAX_CLIENT_IDS * 4:
            self._seen[eid] = conn
        return False

    def _remember_client(self, eid: str, seq: int, etype: str) -> None:
        events = self._client_events
        if len(events) >= MAX_CLIENT_IDS:
            del events[next(iter(events))]
        events[eid] = (seq, etype)

    def _noop(self, t: float, ev: Event, seq: int, conn: str) -> None:
        pass

    def _unknown(self, t: float, ev: Event, seq: int, conn: str) -> None:
        etype = ev.get("type")
        name = etype if isinstance(etype, str) else "<no type>"
        if len(name) > MAX_MESSAGE:
            name = name[:MAX_MESSAGE] + "…"
        if name not in self.unknown_types:
            if len(self.unknown_types) >= MAX_NOTES:
                name = "<other>"
            else:
                self._flag(seq, "unknown_type", f"unknown event type {short(name)!r}")
        self.unknown_types[name] += 1

    def _flag(self, seq: int, kind: str, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        self.anomalies.append(Anomaly(seq, kind, message))

    def _malformed(self, seq: int, ev: Event, name: str) -> None:
        self._flag(seq, "malformed", f"{short(ev.get('type'))}: unusable {name} {short(ev.get(name), 40)}")

    def _answer(self, ev: Event, seq: int) -> None:
        """A server event naming the client event it answers (``client_event_id``)."""
        cid = ev.get("client_event_id")
        if type(cid) is str and cid not in self.answered and len(self.answered) < MAX_CLIENT_IDS:
            self.answered[cid] = (seq, str(ev.get("type")))

    # --- audio (the hot paths) -----------------------------------------------------------

    def _on_input_audio(self, t: float, ev: Event, seq: int, conn: str) -> None:
        data = ev.get("audio")
        if type(data) is not str:
            self._malformed(seq, ev, "audio")
            return
        stream = self.input
        if stream.source != conn:
            if stream.source is not None:
                return  # the same audio, reflected on another connection: counted once
            stream.source = conn
        stream.nbytes += b64_size(data)
        if stream.keep:
            stream.chunks.append(data)

    def _on_output_audio(self, t: float, ev: Event, seq: int, conn: str) -> None:
        data = ev.get("delta")
        if type(data) is not str:
            self._malformed(seq, ev, "delta")
            return
        stream = self.output
        if stream.source != conn:
            if stream.source is not None:
                return
            stream.source = conn
        stream.nbytes += b64_size(data)
        if stream.keep:
            stream.chunks.append(data)
        if stream.timed is not False:  # sideband-reflected audio says where it sits; primary audio does not
            stream.add_timed(ev.get("start_ms"), stream.nbytes)

    # --- session config, usage, close ------------------------------------------------------

    def _on_config(self, t: float, ev: Event, seq: int, conn: str) -> None:
        session = ev.get("session")
        if not isinstance(session, dict):
            self._malformed(seq, ev, "session")
            return
        etype = str(ev.get("type"))
        self._answer(ev, seq)
        if len(self.configs) < MAX_NOTES:
            self.configs.append((t, etype, clip(session, 8)))
        model = session.get("model")
        if isinstance(model, str) and model:
            self.model = model[:MAX_MESSAGE]
        sid = session.get("id")
        if isinstance(sid, str) and etype != "session.start":
            self.session_id = sid[:MAX_MESSAGE]
        audio_cfg = session.get("audio")
        fmt = audio_format(audio_cfg.get("format"), any_rate=True) if isinstance(audio_cfg, dict) else None
        if fmt is not None:
            if fmt.rate not in RATES:
                self._flag(seq, "bad_index", f"sample rate {short(fmt.rate)} out of range, format ignored")
            elif conn != SIDEBAND and self.input.nbytes == 0 and self.output.nbytes == 0:
                # the session's format is fixed at startup; reflected sideband audio is always PCM16 24 kHz
                self.input.format = self.output.format = fmt

    def _on_usage(self, t: float, ev: Event, seq: int, conn: str) -> None:
        usage = self._usage_of(ev, seq)
        if usage is None:
            return
        self.usage = usage
        self.usage_updates += 1
        ctx = ev.get("context_window")
        ratio = ctx.get("usage_ratio") if isinstance(ctx, dict) else None
        if isinstance(ratio, int | float) and not isinstance(ratio, bool) and 0 <= ratio < 1e6:
            self.context_ratio = float(ratio)

    def _usage_of(self, ev: Event, seq: int) -> dict[str, float] | None:
        usage = ev.get("usage")
        if not isinstance(usage, dict):
            self._malformed(seq, ev, "usage")
            return None
        out = {}
        for key, value in usage.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e15:
                out[str(key)[:64]] = float(value)
            if len(out) >= 32:
                break
        return out

    def _on_close_request(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self.close_requested = t

    def _on_closed(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._on_config(t, ev, seq, conn)
        usage = self._usage_of(ev, seq)
        if usage is not None:
            self.usage = usage
        reason = ev.get("reason")
        self.closed = {"t": t, "seq": seq, "reason": short(reason, 60) if reason is not None else None}

    def _on_muted(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._answer(ev, seq)
        if len(self.mutes) < MAX_NOTES:
            self.mutes.append((t, round(self.input.ms, 3), ev.get("type") == "session.input_audio.muted"))

    def _on_paused(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._answer(ev, seq)
        if len(self.pauses) < MAX_NOTES:
            self.pauses.append((t, "paused" if ev.get("type") == "session.paused" else "resumed"))

    def _on_info(self, t: float, ev: Event, seq: int, conn: str) -> None:
        self._answer(ev, seq)
        if len(self.infos) < MAX_NOTES:
            self.infos.append((seq, t, short(ev.get("code"), 60), short(ev.get("message"), 300)))

    # --- errors ------------------------------------------------------------------------------------

    def _on_error(self, t: float, ev: Event, seq: int, conn: str) -> None:
        err = ev.get("error")
        if not isinstance(err, dict):
            self._malformed(seq, ev, "error")
            err = {}
        cid = str_or_none(err.get("client_event_id")) or str_or_none(ev.get("client_event_id"))
        fields = [str_or_none(err.get(k)) for k in ("type", "code", "message", "param")]
        info = ErrorInfo(seq, t, fields[0], fields[1], fields[2], fields[3], cid)
        if cid is not None and cid in self._client_events:
            info.client_seq, info.client_type = self._client_events[cid]
        if len(self.errors) < MAX_NOTES:
            self.errors.append(info)
        self._answer({"client_event_id": cid, "type": ev.get("type")}, seq)

    # --- reading -------------------------------------------------------------------------------------

    def unanswered(self) -> list[dict[str, Any]]:
        """Client commands that named an ``event_id`` and got no server event or error naming it back."""
        return [
            {"event_id": eid, "seq": seq, "type": kind}
            for eid, (seq, kind) in self._client_events.items()
            if eid not in self.answered and kind not in _UNACKED
        ]

    def finish(self) -> list[SpeechTurn]:
        """The turns with their audio ranges, overlaps, latency and delegations' asks worked out (idempotent)."""
        last = self._current[ASSISTANT]
        if last is not None:
            last.audio_end = self.output.nbytes
        for turn in self.turns:
            if turn.speaker == USER:
                stream = self.input
                turn.audio_start = stream.byte_at(turn.start_ms)
                turn.audio_end = stream.byte_at(turn.end_ms)
        if self.output.timed:  # timestamped output: each turn's audio from the chunks placed in its stretch
            answers = sorted((t for t in self.turns if t.speaker == ASSISTANT), key=lambda t: t.start_ms)
            for n, turn in enumerate(answers):
                start = turn.start_ms if n else 0.0
                end = answers[n + 1].start_ms if n + 1 < len(answers) else float("inf")
                turn.audio_start, turn.audio_end = self.output.chunk_range(start, end)
        link_turns(self.turns, self.delegations)
        return self.turns

    def to_json(self) -> dict[str, Any]:
        """The model `rtproxy show --json` prints."""
        turns = self.finish()
        out: dict[str, Any] = {}
        if self.session is not None:
            s = self.session
            out["session"] = {k: s.get(k) for k in ("id", "model", "api", "variant", "status", "started_at", "label")}
        latencies = [t.latency_ms for t in turns if t.latency_ms is not None]
        firsts = [d.first_result_ms for d in self.delegations if d.first_result_ms is not None]
        out.update(
            rebuilt=True,
            api="live",
            model=self.model,
            live_session_id=self.session_id,
            turns=[t.to_json() for t in turns],
            delegations=[d.to_json() for d in self.delegations],
            usage=dict(self.usage),
            context_window_ratio=self.context_ratio,
            closed=self.closed,
            latency={
                "turns_ms": latencies,
                "median_ms": _median(latencies),
                "first_result_ms": firsts,
            },
            audio={
                "input_ms": round(self.input.ms, 3),
                "output_ms": round(self.output.ms, 3),
                "input_bytes": self.input.nbytes,
                "output_bytes": self.output.nbytes,
                "format": self.input.format.encoding,
                "rate": self.input.format.rate,
            },
            appended=[a.to_json() for a in self.appended if a.delegation_id is None],
            configs=[{"t": t, "type": kind, "session": cfg} for t, kind, cfg in self.configs],
            mutes=[{"t": t, "input_ms": ms, "muted": m} for t, ms, m in self.mutes],
            pauses=[{"t": t, "state": s} for t, s in self.pauses],
            infos=[{"seq": s, "t": t, "code": c, "message": m} for s, t, c, m in self.infos],
            triggers=self.triggers,
            errors=[e.to_json() for e in self.errors],
            anomalies=[a.to_json() for a in self.anomalies],
            unknown_types=dict(self.unknown_types),
            events=self.events_fed,
            duplicates=self.duplicates,
            answered={cid: {"seq": seq, "type": kind} for cid, (seq, kind) in self.answered.items()},
            unanswered=self.unanswered()[:MAX_LISTED],
        )
        return out


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else round((ordered[mid - 1] + ordered[mid]) / 2, 3)


def merge_connections(
    primary: Iterable[Frame], sideband: Iterable[Frame], *, offset: float = 0.0
) -> Iterator[tuple[str, Frame]]:
    """A primary's and its sideband's frames on one timeline, each tagged with its connection.

    ``offset`` is how many seconds after the primary the sideband connected (its frames' ``t`` count from
    its own start). Both inputs must be in order; the merge is lazy and stable (the primary first on ties).
    """
    tagged_primary = ((f.t, 0, n, "primary", f) for n, f in enumerate(primary))
    tagged_sideband = ((f.t + offset, 1, n, "sideband", f) for n, f in enumerate(sideband))
    for _, _, _, conn, frame in heapq.merge(tagged_primary, tagged_sideband):
        yield conn, frame


def assemble_live(
    frames: Iterable[Frame],
    session: dict[str, Any] | None = None,
    *,
    keep_audio: bool = True,
    sideband: Iterable[Frame] | None = None,
    sideband_offset: float = 0.0,
) -> LiveSession:
    """A Live session from a whole recording (a loop over :meth:`LiveSession.feed`); with ``sideband``, the
    frames of its sideband connection too, merged on one timeline."""
    live = LiveSession(keep_audio=keep_audio, session=session, merged=sideband is not None)
    feed = live.feed
    if sideband is None:
        for frame in frames:
            feed(frame)
    else:
        for conn, frame in merge_connections(frames, sideband, offset=sideband_offset):
            feed(frame, conn)
    live.finish()
    return live


def summarize_live(frames: Iterable[Frame], session: dict[str, Any] | None = None) -> Summary:
    """The API-neutral Summary of a GPT-Live recording (see :mod:`rtproxy.conversation.live_summary`)."""
    from .live_summary import summarize_live as summarize

    return summarize(frames, session)
