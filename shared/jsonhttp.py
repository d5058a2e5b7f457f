"""Low-level HTTP helpers every module may use: JSON answers, GET-and-HEAD routes, the request
id, the session's position cookie and the pass-through of non-HTTP traffic by middleware.

This module imports nothing from the project: errors, auth, limits, docs and the app factory
all build on it, so it can never close an import cycle.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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


class HttpMiddleware:
    """An ASGI middleware that sees HTTP requests only: lifespan and websocket traffic passes
    through untouched. Subclasses implement `http`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
