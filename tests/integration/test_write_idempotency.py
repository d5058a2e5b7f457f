"""Idempotency-Key on POST: a retry gets the original answer and the store one TaskCreated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from command_service import commands
from composition import create_app
from shared.config import Settings
from tests.helpers import serving, store_events


def created_events(rows: list[Any]) -> list[Any]:
    return [row for row in rows if row["topic"] == "TaskCreated"]


def answer(response: httpx.Response) -> tuple[int, Any, str, str, str]:
    headers = response.headers
    return (
        response.status_code,
        response.json(),
        headers["etag"],
        headers["x-event-position"],
        headers["location"],
    )


async def test_a_retry_after_a_lost_response_gets_the_same_task_and_one_event(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = {"title": "Pay rent", "tags": ["home"], "priority": 5}
    headers = {"Idempotency-Key": "rent-2026-12", "X-Request-ID": "first-try"}
    # The first answer never reaches the client; all it can do is send the same request again.
    await client.post("/api/v1/tasks", json=body, headers=headers)

    retried = await client.post(
        "/api/v1/tasks", json=body, headers={**headers, "X-Request-ID": "second-try"}
    )

    assert retried.status_code == 201
    assert retried.headers["etag"] == '"1"'
    [row] = await store_events(settings)
    assert row["topic"] == "TaskCreated"
    assert str(row["originator_id"]) == retried.json()["id"]
    assert retried.headers["x-event-position"] == str(row["notification_id"])
    assert json.loads(row["state"])["idempotency_key"] == "rent-2026-12"
    assert json.loads(row["state"])["correlation_id"] == "first-try"


async def test_a_retry_returns_the_original_response_even_after_the_task_changed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = {"title": "Book flights", "due_date": "2099-06-01", "tags": ["travel"]}
    first = await client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "trip"})
    path = first.headers["location"]
    await client.patch(path, json={"title": "Book trains", "completed": True})
    await client.delete(path)

    again = await client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "trip"})

    assert answer(again) == answer(first)
    assert again.json()["version"] == 1
    assert again.json()["title"] == "Book flights"
    rows = await store_events(settings)
    assert len(created_events(rows)) == 1
    assert len(rows) == 3


async def test_a_retry_with_a_body_equal_after_normalisation_is_a_replay(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    key = {"Idempotency-Key": "norm"}
    first = await client.post("/api/v1/tasks", json={"title": "x", "tags": ["A"]}, headers=key)

    again = await client.post(
        "/api/v1/tasks",
        json={"tags": [" a ", "a"], "title": "  x ", "priority": 3, "description": None},
        headers=key,
    )

    assert answer(again) == answer(first)
    assert len(await store_events(settings)) == 1


OTHER_BODIES: list[dict[str, Any]] = [
    {"title": "y"},
    {"title": "x", "priority": 4},
    {"title": "x", "description": ""},
    {"title": "x", "tags": ["a", "b"]},
    {"title": "x", "tags": []},
    {"title": "x", "due_date": "2099-01-01"},
]


async def test_the_same_key_with_another_body_is_422_under_the_key_and_appends_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    key = {"Idempotency-Key": "reused"}
    await client.post("/api/v1/tasks", json={"title": "x", "tags": ["a"]}, headers=key)

    for other in OTHER_BODIES:
        response = await client.post("/api/v1/tasks", json=other, headers=key)

        assert response.status_code == 422, other
        body = response.json()
        assert body["error"] == "Validation failed"
        assert list(body["details"]) == ["Idempotency-Key"]
        assert isinstance(body["details"]["Idempotency-Key"], str)
    assert len(await store_events(settings)) == 1


async def test_different_keys_and_no_key_create_different_tasks(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = {"title": "same body"}

    answers = [
        await client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "one"}),
        await client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "One"}),
        await client.post("/api/v1/tasks", json=body),
        await client.post("/api/v1/tasks", json=body),
    ]

    assert len({response.json()["id"] for response in answers}) == 4
    assert len(created_events(await store_events(settings))) == 4


async def test_concurrent_requests_with_one_key_create_one_task(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = {"title": "Only once"}
    headers = {"Idempotency-Key": "burst"}

    answers = await asyncio.gather(
        *(client.post("/api/v1/tasks", json=body, headers=headers) for _ in range(8))
    )

    assert {response.status_code for response in answers} == {201}
    assert all(answer(response) == answer(answers[0]) for response in answers)
    [row] = await store_events(settings)
    assert str(row["originator_id"]) == answers[0].json()["id"]


async def test_a_retry_after_midnight_keeps_its_answer_though_its_due_date_has_passed(
    client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = date(2026, 11, 26)
    monkeypatch.setattr(commands, "today_utc", lambda: today)
    body = {"title": "Due today", "due_date": today.isoformat()}
    first = await client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "late"})
    monkeypatch.setattr(commands, "today_utc", lambda: today + timedelta(days=1))

    again = await client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "late"})
    fresh = await client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "new"})

    assert first.status_code == 201
    assert answer(again) == answer(first)
    assert fresh.status_code == 422
    assert list(fresh.json()["details"]) == ["due_date"]
    assert len(await store_events(settings)) == 1


async def test_an_invalid_body_with_a_used_key_is_refused_for_the_body(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    key = {"Idempotency-Key": "k"}
    await client.post("/api/v1/tasks", json={"title": "x"}, headers=key)

    response = await client.post("/api/v1/tasks", json={"title": ""}, headers=key)

    assert response.status_code == 422
    assert list(response.json()["details"]) == ["title"]
    assert len(await store_events(settings)) == 1


async def test_idempotency_keys_are_scoped_per_api_key(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=["alice-secret", "bob-secret"])
    app = create_app(settings)
    body = {"title": "same body, same key"}

    async with serving(app) as http:
        answers = [
            await http.post(
                "/api/v1/tasks",
                json=body,
                headers={"Idempotency-Key": "k", "Authorization": f"Bearer {who}-secret"},
            )
            for who in ("alice", "bob", "alice")
        ]

    assert [response.status_code for response in answers] == [201, 201, 201]
    assert answers[0].json()["id"] != answers[1].json()["id"]
    assert answer(answers[2]) == answer(answers[0])
    assert len(await store_events(settings)) == 2
