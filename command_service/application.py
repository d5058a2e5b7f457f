"""The event-sourced application: load a task, apply one command, save; retries and idempotency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Transcoder

from command_service.batcher import GroupCommit
from command_service.commands import check_if_match, check_not_past, is_past, patch_changes
from shared import store
from shared.config import Settings
from shared.database import ddl_lock, ensure_database, retried
from shared.domain import ANONYMOUS, CREATED_FIELDS, Task, TaskDict, task_to_dict
from shared.errors import NotFound, ValidationFailed
from shared.fold import fold

IDEMPOTENCY_NAMESPACE = UUID("5b0c3e52-8d1a-4f0e-9a57-0d7c4f6a2b19")
MAX_CONFLICT_RETRIES = 100


@dataclass(frozen=True)
class WriteResult:
    task: TaskDict
    version: int
    position: int
    appended: bool = True
    """False for a no-op and an idempotent replay: `position` is then an earlier event's."""


def idempotent_id(key: str, scope: str = "") -> UUID:
    """The task id a key stands for: the store's uniqueness makes retries safe everywhere."""
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{scope}\n{key}")


class TaskApplication(Application[UUID]):
    """Tasks on the library's PostgreSQL persistence (its table: `shared/store.py`)."""

    name = "Tasks"
    reader: asyncpg.Pool | None = None
    """Connections to the store for the event loop's reads (`update_task_async`)."""

    def __init__(self, settings: Settings | None = None, env: dict[str, str] | None = None) -> None:
        base = settings.eventsourcing_env() if settings is not None else {}
        super().__init__(env={**base, **(env or {})})
        settings = settings or Settings()
        self.committer = GroupCommit(
            self.save,
            settings.group_commit_max,
            recorded=self.already_recorded,
            wait_seconds=settings.commit_wait_seconds,
            stuck_seconds=settings.commit_stuck_seconds,
        )

    @property
    def appended(self) -> int:
        """Events this process has appended (a metric)."""
        return self.committer.appended

    def close(self) -> None:
        self.committer.close()
        super().close()

    def construct_transcoder(self) -> Transcoder:
        return store.create_transcoder()

    def create_task(
        self,
        fields: dict[str, Any],
        correlation_id: str | None,
        idempotency_key: str | None = None,
        scope: str = "",
        actor: str = ANONYMOUS,
    ) -> WriteResult:
        task_id = idempotent_id(idempotency_key, scope) if idempotency_key else uuid.uuid4()
        if idempotency_key is not None and is_past(fields["due_date"]):
            # A retry after midnight of a request that was valid when first made keeps its answer.
            replayed = self._replay_creation(task_id, fields)
            if replayed is not None:
                return replayed
        task = _new_task(task_id, fields, idempotency_key, correlation_id, actor)
        try:
            position = self.committer.commit(task)
        except IntegrityError:
            if idempotency_key is None:
                raise
            replayed = self._replay_creation(task_id, fields)
            if replayed is None:
                raise
            return replayed
        return WriteResult(task_to_dict(task), task.version, position)

    async def create_task_async(
        self,
        fields: dict[str, Any],
        correlation_id: str | None,
        idempotency_key: str | None = None,
        scope: str = "",
        actor: str = ANONYMOUS,
    ) -> WriteResult:
        """A create from the event loop: without a key nothing needs the store before the
        append, so the command waits for its group commit without taking a thread."""
        if idempotency_key is not None:
            return await asyncio.to_thread(
                self.create_task, fields, correlation_id, idempotency_key, scope, actor
            )
        task = _new_task(uuid.uuid4(), fields, None, correlation_id, actor)
        position = await self.committer.commit_async(task)
        return WriteResult(task_to_dict(task), task.version, position)

    def _replay_creation(self, task_id: UUID, fields: dict[str, Any]) -> WriteResult | None:
        """The original answer to a key already used with an equal body; None if never used."""
        created = next(iter(self.events.get(task_id, lte=1)), None)
        if created is None:
            return None
        assert isinstance(created, Task.Created)
        if any(getattr(created, name) != fields[name] for name in CREATED_FIELDS):
            raise ValidationFailed(
                {"Idempotency-Key": "Already used with a different request body"}
            )
        original = fold([created])
        assert original is not None
        return WriteResult(task_to_dict(original), 1, self.position_of(task_id, 1), False)

    def update_task(
        self,
        task_id: UUID,
        patch: dict[str, Any],
        if_match: list[int] | None,
        correlation_id: str | None,
        actor: str = ANONYMOUS,
    ) -> WriteResult:
        """Apply a PATCH; without If-Match a version conflict is retried so no write is lost."""
        for _ in range(MAX_CONFLICT_RETRIES):
            task = self._get_live(task_id)
            changes = patch_changes(task, patch, if_match)
            if not changes:
                position = self.position_of(task_id, task.version)
                return WriteResult(task_to_dict(task), task.version, position, False)
            task.update(changes, correlation_id, actor)
            try:
                position = self.committer.commit(task)
            except IntegrityError:
                continue
            return WriteResult(task_to_dict(task), task.version, position)
        raise RuntimeError("too many concurrent writes to one task")

    async def update_task_async(
        self,
        task_id: UUID,
        patch: dict[str, Any],
        if_match: list[int] | None,
        correlation_id: str | None,
        actor: str = ANONYMOUS,
    ) -> WriteResult:
        """`update_task` from the event loop (`_change_on_loop`)."""

        def change(task: Task) -> bool:
            changes = patch_changes(task, patch, if_match)
            if changes:
                task.update(changes, correlation_id, actor)
            return bool(changes)

        return await self._change_on_loop(task_id, change)

    async def delete_task_async(
        self,
        task_id: UUID,
        if_match: list[int] | None,
        correlation_id: str | None,
        actor: str = ANONYMOUS,
    ) -> WriteResult:
        """A soft delete from the event loop (`_change_on_loop`)."""

        def change(task: Task) -> bool:
            check_if_match(task.version, if_match)
            task.soft_delete(correlation_id, actor)
            return True

        return await self._change_on_loop(task_id, change)

    async def _change_on_loop(self, task_id: UUID, change: Callable[[Task], bool]) -> WriteResult:
        """Read the task with asyncpg (`reader`), let `change` record its events (False: none, a
        no-op answered with the task as it stands) and wait for the group commit without taking
        a thread; a version conflict reads and changes again, so no write is lost."""
        for _ in range(MAX_CONFLICT_RETRIES):
            task, position = await self._read_live(task_id)
            if not change(task):
                return WriteResult(task_to_dict(task), task.version, position, False)
            try:
                position = await self.committer.commit_async(task)
            except IntegrityError:
                continue
            return WriteResult(task_to_dict(task), task.version, position)
        raise RuntimeError("too many concurrent writes to one task")

    def _get_live(self, task_id: UUID) -> Task:
        try:
            task: Task | None = self.repository.get(task_id)
        except AggregateNotFoundError:
            task = None
        return _alive(task_id, task)

    async def _read_live(self, task_id: UUID) -> tuple[Task, int]:
        """The task as stored now, folded from its events, and its last event's position."""
        reader = self.reader
        if reader is None:
            raise RuntimeError("no asyncpg reader: set `reader` to a pool on the store")
        rows = await retried(lambda: store.of_task(reader, task_id))
        task = _alive(task_id, fold(store.decode(row) for row in rows))
        return task, int(rows[-1]["position"])

    def already_recorded(self, events: Sequence[Any]) -> int | None:
        """The position of the last of `events` if the store holds every one exactly as
        given (same topic, same bytes: this very event, not a concurrent writer's), else None."""
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        position = None
        with datastore.get_connection() as conn, conn.cursor() as curs:
            for event in events:
                stored = self.mapper.to_stored_event(event)
                curs.execute(store.ONE_EVENT, (stored.originator_id, stored.originator_version))
                row = curs.fetchone()
                if (
                    row is None
                    or row["topic"] != stored.topic
                    or bytes(row["state"]) != stored.state
                ):
                    return None
                position = int(row["position"])
        return position

    def position_of(self, task_id: UUID, version: int) -> int:
        """The global position (notification id) of one stored event."""
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(store.ONE_EVENT, (task_id, version), prepare=True)
            row = curs.fetchone()
        assert row is not None
        return int(row["position"])


def _new_task(
    task_id: UUID,
    fields: dict[str, Any],
    idempotency_key: str | None,
    correlation_id: str | None,
    actor: str,
) -> Task:
    """A task from validated fields; a due date in the past is refused here, on create."""
    check_not_past(fields["due_date"])
    return Task.create(
        task_id,
        **fields,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        actor=actor,
    )


def _alive(task_id: UUID, task: Task | None) -> Task:
    if task is None:
        raise NotFound(f"No task {task_id}")
    if task.deleted:
        raise NotFound(f"No task {task_id}: it was deleted (its history stays readable)")
    return task


async def migrate_store(settings: Settings) -> None:
    """Create the database, the library's events table and the relay's position table."""
    await ensure_database(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with ddl_lock(conn):
            application = await asyncio.to_thread(TaskApplication, settings)
            application.close()
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS relay_position ("
                " name text PRIMARY KEY, position bigint NOT NULL)"
            )
            await conn.execute(
                "INSERT INTO relay_position VALUES ('relay', 0) ON CONFLICT DO NOTHING"
            )
    finally:
        await conn.close()
