"""Concurrent writes to one task: without If-Match none is lost and none fails; with it, the
store's version decides and a stale precondition appends nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from shared.config import Settings
from tests.helpers import store_events


async def create(client: httpx.AsyncClient) -> tuple[str, uuid.UUID]:
    response = await client.post("/api/v1/tasks", json={"title": "contended"})
    assert response.status_code == 201
    return response.headers["location"], uuid.UUID(response.json()["id"])


async def test_sixteen_concurrent_patches_without_if_match_all_succeed_in_sixteen_versions(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    path, task_id = await create(client)

    answers = await asyncio.gather(
        *(
            client.patch(path, json={"title": f"writer {n}", "priority": n % 5 + 1})
            for n in range(16)
        )
    )

    assert [response.status_code for response in answers] == [200] * 16
    versions = sorted(response.json()["version"] for response in answers)
    assert versions == list(range(2, 18))
    assert sorted(response.headers["etag"] for response in answers) == sorted(
        f'"{v}"' for v in range(2, 18)
    )
    rows = await store_events(settings, task_id)
    assert [row["originator_version"] for row in rows] == list(range(1, 18))
    stored_titles = sorted(json.loads(row["state"])["changes"]["title"] for row in rows[1:])
    assert stored_titles == sorted(f"writer {n}" for n in range(16))
    by_version = {response.json()["version"]: response for response in answers}
    for row in rows[1:]:
        response = by_version[row["originator_version"]]
        assert response.headers["x-event-position"] == str(row["notification_id"])
        assert response.json()["title"] == json.loads(row["state"])["changes"]["title"]
    last = by_version[17].json()
    assert last["title"] == json.loads(rows[-1]["state"])["changes"]["title"]


async def test_concurrent_patches_with_the_same_if_match_let_exactly_one_through(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    path, task_id = await create(client)

    answers = await asyncio.gather(
        *(
            client.patch(path, json={"title": f"w{n}"}, headers={"If-Match": '"1"'})
            for n in range(8)
        )
    )

    statuses = sorted(response.status_code for response in answers)
    assert statuses == [200] + [412] * 7
    for response in answers:
        if response.status_code == 412:
            assert response.json()["error"] == "Precondition failed"
            assert isinstance(response.json()["details"], str)
    assert len(await store_events(settings, task_id)) == 2


async def test_a_delete_racing_patches_leaves_a_consistent_history(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    path, task_id = await create(client)

    answers = await asyncio.gather(
        *(client.patch(path, json={"priority": n % 5 + 1, "title": f"t{n}"}) for n in range(6)),
        client.delete(path),
    )

    deleted = answers[-1]
    assert deleted.status_code == 204
    applied = [response for response in answers[:-1] if response.status_code == 200]
    assert all(response.status_code in (200, 404) for response in answers[:-1])
    rows = await store_events(settings, task_id)
    assert [row["originator_version"] for row in rows] == list(range(1, len(rows) + 1))
    assert [row["topic"] for row in rows].count("TaskSoftDeleted") == 1
    assert rows[-1]["topic"] == "TaskSoftDeleted"
    assert len(rows) == 2 + len(applied)
    assert deleted.headers["etag"] == f'"{len(rows)}"'


IF_MATCH_ANSWERS: list[tuple[str, int]] = [
    ("*", 200),
    ('"{v}"', 200),
    ('W/"{v}"', 200),
    ('"1", "{v}"', 200),
    ('"99", W/"{v}" , "1"', 200),
    ('"{prev}"', 412),
    ('W/"{prev}"', 412),
    ('"1", W/"{prev}"', 412),
    ('"abc"', 412),
    ('"{v}x"', 412),
    ("{v}", 422),
    ("W/{v}", 422),
    ('"{v}', 422),
    ('"{v}" "{v}"', 422),
    ('*, "{v}"', 422),
    ("", 422),
]


async def test_if_match_accepts_star_strong_weak_and_lists_and_refuses_malformed_ones(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    path, task_id = await create(client)
    outcomes: dict[str, Any] = {}

    for n, (form, expected) in enumerate(IF_MATCH_ANSWERS):
        version = len(await store_events(settings, task_id))
        header = form.format(v=version, prev=version - 1)
        response = await client.patch(
            path, json={"description": f"attempt {n}"}, headers={"If-Match": header}
        )
        appended = len(await store_events(settings, task_id)) - version
        details = response.json().get("details")
        if expected == 422:
            ok = response.status_code == 422 and list(details) == ["If-Match"] and appended == 0
        elif expected == 412:
            ok = response.status_code == 412 and isinstance(details, str) and appended == 0
        else:
            ok = response.status_code == 200 and appended == 1
        if not ok:
            outcomes[header] = (response.status_code, details, appended)

    assert outcomes == {}
