"""After the write: reading one's own write at once, projection lag (accepted -> readable) under a
steady load, the event feed paged through the whole store, and rebuild speed."""

from __future__ import annotations

import asyncio
import io
import random
import resource
import time
from typing import Any

import orjson

from bench.client import Connection
from bench.measure import Round, Summary, percentile, summarise
from bench.seed import JSON, task_body, utc_today
from bench.stack import peak_rss_mb
from projector.rebuild import rebuild
from shared.config import Settings

GIVE_UP_SECONDS = 60.0


async def read_after_write(
    host: str, port: int, seconds: float, rng: random.Random, connections: int = 32
) -> Round:
    """A closed loop on `connections` keep-alive connections: create a task, then at once GET it
    by its `Location` on the same connection, with no header or cookie (a plain REST client).

    Latencies are the reads' (the write's own cost is the `create` scenario); req/s counts both
    requests of a pair. A read that does not show the task just created counts as an error.
    """
    today = utc_today()
    latencies: list[float] = []
    errors = {"stale": 0, "write": 0}
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connection = Connection(host, port)
        try:
            while time.perf_counter() < deadline:
                body = orjson.dumps(task_body(rng, today))
                written = await connection.request("POST", "/api/v1/tasks", body, JSON)
                if written.status != 201:
                    errors["write"] += 1
                    continue
                begun = time.perf_counter()
                read = await connection.request("GET", written.headers["location"])
                latencies.append(time.perf_counter() - begun)
                if read.status != 200 or orjson.loads(read.body) != orjson.loads(written.body):
                    errors["stale"] += 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return Round(
        rps=2 * len(ordered) / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        requests=2 * len(ordered),
        errors={name: count for name, count in errors.items() if count},
    )


async def read_after_write_rounds(
    host: str,
    port: int,
    rng: random.Random,
    warmup: int,
    duration: int,
    rounds: int,
    connections: int = 32,
) -> Summary:
    """As `scenarios.drive` for wrk: a discarded warm-up, then `rounds` rounds; medians."""
    if warmup > 0:
        await read_after_write(host, port, warmup, rng, connections)
    return summarise(
        [await read_after_write(host, port, duration, rng, connections) for _ in range(rounds)]
    )


async def projection_lag(
    host: str, port: int, rate: float, seconds: float, rng: random.Random, connections: int = 32
) -> dict[str, Any]:
    """Open-loop creates at `rate`/s; each one is then read by id with `X-Min-Position`.

    The lag of a write is from its 201 to the 200 of that read, so it includes one read's round
    trip: an upper bound on how long a client waits to see its own write.
    """
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(host, port))
    lags: list[float] = []
    failures: list[str] = []
    today = utc_today()

    async def one() -> None:
        connection = await pool.get()
        try:
            body = orjson.dumps(task_body(rng, today))
            written = await connection.request("POST", "/api/v1/tasks", body, JSON)
            accepted = time.perf_counter()
            if written.status != 201:
                failures.append(f"POST {written.status}")
                return
            task_id = orjson.loads(written.body)["id"]
            wait = {"X-Min-Position": written.headers["x-event-position"]}
            while True:
                read = await connection.request("GET", f"/api/v1/tasks/{task_id}", None, wait)
                # 503 means the service's bound on waiting passed: ask again, the lag counts on.
                if read.status != 503 or time.perf_counter() - accepted > GIVE_UP_SECONDS:
                    break
            if read.status != 200:
                failures.append(f"GET {read.status}")
                return
            lags.append(time.perf_counter() - accepted)
        finally:
            pool.put_nowait(connection)

    interval = 1.0 / rate
    started = time.perf_counter()
    pending: list[asyncio.Task[None]] = []
    while time.perf_counter() - started < seconds:
        pending.append(asyncio.create_task(one()))
        await asyncio.sleep(max(0.0, started + len(pending) * interval - time.perf_counter()))
    window = time.perf_counter() - started
    await asyncio.gather(*pending)
    while not pool.empty():
        await pool.get_nowait().close()
    ordered = sorted(lags)
    return {
        "target_rate": rate,
        "achieved_rate": len(pending) / window,
        "writes": len(pending),
        "failures": failures,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else 0.0,
    }


async def feed_speed(host: str, port: int, limit: int = 1000) -> dict[str, Any]:
    """A consumer catching up over HTTP: `GET /api/v1/events` from position 0, following
    `Link: rel="next"` to the store's head. Keyset paging: the last page should cost what the
    first does."""
    connection = Connection(host, port)
    path: str | None = f"/api/v1/events?limit={limit}"
    events = 0
    pages: list[float] = []
    started = time.perf_counter()
    try:
        while path is not None:
            begun = time.perf_counter()
            reply = await connection.request("GET", path)
            pages.append(time.perf_counter() - begun)
            if reply.status != 200:
                raise RuntimeError(f"GET {path} answered {reply.status}: {reply.body[:300]!r}")
            events += len(orjson.loads(reply.body))
            link = reply.headers.get("link")
            path = link[1 : link.index(">")] if link else None
    finally:
        await connection.close()
    seconds = time.perf_counter() - started
    return {
        "events": events,
        "pages": len(pages),
        "page_size": limit,
        "seconds": seconds,
        "events_per_second": events / seconds if seconds > 0 else 0.0,
        "first_page_ms": pages[0] * 1000,
        "last_full_page_ms": (pages[-2] if len(pages) > 1 else pages[0]) * 1000,
        "p50_page_ms": percentile(sorted(pages), 0.50) * 1000,
    }


def rebuild_speed(settings: Settings) -> dict[str, Any]:
    """Runs in a child process: the whole `rebuild` (fold, COPY, indexes, catch-up, swap).

    Its RSS is the largest of this process and the worker processes it ran (gone by now, so
    counted from the kernel's record of waited-for children, in KiB on Linux); its CPU is theirs
    together."""
    started = time.perf_counter()
    result = asyncio.run(rebuild(settings, progress_stream=io.StringIO()))
    seconds = time.perf_counter() - started
    own, workers = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    workers_mb = workers.ru_maxrss / 1024
    return {
        "events": result["events"],
        "seconds": seconds,
        "events_per_second": result["events"] / seconds if seconds > 0 else 0.0,
        "fold_and_copy_events_per_second": result["events_per_second"],
        "phases_s": result["phases_s"],
        "rss_mb": max(peak_rss_mb(), workers_mb),
        "workers_rss_mb": workers_mb,
        # CPU of this process and its worker processes (all waited for by now).
        "cpu_s": own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime,
    }
