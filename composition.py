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
from collections.abc import AsyncIterator, Iterable
from functools import partial
from typing import Any

import asyncpg
from fastapi import FastAPI
from prometheus_client.core import Metric
from starlette.datastructures import State

from command_service.api import WRITE_SCHEMAS
from command_service.api import router as write_router
from command_service.application import TaskApplication, migrate_store
from command_service.gate import BodyGate
from command_service.relay import Relay, asyncapi_router
from projector.consumer import Projector
from projector.maintenance import keep_vacuumed
from projector.projection import migrate_read_model
from query_service.api import READ_ACCESS, ReadPools
from query_service.api import router as read_router
from query_service.events import router as events_router
from shared.app import AppSpec, Resource, make_app
from shared.background import in_background
from shared.config import Settings
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
        state.tasks = self.tasks = tasks
        try:
            yield
        finally:
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


def relay_resource(settings: Settings) -> Resource:
    """The relay as a background task (one publishes; the others stand by for the lock)."""
    relay = Relay(settings)

    @contextlib.asynccontextmanager
    async def running(_: State) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrate_store(settings)
        async with in_background(("relay", relay.run())):
            yield

    async def ready() -> CheckResult:
        """Lag alone is fine, but the active relay behind the store and not publishing for
        longer than `stall_seconds` (failing or stuck) is not ready; a standby, waiting for
        the lock, is not the one publishing."""
        try:
            lag = await relay.lag()
        except (OSError, asyncpg.PostgresError):
            return "relay", True, {}
        extra: dict[str, object] = {"relay_lag": lag, "relay_active": relay.active}
        behind = 0 if relay.standby else int(lag["positions"])
        stalled = relay.stall.observe(relay.recorded, behind)
        if stalled > settings.stall_seconds:
            extra["failure"] = f"behind the store and not publishing for {stalled:.0f} s"
            return "relay", False, extra
        return "relay", True, extra

    async def metrics() -> Iterable[Metric]:
        published = counter(
            "tasks_events_published", "Events confirmed by RabbitMQ", relay.published
        )
        return [published, *lag_gauges("tasks_relay_lag", "Relay", await safe_lag(relay.lag))]

    return Resource(running, (ready,), (metrics,))


def projector_resource(settings: Settings) -> Resource:
    """The projector and the read table's maintenance as background tasks."""
    projector = Projector(settings)

    @contextlib.asynccontextmanager
    async def running(_: State) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrate_read_model(settings)
        async with in_background(
            ("projector", projector.run()),
            ("read table maintenance", keep_vacuumed(settings)),
        ):
            yield

    async def ready() -> CheckResult:
        """Lag alone is fine, but behind the store without advancing for longer than
        `stall_seconds` (not consuming, or stuck) is not ready."""
        try:
            lag = await projector.lag()
        except (OSError, asyncpg.PostgresError):
            return "projector", True, {}
        stalled = projector.stall.observe(projector.shared_position, int(lag["positions"]))
        extra: dict[str, object] = {
            "projection_lag": lag,
            "projector_consuming": projector.consuming,
        }
        if stalled > settings.stall_seconds:
            extra["failure"] = f"behind the store and not advancing for {stalled:.0f} s"
            return "projector", False, extra
        return "projector", True, extra

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

    return Resource(running, (ready,), (metrics,))


def _checks(settings: Settings, broker: bool) -> tuple[Check, ...]:
    """What every part needs before its own checks: PostgreSQL, and RabbitMQ when it publishes
    or consumes."""
    if broker:
        return postgres_check(settings), rabbitmq_check(settings)
    return (postgres_check(settings),)


def _write_gate(settings: Settings) -> tuple[tuple[type[Any], dict[str, Any]], ...]:
    # Inside the request-id and metrics middleware, so 413 and 415 are counted and echo it.
    return ((BodyGate, {"max_bytes": settings.max_body_bytes}),)


def create_app(settings: Settings) -> FastAPI:
    """Single-process mode: every route on one port, relay and projector as background tasks."""
    reads = ReadPools(settings)
    return make_app(
        AppSpec(
            title="Tasks",
            settings=settings,
            routers=(read_router, events_router, write_router, asyncapi_router),
            resources=(
                EventStore(settings).resource(),
                projector_resource(settings),
                Resource(reads.open),
                relay_resource(settings),
            ),
            checks=_checks(settings, broker=True),
            schemas=WRITE_SCHEMAS,
            middleware=_write_gate(settings),
            access=READ_ACCESS,
            position=reads.position,
        )
    )


def create_command_app(settings: Settings) -> FastAPI:
    """The write API, and the relay unless `run_relay` is off."""
    resources = [EventStore(settings).resource()]
    if settings.run_relay:
        resources.append(relay_resource(settings))
    return make_app(
        AppSpec(
            title="Tasks command service",
            settings=settings,
            routers=(write_router, asyncapi_router, whole_api_router),
            resources=tuple(resources),
            checks=_checks(settings, broker=settings.run_relay),
            schemas=WRITE_SCHEMAS,
            middleware=_write_gate(settings),
            access=READ_ACCESS,
        )
    )


def create_query_app(settings: Settings) -> FastAPI:
    """The read API: lists, tasks, history and the event feed."""
    reads = ReadPools(settings)
    return make_app(
        AppSpec(
            title="Tasks query service",
            settings=settings,
            routers=(read_router, events_router),
            resources=(Resource(reads.open),),
            checks=_checks(settings, broker=False),
            access=READ_ACCESS,
            position=reads.position,
        )
    )


def create_projector_app(settings: Settings) -> FastAPI:
    """The projector, with /health, /ready and /metrics."""
    return make_app(
        AppSpec(
            title="Tasks projector",
            settings=settings,
            resources=(projector_resource(settings),),
            checks=_checks(settings, broker=True),
            access=READ_ACCESS,
        )
    )


def create_relay_app(settings: Settings) -> FastAPI:
    """The relay on its own (`cli.py relay`), with /health, /ready and /metrics."""
    return make_app(
        AppSpec(
            title="Tasks relay",
            settings=settings,
            routers=(asyncapi_router,),
            resources=(relay_resource(settings),),
            checks=_checks(settings, broker=True),
            access=READ_ACCESS,
        )
    )


# The uvicorn factories: each worker process builds its app from its own environment.
app_from_environment = partial(from_environment, create_app)
command_app_from_environment = partial(from_environment, create_command_app)
query_app_from_environment = partial(from_environment, create_query_app)
projector_app_from_environment = partial(from_environment, create_projector_app)
relay_app_from_environment = partial(from_environment, create_relay_app)


def whole_api_document(settings: Settings) -> str:
    """The single-process app's document: every route of every service (`shared/openapi.json`)."""
    return json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"
