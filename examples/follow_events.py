"""Follow the task events as another service would: a queue of its own, bound to the exchange.

    .venv/bin/python examples/follow_events.py            # print every event until Ctrl-C
    .venv/bin/python examples/follow_events.py --count 1  # stop after the first one

Each event is printed as one line: its type, task, version, store position and id. A real
consumer would use a durable queue with a name of its own and deduplicate on the id; this one
is exclusive, so it disappears when the script stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import aio_pika

from shared.config import Settings


async def follow(settings: Settings, count: int | None, pattern: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=pattern)
        print(f"following {settings.exchange} ({pattern}); waiting for events...", flush=True)
        seen = 0
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    event = json.loads(message.body)
                    print(
                        f"{event['type']} task {event['subject']} "
                        f"version {int(event['sequence'])} position {event['position']} "
                        f"id {event['id']}",
                        flush=True,
                    )
                seen += 1
                if count is not None and seen >= count:
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="stop after this many events (default: never)")
    parser.add_argument(
        "--pattern", default="#", help="routing-key pattern to bind with (default: # = all)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follower stops
        asyncio.run(follow(Settings(), args.count, args.pattern))


if __name__ == "__main__":
    main()
