"""Operations seen from outside: readiness follows the broker, metrics move with events,
API keys guard every API route, reads included."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

from composition import create_app
from shared.config import Settings
from shared.errors import ADVICE
from tests.helpers import JSON, free_port, serving, store_events


class TcpProxy:
    """A switchable TCP forwarder: lets a test take the broker away from one app only."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for pipe in self.pipes:
            pipe.cancel()
        await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


async def test_ready_turns_503_naming_rabbitmq_when_the_broker_is_unreachable_and_recovers(
    make_settings: Callable[..., Settings],
) -> None:
    broker = urlsplit(make_settings().amqp_url)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
    await proxy.start()
    settings = make_settings(amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
    async with serving(create_app(settings)) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"]["rabbitmq"] == "ok"

        await proxy.stop()
        down = await http.get("/ready")

        assert down.status_code == 503
        assert down.json()["error"] == "Service unavailable"
        assert "rabbitmq" in down.json()["details"]
        assert "postgresql" not in down.json()["details"]
        await proxy.start()
        recovered = await http.get("/ready")
        assert recovered.status_code == 200
        assert set(recovered.json()) >= {"status", "checks", "relay_lag", "projection_lag"}
    await proxy.stop()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_metrics_move_when_events_flow(settings: Settings) -> None:
    async with serving(create_app(settings)) as http:
        before = (await http.get("/metrics")).text

        for number in range(3):
            response = await http.post("/api/v1/tasks", headers=JSON, json={"title": f"m{number}"})
            assert response.status_code == 201
        head = len(await store_events(settings))
        await http.get("/api/v1/tasks", headers={"X-Min-Position": str(head)})
        after = (await http.get("/metrics")).text

    for name in ("tasks_events_published_total", "tasks_events_projected_total"):
        assert metric(after, name) >= metric(before, name) + 3, name
    assert metric(after, "tasks_relay_lag_positions") == 0
    assert metric(after, "tasks_projection_lag_positions") == 0
    assert metric(after, "tasks_dead_letters_total") == 0
    created = 'http_requests_total{method="POST",route="/api/v1/tasks",status="201"}'
    assert metric(after, created) == 3


async def test_with_api_keys_writes_and_reads_need_a_key(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=["k-one", "k-two"])
    async with serving(create_app(settings)) as http:
        missing = await http.post("/api/v1/tasks", headers=JSON, json={"title": "x"})
        wrong = await http.post(
            "/api/v1/tasks", headers={**JSON, "Authorization": "Bearer nope"}, json={"title": "x"}
        )
        right = await http.post(
            "/api/v1/tasks", headers={**JSON, "Authorization": "Bearer k-two"}, json={"title": "x"}
        )
        task_id = right.json()["id"]
        listing = await http.get("/api/v1/tasks")
        by_id = await http.get(f"/api/v1/tasks/{task_id}")
        deleted_too = await http.get("/api/v1/tasks?include_deleted=true")
        history = await http.get(f"/api/v1/tasks/{task_id}/history")
        history_with_key = await http.get(
            f"/api/v1/tasks/{task_id}/history", headers={"Authorization": "Bearer k-one"}
        )
        listing_with_key = await http.get(
            "/api/v1/tasks", headers={"Authorization": "Bearer k-one"}
        )
        delete = await http.delete(f"/api/v1/tasks/{task_id}")

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["cache-control"] == "no-store"
    for refused_read in (listing, by_id, deleted_too, history):
        assert refused_read.status_code == 401
        assert refused_read.headers["www-authenticate"] == "Bearer"
        assert refused_read.headers["cache-control"] == "no-cache"
        # An anonymous client learns nothing about the store, not even how many events it has.
        assert "x-projection-position" not in refused_read.headers
    assert missing.json() == {"error": "Unauthorized", "details": ADVICE[401]}
    assert "Authorization" in ADVICE[401]
    assert wrong.status_code == 403
    assert "x-projection-position" not in wrong.headers
    assert wrong.json() == {"error": "Forbidden", "details": ADVICE[403]}
    assert "Authorization" in ADVICE[403]
    assert right.status_code == 201
    assert history_with_key.status_code == 200
    assert listing_with_key.status_code == 200
    assert "x-projection-position" in listing_with_key.headers
    assert delete.status_code == 401
    assert len(await store_events(settings)) == 1
