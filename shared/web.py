"""HTTP plumbing every app shares: fast JSON responses, request ids, service endpoints."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import Metrics

if TYPE_CHECKING:
    from shared.config import Settings


log = logging.getLogger("tasks.errors")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]{1,200}$")

POSITION_COOKIE = "tasks_position"
"""Set by every write to its position: what a session's later list reads wait for."""
POSITION_COOKIE_MAX_AGE = 300
"""Seconds: far longer than the projector ever trails, short enough to forget a reset store."""


def position_cookie(position: int) -> str:
    """The `Set-Cookie` value for a write at `position`; it carries no identity and no secret."""
    return (
        f"{POSITION_COOKIE}={position}; Max-Age={POSITION_COOKIE_MAX_AGE}; Path=/api/v1; "
        "HttpOnly; SameSite=Lax"
    )


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content), status_code=status, headers=headers, media_type="application/json"
    )


def raw_json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


Endpoint = Callable[..., Awaitable[Any]]


def get_and_head(
    router: APIRouter | FastAPI, path: str, **options: Any
) -> Callable[[Endpoint], Endpoint]:
    """GET documented in OpenAPI; HEAD served by the same function, not listed twice."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        router.add_api_route(
            path, endpoint, methods=["HEAD"], include_in_schema=False, response_model=None
        )
        return endpoint

    return register


def valid_token(value: str | None) -> bool:
    """1 to 200 visible ASCII characters (request ids and idempotency keys)."""
    return value is not None and _VISIBLE_ASCII.match(value) is not None


def write_access_line(
    request_id: str, scope: Scope, status: int, started: float, with_query: bool = False
) -> None:
    """One JSON line per request on stderr, in the same shape as the other log lines.

    The path is logged without its query string (search terms are the user's data) unless
    `with_query` asks for it. Written directly: the logging module's records, caller lookup and
    handler locks cost more than the request they describe (measured: ~110 us of a ~500 us GET).
    """
    path: str = scope["path"]
    query: bytes = scope.get("query_string", b"")
    if with_query and query:
        path = f"{path}?{query.decode('latin-1')}"
    entry = {
        "time": datetime.now(UTC).isoformat(),
        "level": "INFO",
        "logger": "tasks.http",
        "message": "request",
        "correlation_id": request_id,
        "method": scope["method"],
        "path": path,
        "status": status,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }
    os.write(2, orjson.dumps(entry) + b"\n")


class RequestIdMiddleware:
    """The one request wrapper. Takes `X-Request-ID` (or makes one), exposes it to the handler
    and echoes it back; on `/api/` responses without them, adds `Cache-Control` (reads
    `no-cache`, writes `no-store`) and, where the app has a read model, `X-Projection-Position`
    on reads, so errors raised anywhere (401, 404, 414, 422, 500...) carry them too; answers an
    unhandled exception with the contract's 500; counts and times the request in `metrics`
    and writes its log line when `log_requests` is on."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, log_requests: bool = True, log_query: bool = False
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.log_query = log_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if valid_token(given) else uuid.uuid4().hex
        assert request_id is not None
        token = request_id_var.set(request_id)
        encoded = request_id.encode()
        started = time.perf_counter()
        status = 500
        responded = False
        api = scope["path"].startswith("/api/")
        read = scope["method"] in ("GET", "HEAD")
        watcher = getattr(scope["app"].state, "watcher", None) if api and read else None

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                headers = [*message.get("headers", []), (b"x-request-id", encoded)]
                if api:
                    names = {name for name, _ in headers}
                    if b"cache-control" not in names:
                        headers.append((b"cache-control", b"no-cache" if read else b"no-store"))
                    # Not on 401/403: an anonymous client learns nothing of the store.
                    if (
                        watcher is not None
                        and status not in (401, 403)
                        and b"x-projection-position" not in names
                    ):
                        headers.append((b"x-projection-position", str(watcher.position).encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if responded:
                raise  # too late for an answer of our own: the server closes the connection
            log.exception("unhandled error", extra={"path": scope["path"]})
            from shared.errors import error_response

            await error_response(500)(scope, receive, send_with_id)
        finally:
            self.metrics.observe(scope, status, time.perf_counter() - started)
            if self.log_requests:
                write_access_line(request_id, scope, status, started, self.log_query)
            request_id_var.reset(token)


SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "When API keys are configured (TASKS_API_KEYS), every /api/ operation needs "
    "a key holding the scope listed on it: read (lists and tasks), write (POST, PATCH, DELETE) "
    "or audit (history, the event feed, and time travel: version or as_of on a task). A key "
    "configured without scopes holds all three. TASKS_PUBLIC_READS=true opens plain list and "
    "by-id reads to anonymous clients. An operation that also lists the empty requirement needs "
    "no key in the deployment that served this document.",
}


def add_security(schema: dict[str, Any], settings: Settings) -> None:
    """The bearer scheme, and on each `/api/` operation the scope it needs (OpenAPI 3.1 lets a
    non-OAuth requirement list role names: here the scopes). Where no key is needed (none are
    configured, or a public read), the operation also lists the empty requirement."""
    from shared.auth import PUBLIC_READ, operation_scope
    from shared.openapi import BEARER

    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = SECURITY_SCHEME
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/api/"):
            for method, operation in operations.items():
                security: list[dict[str, list[str]]] = [{BEARER: [operation_scope(method, path)]}]
                public = (
                    settings.public_reads
                    and method in ("get", "head")
                    and PUBLIC_READ.fullmatch(path.replace("{task_id}", "x")) is not None
                )
                if not settings.api_keys or public:
                    security.append({})
                operation["security"] = security


Resource = Callable[[Any, "Settings"], AbstractAsyncContextManager[None]]
"""Something a process holds open while it serves: `resource(app.state, settings)`."""


def make_app(
    title: str,
    settings: Settings,
    routers: list[APIRouter],
    resources: list[Resource],
    ready_checks: list[Callable[[Any], Awaitable[tuple[str, bool, dict[str, Any]]]]],
    schemas: dict[str, dict[str, Any]] | None = None,
    middleware: list[tuple[Any, dict[str, Any]]] | None = None,
) -> FastAPI:
    """One FastAPI app: the routers, the error handlers, the resources opened in its lifespan."""
    from shared.auth import ApiKeyGate
    from shared.docs import docs_router
    from shared.errors import error_response, install_error_handlers
    from shared.limits import RequestLimits, request_limits
    from shared.openapi import COMMON_SCHEMAS, READY_RESPONSES, finish_document

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for resource in resources:
                await stack.enter_async_context(resource(app.state, settings))
            yield

    app = FastAPI(
        title=title,
        version="1.0.0",
        lifespan=lifespan,
        redirect_slashes=False,
        # No per-request OpenTelemetry lookups: this service exports Prometheus metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Served by shared/docs.py from packaged assets, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    metrics = Metrics(app.state)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    app.include_router(docs_router(title))

    @get_and_head(
        app,
        "/health",
        tags=["service"],
        summary="Liveness",
        operation_id="getHealth",
        responses={
            200: {
                "description": "The process runs",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                        "example": {"status": "ok"},
                    }
                },
            }
        },
    )
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @get_and_head(
        app,
        "/ready",
        tags=["service"],
        summary="Readiness: dependencies and lag",
        operation_id="getReadiness",
        response_model=None,
        responses=READY_RESPONSES,
    )
    async def ready(request: Request) -> Response:
        body: dict[str, Any] = {"status": "ready", "checks": {}}
        failed: dict[str, str] = {}
        for check in ready_checks:
            name, ok, extra = await check(request.app.state)
            body["checks"][name] = "ok" if ok else "failing"
            if not ok:
                # A check names what failed (a part that stopped doing its job); else unreachable.
                failed[name] = str(extra.get("failure", "unreachable"))
            body.update({key: value for key, value in extra.items() if key != "failure"})
        if failed:
            return error_response(503, failed)
        return json_response(body)

    @get_and_head(
        app,
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics",
        operation_id="getMetrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {
                    "text/plain": {
                        "schema": {"type": "string"},
                        "example": "# TYPE tasks_http_requests_total counter\n",
                    }
                },
            }
        },
    )
    async def prometheus(request: Request) -> Response:
        return await metrics.render(request)

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(COMMON_SCHEMAS)
            components.update(schemas or {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            error_schema = {"$ref": "#/components/schemas/Error"}
            add_security(schema, settings)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for status, response in operation.get("responses", {}).items():
                        if status.startswith(("4", "5")):
                            given = response.get("content", {}).get("application/json", {})
                            example = {"example": given["example"]} if "example" in given else {}
                            response["content"] = {
                                "application/json": {"schema": error_schema, **example}
                            }
            finish_document(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    for middleware_class, options in middleware or []:
        app.add_middleware(middleware_class, **options)  # innermost first
    app.add_middleware(ApiKeyGate, keys=settings.api_keys, public_reads=settings.public_reads)
    app.add_middleware(RequestLimits, **request_limits(settings))
    if settings.cors_origins:  # off unless origins are listed
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-Match",
                "If-None-Match",
                "X-Min-Position",
                "X-Request-ID",
            ],
            expose_headers=[
                "ETag",
                "Location",
                "Retry-After",
                "X-Event-Position",
                "X-Projection-Position",
                "X-Request-ID",
            ],
        )
    app.add_middleware(
        RequestIdMiddleware,
        metrics=metrics,
        log_requests=settings.access_log,
        log_query=settings.access_log_query,
    )
    return app
