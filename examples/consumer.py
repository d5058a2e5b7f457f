"""A consumer of the task events, written as another service would write one.

It keeps its own copy of every task from the events alone (each event carries the whole task
after it, `data.task`), and shows the three things every consumer has to get right:

1. Its own queue, declared and bound to the exchange with `#` *before* it catches up, so
   everything published from then on waits in the queue (`--catch-up feed`).
2. Catching up on what was published before: the HTTP event feed (`GET /api/v1/events`,
   all of history, paged by position), or the broker's event log, a RabbitMQ stream read
   from `first`, a timestamp or an offset, which then goes on delivering live events
   (`--catch-up stream`, no queue of its own needed).
3. At-least-once delivery: the catch-up and the live queue overlap, and the broker may
   redeliver, so an event is applied only when it is newer than the version already held
   for its task (dedupe on `subject` + `sequence`, i.e. on `id`).

Run it next to `python cli.py serve`:

    python examples/consumer.py --queue my-service.tasks
    python examples/consumer.py --catch-up stream --offset first

`--exit-when-idle SECONDS` stops after that long without an event and `--dump FILE` writes
the tasks it holds as JSON (both for trying it out; a real consumer runs until stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.rabbitmq import RabbitMQMessage, from_rabbitmq
from cloudevents.core.formats.json import JSONFormat

FORMAT = JSONFormat()


class Replica:
    """Every task, as the events say it is now; deleted tasks are kept, marked deleted."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.position = 0  # the highest store position seen, for resuming the feed
        self.applied = 0
        self.duplicates = 0
        self.last_event = time.monotonic()

    def apply(self, event: BaseCloudEvent) -> None:
        self.last_event = time.monotonic()
        data = event.get_data()
        assert isinstance(data, dict)
        task = data["task"]
        held = self.tasks.get(task["id"])
        if held is not None and held["version"] >= task["version"]:
            self.duplicates += 1  # seen already (catch-up overlap or a redelivery)
            return
        self.tasks[task["id"]] = task
        self.position = max(self.position, int(event.get_extension("position")))
        self.applied += 1


def read_feed(api_url: str, api_key: str | None, replica: Replica) -> None:
    """Every stored event after the replica's position, page by page, until no next page."""
    url: str | None = f"{api_url}/api/v1/events?after={replica.position}&limit=1000"
    while url is not None:
        request = urllib.request.Request(url)  # noqa: S310 - the operator's own API URL
        if api_key:
            request.add_header("Authorization", f"Bearer {api_key}")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            for item in json.loads(response.read()):
                replica.apply(FORMAT.read(None, json.dumps(item)))
            link = response.headers.get("Link")
        url = api_url + link[1 : link.index(">")] if link else None


def stream_offset(text: str) -> Any:
    """`first`, `last`, `next`, an offset number, or an ISO timestamp."""
    if text in ("first", "last", "next"):
        return text
    if text.isdigit():
        return int(text)
    return datetime.fromisoformat(text)


async def consume(options: argparse.Namespace, replica: Replica) -> None:
    connection = await aio_pika.connect_robust(options.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)  # required on a stream, wise everywhere
        if options.catch_up == "stream":
            source = await channel.get_queue(options.event_log)  # the service declares it
            arguments = {"x-stream-offset": stream_offset(options.offset)}
        else:
            exchange = await channel.get_exchange(options.exchange)  # the service declares it
            source = await channel.declare_queue(
                options.queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await source.bind(exchange, routing_key="#")
            # Bound first: whatever is published from now on is in the queue; whatever was
            # published before is in the store, which the feed now reads to its end.
            await asyncio.to_thread(read_feed, options.api_url, options.api_key, replica)
            arguments = {}

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                envelope = RabbitMQMessage(
                    headers={}, content_type=message.content_type, body=message.body
                )
                replica.apply(from_rabbitmq(envelope, FORMAT))
            except Exception as exc:  # noqa: BLE001 - a bad message is set aside, never fatal
                print(f"not a task event, rejected: {exc!r}", file=sys.stderr)
                await message.reject(requeue=False)
                return
            await message.ack()

        await source.consume(on_message, arguments=arguments)
        print(f"consuming {source.name} live", flush=True)
        if options.exit_when_idle is None:
            await asyncio.Future()  # until stopped
        idle = 0.0
        while idle < options.exit_when_idle:
            await asyncio.sleep(options.exit_when_idle - idle)
            idle = time.monotonic() - replica.last_event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", default="tasks.events")
    parser.add_argument("--event-log", default="tasks.events.log")
    parser.add_argument("--api-url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="a key of the API, when it has keys")
    parser.add_argument("--queue", default="example-consumer.tasks", help="this consumer's queue")
    parser.add_argument("--catch-up", choices=["feed", "stream"], default="feed")
    parser.add_argument("--offset", default="first", help="where to attach to the event log")
    parser.add_argument("--exit-when-idle", type=float, metavar="SECONDS")
    parser.add_argument("--dump", type=Path, help="write the tasks held as JSON on exit")
    options = parser.parse_args()
    replica = Replica()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consume(options, replica))
    print(
        f"{len(replica.tasks)} tasks, {replica.applied} events applied, "
        f"{replica.duplicates} duplicates skipped, position {replica.position}"
    )
    if options.dump:
        options.dump.write_text(json.dumps(replica.tasks, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
