"""The composition root: every process's app, built from settings in one place.

`cli.py serve` (everything on one port), the command service, the query service, the
projector and the relay alone are each one `AppSpec` of the parts below. A part is what a
process holds open while it serves, with the checks it adds to `/ready` and the figures it
adds to `/metrics`; `shared/` knows none of them by name. The `*_from_environment` callables
are the uvicorn factories (`python -m <service>`, `cli.py serve`, `cli.py relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial

import asyncpg
from fastapi import APIRouter, FastAPI
from prometheus_client.core import Metric
from starlette.datastructures import State

from command_service.api import DIRECT as DIRECT_WRITES
from command_service.api import WRITE_SCHEMAS
from command_service.api import router as write_router
from command_service.application import TaskApplication, migrate_store
from command_service.gate import BodyGate
from command_service.relay import Relay, asyncapi_router
from projector.consumer import Projector
from projector.maintenance import keep_vacuumed
from projector.projection import migrate_read_model
from query_service.api import DIRECT as DIRECT_READS
from query_service.api import router as read_router
from query_service.events import router as events_router
from query_service.resources import READ_ACCESS, ReadPools
from shared.app import AppSpec, Resource, make_app
from shared.background import migrated_then_running
from shared.config import Settings
from shared.database import keep_session
from shared.docs import whole_api_router
from shared.health import Check, CheckResult, postgres_check, rabbitmq_check
from shared.metrics import counter, lag_gauges, safe_lag
from shared.server import from_environment


class EventStore:
    """The library's application over a migrated store, as `app.state.tasks` for the routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tasks: TaskApplication | None = None

    @contextlib.asynccontextmanager
    async def open(self, state: State) -> AsyncIterator[None]:
        if self.settings.migrate_on_start:
            await migrate_store(self.settings)
        tasks = await asyncio.to_thread(TaskApplication, self.settings, {"CREATE_TABLE": "n"})
        try:
            tasks.reader = await asyncpg.create_pool(
                self.settings.database_url,
                min_size=1,
                max_size=self.settings.write_pool_size,
                reset=keep_session,
            )
            state.tasks = self.tasks = tasks
            yield
        finally:
            if tasks.reader is not None:
                await tasks.reader.close()
            await asyncio.to_thread(tasks.close)

    async def ready(self) -> CheckResult:
        """503 while the group-commit thread is dead or stuck (it is replaced when found so)."""
        problem = self.tasks.committer.problem() if self.tasks is not None else None
        if problem is not None:
            return "commit", False, {"failure": f"the group-commit thread {problem}; restarted"}
        return "commit", True, {}

    async def metrics(self) -> Iterable[Metric]:
        if self.tasks is None:
            return []
        return [
            counter("tasks_events_appended", "Events appended to the store", self.tasks.appended)
        ]

    def resource(self) -> Resource:
        return Resource(self.open, (self.ready,), (self.metrics,))


def lag_check(
    name: str,
    lag: Callable[[], Awaitable[dict[str, float]]],
    stalled: Callable[[dict[str, float]], tuple[float, dict[str, object]]],
    stopped: str,
    limit: float,
) -> Check:
    """`/ready` for a part that follows the store: lag alone is fine, but behind the store and
    not moving for longer than `limit` seconds (failing or stuck) is not ready. `stalled` says
    for how long, and what the body shows of the part; an unreadable lag is no verdict."""

    async def check() -> CheckResult:
        try:
            now = await lag()
        except (OSError, asyncpg.PostgresError):
            return name, True, {}
        seconds, extra = stalled(now)
        if seconds > limit:
            failure = f"behind the store and {stopped} for {seconds:.0f} s"
            return name, False, {**extra, "failure": failure}
        return name, True, extra

    return check


def relay_resource(settings: Settings) -> Resource:
    """The relay as a background task (one publishes; the others stand by for the lock)."""
    relay = Relay(settings)

    running = migrated_then_running(settings, migrate_store, ("relay", relay.run))

    def stalled(lag: dict[str, float]) -> tuple[float, dict[str, object]]:
        # A standby, waiting for the lock, is not the one publishing.
        behind = 0 if relay.standby else int(lag["positions"])
        extra = {"relay_lag": lag, "relay_active": relay.active}
        return relay.stall.observe(relay.recorded, behind), extra

    async def metrics() -> Iterable[Metric]:
        published = counter(
            "tasks_events_published", "Events confirmed by RabbitMQ", relay.published
        )
        return [published, *lag_gauges("tasks_relay_lag", "Relay", await safe_lag(relay.lag))]

    ready = lag_check("relay", relay.lag, stalled, "not publishing", settings.stall_seconds)
    return Resource(running, (ready,), (metrics,))


def projector_resource(settings: Settings) -> Resource:
    """The projector and the read table's maintenance as background tasks."""
    projector = Projector(settings)

    running = migrated_then_running(
        settings,
        migrate_read_model,
        ("projector", projector.run),
        ("read table maintenance", partial(keep_vacuumed, settings)),
    )

    def stalled(lag: dict[str, float]) -> tuple[float, dict[str, object]]:
        extra = {"projection_lag": lag, "projector_consuming": projector.consuming}
        return projector.stall.observe(projector.shared_position, int(lag["positions"])), extra

    async def metrics() -> Iterable[Metric]:
        lag = await safe_lag(projector.lag)
        return [
            counter(
                "tasks_events_projected", "Events applied to the read table", projector.applied
            ),
            counter(
                "tasks_dead_letters", "Messages set aside as undecodable", projector.dead_lettered
            ),
            *lag_gauges("tasks_projection_lag", "Projection", lag),
        ]

    ready = lag_check("projector", projector.lag, stalled, "not advancing", settings.stall_seconds)
    return Resource(running, (ready,), (metrics,))


def _app(
    title: str,
    settings: Settings,
    routers: tuple[APIRouter, ...],
    resources: tuple[Resource, ...],
    broker: bool,
    writes: bool = False,
    reads: ReadPools | None = None,
) -> FastAPI:
    """One process's app: `/ready` checks PostgreSQL first (and RabbitMQ when the process
    publishes or consumes), then its resources; every app applies the whole API's access
    rules. `writes` adds the write bodies' schemas and the 413/415 gate (inside the request-id
    and metrics middleware, so those answers are counted and echo it); `reads` puts the read
    model's position on reads."""
    checks = (postgres_check(settings),) + ((rabbitmq_check(settings),) if broker else ())
    gate = (BodyGate, {"max_bytes": settings.max_body_bytes})
    return make_app(
        AppSpec(
            title=title,
            settings=settings,
            routers=routers,
            resources=resources,
            checks=checks,
            schemas=WRITE_SCHEMAS if writes else {},
            middleware=(gate,) if writes else (),
            access=READ_ACCESS,
            position=None if reads is None else reads.position,
            direct=(DIRECT_WRITES if writes else ()) + (() if reads is None else DIRECT_READS),
        )
    )


def create_app(settings: Settings) -> FastAPI:
    """Single-process mode: every route on one port, relay and projector as background tasks."""
    reads = ReadPools(settings)
    routers = (read_router, events_router, write_router, asyncapi_router)
    resources = (
        EventStore(settings).resource(),
        projector_resource(settings),
        Resource(reads.open),
        relay_resource(settings),
    )
    return _app("Tasks", settings, routers, resources, broker=True, writes=True, reads=reads)


def create_command_app(settings: Settings) -> FastAPI:
    """The write API, and the relay unless `run_relay` is off."""
    routers = (write_router, asyncapi_router, whole_api_router)
    resources: tuple[Resource, ...] = (EventStore(settings).resource(),)
    if settings.run_relay:
        resources += (relay_resource(settings),)
    title = "Tasks command service"
    return _app(title, settings, routers, resources, broker=settings.run_relay, writes=True)


def create_query_app(settings: Settings) -> FastAPI:
    """The read API: lists, tasks, history and the event feed."""
    reads = ReadPools(settings)
    routers = (read_router, events_router)
    resources = (Resource(reads.open),)
    return _app("Tasks query service", settings, routers, resources, broker=False, reads=reads)


def create_projector_app(settings: Settings) -> FastAPI:
    """The projector, with /health, /ready and /metrics."""
    resources = (projector_resource(settings),)
    return _app("Tasks projector", settings, (), resources, broker=True)


def create_relay_app(settings: Settings) -> FastAPI:
    """The relay on its own (`cli.py relay`), with /health, /ready and /metrics."""
    resources = (relay_resource(settings),)
    return _app("Tasks relay", settings, (asyncapi_router,), resources, broker=True)


# The uvicorn factories: each worker process builds its app from its own environment.
app_from_environment = partial(from_environment, create_app)
command_app_from_environment = partial(from_environment, create_command_app)
query_app_from_environment = partial(from_environment, create_query_app)
projector_app_from_environment = partial(from_environment, create_projector_app)
relay_app_from_environment = partial(from_environment, create_relay_app)


def whole_api_document(settings: Settings) -> str:
    """The single-process app's document: every route of every service (`shared/openapi.json`)."""
    return json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"
