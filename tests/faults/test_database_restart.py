"""A database restart, as clients see it (every connection dropped), in the middle of a
stream of writes and reads: nothing accepted is lost and every part comes back by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.config import Settings
from tests.faults.pipeline import Writer, assert_nothing_lost, pipeline
from tests.helpers import BoundConsumer, eventually

pytestmark = pytest.mark.slow

WRITES = 1_000


async def drop_every_connection(settings: Settings) -> int:
    """What a PostgreSQL restart does to its clients, limited to this test's databases."""
    admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        name = settings.database_url.rsplit("/", 1)[1]
        dropped = await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()) AS terminated",
            name,
        )
        return int(dropped)
    finally:
        await admin.close()


async def test_a_database_restart_mid_stream_loses_nothing_and_every_part_recovers(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings, tmp_path) as parts:
        command = await parts.command()
        await parts.relay()
        await parts.projector()
        query = await parts.start(["-m", "query_service"], "query_port", "query")
        writer = Writer(command.url, WRITES)
        statuses: list[int] = []
        async with (
            BoundConsumer(settings) as consumer,
            httpx.AsyncClient(base_url=query.url) as reads,
        ):

            async def read_load() -> None:
                while not stream.done():
                    statuses.append((await reads.get("/api/v1/tasks?limit=5&tags=a")).status_code)

            stream = asyncio.create_task(writer.run())
            reader = asyncio.create_task(read_load())
            await writer.until(WRITES // 3)

            dropped = await drop_every_connection(settings)
            await writer.until(2 * WRITES // 3)
            dropped += await drop_every_connection(settings)
            await stream
            await reader

            assert dropped >= 4
            assert writer.failures == []
            # A read that lost its connection may be refused with 503, never answered with 500.
            assert set(statuses) <= {200, 503}
            assert 200 in statuses
            await assert_nothing_lost(settings, consumer)
            async with httpx.AsyncClient(base_url=query.url) as http:

                async def reads_work() -> bool:
                    return (await http.get("/api/v1/tasks?limit=1")).status_code == 200

                await eventually(reads_work, 30)
