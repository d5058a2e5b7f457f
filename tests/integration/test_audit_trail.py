"""Who changed what: every event names the API key that made it (`anonymous` without keys),
an update keeps the value before of every field it changed, and events stored before either
existed read with actor `unknown` and `previous` folded from the history. History pages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import asyncpg
import httpx

from composition import create_app
from shared.auth import key_id
from shared.config import Settings
from tests.helpers import JSON, BoundConsumer, serving
from tests.integration.test_write_upcasting import insert_v1_task

FEED = "/api/v1/events"


async def test_each_event_names_the_key_that_made_it_in_history_feed_and_wire(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys={"alice": "alice-key", "bob": "bob-key"})
    alice = {"Authorization": "Bearer alice-key", **JSON}
    bob = {"Authorization": "Bearer bob-key", **JSON}
    async with serving(create_app(settings)) as client, BoundConsumer(settings) as consumer:
        created = await client.post("/api/v1/tasks", json={"title": "Audit me"}, headers=alice)
        path = f"/api/v1/tasks/{created.json()['id']}"
        await client.patch(path, json={"priority": 1}, headers=bob)
        await client.delete(path, headers=alice)
        wire = await consumer.wait_for(3)
        history = await client.get(f"{path}/history", headers=alice)
        feed = await client.get(FEED, headers=bob)
        bobs = await client.get(FEED, params={"actor": "bob"}, headers=bob)

    assert [e["actor"] for e in history.json()["events"]] == ["alice", "bob", "alice"]
    assert [e["actor"] for e in feed.json()] == ["alice", "bob", "alice"]
    assert sorted((b["position"], b["actor"]) for b in wire) == [
        (e["position"], e["actor"]) for e in feed.json()
    ]
    assert [e["type"] for e in bobs.json()] == ["task.updated"]
    assert "alice-key" not in feed.text + history.text


async def test_a_plain_list_of_keys_gets_derived_names_that_are_not_the_key(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=["listed-key"])
    headers = {"Authorization": "Bearer listed-key", **JSON}
    async with serving(create_app(settings)) as client:
        created = await client.post("/api/v1/tasks", json={"title": "Listed"}, headers=headers)
        history = await client.get(f"/api/v1/tasks/{created.json()['id']}/history", headers=headers)

    [event] = history.json()["events"]
    assert event["actor"] == f"key-{key_id('listed-key')}"
    assert "listed-key" not in history.text


async def test_without_keys_every_event_is_made_by_anonymous(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "Open"}, headers=JSON)
    await client.patch(f"/api/v1/tasks/{created.json()['id']}", json={"tags": ["x"]}, headers=JSON)

    feed = (await client.get(FEED)).json()
    anonymous = (await client.get(FEED, params={"actor": "anonymous"})).json()

    assert [e["actor"] for e in feed] == ["anonymous", "anonymous"]
    assert anonymous == feed


async def test_previous_holds_the_old_value_of_every_changed_field(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/api/v1/tasks",
        json={
            "title": "Before",
            "description": "old words",
            "priority": 2,
            "due_date": "2099-01-01",
            "tags": ["a", "b"],
        },
        headers=JSON,
    )
    path = f"/api/v1/tasks/{created.json()['id']}"
    everything = {
        "title": "After",
        "description": None,
        "priority": 5,
        "due_date": None,
        "tags": [],
        "completed": True,
    }
    completed = await client.patch(path, json=everything, headers=JSON)
    await client.patch(path, json={"completed": False, "due_date": "2099-02-02"}, headers=JSON)

    events = (await client.get(f"{path}/history")).json()["events"]
    feed = (await client.get(FEED, params={"type": "task.updated"})).json()

    first, second = events[1]["data"], events[2]["data"]
    assert first["previous"] == {
        "title": "Before",
        "description": "old words",
        "priority": 2,
        "due_date": "2099-01-01",
        "tags": ["a", "b"],
        "completed": False,
        "completed_at": None,
    }
    assert first["changes"] == {**everything, "completed_at": completed.json()["completed_at"]}
    assert second["previous"] == {
        "completed": True,
        "completed_at": completed.json()["completed_at"],
        "due_date": None,
    }
    assert second["changes"] == {"completed": False, "completed_at": None, "due_date": "2099-02-02"}
    assert [{k: e["data"][k] for k in ("changes", "previous")} for e in feed] == [first, second]


async def test_events_stored_by_the_previous_class_versions_read_with_actor_unknown(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task_id = await insert_v1_task(settings)
    old_update = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2025-03-05T00:00:00.000000+00:00"},
        "changes": {"priority": 4, "tags": ["new"]},
        "correlation_id": None,
    }
    old_delete = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2025-03-06T00:00:00.000000+00:00"},
        "correlation_id": "old-req",
    }
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.executemany(
            "INSERT INTO tasks_events (originator_id, originator_version, topic, state) "
            "VALUES ($1, $2, $3, $4)",
            [
                (task_id, 2, "TaskUpdated", json.dumps(old_update).encode()),
                (task_id, 3, "TaskSoftDeleted", json.dumps(old_delete).encode()),
            ],
        )
    finally:
        await conn.close()

    history = (await client.get(f"/api/v1/tasks/{task_id}/history")).json()["events"]
    second_page = await client.get(
        f"/api/v1/tasks/{task_id}/history", params={"after_version": 1, "limit": 1}
    )
    feed = (await client.get(FEED, params={"task_id": str(task_id)})).json()
    unknown = (await client.get(FEED, params={"actor": "unknown"})).json()

    assert [e["actor"] for e in history] == ["unknown"] * 3
    assert history[1]["data"] == {
        "changes": {"priority": 4, "tags": ["new"]},
        "previous": {"priority": 2, "tags": ["old"]},
    }
    assert second_page.json()["events"] == [history[1]]
    assert [e["actor"] for e in feed] == ["unknown"] * 3
    assert feed[1]["data"]["previous"] == {"priority": 2, "tags": ["old"]}
    assert feed[2]["data"]["task"]["deleted"] is True
    assert feed[2]["correlationid"] == "old-req"
    assert unknown == feed


async def test_history_pages_with_a_link_to_the_next_page(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "Long"}, headers=JSON)
    path = f"/api/v1/tasks/{created.json()['id']}"
    for priority in (1, 2, 3, 4):
        await client.patch(path, json={"priority": priority % 5 + 1}, headers=JSON)

    whole = (await client.get(f"{path}/history")).json()["events"]
    first = await client.get(f"{path}/history", params={"limit": 2})
    pages = [first]
    while "link" in pages[-1].headers:
        link = pages[-1].headers["link"]
        assert link.endswith('>; rel="next"')
        pages.append(await client.get(link[1 : link.index(">")]))
    past_the_end = await client.get(f"{path}/history", params={"after_version": 9})
    unknown = await client.get(f"/api/v1/tasks/{uuid.uuid4()}/history", params={"after_version": 1})

    assert len(whole) == 5
    assert first.headers["link"] == f'<{path}/history?after_version=2&limit=2>; rel="next"'
    assert [e for page in pages for e in page.json()["events"]] == whole
    assert len(pages) == 3
    assert past_the_end.status_code == 200
    assert past_the_end.json()["events"] == []
    assert unknown.status_code == 404
