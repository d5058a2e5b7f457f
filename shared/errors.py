"""The one error shape of the API, the domain errors, and the handlers every app registers."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from eventsourcing import persistence
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from shared.jsonhttp import json_response

log = logging.getLogger("tasks.errors")

TITLES = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    412: "Precondition failed",
    413: "Payload too large",
    414: "URI too long",
    415: "Unsupported media type",
    422: "Validation failed",
    431: "Request header fields too large",
    500: "Internal server error",
    503: "Service unavailable",
}


ADVICE: dict[int, dict[str, str] | str] = {
    401: {"Authorization": "An API key is needed: send Authorization: Bearer <key>"},
    403: {"Authorization": "The key sent in Authorization: Bearer is not accepted"},
    404: "Nothing at this URL",
    405: "This URL does not serve this method; the Allow header lists those it serves",
    408: "The request body did not arrive in time: send it whole, without pauses",
    413: "The body is larger than the service accepts",
    414: "The query string is too long: send fewer or shorter parameters",
    415: {
        "Content-Type": "Send application/json (PATCH also application/merge-patch+json), "
        "with charset=utf-8 or no charset"
    },
    431: "The request headers are too large: send fewer or shorter headers",
    500: "An unexpected error, logged under the X-Request-ID of this answer; retry later",
}
"""What the client can do, for errors raised without details of their own."""


class ApiError(Exception):
    """An answer in the error shape. Raised by domain and service code, rendered in one place."""

    status = 500

    def __init__(
        self, details: dict[str, str] | str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(details)
        self.details = details
        self.headers = headers or {}


class NotFound(ApiError):
    status = 404


class ValidationFailed(ApiError):
    status = 422

    def __init__(self, details: dict[str, str], headers: dict[str, str] | None = None) -> None:
        super().__init__(details, headers)


class PreconditionFailed(ApiError):
    status = 412


class ServiceUnavailable(ApiError):
    status = 503


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


def error_body(status: int, details: dict[str, str] | str | None = None) -> dict[str, Any]:
    return {
        "error": TITLES.get(status, "Error"),
        "details": details if details is not None else ADVICE.get(status),
    }


def error_response(
    status: int, details: dict[str, str] | str | None = None, headers: dict[str, str] | None = None
) -> Response:
    return json_response(error_body(status, details), status=status, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "header", "path"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_details(errors: list[Any]) -> dict[str, str]:
    """Pydantic errors keyed by JSON path (`tags.2`), the first message per path."""
    details: dict[str, str] = {}
    for err in errors:
        key = _location(err.get("loc", ()))
        message = str(err.get("msg", "Invalid value"))
        if err.get("type") == "extra_forbidden":
            message = "Unknown field"
        details.setdefault(key, message.removeprefix("Value error, "))
    return details


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.details, exc.headers)


async def _request_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, validation_details(list(exc.errors())))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on this path (the router names only the first route's)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code if exc.status_code in TITLES else 500
    headers = dict(exc.headers or {})
    details = None
    if status == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        details = f"{request.method} is not served here; send one of: {headers['Allow']}"
    elif status == 404:
        details = f"No resource at {request.url.path}"
    return error_response(status, details, headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500)


UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    # A pooled connection the server terminated mid-operation can surface as a protocol-state
    # error on its next use; the pool replaces it, and the request may be retried.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,  # the server is shutting down or terminated the connection
    asyncpg.CrashShutdownError,
    persistence.OperationalError,
    persistence.InterfaceError,
    ConnectionError,
    TimeoutError,
)
"""A database that is restarting or unreachable: the request may be retried, it is not a bug."""


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning(
        "dependency unavailable",
        extra={"path": request.url.path, "error": type(exc).__name__},
    )
    return error_response(
        503, "A database or broker connection is unavailable", {"Retry-After": "1"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    for unavailable in UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, _unavailable)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "details"],
    "properties": {
        "error": {"type": "string"},
        "details": {
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": "string"}},
                {"type": "string"},
                {"type": "null"},
            ]
        },
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting the error shape for each status."""
    return {
        status: {
            "description": TITLES[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status in statuses
    }
