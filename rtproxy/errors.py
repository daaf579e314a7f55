"""The exceptions rtproxy raises.

::

    RtproxyError                 anything rtproxy refuses, with a one-line message
    ├── RecordingError           a JSONL recording that cannot be read (file, line)
    ├── SessionNotFound          a SESSION reference that names no session
    ├── StoreError               a database rtproxy cannot use (future schema, not SQLite)
    ├── ReplayError              a recording that cannot be replayed
    └── UpstreamError            the upstream refused or could not be reached

The library raises these; the command line turns each into one line on
stderr and exit code 2 (bad input), never a traceback.
"""

from __future__ import annotations


class RtproxyError(Exception):
    """Base class: the message is one plain line for a person."""


class RecordingError(RtproxyError):
    """A recording file is malformed; names the file and the line."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class SessionNotFound(RtproxyError):
    """A SESSION reference matched no session, or more than one."""

    def __init__(self, ref: str, candidates: list[str], *, ambiguous: bool = False) -> None:
        self.ref = ref
        self.candidates = candidates
        if ambiguous:
            msg = f"session {ref!r} is ambiguous; it matches {', '.join(candidates[:5])}"
        elif candidates:
            msg = f"no session {ref!r}; close matches: {', '.join(candidates[:5])}"
        else:
            msg = f"no session {ref!r}"
        super().__init__(msg)


class StoreError(RtproxyError):
    """The database cannot be used as it is."""


class ReplayError(RtproxyError):
    """A recording cannot be turned into a replay script."""


class UpstreamError(RtproxyError):
    """The upstream server refused the connection or could not be reached."""
