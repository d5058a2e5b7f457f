"""Past one instance of each part: two command services, two query services, two projectors and
two relays behind the gateway, under writes; one of each is killed (SIGKILL) and nothing
acknowledged is lost."""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from projector.verify import verify
from shared.config import Settings
from tests.e2e.test_gateway import NGINX, nginx
from tests.faults.pipeline import Pipeline, caught_up, pipeline
from tests.helpers import JSON, Process, eventually, store_events

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make system-deps)"),
]

UNACKNOWLEDGED = {502, 503, 504}
"""The gateway's answer when the instance holding the request died: the write may or may not
have been stored, and the client knows it was not acknowledged."""


@dataclass
class Acknowledged:
    """What the gateway confirmed for one task: its version and the write's store position."""

    version: int
    position: int
    deleted: bool = False


@dataclass
class Readers:
    """Clients reading acknowledged tasks and a filtered list through the gateway meanwhile."""

    url: str
    writers: Writers
    clients: int = 2
    answers: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            await asyncio.gather(*(self._client(http, n) for n in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, number: int) -> None:
        rng = random.Random(100 + number)
        while not self.writers.stop.is_set():
            known = list(self.writers.acknowledged)
            path = (
                f"/api/v1/tasks/{rng.choice(known)}"
                if known and rng.random() < 0.7
                else "/api/v1/tasks?tags=a&limit=5"
            )
            try:
                answer = await http.get(path)
            except httpx.TransportError:
                continue
            self.answers[answer.status_code] = self.answers.get(answer.status_code, 0) + 1
            # 404: a task deleted meanwhile; 503: the instance holding the read died.
            if answer.status_code not in (200, 404, *UNACKNOWLEDGED):
                self.failures.append(f"GET {path}: {answer.status_code} {answer.text[:300]}")


@dataclass
class Writers:
    """Clients that create, patch and delete tasks of their own through the gateway."""

    url: str
    clients: int = 6
    acknowledged: dict[str, Acknowledged] = field(default_factory=dict)
    count: int = 0
    """Writes acknowledged (201, 200, 204)."""
    unacknowledged: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=30) as http:
            await asyncio.gather(*(self._client(http, n) for n in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, number: int) -> None:
        rng = random.Random(number)
        mine: list[str] = []
        while not self.stop.is_set():
            roll = rng.random()
            try:
                if not mine or roll < 0.4:
                    body = {"title": f"client {number}", "tags": rng.sample(["a", "b", "c"], 2)}
                    answer = await http.post("/api/v1/tasks", headers=JSON, json=body)
                    task_id = answer.json()["id"] if answer.status_code == 201 else None
                elif roll < 0.95:
                    task_id = rng.choice(mine)
                    patch = {"priority": rng.randint(1, 5), "completed": rng.random() < 0.5}
                    answer = await http.patch(f"/api/v1/tasks/{task_id}", headers=JSON, json=patch)
                else:
                    task_id = mine.pop(rng.randrange(len(mine)))
                    answer = await http.delete(f"/api/v1/tasks/{task_id}")
            except httpx.TransportError:
                self.unacknowledged += 1
                continue
            if answer.status_code in UNACKNOWLEDGED:
                self.unacknowledged += 1
            elif answer.status_code in (200, 201, 204) and task_id is not None:
                self.count += 1
                if answer.status_code == 201:
                    mine.append(task_id)
                self.acknowledged[task_id] = Acknowledged(
                    int(answer.headers["etag"].strip('"')),
                    int(answer.headers["x-event-position"]),
                    deleted=answer.status_code == 204,
                )
            else:
                self.failures.append(f"{answer.status_code} {answer.text[:300]}")


async def polite_get(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> httpx.Response:
    """A GET as a well-behaved client sends it through the gateway: past its per-client rate
    limit (503 with Retry-After), wait as told and ask again."""
    for _ in range(60):
        answer = await http.get(path, headers=headers)
        if answer.status_code != 503 or "from this client" not in answer.text:
            return answer
        await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
    return answer


def gateway_log(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def ready_value(http: httpx.AsyncClient, process: Process, key: str) -> object:
    return (await http.get(f"{process.url}/ready")).json().get(key)


async def start_all(running: Pipeline) -> dict[str, list[Process]]:
    """Two of each part, started together; the first relay and projector start first, so they
    are the active ones when the standbys come up."""
    first = await asyncio.gather(running.relay("relay-1"), running.projector("projector-1"))
    rest = await asyncio.gather(
        running.relay("relay-2"),
        running.projector("projector-2"),
        *(running.command() for _ in range(2)),
        *(running.start(["-m", "query_service"], "query_port", f"query-{n}") for n in (1, 2)),
    )
    return {
        "relay": [first[0], rest[0]],
        "projector": [first[1], rest[1]],
        "command": list(rest[2:4]),
        "query": list(rest[4:6]),
    }


async def test_killing_one_of_every_doubled_part_under_writes_loses_no_acknowledged_write(
    settings: Settings, tmp_path: Path
) -> None:
    async with pipeline(settings, tmp_path) as running, httpx.AsyncClient(timeout=30) as probe:
        parts = await start_all(running)
        relays = parts["relay"]
        await eventually(lambda: ready_value(probe, relays[0], "relay_active"), 60)
        assert await ready_value(probe, relays[1], "relay_active") is False
        ports = {name: [p.port for p in processes] for name, processes in parts.items()}
        with nginx(ports["command"], ports["query"], tmp_path / "nginx.log") as url:
            writers = Writers(url)
            readers = Readers(url, writers)
            load = asyncio.gather(writers.run(), readers.run())
            await eventually(lambda: writers.count >= 150, 60)
            # One of each: the active relay, the projector consuming first, and one instance of
            # each service, while requests are in flight.
            for name in ("relay", "projector", "command", "query"):
                parts[name][0].kill(signal.SIGKILL)
            before_kill = writers.count
            reads_before_kill = readers.answers.get(200, 0)
            await eventually(lambda: writers.count >= before_kill + 150, 60)
            await eventually(lambda: readers.answers.get(200, 0) >= reads_before_kill + 50, 60)
            writers.stop.set()
            await load

            await caught_up(settings, 60)
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                head = max(ack.position for ack in writers.acknowledged.values())
                reads = {
                    task_id: await polite_get(
                        http, f"/api/v1/tasks/{task_id}", {"X-Min-Position": str(head)}
                    )
                    for task_id in writers.acknowledged
                }
            survivor_active = await ready_value(probe, relays[1], "relay_active")

    assert writers.failures == []
    assert readers.failures == []
    # Both instances of each service took requests before the kill; the survivors after it.
    upstreams = [entry["upstream"] for entry in gateway_log(tmp_path / "nginx.log")]
    for name in ("command", "query"):
        for process in parts[name]:
            assert any(f"127.0.0.1:{process.port}" in used for used in upstreams), name
    assert writers.count >= before_kill + 150
    assert survivor_active is True
    stored = {
        (str(row["originator_id"]), row["originator_version"])
        for row in await store_events(settings)
    }
    for task_id, ack in writers.acknowledged.items():
        assert (task_id, ack.version) in stored, task_id
        answer = reads[task_id]
        if ack.deleted:
            assert answer.status_code == 404, (task_id, answer.text)
        else:
            assert answer.status_code == 200, (task_id, answer.text)
            assert answer.json()["version"] >= ack.version
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()
