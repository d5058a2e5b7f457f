"""The command line as an operator meets it, each command run as a real process: a failure is
one line on stderr naming what to check (the traceback only with --debug); the operations end
with a one-line summary; progress counts events and ends at 100%; verify names the fields."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid

import aio_pika
import asyncpg
import httpx
import pytest

from shared.config import Settings
from tests.helpers import ROOT, free_port, read_db, settings_env
from tests.integration.test_operations import create_tasks, wait_projected

OPERATIONS = [
    ["migrate"],
    ["rebuild"],
    ["verify"],
    ["replay", "--from-position", "1", "--all"],
]


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "cli.py", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


async def test_an_unreachable_database_is_one_line_naming_the_setting(settings: Settings) -> None:
    closed = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/tasks"
    unreachable = settings.model_copy(update={"database_url": closed})

    results = await asyncio.gather(*(cli(unreachable, *args) for args in [*OPERATIONS, ["serve"]]))

    for args, result in zip([*OPERATIONS, ["serve"]], results, strict=True):
        line = assert_one_line_failure(result, f"cli.py {args[0]}:", "PostgreSQL", "DATABASE_URL")
        assert "s3cret" not in line


@pytest.mark.parametrize("service", ["command_service", "query_service", "projector"])
async def test_a_service_that_cannot_start_says_why_in_one_line(
    settings: Settings, service: str
) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/tasks"
    unreachable = settings.model_copy(update={"database_url": closed})

    def start(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", service],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    no_database, bad_setting = await asyncio.gather(
        asyncio.to_thread(start, settings_env(unreachable)),
        asyncio.to_thread(start, {**settings_env(settings), "TASKS_PROJECTOR_PORT": "eighty"}),
    )

    assert_one_line_failure(no_database, f"python -m {service}:", "TASKS_DATABASE_URL")
    assert_one_line_failure(bad_setting, f"python -m {service}:", "TASKS_PROJECTOR_PORT=eighty")


async def test_an_unreachable_broker_is_one_line_naming_the_setting(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """The store exists (the app has migrated it); only the broker is out of reach."""
    # A closed port on loopback, not a stopped broker: others use the shared one meanwhile.
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    unreachable = settings.model_copy(update={"amqp_url": closed})

    migrated, replayed = await asyncio.gather(
        cli(unreachable, "migrate"),
        cli(unreachable, "replay", "--from-position", "1", "--queue", "any"),
    )

    assert_one_line_failure(migrated, "cli.py migrate:", "RabbitMQ", "TASKS_AMQP_URL")
    assert_one_line_failure(replayed, "cli.py replay:", "RabbitMQ", "TASKS_AMQP_URL")


async def test_a_bad_setting_is_one_line_and_debug_adds_the_traceback(settings: Settings) -> None:
    bad = settings.model_copy(update={"rebuild_workers": 0})

    plain, debug = await asyncio.gather(cli(bad, "rebuild"), cli(bad, "--debug", "rebuild"))

    line = assert_one_line_failure(plain, "TASKS_REBUILD_WORKERS=0")
    assert "greater than or equal to 1" in line
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line


async def test_every_option_has_help_text() -> None:
    for command in ["serve", "relay", "migrate", "replay", "openapi", "rebuild", "verify"]:
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "cli.py", command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        options = shown.stdout.split("options:", 1)[1]
        # Every option line (`  --name ...`) is followed by text on its line or the next one.
        entries = re.split(r"\n  (?=-)", "\n" + options.strip("\n"))
        for entry in filter(None, (entry.strip() for entry in entries)):
            help_text = entry.split("  ", 1)[1:]
            assert help_text, f"{command}: no help for {entry!r}"
            assert help_text[0].strip(), f"{command}: no help for {entry!r}"


async def test_operations_end_with_a_one_line_summary_and_progress_reaches_100_percent(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await create_tasks(client, 3)
    # Positions with a gap: the store's sequence skips ten, as an aborted append would leave.
    async with read_db(
        settings.model_copy(update={"read_database_url": settings.database_url})
    ) as store:
        await store.execute(
            "SELECT setval(pg_get_serial_sequence('tasks_events', 'notification_id'), "
            "(SELECT max(notification_id) FROM tasks_events) + 10)"
        )
    await create_tasks(client, 2)
    await wait_projected(client, settings)
    queue = f"test.replay.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, auto_delete=False)
        try:
            migrated = await cli(settings, "migrate")
            rebuilt = await cli(settings, "rebuild")
            replayed = await cli(settings, "replay", "--from-position", "1", "--queue", queue)
            verified = await cli(settings, "verify")
        finally:
            await channel.queue_delete(queue)

    for result in (migrated, rebuilt, replayed, verified):
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 1, result.stdout
        assert re.search(r" in \d+\.\d s$", result.stdout.strip()), result.stdout
    assert "event store (5 events)" in migrated.stdout
    assert rebuilt.stdout.startswith("rebuilt the read table: 5 tasks from 5 events")
    assert "5/5 events (100%)" in rebuilt.stderr
    assert replayed.stdout.startswith(f"replayed: republished 5 events to queue {queue}")
    assert verified.stdout.startswith("verified 5 tasks (5 events) up to position 15: ")
    assert " 0 difference(s), 0 dead-lettered" in verified.stdout
    assert "5/5 events (100%)" in verified.stderr


async def test_verify_names_the_task_and_each_differing_field_with_both_values(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    [damaged, intact] = await create_tasks(client, 2)
    await wait_projected(client, settings)
    async with read_db(settings) as read:
        doc = await read.fetchval("SELECT doc FROM tasks WHERE id = $1", uuid.UUID(damaged["id"]))
        broken = doc.replace('"priority":1', '"priority":4').replace('"task 0"', '"renamed"')
        assert broken != doc
        await read.execute(
            "UPDATE tasks SET doc = $2 WHERE id = $1", uuid.UUID(damaged["id"]), broken
        )

    verified = await cli(settings, "verify")

    assert verified.returncode == 1
    report, summary = verified.stdout.splitlines()
    assert report == (
        f"task {damaged['id']} differs: priority: read table 4, store 1; "
        'title: read table "renamed", store "task 0"'
    )
    assert intact["id"] not in verified.stdout
    assert " 1 difference(s)" in summary


async def test_verify_on_a_database_never_migrated_says_to_migrate(settings: Settings) -> None:
    admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/postgres")
    name = f"never_migrated_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        empty = settings.model_copy(
            update={"database_url": settings.database_url.rsplit("/", 1)[0] + f"/{name}"}
        )
        line = assert_one_line_failure(await cli(empty, "verify"), "migrate")
        assert "PostgreSQL" in line
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("args", [["verify", "--bogus"], ["replay", "--all"]])
async def test_a_usage_error_is_argparse_s_own_short_answer(args: list[str]) -> None:
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "cli.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 2
    assert "Traceback" not in shown.stderr
    assert shown.stderr.splitlines()[-1].startswith("cli.py")
