"""The consumer of `tasks.projector`: batches deliveries, commits, then acknowledges.

A message only names a stored event (its position and id); the events are read from the store
(one query per batch) and folded with the shared fold, so a message that names no stored event
(a forgery, a neighbour's mistake) is set aside in the dead-letter queue and never applied, and
the projection position never passes the store's head. A batch that fails to apply is retried
in halves down to one event; only an event that still fails is set aside. On a database or
broker error the projector drops its channel (unacknowledged messages return to the queue) and
reconnects with backoff. Gap repair and the idle catch-up (a lost last message) read the store
in pages, one transaction each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from projector.projection import (
    Undecodable,
    apply_stored,
    parse_reference,
    read_position,
    refusal,
    stored_id,
)
from shared.background import keep_serving
from shared.config import Settings
from shared.health import CHECK_TIMEOUT
from shared.lag import Stall, lag_behind
from shared.messaging import connect, declare_topology
from shared.store import at_positions, page
from shared.store import head as store_head

log = logging.getLogger("tasks.projector")

POISON: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
)
"""What one stored event can cause however often it is retried; any other error is transient."""


class Projector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.position = 0
        self.applied = 0
        self.dead_lettered = 0
        self.consuming = False
        self.applied_at = time.time()
        self.store: asyncpg.Connection | None = None
        self.stall = Stall()
        self.shared_position = 0
        self._idle_seen: int | None = None

    async def _store(self) -> asyncpg.Connection:
        """The event store, read only (opened when first needed)."""
        if self.store is None or self.store.is_closed():
            self.store = await asyncpg.connect(self.settings.database_url)
        return self.store

    async def lag(self) -> dict[str, float]:
        """The shared projection position (whichever projector applies) behind the store.

        On connections of its own: the consumer's are busy with its batches."""
        store = await asyncpg.connect(self.settings.database_url, timeout=CHECK_TIMEOUT)
        try:
            if self.settings.read_dsn == self.settings.database_url:
                position = await read_position(store)
            else:
                read = await asyncpg.connect(self.settings.read_dsn, timeout=CHECK_TIMEOUT)
                try:
                    position = await read_position(read)
                finally:
                    await read.close()
            self.shared_position = position
            return await lag_behind(store, position)
        finally:
            await store.close()

    async def run(self) -> None:
        """Consume until cancelled; on any failure unacknowledged messages return to the queue
        and the projector reconnects."""
        await keep_serving("projector", self._serve, log, self._interrupted)

    def _interrupted(self) -> None:
        self.consuming = False

    async def _serve(self) -> None:
        conn = await asyncpg.connect(self.settings.read_dsn)
        try:
            self.position = await read_position(conn)
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
            done, _ = await asyncio.wait(
                waiting,
                timeout=self.settings.projector_idle_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter not in done:
                getter.cancel()
                if closed in done:
                    raise ConnectionError("broker channel closed")
                await self._idle(conn, channel)
                continue
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
        store = await self._store()
        named: dict[int, asyncpg.Record] = {}
        rejects: list[tuple[AbstractIncomingMessage, str]] = []
        references = []
        for message in batch:
            try:
                references.append((message, parse_reference(message.body)))
            except Undecodable as exc:
                rejects.append((message, str(exc)))
        if references:
            stored = await at_positions(store, [reference.position for _, reference in references])
            for message, reference in references:
                reason = refusal(reference, stored.get(reference.position))
                if reason is None:
                    named[reference.position] = stored[reference.position]
                else:
                    rejects.append((message, reason))
        for message, reason in rejects:
            await self._dead_letter(channel, message.body, message, reason)
        fresh = sorted(position for position in named if position > self.position)
        if fresh and fresh[-1] - self.position != len(fresh):
            # Another projector (before a takeover) or a rebuild may have moved the position.
            self.position = await read_position(conn)
            fresh = [position for position in fresh if position > self.position]
        if fresh and fresh[-1] - self.position != len(fresh):
            # A gap (lost or not yet redelivered messages): fill it from the store, paged.
            await self._catch_up(conn, channel, store, fresh[-1], len(rejects))
        else:
            await self._apply(conn, channel, store, [named[p] for p in fresh], len(rejects))
        log.info("applied batch", extra={"events": len(fresh), "position": self.position})
        await batch[-1].ack(multiple=True)
        self.dead_lettered += len(rejects)
        self.applied_at = time.time()

    async def _apply(
        self,
        conn: asyncpg.Connection,
        channel: AbstractChannel,
        store: asyncpg.Connection,
        rows: list[asyncpg.Record],
        dead_letters: int = 0,
    ) -> None:
        """Apply stored events in one transaction; on a failure they cannot outgrow, in halves,
        down to the one event that is then set aside (the position passes it)."""
        try:
            self.position = await apply_stored(conn, store, rows, dead_letters)
        except POISON as exc:
            if len(rows) > 1:
                half = len(rows) // 2
                await self._apply(conn, channel, store, rows[:half], dead_letters)
                await self._apply(conn, channel, store, rows[half:])
                return
            if not rows:
                raise
            row = rows[0]
            reference = orjson.dumps({"position": row["position"], "id": stored_id(row)})
            await self._dead_letter(channel, reference, None, f"{type(exc).__name__}: {exc}")
            self.position = await apply_stored(conn, store, [], dead_letters + 1, row["position"])
            self.dead_lettered += 1
            return
        self.applied += len(rows)
        if log.isEnabledFor(logging.DEBUG):
            for row in rows:
                log.debug(
                    "applied event",
                    extra={
                        "correlation_id": _correlation_id(row["state"]),
                        "task_id": str(row["task_id"]),
                        "version": row["version"],
                        "position": row["position"],
                    },
                )

    async def _catch_up(
        self,
        conn: asyncpg.Connection,
        channel: AbstractChannel,
        store: asyncpg.Connection,
        upto: int,
        dead_letters: int = 0,
    ) -> None:
        """Apply the store after the position up to `upto`, one page per transaction."""
        batch = self.settings.projector_repair_page
        while rows := await page(store, self.position, batch, upto):
            log.info(
                "applying from the store",
                extra={"events": len(rows), "position": rows[-1]["position"]},
            )
            await self._apply(conn, channel, store, rows, dead_letters)
            dead_letters = 0
        if dead_letters:
            self.position = await apply_stored(conn, store, [], dead_letters)

    async def _idle(self, conn: asyncpg.Connection, channel: AbstractChannel) -> None:
        """Nothing delivered for a moment: if the store is ahead and nobody advanced the
        projection since the last look, catch up from the store (a lost last message)."""
        store = await self._store()
        self.position = await read_position(conn)
        head = await store_head(store)
        self.stall.observe(self.position, head - self.position)
        seen, self._idle_seen = self._idle_seen, self.position
        if head > self.position and seen == self.position:
            log.info("store ahead while idle: catching up", extra={"position": self.position})
            await self._catch_up(conn, channel, store, head)

    async def _dead_letter(
        self,
        channel: AbstractChannel,
        body: bytes,
        message: AbstractIncomingMessage | None,
        reason: str,
    ) -> None:
        log.error("dead-lettering a message", extra={"reason": reason})
        headers = dict(message.headers or {}) if message is not None else {}
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=body,
                headers={**headers, "x-error": reason[:1000]},
                content_type=message.content_type if message is not None else "application/json",
                message_id=message.message_id if message is not None else None,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.settings.dead_letter_queue,
        )


def _correlation_id(state: bytes) -> Any:
    """The correlation id a stored event carries, for the DEBUG log line (None if unreadable)."""
    try:
        return json.loads(state).get("correlation_id")
    except ValueError:
        return None
