"""The benchmark finds PostgreSQL's processes in /proc and counts a backend's CPU, also after the
backend has ended (it then counts in the postmaster's waited-for children)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.cpu import Meter, postgres_roots, rabbitmq_roots, read_stat


def wait_reaped(pid: int) -> None:
    """Until the ended backend is gone from /proc (waited for by the postmaster)."""
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


WORK = "SELECT count(*) FROM generate_series(1, 3000000) AS s(n) WHERE n % 7 = 3"


async def test_a_backends_cpu_counts_while_it_runs_and_after_it_ends(
    service_urls: tuple[str, str],
) -> None:
    database_url, _ = service_urls
    conn = await asyncpg.connect(database_url)
    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    roots = postgres_roots(backend)
    if not roots or not any(root.pid == read_stat(backend).ppid for root in roots):
        await conn.close()
        pytest.skip("PostgreSQL runs where this process cannot see it in /proc")
    await conn.close()
    # Other backends of the shared server start and end meanwhile, which can move the server's
    # total between two samples; the accounting must hold in one of three quiet-enough tries.
    failures = []
    for _ in range(3):
        failure = await _measure_one_backend(database_url, roots)
        if failure is None:
            return
        failures.append(failure)
    raise AssertionError(failures)


async def _measure_one_backend(database_url: str, roots: list[Any]) -> str | None:
    conn = await asyncpg.connect(database_url)
    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    meter = Meter({"postgres": roots})
    before = meter.sample()["postgres"]
    backend_before = read_stat(backend).own

    await conn.fetchval(WORK)
    backend_spent = read_stat(backend).own - backend_before
    live = meter.sample()["postgres"]
    await conn.close()
    await asyncio.to_thread(wait_reaped, backend)
    ended = meter.sample()["postgres"]

    if backend_spent <= 0.05:
        return f"the backend spent {backend_spent:.3f} s"
    # Both are sums of clock ticks in float seconds: equal totals may differ in the last bit.
    if live - before < backend_spent - 1e-6:
        return (
            f"the tree gained {live - before:.3f} s while the backend spent {backend_spent:.3f} s"
        )
    # Once the backend is gone its time is the postmaster's: the total does not drop.
    if ended < live - 0.02:
        return f"the total dropped from {live:.3f} to {ended:.3f} s when the backend ended"
    return None


def test_the_broker_is_found_as_one_erlang_vm() -> None:
    roots = rabbitmq_roots()
    if not roots:
        pytest.skip("RabbitMQ runs where this process cannot see it in /proc")

    assert all(read_stat(root.pid).comm == "beam.smp" for root in roots)
    assert Meter({"rabbitmq": roots}).sample()["rabbitmq"] > 0
