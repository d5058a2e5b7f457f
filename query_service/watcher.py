"""How far the read model has caught up: the projector's NOTIFY moves it at once, a periodic
read of its position row covers a lost listener; a read waits for a position at most
`min_position_wait_seconds` (then 503), and only for one that was issued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from shared.config import Settings
from shared.errors import ServiceUnavailable
from shared.read_model import PROJECTION_CHANNEL, READ_POSITION

log = logging.getLogger("tasks.query")


class PositionWatcher:
    """How far the read model has caught up: LISTEN for the projector's signal, poll as fallback."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.position = 0
        self.changed = asyncio.Event()

    def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self.changed.set()
            self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self.settings.read_dsn)
                try:
                    await conn.add_listener(
                        PROJECTION_CHANNEL, lambda _c, _p, _ch, payload: self.advance(int(payload))
                    )
                    while True:
                        self.advance(await self.read())
                        await asyncio.sleep(5.0)
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happens
                log.warning("position watcher reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)

    async def read(self) -> int:
        try:
            value = await self.pool.fetchval(READ_POSITION)
        except asyncpg.UndefinedTableError:
            return 0
        return int(value or 0)

    async def wait_for(self, position: int) -> None:
        """Return once the read model has reached `position` (an issued one); 503 past the
        bound."""
        if self.position >= position:
            return
        # The signal may not have arrived yet (or the listener is reconnecting): ask once.
        self.advance(await self.read())
        if self.position >= position:
            return
        unavailable = ServiceUnavailable(
            f"The read model has not reached position {position} yet", {"Retry-After": "1"}
        )
        deadline = time.monotonic() + self.settings.min_position_wait_seconds
        while self.position < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise unavailable
            # Woken by NOTIFY; the periodic re-read only covers a lost listener connection.
            # (`asyncio.timeout` keeps a cancellation a cancellation; see the relay's wait.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self.changed.wait()
            if self.position < position:
                self.advance(await self.read())
