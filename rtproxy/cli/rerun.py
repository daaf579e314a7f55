"""`rtproxy rerun`: a recorded conversation played, as its client, against a new model; then diffed with the original.

The planning is pure (:mod:`rtproxy.replay.rerun`), the playing an I/O shell around the recording proxy
(:mod:`rtproxy.replay.rerun_client`); this module reads the inputs, prints, and picks the exit code: 0 the same
meaning, 1 a difference, a divergence or a timeout, 2 bad usage or input.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
import orjson

from ..errors import RtproxyError
from ..protocols.secrets import redact_url
from ..protocols.wire import Frame
from . import InputError, db_option, file_errors, open_store, resolve_session
from .replay import IGNORE_CHOICES, ignore_help

if TYPE_CHECKING:
    from ..replay.rerun import Plan

Side = tuple[str, dict[str, Any], list[Frame]]


@dataclass
class Original:
    """What RECORDING names: its connections in order (one for DB#SESSION), and notes on the linked sessions a
    rerun leaves out (a GPT-Live primary's sidebands)."""

    name: str
    connections: list[Side]
    notes: list[str] = field(default_factory=list)


SIDEBAND_NOTE = (
    "not rerun: a GPT-Live sideband watches its primary's session (on the new server the primary's rerun is a new "
    "session, compared without it)"
)


def load_original(ref: str) -> Original:
    """The connections of a JSONL recording (all of them, in order), or the one session DB#SESSION names."""
    from ..recording import read_connections, session_header

    if "#" in ref and not Path(ref).exists():
        db, _, session_ref = ref.rpartition("#")
        if not Path(db).exists():
            raise InputError(f"{db}: no such database (RECORDING is a JSONL file or DB#SESSION)")
        with open_store(db) as store:
            sid = resolve_session(store, session_ref)
            name = f"{db}#{sid}"
            side = (name, session_header(store.session(sid)), list(store.frames(sid)))
            notes = []
            for row in store.linked_sessions(sid):
                if row.get("relation") == "primary":
                    raise InputError(
                        f"{name}: a GPT-Live {side[1].get('variant') or 'sideband'} is not rerun by "
                        f"itself: rerun its primary, {db}#{row['id']}"
                    )
                notes.append(f"{row.get('relation') or 'linked'} session {row['id']} {SIDEBAND_NOTE}")
            return Original(name, [side], notes)
    try:
        recs = read_connections(ref)
    except RtproxyError as e:
        raise InputError(str(e)) from e
    return Original(ref, [(ref, r.session, r.frames) for r in recs])


@dataclass
class Chosen:
    """A connection to rerun: its number in the recording (1-based), the original and its plan."""

    number: int
    side: Side
    plan: Plan
    label: str


def choose(
    original: Original, connection: int | None, label: str | None, model: str | None, instructions: str | None
) -> tuple[list[Chosen], list[str]]:
    """The connections to rerun (every one, or the --connection K-th) with their plans and labels; notes on those
    left out. A recording of one connection (or --connection K) that cannot be rerun is bad input (exit 2)."""
    from ..protocols import Api
    from ..replay.rerun import PlanError, build_plan, detect_api

    conns = original.connections
    several = len(conns) > 1
    if connection is not None and connection > len(conns):
        n = len(conns)
        raise InputError(f"{original.name}: --connection {connection}, but it has {n} connection{'s' * (n != 1)}")
    numbers = [connection] if connection is not None else list(range(1, len(conns) + 1))
    base = label if label is not None else f"rerun of {_short_name(original.name)}"
    chosen: list[Chosen] = []
    notes = list(original.notes)
    for k in numbers:
        name, session, frames = conns[k - 1]
        if several and len(numbers) > 1:
            api, variant = detect_api(session, frames)
            if api is Api.LIVE and variant == "sideband":
                notes.append(f"connection {k} {SIDEBAND_NOTE}")
                continue
        try:
            plan = build_plan(session, frames, model=model, instructions=instructions)
        except PlanError as e:
            if len(numbers) == 1:
                raise InputError(f"{original.name}: {f'connection {k}: ' if several else ''}{e}") from e
            notes.append(f"connection {k} not rerun: {e}")
            continue
        chosen.append(
            Chosen(
                k,
                (f"{name} (connection {k})" if several else name, session, frames),
                plan,
                f"{base} (connection {k})" if several else base,
            )
        )
    if not chosen:
        raise InputError(f"{original.name}: no connection can be rerun ({'; '.join(notes)})")
    return chosen, notes


def _short_name(name: str) -> str:
    return Path(name).name if "#" not in name else name


def load_tools(path: Path) -> dict[str, Any]:
    """The public functions a --tools file defines, by name."""
    spec = importlib.util.spec_from_file_location(f"rtproxy_rerun_tools_{abs(hash(str(path)))}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot load as Python (--tools takes a .py file)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file (--tools)") from e
    except SyntaxError as e:
        raise InputError(f"{path}:{e.lineno}: syntax error: {e.msg}") from e
    except Exception as e:  # the user's module failed while loading: one line, not its traceback
        raise InputError(f"{path}: loading the --tools file raised {type(e).__name__}: {e}") from e
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module.__name__
    }


def compare(original: Side, new: Side, ignore: tuple[str, ...]) -> Any:
    """The diff of the original against the rerun (the one call into rtproxy.diff): by meaning, `ignore` as
    `rtproxy diff --ignore` takes it; timing is never compared (another server, another moment)."""
    from ..diff import Options, diff_frames

    return diff_frames(original, new, Options(frozenset(ignore) | {"timing"}))


def _say_err(text: str) -> None:
    click.echo(text, err=True)
    sys.stderr.flush()


@click.command()
@click.argument("recording", metavar="RECORDING")
@click.option(
    "--upstream",
    required=True,
    help="The server to play against: https://api.openai.com, an Azure resource, a gateway (http(s)/ws(s)).",
)
@click.option(
    "--model",
    help="The model to ask for instead of the recorded one (replaces model= in the query; GPT-Live: "
    "session.start's model).",
)
@click.option(
    "--instructions",
    "instructions_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A text file whose content replaces the session's instructions in session.update (GPT-Live: session.start).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Pace of the recorded pauses and audio: 2 is twice as fast; 0 sends as fast as the server allows.",
)
@click.option(
    "--tools",
    "tools_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Python file of functions named like the tools (def get_weather(**arguments) -> str | dict): they "
    "answer calls the new model makes differently from the recording.",
)
@db_option
@click.option("--label", help="Label of the new session (default: 'rerun of RECORDING').")
@click.option(
    "--ignore",
    multiple=True,
    type=click.Choice(IGNORE_CHOICES),
    help="Leave out of the verdict what the change is expected to change, as `rtproxy diff --ignore` (repeatable; "
    "timing is never compared): " + ignore_help() + ".",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the server at any one point before the rerun stops.",
)
@click.option(
    "--connection",
    type=click.IntRange(min=1),
    help="Of a recording of several connections, rerun only the K-th (1-based; default: every one, in order).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome and the diff as JSON.")
def rerun(
    recording: str,
    upstream: str,
    model: str | None,
    instructions_path: Path | None,
    speed: float,
    tools_path: Path | None,
    db: str,
    label: str | None,
    ignore: tuple[str, ...],
    timeout: float,
    connection: int | None,
    as_json: bool,
) -> int:
    """Play a recorded conversation against a (new) model and diff the result with the original.

    RECORDING is a JSONL file or DB#SESSION of a Realtime session (GA or
    beta), a Responses WebSocket one (each response.create waits for the
    response before to complete) or a GPT-Live primary. The rerun connects to
    --upstream like the recorded client did (same path and query, recorded
    headers minus secrets, the key from $OPENAI_API_KEY) and sends the
    recorded client events in order: audio at the recorded pace, text items,
    session.update (GPT-Live: session.start), response.create; before each it
    waits for what the recorded client had seen (each response it waited for
    to finish; GPT-Live: the events it had just received), at most --timeout
    seconds.

    \b
    Function calls (GPT-Live: a delegation's backend calls): the same
    function with the same arguments gets the recorded output; another call
    stops the rerun (exit 1) unless --tools has a handler for it. A GPT-Live
    client delegation gets the recorded reply; one the recording never had
    needs a --tools function named `delegation` (called with transcript=).
    Ids the server makes are mapped to this run's.

    \b
    A recording of several connections: each is rerun in order, as a new
    session of its own labelled '... (connection K)', and diffed with its
    original (exit 1 if any differs); --connection K reruns only the K-th. A
    GPT-Live sideband is not rerun (it watches its primary's session, which
    the new server does not have): its primary is, and the output says so.

    The new session is recorded in --db through the normal recording proxy
    and labelled; then `rtproxy diff` of the original against it is printed
    (--model and --instructions are applied to the original first, so only
    what the model did differently shows). Exit 0: same meaning; 1: a
    difference, a divergence or a timeout; 2: bad usage or input.
    """
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise InputError(f"--upstream must be an http(s) or ws(s) URL, got {redact_url(upstream)!r}")
    api_key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not api_key:
        raise InputError("OPENAI_API_KEY is not set: rerun sends it to --upstream as the API key")
    instructions = None
    if instructions_path is not None:
        with file_errors(str(instructions_path), "cannot read --instructions"):
            instructions = instructions_path.read_text(encoding="utf-8").rstrip("\n")
    handlers = load_tools(tools_path) if tools_path is not None else {}
    original = load_original(recording)
    chosen, notes = choose(original, connection, label, model, instructions)

    from ..replay.rerun_client import rerun_each

    with file_errors(db, "cannot record to"):
        results = asyncio.run(
            rerun_each(
                [(c.plan, c.label) for c in chosen],
                upstream=upstream,
                db=db,
                api_key=api_key,
                speed=speed,
                timeout=timeout,
                handlers=handlers,
                progress=_say_err,
            )
        )
    outcomes = []
    for c, result in zip(chosen, results, strict=True):
        if result.session_id is None:
            raise InputError(f"the rerun recorded no session in {db}")
        with open_store(db) as store:
            new_session = store.session(result.session_id)
            new_frames = list(store.frames(result.session_id))
        name, session, _ = c.side
        expected = (name, {**session, "model": c.plan.model}, list(c.plan.expected))
        diff = compare(expected, (f"{db}#{result.session_id}", new_session, new_frames), ignore)
        outcomes.append((c, result, diff))
    several = len(original.connections) > 1
    if as_json:
        out = (
            _json_outcome(outcomes[0], original.name, upstream, db)
            if len(outcomes) == 1 and not several
            else {
                "recording": original.name,
                "upstream": redact_url(upstream),
                "db": db,
                "connections": [_json_outcome(o, original.name, upstream, db) for o in outcomes],
                "complete": all(r.complete for _, r, _ in outcomes),
                "same": all(d.same for _, _, d in outcomes),
            }
        )
        out["notes"] = notes
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        model_note = f" with model {model}" if model else ""
        click.echo(f"rtproxy rerun: {original.name} against {redact_url(upstream)}{model_note}")
        for note in notes:
            click.echo(f"  {note}")
        for c, result, diff in outcomes:
            if several:
                click.echo(f"connection {c.number} of {len(original.connections)}:")
            _print_outcome(c, result, diff, db)
        if len(outcomes) > 1:
            differ = [str(c.number) for c, r, d in outcomes if not (r.complete and d.same)]
            verdict = f"connection{'s' * (len(differ) > 1)} {', '.join(differ)} differ" if differ else "all the same"
            click.echo(f"rtproxy rerun: {len(outcomes)} connections rerun: {verdict}")
    return 0 if all(r.complete and d.same for _, r, d in outcomes) else 1


def _json_outcome(outcome: tuple[Chosen, Any, Any], name: str, upstream: str, db: str) -> dict[str, Any]:
    c, result, diff = outcome
    return {
        "recording": name,
        "connection": c.number,
        "upstream": redact_url(upstream),
        "db": db,
        "session": result.session_id,
        "label": c.label,
        "turns": result.turns,
        "played": result.played,
        "complete": result.complete,
        "stopped": result.stopped.format() if result.stopped else None,
        "handled": [{"call": call.shown(), "output": o} for call, o in result.handled],
        "server_errors": result.server_errors,
        "same": diff.same,
        "diff": diff.to_json(),
    }


def _print_outcome(c: Chosen, result: Any, diff: Any, db: str) -> None:
    click.echo(f"  recorded as {db}#{result.session_id} ({c.label!r}); {result.played} of {result.turns} turns played")
    for call, output in result.handled:
        shown = output if len(output) <= 120 else output[:119] + "…"
        click.echo(f"  --tools answered {call.shown()} -> {' '.join(shown.split())}")
    for error in result.server_errors:
        click.echo(f"  the server sent an error: {error}")
    if result.stopped is not None:
        click.echo(f"  stopped at {result.stopped.format()}")
    click.echo(diff.format())


def register(group: click.Group) -> None:
    """Add this module's commands to the `rtproxy` group."""
    group.add_command(rerun)
