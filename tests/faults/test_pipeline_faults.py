"""Faults in the middle of a stream of 1,000+ writes: after recovery nothing is lost,
nothing is applied twice or out of order, and every event reached a consumer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.config import Settings
from tests.faults.pipeline import (
    Writer,
    assert_nothing_lost,
    close_broker_connections,
    pipeline,
)
from tests.helpers import BoundConsumer

pytestmark = pytest.mark.slow

WRITES = 1_000


async def test_relay_killed_and_restarted_mid_stream_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings, tmp_path) as parts:
        command = await parts.command()
        relay = await parts.relay()
        await parts.projector()
        writer = Writer(command.url, WRITES)
        async with BoundConsumer(settings) as consumer:
            stream = asyncio.create_task(writer.run())
            await writer.until(WRITES // 3)

            await asyncio.to_thread(relay.kill)
            await writer.until(2 * WRITES // 3)
            await parts.relay("relay-restarted")
            await stream

            assert writer.failures == []
            await assert_nothing_lost(settings, consumer)


async def test_projector_killed_mid_batch_and_restarted_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings, tmp_path) as parts:
        command = await parts.command()
        await parts.relay()
        projector = await parts.projector()
        writer = Writer(command.url, WRITES)
        async with BoundConsumer(settings) as consumer:
            stream = asyncio.create_task(writer.run())
            await writer.until(WRITES // 2)

            await asyncio.to_thread(projector.kill)
            await parts.projector("projector-restarted")
            await stream

            assert writer.failures == []
            await assert_nothing_lost(settings, consumer)


async def test_broker_connections_forcibly_closed_mid_stream_lose_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings, tmp_path) as parts:
        command = await parts.command()
        await parts.relay()
        await parts.projector()
        writer = Writer(command.url, WRITES)
        async with BoundConsumer(settings) as consumer:
            stream = asyncio.create_task(writer.run())
            await writer.until(WRITES // 3)

            closed = await asyncio.to_thread(close_broker_connections, settings)
            await writer.until(2 * WRITES // 3)
            closed += await asyncio.to_thread(close_broker_connections, settings)
            await stream

            assert closed >= 2
            assert writer.failures == []
            await assert_nothing_lost(settings, consumer)


async def test_standby_relay_takes_over_when_the_active_one_dies(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings, tmp_path) as parts:
        command = await parts.command()
        active = await parts.relay("relay-a")
        await asyncio.sleep(1.0)  # let the first relay take the lock before the standby starts
        await parts.relay("relay-b")
        await parts.projector()
        writer = Writer(command.url, WRITES)
        async with BoundConsumer(settings) as consumer:
            stream = asyncio.create_task(writer.run())
            await writer.until(WRITES // 2)

            await asyncio.to_thread(active.kill)
            await stream

            assert writer.failures == []
            await assert_nothing_lost(settings, consumer)


async def test_relay_and_projector_stopped_mid_stream_then_restarted_apply_every_event_once(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings, tmp_path) as parts:
        command = await parts.command()
        relay = await parts.relay()
        projector = await parts.projector()
        writer = Writer(command.url, WRITES)
        async with BoundConsumer(settings) as consumer:
            stream = asyncio.create_task(writer.run())
            await writer.until(WRITES // 3)

            await asyncio.to_thread(relay.stop)
            await asyncio.to_thread(projector.stop)
            await writer.until(2 * WRITES // 3)
            await parts.relay("relay-restarted")
            await parts.projector("projector-restarted")
            await stream

            assert writer.failures == []
            await assert_nothing_lost(settings, consumer)
