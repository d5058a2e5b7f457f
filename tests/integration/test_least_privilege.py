"""The split processes work as least-privilege PostgreSQL roles, and each role can do only its
part: the command side appends to the store, the projector writes the read table, the query
side reads."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from cli import migrate
from shared.config import Settings
from shared.database import drop_database
from shared.roles import Roles, create_roles
from tests.helpers import JSON, Process, free_port


def as_role(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


@pytest.fixture
async def roles(settings: Settings) -> AsyncIterator[tuple[Roles, dict[str, str]]]:
    suffix = uuid.uuid4().hex[:8]
    names = Roles(f"t_command_{suffix}", f"t_projector_{suffix}", f"t_query_{suffix}")
    passwords = {part: uuid.uuid4().hex for part in ("command", "projector", "query")}
    await migrate(settings)
    try:
        await create_roles(settings, passwords, names)
        yield names, passwords
    finally:
        # The grants depend on the database: it goes first, then the roles.
        await drop_database(settings.database_url)
        conn = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/postgres")
        try:
            for name in (names.command, names.projector, names.query):
                await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await conn.close()


def role_settings(settings: Settings, role: str, password: str, **ports: int) -> Settings:
    return settings.model_copy(
        update={
            "database_url": as_role(settings.database_url, role, password),
            "migrate_on_start": False,
            **ports,
        }
    )


@contextlib.contextmanager
def split_stack(
    settings: Settings, roles: Roles, passwords: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Process, Process]]:
    ports = {"command_port": free_port(), "query_port": free_port(), "projector_port": free_port()}
    processes = [
        Process(
            ["-m", module],
            role_settings(settings, getattr(roles, part), passwords[part], **ports),
            ports[f"{part}_port"],
            tmp_path / f"{part}.log",
        )
        for part, module in (
            ("command", "command_service"),
            ("projector", "projector"),
            ("query", "query_service"),
        )
    ]
    try:
        for process in processes:
            process.start()
        yield processes[0], processes[2]
    finally:
        for process in processes:
            process.stop()


async def test_the_split_processes_work_as_their_least_privilege_roles(
    settings: Settings,
    roles: tuple[Roles, dict[str, str]],
    tmp_path: Path,
) -> None:
    names, passwords = roles
    with split_stack(settings, names, passwords, tmp_path) as (command, query):
        async with httpx.AsyncClient(timeout=30) as http:
            created = await http.post(
                f"{command.url}/api/v1/tasks", headers=JSON, json={"title": "as a role"}
            )
            task_id = created.json()["id"]
            patched = await http.patch(
                f"{command.url}/api/v1/tasks/{task_id}", headers=JSON, json={"priority": 5}
            )
            wait = {"X-Min-Position": patched.headers["x-event-position"]}
            read = await http.get(f"{query.url}/api/v1/tasks/{task_id}", headers=wait)
            listed = await http.get(f"{query.url}/api/v1/tasks", headers=wait)
            history = await http.get(f"{query.url}/api/v1/tasks/{task_id}/history")
        logs = "".join(
            (tmp_path / f"{part}.log").read_text() for part in ("command", "projector", "query")
        )

    assert created.status_code == 201
    assert patched.status_code == 200
    assert read.status_code == 200
    assert read.json()["priority"] == 5
    assert listed.json()["total"] == 1
    assert [event["type"] for event in history.json()["events"]] == ["TaskCreated", "TaskUpdated"]
    assert "permission denied" not in logs


async def _refused(dsn: str, statement: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError:
        return True
    finally:
        await conn.close()
    return False


EVENT_ROW = (
    "INSERT INTO tasks_events (originator_id, originator_version, topic, state)"
    " VALUES (gen_random_uuid(), 1, 'x', '\\x00')"
)
TASK_ROW = "UPDATE tasks SET title = 'forged'"


@pytest.mark.parametrize(
    ("part", "statement"),
    [
        ("command", "UPDATE tasks_events SET topic = 'forged'"),
        ("command", "DELETE FROM tasks_events"),
        ("command", "TRUNCATE tasks_events"),
        ("command", TASK_ROW),
        ("command", "CREATE TABLE mine (id int)"),
        ("projector", EVENT_ROW),
        ("projector", "DELETE FROM tasks_events"),
        ("projector", "UPDATE relay_position SET position = 0"),
        ("projector", "CREATE TABLE mine (id int)"),
        ("query", EVENT_ROW),
        ("query", TASK_ROW),
        ("query", "DELETE FROM tasks"),
        ("query", "UPDATE projection_state SET position = 0"),
        ("query", "CREATE TABLE mine (id int)"),
    ],
)
async def test_each_role_is_refused_what_is_not_its_part(
    settings: Settings,
    roles: tuple[Roles, dict[str, str]],
    part: str,
    statement: str,
) -> None:
    names, passwords = roles
    # The store holds one event, so a refused UPDATE or DELETE is refused, not a no-op.
    owner = await asyncpg.connect(settings.database_url)
    try:
        await owner.execute(EVENT_ROW)
    finally:
        await owner.close()
    dsn = as_role(settings.database_url, getattr(names, part), passwords[part])

    assert await _refused(dsn, statement)


async def test_each_role_can_do_its_own_part_directly(
    settings: Settings, roles: tuple[Roles, dict[str, str]]
) -> None:
    names, passwords = roles
    dsn: Callable[[str], str] = lambda part: as_role(  # noqa: E731
        settings.database_url, getattr(names, part), passwords[part]
    )

    command = await asyncpg.connect(dsn("command"))
    try:
        async with command.transaction():
            await command.execute("LOCK TABLE tasks_events IN EXCLUSIVE MODE")
            await command.execute(EVENT_ROW)
        appended = await command.fetchval("SELECT count(*) FROM tasks_events")
    finally:
        await command.close()
    query = await asyncpg.connect(dsn("query"))
    try:
        read = await query.fetchval("SELECT count(*) FROM tasks_events")
    finally:
        await query.close()

    assert appended == read == 1
