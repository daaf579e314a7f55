"""`rtproxy replay` (a recording as a fake Realtime server) and `rtproxy diff` (two sessions by meaning)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from ..errors import RtproxyError
from ..protocols.wire import Frame
from ..replay.script import POLICIES
from . import InputError, db_option, on_stop_signals, open_store, resolve_session

if TYPE_CHECKING:
    from ..replay.script import Report, Script


def _say(text: str, err: bool = False) -> None:
    click.echo(text, err=err)
    (sys.stderr if err else sys.stdout).flush()


async def _serve(
    scripts: list[Script], host: str, port: int, pace: str, speed: float, match: str, once: bool, tls: bool
) -> Report:
    from ..replay.server import ReplayServer, start

    server = ReplayServer(scripts, policy=match, pace=pace, speed=speed)
    ssl_ctx = None
    if tls:
        from ..record.tls import server_context

        ssl_ctx, _ = server_context()
    try:
        runner, bound = await start(server, host, port, ssl_ctx)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    scheme = "wss" if tls else "ws"
    shown = f"[{host}]" if ":" in host else host
    base = f"{scheme}://{shown}:{bound}"
    _say(f"rtproxy: replaying {server.report.source} on {base} (websocket_base_url={base}/v1)")
    n = len(scripts)
    _say(
        (f"rtproxy: {n} recorded connections, " if n > 1 else "rtproxy: ")
        + f"{sum(len(s.steps) for s in scripts)} client turns, {sum(s.server_events for s in scripts)} server events; "
        f"match {match}, pace {pace}"
        + (f" x{speed:g}" if pace == "recorded" else "")
        + (
            (f"; exits after {n} connections" if n > 1 else "; exits after the first connection")
            if once
            else "; Ctrl-C stops"
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    from ..record.recorder import portable_default

    on_stop_signals(loop, stop.set, portable_default())
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if once:
        waiters.append(asyncio.ensure_future(server.wait_closed(n)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await server.shutdown()
        await server.wait_idle(2.0)
        await runner.cleanup()
    return server.report


@click.command()
@click.argument("recording", required=False, type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option(
    "--session",
    "session_refs",
    metavar="SESSION",
    multiple=True,
    help="Replay a session of --db instead of a file; repeat it to serve several connections in order.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (printed on start).",
)
@click.option(
    "--pace",
    type=click.Choice(["instant", "recorded"]),
    default="instant",
    show_default=True,
    help="Send each turn's events at once, or at their recorded offsets.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="With --pace recorded: 2 plays twice as fast.",
)
@click.option(
    "--match",
    type=click.Choice(list(POLICIES)),
    default="ordered",
    show_default=True,
    help="ordered: same event types in order; strict: also the same payloads (volatile fields "
    "ignored); loose: any order within a turn.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON to this file.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Exit after the first connection closes (after all, for a recording of several), for CI scripts.",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve wss:// with a certificate from rtproxy's local CA (as the proxy does; trust ~/.rtproxy/tls/ca.pem).",
)
def replay(
    recording: Path | None,
    db: str,
    session_refs: tuple[str, ...],
    host: str,
    port: int,
    pace: str,
    speed: float,
    match: str,
    report_path: Path | None,
    once: bool,
    tls: bool,
) -> int:
    """Serve a recording as a fake server (Realtime, GPT-Live, Responses), for offline tests.

    RECORDING is a JSONL file (`rtproxy export`); or give --session to replay
    a session of --db. The client under test connects here instead of the
    real API; each event it sends is matched against the recording and
    answered with the server events recorded after it (GPT-Live: after its
    commands, once it has streamed as much audio as was recorded before
    them; its own event ids come back as client_event_id; Responses
    WebSocket mode: each response.create answered with the stream recorded
    for it, per stream_id lane, ordered comparing the request's input,
    instructions and tools). A mismatch is
    answered with the API's `error` event and reported; the exit code is 1 if
    any connection had one.

    A recording of several connections (`rtproxy export` of several
    sessions, or a pytest cassette) serves the k-th connection with the k-th
    recorded one, closed (or dropped) as it was recorded, so a client that
    reconnects goes on with the next; --once then exits after as many
    connections as were recorded.
    """
    from ..replay.server import load_script_from_db, load_scripts

    if (recording is None) == (not session_refs):
        raise click.UsageError("give a RECORDING file or --session SESSION (with --db), not both")
    try:
        scripts = (
            load_scripts(recording) if recording is not None else [load_script_from_db(db, r) for r in session_refs]
        )
    except RtproxyError as e:
        where = f" (in {db})" if recording is None and "no session" in str(e) else ""
        raise InputError(f"{e}{where}") from e
    except sqlite3.Error as e:
        raise InputError(f"cannot read database {db}: {e}") from e
    report = asyncio.run(_serve(scripts, host, port, pace, speed, match, once, tls))
    _say(report.format())
    if report_path is not None:
        try:
            report_path.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as e:
            raise InputError(f"cannot write the report to {report_path}: {e.strerror or e}") from e
    return 0 if report.ok else 1


def _load_side(ref: str) -> tuple[str, dict[str, Any], list[Frame]]:
    """(name, session, frames) of a JSONL file or DB#SESSION."""
    from ..recording import read_recording

    if "#" in ref and not Path(ref).exists():
        db, _, session_ref = ref.rpartition("#")
        with open_store(db) as store:
            sid = resolve_session(store, session_ref)
            return f"{db}#{sid}", store.session(sid), list(store.frames(sid))
    try:
        rec = read_recording(ref)
    except RtproxyError as e:
        raise InputError(str(e)) from e
    return ref, rec.session, rec.frames


def ignore_help() -> str:
    from ..diff import ALIASES, IGNORABLE

    aliases = {v: k for k, v in ALIASES.items()}
    return "; ".join(
        f"{k}{'/' + aliases[k] if k in aliases else ''}: {v.split(' (alias')[0]}" for k, v in IGNORABLE.items()
    )


IGNORE_CHOICES = ["wording", "timing", "latency", "usage", "cost", "ids", "audio", "errors", "tools", "model"]


@click.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the comparison as JSON (sections, differences, both sides)."
)
@click.option(
    "--ignore",
    "ignore",
    multiple=True,
    type=click.Choice(IGNORE_CHOICES),
    help="Leave out what a migration is expected to change (repeatable; still shown, marked ~): " + ignore_help() + ".",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=100.0,
    show_default=True,
    help="A turn's latency change below this many milliseconds is no difference.",
)
@click.option(
    "--latency-pct",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Nor one below this percentage of A's latency.",
)
def diff(a: str, b: str, as_json: bool, ignore: tuple[str, ...], latency_ms: float, latency_pct: float) -> int:
    """Compare two sessions by meaning, across APIs; exit 1 if they differ.

    A and B are JSONL recordings or DB#SESSION (e.g. rtproxy.db#latest), of
    any API: a Realtime recording compares with a GPT-Live one. Compared:
    the session's model; the turns aligned (what the user and the assistant
    said, case, spacing and punctuation aside; a speaker's consecutive turns
    as one), each assistant turn's latency
    (a difference only past both --latency-ms and --latency-pct), audio
    duration and interruption; the tools run, with their arguments and
    outputs (a GPT-Live delegation counts as the functions its backend ran);
    cost units (tokens, seconds: units only one side has are named); errors;
    and, when both sides are Realtime, the client events in order (ids
    ignored, audio by duration, not chunking).

    The report shows A and B side by side: = same, ~ same by meaning or
    ignored, ≠ a difference. Exit 0 when the same, 1 when different, 2 on
    bad input.
    """
    from ..diff import Options, diff_frames

    options = Options(frozenset(ignore), latency_ms=latency_ms, latency_pct=latency_pct)
    result = diff_frames(_load_side(a), _load_side(b), options)
    if as_json:
        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    else:
        click.echo(result.format())
    return 0 if result.same else 1


def register(group: click.Group) -> None:
    """Add this module's commands to the `rtproxy` group."""
    group.add_command(replay)
    group.add_command(diff)
