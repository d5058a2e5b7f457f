"""`python -m bench`: seed the real service, drive every scenario with wrk, measure the ceilings,
projection lag, rebuild speed and peak RSS, and write bench/results/<timestamp>.{json,md}."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench import report
from bench.ceilings import Statement, append_ceilings, sql_round
from bench.client import Connection
from bench.cpu import Meter, Root, per_request_ms, postgres_roots, rabbitmq_roots
from bench.measure import Round, summarise
from bench.pipeline import feed_speed, projection_lag, read_after_write_rounds, rebuild_speed
from bench.scenarios import PEER_RSS_MB, Files, Plan, build, drive, preflight
from bench.seed import body_lines, deep_cursor, patch_body, seed, task_body, wait_caught_up
from bench.stack import (
    ROOT,
    Server,
    add_service_arguments,
    bench_settings,
    cleanup,
    free_port,
    peak_rss_mb,
    with_database,
)
from bench.wrk import Load, require_wrk
from shared import store
from shared.config import Settings

FULL = {"tasks": 100_000, "warmup": 5, "duration": 10, "rounds": 3, "lag_seconds": 20}
QUICK = {"tasks": 10_000, "warmup": 1, "duration": 3, "rounds": 1, "lag_seconds": 5}
SAMPLE_IDS = 10_000


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks, 1 round of 3 s")
    parser.add_argument("--tasks", type=int, help="tasks to seed (100,000; quick 10,000)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per scenario (5; quick 1)")
    parser.add_argument("--duration", type=int, help="seconds per round (10; quick 3)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario, medians (3; quick 1)")
    parser.add_argument("--lag-seconds", type=int, help="seconds of steady writes (20; quick 5)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--seed-connections", type=int, default=32, help="concurrent POSTs while seeding"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the data")
    add_service_arguments(parser)
    options = parser.parse_args(argv)
    for name, value in (QUICK if options.quick else FULL).items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    return options


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def in_child(function: Any, *args: Any) -> Any:
    """Run in a fresh process, so its peak RSS and its CPU are its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


async def store_head(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await store.head(conn)
    finally:
        await conn.close()


async def meter_of(settings: Settings, service: Server) -> Meter:
    """The processes a request to the service costs CPU in: the service (its workers included),
    PostgreSQL (every backend), RabbitMQ (its Erlang VM); and this harness, for raw SQL."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()
    groups: dict[str, tuple[Root, ...]] = {
        "service": (Root(service.pid),),
        "postgres": postgres_roots(backend),
        "rabbitmq": rabbitmq_roots(),
    }
    for name, roots in groups.items():
        if not roots:
            log(f"no {name} process visible in /proc: its CPU is not counted")
    return Meter({name: roots for name, roots in groups.items() if roots})


async def table_state(pool: asyncpg.Pool) -> dict[str, Any]:
    """How much of the read table index-only scans can answer from the index alone (its pages
    marked all-visible), and when (auto)vacuum and (auto)analyze last ran on it."""
    row = await pool.fetchrow(
        "SELECT c.relpages, c.relallvisible, s.n_live_tup, s.n_ins_since_vacuum, "
        "s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze, "
        "s.autovacuum_count, s.autoanalyze_count FROM pg_class c "
        "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = 'tasks'::regclass"
    )
    state = dict(row) if row is not None else {}
    for key, value in state.items():
        if isinstance(value, datetime):
            state[key] = value.isoformat()
    pages = state.get("relpages") or 0
    state["all_visible_share"] = state.get("relallvisible", 0) / pages if pages > 0 else None
    return state


def _heap_fetches(node: dict[str, Any]) -> int:
    return int(node.get("Heap Fetches", 0)) + sum(_heap_fetches(n) for n in node.get("Plans", []))


async def heap_fetches(pool: asyncpg.Pool, statement: Statement) -> int:
    """Heap pages an index-only scan of the statement had to visit (0: all-visible pages only)."""
    sql, args = statement()
    plan = await pool.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
    return _heap_fetches(orjson.loads(plan)[0]["Plan"])


async def measure(
    options: argparse.Namespace, settings: Settings, service: Server, trivial: Server, work: Path
) -> dict[str, Any]:
    rng = random.Random(options.seed)
    meter = await meter_of(settings, service)
    harness_sql = meter.only(["postgres"]).with_group("harness", Root(os.getpid(), tree=False))
    plan = Plan(
        options.warmup, options.duration, options.rounds, options.threads, options.connections
    )
    results: dict[str, Any] = {"scenarios": {}, "ceilings": {}}
    probe = Connection("127.0.0.1", service.port)

    log(f"seeding {options.tasks:,} tasks through POST /api/v1/tasks")
    seeded = await seed("127.0.0.1", service.port, options.tasks, rng, options.seed_connections)
    waited = await wait_caught_up(probe, seeded.last_position)
    results["seed"] = {
        "tasks": len(seeded.ids),
        "seconds": seeded.seconds,
        "rate": seeded.rate,
        "projection_caught_up_after_s": waited,
    }
    log(f"seeded at {seeded.rate:,.0f} tasks/s; projection caught up {waited:.1f} s later")

    ids = rng.sample(seeded.ids, min(SAMPLE_IDS, len(seeded.ids)))
    files = Files(work / "ids.txt", work / "creates.txt", work / "patches.txt")
    files.ids.write_text("\n".join(ids) + "\n")
    files.creates.write_text("\n".join(body_lines(task_body, rng, 2000)) + "\n")
    files.patches.write_text("\n".join(body_lines(patch_body, rng, 2000)) + "\n")
    depth = max(1, min(50_000, options.tasks // 2))
    cursor = await deep_cursor(probe, depth)
    scenarios = build(settings, files, ids, depth, cursor, rng)

    pool = await asyncpg.create_pool(settings.read_dsn, min_size=10, max_size=10)
    try:
        for scenario in scenarios:
            log(f"{scenario.name}: {scenario.load.method} {scenario.load.path[:90]}")
            if scenario.vacuum_before:
                await pool.execute("VACUUM (ANALYZE) tasks")
            table = await table_state(pool)
            if scenario.statement is not None:
                table["heap_fetches"] = await heap_fetches(pool, scenario.statement)
            await preflight(probe, scenario.load)
            http = await drive(service.url, scenario.load, plan, meter)
            entry: dict[str, Any] = {
                "label": scenario.label,
                "method": scenario.load.method,
                "path": scenario.load.path,
                "http": http.to_json(),
                "peer_rps": scenario.peer,
                "targets": {
                    "peer_factor": scenario.peer_factor,
                    "p99_below_ms": scenario.p99_below_ms,
                    "ceiling_share": scenario.ceiling_share,
                    "share_of": scenario.share_of,
                    "http_share": scenario.http_share,
                },
                "read_table_before": table,
            }
            if scenario.statement is not None:
                statement = scenario.statement
                if plan.warmup:
                    await sql_round(pool, statement, plan.warmup, plan.connections)
                rounds = [
                    await sql_round(pool, statement, plan.duration, plan.connections, harness_sql)
                    for _ in range(plan.rounds)
                ]
                entry["ceiling"] = {"kind": "raw SQL", **summarise(rounds).to_json()}
            else:
                await wait_caught_up(probe, await store_head(settings))
            results["scenarios"][scenario.name] = entry
            log(f"{scenario.name}: {http.rps:,.0f} req/s, p99 {http.p99_ms:.1f} ms")
    finally:
        await pool.close()

    log("read after own write: POST, then GET by id at once on the same connection")
    own = await read_after_write_rounds(
        "127.0.0.1",
        service.port,
        rng,
        plan.warmup,
        plan.duration,
        plan.rounds,
        plan.connections,
    )
    results["scenarios"]["read_after_write"] = {
        "label": "read after own write: POST, then GET by id at once, one connection "
        "(p99 of the GET; req/s counts both)",
        "method": "POST+GET",
        "path": "/api/v1/tasks, then its Location",
        "http": own.to_json(),
        "peer_rps": None,
        "targets": {"stale_reads": 0},
    }
    await wait_caught_up(probe, await store_head(settings))
    log(f"read after own write: {own.rps:,.0f} req/s, GET p99 {own.p99_ms:.1f} ms")

    log("HTTP ceiling: trivial FastAPI endpoint")
    results["ceilings"]["http"] = (
        await drive(
            trivial.url, Load("GET", "/trivial"), plan, Meter({"trivial": (Root(trivial.pid),)})
        )
    ).to_json()

    log("write ceilings: Application.save and update_task without HTTP (child process)")
    ceiling_settings = settings.model_copy(
        update={"database_url": with_database(settings.database_url, _ceiling_db(settings))}
    )
    appends = await asyncio.to_thread(
        in_child,
        append_ceilings,
        ceiling_settings,
        plan.warmup,
        plan.duration,
        plan.rounds,
        meter.only(["postgres"]),
    )
    for name, kind, scenario_name in (
        ("append", "raw append", "create"),
        ("update", "raw update", "patch"),
    ):
        rounds = [
            Round(**r.__dict__) if isinstance(r, Round) else Round(**r) for r in appends[name]
        ]
        summary = {"threads": appends["threads"], **summarise(rounds).to_json()}
        results["ceilings"][name] = summary
        results["scenarios"][scenario_name]["ceiling"] = {"kind": kind, **summary}

    create_rps = results["scenarios"]["create"]["http"]["rps"]
    await wait_caught_up(probe, await store_head(settings))
    log(f"projection lag at {create_rps / 2:,.0f} writes/s for {options.lag_seconds} s")
    before = meter.sample()
    results["projection_lag"] = await projection_lag(
        "127.0.0.1", service.port, max(1.0, create_rps / 2), options.lag_seconds, rng
    )
    # Per write: the create, its read with X-Min-Position, the relay, the broker, the projector.
    results["projection_lag"]["cpu_ms"] = per_request_ms(
        before, meter.sample(), results["projection_lag"]["writes"]
    )
    await wait_caught_up(probe, await store_head(settings))

    log("event feed: GET /api/v1/events through the whole store, pages of 1,000")
    results["feed"] = await feed_speed("127.0.0.1", service.port)
    log(f"event feed: {results['feed']['events_per_second']:,.0f} events/s")

    log("rebuild of the read table from the store (child process)")
    before = meter.only(["postgres"]).sample()
    results["rebuild"] = await asyncio.to_thread(in_child, rebuild_speed, settings)
    # Per 1,000 events: the rebuild's processes (it reports its own) and PostgreSQL's.
    spent = per_request_ms(before, meter.only(["postgres"]).sample(), results["rebuild"]["events"])
    per_thousand = {
        "rebuild": results["rebuild"]["cpu_s"] * 1e6 / max(1, results["rebuild"]["events"]),
        "postgres": spent.get("postgres", 0.0) * 1000,
    }
    per_thousand["total"] = sum(per_thousand.values())
    results["rebuild"]["cpu_ms_per_1000_events"] = per_thousand
    await probe.close()

    results["rss_mb"] = {
        "service": {
            "cli.py serve (API, relay, projector)": peak_rss_mb(service.pid),
            "rebuild": results["rebuild"]["rss_mb"],
        },
        "harness": {
            "trivial endpoint": peak_rss_mb(trivial.pid),
            "write ceilings": appends["rss_mb"],
            "python -m bench": peak_rss_mb(),
        },
    }
    return results


def _ceiling_db(settings: Settings) -> str:
    return settings.database_url.rsplit("/", 1)[1] + "_ceiling"


async def postgres_version(settings: Settings) -> tuple[str, str]:
    """The server's version and whether autovacuum runs (off: the projector vacuums the read
    table itself, by the same thresholds)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return str(await conn.fetchval("SHOW server_version")), str(
            await conn.fetchval("SHOW autovacuum")
        )
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    require_wrk()
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    options.out.mkdir(parents=True, exist_ok=True)
    settings = bench_settings(options.database_url, options.amqp_url)
    ceiling_url = with_database(settings.database_url, _ceiling_db(settings))
    service = Server(
        ["cli.py", "serve"], settings, settings.port, options.out / f"{stamp}-service.log"
    )
    trivial_port = free_port()
    trivial = Server(
        ["-m", "bench.trivial"],
        settings.model_copy(update={"port": trivial_port}),
        trivial_port,
        options.out / f"{stamp}-trivial.log",
    )
    if load_before > (os.cpu_count() or 1):
        log(f"the machine is busy (load average {load_before:.1f}): figures will be noisy")
    log(f"database {settings.database_url.rsplit('/', 1)[1]}, service on :{settings.port}")
    try:
        service.start("/ready")
        trivial.start("/health")
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            results = uvloop.run(measure(options, settings, service, trivial, Path(work)))
        version, autovacuum = uvloop.run(postgres_version(settings))
        results["machine"] = {**report.machine(version), "postgresql_autovacuum": autovacuum}
    finally:
        service.stop()
        trivial.stop()
        uvloop.run(cleanup(settings, [ceiling_url]))
    finished = datetime.now(UTC)
    results.update(
        started_at=started.isoformat(timespec="seconds"),
        finished_at=finished.isoformat(timespec="seconds"),
        duration_s=(finished - started).total_seconds(),
        command="python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        database=settings.database_url.rsplit("/", 1)[1],
        exchange=settings.exchange,
        queues=[settings.projector_queue, settings.dead_letter_queue, settings.event_log_stream],
        options={k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        peer_rss_mb=PEER_RSS_MB,
        # Other work on the machine skews every figure; the 1-minute load shows how much.
        load_average=[load_before, os.getloadavg()[0]],
    )
    results["targets"] = report.evaluate(results)
    json_path, md_path = report.write(results, options.out, stamp)
    print(md_path.read_text())
    log(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
