"""Direct routes for the hottest reads: matched before FastAPI's router walks its routes and
solves the endpoint's parameters, then served by the very endpoint that route would call.

They sit inside the router, so a direct request meets the same middleware, exception handlers,
access log and metrics (its `scope["route"]` is the route's own) as any other. Only an
endpoint of the form `(value, request)`, on a path whose one parameter is its last segment,
can be served so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

DirectEndpoint = Callable[[str, Request], Awaitable[Response]]


def _methods(route: BaseRoute) -> set[str]:
    return set(getattr(route, "methods", None) or ())


def serve_directly(
    app: FastAPI, routes: Sequence[BaseRoute], path: str, endpoint: DirectEndpoint
) -> None:
    """Serve `path` (e.g. `/api/v1/tasks/{task_id}`) straight from `endpoint` for each method
    that `routes` (every route the app was given) serve it with; any other request goes
    through the router as before."""
    prefix, _, last = path.rpartition("/")
    prefix += "/"
    name = last.removeprefix("{").removesuffix("}")
    if not name or "{" in prefix or last != f"{{{name}}}":
        raise ValueError(f"{path}: only a last-segment parameter can be served directly")
    served = {
        method: route
        for route in routes
        if getattr(route, "path", None) == path and getattr(route, "endpoint", None) is endpoint
        for method in _methods(route)
    }
    if not served:
        raise ValueError(f"no route serves {path} with {endpoint.__name__}")
    for route in routes:
        other = getattr(route, "path", "")
        if (
            other != path
            and other.startswith(prefix)
            and "/" not in other[len(prefix) :]
            and _methods(route) & served.keys()
        ):
            raise ValueError(f"{other} would be shadowed by the direct route {path}")
    inner = app.router.middleware_stack

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = served.get(scope["method"])
            requested: str = scope["path"]
            if route is not None and requested.startswith(prefix):
                value = requested[len(prefix) :]
                if value and "/" not in value:
                    scope["router"] = app.router
                    scope["route"] = route
                    scope["endpoint"] = endpoint
                    scope["path_params"] = {name: value}
                    response = await endpoint(value, Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await inner(scope, receive, send)

    app.router.middleware_stack = direct
