"""Random PATCH sequences on the application (the library's in-memory persistence) against a
plain-Python model of the contract: same state, no-ops append nothing, and each TaskUpdated
carries exactly the fields that changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from command_service.application import TaskApplication
from command_service.commands import validate_create, validate_patch
from shared.domain import Task, task_to_dict
from shared.errors import ValidationFailed

TODAY = datetime.now(UTC).date()


class InMemoryTasks(TaskApplication):
    """The application on `eventsourcing.popo`, whose recorder has no SQL table to look in."""

    def position_of(self, task_id: UUID, version: int) -> int:
        for notification in self.recorder.select_notifications(start=1, limit=1_000_000):
            if notification.originator_id == task_id and (
                notification.originator_version == version
            ):
                return notification.id
        raise AssertionError(f"no stored event {task_id} v{version}")


@pytest.fixture
def application() -> Iterator[TaskApplication]:
    app = InMemoryTasks(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield app
    app.close()


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


# Small value pools, so that patches often repeat the current value (no-ops) and often differ.
values = {
    "title": st.sampled_from(["a", " a ", "b", "Report", "report"]),
    "description": st.sampled_from([None, "", "notes", " notes "]),
    "priority": st.integers(1, 5),
    # Tomorrow onwards is valid whenever the test runs; the past is valid only when unchanged.
    "due_date": st.sampled_from([None, day(1), day(30), day(-1), day(-400)]),
    "tags": st.lists(st.sampled_from(["x", " X", "y", "z ", "Y"]), max_size=4),
    "completed": st.booleans(),
}


@st.composite
def patches(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(list(values)), unique=True, max_size=4))
    return {name: draw(values[name]) for name in names}


class Model:
    """The contract's PATCH rules, written out plainly."""

    def __init__(self, created: dict[str, Any]) -> None:
        self.state = {**created, "completed": False}
        self.version = 1

    @staticmethod
    def normalise(patch: dict[str, Any]) -> dict[str, Any]:
        out = dict(patch)
        if "title" in out:
            out["title"] = out["title"].strip()
        if "tags" in out:
            out["tags"] = list(dict.fromkeys(tag.strip().lower() for tag in out["tags"]))
        return out

    def apply(self, patch: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """('refused' | 'no-op' | 'updated', the changed fields)."""
        changes = {
            name: value
            for name, value in self.normalise(patch).items()
            if self.state[name] != value
        }
        due = changes.get("due_date")
        if due is not None and date.fromisoformat(due) < TODAY:
            return "refused", {}
        if not changes:
            return "no-op", {}
        self.state.update(changes)
        self.version += 1
        return "updated", changes


def stored(app: TaskApplication, task_id: UUID) -> list[Any]:
    return list(app.events.get(task_id))


# One application serves every example (each example makes a task of its own).
@examples(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    created=st.fixed_dictionaries(
        {
            "title": values["title"],
            "description": values["description"],
            "priority": values["priority"],
            "due_date": st.sampled_from([None, day(1), day(30)]),
            "tags": values["tags"],
        }
    ),
    sequence=st.lists(patches(), max_size=12),
)
def test_a_random_sequence_of_patches_matches_the_model_of_the_rules(
    application: TaskApplication, created: dict[str, Any], sequence: list[dict[str, Any]]
) -> None:
    fields = validate_create(encode(created))
    task_id = UUID(application.create_task(fields, correlation_id=None).task["id"])
    model = Model(Model.normalise(created))

    for patch in sequence:
        outcome, changes = model.apply(patch)
        before = stored(application, task_id)
        if outcome == "refused":
            with pytest.raises(ValidationFailed) as refused:
                application.update_task(task_id, validate_patch(encode(patch)), None, None)
            assert refused.value.details == {"due_date": "Must not be before today (UTC)"}
            assert stored(application, task_id) == before
            continue

        result = application.update_task(task_id, validate_patch(encode(patch)), None, None)
        after = stored(application, task_id)

        assert result.version == model.version
        if outcome == "no-op":
            assert after == before
        else:
            assert len(after) == len(before) + 1
            event = after[-1]
            assert isinstance(event, Task.Updated)
            expected = dict(changes)
            if "completed" in changes:
                expected["completed_at"] = result.task["completed_at"]
            assert event.changes == expected
        task = task_to_dict(application.repository.get(task_id))
        assert task == result.task
        assert {name: task[name] for name in model.state} == model.state
        assert (task["completed_at"] is not None) == model.state["completed"]
        assert task["version"] == len(after) == model.version
