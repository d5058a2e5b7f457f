"""A direct route answers exactly as the router would (same endpoint, errors, headers and
metrics label), only for its own path and methods, and refuses to shadow another route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from composition import (
    create_app,
    create_command_app,
    create_projector_app,
    create_query_app,
)
from shared.app import AppSpec, make_app
from shared.config import Settings
from shared.direct import serve_directly
from shared.errors import NotFound
from shared.jsonhttp import get_and_head, json_response

router = APIRouter(prefix="/things")


@get_and_head(router, "/{thing_id}", summary="A thing", operation_id="getThing")
async def get_thing(thing_id: str, request: Request) -> Response:
    if thing_id == "missing":
        raise NotFound(f"No thing {thing_id}")
    route = request.scope["route"].path
    query = request.query_params.get("q")
    return json_response({"id": thing_id, "q": query, "route": route}, headers={"ETag": '"1"'})


@router.post("")
async def add_thing(request: Request) -> Response:
    body = await request.body()
    return json_response({"added": body.decode(), "route": request.scope["route"].path}, 201)


@router.get("/{thing_id}/parts")
async def parts(thing_id: str) -> dict[str, Any]:
    return {"parts": thing_id}


@router.delete("/{thing_id}")
async def delete_thing(thing_id: str) -> dict[str, Any]:
    return {"deleted": thing_id}


class Walks:
    """Counts the requests that reach the router's own walk of its routes."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = app.router.middleware_stack
        self.count = 0
        app.router.middleware_stack = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.count += 1
        await self.inner(scope, receive, send)


def build(direct: bool) -> tuple[FastAPI, Walks]:
    app = make_app(AppSpec(title="Things", settings=Settings(), routers=(router,)))
    walks = Walks(app)
    if direct:
        serve_directly(app, router.routes, "/things/{thing_id}", get_thing)
        serve_directly(app, router.routes, "/things", add_thing)
    return app, walks


async def answers(app: FastAPI) -> list[tuple[int, dict[str, str], bytes]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        sent = [
            await http.get("/things/abc?q=x", headers={"X-Request-ID": "r-1"}),
            await http.head("/things/abc", headers={"X-Request-ID": "r-2"}),
            await http.get("/things/missing", headers={"X-Request-ID": "r-3"}),
            await http.get("/things/abc/parts", headers={"X-Request-ID": "r-4"}),
            await http.delete("/things/abc", headers={"X-Request-ID": "r-5"}),
            await http.post("/things/abc", headers={"X-Request-ID": "r-6"}),
            await http.get("/things/", headers={"X-Request-ID": "r-7"}),
            await http.post("/things", content=b"x", headers={"X-Request-ID": "r-8"}),
            await http.get("/things", headers={"X-Request-ID": "r-9"}),
            await http.get("/metrics"),
        ]
    kept = ("content-type", "etag", "x-request-id", "allow")
    answered = [
        (r.status_code, {k: v for k, v in r.headers.items() if k in kept}, r.content)
        for r in sent[:-1]
    ]
    # The request counters (not the timings) from /metrics.
    counted = [
        line for line in sent[-1].text.splitlines() if line.startswith("http_requests_total")
    ]
    return [*answered, (sent[-1].status_code, {}, "\n".join(counted).encode())]


async def test_direct_and_routed_answers_are_identical_and_only_the_direct_skip_the_walk() -> None:
    routed_app, routed_walks = build(direct=False)
    direct_app, direct_walks = build(direct=True)

    routed = await answers(routed_app)
    direct = await answers(direct_app)

    assert direct == routed
    assert direct[0][2] == b'{"id":"abc","q":"x","route":"/things/{thing_id}"}'
    assert direct[2][0] == 404
    # The metrics label each request by the same route template either way.
    assert b'route="/things/{thing_id}",status="200"' in direct[-1][2]
    assert direct[7][:3:2] == (201, b'{"added":"x","route":"/things"}')
    assert direct[8][0] == 405
    assert routed_walks.count == 10
    # GET, HEAD and the 404 by id, and the POST, went direct; deeper paths, other methods, the
    # bare prefix and /metrics were walked.
    assert direct_walks.count == 6


def test_a_route_the_direct_one_would_shadow_is_refused() -> None:
    shadowed = APIRouter(prefix="/things")
    shadowed.get("/special")(parts)
    get_and_head(shadowed, "/{thing_id}")(get_thing)
    app = make_app(AppSpec(title="Things", settings=Settings(), routers=(shadowed,)))

    with pytest.raises(ValueError, match="shadowed"):
        serve_directly(app, shadowed.routes, "/things/{thing_id}", get_thing)
    with pytest.raises(ValueError, match="no route"):
        serve_directly(app, shadowed.routes, "/others/{thing_id}", get_thing)
    with pytest.raises(ValueError, match="last-segment"):
        serve_directly(app, shadowed.routes, "/things/{thing_id}/parts", get_thing)


def test_the_apps_that_serve_tasks_serve_them_directly() -> None:
    settings = Settings()
    for app in (create_app(settings), create_query_app(settings), create_command_app(settings)):
        assert app.router.middleware_stack != app.router.app
    projector = create_projector_app(settings)
    assert projector.router.middleware_stack == projector.router.app
