"""Disaster recovery as docs/reliability.md tells an operator to do it: from a `pg_dump` of the
event store alone, or after losing the read table, `rebuild` brings back every task."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import httpx
import pytest

from bench.stack import drop_broker_topology
from shared.config import Settings
from shared.database import drop_database, ensure_database
from tests.faults.pipeline import Writer, caught_up
from tests.helpers import JSON, ROOT, Process, free_port, settings_env

pytestmark = pytest.mark.slow

WRITES = 400
# The deployment's cursor secret lives beside the events: restored with them, cursors handed
# out before the restore stay valid.
STORE_TABLES = ("tasks_events", "relay_position", "service_secrets")


def fresh_database(base_url: str) -> str:
    return urlunsplit(urlsplit(base_url)._replace(path=f"/tasks_test_read_{uuid.uuid4().hex[:10]}"))


def serve(settings: Settings, tmp_path: Path, name: str) -> Process:
    port = free_port()
    configured = settings.model_copy(update={"port": port})
    return Process(["cli.py", "serve"], configured, port, tmp_path / f"{name}.log").start()


def operation(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`cli.py <args>` as an operator runs it: a process reading its TASKS_* environment."""
    return subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def everything_the_api_shows(url: str) -> dict[str, Any]:
    """Every task (deleted ones included) page by page, and the history of each."""
    tasks: dict[str, Any] = {}
    histories: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        query: dict[str, Any] = {"include_deleted": "true", "limit": 100}
        while True:
            page = (await http.get("/api/v1/tasks", params=query)).json()
            tasks.update({task["id"]: task for task in page["items"]})
            if page["next_cursor"] is None:
                break
            query = {"include_deleted": "true", "limit": 100, "cursor": page["next_cursor"]}
        for task_id in tasks:
            response = await http.get(f"/api/v1/tasks/{task_id}/history")
            assert response.status_code == 200
            histories[task_id] = response.json()
    return {"tasks": tasks, "histories": histories}


async def write_a_few_hundred_tasks(url: str) -> Writer:
    writer = Writer(url, WRITES)
    await writer.run()
    assert writer.failures == []
    return writer


def pg_dump(settings: Settings, dump: Path) -> None:
    tables = [arg for table in STORE_TABLES for arg in ("--table", table)]
    subprocess.run(
        ["pg_dump", "--format=custom", "--file", str(dump), *tables, settings.database_url],
        check=True,
        timeout=120,
    )


def pg_restore(settings: Settings, dump: Path) -> None:
    subprocess.run(
        ["pg_restore", "--exit-on-error", "--no-owner", "--dbname", settings.database_url, dump],
        check=True,
        timeout=120,
    )


async def queue_exists(settings: Settings) -> bool:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(settings.projector_queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return True


async def tables_of(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


def assert_clean(verified: subprocess.CompletedProcess[str]) -> None:
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert " 0 difference(s), 0 dead-lettered" in verified.stdout


async def a_new_write_is_read_back(url: str) -> tuple[dict[str, Any], int]:
    """A write after recovery is stored, projected and read back (its position is returned)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        created = await http.post("/api/v1/tasks", headers=JSON, json={"title": "after"})
        assert created.status_code == 201
        position = created.headers["x-event-position"]
        read = await http.get(
            f"/api/v1/tasks/{created.json()['id']}", headers={"X-Min-Position": position}
        )
        assert read.status_code == 200
        assert read.json() == created.json()
        return dict(created.json()), int(position)


async def test_the_event_store_restored_from_a_dump_and_rebuilt_shows_every_task_as_before(
    make_settings: Any, service_urls: tuple[str, str], tmp_path: Path
) -> None:
    before_settings: Settings = make_settings(read_database_url=fresh_database(service_urls[0]))
    service = serve(before_settings, tmp_path, "before")
    try:
        writer = await write_a_few_hundred_tasks(service.url)
        await caught_up(before_settings)
        before = await everything_the_api_shows(service.url)
    finally:
        service.stop()
    dump = tmp_path / "store.dump"
    await asyncio.to_thread(pg_dump, before_settings, dump)
    await drop_database(before_settings.database_url)
    await drop_database(before_settings.read_database_url or "")
    await drop_broker_topology(before_settings)
    assert not await queue_exists(before_settings)
    # A new empty database; the operator keeps the broker names, whose queues are gone.
    restored_settings: Settings = make_settings(
        read_database_url=fresh_database(service_urls[0]),
        exchange=before_settings.exchange,
        projector_queue=before_settings.projector_queue,
        dead_letter_queue=before_settings.dead_letter_queue,
    )

    await ensure_database(restored_settings.database_url)
    await asyncio.to_thread(pg_restore, restored_settings, dump)
    rebuilt = await asyncio.to_thread(operation, restored_settings, "rebuild")
    verified = await asyncio.to_thread(operation, restored_settings, "verify")
    service = serve(restored_settings, tmp_path, "after")
    try:
        after = await everything_the_api_shows(service.url)
        _, created_position = await a_new_write_is_read_back(service.url)
    finally:
        service.stop()

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert_clean(verified)
    assert len(before["tasks"]) == len(writer.ids) + len(writer.deleted) > 100
    assert sum(task["deleted"] for task in before["tasks"].values()) == len(writer.deleted)
    assert after == before
    assert await tables_of(restored_settings.database_url) == set(STORE_TABLES)
    # The restored position sequence goes on after the old events, never reusing a position.
    last_position = max(
        event["position"] for history in before["histories"].values() for event in history["events"]
    )
    assert created_position > last_position


async def test_dropping_the_read_table_while_the_service_runs_is_repaired_by_rebuild(
    settings: Settings, tmp_path: Path
) -> None:
    service = serve(settings, tmp_path, "service")
    try:
        await write_a_few_hundred_tasks(service.url)
        await caught_up(settings)
        before = await everything_the_api_shows(service.url)
        conn = await asyncpg.connect(settings.read_dsn)
        try:
            await conn.execute("DROP TABLE tasks")
        finally:
            await conn.close()
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            broken = await http.get("/api/v1/tasks")

        rebuilt = await asyncio.to_thread(operation, settings, "rebuild")
        verified = await asyncio.to_thread(operation, settings, "verify")
        after = await everything_the_api_shows(service.url)
        created, _ = await a_new_write_is_read_back(service.url)
    finally:
        service.stop()

    # While the table is gone, reads say so in the error shape (and never leak SQL).
    assert broken.status_code == 503
    assert broken.json()["error"] == "Service unavailable"
    assert "tasks" not in str(broken.json()["details"])
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert_clean(verified)
    assert len(before["tasks"]) > 100
    assert after == before
    assert created["title"] == "after"
