"""The in-memory event index behind the Events tab, and its filtered views.

Pure: no Textual, no SQL. An :class:`EventIndex` holds one compact tuple per
event, ``(seq, t, direction, type, item_id, response_id, size)``, in seq
order. A :class:`EventView` is what the list shows for one
:class:`EventFilter`: a run of rows per display line, so that a stream of
deltas and audio appends between two other events is one line ("×120")
until the user expands it.
A 400k-event session is 400k tuples here and as many display lines as the
filter leaves; the widget renders only the lines on screen.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final

from ..cli.render import collapsible

#: One event, as the index keeps it.
Row = tuple[int, float, str, str | None, str | None, str | None, int]

SEQ: Final = 0
T: Final = 1
DIRECTION: Final = 2
TYPE: Final = 3
ITEM_ID: Final = 4
RESPONSE_ID: Final = 5
SIZE: Final = 6


def is_run_type(event_type: str | None) -> bool:
    """Streamed events (``*.delta``, audio appends) that fold into runs, as in `rtproxy show --events`."""
    return event_type is not None and collapsible(event_type)


@dataclass(frozen=True)
class EventFilter:
    """What the Events tab shows.

    ``types``: globs separated by spaces or commas (``response.*``); a glob
    starting with ``-`` excludes. ``direction``: ``client``, ``server`` or
    None. ``ids``: an item or response id (or a prefix of one). ``seqs``: the
    events a free-text search matched, None when there is no search.
    """

    types: str = ""
    direction: str | None = None
    ids: str = ""
    seqs: frozenset[int] | None = None
    collapse: bool = True

    @property
    def is_empty(self) -> bool:
        return not self.types.strip() and self.direction is None and not self.ids.strip() and self.seqs is None


_SPLIT = re.compile(r"[\s,]+")


@dataclass
class _TypeMatcher:
    include: list[str]
    exclude: list[str]
    cache: dict[str | None, bool] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> _TypeMatcher:
        globs = [g for g in _SPLIT.split(text.strip()) if g]
        include = [g for g in globs if not g.startswith("-")]
        exclude = [g[1:] for g in globs if g.startswith("-") and len(g) > 1]
        return cls(include, exclude)

    def __call__(self, event_type: str | None) -> bool:
        hit = self.cache.get(event_type)
        if hit is None:
            name = event_type or "(binary)"
            hit = (not self.include or any(fnmatch.fnmatchcase(name, g) for g in self.include)) and not any(
                fnmatch.fnmatchcase(name, g) for g in self.exclude
            )
            self.cache[event_type] = hit
        return hit


class EventIndex:
    """All events of a session as compact rows, appendable while it records."""

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        self.rows: list[Row] = []
        self.append(list(rows))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def last_seq(self) -> int:
        return self.rows[-1][SEQ] if self.rows else -1

    def append(self, rows: Sequence[Row]) -> int:
        """Add rows in seq order; a chunk that starts at or before the last seq has its old rows skipped."""
        last = self.last_seq
        if rows and rows[0][SEQ] > last:
            self.rows.extend(rows)  # the usual case: a chunk from the store, in seq order, after what we have
            return len(rows)
        added = 0
        for row in rows:
            if row[SEQ] > last:
                self.rows.append(row)
                last = row[SEQ]
                added += 1
        return added

    def position(self, seq: int) -> int:
        """The row index of the first event with this seq or a later one."""
        return bisect.bisect_left(self.rows, seq, key=itemgetter(SEQ))

    def types(self) -> list[str]:
        return sorted({r[TYPE] for r in self.rows if r[TYPE]})

    def view(self, flt: EventFilter, expanded: frozenset[int] = frozenset(), end: int | None = None) -> EventView:
        """The lines showing rows[:end] under a filter (``end``: safe to call from a worker while rows grow)."""
        view = EventView(flt, expanded)
        view.extend(self.rows, 0, end)
        return view


class EventView:
    """The display lines of an index under a filter: ``starts[i]`` is the row
    index of line i, ``counts[i]`` how many rows (a collapsed run) it stands
    for, ``heads[i]`` the seq of the first event of the run it belongs to
    (-1 when it is not part of a run)."""

    def __init__(self, flt: EventFilter, expanded: frozenset[int] = frozenset()) -> None:
        self.filter = flt
        self.expanded = expanded  # seqs of run heads the user opened
        self.starts = array("l")
        self.counts = array("l")
        self.heads = array("q")
        self._matcher = _TypeMatcher.parse(flt.types)
        self._run_key = False  # inside a run of deltas
        self._runs: dict[str | None, bool] = {}  # type -> folds into runs
        self._run_head = -1

    def __len__(self) -> int:
        return len(self.starts)

    def extend(self, rows: Sequence[Row], offset: int, end: int | None = None) -> int:
        """Take in rows[offset:end] (new rows of the index); the number of lines added.

        The hot loop of a 400k-event session: per-type answers are cached in
        dicts, and the checks of an empty filter are skipped.
        """
        before = len(self.starts)
        flt = self.filter
        match = self._matcher
        direction = flt.direction
        ids = flt.ids.strip()
        seqs = flt.seqs
        collapse = flt.collapse
        filtering = direction is not None or bool(match.include or match.exclude) or bool(ids) or seqs is not None
        runs = self._runs
        starts, counts, heads, expanded = self.starts, self.counts, self.heads, self.expanded
        run_key, run_head = self._run_key, self._run_head
        for i in range(offset, len(rows) if end is None else end):
            row = rows[i]
            typ = row[TYPE]
            if filtering:
                if direction is not None and row[DIRECTION] != direction:
                    continue
                if not match(typ):
                    continue
                if ids and not _id_matches(row, ids):
                    continue
                if seqs is not None and row[SEQ] not in seqs:
                    continue
            is_run = runs.get(typ)
            if is_run is None:
                is_run = runs[typ] = collapse and is_run_type(typ)
            if is_run:
                if not run_key:
                    run_key, run_head = True, row[SEQ]
                elif run_head not in expanded:
                    counts[-1] += 1
                    continue
                starts.append(i)
                counts.append(1)
                heads.append(run_head)
            else:
                run_key, run_head = False, -1
                starts.append(i)
                counts.append(1)
                heads.append(-1)
        self._run_key, self._run_head = run_key, run_head
        return len(self.starts) - before

    def line_of_row(self, row_index: int) -> int:
        """The display line showing a row index: the line of the run holding it, else the nearest before."""
        return max(bisect.bisect_right(self.starts, row_index) - 1, 0)


def _id_matches(row: Row, ids: str) -> bool:
    item, response = row[ITEM_ID], row[RESPONSE_ID]
    return (item is not None and item.startswith(ids)) or (response is not None and response.startswith(ids))
