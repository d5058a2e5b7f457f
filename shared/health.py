"""Readiness checks: can this process reach what it needs to serve?

A check is a coroutine function of no arguments answering `(name, ok, extra)`; the app factory
calls every check its parts registered on each `/ready`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg

from shared.config import Settings
from shared.messaging import connect

CHECK_TIMEOUT = 2.0

CheckResult = tuple[str, bool, dict[str, Any]]
"""A check's name, whether it passed, and what it adds to the body (`failure`: why not)."""
Check = Callable[[], Awaitable[CheckResult]]


def postgres_check(settings: Settings) -> Check:
    """The event store's database accepts a connection."""

    async def check() -> CheckResult:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=CHECK_TIMEOUT)
            await conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return "postgresql", False, {}
        return "postgresql", True, {}

    return check


def rabbitmq_check(settings: Settings) -> Check:
    """The broker accepts a connection."""

    async def check() -> CheckResult:
        try:
            connection = await asyncio.wait_for(connect(settings, "health"), CHECK_TIMEOUT)
            await connection.close()
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError):
            return "rabbitmq", False, {}
        return "rabbitmq", True, {}

    return check
