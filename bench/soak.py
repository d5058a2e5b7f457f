"""`python -m bench.soak`: a bounded soak. Mixed reads and writes from a second process on
loopback for a fixed time and request count, the service's memory at start and end, then
`verify`; writes bench/results/soak-<timestamp>.{json,md} and exits non-zero on any failure."""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import random
import shlex
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import uvloop

from bench.client import Connection, Reply
from bench.measure import percentile
from bench.seed import JSON, LIST_TAGS, SEARCH_QUERY, patch_body, seed, task_body, utc_today
from bench.seed import wait_caught_up as wait_projected
from bench.stack import ROOT, Server, add_service_arguments, bench_settings, cleanup
from projector.verify import verify

# (kind, weight): 70 % reads of several kinds, 30 % writes.
MIX = (
    ("get", 25),
    ("list", 15),
    ("list_filtered", 12),
    ("search", 8),
    ("history", 5),
    ("cursor_page", 5),
    ("create", 12),
    ("patch", 14),
    ("delete", 4),
)
# What each kind may answer without it being an error. A 404 is also fine for a task another
# connection has deleted meanwhile (see `Load.record`).
EXPECTED = {
    "get": {200},
    "list": {200},
    "list_filtered": {200},
    "search": {200},
    "history": {200},
    "cursor_page": {200},
    "create": {201},
    "patch": {200},
    "delete": {204},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--max-requests", type=int, default=300_000, help="request cap")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--seed-tasks", type=int, default=2_000, help="tasks created first")
    parser.add_argument("--seed", type=int, default=11, help="random seed of the load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    add_service_arguments(parser)
    return parser.parse_args(argv)


def redacted(value: Any) -> Any:
    """An option as written to the results: a URL's password replaced by `***`."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.password is not None:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
    return value


def log(message: str) -> None:
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and its high-water mark (VmHWM) of a live process, in MB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class Load:
    """The driver's view of the data: live task ids, and what each kind of request answered."""

    def __init__(self, ids: list[str], rng: random.Random) -> None:
        self.ids = ids
        self.deleted: set[str] = set()
        # A read of a task sends the position of its creation (read-your-writes), so a GET
        # right after a POST waits for the projection instead of answering 404.
        self.created_at: dict[str, int] = {}
        self.rng = rng
        self.today = utc_today()
        self.kinds = [kind for kind, _ in MIX]
        self.weights = [weight for _, weight in MIX]
        self.statuses: dict[str, Counter[int]] = {kind: Counter() for kind in self.kinds}
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.cursor: str | None = None

    def request(self, kind: str) -> tuple[str, str, bytes | None, dict[str, str], str]:
        """(method, path, body, headers, task id) of one request of this kind."""
        task_id, headers = self._target(kind)
        method, path, body = self._line(kind, task_id)
        if body is not None:
            headers = {**headers, **JSON}
        return method, path, body, headers, task_id

    def _target(self, kind: str) -> tuple[str, dict[str, str]]:
        task_id = self.rng.choice(self.ids) if self.ids else "00000000-0000-0000-0000-000000000000"
        if kind == "delete" and self.ids:
            # Gone from the pool before the request leaves: no one else picks it from now on.
            self.ids.remove(task_id)
            self.deleted.add(task_id)
        position = self.created_at.get(task_id)
        headers = {"X-Min-Position": str(position)} if kind == "get" and position else {}
        return task_id, headers

    def _line(self, kind: str, task_id: str) -> tuple[str, str, bytes | None]:
        rng = self.rng
        if kind == "get":
            return "GET", f"/api/v1/tasks/{task_id}", None
        if kind == "list":
            return "GET", "/api/v1/tasks?limit=20", None
        if kind == "list_filtered":
            tag = rng.choice(LIST_TAGS)
            return "GET", f"/api/v1/tasks?tags={tag}&priority_min=3&sort=due_date", None
        if kind == "search":
            return "GET", f"/api/v1/tasks?q={quote(SEARCH_QUERY)}", None
        if kind == "history":
            return "GET", f"/api/v1/tasks/{task_id}/history", None
        if kind == "cursor_page":
            cursor = f"&cursor={quote(self.cursor)}" if self.cursor else ""
            return "GET", f"/api/v1/tasks?limit=50{cursor}", None
        if kind == "create":
            return "POST", "/api/v1/tasks", orjson.dumps(task_body(rng, self.today))
        if kind == "patch":
            return "PATCH", f"/api/v1/tasks/{task_id}", orjson.dumps(patch_body(rng, self.today))
        return "DELETE", f"/api/v1/tasks/{task_id}", None

    def record(self, kind: str, task_id: str, reply: Reply, seconds: float) -> None:
        self.latencies.append(seconds)
        self.statuses[kind][reply.status] += 1
        gone = reply.status == 404 and task_id in self.deleted and kind in ("get", "patch")
        if reply.status not in EXPECTED[kind] and not gone:
            self.failures[f"{kind} {reply.status}"] += 1
            return
        if kind == "create":
            created = orjson.loads(reply.body)["id"]
            self.ids.append(created)
            self.created_at[created] = int(reply.headers["x-event-position"])
        elif kind == "cursor_page":
            self.cursor = orjson.loads(reply.body)["next_cursor"]


async def _drive(host: str, port: int, ids: list[str], options: dict[str, Any]) -> dict[str, Any]:
    load = Load(ids, random.Random(options["seed"]))
    deadline = time.monotonic() + options["duration"]
    sent = 0
    last_position = 0

    async def worker() -> None:
        nonlocal sent, last_position
        connection = Connection(host, port)
        try:
            while time.monotonic() < deadline and sent < options["max_requests"]:
                sent += 1
                kind = load.rng.choices(load.kinds, load.weights)[0]
                method, path, body, headers, task_id = load.request(kind)
                started = time.perf_counter()
                try:
                    reply = await connection.request(method, path, body, headers)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    load.failures[f"{kind} {type(exc).__name__}"] += 1
                    await connection.close()
                    continue
                load.record(kind, task_id, reply, time.perf_counter() - started)
                if "x-event-position" in reply.headers:
                    last_position = max(last_position, int(reply.headers["x-event-position"]))
        finally:
            await connection.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(options["connections"])))
    seconds = time.monotonic() - started
    ordered = sorted(load.latencies)
    return {
        "seconds": seconds,
        "requests": len(ordered),
        "throughput_rps": len(ordered) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
        "statuses": {
            kind: {str(status): n for status, n in counts.items()}
            for kind, counts in load.statuses.items()
        },
        "errors": dict(load.failures),
        "last_position": last_position,
    }


def drive(host: str, port: int, ids: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """The load, run in a process of its own so it does not share the service's CPU budget."""
    return uvloop.run(_drive(host, port, ids, options))


async def _seed_and_wait(service: Server, count: int, rng: random.Random) -> list[str]:
    seeded = await seed("127.0.0.1", service.port, count, rng, concurrency=16)
    connection = Connection("127.0.0.1", service.port)
    try:
        await wait_projected(connection, seeded.last_position)
    finally:
        await connection.close()
    return seeded.ids


async def _settle_and_verify(service: Server, position: int, settings: Any) -> dict[str, Any]:
    connection = Connection("127.0.0.1", service.port)
    try:
        waited = await wait_projected(connection, position, patience=300)
    finally:
        await connection.close()
    report = io.StringIO()
    differences = await verify(settings, report)
    return {
        "caught_up_after_s": waited,
        "differences": len(differences),
        "report": report.getvalue(),
    }


def markdown(result: dict[str, Any]) -> str:
    load = result["load"]
    lines = [
        f"# Soak {result['started_at']}",
        "",
        f"`{result['command']}`; {result['options']['connections']} connections, "
        f"{result['options']['seed_tasks']} tasks seeded first, load average "
        f"{result['load_average'][0]:.1f} → {result['load_average'][1]:.1f}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests | {load['requests']:,} in {load['seconds']:.1f} s |",
        f"| throughput | {load['throughput_rps']:,.0f} requests/s |",
        f"| p50 / p99 / max | {load['p50_ms']:.1f} / {load['p99_ms']:.1f} / "
        f"{load['max_ms']:.1f} ms |",
        f"| errors | {sum(load['errors'].values())} {load['errors'] or ''} |",
        f"| verify | {result['verify']['differences']} difference(s), caught up "
        f"{result['verify']['caught_up_after_s']:.1f} s after the load |",
    ]
    for moment in ("start", "end"):
        memory = result["memory_mb"][moment]
        lines.append(
            f"| service memory at {moment} | VmRSS {memory['VmRSS']:.0f} MB, "
            f"VmHWM {memory['VmHWM']:.0f} MB |"
        )
    lines += ["", "| kind | statuses |", "|---|---|"]
    lines += [f"| {kind} | {counts} |" for kind, counts in load["statuses"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    options.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    settings = bench_settings(options.database_url, options.amqp_url)
    service = Server(
        ["cli.py", "serve"], settings, settings.port, options.out / f"soak-{stamp}-service.log"
    )
    log(f"database {settings.database_url.rsplit('/', 1)[1]}, service on :{settings.port}")
    try:
        service.start("/ready")
        ids = uvloop.run(_seed_and_wait(service, options.seed_tasks, random.Random(options.seed)))
        memory_start = memory_mb(service.pid)
        log(f"seeded {len(ids)} tasks; load for {options.duration} s from a second process")
        knobs = {name: getattr(options, name) for name in ("seed", "duration", "max_requests")}
        knobs["connections"] = options.connections
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            load = pool.submit(drive, "127.0.0.1", service.port, ids, knobs).result()
        memory_end = memory_mb(service.pid)
        log(f"{load['requests']:,} requests, errors {load['errors'] or 'none'}; verifying")
        verified = uvloop.run(_settle_and_verify(service, load["last_position"], settings))
    finally:
        service.stop()
        uvloop.run(cleanup(settings, []))
    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": "python -m bench.soak " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "options": {name: redacted(value) for name, value in vars(options).items()},
        "load": load,
        "memory_mb": {"start": memory_start, "end": memory_end},
        "verify": verified,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    (options.out / f"soak-{stamp}.json").write_text(
        orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    )
    text = markdown(result)
    (options.out / f"soak-{stamp}.md").write_text(text)
    print(text)
    log(f"wrote {options.out / f'soak-{stamp}.json'} and .md")
    clean = not load["errors"] and verified["differences"] == 0 and load["requests"] > 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
