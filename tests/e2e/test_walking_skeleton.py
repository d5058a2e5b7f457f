"""A write becomes an event, reaches RabbitMQ and the read table, and a GET returns it —
against processes started for real, in single-process and in split mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.config import Settings
from tests.helpers import JSON, BoundConsumer, Process, eventually, free_port, running

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def split_processes(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Command service (with relay), query service and projector, each its own process and port."""
    ports = {"command_port": free_port(), "query_port": free_port(), "projector_port": free_port()}
    configured = settings.model_copy(update=ports)
    processes = [
        Process(["-m", "command_service"], configured, ports["command_port"], tmp_path / "cmd.log"),
        Process(["-m", "query_service"], configured, ports["query_port"], tmp_path / "query.log"),
        Process(["-m", "projector"], configured, ports["projector_port"], tmp_path / "proj.log"),
    ]
    try:
        for process in processes:
            process.start()
        yield processes[0].url, processes[1].url
    finally:
        for process in processes:
            process.stop()


async def create_and_see_it_everywhere(settings: Settings, write_url: str, read_url: str) -> None:
    async with BoundConsumer(settings) as consumer, httpx.AsyncClient() as http:
        created = await http.post(f"{write_url}/api/v1/tasks", headers=JSON, json={"title": "x"})

        assert created.status_code == 201
        task = created.json()
        assert task["title"] == "x"
        assert created.headers["location"] == f"/api/v1/tasks/{task['id']}"

        async def listed() -> bool:
            page = (await http.get(f"{read_url}/api/v1/tasks")).json()
            return [item["id"] for item in page["items"]] == [task["id"]]

        await eventually(listed, 15)
        page = (await http.get(f"{read_url}/api/v1/tasks")).json()
        assert page["total"] == 1
        assert page["items"][0] == task
        one = await http.get(f"{read_url}/api/v1/tasks/{task['id']}")
        assert one.json() == task
        [event] = await consumer.wait_for(1)
        assert event["type"] == "task.created"
        assert event["subject"] == task["id"]
        assert event["data"]["task"] == task


async def test_single_process_mode_serves_a_write_through_broker_and_read_table(
    settings: Settings, tmp_path: Path
) -> None:
    with running(settings, tmp_path, ["cli.py", "serve"], "port") as server:
        await create_and_see_it_everywhere(settings, server.url, server.url)


async def test_split_mode_serves_a_write_through_broker_and_read_table(
    settings: Settings, tmp_path: Path
) -> None:
    with split_processes(settings, tmp_path) as (write_url, read_url):
        await create_and_see_it_everywhere(settings, write_url, read_url)


async def test_single_process_mode_with_two_worker_processes_serves_the_same_flow(
    settings: Settings, tmp_path: Path
) -> None:
    two_workers = settings.model_copy(update={"workers": 2})

    with running(two_workers, tmp_path, ["cli.py", "serve"], "port") as server:
        await create_and_see_it_everywhere(two_workers, server.url, server.url)
