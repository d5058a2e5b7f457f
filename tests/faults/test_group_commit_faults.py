"""Group commit always answers, on the real PostgreSQL: a database that refuses connections
while a conflict is checked, a waiter that went away, and a commit that outlives its deadline
each get an answer, and later writes are saved."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import psycopg
import pytest

from cli import migrate
from command_service.application import TaskApplication, _new_task
from composition import create_app
from shared.config import Settings
from tests.helpers import JSON, serving, store_events

pytestmark = pytest.mark.slow

FIELDS = {"title": "t", "description": None, "priority": 3, "due_date": None, "tags": []}


def refuse_connections(settings: Settings, refuse: bool) -> None:
    """The event store's database refuses (or accepts again) every new connection; with
    `refuse`, its open connections are ended too, as a database going away does."""
    url = urlsplit(settings.database_url)
    name = url.path.lstrip("/")
    admin = urlunsplit(url._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not refuse).lower()}')
        if refuse:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def answered_within(call: Callable[[], Any], seconds: float) -> tuple[bool, Any]:
    """Run `call` in a thread; (answered in time, its result or exception)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive(), outcome[0] if outcome else None)


@contextlib.contextmanager
def application(settings: Settings) -> Iterator[TaskApplication]:
    # Waiting 2 s, not 30, for a connection the database refuses.
    app = TaskApplication(settings, {"POSTGRES_CONNECT_TIMEOUT": "2"})
    try:
        yield app
    finally:
        refuse_connections(settings, False)
        app.close()


async def test_a_database_refusal_while_a_conflict_is_checked_answers_and_later_writes_go_on(
    settings: Settings,
) -> None:
    await migrate(settings)

    def scenario() -> None:
        with application(settings) as app:
            task_id = uuid.UUID(app.create_task(FIELDS, "create").task["id"])
            stale = app.repository.get(task_id)
            app.update_task(task_id, {"title": "first"}, None, None)
            stale.update({"title": "second"}, None)  # version 2 again: a conflict
            check = app.committer._recorded
            assert check is not None

            def refused_while_checking(events: Sequence[Any]) -> int | None:
                refuse_connections(settings, True)
                try:
                    return check(events)
                finally:
                    refuse_connections(settings, False)

            app.committer._recorded = refused_while_checking
            answered, outcome = answered_within(lambda: app.committer.commit(stale), 30)
            assert answered, "the conflicting command never got an answer"
            assert isinstance(outcome, Exception)
            app.committer._recorded = check

            answered, later = answered_within(
                lambda: app.update_task(task_id, {"title": "third"}, None, None), 30
            )
            assert answered, "a later write never got an answer"
            assert later.task["title"] == "third"
            assert app.committer.problem() is None

    await asyncio.to_thread(scenario)
    titles = [event["topic"] for event in await store_events(settings)]
    assert titles == ["TaskCreated", "TaskUpdated", "TaskUpdated"]


async def test_a_cancelled_waiter_is_skipped_and_the_commands_after_it_are_answered(
    settings: Settings,
) -> None:
    await migrate(settings)
    app = await asyncio.to_thread(TaskApplication, settings)
    locker = await asyncpg.connect(settings.database_url)
    try:
        held = locker.transaction()
        await held.start()
        await locker.execute("LOCK TABLE tasks_events IN EXCLUSIVE MODE")

        def task(title: str) -> Any:
            return _new_task(uuid.uuid4(), {**FIELDS, "title": title}, None, None, "test")

        first = asyncio.create_task(app.committer.commit_async(task("first")))
        await asyncio.sleep(0.5)  # the commit thread now waits for the table lock
        gone = asyncio.create_task(app.committer.commit_async(task("gone")))
        await asyncio.sleep(0.1)
        gone.cancel()  # the client went away while its command was queued
        later = asyncio.create_task(app.committer.commit_async(task("later")))
        await asyncio.sleep(0.1)
        await held.rollback()

        await asyncio.wait_for(asyncio.gather(first, later), 20)
        assert gone.cancelled()
        assert app.committer.problem() is None
    finally:
        await locker.close()
        await asyncio.to_thread(app.close)
    stored = await store_events(settings)
    titles = sorted(orjson.loads(event["state"])["title"] for event in stored)
    assert titles == ["first", "later"]


async def test_a_commit_past_its_deadline_answers_503_and_the_store_decides(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(commit_wait_seconds=1.0, commit_stuck_seconds=1.0)
    async with serving(create_app(settings)) as client:
        locker = await asyncpg.connect(settings.database_url)
        try:
            held = locker.transaction()
            await held.start()
            await locker.execute("LOCK TABLE tasks_events IN EXCLUSIVE MODE")
            headers = {**JSON, "Idempotency-Key": "deadline-1"}
            waited = await client.post("/api/v1/tasks", headers=headers, json={"title": "slow"})
            await asyncio.sleep(0.5)
            stuck = await client.get("/ready")
            await held.rollback()
        finally:
            await locker.close()

        assert waited.status_code == 503
        assert waited.headers["retry-after"] == "1"
        assert set(waited.json()) == {"error", "details"}
        assert stuck.status_code == 503
        assert "commit" in stuck.json()["details"]

        retried = await client.post("/api/v1/tasks", headers=headers, json={"title": "slow"})
        assert retried.status_code == 201, retried.text
        assert (await client.get("/ready")).status_code == 200
        later = await client.post("/api/v1/tasks", headers=JSON, json={"title": "later"})
        assert later.status_code == 201
    stored = await store_events(settings)
    assert [event["originator_id"] for event in stored].count(uuid.UUID(retried.json()["id"])) == 1
