"""Commands of this face (filled in by the issue that builds it)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to the `rtproxy` group."""
