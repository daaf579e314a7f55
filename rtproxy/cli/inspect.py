"""`rtproxy show`, `rtproxy export` and `rtproxy import`: a recorded session for people and files.

Thin shells: frames stream from the store into the reducer
(:mod:`rtproxy.conversation.realtime`), the renderer (:mod:`rtproxy.cli.render`) or the
JSONL writer (:mod:`rtproxy.recording`); nothing here holds a whole session
in memory that it does not need.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from ..errors import RtproxyError
from ..protocols.wire import Frame
from ..store import Store
from . import InputError, db_option, open_store, resolve_session

if TYPE_CHECKING:
    from ..conversation.cost import SessionCost
    from ..conversation.realtime import Conversation

Advance = Callable[[int], None]


# --- progress (stderr, only for a person watching) ---------------------------------


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Advance]:
    """A rich progress bar on stderr when stderr is a terminal; otherwise silent."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def counted(frames: Iterable[Frame], advance: Advance, every: int = 4096) -> Iterator[Frame]:
    """Pass frames through, advancing a progress bar every `every` frames."""
    n = 0
    for frame in frames:
        yield frame
        n += 1
        if n == every:
            advance(n)
            n = 0
    if n:
        advance(n)


# --- export / import ----------------------------------------------------------------


def export_jsonl(store: Store, sid: str | list[str], output: str) -> int:
    """Write sessions as a JSONL recording (one connection each, in order) to a path, or to stdout for ``-``."""
    from ..recording import write_connections

    ids = [sid] if isinstance(sid, str) else sid
    total = sum(store.count_events(i) for i in ids)
    with progress(f"export {ids[0]}" + (f" (+{len(ids) - 1})" if len(ids) > 1 else ""), total) as advance:
        connections = [(store.session(i), counted(store.frames(i), advance)) for i in ids]
        if output == "-":
            with click.open_file("-", "wb") as out, pipe_may_close():
                return write_connections(out, connections)
        try:
            return write_connections(output, connections)
        except OSError as e:
            raise InputError(f"cannot write {output}: {e.strerror or e}") from e


def export_audio(store: Store, sid: str, directory: str) -> list[Path]:
    """One WAV per item with audio, in conversation order, and the stereo conversation.wav."""
    if store.session(sid).get("api") == "live":
        return export_live_audio(store, sid, directory)
    if store.session(sid).get("api") == "responses":
        raise InputError(f"session {sid} is a Responses WebSocket session: it has no audio (export it with -o)")
    from ..conversation.audio import causal_tracks, conversation_clips, note_speech_started, stereo_mix, write_wav
    from ..conversation.realtime import assemble

    speech_started: dict[str, float] = {}
    with progress(f"assemble {sid}", store.count_events(sid)) as advance:
        conv = assemble(note_speech_started(counted(store.frames(sid), advance), speech_started), keep_audio=True)
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {directory}: {e.strerror or e}") from e
    items = conv.items
    width = max(3, len(str(len(items))))
    user, assistant = conv.audio_tracks()
    rate = max((item.audio_rate for _, item in user + assistant), default=24000)
    tracks: dict[str, bytes] = {}
    written: list[Path] = []
    try:
        for n, item in enumerate(items, start=1):
            if item.audio_ms <= 0:
                continue
            pcm = tracks[item.id] = item.pcm16()
            path = target / f"{n:0{width}d}-{_safe(item.role or item.type)}-{_safe(item.id)}.wav"
            write_wav(path, pcm, item.audio_rate)
            written.append(path)
        at_rate = {item.id: _to_rate(tracks[item.id], item.audio_rate, rate) for item in items if item.id in tracks}
        left, right = causal_tracks(conversation_clips(conv, at_rate, speech_started), rate)
        path = target / "conversation.wav"
        write_wav(path, stereo_mix(left, right, rate), rate, channels=2)
    except OSError as e:
        raise InputError(f"cannot write to {directory}: {e.strerror or e}") from e
    written.append(path)
    return written


def export_live_audio(store: Store, sid: str, directory: str) -> list[Path]:
    """A GPT-Live session: one WAV per speech turn, and conversation.wav with the turns where they were spoken."""
    from ..conversation.audio import live_tracks, stereo_mix, write_wav
    from ..conversation.live import assemble_live

    with progress(f"assemble {sid}", store.count_events(sid)) as advance:
        live = assemble_live(counted(store.frames(sid), advance), keep_audio=True)
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {directory}: {e.strerror or e}") from e
    turns = live.turns
    width = max(3, len(str(len(turns))))
    written: list[Path] = []
    try:
        for turn in turns:
            stream = live.input if turn.speaker == "user" else live.output
            pcm = stream.pcm16(turn.audio_start, turn.audio_end)
            if not pcm:
                continue
            path = target / f"{turn.index + 1:0{width}d}-{turn.speaker}.wav"
            write_wav(path, pcm, stream.format.rate)
            written.append(path)
        left, right, rate = live_tracks(live)
        path = target / "conversation.wav"
        write_wav(path, stereo_mix(left, right, rate), rate, channels=2)
    except OSError as e:
        raise InputError(f"cannot write to {directory}: {e.strerror or e}") from e
    written.append(path)
    return written


def _to_rate(pcm: bytes, rate: int, target: int) -> bytes:
    if rate == target:
        return pcm
    from ..conversation.audio import resample

    return resample(pcm, rate, target)


def _safe(name: str) -> str:
    """A file-name-safe version of an id or role."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "item"


# --- show ---------------------------------------------------------------------------------


def _assembled(store: Store, sid: str) -> tuple[Conversation, dict[str, Any]]:
    """The session row and its conversation, frames streamed through the reducer without audio."""
    from ..conversation.realtime import assemble

    row = store.session(sid)
    total = (row.get("client_events") or 0) + (row.get("server_events") or 0)
    with progress(f"assemble {sid}", total or None) as advance:
        conv = assemble(counted(store.frames(sid), advance), keep_audio=False, session=row)
    row["dialect"] = row.get("dialect") or conv.dialect
    return conv, row


def _show_json(conv: Conversation, row: dict[str, Any], cost: SessionCost) -> dict[str, Any]:
    """`show --json`: the reducer's model, its session object completed from the session row, and the cost
    (per response and in all)."""
    from ..recording import session_header

    model = conv.to_json()
    rest = {k: v for k, v in model.items() if k != "session"}
    parts = dict(cost.parts)
    for response in rest.get("responses") or []:
        part = parts.get(f"response {response.get('id')}")
        if part is not None:
            response["cost"] = part.to_json()
    return {"session": {**session_header(row), **(model.get("session") or {})}, **rest, "cost": cost.to_json()}


@click.command()
@click.argument("session")
@db_option
@click.option("--events", is_flag=True, help="Print the raw event timeline, runs of deltas collapsed.")
@click.option("--json", "as_json", is_flag=True, help="Print the conversation model as JSON, for programs.")
@click.option(
    "--linked",
    is_flag=True,
    help="GPT-Live: show a primary and its sideband as one session (both connections' events on one timeline).",
)
def show(session: str, db: str, events: bool, as_json: bool, linked: bool) -> None:
    """Show SESSION as a conversation: who said what, calls, tokens, latency.

    \b
    rtproxy show latest              the conversation, turn by turn
    rtproxy show latest --events     every event, runs of deltas collapsed
    rtproxy show 20261124 --json     session, items, responses as JSON

    Each turn shows its speaker, text or transcript, audio duration and
    function calls with arguments and outputs; each response its status,
    tokens and latency (trigger → created → first delta/audio → done).
    A GPT-Live session shows its speech turns on the session timeline
    (overlaps marked, latency from the end of the user's speech), each
    delegation (asked, done, returned, how long) and the billed seconds.
    """
    if events and as_json:
        raise InputError("--events and --json do not go together; pick one")
    color = sys.stdout.isatty()
    from . import render

    with open_store(db) as store:
        sid = resolve_session(store, session)
        row = store.session(sid)
        if events:
            echo_lines(render.timeline(store.frames(sid), color=color, api=row.get("api")), color=color)
            return
        if row.get("api") == "live":
            _show_live(store, sid, row, as_json=as_json, color=color, linked=linked)
            return
        if row.get("api") == "responses":
            _show_responses(store, sid, row, as_json=as_json, color=color)
            return
        if row.get("api") not in (None, "realtime"):  # no reducer of its own yet: its events, not a misreading
            note = (
                f"rtproxy does not rebuild {render.api_label(row)} conversations yet; "
                "these are the session's events as they crossed the wire (all recorded byte for byte)"
            )
            if as_json:
                from ..recording import session_header

                out = {
                    "session": session_header(row),
                    "rebuilt": False,
                    "note": note,
                    "event_types": store.event_type_counts(sid),
                }
                with pipe_may_close():
                    click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
                return
            style = render.Styler(color)
            lines = [*render.session_title(row, style), "", note, ""]
            echo_lines([*lines, *render.timeline(store.frames(sid), color=color)], color=color)
            return
        conv, row = _assembled(store, sid)
        cost = store.session_cost(sid, row)
    if as_json:
        out = _show_json(conv, row, cost)
        with pipe_may_close():
            click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
        return
    echo_lines(render.conversation(conv, row, color=color, cost=cost), color=color)


def _pair(store: Store, sid: str, row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The (primary, sideband) rows of a Live session seen by two connections, or None if it was not."""
    links = store.linked_sessions(sid)
    if row.get("variant") == "sideband":
        primary = next((r for r in links if r["relation"] == "primary"), None)
        return (primary, row) if primary is not None else None
    sideband = next((r for r in links if r["relation"] == "sideband"), None)
    return (row, sideband) if sideband is not None else None


def _offset(primary: dict[str, Any], sideband: dict[str, Any]) -> float:
    """Seconds from the primary's start to the sideband's (their frames count from their own starts)."""
    import datetime as dt

    try:
        start = dt.datetime.fromisoformat(str(primary["started_at"]).replace("Z", "+00:00"))
        later = dt.datetime.fromisoformat(str(sideband["started_at"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return 0.0
    return max(0.0, (later - start).total_seconds())


def _show_live(
    store: Store, sid: str, row: dict[str, Any], *, as_json: bool, color: bool, linked: bool = False
) -> None:
    """`show` of a GPT-Live session: its conversation rebuilt by the Live reducer (with `linked`, from its
    primary's and its sideband's frames together)."""
    from ..conversation.live import assemble_live
    from ..recording import session_header
    from .render_live import live_conversation

    pair = _pair(store, sid, row) if linked else None
    if linked and pair is None:
        raise InputError(f"session {sid} has no linked primary or sideband to show with it")
    if pair is not None:
        primary, sideband = pair
        sid, row = primary["id"], primary
        total = sum((r.get("client_events") or 0) + (r.get("server_events") or 0) for r in pair)
        with progress(f"assemble {primary['id']} + {sideband['id']}", total or None) as advance:
            live = assemble_live(
                counted(store.frames(primary["id"]), advance),
                primary,
                keep_audio=False,
                sideband=counted(store.frames(sideband["id"]), advance),
                sideband_offset=_offset(primary, sideband),
            )
    else:
        total = (row.get("client_events") or 0) + (row.get("server_events") or 0)
        with progress(f"assemble {sid}", total or None) as advance:
            live = assemble_live(counted(store.frames(sid), advance), row, keep_audio=False)
    links = [{"id": r["id"], "relation": r["relation"]} for r in store.linked_sessions(sid)]
    cost = store.session_cost(sid, row)
    if as_json:
        model = live.to_json()
        out = {
            "session": {**session_header(row), **(model.pop("session", None) or {})},
            "linked": links,
            "merged": [r["id"] for r in pair] if pair is not None else None,
            **model,
            "cost": cost.to_json(),
        }
        with pipe_may_close():
            click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
        return
    lines = live_conversation(live, row, color=color)
    if links:  # the same Live session seen by another connection (a sideband, its primary, a fork)
        head = [next(lines), next(lines)]
        note = "linked: " + ", ".join(f"{link['relation']} {link['id']}" for link in links)
        if pair is not None:
            note = f"primary {pair[0]['id']} and sideband {pair[1]['id']}, shown as one session; " + note
        lines = iter([*head, note, *lines])
    from .render import Styler, cost_line

    echo_lines(itertools.chain(lines, [cost_line(cost, Styler(color))]), color=color)


def _show_responses(store: Store, sid: str, row: dict[str, Any], *, as_json: bool, color: bool) -> None:
    """`show` of a Responses WebSocket mode session: its requests and responses rebuilt by its reducer."""
    from ..conversation.responses_ws import assemble_responses
    from ..recording import session_header
    from .render_responses import responses_conversation

    total = (row.get("client_events") or 0) + (row.get("server_events") or 0)
    with progress(f"assemble {sid}", total or None) as advance:
        book = assemble_responses(counted(store.frames(sid), advance), row)
    if as_json:
        out = {"session": session_header(row), **book.to_json()}
        with pipe_may_close():
            click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
        return
    echo_lines(responses_conversation(book, row, color=color), color=color)


def echo_lines(lines: Iterable[str], *, color: bool, batch: int = 512) -> None:
    """Echo lines in batches (one write per batch, not per line)."""
    chunk: list[str] = []
    with pipe_may_close():
        for line in lines:
            chunk.append(line)
            if len(chunk) == batch:
                click.echo("\n".join(chunk), color=color)
                chunk.clear()
        if chunk:
            click.echo("\n".join(chunk), color=color)


@contextmanager
def pipe_may_close() -> Iterator[None]:
    """A reader that stops early (`| head`) ends the command quietly, not with a traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        with suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@click.command("export")
@click.argument("sessions", nargs=-1, metavar="[SESSION]...")
@db_option
@click.option("-o", "--output", metavar="FILE.jsonl", help="Write the sessions as a JSONL recording ('-' for stdout).")
@click.option(
    "--audio",
    "audio_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write one WAV per item with audio, and conversation.wav (user left, assistant right); one session only.",
)
@click.option("--label", metavar="TEXT", help="Only sessions with this label (the proxy's --label, pytest's cassette).")
@click.option(
    "--since",
    metavar="TIME",
    help="Only sessions started at TIME or later: an ISO date or time in UTC (2026-11-25, 2026-11-25T09:00) "
    "or an age (30m, 2h, 1d).",
)
@click.option("--last", type=click.IntRange(min=1), metavar="N", help="Only the N most recent of the sessions chosen.")
@click.option(
    "--otlp",
    metavar="[URL]",
    is_flag=False,
    flag_value="",
    help="Send one session as an OpenTelemetry trace over OTLP/HTTP to URL (http://HOST:4318 or its /v1/traces); "
    "bare --otlp: where OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT says.",
)
@click.option(
    "--otlp-content", is_flag=True, help="Put text, transcripts and tool arguments/outputs in the trace (cut short)."
)
def export(
    sessions: tuple[str, ...],
    db: str,
    output: str | None,
    audio_dir: str | None,
    label: str | None,
    since: str | None,
    last: int | None,
    otlp: str | None,
    otlp_content: bool,
) -> None:
    """Export sessions as a JSONL recording (-o), one session as WAV files (--audio) or as a trace (--otlp).

    \b
    rtproxy export latest -o recordings/greeting.jsonl
    rtproxy export 20261124-1152 -o - | less
    rtproxy export latest --audio out/
    rtproxy export latest --otlp http://127.0.0.1:4318
    rtproxy export 20261124-1152 20261124-1153 -o call.jsonl
    rtproxy export --label checkout --since 1h -o checkout.jsonl
    rtproxy export --last 3 -o recent.jsonl

    Several sessions (named, or chosen with --label, --since and --last;
    with none named, from every session) go into one file as connections,
    oldest first: `rtproxy replay` serves them to a client's connections in
    that order, and `rtproxy import` makes one session of each. The JSONL
    file replays and imports without loss; keys are never in it. WAV files
    are named NNN-ROLE-ITEM.wav so they sort in conversation order;
    conversation.wav is stereo, the user on the left and the assistant on the
    right, each where it was heard, an answer the user interrupted cut where
    it was cut. A GPT-Live session gets one NNN-SPEAKER.wav per speech turn,
    and its conversation.wav has each turn where it was spoken on the session
    timeline.
    """
    from .select import select_sessions

    if otlp is not None or otlp_content:
        from .otlp import export_trace

        if len(sessions) != 1 or label is not None or since is not None or last is not None:
            raise InputError("export --otlp sends one SESSION (an id, a unique prefix, or latest)")
        return export_trace(db, sessions[0], otlp, otlp_content, others=(output, audio_dir))
    if (output is None) == (audio_dir is None):
        raise InputError("export needs exactly one of -o FILE.jsonl, --audio DIR or --otlp URL")
    if not sessions and label is None and since is None and last is None:
        raise InputError("export needs a SESSION (or latest), or --label, --since or --last to choose sessions")
    with open_store(db) as store:
        ids = select_sessions(store, sessions, label=label, since=since, last=last)
        if output is not None:
            n = export_jsonl(store, ids, output)
            if output != "-":
                what = f"session {ids[0]}" if len(ids) == 1 else f"{len(ids)} sessions ({', '.join(ids)})"
                click.echo(f"exported {what}: {n} frames to {output}", err=True)
            return
        assert audio_dir is not None
        if len(ids) > 1:
            raise InputError(f"--audio exports one session; {len(ids)} were chosen")
        sid = ids[0]
        files = export_audio(store, sid, audio_dir)
    click.echo(f"exported session {sid}: {len(files)} WAV files to {audio_dir}", err=True)
    for path in files:
        click.echo(str(path))


@click.command("import")
@click.argument("file", metavar="FILE.jsonl")
@db_option
def import_(file: str, db: str) -> None:
    """Import a JSONL recording into the database; prints the new session's id.

    The whole file is checked as it is read, in one transaction: a file with
    a bad line is refused with its line number, and nothing of it is
    imported. A session whose id is already in the database is never
    replaced: the import gets a new id (printed, with a note on stderr). A
    recording of several connections becomes one session per connection
    (their ids printed in order); the file is checked whole before the
    first is imported.
    """
    from ..recording import iter_connections, iter_recording

    session, frames = iter_recording(file)  # a bad header is refused before the database is touched
    several = _several(file)
    existed = os.path.exists(db)
    imported: list[tuple[str, dict[str, Any]]] = []
    try:
        with open_store(db, create=True) as store, progress(f"import {file}", None) as advance:
            if not several:
                imported.append((store.import_session(session, counted(frames, advance)), session))
            else:
                for session, frames in iter_connections(file):
                    imported.append((store.import_session(session, counted(frames, advance)), session))
    except (RtproxyError, click.ClickException):
        if not existed:  # leave no empty database behind a refused file
            for suffix in ("", "-wal", "-shm"):
                with suppress(OSError):
                    os.unlink(db + suffix)
        raise
    for sid, session in imported:
        wanted = session.get("id")
        if isinstance(wanted, str) and wanted and wanted != sid:
            click.echo(f"rtproxy: note: {db} already holds a session {wanted}; imported as {sid}", err=True)
        click.echo(sid)


def _several(file: str) -> bool:
    """Whether a recording holds more than one connection; the whole file is checked (RecordingError names the
    bad line) so nothing of a bad file is imported."""
    from ..recording import count_connections, iter_connections

    if count_connections(file) <= 1:
        return False
    n = 0
    for _, frames in iter_connections(file):
        n += 1
        for _ in frames:
            pass
    return n > 1


def register(group: click.Group) -> None:
    """Add this module's commands to the `rtproxy` group."""
    group.add_command(show)
    group.add_command(export)
    group.add_command(import_)
