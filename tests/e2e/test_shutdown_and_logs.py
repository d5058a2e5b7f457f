"""SIGTERM in the middle of a stream of writes loses no accepted write and strands no
message; one correlation id links the request's log line, the event and the projector's line."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import uuid
from pathlib import Path

import aio_pika
import httpx
import pytest

from projector.verify import verify
from shared.config import Settings
from tests.faults.pipeline import caught_up
from tests.helpers import JSON, Process, free_port, store_events

pytestmark = pytest.mark.slow


def single_process(settings: Settings, tmp_path: Path, name: str) -> Process:
    port = free_port()
    configured = settings.model_copy(update={"port": port})
    return Process(["cli.py", "serve"], configured, port, tmp_path / f"{name}.log")


async def signal_during_writes(
    settings: Settings, tmp_path: Path, sig: signal.Signals
) -> tuple[Process, list[str]]:
    """Eight clients write until 300 are accepted; then the process gets `sig`."""
    server = await asyncio.to_thread(single_process(settings, tmp_path, "first").start)
    accepted: list[str] = []
    stop = asyncio.Event()

    async def writer(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                response = await http.post("/api/v1/tasks", headers=JSON, json={"title": "w"})
            except httpx.HTTPError:
                return  # the server has gone away: anything unanswered was not accepted
            if response.status_code == 201:
                accepted.append(response.json()["id"])

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        writers = [asyncio.create_task(writer(http)) for _ in range(8)]
        while len(accepted) < 300:  # noqa: ASYNC110 - polling a plain list filled by writers
            await asyncio.sleep(0.02)

        await asyncio.to_thread(server.kill, sig)
        stop.set()
        await asyncio.gather(*writers)
    return server, accepted


async def assert_recovered_after_restart(settings: Settings, tmp_path: Path) -> None:
    """Restarted, the process projects everything (verify clean) and strands no message."""
    restarted = await asyncio.to_thread(single_process(settings, tmp_path, "second").start)
    try:
        await caught_up(settings)
        report = io.StringIO()
        assert await verify(settings, report) == [], report.getvalue()
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(settings.projector_queue, passive=True)
            assert queue.declaration_result.message_count == 0
    finally:
        await asyncio.to_thread(restarted.stop)


async def test_sigterm_during_a_stream_of_writes_loses_no_accepted_write(
    settings: Settings, tmp_path: Path
) -> None:
    server, accepted = await signal_during_writes(settings, tmp_path, signal.SIGTERM)

    # uvicorn finishes gracefully, then re-raises SIGTERM so the exit status tells the signal.
    assert server.proc is not None
    assert server.proc.returncode == -signal.SIGTERM
    assert "Application shutdown complete." in server.log.read_text()
    stored = {str(row["originator_id"]) for row in await store_events(settings)}
    assert set(accepted) <= stored
    await assert_recovered_after_restart(settings, tmp_path)


async def test_a_crash_during_a_stream_of_writes_loses_no_acknowledged_write(
    settings: Settings, tmp_path: Path
) -> None:
    server, accepted = await signal_during_writes(settings, tmp_path, signal.SIGKILL)

    assert server.proc is not None
    assert server.proc.returncode == -signal.SIGKILL
    stored = {str(row["originator_id"]) for row in await store_events(settings)}
    assert set(accepted) <= stored
    await assert_recovered_after_restart(settings, tmp_path)


async def test_one_correlation_id_links_the_request_log_the_event_and_the_projector_log(
    settings: Settings, tmp_path: Path
) -> None:
    server = single_process(settings.model_copy(update={"log_level": "DEBUG"}), tmp_path, "logs")
    await asyncio.to_thread(server.start)
    request_id = f"trace-{uuid.uuid4().hex[:8]}"
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            created = await http.post(
                "/api/v1/tasks", headers={**JSON, "X-Request-ID": request_id}, json={"title": "t"}
            )
            position = created.headers["x-event-position"]
            await http.get("/api/v1/tasks", headers={"X-Min-Position": position})
    finally:
        await asyncio.to_thread(server.stop)

    lines = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    traced = [line for line in lines if line.get("correlation_id") == request_id]
    request_lines = [line for line in traced if line["logger"] == "tasks.http"]
    projector_lines = [line for line in traced if line["logger"] == "tasks.projector"]
    assert request_lines[0]["path"] == "/api/v1/tasks"
    assert request_lines[0]["status"] == 201
    assert projector_lines[0]["task_id"] == created.json()["id"]
    [event] = await store_events(settings, uuid.UUID(created.json()["id"]))
    assert json.loads(event["state"])["correlation_id"] == request_id
