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
@click.option("--web", is_flag=True, help="Serve the TUI in a browser (textual-serve) instead of this terminal.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="With --web: address to listen on; anything but loopback needs --auth-token.",
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="With --web: port (0: any free)."
)
@click.option(
    "--auth-token",
    envvar="RTPROXY_TUI_TOKEN",
    help="With --web: every request must carry this token (open http://HOST:PORT/?token=TOKEN once; a cookie "
    "keeps it). Env: RTPROXY_TUI_TOKEN.",
)
def tui(session: str | None, db: str, web: bool, host: str, port: int, auth_token: str | None) -> None:
    """Browse sessions, follow live ones, and listen to them in a terminal UI.

    \b
    With SESSION (an id, a unique prefix, or `latest`), open that session;
    without, the table of sessions. `?` shows every key; ctrl+p the command palette.
    With --web, the same app in a browser: each tab runs its own.
    """
    with open_store(db) as store:
        sid = resolve_session(store, session) if session is not None else None
    if web:
        from .web import serve

        return serve(db, sid, host, port, auth_token)
    from ..tui.app import make_app

    make_app(db, sid).run()
