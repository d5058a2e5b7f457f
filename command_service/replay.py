"""Replay: republish stored events (same ids, same routing keys and properties) by an operator.

To one queue, it goes through a temporary exchange bound to that queue with the given routing
patterns, so the queue receives exactly what its bindings would have received; to the whole
exchange only when asked (`queue=None`). A queue or exchange that does not exist is a
`ReplayError` with a one-line reason, never a half-done replay.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from command_service.relay import TaskStates, publish
from shared import store
from shared.config import Settings
from shared.messaging import connect
from shared.progress import Progress


class ReplayError(Exception):
    """Why a replay cannot run or could not finish, in one line."""


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic matching: `*` is one word, `#` zero or more, words split on `.`."""

    def match(words: Sequence[str], keys: Sequence[str]) -> bool:
        if not words:
            return not keys
        head, rest = words[0], words[1:]
        if head == "#":
            return any(match(rest, keys[skip:]) for skip in range(len(keys) + 1))
        return bool(keys) and head in ("*", keys[0]) and match(rest, keys[1:])

    return match(pattern.split("."), routing_key.split("."))


async def _channel(connection: AbstractConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


@contextlib.asynccontextmanager
async def _target(
    connection: AbstractConnection, settings: Settings, queue: str | None, patterns: list[str]
) -> AsyncIterator[AbstractExchange]:
    """The exchange to publish to: a temporary one bound to `queue`, or the events exchange."""
    channel = await _channel(connection)
    if queue is None:
        try:
            events = await channel.get_exchange(settings.exchange, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise ReplayError(f"exchange {settings.exchange!r} does not exist") from None
        yield events
        return
    try:
        target = await channel.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise ReplayError(f"queue {queue!r} does not exist") from None
    exchange = await channel.declare_exchange(
        f"tasks.replay.{uuid.uuid4().hex[:12]}",
        aio_pika.ExchangeType.TOPIC,
        durable=False,
        auto_delete=True,  # also goes when the queue does
    )
    try:
        for pattern in patterns:
            await target.bind(exchange, routing_key=pattern)
        yield exchange
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            cleanup = await connection.channel()
            await cleanup.exchange_delete(exchange.name)


async def replay(
    settings: Settings,
    from_position: int,
    to_position: int | None,
    queue: str | None,
    patterns: Sequence[str] = ("#",),
    progress_stream: Any = sys.stderr,
) -> int:
    """Republish stored events from `from_position` (to `to_position`); the number published."""
    conn = await asyncpg.connect(settings.database_url)
    states = TaskStates()
    count = 0
    try:
        try:
            last = to_position if to_position is not None else store.LAST_POSITION
            total = await store.count(conn, from_position - 1, last)
        except asyncpg.UndefinedTableError:
            raise ReplayError("the database holds no event store (run migrate first)") from None
        progress = Progress("replay", int(total), progress_stream)
        connection = await connect(settings, "replay")
        async with connection, _target(connection, settings, queue, list(patterns)) as exchange:
            after = from_position - 1
            while after < last:
                rows = await store.page(conn, after, settings.relay_batch_size, last)
                if not rows:
                    break
                envelopes = [
                    (envelope, event)
                    for envelope, event in await states.envelopes(conn, rows)
                    if queue is None or any(topic_matches(p, envelope["type"]) for p in patterns)
                ]
                try:
                    await publish(exchange, envelopes)
                except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
                    raise ReplayError(
                        f"the broker refused an event after {count} were republished "
                        f"({type(exc).__name__}: was the queue deleted?)"
                    ) from None
                count += len(envelopes)
                progress.advance(len(rows))
                after = rows[-1]["position"]
            progress.advance(0, final=True)
    finally:
        await conn.close()
    return count
