"""Test helpers: processes started for real, a consumer bound like another service, the store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
from fastapi import FastAPI

from bench.stack import Server, free_port, settings_env
from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent
JSON = {"Content-Type": "application/json"}


class Process(Server):
    """One of our processes (`cli.py serve`, `python -m projector`, ...) on a port of its own:
    the benchmark's process runner, plus the signals fault tests send."""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def running(
    settings: Settings, tmp_path: Path, args: list[str], port_setting: str, name: str = "proc"
) -> Iterator[Process]:
    port = free_port()
    configured = settings.model_copy(update={port_setting: port})
    process = Process(args, configured, port, tmp_path / f"{name}.log").start()
    try:
        yield process
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An app in this event loop, its lifespan (pools, relay, projector...) running, over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


class BoundConsumer:
    """Another service: its own queue bound to `tasks.events`, collecting what arrives."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue_name = f"test.consumer.{uuid.uuid4().hex[:8]}"
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        self.connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> BoundConsumer:
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            self.settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(self.queue_name, auto_delete=True)
        await queue.bind(exchange, routing_key="#")

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.messages.append(message)
            await message.ack()

        await queue.consume(collect)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.connection is not None
        await self.connection.close()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(message.body) for message in self.messages]

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        await eventually(lambda: len({m.message_id for m in self.messages}) >= count, timeout)
        return self.bodies()


async def eventually(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def store_events(
    settings: Settings, task_id: uuid.UUID | None = None
) -> list[asyncpg.Record]:
    """What the event store holds (the audit log), straight from its table."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        if task_id is None:
            return await conn.fetch("SELECT * FROM tasks_events ORDER BY notification_id")
        return await conn.fetch(
            "SELECT * FROM tasks_events WHERE originator_id = $1 ORDER BY originator_version",
            task_id,
        )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def read_db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.read_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def soft_delete(application: Any, task_id: uuid.UUID) -> None:
    """A deletion appended through the library alone (the API's own path is async)."""
    task = application.repository.get(task_id)
    task.soft_delete(None)
    application.save(task)


__all__ = [
    "JSON",
    "ROOT",
    "BoundConsumer",
    "Process",
    "eventually",
    "free_port",
    "read_db",
    "running",
    "serving",
    "settings_env",
    "soft_delete",
    "store_events",
]
