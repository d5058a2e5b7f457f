"""Exact list totals remembered per filter, rebuild generation and projection position.

The projector changes the read table and `projection_state.position` in one transaction, the
position only grows, and every event at or below it (and none above) is applied: within one
generation of the table (`projection_state.generation`, raised by every `rebuild`), the table
at a given position is always the same table. So a `count(*)` taken in a snapshot at (G, P) is
the exact total of every later snapshot that is also at (G, P), and of no other; a rebuild of a
damaged table at the same position is another generation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class TotalCache:
    """A bounded LRU of filter → (position, generation, total): the newest total per filter."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.entries: OrderedDict[Any, tuple[int, int, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def position_of(self, key: Any) -> int | None:
        """The position the filter's remembered total belongs to, if any."""
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def total(self, key: Any, position: int, generation: int = 0) -> int | None:
        """The exact total at exactly `position` of `generation`, or None."""
        entry = self.entries.get(key)
        if entry is None or entry[0] != position or entry[1] != generation:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry[2]

    def remember(self, key: Any, position: int, total: int, generation: int = 0) -> None:
        entry = self.entries.get(key)
        # A slow request may finish after a faster one that saw a newer position: keep the newer.
        if entry is not None and (entry[1], entry[0]) > (generation, position):
            return
        self.entries[key] = (position, generation, total)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
