"""Test helpers: processes started for real, a consumer bound like another service, the store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent
JSON = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the `TASKS_*` environment a process reads (none inherited from ours)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TASKS_")}
    return {**inherited, **settings.as_environment()}


class Process:
    """One of our processes (`cli.py serve`, `python -m projector`, ...) on a port of its own."""

    def __init__(self, args: list[str], settings: Settings, port: int, log: Path) -> None:
        self.args = args
        self.settings = settings
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Process:
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=ROOT,
                env=settings_env(self.settings),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.args} not healthy: {self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
