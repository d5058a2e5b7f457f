"""How far a follower of the store (relay, projector) trails it, in positions and in seconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg

from shared import store


async def lag_behind(conn: asyncpg.Connection | asyncpg.Pool, position: int) -> dict[str, float]:
    """Positions the store holds past `position`, and the age of the oldest of them."""
    behind = max(await store.head(conn) - position, 0)
    seconds = 0.0
    if behind:
        oldest = await store.page(conn, position, 1)
        if oldest:
            age = datetime.now(UTC) - store.decode(oldest[0]).timestamp
            seconds = round(max(age.total_seconds(), 0.0), 3)
    return {"positions": behind, "seconds": seconds}


class Stall:
    """How long a follower of the store has been behind it without advancing.

    Fed by whoever observes the follower's position and the store's head; lag alone is not a
    stall: a follower that is behind but advancing is doing its job.
    """

    def __init__(self) -> None:
        self.position: int | None = None
        self.since = time.monotonic()

    def observe(self, position: int, behind: int) -> float:
        """Seconds behind without advancing (0 when caught up or advancing)."""
        now = time.monotonic()
        if behind <= 0 or position != self.position:
            self.position = position
            self.since = now
            return 0.0
        return now - self.since
