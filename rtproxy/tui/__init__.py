"""The Textual face of rtproxy: ``make_app(db_path, session=None)`` builds it (see :mod:`.app`).

Importing this package does not import Textual; :func:`make_app` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import RtproxyApp


def make_app(db_path: str | Path, session: str | None = None, **kwargs: object) -> RtproxyApp:
    from .app import make_app as _make_app

    return _make_app(db_path, session, **kwargs)  # type: ignore[arg-type]
