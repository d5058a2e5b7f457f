"""The Task aggregate, its three events, and its REST form (`TASK_FIELDS`, `task_to_dict`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

TaskDict = dict[str, Any]

TASK_FIELDS = (
    "id",
    "title",
    "description",
    "priority",
    "due_date",
    "tags",
    "completed",
    "completed_at",
    "deleted",
    "deleted_at",
    "created_at",
    "updated_at",
    "version",
)
"""The REST task's fields, in the order every mapping of them uses (JSON, the read table's row)."""
CREATED_FIELDS = ("title", "description", "priority", "due_date", "tags")
"""What a `TaskCreated` carries of the task: the fields a client gives on create."""

ANONYMOUS = "anonymous"
"""The actor of a request made while the API has no keys configured."""
UNKNOWN_ACTOR = "unknown"
"""The actor of an event stored before events recorded one (read through an upcaster)."""


def format_timestamp(moment: datetime) -> str:
    """Timestamps on the wire: UTC, six fractional digits, `Z`."""
    # isoformat is several times faster than strftime, and this runs for every event read.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _now() -> datetime:
    return datetime.now(UTC)


class Task(Aggregate):
    """A task. State changes only; the rules for valid commands live in the command service."""

    TOPIC = "Task"

    class Event(Aggregate.Event):
        """Base of the task's events: the request's correlation id and the actor (the name of
        the API key that made the request, never the key) travel in every event."""

        TOPIC = "Task.Event"
        correlation_id: str | None
        actor: str

    class Created(Event, Aggregate.Created):
        TOPIC = "TaskCreated"
        class_version = 3

        title: str
        description: str | None
        priority: int
        due_date: str | None
        tags: list[str]
        idempotency_key: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Version 1 stored no idempotency key (and no correlation id).
            state.setdefault("idempotency_key", None)
            state.setdefault("correlation_id", None)

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state.setdefault("actor", UNKNOWN_ACTOR)

    class Updated(Event):
        TOPIC = "TaskUpdated"
        class_version = 2

        changes: dict[str, Any]
        previous: dict[str, Any] | None
        """The old value of every changed field; None on events stored before it was kept
        (readers fold it from the task's history: `previous_values`)."""

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("actor", UNKNOWN_ACTOR)
            state.setdefault("previous", None)

        def apply(self, aggregate: Any) -> None:
            for name, value in self.changes.items():
                setattr(aggregate, name, value)

    class SoftDeleted(Event):
        TOPIC = "TaskSoftDeleted"
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("actor", UNKNOWN_ACTOR)

        def apply(self, aggregate: Any) -> None:
            aggregate.deleted = True
            aggregate.deleted_at = format_timestamp(self.timestamp)

    def __init__(
        self,
        title: str,
        description: str | None,
        priority: int,
        due_date: str | None,
        tags: list[str],
        idempotency_key: str | None,
        correlation_id: str | None,
    ) -> None:
        self.title = title
        self.description = description
        self.priority = priority
        self.due_date = due_date
        self.tags = list(tags)
        self.idempotency_key = idempotency_key
        self.completed = False
        self.completed_at: str | None = None
        self.deleted = False
        self.deleted_at: str | None = None

    @classmethod
    def create(
        cls,
        task_id: UUID,
        *,
        title: str,
        description: str | None,
        priority: int,
        due_date: str | None,
        tags: list[str],
        idempotency_key: str | None,
        correlation_id: str | None,
        actor: str = ANONYMOUS,
    ) -> Task:
        return cls._create(
            cls.Created,
            id=task_id,
            title=title,
            description=description,
            priority=priority,
            due_date=due_date,
            tags=tags,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            actor=actor,
        )

    def next_timestamp(self) -> datetime:
        """The later of the clock and the last event's time: a task's history never goes back."""
        return max(_now(), self.modified_on)

    def update(
        self, changes: dict[str, Any], correlation_id: str | None, actor: str = ANONYMOUS
    ) -> None:
        """Record the fields that changed, and their old values; `completed` brings its
        `completed_at`."""
        moment = self.next_timestamp()
        changes = dict(changes)
        if "completed" in changes:
            changes["completed_at"] = format_timestamp(moment) if changes["completed"] else None
        self.trigger_event(
            self.Updated,
            changes=changes,
            previous=_current_values(self, changes),
            correlation_id=correlation_id,
            actor=actor,
            timestamp=moment,
        )

    def soft_delete(self, correlation_id: str | None, actor: str = ANONYMOUS) -> None:
        self.trigger_event(
            self.SoftDeleted,
            correlation_id=correlation_id,
            actor=actor,
            timestamp=self.next_timestamp(),
        )


def _current_values(task: Task, names: Iterable[str]) -> dict[str, Any]:
    return {
        name: list(value) if isinstance(value, list) else value
        for name in names
        for value in (getattr(task, name, None),)
    }


def previous_values(event: Task.Event, before: Task | None) -> dict[str, Any] | None:
    """An update's `previous`: as stored, or (for an event stored before it was kept) the
    values of the changed fields in `before`, the task just before the event."""
    if not isinstance(event, Task.Updated):
        return None
    if event.previous is not None:
        return event.previous
    if before is None:
        raise ValueError(f"{event.originator_id}: an update without the task before it")
    return _current_values(before, event.changes)


def task_to_dict(task: Task) -> TaskDict:
    """The REST representation of a task (every field, always present)."""
    return {
        "id": str(task.id),
        "title": task.title,
        "description": task.description,
        "priority": task.priority,
        "due_date": task.due_date,
        "tags": list(task.tags),
        "completed": task.completed,
        "completed_at": task.completed_at,
        "deleted": task.deleted,
        "deleted_at": task.deleted_at,
        "created_at": format_timestamp(task.created_on),
        "updated_at": format_timestamp(task.modified_on),
        "version": task.version,
    }


EVENT_TYPES = {
    "TaskCreated": "task.created",
    "TaskUpdated": "task.updated",
    "TaskSoftDeleted": "task.soft_deleted",
}
"""Stored topic → CloudEvents type and routing key."""
