"""The two folds from stored events to a task, held equal by a property test.

`fold` applies decoded events through the aggregate's own classes: the reference, used where a
`Task` object is needed (commands, history, the wire's envelopes). `fold_stored` applies one
stored event straight from its JSON to the REST form, several times faster, for the paths that
fold many events and only need the REST form (the projector, rebuild, a read by id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from shared.domain import TASK_FIELDS, Task, TaskDict, format_timestamp


def fold(events: Iterable[Task.Event], task: Task | None = None) -> Task | None:
    """Apply events in version order to a task (or to nothing, for a `TaskCreated`)."""
    for domain_event in events:
        task = domain_event.mutate(task)
    return task


SHOWN = frozenset(TASK_FIELDS)
"""A `TaskUpdated` change the REST task shows (any other attribute an event gains is not)."""

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
    `task_to_dict(store.decode(row).mutate(task))` on every event type, field and stored class
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
            if name in SHOWN:
                task[name] = list(value) if name == "tags" else value
    else:  # TaskSoftDeleted
        task["deleted"] = True
        task["deleted_at"] = moment
    task["updated_at"] = moment
    task["version"] = version
    return task
