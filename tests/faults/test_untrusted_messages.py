"""The broker is not a trust boundary: a message published on the exchange by anyone but the
relay (a forgery, a neighbour's mistake, a poison) never changes what the API serves, never moves
the projection position past the store, and never stalls the projector. Each case runs the
single-process service (relay and projector included) on the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx
import orjson
import pytest

from projector.verify import verify
from shared.config import Settings
from tests.helpers import JSON, eventually, read_db, store_events

pytestmark = pytest.mark.slow

WRITES = 30


def forged(task: dict[str, Any], version: int, position: int, **changes: Any) -> bytes:
    """A well-formed CloudEvent for `task` at `version`, as a stranger could publish it."""
    task_id = task["id"]
    body = {**task, **changes, "version": version}
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"{task_id}:{version}",
            "source": "tasks/command-service",
            "type": "task.updated",
            "subject": task_id,
            "time": task["updated_at"],
            "datacontenttype": "application/json",
            "sequence": f"{version:020d}",
            "position": position,
            "correlationid": "forged",
            "data": {"task": body, "changes": changes},
        }
    )


async def publish(settings: Settings, body: bytes, routing_key: str = "task.updated") -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key
        )


async def dead_letters(settings: Settings) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """What the projector set aside (left in the queue: only read)."""
    connection = await aio_pika.connect(settings.amqp_url)
    messages = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.dead_letter_queue, passive=True)
        while (message := await queue.get(fail=False)) is not None:
            messages.append(message)
        for message in messages:
            await message.nack(requeue=True)
    return messages


async def dead_letter_count(settings: Settings) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.dead_letter_queue, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)


async def create(client: httpx.AsyncClient, title: str) -> httpx.Response:
    response = await client.post("/api/v1/tasks", headers=JSON, json={"title": title})
    assert response.status_code == 201, response.text
    return response


async def read_back(
    client: httpx.AsyncClient, task_id: str, written: httpx.Response
) -> httpx.Response:
    return await client.get(
        f"/api/v1/tasks/{task_id}", headers={"X-Min-Position": written.headers["x-event-position"]}
    )


async def head_and_position(settings: Settings) -> tuple[int, int]:
    events = await store_events(settings)
    async with read_db(settings) as conn:
        position = await conn.fetchval("SELECT position FROM projection_state")
    return (events[-1]["notification_id"] if events else 0), int(position)


async def write_and_read_back(client: httpx.AsyncClient) -> None:
    """30 real writes (20 creates, 10 patches), every one readable within a few seconds."""
    written: list[tuple[str, httpx.Response, str]] = []
    for number in range(20):
        response = await create(client, f"real {number}")
        written.append((response.json()["id"], response, f"real {number}"))
    for number in range(10):
        task_id = written[number][0]
        response = await client.patch(
            f"/api/v1/tasks/{task_id}", headers=JSON, json={"title": f"patched {number}"}
        )
        assert response.status_code == 200, response.text
        written.append((task_id, response, f"patched {number}"))

    last_id, last, _ = written[-1]

    async def last_is_readable() -> bool:
        return (await read_back(client, last_id, last)).status_code == 200

    await eventually(last_is_readable, 20)
    latest = {task_id: title for task_id, _, title in written}
    for task_id, response, _ in written:
        answer = await read_back(client, task_id, response)
        assert answer.status_code == 200, answer.text
        assert answer.json()["title"] == latest[task_id]


async def assert_store_is_served(settings: Settings, client: httpx.AsyncClient) -> None:
    head, position = await head_and_position(settings)
    assert position <= head
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()
    listed = await client.get("/api/v1/tasks", params={"limit": 100})
    tasks = listed.json()
    assert tasks["total"] == len(tasks["items"])
    assert all(not item["title"].startswith("forged") for item in tasks["items"])
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text


async def test_a_forged_update_is_set_aside_and_never_served(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    created = await create(client, "original")
    task = created.json()
    assert (await read_back(client, task["id"], created)).status_code == 200
    head, _ = await head_and_position(settings)

    # The next version, another title, a position the store will hold for another event.
    await publish(settings, forged(task, 2, head + 2, title="forged title"))
    await eventually(lambda: _count_is(settings, 1), 20)
    shown = await client.get(f"/api/v1/tasks/{task['id']}")
    assert shown.json()["title"] == "original"
    assert shown.json()["version"] == 1

    patched = await client.patch(
        f"/api/v1/tasks/{task['id']}", headers=JSON, json={"title": "real title"}
    )
    assert patched.status_code == 200
    answer = await read_back(client, task["id"], patched)
    assert answer.status_code == 200
    assert (answer.json()["title"], answer.json()["version"]) == ("real title", 2)

    [dead] = await dead_letters(settings)
    assert dead.headers["x-error"]
    metrics = (await client.get("/metrics")).text
    assert "tasks_dead_letters_total 1.0" in metrics
    await write_and_read_back(client)
    await assert_store_is_served(settings, client)


async def _count_is(settings: Settings, count: int) -> bool:
    return await dead_letter_count(settings) >= count


Poison = Callable[[dict[str, Any], int, int], bytes]
"""(a live task, the store's head, the position of another task's event) → a message body."""

POISONS: dict[str, Poison] = {
    "null title": lambda task, head, _: forged(task, 2, head + 1, title=None),
    "priority 70000": lambda task, head, _: forged(task, 2, head + 1, priority=70000),
    "version 2**31": lambda task, head, _: forged(task, 2**31, head + 1, title="forged"),
    "tags as a string": lambda task, head, _: forged(task, 2, head + 1, tags="forged"),
    "an id that is not a UUID": lambda task, head, _: forged(
        {**task, "id": "not-a-uuid"}, 2, head + 1, title="forged"
    ),
    "position 10**12": lambda task, head, _: forged(
        {**task, "id": str(uuid.uuid4())}, 1, 10**12, title="forged"
    ),
    "a position held by another event": lambda task, head, other: forged(
        task, 2, other, title="forged"
    ),
    "a body that is not JSON": lambda task, head, _: b"\x00{forged",
}


@pytest.mark.parametrize("poison", POISONS, ids=list(POISONS))
async def test_a_poison_message_is_set_aside_and_later_writes_are_readable(
    settings: Settings, client: httpx.AsyncClient, poison: str
) -> None:
    victim = await create(client, "victim")
    other = await create(client, "bystander")
    assert (await read_back(client, other.json()["id"], other)).status_code == 200
    head, _ = await head_and_position(settings)
    other_position = int(other.headers["x-event-position"])

    await publish(settings, POISONS[poison](victim.json(), head, other_position))
    await write_and_read_back(client)

    await eventually(lambda: _count_is(settings, 1), 20)
    [dead] = await dead_letters(settings)
    assert dead.headers["x-error"]
    victim_now = await client.get(f"/api/v1/tasks/{victim.json()['id']}")
    assert victim_now.json() == victim.json()
    async with read_db(settings) as conn:
        assert await conn.fetchval("SELECT dead_letters FROM projection_state") == 1
    await assert_store_is_served(settings, client)
