"""The write contract over HTTP against the real store: headers, PATCH semantics, soft delete,
every error status in the one error shape, and the order in which checks apply."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from command_service import commands
from command_service.application import TaskApplication
from composition import create_command_app
from shared.config import Settings
from shared.domain import Task
from shared.jsonhttp import valid_token
from shared.store import decode, of_task
from tests.helpers import JSON, serving, store_events

WIRE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
TIMESTAMP_FIELDS = ("created_at", "updated_at", "completed_at", "deleted_at")


def state(row: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(row["state"])
    return loaded


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/tasks", json={"title": "Task", **fields})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def assert_error(response: httpx.Response, status: int, title: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "details"}
    assert body["error"] == title


async def test_a_create_answers_201_with_the_task_and_its_headers_and_stores_one_event(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        "/api/v1/tasks",
        json={"title": "Write the report", "description": "Finance first", "priority": 4,
              "due_date": "2099-12-15", "tags": ["Work", "urgent"]},
        headers={"X-Request-ID": "req-create-1"},
    )  # fmt: skip

    task = response.json()
    assert response.status_code == 201
    assert response.headers["location"] == f"/api/v1/tasks/{task['id']}"
    assert response.headers["etag"] == '"1"'
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"] == "req-create-1"
    assert task == {
        "id": task["id"],
        "title": "Write the report",
        "description": "Finance first",
        "priority": 4,
        "due_date": "2099-12-15",
        "tags": ["work", "urgent"],
        "completed": False,
        "completed_at": None,
        "deleted": False,
        "deleted_at": None,
        "created_at": task["created_at"],
        "updated_at": task["created_at"],
        "version": 1,
    }
    assert WIRE_TIMESTAMP.fullmatch(task["created_at"])
    [row] = await store_events(settings, uuid.UUID(task["id"]))
    assert row["topic"] == "TaskCreated"
    assert row["originator_version"] == 1
    assert int(response.headers["x-event-position"]) == row["notification_id"]
    assert state(row)["correlation_id"] == "req-create-1"
    assert state(row)["idempotency_key"] is None


async def test_a_patch_changes_only_the_fields_present_and_stores_only_the_changes(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client, description="keep", priority=2, due_date="2099-01-01", tags=["a"])

    response = await client.patch(
        f"/api/v1/tasks/{task['id']}", json={"priority": 5, "title": "Task"},
        headers={"X-Request-ID": "req-patch-1"},
    )  # fmt: skip

    updated = response.json()
    assert response.status_code == 200
    assert response.headers["etag"] == '"2"'
    assert response.headers["cache-control"] == "no-store"
    assert updated == {**task, "priority": 5, "version": 2, "updated_at": updated["updated_at"]}
    assert updated["updated_at"] >= task["updated_at"]
    rows = await store_events(settings, uuid.UUID(task["id"]))
    assert [row["topic"] for row in rows] == ["TaskCreated", "TaskUpdated"]
    assert state(rows[1])["changes"] == {"priority": 5}
    assert state(rows[1])["correlation_id"] == "req-patch-1"
    assert int(response.headers["x-event-position"]) == rows[1]["notification_id"]


NULLS_AND_CHANGES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"description": None}, {"description": None}),
    ({"due_date": None}, {"due_date": None}),
    ({"tags": []}, {"tags": []}),
    ({"tags": ["B", "b", "c"]}, {"tags": ["b", "c"]}),
    ({"title": " Renamed "}, {"title": "Renamed"}),
    ({"description": "new", "priority": 2}, {"description": "new"}),
]


async def test_null_clears_the_nullable_fields_and_the_event_holds_only_what_changed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for patch, changes in NULLS_AND_CHANGES:
        task = await create(client, description="d", priority=2, due_date="2099-01-01", tags=["a"])

        response = await client.patch(f"/api/v1/tasks/{task['id']}", json=patch)

        assert response.status_code == 200, patch
        updated_at = response.json()["updated_at"]
        assert response.json() == {**task, **changes, "version": 2, "updated_at": updated_at}
        rows = await store_events(settings, uuid.UUID(task["id"]))
        assert state(rows[-1])["changes"] == changes


NO_OPS: list[dict[str, Any]] = [
    {},
    {"title": "Task"},
    {"title": "  Task  "},
    {"description": "d", "priority": 2},
    {"due_date": "2099-01-01"},
    {"tags": ["A", "a"]},
    {"completed": False},
]


async def test_a_patch_that_changes_nothing_appends_nothing_and_answers_the_current_task(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client, description="d", priority=2, due_date="2099-01-01", tags=["a"])
    path = f"/api/v1/tasks/{task['id']}"
    await client.patch(path, json={"title": "Other"})
    current = (await client.patch(path, json={"title": "Task"})).json()
    before = await store_events(settings)

    for patch in NO_OPS:
        response = await client.patch(path, json=patch)

        assert response.status_code == 200, patch
        assert response.json() == current
        assert response.headers["etag"] == '"3"'
        assert response.headers["x-event-position"] == str(before[-1]["notification_id"])
    assert await store_events(settings) == before


async def test_completed_sets_and_clears_completed_at(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)
    path = f"/api/v1/tasks/{task['id']}"

    done = (await client.patch(path, json={"completed": True})).json()
    again = await client.patch(path, json={"completed": True})
    reopened = (await client.patch(path, json={"completed": False})).json()

    assert done["completed"] is True
    assert WIRE_TIMESTAMP.fullmatch(done["completed_at"])
    assert done["completed_at"] == done["updated_at"]
    assert again.json() == done
    assert reopened["completed"] is False
    assert reopened["completed_at"] is None
    rows = await store_events(settings, uuid.UUID(task["id"]))
    assert [state(row).get("changes") for row in rows[1:]] == [
        {"completed": True, "completed_at": done["completed_at"]},
        {"completed": False, "completed_at": None},
    ]


async def test_a_task_that_became_overdue_stays_editable_but_a_changed_past_date_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    overdue = Task.create(
        uuid.uuid4(), title="Overdue", description=None, priority=3, due_date="2020-01-01",
        tags=[], idempotency_key=None, correlation_id=None,
    )  # fmt: skip
    store = TaskApplication(settings, {"CREATE_TABLE": "n"})
    try:
        store.save(overdue)
    finally:
        store.close()
    path = f"/api/v1/tasks/{overdue.id}"

    edited = await client.patch(path, json={"title": "Still overdue", "due_date": "2020-01-01"})
    other_past = await client.patch(path, json={"due_date": "2020-01-02"})
    cleared = await client.patch(path, json={"due_date": None})

    assert edited.status_code == 200
    assert edited.json()["due_date"] == "2020-01-01"
    assert other_past.status_code == 422
    assert other_past.json()["error"] == "Validation failed"
    assert list(other_past.json()["details"]) == ["due_date"]
    assert cleared.status_code == 200
    rows = await store_events(settings, overdue.id)
    assert [state(row).get("changes") for row in rows[1:]] == [
        {"title": "Still overdue"},
        {"due_date": None},
    ]


async def test_a_due_date_of_today_that_has_passed_by_tomorrow_can_still_be_kept(
    client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = date(2026, 11, 26)
    monkeypatch.setattr(commands, "today_utc", lambda: today)
    task = await create(client, due_date="2026-11-26")
    monkeypatch.setattr(commands, "today_utc", lambda: today + timedelta(days=1))
    path = f"/api/v1/tasks/{task['id']}"

    kept = await client.patch(path, json={"due_date": "2026-11-26", "priority": 1})
    moved_back = await client.patch(path, json={"due_date": "2026-11-25"})
    moved_on = await client.patch(path, json={"due_date": "2026-11-27"})

    assert kept.status_code == 200
    assert kept.json()["due_date"] == "2026-11-26"
    assert moved_back.status_code == 422
    assert list(moved_back.json()["details"]) == ["due_date"]
    assert moved_on.status_code == 200
    rows = await store_events(settings, uuid.UUID(task["id"]))
    assert [state(row).get("changes") for row in rows[1:]] == [
        {"priority": 1},
        {"due_date": "2026-11-27"},
    ]


async def test_a_delete_answers_204_and_the_task_is_gone_for_every_later_write_and_read(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)
    await client.patch(f"/api/v1/tasks/{task['id']}", json={"priority": 1})
    path = f"/api/v1/tasks/{task['id']}"

    deleted = await client.delete(path, headers={"X-Request-ID": "req-delete"})

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert deleted.headers["etag"] == '"3"'
    assert deleted.headers["cache-control"] == "no-store"
    rows = await store_events(settings, uuid.UUID(task["id"]))
    assert [row["topic"] for row in rows] == ["TaskCreated", "TaskUpdated", "TaskSoftDeleted"]
    assert int(deleted.headers["x-event-position"]) == rows[-1]["notification_id"]
    assert state(rows[-1])["correlation_id"] == "req-delete"
    for response in (
        await client.patch(path, json={"title": "back"}),
        await client.patch(path, json={}),
        await client.delete(path),
        await client.delete(path, headers={"If-Match": "*"}),
        await client.get(path),
    ):
        assert_error(response, 404, "Not found")
        assert task["id"] in response.json()["details"]  # which resource is missing
    assert len(await store_events(settings, uuid.UUID(task["id"]))) == 3


async def test_unknown_and_malformed_ids_and_paths_are_404_in_the_error_shape(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)
    compact = task["id"].replace("-", "")
    requests = [
        ("PATCH", f"/api/v1/tasks/{uuid.uuid4()}"),
        ("DELETE", f"/api/v1/tasks/{uuid.uuid4()}"),
        ("PATCH", "/api/v1/tasks/not-a-uuid"),
        ("DELETE", "/api/v1/tasks/12345"),
        ("PATCH", f"/api/v1/tasks/{compact}"),
        ("DELETE", f"/api/v1/tasks/{{{task['id']}}}"),
        ("PATCH", f"/api/v1/tasks/urn:uuid:{task['id']}"),
        ("PATCH", f"/api/v1/tasks/{task['id']}/"),
        ("DELETE", f"/api/v1/tasks/{task['id']}/"),
        ("POST", "/api/v1/tasks/"),
        ("POST", "/api/v1/task"),
        ("POST", "/api/v2/tasks"),
        ("PATCH", f"/api/v1/tasks/{task['id']}/extra"),
    ]

    for method, path in requests:
        response = await client.request(method, path, json={"title": "x"})

        assert_error(response, 404, "Not found")
        details = response.json()["details"]
        assert details == f"No resource at {path}" or details.startswith("No task "), details
        assert "location" not in response.headers
    assert len(await store_events(settings)) == 1


NOT_SERVED = [
    ("PUT", "/api/v1/tasks/{id}", "GET, HEAD, PATCH, DELETE"),
    ("POST", "/api/v1/tasks/{id}", "GET, HEAD, PATCH, DELETE"),
    ("PUT", "/api/v1/tasks", "GET, HEAD, POST"),
    ("DELETE", "/api/v1/tasks", "GET, HEAD, POST"),
    ("PATCH", "/api/v1/tasks", "GET, HEAD, POST"),
]


async def test_a_method_a_path_does_not_serve_is_405_with_every_allowed_method(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)

    for method, path, allow in NOT_SERVED:
        response = await client.request(method, path.format(id=task["id"]), json={"title": "x"})

        assert_error(response, 405, "Method not allowed")
        assert response.json()["details"] == f"{method} is not served here; send one of: {allow}"
        assert response.headers["allow"] == allow
    assert len(await store_events(settings)) == 1


async def test_oversized_and_wrongly_typed_bodies_are_413_and_415_and_append_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)
    path = f"/api/v1/tasks/{task['id']}"
    padded = b'{"title": "x"}' + b" " * settings.max_body_bytes

    async def chunked() -> Any:
        yield b'{"title": "x"'
        for _ in range(17):
            yield b" " * 65_536
        yield b"}"

    posted = "/api/v1/tasks"
    answers = [
        (await client.post(posted, content=padded, headers=JSON), 413),
        (await client.patch(path, content=padded, headers=JSON), 413),
        (await client.post(posted, content=chunked(), headers=JSON), 413),
        # A DELETE's body is not read, but it is held to the same limit (413 comes first).
        (await client.request("DELETE", path, content=padded, headers=JSON), 413),
        (await client.request("DELETE", path, content=chunked()), 413),
        (await client.request("DELETE", f"/api/v1/tasks/{uuid.uuid4()}", content=chunked()), 413),
        (await client.post(posted, content=b'{"title": "x"}'), 415),
    ]
    for content_type in (
        "text/plain",
        "application/json; charset=iso-8859-1",
        "application/merge-patch+json",
        "application/x-www-form-urlencoded",
    ):
        headers = {"Content-Type": content_type}
        answers.append((await client.post(posted, json={"title": "x"}, headers=headers), 415))
    answers.append((await client.patch(path, json={}, headers={"Content-Type": "text/plain"}), 415))

    for response, status in answers:
        title = "Payload too large" if status == 413 else "Unsupported media type"
        assert_error(response, status, title)
        details = response.json()["details"]
        if status == 413:
            assert details == "Bodies are limited to 1048576 bytes"
        else:
            assert "application/json" in details["Content-Type"]
        assert valid_token(response.headers.get("x-request-id"))
        assert response.headers["cache-control"] == "no-store"
    assert len(await store_events(settings)) == 1


async def test_a_body_of_exactly_one_mebibyte_is_accepted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = b'{"title": "x"}'
    padded = body + b" " * (settings.max_body_bytes - len(body))

    response = await client.post("/api/v1/tasks", content=padded, headers=JSON)

    assert response.status_code == 201


async def test_merge_patch_json_is_accepted_for_patch(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)

    response = await client.patch(
        f"/api/v1/tasks/{task['id']}",
        content=b'{"priority": 1}',
        headers={"Content-Type": "application/merge-patch+json; charset=utf-8"},
    )

    assert response.status_code == 200
    assert response.json()["priority"] == 1


async def test_checks_apply_in_the_order_413_415_422_404_412_then_no_op(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)
    path = f"/api/v1/tasks/{task['id']}"
    unknown = f"/api/v1/tasks/{uuid.uuid4()}"
    big = b"x" * (settings.max_body_bytes + 1)
    stale = {"If-Match": '"7"'}

    answers = [
        (await client.patch(unknown, content=big, headers={"Content-Type": "text/plain"}), 413),
        (await client.patch(unknown, content=b"{", headers={"Content-Type": "text/plain"}), 415),
        (await client.patch(unknown, content=b"{", headers={**JSON, **stale}), 422),
        (await client.patch(unknown, json={"priority": 9}, headers=stale), 422),
        (await client.patch(unknown, json={}, headers={"If-Match": "7"}), 422),
        (await client.delete(unknown, headers={"If-Match": "7"}), 422),
        (await client.patch("/api/v1/tasks/nope", json={"priority": 9}), 422),
        (await client.patch(unknown, json={}, headers=stale), 404),
        (await client.delete(unknown, headers=stale), 404),
        (await client.patch(path, json={"due_date": "2020-01-01"}, headers=stale), 422),
        (await client.patch(path, json={}, headers=stale), 412),
        (await client.patch(path, json={"title": "Task"}, headers=stale), 412),
        (await client.delete(path, headers=stale), 412),
    ]

    assert [response.status_code for response, _ in answers] == [status for _, status in answers]
    assert len(await store_events(settings)) == 1


async def test_a_stale_if_match_is_412_with_a_string_detail_and_appends_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)
    path = f"/api/v1/tasks/{task['id']}"
    await client.patch(path, json={"priority": 1})

    patched = await client.patch(path, json={"priority": 2}, headers={"If-Match": '"1"'})
    deleted = await client.delete(path, headers={"If-Match": 'W/"1", "3"'})

    for response in (patched, deleted):
        assert_error(response, 412, "Precondition failed")
        assert isinstance(response.json()["details"], str)
        assert response.headers["etag"] == '"2"'
    assert len(await store_events(settings, uuid.UUID(task["id"]))) == 2


async def test_a_delete_honours_a_matching_if_match(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)

    response = await client.delete(f"/api/v1/tasks/{task['id']}", headers={"If-Match": 'W/"1"'})

    assert response.status_code == 204
    assert response.headers["etag"] == '"2"'


REQUEST_IDS = [
    ("client-chosen.id_1~", True),
    ("a" * 200, True),
    ("a" * 201, False),
    ("has space", False),
    ("", False),
    (None, False),
]


async def test_the_request_id_is_echoed_and_recorded_or_replaced_when_invalid(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for given, kept in REQUEST_IDS:
        headers = {} if given is None else {"X-Request-ID": given}

        created = await client.post("/api/v1/tasks", json={"title": "x"}, headers=headers)
        task_id = created.json()["id"]
        patched = await client.patch(
            f"/api/v1/tasks/{task_id}", json={"title": "y"}, headers=headers
        )
        deleted = await client.delete(f"/api/v1/tasks/{task_id}", headers=headers)

        ids = [response.headers["x-request-id"] for response in (created, patched, deleted)]
        if kept:
            assert ids == [given] * 3
        else:
            assert given not in ids
            assert len(set(ids)) == 3
            assert all(re.fullmatch(r"[\x21-\x7e]{1,200}", request_id) for request_id in ids)
        rows = await store_events(settings, uuid.UUID(task_id))
        assert [state(row)["correlation_id"] for row in rows] == ids


async def test_a_refusal_also_echoes_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/tasks", json={}, headers={"X-Request-ID": "req-bad"})

    assert response.status_code == 422
    assert response.headers["x-request-id"] == "req-bad"


async def test_every_timestamp_has_six_fractional_digits_and_z_and_a_tasks_events_never_go_back(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    task = await create(client)
    path = f"/api/v1/tasks/{task['id']}"
    shown = [task]
    for patch in ({"completed": True}, {"priority": 5}, {"completed": False}, {"completed": True}):
        shown.append((await client.patch(path, json=patch)).json())
    await client.delete(path)

    for one in shown:
        for field in TIMESTAMP_FIELDS:
            assert one[field] is None or WIRE_TIMESTAMP.fullmatch(one[field]), (field, one)
    conn = await asyncpg.connect(settings.database_url)
    try:
        events = [decode(row) for row in await of_task(conn, uuid.UUID(task["id"]))]
    finally:
        await conn.close()
    moments = [event.timestamp for event in events]
    assert moments == sorted(moments)
    assert all(
        moment.tzinfo is not None and moment.utcoffset() == timedelta(0) for moment in moments
    )
    assert [one["updated_at"] for one in shown] == [
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for moment in moments[:-1]
    ]
    assert datetime.fromisoformat(shown[-1]["completed_at"]) == moments[-2]


async def test_the_command_service_on_its_own_gates_bodies_inside_the_request_id_and_serves_docs(
    settings: Settings,
) -> None:
    app = create_command_app(settings.model_copy(update={"run_relay": False}))
    big = b" " * (settings.max_body_bytes + 1)

    async with serving(app) as http:
        too_large = await http.post("/api/v1/tasks", content=big, headers=JSON)
        unsupported = await http.post(
            "/api/v1/tasks", content=b"{}", headers={"X-Request-ID": "req-415"}
        )
        created = await http.post(
            "/api/v1/tasks", json={"title": "split"}, headers={"X-Request-ID": "req-201"}
        )
        # The whole-API documents the gateway serves from here answer HEAD like every GET.
        documents = [
            (await http.get(path), await http.head(path))
            for path in ("/whole/openapi.json", "/whole/docs", "/whole/redoc", "/asyncapi.yaml")
        ]

    assert too_large.status_code == 413
    for get, head in documents:
        assert get.status_code == head.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    assert valid_token(too_large.headers.get("x-request-id"))
    assert unsupported.status_code == 415
    assert unsupported.headers["x-request-id"] == "req-415"
    assert created.status_code == 201
    assert created.headers["x-request-id"] == "req-201"
    [row] = await store_events(settings)
    assert state(row)["correlation_id"] == "req-201"
