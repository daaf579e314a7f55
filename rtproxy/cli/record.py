"""`rtproxy proxy` and `rtproxy sessions`: recording, and the list of what was recorded."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import sqlite3
import sys
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import click
import orjson

from ..errors import RtproxyError
from ..protocols.secrets import redact_url
from . import InputError, db_option, file_errors, on_stop_signals, open_store, os_error_line
from .render import api_label


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _say(text: str = "") -> None:
    click.echo(text)
    sys.stdout.flush()


class _OneLine(logging.Handler):
    """Log records as one plain line on stderr: a client's malformed request is no traceback in our log."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().removeprefix("rtproxy: ")
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            message += f": {type(exc).__name__}: {exc}" if str(exc) else f": {type(exc).__name__}"
        click.echo(f"rtproxy: {message}", err=True)


def _setup_logging() -> None:
    handler = _OneLine(logging.WARNING)
    for name in ("rtproxy", "aiohttp"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.WARNING)


def _banner(host: str, port: int, tls: bool, upstream: str, db: str, cert: Any, token: bool) -> None:
    http = "https" if tls else "http"
    ws = "wss" if tls else "ws"
    shown = f"[{host}]" if ":" in host else host
    base = f"{http}://{shown}:{port}"
    wsbase = f"{ws}://{shown}:{port}"
    _say(f"rtproxy: listening on {wsbase} (and {base} for REST), relaying to {redact_url(upstream)}")
    _say(f"rtproxy: recording to {os.path.abspath(db)}")
    _say("Point your client here (one setting):")
    _say(f'  openai-python   OPENAI_BASE_URL={base}/v1   or  websocket_base_url="{wsbase}/v1"')
    _say(f'  openai-agents   model_config={{"url": "{wsbase}/v1/realtime?model=gpt-realtime"}}')
    _say(f'  browser         new WebSocket("{wsbase}/v1/realtime?model=gpt-realtime", [...])')
    _say(f"  Azure           --upstream https://RESOURCE.openai.azure.com, then {wsbase}/openai/realtime?…")
    if tls:
        _say(f"  Node (wss only) NODE_EXTRA_CA_CERTS={cert} node app.js  with baseURL {base}/v1")
    else:
        _say("  Node SDK        needs wss://: restart with --tls")
    if token:
        _say("Access token required: header X-Rtproxy-Token, query rtproxy_token=, or subprotocol rtproxy-token.TOKEN")
    _say("Ctrl-C stops (open sessions are closed with 1001 and flushed).")


async def _serve(
    host: str,
    port: int,
    upstream: str,
    db: str,
    tls: bool,
    label: str | None,
    auth_token: str | None,
    connect_timeout: float,
    portable: bool,
    otlp: str | None = None,
    otlp_content: bool = False,
) -> None:
    from aiohttp import web

    from ..record.proxy import Proxy
    from ..store import Recorder

    def overflow(session_id: str) -> None:
        click.echo(
            f"rtproxy: WARNING: the recorder cannot keep up; frames of session {session_id} are forwarded "
            "but not recorded (the session will be marked)",
            err=True,
        )

    def failed(message: str) -> None:
        click.echo(f"rtproxy: WARNING: {message}", err=True)

    _setup_logging()
    ssl_ctx, cert = None, None
    if tls:  # before the database is touched: a certificate that cannot be made leaves nothing behind
        from ..record.tls import server_context

        try:
            ssl_ctx, cert = server_context()
        except OSError as e:
            raise InputError(f"cannot prepare the TLS certificate: {os_error_line(e)}") from e
    with file_errors(db, "cannot record to"):
        recorder = Recorder(db, on_overflow=overflow, on_error=failed, portable=portable)
    if recorder.interrupted:
        _say(f"rtproxy: marked {recorder.interrupted} session(s) left open by a stopped proxy as interrupted")
    try:
        with file_errors(db, "cannot start the recorder for"):
            recorder.start()
    except InputError:
        with suppress(RtproxyError, OSError, sqlite3.Error):  # the error worth reporting is the first one
            recorder.close()
        raise
    proxy = Proxy(recorder, upstream=upstream, label=label, auth_token=auth_token, connect_timeout=connect_timeout)
    shipper = None
    if otlp is not None:
        from ..telemetry import SessionShipper

        shipper = SessionShipper(db, otlp or None, content=otlp_content, flush=recorder.flush, warn=failed)
        proxy.on_session_end = shipper.submit
    runner = web.AppRunner(proxy.make_app(), handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx)
        await site.start()
    except OSError as e:
        await runner.cleanup()
        recorder.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sockets = getattr(site._server, "sockets", None) or ()
    bound = sockets[0].getsockname()[1] if sockets else port
    if not _is_loopback(host):
        click.echo(
            f"rtproxy: WARNING: listening on {host}, reachable from other machines: anyone who can reach it "
            "uses your clients' upstream credentials" + ("" if auth_token else "; consider --auth-token"),
            err=True,
        )
    # Everything built so far (aiohttp, the app, the recorder) lives as long as the process: keep it out of
    # the collector's scans so a full collection during a conversation stays short.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    on_stop_signals(loop, stop.set, portable)  # before the banner: whoever reads it may signal at once
    _banner(host, bound, tls, upstream, db, cert, auth_token is not None)
    try:
        await stop.wait()
    finally:
        _say("rtproxy: stopping: closing open sessions (1001) and flushing the recorder")
        await proxy.shutdown()
        await runner.cleanup()
        if shipper is not None:  # before the recorder closes: it waits for the writer's commits
            await asyncio.to_thread(shipper.close, 5.0)
        recorder.close()
        if recorder.stats.dropped:
            click.echo(f"rtproxy: WARNING: {recorder.stats.dropped} frames were forwarded but not recorded", err=True)
        _say(f"rtproxy: stopped; {recorder.stats.written} frames recorded")


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback warns: the proxy forwards your users' credentials.",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (printed on start).",
)
@click.option(
    "--upstream",
    default="https://api.openai.com",
    show_default=True,
    help="Server to relay to: http(s) maps to ws(s). Azure: https://RESOURCE.openai.azure.com.",
)
@db_option
@click.option(
    "--tls",
    is_flag=True,
    help="Serve wss:// with a certificate from rtproxy's local CA for localhost/127.0.0.1/::1 (the Node SDK "
    "needs it; trust ~/.rtproxy/tls/ca.pem).",
)
@click.option(
    "--portable",
    is_flag=True,
    envvar="RTPROXY_PORTABLE",
    help="Use the recorder path every OS has (batches to the writer over a loopback socket, plain signal "
    "handlers) instead of the fast POSIX one (a pipe written from the event loop); the default on Windows. "
    "Env: RTPROXY_PORTABLE=1. The writer's CPU priority is the OS's either way (RTPROXY_WRITER_PRIORITY=low: "
    "nice 19, as on macOS); through a burst's first 3 s it takes at most 20% of a core "
    "(RTPROXY_WRITER_BURST_SHARE=1: no limit).",
)
@click.option("--label", help="A label stored with every session recorded by this run.")
@click.option(
    "--auth-token",
    envvar="RTPROXY_AUTH_TOKEN",
    help="Require this token from clients (X-Rtproxy-Token header, rtproxy_token= query, or "
    "rtproxy-token.TOKEN subprotocol). Env: RTPROXY_AUTH_TOKEN.",
)
@click.option(
    "--connect-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds to wait for the upstream's handshake before answering 504.",
)
@click.option(
    "--otlp",
    metavar="[URL]",
    is_flag=False,
    flag_value="",
    help="Send each session as an OpenTelemetry trace over OTLP/HTTP when it ends (off the forwarding path) "
    "to URL; bare --otlp: where OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT says.",
)
@click.option(
    "--otlp-content", is_flag=True, help="Put text, transcripts and tool arguments/outputs in the traces (cut short)."
)
def proxy(
    host: str,
    port: int,
    upstream: str,
    db: str,
    tls: bool,
    label: str | None,
    auth_token: str | None,
    connect_timeout: float,
    portable: bool,
    otlp: str | None,
    otlp_content: bool,
) -> None:
    """Run the recording proxy.

    Every WebSocket frame and REST call your client sends to this address is
    forwarded unchanged to --upstream, and recorded, with its direction and
    time, to the SQLite database --db. API keys are never written to disk.
    """
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise InputError(f"--upstream must be an http(s) or ws(s) URL, got {redact_url(upstream)!r}")
    if otlp:
        from .otlp import check_endpoint

        check_endpoint(otlp)
    try:
        portable = portable or os.name == "nt"
        asyncio.run(
            _serve(host, port, upstream, db, tls, label, auth_token, connect_timeout, portable, otlp, otlp_content)
        )
    except RtproxyError as e:
        raise InputError(str(e)) from e


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


def _link(row: dict[str, Any], children: dict[str, list[str]]) -> str:
    """A session's LINK cell: ``-> PRIMARY`` for a sideband or fork, ``<- A, B`` for the sessions linked to it."""
    if row.get("linked_to"):
        return f"-> {row['linked_to']}"
    linked = children.get(row["id"])
    return f"<- {', '.join(linked)}" if linked else ""


@click.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as a JSON array.")
@click.option(
    "--api",
    type=click.Choice(["realtime", "live", "responses", "unknown"]),
    help="Only sessions of this WebSocket API.",
)
def sessions(db: str, as_json: bool, api: str | None) -> None:
    """List recorded sessions, newest first.

    Columns: id, start (UTC), duration, model, API/variant (realtime/beta,
    realtime/ga, live/primary, live/sideband, live/fork, responses, unknown),
    status, events (client+server), bytes, label, and LINK when a session is
    linked to another (a Live sideband "-> its primary", a primary "<- its
    sidebands"). --json has api_session_id, linked_to and linked (the ids of
    the sessions linked to it both ways).
    """
    with open_store(db) as store:
        rows = store.sessions(api=api)
        costs = {row["id"]: store.session_cost(row["id"], row) for row in rows}
    children: dict[str, list[str]] = {}
    for row in reversed(rows):
        if row.get("linked_to"):
            children.setdefault(row["linked_to"], []).append(row["id"])
    for row in rows:
        row["linked"] = ([row["linked_to"]] if row.get("linked_to") else []) + children.get(row["id"], [])
    if as_json:
        for row in rows:
            for key in ("request_headers", "response_headers"):
                if isinstance(row.get(key), str):
                    row[key] = orjson.loads(row[key])
            row["cost"] = costs[row["id"]].total.to_json()
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo(f"no {api + ' ' if api else ''}sessions in {db}")
        return
    header = ("ID", "START", "DURATION", "MODEL", "API", "STATUS", "EVENTS", "BYTES", "COST", "LABEL", "LINK")
    table: list[tuple[str, ...]] = [header]
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
                api_label(r),
                status,
                str(events),
                _size(nbytes),
                costs[r["id"]].total.brief(),
                r.get("label") or "",
                _link(r, children),
            )
        )
    if not children and not any(r.get("linked_to") for r in rows):
        table = [line[:-1] for line in table]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def register(group: click.Group) -> None:
    group.add_command(proxy)
    group.add_command(sessions)
