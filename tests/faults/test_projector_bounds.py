"""The projector repairs from the store in bounded pages: a lost last message is applied while
idle, a projector far behind catches up page by page, and a standby that takes over reads the
position it takes over from instead of repairing everything since it started."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import asyncpg
import pytest

from cli import migrate
from command_service.application import TaskApplication, _new_task
from projector.consumer import Projector
from projector.verify import verify
from shared.config import Settings
from tests.faults.pipeline import pipeline
from tests.helpers import eventually, read_db
from tests.integration.test_projector import background, published, purge_projector_queue

pytestmark = pytest.mark.slow

FIELDS = {"title": "seeded", "description": None, "priority": 3, "due_date": None, "tags": ["a"]}

POSITION_LOG = """
CREATE TABLE position_log (at timestamptz DEFAULT clock_timestamp(), old bigint, new bigint);
CREATE FUNCTION log_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.position <> OLD.position THEN
        INSERT INTO position_log (old, new) VALUES (OLD.position, NEW.position);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER projection_position_log BEFORE UPDATE ON projection_state
    FOR EACH ROW EXECUTE FUNCTION log_position();
"""


def seed(settings: Settings, count: int, chunk: int = 1000) -> None:
    """`count` created tasks appended straight to the store, `chunk` per transaction."""
    app = TaskApplication(settings)
    try:
        for start in range(0, count, chunk):
            tasks = [
                _new_task(uuid.uuid4(), {**FIELDS, "title": f"seeded {n}"}, None, None, "test")
                for n in range(start, min(start + chunk, count))
            ]
            app.save(*tasks)
    finally:
        app.close()


async def positions(settings: Settings) -> tuple[int, int]:
    """(the store's head, the projection position)."""
    store = await asyncpg.connect(settings.database_url)
    try:
        head = await store.fetchval("SELECT coalesce(max(notification_id), 0) FROM tasks_events")
    finally:
        await store.close()
    async with read_db(settings) as conn:
        position = await conn.fetchval("SELECT position FROM projection_state")
    return int(head), int(position)


async def caught_up(settings: Settings) -> bool:
    head, position = await positions(settings)
    return position == head


async def assert_verify_is_clean(settings: Settings) -> None:
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_a_lost_last_message_is_applied_from_the_store_while_idle(
    make_settings: object,
) -> None:
    assert callable(make_settings)
    settings: Settings = make_settings(projector_idle_seconds=0.2)
    await migrate(settings)
    await asyncio.to_thread(seed, settings, 5)
    await published(settings, 5)
    await purge_projector_queue(settings)  # every message lost; nothing more will arrive

    async with background(Projector(settings).run()):
        await eventually(lambda: caught_up(settings), 20)

    await assert_verify_is_clean(settings)


async def test_a_standby_takes_over_from_the_current_position_and_repairs_in_pages(
    make_settings: object, tmp_path: Path
) -> None:
    assert callable(make_settings)
    page = 500
    settings: Settings = make_settings(projector_repair_page=page, projector_idle_seconds=0.3)
    async with pipeline(settings, tmp_path) as parts:
        async with read_db(settings) as conn:
            await conn.execute(POSITION_LOG)
        await asyncio.to_thread(seed, settings, 10_000)
        head, _ = await positions(settings)

        active = await parts.projector("projector-a")
        await asyncio.sleep(1.0)  # the first one registers first: it is the active consumer
        standby = await parts.projector("projector-b")
        # Nothing is published: the active one catches up from the store, page by page.
        await eventually(lambda: caught_up(settings), 120)
        async with read_db(settings) as conn:
            steps = await conn.fetch("SELECT old, new FROM position_log ORDER BY at")
        assert len(steps) >= head // page
        assert max(step["new"] - step["old"] for step in steps) <= page

        # The relay published all of it long ago; the active projector dies; one new event.
        store = await asyncpg.connect(settings.database_url)
        try:
            await store.execute("UPDATE relay_position SET position = $1", head)
        finally:
            await store.close()
        before = peak_rss_mb(standby.pid)
        # Folding 10,000 events in pages costs the active one little more than idling did.
        assert peak_rss_mb(active.pid) - before < 15, (peak_rss_mb(active.pid), before)
        await asyncio.to_thread(active.kill)
        await asyncio.to_thread(seed, settings, 1)
        await parts.relay()
        await eventually(lambda: caught_up(settings), 60)
        after = peak_rss_mb(standby.pid)

        async with read_db(settings) as conn:
            last = await conn.fetchrow("SELECT old, new FROM position_log ORDER BY at DESC LIMIT 1")
        assert last is not None
        assert (last["old"], last["new"]) == (head, head + 1)
        # The takeover applied one event; it did not fold the 10,000 before it again.
        assert after - before < 10, (before, after)
        await assert_verify_is_clean(settings)
