"""An append whose commit succeeded but whose acknowledgement was lost is answered as done;
a real conflict with another writer's event is still a conflict."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from command_service.application import TaskApplication, migrate_store
from command_service.batcher import GroupCommit
from shared.config import Settings
from shared.domain import Task
from tests.helpers import store_events


class Collected:
    """Hands the same, already collected events to the committer again."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def collect_events(self) -> list[Any]:
        return list(self.events)


def new_task(title: str) -> Task:
    return Task.create(
        uuid.uuid4(),
        title=title,
        description=None,
        priority=3,
        due_date=None,
        tags=[],
        idempotency_key=None,
        correlation_id=None,
    )


async def test_an_append_already_in_the_store_is_answered_with_its_position(
    settings: Settings,
) -> None:
    await migrate_store(settings)
    application = TaskApplication(settings)
    committer = GroupCommit(application.save, recorded=application.already_recorded)
    try:
        task = new_task("once")
        events = task.collect_events()
        [recording] = application.save(*events)  # committed; pretend the answer was lost

        position = committer.commit(Collected(events))

        assert position == recording.notification.id
        assert len(await store_events(settings, task.id)) == 1
    finally:
        committer.close()
        application.close()


async def test_another_writers_event_at_the_same_version_is_still_a_conflict(
    settings: Settings,
) -> None:
    await migrate_store(settings)
    application = TaskApplication(settings)
    committer = GroupCommit(application.save, recorded=application.already_recorded)
    try:
        task = new_task("mine")
        application.save(task)
        theirs = application.repository.get(task.id)
        mine = application.repository.get(task.id)
        theirs.update({"priority": 5}, "theirs")
        application.save(theirs)
        mine.update({"priority": 1}, "mine")

        with pytest.raises(IntegrityError):
            committer.commit(mine)

        stored = await store_events(settings, task.id)
        assert len(stored) == 2
        assert b'"theirs"' in bytes(stored[1]["state"])
    finally:
        committer.close()
        application.close()
