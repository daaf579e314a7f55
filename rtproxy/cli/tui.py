"""`rtproxy tui [SESSION] [--db …]`: the Textual browser (Textual is imported only when it runs)."""

from __future__ import annotations

import click

from . import db_option, open_store, resolve_session


def register(group: click.Group) -> None:
    """Add this module's commands to the `rtproxy` group."""
    group.add_command(tui)


@click.command()
@click.argument("session", required=False)
@db_option
def tui(session: str | None, db: str) -> None:
    """Browse sessions, follow live ones, and listen to them in a terminal UI.

    \b
    With SESSION (an id, a unique prefix, or `latest`), open that session;
    without, the table of sessions. `?` shows every key; ctrl+p the command palette.
    """
    with open_store(db) as store:
        sid = resolve_session(store, session) if session is not None else None
    from ..tui.app import make_app

    make_app(db, sid).run()
