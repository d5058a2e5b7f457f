"""`fold_stored` (the fast fold `rebuild` uses) against the library's fold through the aggregate:
for any history of creates, updates and deletions, stored by the library's own mapper, both give
the same REST task after every event."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from shared.domain import Task, TaskDict, create_mapper, decode, fold_stored, task_to_dict

MAPPER = create_mapper()

texts = st.text(min_size=1, max_size=12)
due_dates = st.none() | st.dates().map(lambda day: day.isoformat())
tag_lists = st.lists(st.text(min_size=1, max_size=6), max_size=4)
changes = st.fixed_dictionaries(
    {},
    optional={
        "title": texts,
        "description": st.none() | texts,
        "priority": st.integers(1, 5),
        "due_date": due_dates,
        "tags": tag_lists,
        "completed": st.booleans(),
    },
)
# Stored timestamps as the library writes them, and in forms it could read back: other offsets,
# whole seconds (isoformat then drops the fraction).
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
steps = st.lists(st.tuples(st.none() | changes, moments), max_size=8)


def stored(event: Task.Event, moment: datetime) -> dict[str, Any]:
    """An events-table row of `event`, its timestamp replaced by `moment`."""
    record = MAPPER.to_stored_event(event)
    state = json.loads(record.state)
    state["timestamp"]["_data_"] = moment.isoformat()
    return {
        "originator_id": record.originator_id,
        "originator_version": record.originator_version,
        "topic": record.topic,
        "state": json.dumps(state, ensure_ascii=False).encode(),
    }


@examples(max_examples=300, deadline=None)
@given(
    title=texts,
    description=st.none() | texts,
    priority=st.integers(1, 5),
    due_date=due_dates,
    tags=tag_lists,
    created=moments,
    history=steps,
    deleted=st.none() | moments,
)
def test_the_fast_fold_equals_the_aggregate_after_every_event(
    title: str,
    description: str | None,
    priority: int,
    due_date: str | None,
    tags: list[str],
    created: datetime,
    history: list[tuple[dict[str, Any] | None, datetime]],
    deleted: datetime | None,
) -> None:
    task = Task.create(
        uuid.uuid4(),
        title=title,
        description=description,
        priority=priority,
        due_date=due_date,
        tags=tags,
        idempotency_key=None,
        correlation_id=None,
    )
    rows = [stored(task.collect_events()[0], created)]
    for patch, moment in history:
        if patch is None:
            continue
        task.update(patch, "corr")
        rows.append(stored(task.collect_events()[0], moment))
    if deleted is not None:
        task.soft_delete(None)
        rows.append(stored(task.collect_events()[0], deleted))

    replayed: Task | None = None
    fast: TaskDict | None = None
    for row in rows:
        event = decode(MAPPER, row)
        mutated = event.mutate(replayed)
        assert isinstance(mutated, Task)
        replayed = mutated
        fast = fold_stored(
            fast, row["originator_id"], row["originator_version"], row["topic"], row["state"]
        )
        assert fast == task_to_dict(replayed)


def test_an_event_that_does_not_follow_is_refused() -> None:
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
    created, _, second = (stored(event, moment) for event in task.collect_events())
    document = fold_stored(None, task.id, 1, created["topic"], created["state"])

    with pytest.raises(ValueError, match="does not follow"):
        fold_stored(document, task.id, 3, second["topic"], second["state"])
    with pytest.raises(ValueError, match="TaskCreated at version"):
        fold_stored(document, task.id, 1, created["topic"], created["state"])
    with pytest.raises(ValueError, match="unknown event topic"):
        fold_stored(document, task.id, 2, "TaskRenamed", second["state"])


def test_a_version_one_task_created_folds_like_the_upcast_one() -> None:
    task_id = uuid.uuid4()
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2025-01-02T03:04:05+01:00"},
        "originator_topic": "Task",
        "title": "Old task",
        "description": "from before",
        "priority": 2,
        "due_date": "2025-02-01",
        "tags": ["legacy"],
    }
    record = StoredEvent(task_id, 1, "TaskCreated", json.dumps(state).encode())
    row = {
        "originator_id": task_id,
        "originator_version": 1,
        "topic": "TaskCreated",
        "state": record.state,
    }

    replayed = decode(MAPPER, row).mutate(None)

    assert isinstance(replayed, Task)
    document = fold_stored(None, task_id, 1, "TaskCreated", record.state)
    assert document == task_to_dict(replayed)
    assert document["created_at"] == "2025-01-02T02:04:05.000000Z"
