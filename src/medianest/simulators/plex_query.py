"""How the Plex simulator reads list queries: paging, media-query filters and sorting.

Wire rules followed (NOTES.md 1.3 and 1.5):

* Paging comes from ``X-Plex-Container-Start`` / ``X-Plex-Container-Size``, as headers **or**
  query parameters. ``offset``/``totalSize`` (and the response headers) appear only when
  paging was asked for. Size 0 returns only the count.
* A filter is ``field`` + operator + value where the operator includes the ``=``: on the
  wire ``updatedAt>>=1717000000`` parses as key ``updatedAt>>`` and value ``1717000000``.
  Date fields (``addedAt``, ``updatedAt``) support ``=``, ``!=``, ``>>=`` (strictly after)
  and ``<<=`` (strictly before), with epoch seconds or relative values (``-30d``; units m, h,
  d, w, mon, y). ``updatedAt>=`` is *not* a date operator and ``updatedAt>>==t`` (what
  ``requests`` makes of a ``"updatedAt>>="`` key) has no valid value: both are ignored, as
  PMS silently ignores filters it does not understand.

A listing is computed over a *sequence* (the movies of a section, the episodes of a
library...) whose timestamps grow with the position, so each date filter is a binary search
and the selection is a few position ranges; only title sorting of a filtered selection
needs to look at every selected position (as integers, never as rendered items).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

_RELATIVE = re.compile(r"^-(\d+)(mon|m|h|d|w|y)$")
_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800, "mon": 2_592_000, "y": 31_536_000}
_DATE_FIELDS = ("addedAt", "updatedAt")


@dataclass(frozen=True)
class Paging:
    """The requested window; ``requested`` is False when the client sent no paging at all."""

    start: int = 0
    size: int | None = None
    requested: bool = False


def parse_paging(request: Request, limit: int | None = None) -> Paging:
    def read(name: str) -> int | None:
        raw = request.headers.get(name) or request.query_params.get(name)
        if raw is None or not raw.strip().lstrip("-").isdigit():
            return None
        return max(int(raw), 0)

    start = read("X-Plex-Container-Start")
    size = read("X-Plex-Container-Size")
    if limit is not None:
        size = limit if size is None else min(size, limit)
    return Paging(start or 0, size, start is not None or size is not None)


@dataclass(frozen=True)
class DateFilter:
    field: str
    op: str  # ">>", "<<", "=", "!="
    value: int

    def accepts(self, stamp: int) -> bool:
        if self.op == ">>":
            return stamp > self.value
        if self.op == "<<":
            return stamp < self.value
        if self.op == "=":
            return stamp == self.value
        return stamp != self.value


def parse_date_value(raw: str, now: float) -> int | None:
    raw = raw.strip()
    if raw.isdigit():
        return int(raw)
    match = _RELATIVE.match(raw)
    if match:
        return int(now) - int(match.group(1)) * _UNITS[match.group(2)]
    return None


def parse_filters(query_string: str, now: float) -> list[DateFilter]:
    """The date filters PMS would apply for this raw query string (others are ignored)."""
    filters: list[DateFilter] = []
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        for name in _DATE_FIELDS:
            if not key.startswith(name):
                continue
            op = key[len(name) :]
            op = {"": "=", "!": "!=", ">>": ">>", "<<": "<<"}.get(op, "")
            parsed = parse_date_value(value, now)
            if op and parsed is not None:
                filters.append(DateFilter(name, op, parsed))
    return filters


@dataclass(frozen=True)
class ItemSequence:
    """A position-addressed list whose ``addedAt``/``updatedAt`` grow with the position."""

    length: int
    stamp: Callable[[str, int], int]
    rank: Callable[[int], int] | None = None
    rank_position: Callable[[int], int] | None = None


def _first_after(seq: ItemSequence, field: str, value: int, lo: int, hi: int) -> int:
    """Smallest position in [lo, hi) whose stamp is > value (hi if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if seq.stamp(field, mid) > value:
            hi = mid
        else:
            lo = mid + 1
    return lo


def select(seq: ItemSequence, filters: Sequence[DateFilter]) -> list[tuple[int, int]]:
    """Disjoint, ordered position ranges passing every filter."""
    ranges = [(0, seq.length)] if seq.length else []
    for f in filters:
        out: list[tuple[int, int]] = []
        for lo, hi in ranges:
            first_gt = _first_after(seq, f.field, f.value, lo, hi)
            first_ge = _first_after(seq, f.field, f.value - 1, lo, hi)
            if f.op == ">>":
                out.append((first_gt, hi))
            elif f.op == "<<":
                out.append((lo, first_ge))
            elif f.op == "=":
                out.append((first_ge, first_gt))
            else:
                out.extend([(lo, first_ge), (first_gt, hi)])
        ranges = [(lo, hi) for lo, hi in out if lo < hi]
    return ranges


class Ordered:
    """The selected positions in the requested order, sliceable without listing them all."""

    def __init__(self, seq: ItemSequence, ranges: list[tuple[int, int]], sort: str | None) -> None:
        self.total = sum(hi - lo for lo, hi in ranges)
        field, _, direction = (sort or "").partition(":")
        self.desc = direction == "desc"
        self._seq = seq
        self._ranges = ranges
        self._by_rank = field in ("titleSort", "title") and seq.rank is not None
        if field not in ("titleSort", "title", "addedAt", "updatedAt") and seq.rank is not None:
            self._by_rank = True  # PMS lists titles by titleSort unless told otherwise
        self._positions: list[int] | None = None
        if self._by_rank and self.total != seq.length:
            rank = seq.rank
            assert rank is not None
            chosen = [p for lo, hi in ranges for p in range(lo, hi)]
            self._positions = sorted(chosen, key=rank)

    def slice(self, start: int, count: int) -> list[int]:
        end = min(self.total, start + count)
        return [self._at(i) for i in range(start, end)]

    def _at(self, index: int) -> int:
        if self.desc:
            index = self.total - 1 - index
        if self._positions is not None:
            return self._positions[index]
        if self._by_rank:
            assert self._seq.rank_position is not None
            return self._seq.rank_position(index)
        for lo, hi in self._ranges:
            if index < hi - lo:
                return lo + index
            index -= hi - lo
        raise IndexError(index)
