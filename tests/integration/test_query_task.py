"""One task by id (ETag, 304, 404), its history and time travel from the event store, and HEAD."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx

from shared.config import Settings
from shared.domain import format_timestamp
from tests.helpers import JSON, store_events


async def create(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    response = await client.post("/api/v1/tasks", json={"title": "Report", **fields}, headers=JSON)
    assert response.status_code == 201, response.text
    return response


def after(response: httpx.Response) -> dict[str, str]:
    """Read-your-writes: wait for the projection to reach this write."""
    return {"X-Min-Position": response.headers["x-event-position"]}


async def test_a_task_is_read_with_its_etag_and_revalidated_with_304(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client, tags=["work"])
    task = created.json()
    path = f"/api/v1/tasks/{task['id']}"

    read = await client.get(path, headers=after(created))
    same = [
        await client.get(path, headers={"If-None-Match": tag})
        for tag in ('"1"', 'W/"1"', '"7", "1"', "*")
    ]
    other = await client.get(path, headers={"If-None-Match": '"2"'})

    assert read.status_code == 200
    assert read.json() == task
    assert read.headers["etag"] == '"1"'
    assert read.headers["cache-control"] == "no-cache"
    assert int(read.headers["x-projection-position"]) >= int(created.headers["x-event-position"])
    for answer in same:
        assert answer.status_code == 304
        assert answer.content == b""
        assert answer.headers["etag"] == '"1"'
        assert "x-projection-position" in answer.headers
    assert other.status_code == 200
    assert other.json() == task


async def test_a_changed_task_no_longer_matches_its_old_etag(client: httpx.AsyncClient) -> None:
    task = (await create(client)).json()
    path = f"/api/v1/tasks/{task['id']}"
    patched = await client.patch(path, json={"priority": 5}, headers=JSON)

    read = await client.get(path, headers={"If-None-Match": '"1"', **after(patched)})

    assert read.status_code == 200
    assert read.headers["etag"] == '"2"'
    assert read.json()["priority"] == 5


async def test_unknown_malformed_and_deleted_tasks_are_not_found(
    client: httpx.AsyncClient,
) -> None:
    task = (await create(client)).json()
    deleted = await client.delete(f"/api/v1/tasks/{task['id']}")
    hyphenless = task["id"].replace("-", "")
    paths = [
        f"/api/v1/tasks/{uuid.uuid4()}",
        "/api/v1/tasks/not-a-uuid",
        f"/api/v1/tasks/{hyphenless}",
        f"/api/v1/tasks/{{{task['id']}}}",
        f"/api/v1/tasks/{task['id']}",
    ]

    answers = [await client.get(path, headers=after(deleted)) for path in paths]

    for path, answer in zip(paths, answers, strict=True):
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "Not found"
        assert answer.json()["details"].startswith("No task ")
        assert "x-projection-position" in answer.headers


async def test_every_read_route_answers_head_like_get(client: httpx.AsyncClient) -> None:
    created = await create(client)
    task_id = created.json()["id"]
    paths = [
        "/api/v1/tasks",
        "/api/v1/tasks?tags=work&sort=title",
        f"/api/v1/tasks/{task_id}",
        f"/api/v1/tasks/{task_id}/history",
        f"/api/v1/tasks/{task_id}?version=1",
        f"/api/v1/tasks/{uuid.uuid4()}",
        "/api/v1/tasks?limit=0",
    ]

    pairs = [
        (await client.get(path, headers=after(created)), await client.head(path)) for path in paths
    ]

    for path, (get, head) in zip(paths, pairs, strict=True):
        assert head.status_code == get.status_code, path
        for name in ("etag", "content-type", "cache-control", "x-projection-position"):
            assert head.headers.get(name) == get.headers.get(name), (path, name)


async def test_history_replays_every_event_of_a_created_updated_and_deleted_task(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await create(
        client,
        description="first",
        due_date="2099-01-02",
        tags=["work"],
        priority=2,
    )
    task_id = created.json()["id"]
    path = f"/api/v1/tasks/{task_id}"
    writes = [created]
    writes.append(
        await client.patch(
            path, json={"title": "Report v2"}, headers={**JSON, "X-Request-ID": "req-2"}
        )
    )
    writes.append(await client.patch(path, json={"completed": True}, headers=JSON))
    writes.append(await client.delete(path, headers={"X-Request-ID": "req-4"}))

    history = await client.get(f"{path}/history")

    assert history.status_code == 200
    assert history.headers["cache-control"] == "no-cache"
    body = history.json()
    assert body["task_id"] == task_id
    events = body["events"]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    assert [e["type"] for e in events] == [
        "TaskCreated",
        "TaskUpdated",
        "TaskUpdated",
        "TaskSoftDeleted",
    ]
    assert [e["position"] for e in events] == [int(w.headers["x-event-position"]) for w in writes]
    stored = await store_events(settings, uuid.UUID(task_id))
    assert [e["position"] for e in events] == [row["notification_id"] for row in stored]
    assert events[0]["data"] == {
        "title": "Report",
        "description": "first",
        "priority": 2,
        "due_date": "2099-01-02",
        "tags": ["work"],
    }
    assert events[1]["data"] == {"changes": {"title": "Report v2"}, "previous": {"title": "Report"}}
    assert events[2]["data"]["changes"]["completed"] is True
    assert events[3]["data"] == {}
    assert events[1]["correlation_id"] == "req-2"
    assert events[3]["correlation_id"] == "req-4"
    assert events[0]["occurred_at"] == created.json()["created_at"]
    assert events[2]["occurred_at"] == writes[2].json()["updated_at"]
    assert "x-projection-position" in history.headers


async def test_history_of_a_task_that_never_existed_is_not_found(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.get(f"/api/v1/tasks/{uuid.uuid4()}/history")
    malformed = await client.get("/api/v1/tasks/nope/history")
    task_id = (await create(client)).json()["id"]
    with_param = await client.get(f"/api/v1/tasks/{task_id}/history", params={"limit": "0"})
    unknown_param = await client.get(f"/api/v1/tasks/{task_id}/history", params={"sort": "x"})

    assert unknown.status_code == 404
    assert malformed.status_code == 404
    assert with_param.status_code == 422
    assert list(with_param.json()["details"]) == ["limit"]
    assert unknown_param.status_code == 422
    assert list(unknown_param.json()["details"]) == ["sort"]


def _moment(value: str, microseconds: int = 0) -> str:
    return format_timestamp(datetime.fromisoformat(value) + timedelta(microseconds=microseconds))


async def test_time_travel_returns_the_task_as_it_was_at_a_version_or_a_moment(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client, priority=1)
    task_id = created.json()["id"]
    path = f"/api/v1/tasks/{task_id}"
    updated = await client.patch(path, json={"priority": 4, "title": "Later"}, headers=JSON)
    deleted = await client.delete(path)
    events = (await client.get(f"{path}/history")).json()["events"]

    by_version = [await client.get(path, params={"version": n}) for n in (1, 2, 3)]
    at = {
        "before creation": await client.get(
            path, params={"as_of": _moment(events[0]["occurred_at"], -1)}
        ),
        "at creation": await client.get(path, params={"as_of": events[0]["occurred_at"]}),
        "just before the update": await client.get(
            path, params={"as_of": _moment(events[1]["occurred_at"], -1)}
        ),
        "at the update": await client.get(path, params={"as_of": events[1]["occurred_at"]}),
        "now, as an offset": await client.get(
            path,
            params={"as_of": datetime.fromisoformat(events[2]["occurred_at"]).isoformat()},
        ),
    }

    assert [r.status_code for r in by_version] == [200, 200, 200]
    assert by_version[0].json() == created.json()
    assert by_version[1].json() == updated.json()
    gone = by_version[2].json()
    assert gone["deleted"] is True
    assert gone["deleted_at"] == events[2]["occurred_at"]
    assert gone["version"] == 3
    assert [r.headers["etag"] for r in by_version] == ['"1"', '"2"', '"3"']
    assert by_version[0].headers["cache-control"] == "max-age=31536000, immutable"
    assert deleted.headers["etag"] == '"3"'
    assert at["before creation"].status_code == 404
    assert at["at creation"].json() == created.json()
    assert at["just before the update"].json() == created.json()
    assert at["at the update"].json() == updated.json()
    assert at["now, as an offset"].json() == gone
    assert at["at creation"].headers["etag"] == '"1"'
    for answer in [*by_version, *at.values()]:
        assert "x-projection-position" in answer.headers


async def test_time_travel_refuses_what_cannot_be_answered(client: httpx.AsyncClient) -> None:
    task_id = (await create(client)).json()["id"]
    path = f"/api/v1/tasks/{task_id}"
    cases: dict[str, tuple[dict[str, str], int, str | None]] = {
        "above the current version": ({"version": "2"}, 404, None),
        "an unknown id": ({"version": "1"}, 404, None),
        "version zero": ({"version": "0"}, 422, "version"),
        "a bad version": ({"version": "1.0"}, 422, "version"),
        "both": ({"version": "1", "as_of": "2026-01-01T00:00:00Z"}, 422, "as_of"),
        "as_of without a zone": ({"as_of": "2026-01-01T00:00:00"}, 422, "as_of"),
        "as_of as a date": ({"as_of": "2026-01-01"}, 422, "as_of"),
        "an unknown parameter": ({"at": "1"}, 422, "at"),
        "a bad min_position": ({"min_position": "x"}, 422, "min_position"),
        # Valid ISO 8601, but before year 1 once in UTC.
        "as_of out of range": ({"as_of": "0001-01-01T00:00:00+01:00"}, 422, "as_of"),
    }

    answers = {
        name: await client.get(
            f"/api/v1/tasks/{uuid.uuid4()}" if name == "an unknown id" else path, params=params
        )
        for name, (params, _, _) in cases.items()
    }

    for name, (_, status, key) in cases.items():
        answer = answers[name]
        assert answer.status_code == status, (name, answer.text)
        if key is not None:
            assert list(answer.json()["details"]) == [key], name
        assert "x-projection-position" in answer.headers


async def test_history_takes_a_position_to_wait_for_and_answers_at_once(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client)
    path = f"/api/v1/tasks/{created.json()['id']}/history"
    beyond = str(int(created.headers["x-event-position"]) + 1_000)

    as_parameter = await client.get(path, params={"min_position": beyond})
    as_header = await client.get(path, headers={"X-Min-Position": beyond})
    bad = await client.get(path, params={"min_position": "-1"})
    twice = await client.get(f"{path}?min_position=1&min_position=2")

    # The store holds every acknowledged write already: nothing to wait for, no 503.
    assert as_parameter.status_code == 200
    assert as_header.status_code == 200
    assert as_parameter.json() == as_header.json()
    assert bad.status_code == 422
    assert list(bad.json()["details"]) == ["min_position"]
    assert twice.status_code == 422


async def test_a_past_version_is_revalidated_with_304_like_the_current_one(
    client: httpx.AsyncClient,
) -> None:
    task_id = (await create(client)).json()["id"]
    path = f"/api/v1/tasks/{task_id}"
    patched = await client.patch(path, json={"priority": 5}, headers=JSON)
    moment = patched.json()["updated_at"]

    first = await client.get(path, params={"version": "1"}, headers={"If-None-Match": '"1"'})
    weak = await client.get(path, params={"as_of": moment}, headers={"If-None-Match": 'W/"2"'})
    other = await client.get(path, params={"version": "1"}, headers={"If-None-Match": '"2"'})

    for answer, etag in ((first, '"1"'), (weak, '"2"')):
        assert answer.status_code == 304
        assert answer.content == b""
        assert answer.headers["etag"] == etag
        assert "x-projection-position" in answer.headers
    assert other.status_code == 200
    assert other.json()["version"] == 1


async def test_the_service_endpoints_and_documents_answer_head_like_get(
    client: httpx.AsyncClient,
) -> None:
    paths = [
        "/health",
        "/ready",
        "/metrics",
        "/asyncapi.yaml",
        "/openapi.json",
        "/docs",
    ]

    pairs = [(await client.get(path), await client.head(path)) for path in paths]

    for path, (get, head) in zip(paths, pairs, strict=True):
        assert get.status_code == 200, path
        assert head.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
