"""A real pipeline for fault tests: command service, relay(s) and projector as processes,
a stream of writes, and the checks that nothing was lost, skipped or applied out of order."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx

from cli import migrate
from projector.verify import verify
from shared.config import Settings
from tests.helpers import JSON, BoundConsumer, Process, eventually, free_port

# Records every change of a read-table row so a test can prove none went backwards.
APPLY_LOG = """
CREATE TABLE IF NOT EXISTS apply_log (id uuid, old_version int, new_version int);
CREATE OR REPLACE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO apply_log VALUES (NEW.id, OLD.version, NEW.version);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS tasks_apply_log ON tasks;
CREATE TRIGGER tasks_apply_log BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION log_apply();
"""


class Pipeline:
    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings.model_copy(update={"run_relay": False})
        self.tmp_path = tmp_path
        self.processes: list[Process] = []

    async def start(self, args: list[str], port_setting: str, name: str) -> Process:
        port = free_port()
        configured = self.settings.model_copy(update={port_setting: port})
        process = Process(args, configured, port, self.tmp_path / f"{name}.log")
        self.processes.append(process)
        return await asyncio.to_thread(process.start)

    async def command(self) -> Process:
        return await self.start(["-m", "command_service"], "command_port", "command")

    async def relay(self, name: str = "relay") -> Process:
        return await self.start(["cli.py", "relay"], "relay_port", name)

    async def projector(self, name: str = "projector") -> Process:
        return await self.start(["-m", "projector"], "projector_port", name)

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


@contextlib.asynccontextmanager
async def pipeline(settings: Settings, tmp_path: Path) -> AsyncIterator[Pipeline]:
    await _prepare(settings)
    running = Pipeline(settings, tmp_path)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop_all)


async def _prepare(settings: Settings) -> None:
    await migrate(settings)
    conn = await asyncpg.connect(settings.read_dsn)
    try:
        await conn.execute(APPLY_LOG)
    finally:
        await conn.close()


class Writer:
    """Creates, patches and deletes from several clients at once; every write must be accepted."""

    def __init__(self, url: str, total: int, clients: int = 8) -> None:
        self.url = url
        self.total = total
        self.clients = clients
        self.accepted = 0
        self.failures: list[str] = []
        self.ids: list[str] = []
        self.deleted: set[str] = set()
        self.rng = random.Random(7)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=30) as http:
            await asyncio.gather(*(self._client(http) for _ in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient) -> None:
        while self.accepted + len(self.failures) < self.total:
            response, task_id = await self._one(http)
            if response.status_code in (200, 201, 204):
                self.accepted += 1
            elif not (response.status_code == 404 and task_id in self.deleted):
                # A PATCH racing another client's DELETE of the same task may rightly be 404.
                self.failures.append(f"{response.status_code} {response.text}")

    async def _one(self, http: httpx.AsyncClient) -> tuple[httpx.Response, str | None]:
        roll = self.rng.random()
        if not self.ids or roll < 0.4:
            body = {"title": f"task {self.accepted}", "tags": self.rng.sample(["a", "b", "c"], 2)}
            response = await http.post("/api/v1/tasks", headers=JSON, json=body)
            if response.status_code == 201:
                self.ids.append(response.json()["id"])
            return response, None
        task_id = self.rng.choice(self.ids)
        if roll < 0.95:
            patch = {"priority": self.rng.randint(1, 5), "completed": self.rng.random() < 0.5}
            url = f"/api/v1/tasks/{task_id}"
            return await http.patch(url, headers=JSON, json=patch), task_id
        self.ids.remove(task_id)
        self.deleted.add(task_id)
        return await http.delete(f"/api/v1/tasks/{task_id}"), task_id

    async def until(self, count: int) -> None:
        await eventually(lambda: self.accepted >= count, 120)


async def caught_up(settings: Settings, timeout: float = 120) -> None:
    """Wait until the projection position reaches the store's last position."""
    store = await asyncpg.connect(settings.database_url)
    read = await asyncpg.connect(settings.read_dsn)
    try:
        head = await store.fetchval("SELECT max(notification_id) FROM tasks_events")

        async def reached() -> bool:
            position = await read.fetchval(
                "SELECT position FROM projection_state WHERE name = 'projector'"
            )
            return bool(position >= head)

        await eventually(reached, timeout)
    finally:
        await store.close()
        await read.close()


async def assert_nothing_lost(settings: Settings, consumer: BoundConsumer) -> None:
    """verify is clean, every event reached the consumer, no row was applied out of order."""
    await caught_up(settings)
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()
    store = await asyncpg.connect(settings.database_url)
    read = await asyncpg.connect(settings.read_dsn)
    try:
        expected = {
            f"{row['originator_id']}:{row['originator_version']}"
            for row in await store.fetch(
                "SELECT originator_id, originator_version FROM tasks_events"
            )
        }
        await eventually(lambda: expected <= {m.message_id for m in consumer.messages}, 120)
        backwards = await read.fetch("SELECT * FROM apply_log WHERE new_version <= old_version")
        assert backwards == []
    finally:
        await store.close()
        await read.close()


def close_broker_connections(settings: Settings) -> int:
    """Forcibly close this test's relay and projector connections, as a broker restart would."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    closed = 0
    for line in listing.stdout.splitlines():
        pid, _, properties = line.partition("\t")
        if settings.exchange in properties and (
            "tasks-relay" in properties or "tasks-projector" in properties
        ):
            done = subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "fault test"],
                check=False,
                capture_output=True,
                timeout=60,
            )
            # A connection may already be gone between listing and closing.
            closed += done.returncode == 0
    return closed
