"""A lost database connection is a 503 the client may retry, never a 500; anything unexpected is
the contract's 500, still with the request id and the read headers."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from eventsourcing import persistence
from fastapi import APIRouter, FastAPI

from shared.app import AppSpec, make_app
from shared.config import Settings
from shared.errors import ADVICE, install_error_handlers


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        persistence.OperationalError("server closed the connection unexpectedly"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
async def test_a_lost_database_connection_is_a_503_with_retry_after(error: Exception) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/boom")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "Service unavailable"
    assert str(error) not in response.text


async def test_an_unexpected_error_is_the_contracts_500_with_the_request_id_and_read_headers(
    settings: Settings,
) -> None:
    router = APIRouter()

    @router.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("SELECT secret FROM somewhere")

    # The position as the query service's watcher gives it.
    app = make_app(AppSpec("boom", settings, routers=(router,), position=lambda: 42))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/api/v1/boom", headers={"X-Request-ID": "audit-500"})

    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error", "details": ADVICE[500]}
    assert "SELECT" not in response.text
    assert response.headers["x-request-id"] == "audit-500"
    assert response.headers["x-projection-position"] == "42"
    assert response.headers["cache-control"] == "no-cache"
