"""`fold_stored` (the fast fold the rebuild uses) against the class-based fold: on any generated
history — every event type, every field, stored timestamps in every form the library reads,
every stored class version (upcast by the library on the class path), extra attributes — both
give the same REST task after every event."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from shared.domain import Task, TaskDict, task_to_dict
from shared.fold import STORED_FOLD_VERSIONS, fold_stored
from shared.store import decode
from shared.store import mapper as MAPPER

EVENT_CLASSES: dict[str, type[Task.Event]] = {
    "TaskCreated": Task.Created,
    "TaskUpdated": Task.Updated,
    "TaskSoftDeleted": Task.SoftDeleted,
}
ADDED_IN: dict[str, dict[int, tuple[str, ...]]] = {
    "TaskCreated": {2: ("idempotency_key", "correlation_id"), 3: ("actor",)},
    "TaskUpdated": {2: ("actor", "previous")},
    "TaskSoftDeleted": {2: ("actor",)},
}
"""The attributes each class version added (its upcaster fills them in for older ones)."""


def class_version(topic: str) -> int:
    """The library's rule: a class without `class_version` is at version 1."""
    return int(getattr(EVENT_CLASSES[topic], "class_version", 1))


texts = st.text(max_size=12)
due_dates = st.none() | st.dates().map(lambda day: day.isoformat())
tag_lists = st.lists(st.text(min_size=1, max_size=6), max_size=4)
changes = st.fixed_dictionaries(
    {},
    optional={
        "title": texts,
        "description": st.none() | texts,
        "priority": st.integers(-(2**31), 2**31 - 1),
        "due_date": due_dates,
        "tags": tag_lists,
        "completed": st.booleans(),
    },
)
# Stored timestamps as the library writes them (UTC, microseconds) and in forms it reads back:
# other offsets, whole seconds (isoformat then drops the fraction).
moments = st.builds(
    lambda moment, offset, whole: (
        (moment.replace(microsecond=0) if whole else moment)
        .replace(tzinfo=UTC)
        .astimezone(timezone(timedelta(minutes=offset)))
    ),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sampled_from([0, 0, 0, 60, -330, 840]),
    st.booleans(),
)
# Attributes a newer writer may add to an update or a deletion: the class path keeps them on the
# event and shows none of them; the fast fold ignores them.
extras = st.dictionaries(
    st.sampled_from(["actor", "previous", "note"]),
    st.none() | texts | st.dictionaries(st.sampled_from(["title", "priority"]), texts),
    max_size=2,
)
steps = st.lists(
    st.tuples(st.sampled_from(["update", "delete"]), changes, moments, extras), max_size=8
)


def old_version(topic: str, state: dict[str, Any], version: int) -> dict[str, Any]:
    """`state` (stored at the class's current version) as an older writer stored it."""
    older = dict(state)
    current = class_version(topic)
    for newer in range(version + 1, current + 1):
        for name in ADDED_IN[topic][newer]:
            older.pop(name, None)
    older.pop("class_version", None)
    if version > 1:
        older["class_version"] = version
    return older


def stored(
    event: Task.Event, moment: datetime, version: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """An events-table row of `event` stored at class `version`, at `moment`, with `extra`."""
    record = MAPPER.to_stored_event(event)
    state = old_version(record.topic, json.loads(record.state), version)
    state["timestamp"]["_data_"] = moment.isoformat()
    state.update(extra)
    return {
        "task_id": record.originator_id,
        "version": record.originator_version,
        "topic": record.topic,
        "state": json.dumps(state, ensure_ascii=False).encode(),
    }


@examples(max_examples=300, deadline=None)
@given(
    title=texts,
    description=st.none() | texts,
    priority=st.integers(-(2**31), 2**31 - 1),
    due_date=due_dates,
    tags=tag_lists,
    idempotency_key=st.none() | texts,
    created=moments,
    history=steps,
    data=st.data(),
)
def test_the_fast_fold_equals_the_class_based_fold_after_every_event(
    title: str,
    description: str | None,
    priority: int,
    due_date: str | None,
    tags: list[str],
    idempotency_key: str | None,
    created: datetime,
    history: list[tuple[str, dict[str, Any], datetime, dict[str, Any]]],
    data: st.DataObject,
) -> None:
    def version_of(topic: str) -> int:
        return data.draw(st.integers(1, class_version(topic)), label=topic)

    task = Task.create(
        uuid.uuid4(),
        title=title,
        description=description,
        priority=priority,
        due_date=due_date,
        tags=tags,
        idempotency_key=idempotency_key,
        correlation_id="req",
    )
    rows = [stored(task.collect_events()[0], created, version_of("TaskCreated"), {})]
    for kind, patch, moment, extra in history:
        if kind == "update":
            task.update(patch, "req")
        else:
            task.soft_delete(None)
        [event] = task.collect_events()
        rows.append(stored(event, moment, version_of(type(event).TOPIC), extra))

    replayed: Task | None = None
    fast: TaskDict | None = None
    for row in rows:
        mutated = decode(row).mutate(replayed)
        assert isinstance(mutated, Task)
        replayed = mutated
        fast = fold_stored(fast, row["task_id"], row["version"], row["topic"], row["state"])
        assert fast == task_to_dict(replayed)


def test_the_proven_versions_are_the_classes_versions() -> None:
    """A new class version fails here until the fast fold and the histories above cover it."""
    for topic, cls in EVENT_CLASSES.items():
        assert STORED_FOLD_VERSIONS[topic] == class_version(topic), cls
        assert set(ADDED_IN[topic]) == set(range(2, class_version(topic) + 1)), cls


def test_a_created_event_with_attributes_the_rest_task_does_not_show_folds_the_same() -> None:
    task_id = uuid.uuid4()
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2025-01-02T03:04:05.000006+00:00"},
        "originator_topic": "Task",
        "title": "Task",
        "description": None,
        "priority": 2,
        "due_date": None,
        "tags": ["a"],
        "idempotency_key": None,
        "correlation_id": None,
        "class_version": 2,
    }
    plain = fold_stored(None, task_id, 1, "TaskCreated", json.dumps(state).encode())

    extended = fold_stored(
        None, task_id, 1, "TaskCreated", json.dumps({**state, "actor": "ops"}).encode()
    )

    assert extended == plain
    assert plain["created_at"] == "2025-01-02T03:04:05.000006Z"


def test_a_stored_form_it_is_not_proven_on_is_refused() -> None:
    task = Task.create(
        uuid.uuid4(),
        title="t",
        description=None,
        priority=3,
        due_date=None,
        tags=[],
        idempotency_key=None,
        correlation_id=None,
    )
    task.update({"priority": 1}, None)
    task.update({"priority": 2}, None)
    moment = datetime.now(UTC)
    created, _, second = (stored(event, moment, 1, {}) for event in task.collect_events())
    document = fold_stored(None, task.id, 1, created["topic"], created["state"])
    newer = json.dumps(
        {**json.loads(second["state"]), "class_version": STORED_FOLD_VERSIONS["TaskUpdated"] + 1}
    ).encode()

    with pytest.raises(ValueError, match="does not follow"):
        fold_stored(document, task.id, 3, second["topic"], second["state"])
    with pytest.raises(ValueError, match="TaskCreated at version"):
        fold_stored(document, task.id, 1, created["topic"], created["state"])
    with pytest.raises(ValueError, match="unknown event topic"):
        fold_stored(document, task.id, 2, "TaskRenamed", second["state"])
    unknown = STORED_FOLD_VERSIONS["TaskUpdated"] + 1
    with pytest.raises(ValueError, match=f"class version {unknown} is unknown"):
        fold_stored(document, task.id, 2, second["topic"], newer)
