"""Before any parsing the gate answers 413 and 415; an internal failure is a bare 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from command_service.api import router
from command_service.gate import BodyGate
from shared.app import AppSpec, make_app
from shared.config import Settings
from shared.errors import ADVICE

LIMIT = 1_048_576
ERROR = {"error": "Internal server error", "details": ADVICE[500]}


class Inner:
    """The app behind the gate: records what reached it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"reached"})


def gate_client(inner: Inner) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=BodyGate(inner, LIMIT))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def chunks(total: int, size: int = 65_536) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b" " * piece


JSON = {"Content-Type": "application/json"}


async def test_a_body_of_exactly_the_limit_passes_whole() -> None:
    inner = Inner()
    body = b"{}" + b" " * (LIMIT - 2)

    async with gate_client(inner) as http:
        response = await http.post("/api/v1/tasks", content=body, headers=JSON)

    assert response.status_code == 200
    assert inner.bodies == [body]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_declared_length_over_the_limit_is_413_before_the_app_sees_it(method: str) -> None:
    inner = Inner()

    async with gate_client(inner) as http:
        response = await http.request(
            method, "/api/v1/tasks", content=b" " * (LIMIT + 1), headers=JSON
        )

    assert response.status_code == 413
    assert response.json() == {
        "error": "Payload too large",
        "details": f"Bodies are limited to {LIMIT} bytes",
    }
    assert inner.bodies == []


async def test_a_chunked_body_over_the_limit_is_413_before_the_app_sees_it() -> None:
    inner = Inner()

    async with gate_client(inner) as http:
        response = await http.post("/api/v1/tasks", content=chunks(LIMIT + 1), headers=JSON)

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == {
        "error": "Payload too large",
        "details": f"Bodies are limited to {LIMIT} bytes",
    }
    assert inner.bodies == []


async def test_a_chunked_body_of_exactly_the_limit_passes_whole() -> None:
    inner = Inner()

    async with gate_client(inner) as http:
        response = await http.post("/api/v1/tasks", content=chunks(LIMIT), headers=JSON)

    assert response.status_code == 200
    assert [len(body) for body in inner.bodies] == [LIMIT]


async def test_too_large_is_answered_before_unsupported_media_type() -> None:
    inner = Inner()

    async with gate_client(inner) as http:
        response = await http.post(
            "/api/v1/tasks", content=b"x" * (LIMIT + 1), headers={"Content-Type": "text/plain"}
        )

    assert response.status_code == 413


ACCEPTED_TYPES = [
    ("POST", "application/json"),
    ("POST", "application/json; charset=utf-8"),
    ("POST", "Application/JSON;charset=UTF-8"),
    ("POST", 'application/json; charset="utf-8"'),
    ("PATCH", "application/json"),
    ("PATCH", "application/merge-patch+json"),
    ("PATCH", "application/merge-patch+json; charset=utf-8"),
]


@pytest.mark.parametrize(("method", "content_type"), ACCEPTED_TYPES)
async def test_json_content_types_pass_the_gate(method: str, content_type: str) -> None:
    inner = Inner()

    async with gate_client(inner) as http:
        response = await http.request(
            method, "/api/v1/tasks", content=b"{}", headers={"Content-Type": content_type}
        )

    assert response.status_code == 200
    assert inner.bodies == [b"{}"]


REFUSED_TYPES = [
    ("POST", None),
    ("POST", ""),
    ("POST", "text/plain"),
    ("POST", "application/x-www-form-urlencoded"),
    ("POST", "application/json; charset=latin-1"),
    ("POST", "application/json; charset=utf-16"),
    ("POST", "application/jsonx"),
    ("POST", "application/merge-patch+json"),
    ("PATCH", "text/json"),
    ("PATCH", "multipart/form-data; boundary=x"),
]


@pytest.mark.parametrize(("method", "content_type"), REFUSED_TYPES)
async def test_other_content_types_are_415_before_the_app_sees_them(
    method: str, content_type: str | None
) -> None:
    inner = Inner()
    headers = {} if content_type is None else {"Content-Type": content_type}

    async with gate_client(inner) as http:
        response = await http.request(method, "/api/v1/tasks", content=b"{}", headers=headers)

    assert response.status_code == 415
    assert response.json()["error"] == "Unsupported media type"
    assert "application/json" in response.json()["details"]["Content-Type"]
    assert inner.bodies == []


@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD", "PUT"])
async def test_methods_that_take_no_body_pass_untouched(method: str) -> None:
    inner = Inner()

    async with gate_client(inner) as http:
        response = await http.request(method, "/api/v1/tasks/x")

    assert response.status_code == 200


class BrokenApplication:
    """An application whose store fails the way a database can, SQL text included."""

    def fail(self, *_: Any) -> Any:
        raise RuntimeError(
            'relation "tasks_events" does not exist\n'
            "LINE 1: SELECT notification_id FROM tasks_events"
        )

    async def fail_async(self, *args: Any) -> Any:
        return self.fail(*args)

    create_task = update_task = fail
    create_task_async = update_task_async = delete_task_async = fail_async


def broken_app() -> FastAPI:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none")
    app = make_app(
        AppSpec(
            "Tasks command service",
            settings,
            routers=(router,),
            middleware=((BodyGate, {"max_bytes": settings.max_body_bytes}),),
        )
    )
    app.state.tasks = BrokenApplication()
    return app


TASK_PATH = "/api/v1/tasks/9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/tasks", {"title": "x"}),
        ("PATCH", TASK_PATH, {"priority": 5}),
        ("DELETE", TASK_PATH, None),
    ],
)
async def test_an_internal_failure_is_a_500_in_the_error_shape_without_trace_or_sql(
    method: str, path: str, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.ASGITransport(app=broken_app(), raise_app_exceptions=False)
    content = None if body is None else json.dumps(body).encode()

    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.request(method, path, content=content, headers=JSON)

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == ERROR
    for leak in ("Traceback", "SELECT", "tasks_events", "RuntimeError", "File "):
        assert leak not in response.text
    assert "tasks_events" in caplog.text
