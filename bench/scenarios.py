"""The load shapes users put on the service, with the peer's figure and the target for each."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson

from bench.ceilings import Statement, get_query, list_query
from bench.client import Connection
from bench.cpu import Meter
from bench.measure import Round, Summary, summarise, with_cpu
from bench.seed import LIST_TAGS, SEARCH_QUERY
from bench.wrk import Load, run_wrk
from shared.config import Settings

PEER_RSS_MB = 80.0
PEER: dict[str, float] = {"create": 162, "list": 39, "get": 489, "patch": 248, "offset": 183}
"""The plain CRUD implementation's req/s at 100,000 tasks on this kind of machine (issue 7)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    load: Load
    peer: float | None = None
    peer_factor: float | None = None
    """Target: at least this many times the peer's req/s."""
    p99_below_ms: float | None = None
    ceiling_share: float | None = None
    """Target: at least this share of the raw-SQL ceiling measured in the same run."""
    statement: Statement | None = None
    """The raw SQL behind a read, for its ceiling."""
    share_of: tuple[str, float] | None = None
    """Target: at least this share of another scenario's req/s in the same run."""
    http_share: float | None = None
    """Target: at least this share of the trivial endpoint's req/s on the same server stack."""
    vacuum_before: bool = False
    """Run a manual `VACUUM (ANALYZE)` of the read table before this scenario."""

    @property
    def writes(self) -> bool:
        return self.load.method != "GET"


@dataclass(frozen=True)
class Files:
    ids: Path
    creates: Path
    patches: Path


def build(
    settings: Settings, files: Files, ids: list[str], depth: int, cursor: str, rng: random.Random
) -> list[Scenario]:
    """Reads first, on the data as seeded; writes last, because they grow and shift it."""
    list_params = [
        ("priority", "3"),
        ("tags", ",".join(LIST_TAGS)),
        ("limit", "20"),
    ]
    search_params = [("q", SEARCH_QUERY), ("limit", "20")]
    title_params = [("sort", "title"), ("limit", "20")]
    offset_params = [("limit", "20"), ("offset", str(depth))]
    cursor_params = [("limit", "20"), ("cursor", cursor)]

    def path(params: list[tuple[str, str]]) -> str:
        return "/api/v1/tasks?" + "&".join(f"{k}={quote(v, safe=',')}" for k, v in params)

    return [
        Scenario(
            "get",
            "GET by id",
            Load("GET", "/api/v1/tasks/", files.ids),
            peer=PEER["get"],
            peer_factor=6,
            ceiling_share=0.5,
            http_share=0.6,
            statement=get_query(ids, rng),
        ),
        Scenario(
            "list",
            "GET list priority=3&tags=work,urgent&limit=20 (with total)",
            Load("GET", path(list_params)),
            peer=PEER["list"],
            peer_factor=30,
            ceiling_share=0.5,
            statement=list_query(settings, list_params),
        ),
        Scenario(
            "search",
            f"GET list q={SEARCH_QUERY} (full text, with total)",
            Load("GET", path(search_params)),
            ceiling_share=0.5,
            statement=list_query(settings, search_params),
        ),
        Scenario(
            "title",
            "GET list sort=title (case- and accent-insensitive order, with total)",
            Load("GET", path(title_params)),
            ceiling_share=0.5,
            statement=list_query(settings, title_params),
        ),
        # As seeded: no one has run VACUUM, only autovacuum may have (the read table's settings).
        Scenario(
            "offset",
            f"GET list offset={depth}, no manual VACUUM since seeding",
            Load("GET", path(offset_params)),
            peer=PEER["offset"],
            ceiling_share=0.5,
            statement=list_query(settings, offset_params),
            share_of=("offset_vacuumed", 0.8),
        ),
        Scenario(
            "cursor",
            f"GET list by cursor at depth {depth}",
            Load("GET", path(cursor_params)),
            peer=PEER["offset"],
            peer_factor=20,
            ceiling_share=0.5,
            statement=list_query(settings, cursor_params),
        ),
        Scenario(
            "offset_vacuumed",
            f"GET list offset={depth} after a manual VACUUM",
            Load("GET", path(offset_params)),
            peer=PEER["offset"],
            ceiling_share=0.5,
            statement=list_query(settings, offset_params),
            vacuum_before=True,
        ),
        Scenario(
            "patch",
            "PATCH one field (random existing ids)",
            Load("PATCH", "/api/v1/tasks/", files.ids, files.patches),
            peer=PEER["patch"],
            peer_factor=6,
            ceiling_share=1.0,
        ),
        Scenario(
            "create",
            "POST create (2-3 tags)",
            Load("POST", "/api/v1/tasks", None, files.creates),
            peer=PEER["create"],
            peer_factor=10,
            ceiling_share=1.5,
            p99_below_ms=50,
        ),
    ]


@dataclass(frozen=True)
class Plan:
    """How long and how hard: the same for every scenario and ceiling of a run."""

    warmup: int
    duration: int
    rounds: int
    threads: int = 2
    connections: int = 32


def _first_line(path: Path) -> str:
    with path.open() as lines:
        return lines.readline().strip()


async def preflight(connection: Connection, load: Load) -> None:
    """One request of the load before it runs, so a wrong path or body fails the run instead of
    turning into a fast stream of 4xx answers; a list page must carry its exact total."""
    path = load.path + (_first_line(load.ids_file) if load.ids_file else "")
    body = _first_line(load.bodies_file).encode() if load.bodies_file else None
    headers = {"Content-Type": load.content_type} if body is not None else None
    reply = await connection.request(load.method, path, body, headers)
    if reply.status not in (200, 201):
        raise RuntimeError(f"{load.method} {path} answered {reply.status}: {reply.body[:500]!r}")
    page = orjson.loads(reply.body)
    if "items" in page and not isinstance(page.get("total"), int):
        raise RuntimeError(f"{load.method} {path} answered a page without an exact total")


async def drive(base_url: str, load: Load, plan: Plan, meter: Meter) -> Summary:
    """A warm-up run (discarded), then `plan.rounds` runs of `plan.duration`; medians, with the
    CPU per request of `meter`'s processes sampled before and after each round."""

    async def run(seconds: int) -> Round:
        before = meter.sample()
        measured = await asyncio.to_thread(
            run_wrk, base_url, load, seconds, plan.threads, plan.connections
        )
        return with_cpu(measured, meter, before)

    if plan.warmup > 0:
        await run(plan.warmup)
    return summarise([await run(plan.duration) for _ in range(plan.rounds)])
