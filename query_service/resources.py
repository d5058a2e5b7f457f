"""What the query service holds open while it serves — its connection pools (reads by id,
list queries apart, the store), the cursor secret, the totals cache and the position watcher,
put on the app's state for the routes — and what its reads ask of an API key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from starlette.datastructures import State

from query_service.cursors import load_secret
from query_service.totals import TotalCache
from query_service.watcher import PositionWatcher
from shared.auth import AccessRules
from shared.background import in_background
from shared.config import Settings
from shared.database import keep_session

READ_ACCESS = AccessRules(
    # `public_reads` opens the list and a task by id (no sub-resource, no other route) ...
    public_paths=(r"/api/v1/tasks(/[^/]+)?",),
    # ... audit reads are a task's history and the event feed, and time travel on a task.
    audit_paths=(r"/api/v1/tasks/[^/]+/history", r"/api/v1/events(/.*)?"),
    audit_parameters=frozenset({"version", "as_of"}),
    private_parameters=frozenset({"include_deleted"}),
)
"""What the reads served here ask of a key; the app factory's key gate and document read it."""


class ReadPools:
    """The query service's connections (reads by id, list queries apart, the store), its cursor
    secret, totals cache and position watcher: put on the app's state while it serves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watcher: PositionWatcher | None = None

    def position(self) -> int | None:
        """How far the read model has caught up (`X-Projection-Position`), once known."""
        return None if self.watcher is None else self.watcher.position

    @contextlib.asynccontextmanager
    async def open(self, state: State) -> AsyncIterator[None]:
        settings = self.settings
        state.read_pool = await asyncpg.create_pool(
            settings.read_dsn,
            min_size=settings.read_pool_min,
            max_size=settings.read_pool_max,
            reset=keep_session,
        )
        # List queries apart: the heavy ones wait for their own connections, reads by id never.
        state.list_pool = await asyncpg.create_pool(
            settings.read_dsn,
            min_size=1,
            max_size=settings.list_concurrency,
            reset=keep_session,
            server_settings={"statement_timeout": str(settings.list_statement_timeout_ms)},
        )
        state.list_slots = asyncio.Semaphore(settings.list_concurrency)
        # With a read database of its own, every read by id also asks the store (one more
        # query): the store's pool is sized like the read pool.
        state.store_pool = (
            state.read_pool
            if settings.read_dsn == settings.database_url
            else await asyncpg.create_pool(
                settings.database_url,
                min_size=1,
                max_size=settings.read_pool_max,
                reset=keep_session,
            )
        )
        state.cursor_secret = await load_secret(settings)
        state.totals = TotalCache()
        state.watcher = self.watcher = PositionWatcher(settings, state.read_pool)
        self.watcher.advance(await self.watcher.read())
        try:
            async with in_background(("position-watcher", self.watcher.run())):
                yield
        finally:
            if state.store_pool is not state.read_pool:
                await state.store_pool.close()
            await state.list_pool.close()
            await state.read_pool.close()
