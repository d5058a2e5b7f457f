"""Who may read what with API keys set: public reads when opened, privileged reads always behind
a key, one Authorization header only, caching that never shares a keyed answer, and nothing
about the store told to a refused client."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from composition import create_app
from shared.config import Settings
from tests.helpers import JSON, serving, store_events

KEY = {"Authorization": "Bearer reader-and-writer"}


async def _create(http: httpx.AsyncClient) -> dict[str, str]:
    created = await http.post("/api/v1/tasks", headers={**JSON, **KEY}, json={"title": "mine"})
    assert created.status_code == 201
    return {"id": created.json()["id"], "position": created.headers["x-event-position"]}


async def test_public_reads_open_plain_list_and_by_id_reads_only(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=["reader-and-writer"], public_reads=True)
    async with serving(create_app(settings)) as http:
        task = await _create(http)
        path = f"/api/v1/tasks/{task['id']}"
        wait = {"X-Min-Position": task["position"]}
        listing = await http.get("/api/v1/tasks", headers=wait)
        by_id = await http.get(path, headers=wait)
        head = await http.head(path)
        refused = {
            "include_deleted": await http.get("/api/v1/tasks?include_deleted=true"),
            "history": await http.get(f"{path}/history"),
            "version": await http.get(f"{path}?version=1"),
            "as_of": await http.get(f"{path}?as_of=2030-01-01T00:00:00Z"),
            "events": await http.get("/api/v1/events"),
            "write": await http.patch(path, headers=JSON, json={"priority": 5}),
        }
        keyed_history = await http.get(f"{path}/history", headers=KEY)

    assert listing.status_code == 200
    assert listing.json()["total"] == 1
    assert by_id.status_code == 200
    assert head.status_code == 200
    for name, answer in refused.items():
        assert answer.status_code == 401, name
        assert answer.headers["www-authenticate"] == "Bearer", name
        assert answer.json()["error"] == "Unauthorized", name
        assert "Authorization" in str(answer.json()["details"]), name  # which header to send
        assert "x-projection-position" not in answer.headers, name
    assert keyed_history.status_code == 200
    assert len(await store_events(settings)) == 1


async def test_without_public_reads_every_api_route_needs_a_key(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=["reader-and-writer"])
    async with serving(create_app(settings)) as http:
        task = await _create(http)
        path = f"/api/v1/tasks/{task['id']}"
        anonymous = [
            await http.get("/api/v1/tasks"),
            await http.head("/api/v1/tasks"),
            await http.get(path),
            await http.head(path),
            await http.get("/api/v1/tasks/not-a-task"),
            await http.get("/api/v1/unknown"),
            await http.get("/api/v1/events"),
        ]
        wrong = await http.get(path, headers={"Authorization": "Bearer guess"})
        service = [await http.get(name) for name in ("/health", "/ready", "/openapi.json")]

    assert [answer.status_code for answer in anonymous] == [401] * len(anonymous)
    for answer in anonymous:
        assert "x-projection-position" not in answer.headers
    assert wrong.status_code == 403
    assert "x-projection-position" not in wrong.headers
    assert [answer.status_code for answer in service] == [200, 200, 200]


@pytest.mark.parametrize("public_reads", [False, True])
async def test_two_authorization_headers_are_refused_whatever_they_hold(
    make_settings: Callable[..., Settings], public_reads: bool
) -> None:
    settings = make_settings(api_keys=["reader-and-writer"], public_reads=public_reads)
    async with serving(create_app(settings)) as http:
        answers = [
            await http.request(
                method,
                path,
                headers=[
                    ("Authorization", "Bearer reader-and-writer"),
                    ("Authorization", second),
                    ("Content-Type", "application/json"),
                ],
                content=json.dumps({"title": "two keys"}) if method == "POST" else None,
            )
            for method, path in (("POST", "/api/v1/tasks"), ("GET", "/api/v1/tasks"))
            for second in ("Bearer reader-and-writer", "Bearer other", "")
        ]

    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {
            "error": "Unauthorized",
            "details": {"Authorization": "Given more than once"},
        }
        assert "x-projection-position" not in answer.headers
    assert await store_events(settings) == []


async def test_time_travel_answers_are_private_and_vary_by_key_when_keys_are_set(
    make_settings: Callable[..., Settings],
) -> None:
    keyed = make_settings(api_keys=["reader-and-writer"])
    async with serving(create_app(keyed)) as http:
        task = await _create(http)
        at_version = await http.get(f"/api/v1/tasks/{task['id']}?version=1", headers=KEY)
    open_settings = make_settings()
    async with serving(create_app(open_settings)) as http:
        created = await http.post("/api/v1/tasks", headers=JSON, json={"title": "open"})
        open_version = await http.get(f"/api/v1/tasks/{created.json()['id']}?version=1")

    assert at_version.status_code == 200
    assert at_version.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert at_version.headers["vary"] == "Authorization"
    assert open_version.status_code == 200
    assert open_version.headers["cache-control"] == "max-age=31536000, immutable"
    assert "vary" not in open_version.headers


async def test_nineteen_digit_positions_are_accepted_up_to_the_largest_bigint(
    client: httpx.AsyncClient,
) -> None:
    largest = str(2**63 - 1)
    created = await client.post("/api/v1/tasks", headers=JSON, json={"title": "t"})
    task_id = created.json()["id"]
    one_in_19_digits = created.headers["x-event-position"].rjust(19, "0")

    param = await client.get(f"/api/v1/tasks?min_position={one_in_19_digits}")
    header = await client.get(f"/api/v1/tasks/{task_id}", headers={"X-Min-Position": largest})
    version = await client.get(f"/api/v1/tasks/{task_id}?version={largest}")
    past_the_largest = await client.get(f"/api/v1/tasks?min_position={2**63}")

    assert param.status_code == 200
    assert param.json()["total"] == 1
    # Never issued (beyond the store's last position), but a well-formed position: it is not
    # refused as malformed.
    assert header.status_code != 200
    assert "Must be an integer" not in str(header.json()["details"])
    assert version.status_code == 404
    assert past_the_largest.status_code == 422
    assert "Must be an integer" in past_the_largest.json()["details"]["min_position"]
