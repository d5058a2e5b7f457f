"""The projector against real RabbitMQ and PostgreSQL: duplicates, reordering, gaps and
undecodable messages leave the read table equal to a replay of the store."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from cli import migrate
from command_service.application import TaskApplication
from command_service.relay import Relay
from projector.consumer import Projector
from projector.verify import verify
from shared.config import Settings
from tests.helpers import BoundConsumer, eventually, read_db, soft_delete, store_events


@contextlib.asynccontextmanager
async def background(*coroutines: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def write_some(settings: Settings, count: int = 20) -> None:
    """Creates, updates and a deletion through the real application (the store)."""
    application = TaskApplication(settings)
    try:
        ids = []
        for number in range(count):
            result = application.create_task(
                {
                    "title": f"t{number}",
                    "description": None,
                    "priority": 3,
                    "due_date": None,
                    "tags": ["a"],
                },
                correlation_id=f"c{number}",
            )
            ids.append(result.task["id"])
        for number, task_id in enumerate(ids):
            application.update_task(
                _uuid(task_id), {"priority": 1 + number % 5, "completed": True}, None, None
            )
        soft_delete(application, _uuid(ids[0]))
    finally:
        application.close()


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


async def published(
    settings: Settings, expected: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Run the relay until a bound consumer has every event; return the messages."""
    async with BoundConsumer(settings) as consumer, background(Relay(settings).run()):
        await consumer.wait_for(expected)
        return list(consumer.messages)


async def purge_projector_queue(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.projector_queue, passive=True)
        await queue.purge()


async def inject(settings: Settings, bodies: list[bytes]) -> None:
    """Publish straight into the projector's queue, as a broker redelivery or a stranger would."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=settings.projector_queue,
            )


async def projection_position(settings: Settings) -> int:
    async with read_db(settings) as conn:
        value = await conn.fetchval(
            "SELECT position FROM projection_state WHERE name = 'projector'"
        )
        return int(value)


async def assert_equals_replay(settings: Settings) -> None:
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()


@pytest.fixture
async def written(settings: Settings) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """A migrated store with 41 events, all published once (the projector not yet running)."""
    await migrate(settings)
    await asyncio.to_thread(write_some, settings)
    messages = await published(settings, 41)
    await purge_projector_queue(settings)
    return messages


async def test_duplicated_and_reordered_deliveries_leave_the_read_table_equal_to_the_replay(
    settings: Settings, written: list[aio_pika.abc.AbstractIncomingMessage]
) -> None:
    bodies = [message.body for message in written]
    shuffled = bodies * 3
    random.Random(3).shuffle(shuffled)
    head = len(await store_events(settings))

    await inject(settings, shuffled)
    async with background(Projector(settings).run()):
        await eventually(lambda: _queue_empty(settings), 30)
        await eventually(lambda: _position_is(settings, head), 30)

    await assert_equals_replay(settings)
    async with read_db(settings) as conn:
        deleted = await conn.fetchval("SELECT count(*) FROM tasks WHERE deleted")
        versions = await conn.fetch("SELECT version FROM tasks WHERE NOT deleted")
    assert deleted == 1
    assert {row["version"] for row in versions} == {2}


async def test_a_skipped_event_is_repaired_from_the_store_before_the_position_passes_it(
    settings: Settings, written: list[aio_pika.abc.AbstractIncomingMessage]
) -> None:
    bodies = sorted((message.body for message in written), key=lambda b: json.loads(b)["position"])
    lost = bodies[25]  # an update, and the last event of its task: only the store has it
    assert json.loads(lost)["type"] == "task.updated"
    head = len(await store_events(settings))

    await inject(settings, [body for body in bodies if body is not lost])
    async with background(Projector(settings).run()):
        await eventually(lambda: _position_is(settings, head), 30)

    await assert_equals_replay(settings)
    lost_task = json.loads(lost)["data"]["task"]
    async with read_db(settings) as conn:
        row = await conn.fetchrow("SELECT version FROM tasks WHERE id = $1", _uuid(lost_task["id"]))
    assert row is not None
    assert row["version"] == lost_task["version"]


async def test_an_undecodable_message_is_dead_lettered_and_later_events_still_apply(
    settings: Settings, written: list[aio_pika.abc.AbstractIncomingMessage]
) -> None:
    bodies = sorted((message.body for message in written), key=lambda b: json.loads(b)["position"])
    head = len(await store_events(settings))

    await inject(settings, [b"{not json", b'{"specversion": "1.0", "data": {}}', *bodies])
    async with background(Projector(settings).run()):
        await eventually(lambda: _position_is(settings, head), 30)

    await assert_equals_replay(settings)
    dead = await _drain(settings, settings.dead_letter_queue)
    assert [message.body for message in dead] == [
        b"{not json",
        b'{"specversion": "1.0", "data": {}}',
    ]
    assert all(message.headers.get("x-error") for message in dead)
    async with read_db(settings) as conn:
        assert await conn.fetchval("SELECT dead_letters FROM projection_state") == 2


async def _drain(settings: Settings, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    messages = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            messages.append(message)
    return messages


async def _queue_empty(settings: Settings) -> bool:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.projector_queue, passive=True)
        count = queue.declaration_result.message_count
        return count == 0


async def _position_is(settings: Settings, position: int) -> bool:
    return await projection_position(settings) >= position
