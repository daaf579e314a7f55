"""`rtproxy redact`: rewrite a recording (a JSONL file or a session in the database) with its content redacted.

A thin shell around :mod:`rtproxy.redact`: frames stream from the file or
the store through the :class:`~rtproxy.redact.Redactor` and back. A file is
replaced atomically (temporary file + rename); a session is rewritten in one
transaction with SQLite's ``secure_delete`` on and the WAL checkpointed, so
the original words and audio do not linger in free pages or the log.
"""

from __future__ import annotations

import os
import sqlite3
import time

import click

from ..errors import RtproxyError
from ..redact import Redactor, redact_frames
from . import InputError, db_option, open_store, resolve_session


def redact_file(path: str, output: str) -> Redactor:
    """Redact the recording at `path` (every connection of it) into `output` (which may be `path` itself)."""
    from ..recording import count_connections, iter_connections, write_connections

    connections = iter_connections(path)
    redactor = Redactor()
    try:
        write_connections(
            output,
            ((session, redact_frames(frames, redactor)) for session, frames in connections),
            several=count_connections(path) > 1,
        )
    except OSError as e:
        raise InputError(f"cannot write {output}: {e.strerror or e}") from e
    return redactor


def redact_session(db: str, ref: str, output: str | None) -> tuple[str, Redactor]:
    """Redact a stored session in place, or into a JSONL file when `output` is given."""
    redactor = Redactor()
    with open_store(db) as writer:  # the rewriting connection; the reader below streams from its own snapshot
        with open_store(db) as reader:
            sid = resolve_session(reader, ref)
            frames = redact_frames(reader.frames(sid), redactor)
            if output is not None:
                from ..recording import write_recording

                try:
                    write_recording(output, reader.session(sid), frames)
                except OSError as e:
                    raise InputError(f"cannot write {output}: {e.strerror or e}") from e
                return sid, redactor
            if reader.session(sid).get("status") == "open":
                raise InputError(
                    f"session {sid} is still being recorded (status open); redact it once it has ended, "
                    "or write a redacted copy with -o"
                )
            try:
                writer.conn.execute("PRAGMA secure_delete=ON")
                writer.replace_frames(sid, frames)
            except sqlite3.Error as e:
                raise InputError(f"cannot rewrite session {sid} in {db}: {e}") from e
        # the reader is closed: its snapshot no longer holds the old pages in the WAL
        if not _empty_wal(writer.conn):
            click.echo(
                f"rtproxy: warning: another process is using {db}, so its write-ahead log may still hold the "
                "original frames until that process lets go (run `rtproxy redact` again then)",
                err=True,
            )
    return sid, redactor


def _empty_wal(conn: sqlite3.Connection, patience: float = 5.0) -> bool:
    """Copy the WAL into the database and truncate it (the old page images are in it), trying again for a while
    when another connection (a recording proxy's writer, a TUI) holds it; True once it is empty."""
    deadline = time.monotonic() + patience
    while True:
        try:
            busy, log, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            busy, log = 1, -1
        if not busy and log <= 0:  # (0, 0, 0): every frame copied and the log cut to nothing
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # another process's transaction: wait for it to end (bounded by `patience`)


def _is_file_ref(target: str) -> bool:
    return target.endswith(".jsonl") or os.path.isfile(target)


@click.command()
@click.argument("target", metavar="FILE.jsonl|SESSION")
@db_option
@click.option("-o", "--output", metavar="OUT.jsonl", help="Write the redacted recording here instead of in place.")
def redact(target: str, db: str, output: str | None) -> None:
    """Redact a recording's content so it can be shared or committed as a fixture.

    \b
    rtproxy redact recordings/call.jsonl             rewrite the file in place
    rtproxy redact recordings/call.jsonl -o safe.jsonl
    rtproxy redact latest                            rewrite a stored session
    rtproxy redact latest -o safe.jsonl              export it redacted, DB untouched

    Instructions, text, transcripts and function arguments/outputs become
    placeholders of the same length (letters and digits as x); audio becomes
    silence of exactly the same length in the session's format. Ids, types,
    timing and the structure of every event are kept: the result still
    imports, shows and replays.
    """
    try:
        if _is_file_ref(target):
            redactor = redact_file(target, output or target)
            where = output or target
            label = f"redacted {target}" + (f" into {output}" if output else " in place")
        else:
            sid, redactor = redact_session(db, target, output)
            where = output or db
            label = f"redacted session {sid}" + (f" into {output}" if output else f" in {db}")
    except RtproxyError as e:
        raise InputError(str(e)) from e
    click.echo(f"{label}: {redactor.summary.describe()}")
    if not redactor.summary.frames:
        click.echo(f"rtproxy: note: {where} holds no frames", err=True)


def register(group: click.Group) -> None:
    """Add this module's commands to the `rtproxy` group."""
    group.add_command(redact)
