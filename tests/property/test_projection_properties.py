"""Duplicated, lost and reordered deliveries of real CloudEvents, applied as the projector does
(the events read from the store at the positions the messages name): whatever the interleaving,
rows never go backwards and the table ends exactly as the replayed store."""

from __future__ import annotations

import asyncio
import io
import itertools
from uuid import UUID

import asyncpg
import orjson
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from command_service.application import TaskApplication, migrate_store
from projector.projection import (
    apply_stored,
    migrate_read_model,
    parse_reference,
    read_position,
    refusal,
)
from projector.verify import verify
from shared import store
from shared.config import Settings
from shared.domain import Task, task_to_dict
from shared.messaging import to_cloudevent
from shared.store import at_positions, page
from tests.helpers import soft_delete

Message = tuple[int, str, int, bytes]
"""(position, task id, version, CloudEvent body) of one stored event."""


def write_history(settings: Settings) -> None:
    """A few tasks with updates, a completion and a deletion, appended to the real store."""
    app = TaskApplication(settings)
    try:
        ids = []
        for number in range(5):
            fields = {
                "title": f"task {number}",
                "description": None,
                "priority": 3,
                "due_date": None,
                "tags": ["a"],
            }
            ids.append(UUID(app.create_task(fields, f"create-{number}").task["id"]))
        for round_ in range(3):
            for number, task_id in enumerate(ids):
                patch = {"priority": 1 + (number + round_) % 5, "tags": ["a", f"r{round_}"]}
                app.update_task(task_id, patch, None, f"patch-{round_}")
        app.update_task(ids[0], {"completed": True}, None, None)
        app.update_task(ids[1], {"description": "later"}, None, None)
        soft_delete(app, ids[2])
    finally:
        app.close()


async def stored_messages(settings: Settings) -> tuple[list[Message], dict[tuple[str, int], str]]:
    """Every stored event as the relay would publish it, and each task's doc at each version."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await store.page(conn, 0, store.LAST_POSITION)
    finally:
        await conn.close()
    tasks: dict[UUID, Task] = {}
    messages: list[Message] = []
    docs: dict[tuple[str, int], str] = {}
    for row in rows:
        event = store.decode(row)
        task = event.mutate(tasks.get(event.originator_id))
        assert isinstance(task, Task)
        tasks[task.id] = task
        snapshot = task_to_dict(task)
        envelope = to_cloudevent(event, row["position"], snapshot)
        messages.append((row["position"], str(task.id), task.version, orjson.dumps(envelope)))
        docs[(str(task.id), task.version)] = orjson.dumps(snapshot).decode()
    return messages, docs


async def reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE tasks; UPDATE projection_state SET position = 0, dead_letters = 0")


async def table(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    rows = await conn.fetch("SELECT id, version, doc FROM tasks")
    return {str(row["id"]): (row["version"], row["doc"]) for row in rows}


def assert_rows_are_replayed_states(
    rows: dict[str, tuple[int, str]], docs: dict[tuple[str, int], str]
) -> None:
    for task_id, (version, doc) in rows.items():
        assert orjson.loads(doc) == orjson.loads(docs[(task_id, version)])


async def assert_verify_is_clean(settings: Settings) -> None:
    report = io.StringIO()
    assert await verify(settings, report) == [], report.getvalue()


async def consume(read: asyncpg.Connection, store: asyncpg.Connection, bodies: list[bytes]) -> int:
    """The consumer's steps for one batch: which stored events the messages name, read from
    the store; a gap filled from the store in pages of 3; returns the projection position."""
    references = [parse_reference(body) for body in bodies]
    stored = await at_positions(store, [reference.position for reference in references])
    assert all(
        refusal(reference, stored.get(reference.position)) is None for reference in references
    )
    position = await read_position(read)
    fresh = sorted({r.position for r in references if r.position > position})
    if fresh and fresh[-1] - position != len(fresh):
        while rows := await page(store, position, 3, fresh[-1]):
            position = await apply_stored(read, store, rows)
        return position
    return await apply_stored(read, store, [stored[p] for p in fresh])


def batches_of(deliveries: list[Message], cuts: list[int]) -> list[list[Message]]:
    bounds = sorted({0, len(deliveries), *(cut % (len(deliveries) + 1) for cut in cuts)})
    return [deliveries[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def test_any_duplicated_and_reordered_delivery_ends_as_the_replayed_store(
    settings: Settings,
) -> None:
    asyncio.run(migrate_store(settings))
    asyncio.run(migrate_read_model(settings))
    write_history(settings)
    messages, docs = asyncio.run(stored_messages(settings))

    @examples(max_examples=30, deadline=None)
    @given(
        order=st.permutations(messages),
        extra=st.lists(st.sampled_from(messages), max_size=len(messages)),
        data=st.data(),
    )
    def deliveries(order: list[Message], extra: list[Message], data: st.DataObject) -> None:
        # Every event at least once, some again, in any order, cut into batches anywhere.
        delivered = list(order)
        for message in extra:
            delivered.insert(data.draw(st.integers(0, len(delivered))), message)
        cuts = data.draw(st.lists(st.integers(0, len(delivered)), max_size=8))
        asyncio.run(deliver_everything(batches_of(delivered, cuts)))

    async def deliver_everything(batches: list[list[Message]]) -> None:
        read = await asyncpg.connect(settings.read_dsn)
        store = await asyncpg.connect(settings.database_url)
        try:
            await reset(read)
            highest: dict[str, int] = {}
            for batch in batches:
                before = await table(read)
                await consume(read, store, [body for *_, body in batch])
                for _, task_id, version, _ in batch:
                    highest[task_id] = max(highest.get(task_id, 0), version)
                rows = await table(read)
                # Never backwards, and at least the newest version delivered so far.
                for task_id, (version, _) in before.items():
                    assert rows[task_id][0] >= version
                for task_id, version in highest.items():
                    assert rows[task_id][0] >= version
                assert_rows_are_replayed_states(rows, docs)
        finally:
            await read.close()
            await store.close()
        await assert_verify_is_clean(settings)

    deliveries()


def test_deliveries_with_losses_are_repaired_from_the_store_up_to_the_position(
    settings: Settings,
) -> None:
    asyncio.run(migrate_store(settings))
    asyncio.run(migrate_read_model(settings))
    write_history(settings)
    messages, docs = asyncio.run(stored_messages(settings))
    last = messages[-1]

    @examples(max_examples=30, deadline=None)
    @given(
        delivered=st.lists(st.sampled_from(messages), max_size=2 * len(messages)),
        cuts=st.lists(st.integers(0, 2 * len(messages)), max_size=8),
    )
    def deliveries(delivered: list[Message], cuts: list[int]) -> None:
        # Any subset, duplicated and reordered, as after a failover; the last event arrives
        # at some point, as the relay guarantees.
        asyncio.run(deliver_as_the_consumer_does(batches_of([*delivered, last], cuts)))

    async def deliver_as_the_consumer_does(batches: list[list[Message]]) -> None:
        read = await asyncpg.connect(settings.read_dsn)
        store = await asyncpg.connect(settings.database_url)
        try:
            await reset(read)
            position = 0
            for batch in batches:
                position = await consume(read, store, [body for *_, body in batch])
                rows = await table(read)
                assert_rows_are_replayed_states(rows, docs)
                # Everything up to the position is in the table.
                for message_position, task_id, version, _ in messages:
                    if message_position <= position:
                        assert rows[task_id][0] >= version
        finally:
            await read.close()
            await store.close()
        await assert_verify_is_clean(settings)
        assert position == last[0]

    deliveries()
