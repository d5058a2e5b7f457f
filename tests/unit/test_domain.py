"""The Task aggregate: its events, the fold, timestamps that never go back, and upcasting."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared import domain
from shared.domain import Task, task_to_dict
from shared.fold import fold
from shared.store import decode, mapper

WIRE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def new_task(**overrides: object) -> Task:
    fields: dict[str, object] = {
        "title": "Write the report",
        "description": None,
        "priority": 3,
        "due_date": None,
        "tags": ["work"],
        "idempotency_key": None,
        "correlation_id": "req-1",
    }
    fields.update(overrides)
    return Task.create(uuid.uuid4(), **fields)  # type: ignore[arg-type]


def test_a_new_task_shows_every_field_at_version_one() -> None:
    task = new_task()

    shown = task_to_dict(task)

    assert shown["version"] == 1
    assert shown["completed"] is False
    assert shown["completed_at"] is None
    assert shown["deleted"] is False
    assert shown["deleted_at"] is None
    assert shown["created_at"] == shown["updated_at"]
    assert WIRE_TIMESTAMP.fullmatch(shown["created_at"])
    assert set(shown) == {
        "id", "title", "description", "priority", "due_date", "tags", "completed",
        "completed_at", "deleted", "deleted_at", "created_at", "updated_at", "version",
    }  # fmt: skip


def test_completing_sets_completed_at_and_reopening_clears_it() -> None:
    task = new_task()

    task.update({"completed": True}, "req-2")
    completed = task_to_dict(task)
    task.update({"completed": False}, "req-3")
    reopened = task_to_dict(task)

    assert completed["completed"] is True
    assert WIRE_TIMESTAMP.fullmatch(completed["completed_at"])
    assert completed["completed_at"] == completed["updated_at"]
    assert reopened["completed"] is False
    assert reopened["completed_at"] is None
    assert reopened["version"] == 3


def test_an_update_event_carries_only_the_changes_and_the_correlation_id() -> None:
    task = new_task()
    task.collect_events()

    task.update({"priority": 5}, "req-2")
    [event] = task.collect_events()

    assert isinstance(event, Task.Updated)
    assert event.changes == {"priority": 5}
    assert event.correlation_id == "req-2"


def test_a_soft_delete_marks_the_task_deleted_at_the_event_time() -> None:
    task = new_task()

    task.soft_delete("req-9")
    shown = task_to_dict(task)

    assert shown["deleted"] is True
    assert shown["deleted_at"] == shown["updated_at"]
    assert shown["version"] == 2


def test_the_fold_of_stored_events_equals_the_live_aggregate() -> None:
    task = new_task(due_date="2026-12-15", idempotency_key="key-1")
    task.update({"title": "Renamed", "tags": []}, "req-2")
    task.update({"completed": True}, "req-3")
    task.soft_delete("req-4")
    rows = [mapper.to_stored_event(event) for event in task.collect_events()]

    decoded = [
        decode({"task_id": r.originator_id, "version": r.originator_version, **r.__dict__})
        for r in rows
    ]
    folded = fold(decoded)

    assert folded is not None
    assert task_to_dict(folded) == task_to_dict(task)
    assert decoded[0].correlation_id == "req-1"
    assert isinstance(decoded[0], Task.Created)
    assert decoded[0].idempotency_key == "key-1"


def test_an_event_is_never_earlier_than_the_one_before_when_the_clock_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = new_task()
    created_on = task.created_on
    monkeypatch.setattr(domain, "_now", lambda: created_on - timedelta(seconds=30))

    task.update({"priority": 4}, "req-2")
    task.soft_delete("req-3")
    events = task.collect_events()

    timestamps = [event.timestamp for event in events]
    assert timestamps == sorted(timestamps)
    assert timestamps[-1] == created_on


def test_wire_timestamps_have_six_fractional_digits_even_on_a_whole_second() -> None:
    moment = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)

    assert domain.format_timestamp(moment) == "2026-11-26T09:30:00.000000Z"
    assert domain.format_timestamp(moment.astimezone()) == "2026-11-26T09:30:00.000000Z"


def test_task_created_is_stored_with_its_schema_version() -> None:
    task = new_task()

    stored = mapper.to_stored_event(task.collect_events()[0])

    assert stored.topic == "TaskCreated"
    assert json.loads(stored.state)["class_version"] == 3


def test_a_version_one_task_created_is_upcast_when_decoded() -> None:
    task_id = uuid.uuid4()
    # The form TaskCreated had before idempotency keys and correlation ids: no class_version.
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2025-01-02T03:04:05.678901+00:00"},
        "originator_topic": "Task",
        "title": "Old task",
        "description": "from before",
        "priority": 2,
        "due_date": "2025-02-01",
        "tags": ["legacy"],
    }
    row = {
        "task_id": task_id,
        "version": 1,
        "topic": "TaskCreated",
        "state": json.dumps(state).encode(),
    }

    event = decode(row)
    task = fold([event])

    assert isinstance(event, Task.Created)
    assert event.idempotency_key is None
    assert event.correlation_id is None
    assert event.actor == "unknown"
    assert task is not None
    assert task_to_dict(task) | {"id": None} == {
        "id": None,
        "title": "Old task",
        "description": "from before",
        "priority": 2,
        "due_date": "2025-02-01",
        "tags": ["legacy"],
        "completed": False,
        "completed_at": None,
        "deleted": False,
        "deleted_at": None,
        "created_at": "2025-01-02T03:04:05.678901Z",
        "updated_at": "2025-01-02T03:04:05.678901Z",
        "version": 1,
    }


def test_the_fast_decoder_reads_exactly_what_the_library_wrote() -> None:
    from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex

    from shared.store import create_transcoder

    library = JSONTranscoder()
    library.register(UUIDAsHex())
    library.register(DatetimeAsISO())
    state = {
        "timestamp": datetime(2026, 11, 26, 9, 30, 0, 123456, tzinfo=UTC),
        "originator_topic": "Task",
        "changes": {"title": "Ünïcode ✓ 𝄞", "tags": ["a", "b"], "due_date": None},
        "nested": [{"id": uuid.UUID(int=7)}],
    }
    stored = library.encode(state)

    assert create_transcoder().decode(stored) == library.decode(stored) == state


def test_timestamps_are_formatted_in_utc_with_six_digits_and_z() -> None:
    from shared.domain import format_timestamp

    east = timezone(timedelta(hours=5, minutes=30))

    assert (
        format_timestamp(datetime(2026, 1, 2, 8, 0, 0, tzinfo=east))
        == "2026-01-02T02:30:00.000000Z"
    )
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.000006Z"
    )


def test_every_event_records_its_actor_and_an_update_the_old_value_of_each_changed_field() -> None:
    task = new_task(actor="alice")
    task.update({"priority": 5, "tags": ["x"], "completed": True}, "req-2", "bob")
    task.soft_delete("req-3", "carol")

    created, updated, deleted = task.collect_events()

    assert [created.actor, updated.actor, deleted.actor] == ["alice", "bob", "carol"]
    assert isinstance(updated, Task.Updated)
    assert updated.previous == {
        "priority": 3,
        "tags": ["work"],
        "completed": False,
        "completed_at": None,
    }


def _stored(topic: str, version: int, state: dict[str, object]) -> dict[str, object]:
    return {
        "task_id": uuid.uuid4(),
        "version": version,
        "topic": topic,
        "state": json.dumps(
            {
                "timestamp": {"_type_": "datetime_iso", "_data_": "2025-01-02T03:04:05+00:00"},
                "originator_topic": "Task",
                **state,
            }
        ).encode(),
    }


def test_events_of_the_previous_class_versions_are_upcast_with_an_unknown_actor() -> None:
    created_v2 = _stored(
        "TaskCreated",
        1,
        {
            "class_version": 2,
            "title": "t",
            "description": None,
            "priority": 3,
            "due_date": None,
            "tags": [],
            "idempotency_key": None,
            "correlation_id": "req-1",
        },
    )
    updated_v1 = _stored("TaskUpdated", 2, {"changes": {"priority": 4}, "correlation_id": "r"})
    deleted_v1 = _stored("TaskSoftDeleted", 3, {"correlation_id": "r"})

    created, updated, deleted = (decode(row) for row in (created_v2, updated_v1, deleted_v1))

    assert [created.actor, updated.actor, deleted.actor] == ["unknown"] * 3
    assert isinstance(updated, Task.Updated)
    assert updated.previous is None
    assert created.correlation_id == "req-1"


def test_the_previous_values_of_an_upcast_update_are_folded_from_the_task_before_it() -> None:
    task = new_task(priority=2, tags=["a", "b"])
    old = _stored("TaskUpdated", 2, {"changes": {"priority": 4, "tags": []}})
    event = decode(old)

    previous = domain.previous_values(event, task)

    assert previous == {"priority": 2, "tags": ["a", "b"]}
    assert domain.previous_values(task.collect_events()[0], None) is None
