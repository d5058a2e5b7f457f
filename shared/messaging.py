"""The broker topology and the CloudEvents envelope: how a stored event looks on the wire."""

from __future__ import annotations

from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared.config import Settings
from shared.domain import (
    EVENT_TYPES,
    Task,
    TaskDict,
    format_timestamp,
    previous_values,
    task_to_dict,
)

SOURCE = "tasks/command-service"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


def event_id(task_id: str, version: int) -> str:
    """Deterministic: every publication of one event carries the same id."""
    return f"{task_id}:{version}"


def envelope_after(
    event: Task.Event, position: int, before: Task | None
) -> tuple[dict[str, Any], Task]:
    """The CloudEvent of a stored event given the task just before it, and the task after it:
    what the relay publishes and the event feed serves, folded the same way."""
    previous = previous_values(event, before)
    task = event.mutate(before)
    assert isinstance(task, Task)
    return to_cloudevent(event, position, task_to_dict(task), previous), task


def to_cloudevent(
    event: Task.Event,
    position: int,
    task: TaskDict,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one place a stored event becomes a wire event (the relay, replay and the HTTP feed).

    `task` is the task after the event; `previous` the update's old values when the stored
    event predates them (`shared.domain.previous_values`).
    """
    topic = type(event).TOPIC
    kind = EVENT_TYPES[topic]
    task_id = str(event.originator_id)
    data: dict[str, Any] = {"task": task}
    if isinstance(event, Task.Updated):
        data["changes"] = event.changes
        data["previous"] = previous if previous is not None else event.previous
        if data["previous"] is None:
            raise ValueError(f"{task_id}: an update's previous values are unknown")
    return {
        "specversion": "1.0",
        "id": event_id(task_id, event.originator_version),
        "source": SOURCE,
        "type": kind,
        "subject": task_id,
        "time": format_timestamp(event.timestamp),
        "datacontenttype": "application/json",
        "sequence": f"{event.originator_version:020d}",
        "position": position,
        "correlationid": event.correlation_id,
        "actor": event.actor,
        "data": data,
    }


def to_message(envelope: dict[str, Any], event: Task.Event) -> aio_pika.Message:
    correlation = envelope["correlationid"]
    return aio_pika.Message(
        body=orjson.dumps(envelope),
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=envelope["id"],
        type=envelope["type"],
        correlation_id=correlation[:255] if correlation else None,
        timestamp=event.timestamp,
        app_id="tasks",
    )


async def declare_topology(
    channel: AbstractChannel, settings: Settings
) -> tuple[AbstractExchange, AbstractQueue]:
    """The exchange, the projector's queue, the event log (a stream) and their bindings:
    declared alike by every part."""
    exchange = await channel.declare_exchange(
        settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(
        settings.projector_queue,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
    )
    await queue.bind(exchange, routing_key="#")
    await channel.declare_queue(
        settings.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    log = await channel.declare_queue(
        settings.event_log_stream, durable=True, arguments=event_log_arguments(settings)
    )
    await log.bind(exchange, routing_key="#")
    return exchange, queue


def event_log_arguments(settings: Settings) -> dict[str, Any]:
    """The stream's declaration: RabbitMQ keeps it by age and by size, whichever ends first.
    (A redeclaration with other values is refused by the broker: change an existing stream's
    retention with a policy, or delete it.)"""
    return {
        "x-queue-type": "stream",
        "x-max-age": settings.event_log_max_age,
        "x-max-length-bytes": settings.event_log_max_bytes,
    }


async def connect(settings: Settings, role: str) -> aio_pika.abc.AbstractConnection:
    """A broker connection named after its role and exchange, so operators can tell them apart."""
    return await aio_pika.connect(
        settings.amqp_url,
        client_properties={"connection_name": f"tasks-{role} ({settings.exchange})"},
    )
