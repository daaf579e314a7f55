"""The `rtproxy` command line: one click group, commands in one module per face.

Library errors (:mod:`rtproxy.errors`), click usage errors, and what the OS
or SQLite refuses (an unwritable directory, a damaged database) become one
plain line on stderr, naming the file, and exit code 2; a failed check
(replay mismatch, diff) exits 1. Nobody sees a traceback for their own
mistake or their machine's.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from .. import __version__
from ..errors import RtproxyError
from ..store import Store, default_db_path

F = TypeVar("F", bound=Callable[..., Any])

#: Modules that add commands to the group, each with a `register(group)`.
COMMAND_MODULES = ("record", "inspect", "replay", "tui", "redact", "rerun")


class InputError(click.ClickException):
    """Bad usage or bad input: one line, exit 2."""

    exit_code = 2


def db_option(f: F) -> F:
    """The shared `--db` option (default `$RTPROXY_DB`, else ./rtproxy.db)."""
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False),
        default=default_db_path,
        show_default="$RTPROXY_DB or ./rtproxy.db",
        help="SQLite database of recorded sessions.",
    )(f)


def os_error_line(e: OSError, path: str | None = None) -> str:
    """`PATH: reason` for an OSError, naming the file it is about (its own, else `path`)."""
    where = e.filename if e.filename is not None else path
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    return f"{where}: {reason}" if where is not None else reason


@contextmanager
def file_errors(path: str, doing: str = "cannot use") -> Iterator[None]:
    """Inside: an OSError or sqlite3.Error becomes one line naming `path` (or the OSError's own file), exit 2."""
    try:
        yield
    except sqlite3.Error as e:
        raise InputError(f"{doing} {path}: {e}") from e
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        raise InputError(f"{doing} {os_error_line(e, path)}") from e


@contextmanager
def open_store(db: str, *, create: bool = False) -> Iterator[Store]:
    """A database opened for the block: a one-line error if it cannot be opened, or if SQLite fails while
    the block reads it (a damaged file, a lock held too long)."""
    try:
        store = Store(db, create=create)
    except RtproxyError as e:
        raise InputError(str(e)) from e
    with store:
        try:
            yield store
        except sqlite3.Error as e:
            raise InputError(f"cannot read database {db}: {e}") from e


def resolve_session(store: Store, ref: str) -> str:
    try:
        return store.resolve(ref)
    except RtproxyError as e:
        raise InputError(f"{e} (in {store.path})") from e


def on_stop_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None], portable: bool) -> None:
    """Call `stop` on SIGINT / SIGTERM (and Windows' SIGBREAK, Ctrl-Break).

    The loop's own handlers where it has them (POSIX); otherwise, and on the portable path, plain
    ``signal.signal`` handlers that hand the stop to the loop thread-safely (Windows' proactor loop has no
    ``add_signal_handler``; Python runs the handler in the main thread, and waking the loop's self-pipe ends
    its wait).
    """
    names = ("SIGINT", "SIGTERM", "SIGBREAK")
    signals = [getattr(signal, name) for name in names if hasattr(signal, name)]
    if not portable:
        try:
            for sig in signals:
                loop.add_signal_handler(sig, stop)
            return
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    for sig in signals:
        signal.signal(sig, lambda _sig, _frame: loop.call_soon_threadsafe(stop))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rtproxy")
def main() -> None:
    """Record, inspect and replay sessions of OpenAI's WebSocket APIs: Realtime (beta and GA), GPT-Live and
    the Responses WebSocket mode.

    \b
    Record:   rtproxy proxy              then point your client's base URL at it
    Inspect:  rtproxy sessions | show | export | diff | redact | tui
    Replay:   rtproxy replay FILE.jsonl  a fake server for your tests (any of the three APIs)
    Rerun:    rtproxy rerun FILE.jsonl --upstream URL   the recorded client against a new model

    SESSION arguments take an id, a unique id prefix, or `latest`.
    """


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(main)


def run(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        rv = main.main(args=argv, prog_name="rtproxy", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        return 2
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else "rtproxy"
        click.echo(f"{where}: error: {e.format_message()} (see `{where} --help`)", err=True)
        return 2
    except click.ClickException as e:
        click.echo(f"rtproxy: error: {e.format_message()}", err=True)
        return e.exit_code
    except RtproxyError as e:
        click.echo(f"rtproxy: error: {e}", err=True)
        return 2
    except sqlite3.Error as e:  # a command that did not say which database: still one line
        click.echo(f"rtproxy: error: database error: {e}", err=True)
        return 2
    except BrokenPipeError:
        return 1
    except OSError as e:
        click.echo(f"rtproxy: error: {os_error_line(e)}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(run())


_register()
