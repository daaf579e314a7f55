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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import orjson

from ..errors import RtproxyError
from ..protocols.secrets import redact_url
from ..protocols.wire import Frame
from . import InputError, db_option, file_errors, open_store, resolve_session
from .replay import IGNORE_CHOICES, ignore_help

Side = tuple[str, dict[str, Any], list[Frame]]


def load_original(ref: str) -> Side:
    """(name, session header, frames) of a JSONL recording or DB#SESSION."""
    from ..recording import read_recording, session_header

    if "#" in ref and not Path(ref).exists():
        db, _, session_ref = ref.rpartition("#")
        if not Path(db).exists():
            raise InputError(f"{db}: no such database (RECORDING is a JSONL file or DB#SESSION)")
        with open_store(db) as store:
            sid = resolve_session(store, session_ref)
            return f"{db}#{sid}", session_header(store.session(sid)), list(store.frames(sid))
    try:
        rec = read_recording(ref)
    except RtproxyError as e:
        raise InputError(str(e)) from e
    return ref, rec.session, rec.frames


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
@click.option("--model", help="The model to ask for instead of the recorded one (replaces model= in the query).")
@click.option(
    "--instructions",
    "instructions_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A text file whose content replaces the session's instructions in session.update.",
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
    as_json: bool,
) -> int:
    """Play a recorded conversation against a (new) model and diff the result with the original.

    RECORDING is a JSONL file or DB#SESSION of a Realtime session (GA or beta)
    or a Responses WebSocket one (each response.create waits for the response
    before to complete). The rerun connects to --upstream
    like the recorded client did (same path and query, recorded headers minus
    secrets, the key from $OPENAI_API_KEY) and sends the recorded client
    events in order: audio at the recorded pace, text items, session.update,
    response.create; before each it waits for what the recorded client had
    seen (each response it waited for to finish), at most --timeout seconds.

    \b
    Function calls: the same function with the same arguments gets the
    recorded output; another call stops the rerun (exit 1) unless --tools
    has a handler for it. Ids the server makes are mapped to this run's.

    The new session is recorded in --db through the normal recording proxy
    and labelled; then `rtproxy diff` of the original against it is printed
    (--model and --instructions are applied to the original first, so only
    what the model did differently shows). Exit 0: same meaning; 1: a
    difference, a divergence or a timeout; 2: bad usage or input.
    """
    from ..replay.rerun import PlanError, build_plan

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
    name, session, frames = load_original(recording)
    try:
        plan = build_plan(session, frames, model=model, instructions=instructions)
    except PlanError as e:
        raise InputError(f"{name}: {e}") from e
    label = label if label is not None else f"rerun of {Path(name).name if '#' not in name else name}"

    from ..replay.rerun_client import rerun as play

    with file_errors(db, "cannot record to"):
        result = asyncio.run(
            play(
                plan,
                upstream=upstream,
                db=db,
                label=label,
                api_key=api_key,
                speed=speed,
                timeout=timeout,
                handlers=handlers,
                progress=_say_err,
            )
        )
    if result.session_id is None:
        raise InputError(f"the rerun recorded no session in {db}")
    with open_store(db) as store:
        new_session = store.session(result.session_id)
        new_frames = list(store.frames(result.session_id))
    expected_session = {**session, "model": plan.model}
    diff = compare(
        (name, expected_session, list(plan.expected)), (f"{db}#{result.session_id}", new_session, new_frames), ignore
    )
    if as_json:
        out = {
            "recording": name,
            "upstream": redact_url(upstream),
            "db": db,
            "session": result.session_id,
            "label": label,
            "turns": result.turns,
            "played": result.played,
            "complete": result.complete,
            "stopped": result.stopped.format() if result.stopped else None,
            "handled": [{"call": c.shown(), "output": o} for c, o in result.handled],
            "server_errors": result.server_errors,
            "same": diff.same,
            "diff": diff.to_json(),
        }
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        model_note = f" with model {model}" if model else ""
        click.echo(f"rtproxy rerun: {name} against {redact_url(upstream)}{model_note}")
        click.echo(
            f"  recorded as {db}#{result.session_id} ({label!r}); {result.played} of {result.turns} turns played"
        )
        for call, output in result.handled:
            shown = output if len(output) <= 120 else output[:119] + "…"
            click.echo(f"  --tools answered {call.shown()} -> {' '.join(shown.split())}")
        for error in result.server_errors:
            click.echo(f"  the server sent an error: {error}")
        if result.stopped is not None:
            click.echo(f"  stopped at {result.stopped.format()}")
        click.echo(diff.format())
    return 0 if result.complete and diff.same else 1


def register(group: click.Group) -> None:
    """Add this module's commands to the `rtproxy` group."""
    group.add_command(rerun)
