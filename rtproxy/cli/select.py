"""Which sessions a command that takes several works on: ids, ``--label``, ``--since``, ``--last`` (read-only)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ..store import Store
from . import InputError, resolve_session

_AGO = re.compile(r"(\d{1,6})\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> str:
    """``--since`` as the ``started_at`` text it compares with: an ISO date or time (UTC, ``2026-11-25``,
    ``2026-11-25T09:16``) or an age (``30m``, ``2h``, ``1d``); InputError otherwise."""
    text = text.strip()
    age = _AGO.fullmatch(text)
    if age:
        then = (now or datetime.now(UTC)) - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
        return then.strftime("%Y-%m-%dT%H:%M:%S.") + f"{then.microsecond // 1000:03d}Z"
    try:
        when = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError as e:
        raise InputError(
            f"--since {text!r}: expected an ISO date or time (2026-11-25T09:00) or an age (30m, 2h, 1d)"
        ) from e
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def select_sessions(
    store: Store, refs: tuple[str, ...], *, label: str | None, since: str | None, last: int | None
) -> list[str]:
    """Session ids, oldest first: the ones named (in their order) or, with none named, every session; then
    only those with `label` and started at `since` or later; then the `last` newest of them."""
    rows = {r["id"]: r for r in store.sessions()}
    if refs:
        ids = list(dict.fromkeys(resolve_session(store, ref) for ref in refs))
    else:
        ids = sorted(rows, key=lambda i: (str(rows[i]["started_at"] or ""), i))
    if label is not None:
        ids = [i for i in ids if rows[i].get("label") == label]
    if since is not None:
        floor = parse_since(since)
        ids = [i for i in ids if str(rows[i]["started_at"] or "") >= floor]
    if last is not None:
        ids = ids[-last:] if last else []
    if not ids:
        raise InputError(
            "no session matches"
            + (f" --label {label!r}" if label is not None else "")
            + (f" --since {since!r}" if since is not None else "")
            + (f" in {store.path}")
        )
    return ids
