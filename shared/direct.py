"""Direct routes for the hottest requests: matched before FastAPI's router walks its routes and
solves the endpoint's parameters, then served by the very endpoint that route would call.

They sit inside the router, so a direct request meets the same middleware, exception handlers,
access log and metrics (its `scope["route"]` is the route's own) as any other. A path served so
is either fixed (`/api/v1/tasks`, endpoint `(request)`) or has one parameter, as its last
segment (`/api/v1/tasks/{task_id}`, endpoint `(value, request)`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

DirectEndpoint = Callable[..., Awaitable[Response]]


def _methods(route: BaseRoute) -> set[str]:
    return set(getattr(route, "methods", None) or ())


def _shadows(route: BaseRoute, path: str, prefix: str, name: str | None) -> bool:
    """Whether a direct `path` would answer requests `route` (another path) matches."""
    other: str = getattr(route, "path", "")
    if other == path:
        return False
    if name is None:
        regex = getattr(route, "path_regex", None)
        return regex is not None and regex.match(path) is not None
    return other.startswith(prefix) and "/" not in other[len(prefix) :]


def serve_directly(
    app: FastAPI, routes: Sequence[BaseRoute], path: str, endpoint: DirectEndpoint
) -> None:
    """Serve `path` straight from `endpoint` for each method that `routes` (every route the app
    was given) serve it with; any other request goes through the router as before."""
    prefix, _, last = path.rpartition("/")
    prefix += "/"
    name = last[1:-1] if last.startswith("{") and last.endswith("}") else None
    if "{" in prefix or name == "" or (name is None and "{" in last):
        raise ValueError(f"{path}: only a fixed path or a last-segment parameter can be direct")
    served = {
        method: route
        for route in routes
        if getattr(route, "path", None) == path and getattr(route, "endpoint", None) is endpoint
        for method in _methods(route)
    }
    if not served:
        raise ValueError(f"no route serves {path} with {endpoint.__name__}")
    for route in routes:
        if _methods(route) & served.keys() and _shadows(route, path, prefix, name):
            raise ValueError(f"{getattr(route, 'path', route)} would be shadowed by {path}")
    inner = app.router.middleware_stack

    def arguments(requested: str) -> tuple[str, ...] | None:
        """The endpoint's arguments before the request, or None if `requested` is not `path`."""
        if name is None:
            return () if requested == path else None
        if not requested.startswith(prefix):
            return None
        value = requested[len(prefix) :]
        return (value,) if value and "/" not in value else None

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        route = served.get(scope["method"]) if scope["type"] == "http" else None
        if route is not None and not scope.get("root_path"):
            given = arguments(scope["path"])
            if given is not None:
                params: dict[str, Any] = {name: given[0]} if name is not None else {}
                scope.update(router=app.router, route=route, endpoint=endpoint, path_params=params)
                response = await endpoint(*given, Request(scope, receive))
                await response(scope, receive, send)
                return
        await inner(scope, receive, send)

    app.router.middleware_stack = direct
