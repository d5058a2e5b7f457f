"""CORS is off unless a setting lists the allowed origins."""

from __future__ import annotations

import httpx

from shared.app import AppSpec, make_app
from shared.config import Settings

PREFLIGHT = {
    "Origin": "https://tasks.example",
    "Access-Control-Request-Method": "PATCH",
    "Access-Control-Request-Headers": "if-match, content-type",
}


async def preflight(settings: Settings) -> httpx.Response:
    app = make_app(AppSpec("Tasks", settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.options("/health", headers=PREFLIGHT)


async def test_without_allowed_origins_no_cors_headers_are_sent() -> None:
    response = await preflight(Settings())

    assert "access-control-allow-origin" not in response.headers


async def test_a_listed_origin_may_send_writes_with_the_contract_headers() -> None:
    response = await preflight(Settings(cors_origins=["https://tasks.example"]))

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://tasks.example"
    assert "PATCH" in response.headers["access-control-allow-methods"]
    assert "if-match" in response.headers["access-control-allow-headers"].lower()
