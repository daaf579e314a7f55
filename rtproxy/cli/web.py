"""`rtproxy tui --web`: the same Textual app in a browser, served by ``textual-serve``.

Each browser tab runs its own ``rtproxy tui`` process (textual-serve starts one per WebSocket); this module
only binds, guards and serves. Loopback by default; any other address needs ``--auth-token``, and then
every request must carry the token (``?token=`` once, which sets a cookie for the page's own requests).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import shlex
import sys
from typing import Any
from urllib.parse import urlsplit

import click

from . import InputError, on_stop_signals

#: The cookie the token sets, so the page's static files and WebSocket carry it.
COOKIE = "rtproxy_tui_token"


def tui_command(db: str, session: str | None) -> str:
    """The shell command textual-serve runs per browser tab: this Python, this rtproxy, the TUI."""
    argv = [sys.executable, "-c", "from rtproxy.cli import entry; entry()", "tui", "--db", db]
    if session is not None:
        argv.append(session)
    return shlex.join(argv)


def check_host(host: str, token: str | None) -> None:
    from .record import _is_loopback

    if not _is_loopback(host) and not token:
        raise InputError(
            f"--host {host} is reachable from other machines: give --auth-token TOKEN (every request must carry it)"
        )


def serve(db: str, session: str | None, host: str, port: int, token: str | None) -> None:
    check_host(host, token)
    try:
        asyncio.run(_serve(db, session, host, port, token))
    except KeyboardInterrupt:
        pass


async def _serve(db: str, session: str | None, host: str, port: int, token: str | None) -> None:

    from aiohttp import web
    from textual_serve.server import Server

    server = Server(tui_command(db, session), host=host, port=port, title="rtproxy")

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            # another site's page in the user's browser may not open the app's WebSocket (and read sessions)
            return web.Response(status=403, text="rtproxy: requests from other sites are refused\n")
        given = request.query.get("token")
        if token is not None:
            ok = any(
                value is not None and hmac.compare_digest(value.encode(), token.encode())
                for value in (given, request.cookies.get(COOKIE))
            )
            if not ok:
                return web.Response(status=401, text="rtproxy: this page needs its token (?token=…)\n")
        # the page's absolute URLs (static files, the WebSocket) as the browser reached us, not the bind address
        server.public_url = f"{request.scheme}://{request.host}"
        response: web.StreamResponse = await handler(request)
        if token is not None and given is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    app = await server._make_app()
    app.on_startup.clear()  # textual-serve's banner: we print our own line
    app.middlewares.append(guard)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sockets = getattr(site._server, "sockets", None) or ()
    bound = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    query = "?token=…" if token else ""
    click.echo(f"rtproxy: serving the TUI on http://{shown}:{bound}/{query} (Ctrl-C stops)")
    sys.stdout.flush()
    stop = asyncio.Event()
    # the shared stop handling: the loop's handlers on POSIX, signal.signal where the loop has none (Windows)
    on_stop_signals(asyncio.get_running_loop(), stop.set, portable=os.name == "nt")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
