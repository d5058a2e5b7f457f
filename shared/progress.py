"""A one-line progress bar for long operations (replay, rebuild, verify)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """A one-line progress bar on stderr: events done, events/s, ETA."""

    def __init__(self, label: str, total: int, stream: Any = sys.stderr) -> None:
        self.label = label
        self.total = max(total, 1)
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
        filled = int(30 * min(self.done / self.total, 1.0))
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{self.done}/{self.total} events, {rate:,.0f} events/s, ETA {eta:,.0f} s"
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-6)
