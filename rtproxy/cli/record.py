"""`rtproxy proxy` and `rtproxy sessions`: recording, and the list of what was recorded."""

from __future__ import annotations

import click
import orjson

from . import db_option, open_store


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


@click.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as a JSON array.")
def sessions(db: str, as_json: bool) -> None:
    """List recorded sessions, newest first.

    Columns: id, start (UTC), duration, model, dialect, status, events
    (client+server), bytes, label.
    """
    with open_store(db) as store:
        rows = store.sessions()
    if as_json:
        for row in rows:
            for key in ("request_headers", "response_headers"):
                if isinstance(row.get(key), str):
                    row[key] = orjson.loads(row[key])
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo(f"no sessions in {db}")
        return
    header = ("ID", "START", "DURATION", "MODEL", "DIALECT", "STATUS", "EVENTS", "BYTES", "LABEL")
    table = [header]
    for r in rows:
        events = (r.get("client_events") or 0) + (r.get("server_events") or 0)
        nbytes = (r.get("client_bytes") or 0) + (r.get("server_bytes") or 0)
        status = r["status"] or "-"
        if r.get("unrecorded"):
            status += f" ({r['unrecorded']} unrecorded)"
        table.append(
            (
                r["id"],
                (r["started_at"] or "")[:19].replace("T", " "),
                _duration(r.get("duration")),
                r.get("model") or "-",
                r.get("dialect") or "-",
                status,
                str(events),
                _size(nbytes),
                r.get("label") or "",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def register(group: click.Group) -> None:
    group.add_command(sessions)
