"""Exact list totals remembered per filter and projection position.

The projector changes the read table and `projection_state.position` in one transaction, the
position only grows, and every event at or below it (and none above) is applied: the table at a
given position is always the same table. So a `count(*)` taken in a snapshot at position P is
the exact total of every later snapshot that is also at P, and of no other.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class TotalCache:
    """A bounded LRU of filter → (position, total): the newest total seen for each filter."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.entries: OrderedDict[Any, tuple[int, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def position_of(self, key: Any) -> int | None:
        """The position the filter's remembered total belongs to, if any."""
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def total(self, key: Any, position: int) -> int | None:
        """The exact total at exactly `position`, or None."""
        entry = self.entries.get(key)
        if entry is None or entry[0] != position:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def remember(self, key: Any, position: int, total: int) -> None:
        entry = self.entries.get(key)
        # A slow request may finish after a faster one that saw a newer position: keep the newer.
        if entry is not None and entry[0] > position:
            return
        self.entries[key] = (position, total)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
