"""Work a process runs beside its requests: started in the app's lifespan, cancelled at its end.

The one way every part (relay, projector, read-table maintenance, position watcher) runs in
the background, so none of them can outlive the app or swallow its cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


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
