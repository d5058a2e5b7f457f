"""The Task aggregate, its three events, and the fold from events to the REST task."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)

EVENTS_TABLE = "tasks_events"
"""The library names its table after the application (`Tasks`): `tasks_events`."""

TaskDict = dict[str, Any]

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


def fold(events: Iterable[Task.Event], task: Task | None = None) -> Task | None:
    """Apply events in version order to a task (or to nothing, for a `TaskCreated`)."""
    for domain_event in events:
        task = domain_event.mutate(task)
    return task


REST_FIELDS = frozenset(
    ("title", "description", "priority", "due_date", "tags", "completed", "completed_at")
)
"""The fields a `TaskUpdated` may change that the REST task shows."""

STORED_FOLD_VERSIONS = {"TaskCreated": 3, "TaskUpdated": 2, "TaskSoftDeleted": 2}
"""The newest `class_version` of each event that `fold_stored` is proven equal on (a property
test generates every version up to these; a unit test pins them to the classes' versions)."""


def _stored_moment(state: dict[str, Any]) -> str:
    """An event's stored timestamp (the library's `datetime_iso`) in the REST form."""
    value = state["timestamp"]["_data_"]
    if len(value) == 32 and value.endswith("+00:00"):  # UTC with microseconds: already right
        return f"{value[:-6]}Z"
    return format_timestamp(datetime.fromisoformat(value))


def fold_stored(
    task: TaskDict | None, task_id: UUID, version: int, topic: str, state: bytes
) -> TaskDict:
    """One stored event applied to a task's REST form, straight from its stored JSON.

    The fast fold beside `fold` + `task_to_dict`: equal to
    `task_to_dict(decode(mapper, row).mutate(task))` on every event type, field and stored class
    version (a property test holds the two together), several times faster because it builds
    none of the library's objects, which matters when a whole store is folded (`rebuild`).
    Attributes it does not show (correlation id, idempotency key, and any an event gains) are
    ignored, as the REST task ignores them. Updates `task` in place. A stored form it is not
    proven on (an unknown topic, a newer class version, a version out of order) raises
    `ValueError` instead of guessing.
    """
    try:
        data = orjson.loads(state)
    except orjson.JSONDecodeError:
        data = json.loads(state)  # e.g. lone surrogates, which orjson refuses
    proven = STORED_FOLD_VERSIONS.get(topic)
    if proven is None:
        raise ValueError(f"{task_id}: unknown event topic {topic!r}")
    if data.get("class_version", 1) > proven:
        raise ValueError(f"{task_id}: {topic} class version {data['class_version']} is unknown")
    moment = _stored_moment(data)
    if topic == "TaskCreated":
        if task is not None or version != 1:
            raise ValueError(f"{task_id}: TaskCreated at version {version}")
        return {
            "id": str(task_id),
            "title": data["title"],
            "description": data["description"],
            "priority": data["priority"],
            "due_date": data["due_date"],
            "tags": list(data["tags"]),
            "completed": False,
            "completed_at": None,
            "deleted": False,
            "deleted_at": None,
            "created_at": moment,
            "updated_at": moment,
            "version": 1,
        }
    if task is None or version != task["version"] + 1:
        raise ValueError(f"{task_id}: version {version} does not follow the task's last event")
    if topic == "TaskUpdated":
        for name, value in data["changes"].items():
            if name in REST_FIELDS:
                task[name] = list(value) if name == "tags" else value
    else:  # TaskSoftDeleted
        task["deleted"] = True
        task["deleted_at"] = moment
    task["updated_at"] = moment
    task["version"] = version
    return task


class FastJSONTranscoder(JSONTranscoder):
    """The library's JSON format, decoded with orjson (the store's hottest read path).

    Encoding stays the library's own, so stored bytes are exactly what it would write.
    """

    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)  # e.g. lone surrogates, which orjson refuses
        return self._revive(parsed)

    def _revive(self, value: Any) -> Any:
        """The library's object hook, applied bottom-up to every JSON object as its own decoder
        does. Only containers are visited: most values are strings and numbers."""
        if type(value) is dict:
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._revive(item)
            return self._decode_obj(value) if len(value) == 2 else value
        if type(value) is list:
            return [
                self._revive(item) if type(item) is dict or type(item) is list else item
                for item in value
            ]
        return value


def create_transcoder() -> JSONTranscoder:
    transcoder = FastJSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return transcoder


def create_mapper() -> Mapper[UUID]:
    """Decodes stored events outside the library's application (relay, projector, queries)."""
    return Mapper(transcoder=create_transcoder())


EVENT_TYPES = {
    "TaskCreated": "task.created",
    "TaskUpdated": "task.updated",
    "TaskSoftDeleted": "task.soft_deleted",
}
"""Stored topic → CloudEvents type and routing key."""


def decode(mapper: Mapper[UUID], row: Any) -> Task.Event:
    """Decode one events-table row (`originator_id, originator_version, topic, state`)."""
    event = mapper.to_domain_event(
        StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
    )
    assert isinstance(event, Task.Event)
    return event
