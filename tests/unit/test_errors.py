"""A lost database connection is a 503 the client may retry, never a 500."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from eventsourcing import persistence
from fastapi import FastAPI

from shared.errors import install_error_handlers


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
