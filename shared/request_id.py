"""The one request wrapper every app has outermost: request id, read/write headers, the
contract's 500 for an unhandled error, the request's metrics and its access-log line.

It knows no service: an app with a read model hands it a `position` callable, and that alone
decides whether reads carry `X-Projection-Position`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response
from shared.jsonhttp import HttpMiddleware, request_id_var, valid_token
from shared.metrics import Metrics

log = logging.getLogger("tasks.errors")

Position = Callable[[], int | None]
"""How far the app's read model has caught up (None while it is not known yet)."""


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


def _request_id(scope: Scope) -> str:
    """The `X-Request-ID` the client sent when it is valid, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            return given if valid_token(given) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestIdMiddleware(HttpMiddleware):
    """Takes `X-Request-ID` (or makes one), exposes it to the handler and echoes it back; on
    `/api/` responses without them, adds `Cache-Control` (reads `no-cache`, writes `no-store`)
    and, where the app has a read model (`position`), `X-Projection-Position` on reads, so
    errors raised anywhere (401, 404, 414, 422, 500...) carry them too; answers an unhandled
    exception with the contract's 500; counts and times the request in `metrics` and writes
    its log line when `log_requests` is on."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        log_requests: bool = True,
        log_query: bool = False,
        position: Position | None = None,
    ) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.log_requests = log_requests
        self.log_query = log_query
        self.position = position

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        encoded = request_id.encode()
        started = time.perf_counter()
        status = 500
        responded = False
        api = scope["path"].startswith("/api/")
        read = scope["method"] in ("GET", "HEAD")
        position = self.position if api and read else None

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                headers = [*message.get("headers", []), (b"x-request-id", encoded)]
                if api:
                    _add_api_headers(headers, read, status, position)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if responded:
                raise  # too late for an answer of our own: the server closes the connection
            log.exception("unhandled error", extra={"path": scope["path"]})
            await error_response(500)(scope, receive, send_with_id)
        finally:
            self.metrics.observe(scope, status, time.perf_counter() - started)
            if self.log_requests:
                write_access_line(request_id, scope, status, started, self.log_query)
            request_id_var.reset(token)


def _add_api_headers(
    headers: list[tuple[bytes, bytes]], read: bool, status: int, position: Position | None
) -> None:
    names = {name for name, _ in headers}
    if b"cache-control" not in names:
        headers.append((b"cache-control", b"no-cache" if read else b"no-store"))
    # Not on 401/403: an anonymous client learns nothing of the store.
    if position is None or status in (401, 403) or b"x-projection-position" in names:
        return
    known = position()
    if known is not None:
        headers.append((b"x-projection-position", str(known).encode()))
