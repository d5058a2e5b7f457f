"""What each path could do without our HTTP layer: the raw SQL of every read through asyncpg,
and raw event-store appends through the library's Application, in the same run."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from bench.cpu import Meter, Root
from bench.measure import Round, from_latencies, with_cpu
from bench.stack import peak_rss_mb
from command_service.application import TaskApplication, migrate_store
from query_service.consistency import READ_ROW_AND_LATER_EVENTS
from query_service.queries import list_statement, parse_list_query
from shared.config import Settings
from shared.domain import Task

Statement = Callable[[], tuple[str, list[Any]]]
"""Makes the next statement and its arguments (a fresh random id for a get, for instance)."""

GET_STATEMENT = READ_ROW_AND_LATER_EVENTS
"""What `GET /api/v1/tasks/{id}` runs: the read row and the store's later events (none here)."""


def list_query(settings: Settings, params: list[tuple[str, str]]) -> Statement:
    """The statement the query service runs for these list parameters (built by its own code)."""
    assert settings.cursor_secret, "bench_settings sets the cursor secret the service signs with"
    query = parse_list_query(
        params, max_offset=settings.max_offset, secret=settings.cursor_secret.encode()
    )
    statement, args = list_statement(query)
    return lambda: (statement, args)


def get_query(ids: list[str], rng: random.Random) -> Statement:
    uuids = [uuid.UUID(value) for value in ids]
    return lambda: (GET_STATEMENT, [rng.choice(uuids)])


async def sql_round(
    pool: asyncpg.Pool,
    statement: Statement,
    seconds: float,
    concurrency: int = 32,
    meter: Meter | None = None,
) -> Round:
    """`concurrency` clients run the statement back to back for `seconds`; with `meter`, the CPU
    per statement of its processes."""
    before = meter.sample() if meter is not None else {}
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            sql, args = statement()
            begun = time.perf_counter()
            await pool.fetch(sql, *args)
            latencies.append(time.perf_counter() - begun)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    measured = from_latencies(latencies, time.perf_counter() - started)
    return with_cpu(measured, meter, before) if meter is not None else measured


def _create_fields(rng: random.Random, number: int) -> dict[str, Any]:
    return {
        "title": f"Ceiling task {number}",
        "description": None,
        "priority": rng.randint(1, 5),
        "due_date": None,
        "tags": ["work", "bench"],
        "idempotency_key": None,
        "correlation_id": None,
    }


def _threaded(
    seconds: float, threads: int, operation: Callable[[random.Random], None], meter: Meter
) -> Round:
    """`threads` threads call `operation` back to back for `seconds`; `meter`'s CPU per call."""
    before = meter.sample()
    latencies: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[float] = []
        try:
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                operation(rng)
                mine.append(time.perf_counter() - begun)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            failures.append(exc)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if failures:
        raise failures[0]
    return with_cpu(from_latencies(latencies, time.perf_counter() - started), meter, before)


def append_ceilings(
    settings: Settings,
    warmup: float,
    seconds: float,
    rounds: int,
    meter: Meter,
    threads: int = 8,
) -> dict[str, Any]:
    """Runs in a child process: `Application.save` of new tasks, then `update_task` on them.

    Uses its own database (`settings.database_url`) so the seeded store stays as seeded. The CPU
    per call is this process's (`ceiling process`) and that of `meter`'s groups (PostgreSQL).
    """
    meter = meter.with_group("ceiling process", Root(os.getpid(), tree=False))
    asyncio.run(migrate_store(settings))
    app = TaskApplication(settings, {"CREATE_TABLE": "n"})
    counter = iter(range(10**12))
    created: list[uuid.UUID] = []

    def create(rng: random.Random) -> None:
        task = Task.create(uuid.uuid4(), **_create_fields(rng, next(counter)))
        app.save(task)
        created.append(task.id)

    def update(rng: random.Random) -> None:
        change = (
            {"priority": rng.randint(1, 5)}
            if rng.random() < 0.5
            else {"title": f"Renamed {rng.random():.6f}"}
        )
        app.update_task(rng.choice(created), change, None, None)

    try:
        results: dict[str, Any] = {}
        for name, operation in (("append", create), ("update", update)):
            if warmup > 0:
                _threaded(warmup, threads, operation, meter)
            results[name] = [_threaded(seconds, threads, operation, meter) for _ in range(rounds)]
        results["rss_mb"] = peak_rss_mb()
        results["threads"] = threads
        return results
    finally:
        app.close()
