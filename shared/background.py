"""Work a process runs beside its requests: started in the app's lifespan, cancelled at its end.

The one way every part (relay, projector, read-table maintenance, position watcher) runs in
the background, so none of them can outlive the app or swallow its cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.datastructures import State

from shared.config import Settings

Work = tuple[str, Callable[[], Coroutine[Any, Any, None]]]
"""A task's name and what starts it."""


@contextlib.asynccontextmanager
async def in_background(*work: tuple[str, Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run each `(name, coroutine)` as a task while the block runs; on leaving, cancel them
    all, in order, and wait for each to finish."""
    tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in work]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def migrated_then_running(
    settings: Settings, migrate: Callable[[Settings], Awaitable[None]], *work: Work
) -> Callable[[State], AbstractAsyncContextManager[None]]:
    """A resource's `open`: create what the work needs (when `migrate_on_start`), then run it
    in the background while the app serves."""

    @contextlib.asynccontextmanager
    async def running(_: State) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrate(settings)
        async with in_background(*((name, start()) for name, start in work)):
            yield

    return running


async def keep_serving(
    name: str,
    serve: Callable[[], Awaitable[None]],
    log: logging.Logger,
    interrupted: Callable[[], None],
) -> None:
    """Run `serve` until cancelled: after any failure, log that `name` was interrupted, call
    `interrupted`, back off (0.2 s, doubling up to 5 s) and serve again; a clean return starts
    over at once."""
    backoff = 0.2
    while True:
        try:
            await serve()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure means: reconnect and resume
            log.warning(f"{name} interrupted, reconnecting", extra={"error": repr(exc)})
            interrupted()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        else:
            backoff = 0.2
