"""`--otlp` of `rtproxy export` and `rtproxy proxy`: sessions as OpenTelemetry traces (:mod:`rtproxy.telemetry`).

OpenTelemetry is imported only here, only when ``--otlp`` is given.
"""

from __future__ import annotations

import click

from . import InputError, open_store, resolve_session


def check_endpoint(url: str | None) -> None:
    """A one-line error for an ``--otlp`` URL that is no http(s) URL."""
    if url:
        from ..telemetry import traces_url

        try:
            traces_url(url)
        except ValueError as e:
            raise InputError(str(e)) from e


def export_trace(db: str, ref: str, otlp: str | None, content: bool, others: tuple[str | None, ...] = ()) -> None:
    """`rtproxy export SESSION --otlp [URL]`: send one recorded session; a collector that refuses is exit 2."""
    if otlp is None:
        raise InputError("--otlp-content needs --otlp")
    if any(other is not None for other in others):
        raise InputError("export needs exactly one of -o FILE.jsonl, --audio DIR or --otlp URL")
    url = otlp or None
    check_endpoint(url)
    from ..telemetry import ExportError, export_session, where

    with open_store(db) as store:
        sid = resolve_session(store, ref)
        row = store.session(sid)
        frames = list(store.frames(sid))
    try:
        built = export_session(row, frames, url, content=content)
    except ExportError as e:
        raise InputError(f"cannot send session {sid} to {where(url)}: {e}") from e
    left = f" ({built.left_out} left out)" if built.left_out else ""
    click.echo(f"sent session {sid}: {built.spans} spans{left}, trace {built.trace_id}, to {where(url)}")
