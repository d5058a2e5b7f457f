"""Every domain event has a wire twin that matches the AsyncAPI document."""

from __future__ import annotations

import uuid

import jsonschema
import pytest
import yaml

from shared.asyncapi import render
from shared.config import Settings
from shared.domain import EVENT_TYPES, Task, task_to_dict
from shared.messaging import to_cloudevent, to_message
from tests.asyncapi import DOCUMENT, MESSAGES, validate_event


def a_task_with_every_event() -> tuple[Task, list[Task.Event]]:
    task = Task.create(
        uuid.uuid4(),
        title="Write the report",
        description=None,
        priority=4,
        due_date="2030-01-31",
        tags=["work"],
        idempotency_key=None,
        correlation_id="req-1",
    )
    task.update({"priority": 5, "completed": True}, "req-2")
    task.soft_delete("req-3")
    return task, list(task.collect_events())


def test_every_stored_event_type_has_a_message_in_the_asyncapi_document() -> None:
    topics = {Task.Created.TOPIC, Task.Updated.TOPIC, Task.SoftDeleted.TOPIC}

    assert set(EVENT_TYPES) == topics
    assert set(MESSAGES) == set(EVENT_TYPES.values())
    assert DOCUMENT["channels"]["taskEvents"]["address"] == "tasks.events"


def test_each_wire_event_matches_its_asyncapi_schema_and_carries_the_task_after_it() -> None:
    _, events = a_task_with_every_event()
    replayed = None

    for position, event in enumerate(events, start=1):
        replayed = event.mutate(replayed)
        envelope = to_cloudevent(event, position, task_to_dict(replayed))

        validate_event(envelope)
        assert envelope["id"] == f"{event.originator_id}:{event.originator_version}"
        assert envelope["sequence"] == f"{event.originator_version:020d}"
        assert envelope["data"]["task"]["version"] == event.originator_version
    assert envelope["type"] == "task.soft_deleted"
    assert envelope["data"]["task"]["deleted"] is True


def test_an_update_carries_only_its_changes_and_the_amqp_properties_are_set() -> None:
    _, events = a_task_with_every_event()
    created = events[0].mutate(None)
    updated = events[1].mutate(created)

    envelope = to_cloudevent(events[1], 2, task_to_dict(updated))
    message = to_message(envelope, events[1])

    assert set(envelope["data"]["changes"]) == {"priority", "completed", "completed_at"}
    assert message.message_id == envelope["id"]
    assert message.type == "task.updated"
    assert message.correlation_id == "req-2"
    assert message.content_type == "application/cloudevents+json"
    assert message.delivery_mode == 2
    assert message.timestamp is not None


def test_an_event_that_breaks_the_document_is_refused_by_the_validator() -> None:
    _, events = a_task_with_every_event()
    envelope = to_cloudevent(events[0], 1, task_to_dict(events[0].mutate(None)))
    envelope["data"]["task"]["priority"] = 9

    with pytest.raises(jsonschema.ValidationError):
        validate_event(envelope)


def test_the_wire_event_carries_the_actor_and_an_updates_previous_values() -> None:
    task = Task.create(
        uuid.uuid4(),
        title="Write the report",
        description="draft",
        priority=2,
        due_date=None,
        tags=["a"],
        idempotency_key=None,
        correlation_id="req-1",
        actor="alice",
    )
    task.update({"description": None, "tags": ["b"]}, "req-2", "bob")
    created, updated = task.collect_events()
    first = created.mutate(None)
    envelope = to_cloudevent(updated, 2, task_to_dict(updated.mutate(first)))

    validate_event(envelope)
    assert envelope["actor"] == "bob"
    assert envelope["data"]["changes"] == {"description": None, "tags": ["b"]}
    assert envelope["data"]["previous"] == {"description": "draft", "tags": ["a"]}


def test_the_served_asyncapi_document_names_the_configured_broker_without_credentials() -> None:
    settings = Settings(
        exchange="other.events",
        amqp_url="amqp://ops-user:s3cret@broker.internal:5673/prod",
        event_log_max_age="30D",
    )

    text = render(settings)
    document = yaml.safe_load(text)

    assert "s3cret" not in text
    assert "ops-user" not in text
    assert document["servers"]["broker"]["host"] == "broker.internal:5673"
    assert document["channels"]["taskEvents"]["address"] == "other.events"
    assert document["channels"]["taskEvents"]["bindings"]["amqp"]["exchange"]["vhost"] == "prod"
    assert document["channels"]["eventLog"]["address"] == "other.events.log"
    assert "x-max-age 30D" in document["channels"]["eventLog"]["description"]
    assert "tasks.events" not in text
    assert document["components"] == DOCUMENT["components"]
