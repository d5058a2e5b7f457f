"""Read-your-writes by default: a read by id reflects every acknowledged write with no header or
cookie, even while the projector stands still; every write sets the session's position cookie,
which list reads wait for."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.datastructures import State

from command_service.application import migrate_store
from composition import create_command_app, create_query_app, projector_resource
from projector.projection import migrate_read_model, row_of, upsert_sql
from query_service.consistency import READ_ROW_AND_LATER_EVENTS
from shared.config import Settings
from tests.helpers import JSON, eventually, read_db

COOKIE_ATTRIBUTES = "; Max-Age=300; Path=/api/v1; HttpOnly; SameSite=Lax"


class ByMethod(httpx.AsyncBaseTransport):
    """Reads to one app, writes to the other: the gateway's routing, in process, so that one
    client (and its cookie jar) talks to both services."""

    def __init__(self, reads: FastAPI, writes: FastAPI) -> None:
        self.reads = httpx.ASGITransport(app=reads)
        self.writes = httpx.ASGITransport(app=writes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.reads if request.method in ("GET", "HEAD") else self.writes
        return await target.handle_async_request(request)


@contextlib.asynccontextmanager
async def split_services(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Command service (with relay) and query service behind one cookie-keeping client; the
    projector runs only where a test starts it."""
    await migrate_read_model(settings)
    command, query = create_command_app(settings), create_query_app(settings)
    async with (
        command.router.lifespan_context(command),
        query.router.lifespan_context(query),
        httpx.AsyncClient(transport=ByMethod(query, command), base_url="http://test") as http,
    ):
        yield http


async def bare(client: httpx.AsyncClient, method: str, path: str, **options: Any) -> httpx.Response:
    """A request with no cookie but those in `options`' headers (the jar is emptied first)."""
    client.cookies.clear()
    return await client.request(method, path, **options)


async def projected(settings: Settings, position: int) -> bool:
    async with read_db(settings) as conn:
        reached = await conn.fetchval(
            "SELECT position FROM projection_state WHERE name = 'projector'"
        )
    return int(reached) >= position


@pytest.mark.parametrize("databases", ["one database", "a read database of its own"])
async def test_a_read_by_id_shows_writes_the_projector_has_not_applied_yet(
    make_settings: Callable[..., Settings], service_urls: tuple[str, str], databases: str
) -> None:
    read_database = None
    if databases != "one database":
        url = urlsplit(service_urls[0])
        read_database = urlunsplit(url._replace(path=f"/tasks_test_read_{uuid.uuid4().hex[:10]}"))
    settings = make_settings(read_database_url=read_database)
    async with split_services(settings) as http:
        created = await http.post("/api/v1/tasks", json={"title": "a", "tags": ["x"]}, headers=JSON)
        path = f"/api/v1/tasks/{created.json()['id']}"
        position = int(created.headers["x-event-position"])
        async with projector_resource(settings).open(State()):
            await eventually(lambda: projected(settings, position))
        # The projector is stopped: the read table holds version 1 and nothing more.
        unseen = await http.post("/api/v1/tasks", json={"title": "unseen"}, headers=JSON)
        first = await http.patch(path, json={"priority": 5}, headers=JSON)
        second = await http.patch(path, json={"completed": True, "tags": []}, headers=JSON)

        read_unseen = await bare(http, "GET", f"/api/v1/tasks/{unseen.json()['id']}")
        read_patched = await bare(http, "GET", path)
        not_modified = await bare(http, "GET", path, headers={"If-None-Match": '"3"'})
        head = await bare(http, "HEAD", path)
        deleted = await bare(http, "DELETE", path)
        read_deleted = await bare(http, "GET", path)
        history = await bare(http, "GET", f"{path}/history")

    assert read_unseen.status_code == 200
    assert read_unseen.json() == unseen.json()
    assert read_unseen.headers["etag"] == '"1"'
    assert read_patched.status_code == 200
    assert read_patched.json() == second.json()
    assert read_patched.json()["priority"] == 5 == first.json()["priority"]
    assert read_patched.headers["etag"] == '"3"'
    assert int(read_patched.headers["x-projection-position"]) == position
    assert not_modified.status_code == 304
    assert head.status_code == 200
    assert head.headers["etag"] == '"3"'
    assert deleted.status_code == 204
    assert read_deleted.status_code == 404
    assert read_deleted.json()["error"] == "Not found"
    assert created.json()["id"] in read_deleted.json()["details"]  # names what it did not find
    assert len(history.json()["events"]) == 4


async def test_every_write_sets_the_session_position_cookie_and_a_no_op_never_lowers_it(
    client: httpx.AsyncClient,
) -> None:
    key = {**JSON, "Idempotency-Key": "k1"}
    first = await bare(client, "POST", "/api/v1/tasks", json={"title": "a"}, headers=key)
    path = f"/api/v1/tasks/{first.json()['id']}"
    second = await bare(client, "POST", "/api/v1/tasks", json={"title": "b"}, headers=JSON)
    later = second.headers["x-event-position"]
    # Each write below names the session's cookie explicitly, as a browser would send it.
    held = {"Cookie": f"tasks_position={later}"}
    no_op = await bare(client, "PATCH", path, json={"title": "a"}, headers={**JSON, **held})
    replay = await bare(
        client, "POST", "/api/v1/tasks", json={"title": "a"}, headers={**key, **held}
    )
    bare_no_op = await bare(client, "PATCH", path, json={}, headers=JSON)
    bogus = {"Cookie": "tasks_position=999999999"}
    patched = await bare(client, "PATCH", path, json={"priority": 1}, headers={**JSON, **bogus})
    deleted = await bare(client, "DELETE", path, headers=held)

    for write in (first, second, patched, deleted):
        position = write.headers["x-event-position"]
        assert write.headers["set-cookie"] == f"tasks_position={position}{COOKIE_ATTRIBUTES}"
    assert int(no_op.headers["x-event-position"]) < int(later)
    assert no_op.headers["set-cookie"] == f"tasks_position={later}{COOKIE_ATTRIBUTES}"
    assert replay.status_code == 201
    assert replay.headers["x-event-position"] == first.headers["x-event-position"]
    assert replay.headers["set-cookie"] == f"tasks_position={later}{COOKIE_ATTRIBUTES}"
    assert bare_no_op.headers["set-cookie"] == (
        f"tasks_position={first.headers['x-event-position']}{COOKIE_ATTRIBUTES}"
    )
    assert client.cookies["tasks_position"] == deleted.headers["x-event-position"]


async def test_a_list_waits_for_the_session_cookie_and_answers_503_past_the_bound_while_a_read_by_id_answers(  # noqa: E501
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(min_position_wait_seconds=1.0)
    async with split_services(settings) as http:
        written = await http.post("/api/v1/tasks", json={"title": "w", "tags": ["t"]}, headers=JSON)
        started = time.monotonic()
        waited = await http.get("/api/v1/tasks", params={"tags": "t"})
        waited_for = time.monotonic() - started
        by_id = await http.get(f"/api/v1/tasks/{written.json()['id']}")
        session = http.cookies["tasks_position"]
        without_cookie = await bare(http, "GET", "/api/v1/tasks", params={"tags": "t"})
        http.cookies.set("tasks_position", session)
        async with projector_resource(settings).open(State()):
            listed = await http.get("/api/v1/tasks", params={"tags": "t"})

    assert session == written.headers["x-event-position"]
    assert waited.status_code == 503
    assert waited.headers["retry-after"] == "1"
    assert waited.json()["error"] == "Service unavailable"
    assert waited_for >= 0.9
    assert by_id.status_code == 200
    assert by_id.json() == written.json()
    # Without the session's cookie a list answers at once, from the read model as it is.
    assert without_cookie.status_code == 200
    assert without_cookie.json()["items"] == []
    assert listed.status_code == 200
    assert listed.json()["items"] == [written.json()]


async def test_a_malformed_position_cookie_is_422_on_lists_and_ignored_by_reads_by_id(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "c"}, headers=JSON)
    path = f"/api/v1/tasks/{created.json()['id']}"
    answers = {}
    for value in ("abc", "-1", "1.5", "", "99999999999999999999"):
        cookie = {"Cookie": f"tasks_position={value}"}
        answers[value] = (
            await bare(client, "GET", "/api/v1/tasks", headers=cookie),
            await bare(client, "GET", path, headers=cookie),
            await bare(client, "GET", f"{path}/history", headers=cookie),
        )

    for value, (listed, by_id, history) in answers.items():
        assert listed.status_code == 422, value
        assert list(listed.json()["details"]) == ["tasks_position"]
        assert "x-projection-position" in listed.headers
        assert by_id.status_code == 200, value
        assert history.status_code == 200, value


def scans_of(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", []):
        found += scans_of(child, relation)
    return found


@pytest.mark.parametrize("plan_mode", ["force_custom_plan", "force_generic_plan"])
async def test_a_current_read_by_id_reads_no_event_of_its_task_however_many_it_has(
    settings: Settings, plan_mode: str
) -> None:
    await migrate_store(settings)
    await migrate_read_model(settings)
    busy = uuid.uuid4()
    task = {
        "id": str(busy),
        "title": "busy",
        "description": None,
        "priority": 3,
        "due_date": None,
        "tags": [],
        "completed": False,
        "completed_at": None,
        "deleted": False,
        "deleted_at": None,
        "created_at": "2026-11-28T10:00:00.000000Z",
        "updated_at": "2026-11-28T10:00:00.000000Z",
        "version": 30,
    }
    async with read_db(settings) as conn:
        # A store of 20,000 events, 30 of them the busy task's, all applied to its row. Only
        # the plan is looked at: the events' bodies are never decoded.
        await conn.execute(
            "INSERT INTO tasks_events (originator_id, originator_version, topic, state) "
            "SELECT CASE WHEN n <= 30 THEN $1 ELSE gen_random_uuid() END, "
            "CASE WHEN n <= 30 THEN n ELSE 1 END, 'TaskUpdated', '{}'::bytea "
            "FROM generate_series(1, 20000) n",
            busy,
        )
        await conn.execute(upsert_sql(), *row_of(task, 30))
        await conn.execute("ANALYZE")
        await conn.execute(f"SET plan_cache_mode = {plan_mode}")
        await conn.execute(f"PREPARE by_id (uuid) AS {READ_ROW_AND_LATER_EVENTS}")
        # EXPLAIN takes no parameters; the id is one this test made.
        explain = f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE by_id('{busy}')"
        [row] = await conn.fetch(explain)
    [plan] = orjson.loads(row[0])
    [events] = scans_of(plan["Plan"], "tasks_events")

    assert events["Actual Rows"] == 0
    # An index scan's condition, or a bitmap scan's (checked again on the heap).
    condition = events.get("Index Cond") or events.get("Recheck Cond") or ""
    assert "originator_version" in condition
