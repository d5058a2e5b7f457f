"""Catching up without an operator: the broker's own event log (a stream bound with `#`) read
from a timestamp, then live; and an operator's replay that behaves like a binding."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiormq
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage

from bench.stack import drop_broker_topology
from command_service.replay import topic_matches
from shared.config import Settings
from tests.helpers import JSON, ROOT, BoundConsumer, eventually, settings_env


class StreamReader:
    """A late consumer: attaches to the event log at an offset and keeps reading."""

    def __init__(self, settings: Settings, offset: Any) -> None:
        self.settings = settings
        self.offset = offset
        self.messages: list[AbstractIncomingMessage] = []

    async def __aenter__(self) -> StreamReader:
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=100)  # a stream consumer needs a prefetch
        stream = await channel.get_queue(self.settings.event_log_stream)

        async def collect(message: AbstractIncomingMessage) -> None:
            self.messages.append(message)
            await message.ack()

        await stream.consume(collect, arguments={"x-stream-offset": self.offset})
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.connection.close()

    def of_task(self, task_id: str) -> list[dict[str, Any]]:
        bodies = [json.loads(m.body) for m in self.messages]
        return [body for body in bodies if body["subject"] == task_id]


async def test_a_late_consumer_reads_the_event_log_from_a_timestamp_then_live_events(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    attach_from = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    async with BoundConsumer(settings) as published:
        created = await client.post("/api/v1/tasks", json={"title": "Early"}, headers=JSON)
        path = f"/api/v1/tasks/{created.json()['id']}"
        await client.patch(path, json={"priority": 5}, headers=JSON)
        await client.patch(path, json={"tags": ["x"]}, headers=JSON)
        await published.wait_for(3)

        async with StreamReader(settings, attach_from) as late:
            await eventually(lambda: len(late.of_task(created.json()["id"])) >= 3)
            await client.delete(path)
            await eventually(lambda: len(late.of_task(created.json()["id"])) >= 4)

    events = late.of_task(created.json()["id"])
    assert [e["data"]["task"]["version"] for e in events] == [1, 2, 3, 4]
    assert [m.routing_key for m in late.messages] == [e["type"] for e in events]
    assert {m.exchange for m in late.messages} == {settings.exchange}
    assert [m.message_id for m in late.messages] == [e["id"] for e in events]
    feed = (await client.get("/api/v1/events")).json()
    assert events == feed


async def test_the_event_log_is_a_stream_bound_with_hash_and_cleanup_deletes_it(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await client.post("/api/v1/tasks", json={"title": "Logged"}, headers=JSON)

    async with StreamReader(settings, "first") as reader:
        await eventually(lambda: len(reader.messages) >= 1)
    await drop_broker_topology(settings)

    assert reader.messages[0].headers["x-stream-offset"] == 0
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(settings.event_log_stream, passive=True)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("#", "task.created", True),
        ("task.*", "task.soft_deleted", True),
        ("task.soft_deleted", "task.updated", False),
        ("*.updated", "task.updated", True),
        ("task.#.x", "task.x", True),
        ("*", "task.created", False),
        ("#.created", "task.created", True),
    ],
)
def test_replay_matches_routing_keys_as_a_topic_exchange_does(
    pattern: str, key: str, matches: bool
) -> None:
    assert topic_matches(pattern, key) is matches


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextlib.asynccontextmanager
async def unbound_queue(settings: Settings) -> AsyncIterator[str]:
    """A queue bound to nothing: only a replay puts messages in it."""
    name = f"test.replay.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=False)
        try:
            yield name
        finally:
            await channel.queue_delete(name)


async def drain(settings: Settings, name: str, count: int) -> list[AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        queue = await (await connection.channel()).get_queue(name)
        messages: list[AbstractIncomingMessage] = []
        async with asyncio.timeout(30):
            while len(messages) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                else:
                    messages.append(message)
        assert await queue.get(no_ack=True, fail=False) is None  # nothing more
        return messages


async def write_mixed_history(client: httpx.AsyncClient, settings: Settings) -> None:
    async with BoundConsumer(settings) as published:
        for number in range(3):
            created = await client.post("/api/v1/tasks", json={"title": f"{number}"}, headers=JSON)
            path = f"/api/v1/tasks/{created.json()['id']}"
            await client.patch(path, json={"priority": 1}, headers=JSON)
            if number != 1:
                await client.delete(path)
        await published.wait_for(8)


async def test_replay_with_a_routing_key_delivers_only_those_events_with_their_own_keys(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await write_mixed_history(client, settings)
    async with unbound_queue(settings) as queue:
        deletions = await asyncio.to_thread(
            run_cli,
            settings,
            *("replay", "--from-position", "1", "--queue", queue),
            *("--routing-key", "task.soft_deleted"),
        )
        only_deletions = await drain(settings, queue, 2)
        everything = await asyncio.to_thread(
            run_cli, settings, "replay", "--from-position", "1", "--queue", queue
        )
        all_events = await drain(settings, queue, 8)

    assert deletions.returncode == 0, deletions.stderr
    assert "republished 2 events" in deletions.stdout
    assert [m.routing_key for m in only_deletions] == ["task.soft_deleted"] * 2
    assert [m.type for m in only_deletions] == ["task.soft_deleted"] * 2
    for message in only_deletions:
        body = json.loads(message.body)
        assert message.message_id == body["id"]
        assert message.content_type == "application/cloudevents+json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.correlation_id == body["correlationid"]
        assert message.timestamp is not None
    assert everything.returncode == 0, everything.stderr
    assert [m.routing_key for m in all_events] == [json.loads(m.body)["type"] for m in all_events]
    assert sorted({m.routing_key for m in all_events}) == [
        "task.created",
        "task.soft_deleted",
        "task.updated",
    ]
    feed = (await client.get("/api/v1/events")).json()
    assert [json.loads(m.body) for m in all_events] == feed


async def test_replay_to_a_missing_queue_or_exchange_is_one_line_and_a_non_zero_exit(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await client.post("/api/v1/tasks", json={"title": "Anything"}, headers=JSON)
    elsewhere = settings.model_copy(update={"exchange": f"test.{uuid.uuid4().hex[:8]}.none"})

    missing_queue = await asyncio.to_thread(
        run_cli, settings, "replay", "--from-position", "1", "--queue", "no.such.queue"
    )
    missing_exchange = await asyncio.to_thread(
        run_cli, elsewhere, "replay", "--from-position", "1", "--all"
    )

    for result, name in ((missing_queue, "no.such.queue"), (missing_exchange, elsewhere.exchange)):
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert name in lines[0]
        assert "Traceback" not in result.stderr
