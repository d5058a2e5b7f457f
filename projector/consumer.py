"""The consumer of `tasks.projector`: batches deliveries, commits, then acknowledges.

A valid event is never rejected: on a database or broker error the projector drops its
channel (unacknowledged messages return to the queue) and reconnects with backoff.
Only a message it cannot decode is set aside in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from fastapi import FastAPI

from projector.maintenance import keep_vacuumed
from projector.projection import (
    Change,
    Undecodable,
    apply,
    contiguous,
    migrate_read_model,
    missing_changes,
    parse_change,
)
from shared.config import Settings
from shared.health import postgres_check, rabbitmq_check
from shared.lag import lag_behind
from shared.messaging import connect, declare_topology
from shared.server import from_environment
from shared.web import make_app

log = logging.getLogger("tasks.projector")


class Projector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.position = 0
        self.applied = 0
        self.dead_lettered = 0
        self.consuming = False
        self.applied_at = time.time()
        self.store: asyncpg.Connection | None = None

    async def _store(self) -> asyncpg.Connection:
        """The event store, for gap repair and lag only (opened when first needed)."""
        if self.store is None or self.store.is_closed():
            self.store = await asyncpg.connect(self.settings.database_url)
        return self.store

    async def lag(self) -> dict[str, float]:
        return await lag_behind(await self._store(), self.position)

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: let messages return, reconnect
                log.warning("projector interrupted, reconnecting", extra={"error": repr(exc)})
                self.consuming = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _serve(self) -> None:
        conn = await asyncpg.connect(self.settings.read_dsn)
        try:
            self.position = await conn.fetchval(
                "SELECT position FROM projection_state WHERE name = 'projector'"
            )
            connection = await connect(self.settings, "projector")
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                await channel.set_qos(prefetch_count=self.settings.projector_prefetch)
                _, queue = await declare_topology(channel, self.settings)
                inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
                closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def on_close(*_: object) -> None:
                    if not closed.done():
                        closed.set_result(None)

                channel.close_callbacks.add(on_close)
                await queue.consume(inbox.put)
                self.consuming = True
                log.info("projector consuming", extra={"position": self.position})
                await self._drain(conn, channel, inbox, closed)
        finally:
            self.consuming = False
            await conn.close()
            if self.store is not None:
                await self.store.close()
                self.store = None

    async def _drain(
        self,
        conn: asyncpg.Connection,
        channel: AbstractChannel,
        inbox: asyncio.Queue[AbstractIncomingMessage],
        closed: asyncio.Future[None],
    ) -> None:
        while True:
            getter: asyncio.Future[AbstractIncomingMessage] = asyncio.ensure_future(inbox.get())
            waiting: set[asyncio.Future[Any]] = {getter, closed}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                raise ConnectionError("broker channel closed")
            batch = [getter.result()]
            while len(batch) < self.settings.projector_batch_size and not inbox.empty():
                batch.append(inbox.get_nowait())
            await self._handle(conn, channel, batch)

    async def _handle(
        self,
        conn: asyncpg.Connection,
        channel: AbstractChannel,
        batch: list[AbstractIncomingMessage],
    ) -> None:
        changes: list[Change] = []
        rejects: list[tuple[AbstractIncomingMessage, str]] = []
        for message in batch:
            try:
                changes.append(parse_change(message.body))
            except Undecodable as exc:
                rejects.append((message, str(exc)))
        for message, reason in rejects:
            await self._dead_letter(channel, message, reason)
        fresh = [change.position for change in changes if change.position > self.position]
        if fresh and not contiguous(self.position, fresh):
            repaired = await missing_changes(await self._store(), self.position, fresh)
            if repaired:
                log.info("repaired a gap from the store", extra={"tasks": len(repaired)})
            changes.extend(repaired)
        self.position = await apply(conn, changes, len(rejects))
        if log.isEnabledFor(logging.DEBUG):
            for change in changes:
                log.debug(
                    "applied event",
                    extra={
                        "correlation_id": change.correlation_id,
                        "task_id": str(change.row[0]),
                        "version": change.version,
                        "position": change.position,
                    },
                )
        log.info("applied batch", extra={"events": len(changes), "position": self.position})
        await batch[-1].ack(multiple=True)
        self.applied += len(changes)
        self.dead_lettered += len(rejects)
        self.applied_at = time.time()

    async def _dead_letter(
        self, channel: AbstractChannel, message: AbstractIncomingMessage, reason: str
    ) -> None:
        log.error("dead-lettering undecodable message", extra={"reason": reason})
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                headers={**(message.headers or {}), "x-error": reason[:1000]},
                content_type=message.content_type,
                message_id=message.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.settings.dead_letter_queue,
        )


async def projector_ready(state: Any) -> tuple[str, bool, dict[str, Any]]:
    """Projection lag for `/ready` (lag alone never makes a process unready)."""
    projector: Projector = state.projector
    try:
        lag = await projector.lag()
    except (OSError, asyncpg.PostgresError):
        return "projector", True, {}
    return "projector", True, {"projection_lag": lag, "projector_consuming": projector.consuming}


@contextlib.asynccontextmanager
async def projector_task(state: Any, settings: Settings) -> AsyncIterator[None]:
    await migrate_read_model(settings)
    projector = Projector(settings)
    state.projector = projector
    task = asyncio.create_task(projector.run(), name="projector")
    maintenance = asyncio.create_task(keep_vacuumed(settings), name="read table maintenance")
    try:
        yield
    finally:
        for running in (task, maintenance):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


def create_app(settings: Settings) -> FastAPI:
    return make_app(
        "Tasks projector",
        settings,
        [],
        [projector_task],
        [postgres_check, rabbitmq_check, projector_ready],
    )


def app_from_environment() -> FastAPI:
    """The uvicorn factory: each worker process builds its app from its environment."""
    return from_environment(create_app)
