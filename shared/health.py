"""Readiness checks: can this process reach what it needs to serve?"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import asyncpg

from shared.messaging import connect

CHECK_TIMEOUT = 2.0


async def postgres_check(state: Any) -> tuple[str, bool, dict[str, Any]]:
    try:
        conn = await asyncpg.connect(state.settings.database_url, timeout=CHECK_TIMEOUT)
        await conn.close()
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return "postgresql", False, {}
    return "postgresql", True, {}


async def rabbitmq_check(state: Any) -> tuple[str, bool, dict[str, Any]]:
    try:
        connection = await asyncio.wait_for(connect(state.settings, "health"), CHECK_TIMEOUT)
        await connection.close()
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError):
        return "rabbitmq", False, {}
    return "rabbitmq", True, {}
