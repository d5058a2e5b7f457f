"""The relay: follows the store's notification log and publishes each event to RabbitMQ.

One relay publishes at a time (an advisory lock on its own connection); it records how far
it has published only after the broker confirmed, so a crash republishes and never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from aio_pika.abc import AbstractExchange
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from shared import store
from shared.asyncapi import render as render_asyncapi
from shared.background import keep_serving
from shared.config import Settings
from shared.domain import Task
from shared.jsonhttp import get_and_head
from shared.lag import Stall, lag_behind
from shared.messaging import connect, declare_topology, envelope_after, to_message

log = logging.getLogger("tasks.relay")

RELAY_LOCK_KEY = 7_301_124_002
CACHE_SIZE = 20_000


class TaskStates:
    """Folds tasks forward event by event; one query per batch for tasks it does not hold."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.tasks: OrderedDict[UUID, Task] = OrderedDict()

    async def envelopes(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
    ) -> list[tuple[dict[str, Any], Task.Event]]:
        await self._load_missing(conn, rows)
        out = []
        for row in rows:
            event = store.decode(row)
            envelope, task = envelope_after(event, row["position"], self.tasks.get(row["task_id"]))
            self._keep(task)
            out.append((envelope, event))
        return out

    async def _load_missing(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
        first: dict[UUID, int] = {}
        for row in rows:
            first.setdefault(row["task_id"], row["version"])
        missing = {
            task_id: version
            for task_id, version in first.items()
            if version > 1
            and (task_id not in self.tasks or self.tasks[task_id].version != version - 1)
        }
        if not missing:
            return
        prior = await store.before_versions(conn, missing)
        for task_id in missing:
            self.tasks.pop(task_id, None)
        for row in prior:
            event = store.decode(row)
            task = event.mutate(self.tasks.get(row["task_id"]))
            assert isinstance(task, Task)
            self.tasks[task.id] = task

    def _keep(self, task: Task) -> None:
        self.tasks[task.id] = task
        self.tasks.move_to_end(task.id)
        while len(self.tasks) > self.size:
            self.tasks.popitem(last=False)

    def clear(self) -> None:
        self.tasks.clear()


async def publish(
    exchange: AbstractExchange,
    envelopes: list[tuple[dict[str, Any], Task.Event]],
) -> None:
    """Publish a batch with every confirm outstanding at once; any nack or return raises.
    The routing key is the event's type."""
    await asyncio.gather(
        *(
            exchange.publish(to_message(envelope, event), envelope["type"], mandatory=True)
            for envelope, event in envelopes
        )
    )


class Relay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.states = TaskStates()
        self.position = 0
        self.active = False
        self.published = 0
        self.standby = False
        self.stall = Stall()
        self.recorded = 0

    async def lag(self) -> dict[str, float]:
        """Lag of what has been published (by whichever relay is active) behind the store."""
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            recorded = await conn.fetchval(
                "SELECT position FROM relay_position WHERE name = 'relay'"
            )
            self.recorded = int(recorded or 0)
            return await lag_behind(conn, self.recorded)
        finally:
            await conn.close()

    async def run(self) -> None:
        """Publish forever; on any failure, back off and start over from the recorded position."""
        await keep_serving("relay", self._serve, log, self._interrupted)

    def _interrupted(self) -> None:
        self.active = False

    async def _serve(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            # Standby: poll for the lock; the holder's connection ending releases it.
            self.standby = True
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):  # noqa: ASYNC110
                await asyncio.sleep(1.0)
            self.standby = False
            wake = asyncio.Event()
            await conn.add_listener(store.EVENTS_TABLE, lambda *_: wake.set())
            connection = await connect(self.settings, "relay")
            async with connection:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                exchange, _ = await declare_topology(channel, self.settings)
                self.states.clear()
                self.position = await conn.fetchval(
                    "SELECT position FROM relay_position WHERE name = 'relay'"
                )
                self.active = True
                log.info("relay active", extra={"position": self.position})
                await self._follow(conn, exchange, wake)
        finally:
            self.active = self.standby = False
            await conn.close()

    async def _follow(
        self, conn: asyncpg.Connection, exchange: AbstractExchange, wake: asyncio.Event
    ) -> None:
        while True:
            wake.clear()
            rows = await store.page(conn, self.position, self.settings.relay_batch_size)
            if not rows:
                # `asyncio.timeout`, not `wait_for`: on Python 3.11 a cancellation that meets the
                # timeout can come out of `wait_for` as a TimeoutError, which would be swallowed
                # here and keep the relay running after it was told to stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.relay_poll_seconds):
                        await wake.wait()
                continue
            await publish(exchange, await self.states.envelopes(conn, rows))
            self.position = rows[-1]["position"]
            await conn.execute(
                "UPDATE relay_position SET position = $1 WHERE name = 'relay'", self.position
            )
            self.published += len(rows)


asyncapi_router = APIRouter(tags=["events"])


@get_and_head(
    asyncapi_router,
    "/asyncapi.yaml",
    summary="The AsyncAPI document of the events published to RabbitMQ",
    operation_id="getAsyncApi",
    response_class=Response,
    responses={
        200: {
            "description": "AsyncAPI 3.0 in YAML",
            "content": {
                "application/yaml": {"schema": {"type": "object"}, "example": {"asyncapi": "3.0.0"}}
            },
        }
    },
)
async def asyncapi_document(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        render_asyncapi(request.app.state.settings), media_type="application/yaml"
    )
