"""The app factory: one FastAPI app from one `AppSpec` — its routes, the parts it holds open,
the service endpoints (/health, /ready, /metrics, /docs), the error handlers and middleware.

`shared/` knows no service: a process's composition (`composition.py`) hands in what the app
serves, what it must hold open, what `/ready` checks and `/metrics` reports, which reads are
public or audited, and how far its read model has caught up.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.datastructures import State
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from shared.auth import AccessRules, ApiKeyGate, add_security
from shared.config import Settings
from shared.direct import DirectEndpoint, serve_directly
from shared.docs import docs_router
from shared.errors import error_response, install_error_handlers
from shared.health import Check
from shared.jsonhttp import Endpoint, get_and_head, json_response
from shared.limits import RequestLimits, request_limits
from shared.metrics import Metrics, MetricSource
from shared.openapi import COMMON_SCHEMAS, READY_RESPONSES, finish_document
from shared.request_id import Position, RequestIdMiddleware


@dataclass(frozen=True)
class Resource:
    """Something a process holds open while it serves (`open(app.state)`, entered in the
    lifespan in order), with the checks it adds to `/ready` and the figures to `/metrics`."""

    open: Callable[[State], AbstractAsyncContextManager[None]]
    checks: tuple[Check, ...] = ()
    metrics: tuple[MetricSource, ...] = ()


@dataclass(frozen=True)
class AppSpec:
    """Everything one process's app is made of."""

    title: str
    settings: Settings
    routers: tuple[APIRouter, ...] = ()
    resources: tuple[Resource, ...] = ()
    checks: tuple[Check, ...] = ()
    """Dependencies `/ready` checks before the resources' own checks."""
    schemas: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Components added to the OpenAPI document beside the common ones."""
    middleware: tuple[tuple[Any, dict[str, Any]], ...] = ()
    """Innermost first, inside the request-id, limits and key gate middleware."""
    access: AccessRules = field(default_factory=AccessRules)
    """Which reads are public or audited, as the services that serve them say."""
    position: Position | None = None
    """The read model's position, put on `/api/` reads as `X-Projection-Position`."""
    direct: tuple[tuple[str, DirectEndpoint], ...] = ()
    """Routes (path, endpoint) served before the router's walk: `shared/direct.py`."""

    @property
    def ready_checks(self) -> tuple[Check, ...]:
        return self.checks + tuple(c for r in self.resources for c in r.checks)


def success(
    description: str, schema: dict[str, Any], example: Any, media: str = "application/json"
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` with one documented 200."""
    content = {media: {"schema": schema, "example": example}}
    return {200: {"description": description, "content": content}}


HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
}
CORS_METHODS = ["GET", "HEAD", "POST", "PATCH", "DELETE"]
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "X-Min-Position",
    "X-Request-ID",
]
CORS_RESPONSE_HEADERS = [
    "ETag",
    "Location",
    "Retry-After",
    "X-Event-Position",
    "X-Projection-Position",
    "X-Request-ID",
]


async def readiness(checks: tuple[Check, ...]) -> Response:
    """Every check in order: 200 with their extras, or 503 naming each failing check."""
    body: dict[str, Any] = {"status": "ready", "checks": {}}
    failed: dict[str, str] = {}
    for check in checks:
        name, ok, extra = await check()
        body["checks"][name] = "ok" if ok else "failing"
        if not ok:
            # A check names what failed (a part that stopped doing its job); else unreachable.
            failed[name] = str(extra.get("failure", "unreachable"))
        body.update({key: value for key, value in extra.items() if key != "failure"})
    if failed:
        return error_response(503, failed)
    return json_response(body)


def service_router(checks: tuple[Check, ...], metrics: Metrics) -> APIRouter:
    """`/health`, `/ready` and `/metrics`."""
    router = APIRouter(tags=["service"])

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def ready() -> Response:
        return await readiness(checks)

    async def prometheus() -> Response:
        return await metrics.render()

    health_ok = success("The process runs", HEALTH_SCHEMA, {"status": "ok"})
    scrape = "# TYPE tasks_http_requests_total counter\n"
    metrics_ok = success("Prometheus text format", {"type": "string"}, scrape, "text/plain")
    routes: list[tuple[str, str, str, Endpoint, dict[str, Any]]] = [
        ("/health", "Liveness", "getHealth", health, {"responses": health_ok}),
        (
            "/ready",
            "Readiness: dependencies and lag",
            "getReadiness",
            ready,
            {"response_model": None, "responses": READY_RESPONSES},
        ),
        (
            "/metrics",
            "Prometheus metrics",
            "getMetrics",
            prometheus,
            {"response_class": Response, "responses": metrics_ok},
        ),
    ]
    for path, summary, operation_id, endpoint, options in routes:
        get_and_head(router, path, summary=summary, operation_id=operation_id, **options)(endpoint)
    return router


def document(schema: dict[str, Any], spec: AppSpec) -> dict[str, Any]:
    """FastAPI's document finished: the common and the app's schemas, the error shape on
    every 4xx and 5xx (not FastAPI's `HTTPValidationError`), the security requirements."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(COMMON_SCHEMAS)
    components.update(spec.schemas)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error_schema = {"$ref": "#/components/schemas/Error"}
    add_security(schema, spec.settings, spec.access)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                if status.startswith(("4", "5")):
                    given = response.get("content", {}).get("application/json", {})
                    example = {"example": given["example"]} if "example" in given else {}
                    response["content"] = {"application/json": {"schema": error_schema, **example}}
    finish_document(schema)
    return schema


def add_middleware(app: FastAPI, spec: AppSpec, metrics: Metrics) -> None:
    """The app's own middleware innermost, then the key gate, the limits, CORS (off unless
    origins are listed) and, outermost, the request wrapper."""
    settings = spec.settings
    for middleware_class, options in spec.middleware:
        app.add_middleware(middleware_class, **options)
    app.add_middleware(
        ApiKeyGate, keys=settings.api_keys, public_reads=settings.public_reads, rules=spec.access
    )
    app.add_middleware(RequestLimits, **request_limits(settings))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_RESPONSE_HEADERS,
        )
    app.add_middleware(
        RequestIdMiddleware,
        metrics=metrics,
        log_requests=settings.access_log,
        log_query=settings.access_log_query,
        position=spec.position,
    )


def make_app(spec: AppSpec) -> FastAPI:
    """One FastAPI app: the routers, the error handlers, the resources opened in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for resource in spec.resources:
                await stack.enter_async_context(resource.open(app.state))
            yield

    app = FastAPI(
        title=spec.title,
        version="1.0.0",
        lifespan=lifespan,
        redirect_slashes=False,
        # No per-request OpenTelemetry lookups: this service exports Prometheus metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Served by shared/docs.py from packaged assets, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = spec.settings
    metrics = Metrics([source for resource in spec.resources for source in resource.metrics])
    install_error_handlers(app)
    for router in spec.routers:
        app.include_router(router)
    app.include_router(docs_router(spec.title))
    app.include_router(service_router(spec.ready_checks, metrics))
    given = [route for router in spec.routers for route in router.routes]
    for path, endpoint in spec.direct:
        serve_directly(app, given, path, endpoint)
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(original_openapi(), spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    add_middleware(app, spec, metrics)
    return app
