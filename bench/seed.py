"""Realistic task data, and seeding it through the real write path (HTTP POST, concurrently)."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson

from bench.client import Connection


def _words(text: str) -> list[str]:
    return text.split()


TAGS = _words(
    "work urgent home personal finance health errands shopping family travel reading writing "
    "meeting email phone project research design review planning budget taxes garden car kids "
    "school fitness cooking cleaning repairs bills insurance legal hiring sales marketing "
    "support release bug feature docs ops security backup learning music friends volunteer "
    "someday waiting"
)

WORDS = _words(
    "quarterly report draft numbers finance team review plan budget meeting notes call client "
    "invoice payment order update website page design logo sketch ticket release version "
    "deploy server database backup restore migrate schema index query cache memory profile "
    "test suite build pipeline script fix bug crash error timeout retry queue message event "
    "stream batch export import sheet chart slide deck talk conference travel flight hotel "
    "visa passport train platform dentist doctor appointment pharmacy groceries milk bread "
    "coffee dinner lunch birthday gift card party wedding garden fence paint roof window door "
    "kitchen sink boiler insurance renewal tax return receipt bank account loan mortgage "
    "lease contract lawyer hiring interview candidate offer onboarding training course book "
    "chapter article blog newsletter podcast video recording guitar piano lesson gym run swim "
    "bike yoga friends family kids school homework teacher volunteer charity donation cleanup "
    "recycling car tyres service oil garage parking permit license reminder form letter "
    "postcard photo album"
)

SEARCH_QUERY = "quarterly report"
"""Two words of the vocabulary (AND in websearch syntax): about 1 task in 100 matches both."""

LIST_TAGS = ("work", "urgent")


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def utc_today() -> date:
    """The service validates due dates against the UTC date, not the local one."""
    return datetime.now(UTC).date()


def _due(rng: random.Random, today: date) -> str:
    # From tomorrow on: a run that crosses midnight UTC must not send a date now in the past.
    return (today + timedelta(days=rng.randint(1, 365))).isoformat()


def task_body(rng: random.Random, today: date) -> dict[str, Any]:
    """A new task as a user would send it: 2-3 of 50 tags, any priority, often a due date."""
    body: dict[str, Any] = {
        "title": _sentence(rng, 3, 7).capitalize(),
        "priority": rng.randint(1, 5),
        "tags": rng.sample(TAGS, rng.choice((2, 3))),
    }
    if rng.random() < 0.5:
        body["description"] = _sentence(rng, 8, 30).capitalize() + "."
    if rng.random() < 0.6:
        body["due_date"] = _due(rng, today)
    return body


def patch_body(rng: random.Random, today: date) -> dict[str, Any]:
    """One everyday edit: reprioritise, tick off, rename, retag or reschedule."""
    kind = rng.random()
    if kind < 0.3:
        return {"priority": rng.randint(1, 5)}
    if kind < 0.55:
        return {"completed": rng.random() < 0.7}
    if kind < 0.75:
        return {"title": _sentence(rng, 3, 7).capitalize()}
    if kind < 0.9:
        return {"tags": rng.sample(TAGS, rng.choice((1, 2, 3)))}
    return {"due_date": _due(rng, today)}


def body_lines(make: Any, rng: random.Random, count: int) -> list[str]:
    """Bodies for wrk, one JSON document a line, generated once so Lua only picks."""
    today = utc_today()
    return [orjson.dumps(make(rng, today)).decode() for _ in range(count)]


@dataclass(frozen=True)
class Seeded:
    ids: list[str]
    last_position: int
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.ids) / self.seconds if self.seconds > 0 else 0.0


JSON = {"Content-Type": "application/json"}


async def seed(
    host: str, port: int, count: int, rng: random.Random, concurrency: int = 32
) -> Seeded:
    """POST `count` tasks over `concurrency` keep-alive connections; any failure aborts."""
    ids: list[str] = []
    last = 0
    remaining = count
    today = utc_today()
    started = time.monotonic()

    async def worker() -> None:
        nonlocal remaining, last
        connection = Connection(host, port)
        try:
            while remaining > 0:
                remaining -= 1
                body = orjson.dumps(task_body(rng, today))
                reply = await connection.request("POST", "/api/v1/tasks", body, JSON)
                if reply.status != 201:
                    raise RuntimeError(
                        f"seeding POST answered {reply.status}: {reply.body[:500]!r}"
                    )
                ids.append(orjson.loads(reply.body)["id"])
                last = max(last, int(reply.headers["x-event-position"]))
        finally:
            await connection.close()

    # One line redrawn on a terminal; a line every 10 s in a log file.
    redraw = sys.stderr.isatty()

    async def progress() -> None:
        while True:
            await asyncio.sleep(2.0 if redraw else 10.0)
            elapsed = time.monotonic() - started
            line = f"seeded {len(ids):,}/{count:,} ({len(ids) / elapsed:,.0f}/s)"
            sys.stderr.write(f"\r{line}" if redraw else f"{line}\n")
            sys.stderr.flush()

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    finally:
        reporter.cancel()
    seconds = time.monotonic() - started
    sys.stderr.write(("\r" if redraw else "") + f"seeded {len(ids):,} tasks in {seconds:,.1f} s\n")
    return Seeded(ids, last, seconds)


async def projection_position(connection: Connection) -> int:
    reply = await connection.request("GET", "/api/v1/tasks?limit=1")
    return int(reply.headers.get("x-projection-position", "0"))


async def wait_caught_up(connection: Connection, position: int, patience: float = 600.0) -> float:
    """Poll a read until its X-Projection-Position reaches `position`; returns seconds waited."""
    started = time.monotonic()
    while await projection_position(connection) < position:
        if time.monotonic() - started > patience:
            raise TimeoutError(f"the projection did not reach position {position} in {patience} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def deep_cursor(connection: Connection, depth: int) -> str:
    """Walk the default sort page by page to `depth` and return the cursor that continues there."""
    walked = 0
    cursor: str | None = None
    while walked < depth:
        limit = min(100, depth - walked)
        path = f"/api/v1/tasks?limit={limit}"
        if cursor is not None:
            path += f"&cursor={quote(cursor)}"
        reply = await connection.request("GET", path)
        if reply.status != 200:
            raise RuntimeError(f"cursor walk answered {reply.status}: {reply.body[:500]!r}")
        page = orjson.loads(reply.body)
        walked += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            raise RuntimeError(f"only {walked} tasks to walk, {depth} needed")
    assert cursor is not None
    return cursor
