"""A one-line progress bar for long operations (replay, rebuild, verify)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """A one-line progress bar on stderr: units done of the total, percent, units/s, ETA.

    `total` is counted in the same unit as `advance` (events, not store positions: positions
    have gaps), so a finished operation shows 100%.
    """

    def __init__(
        self, label: str, total: int, stream: Any = sys.stderr, unit: str = "events"
    ) -> None:
        self.label = label
        self.unit = unit
        self.total = max(total, 0)
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0
        self.stream = stream

    def advance(self, count: int, final: bool = False) -> None:
        self.done += count
        now = time.monotonic()
        if not final and now - self.shown < 0.5:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(30 * share)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{self.done}/{self.total} {self.unit} ({share:.0%}), "
            f"{rate:,.0f} {self.unit}/s, ETA {max(eta, 0.0):,.0f} s"
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-6)
