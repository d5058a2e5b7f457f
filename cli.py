"""The one command-line entry: run any part or all of them, and the operations on the store.

python cli.py serve              # the whole API on :8000, relay and projector inside
python cli.py relay              # the relay alone (standbys wait for the lock)
python cli.py migrate            # create databases, tables and broker topology
python cli.py replay --from-position N [--to-position M] (--queue NAME [--routing-key P]... | --all)
python cli.py rebuild            # rebuild the read table from the store, reads keep working
python cli.py verify             # compare the read table with a replay of the store
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from fastapi import FastAPI

from command_service.api import WRITE_SCHEMAS, BodyGate, commit_ready, event_store
from command_service.api import router as write_router
from command_service.relay import asyncapi_router, relay_ready, relay_task
from projector.consumer import projector_ready, projector_task
from query_service.api import read_pools
from query_service.api import router as read_router
from query_service.events import router as events_router
from shared.config import Settings
from shared.health import postgres_check, rabbitmq_check
from shared.server import from_environment, serve
from shared.web import make_app


def create_app(settings: Settings) -> FastAPI:
    """Single-process mode: every route on one port, relay and projector as background tasks."""
    app = make_app(
        "Tasks",
        settings,
        [read_router, events_router, write_router, asyncapi_router],
        [event_store, projector_task, read_pools, relay_task],
        [postgres_check, commit_ready, rabbitmq_check, relay_ready, projector_ready],
        WRITE_SCHEMAS,
        [(BodyGate, {"max_bytes": settings.max_body_bytes})],
    )
    return app


def app_from_environment() -> FastAPI:
    return from_environment(create_app)


def relay_app_from_environment() -> FastAPI:
    return from_environment(create_relay_app)


def create_relay_app(settings: Settings) -> FastAPI:
    """The relay on its own (`cli.py relay`), with /health, /ready and /metrics."""
    return make_app(
        "Tasks relay",
        settings,
        [asyncapi_router],
        [relay_task],
        [postgres_check, rabbitmq_check, relay_ready],
    )


def whole_api_document(settings: Settings) -> str:
    """The single-process app's document: every route of every service (`shared/openapi.json`)."""
    return json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"


async def migrate(settings: Settings) -> None:
    from command_service.application import migrate_store
    from projector.projection import migrate_read_model
    from shared.messaging import connect, declare_topology

    await migrate_store(settings)
    await migrate_read_model(settings)
    connection = await connect(settings, "migrate")
    async with connection:
        await declare_topology(await connection.channel(), settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the whole API in one process on TASKS_PORT (8000)")
    commands.add_parser("relay", help="run the relay alone on TASKS_RELAY_PORT (8004)")
    commands.add_parser("migrate", help="create databases, tables and broker topology")
    replay = commands.add_parser("replay", help="republish stored events (same ids)")
    replay.add_argument("--from-position", type=int, required=True)
    replay.add_argument("--to-position", type=int)
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--queue",
        help="publish to this one existing queue, through a temporary exchange bound to it",
    )
    target.add_argument("--all", action="store_true", help="publish to the whole exchange")
    replay.add_argument(
        "--routing-key",
        action="append",
        dest="routing_keys",
        metavar="PATTERN",
        help="with --queue: bind with this topic pattern (repeatable; default '#'); "
        "events keep their own routing keys",
    )
    commands.add_parser("openapi", help="write the whole API's OpenAPI document to stdout")
    commands.add_parser("rebuild", help="rebuild the read table from the store without downtime")
    commands.add_parser("verify", help="compare the read table with a replay of the store")
    args = parser.parse_args(argv)
    settings = Settings()

    if args.command == "serve":
        serve("cli:app_from_environment", settings, settings.port)
        return 0
    if args.command == "relay":
        serve("cli:relay_app_from_environment", settings, settings.relay_port)
        return 0
    if args.command == "migrate":
        asyncio.run(migrate(settings))
        return 0
    if args.command == "replay":
        from command_service.replay import ReplayError
        from command_service.replay import replay as run_replay

        if args.all and args.routing_keys:
            parser.error("--routing-key goes with --queue (--all publishes to the exchange)")
        patterns = args.routing_keys or ["#"]
        try:
            count = asyncio.run(
                run_replay(settings, args.from_position, args.to_position, args.queue, patterns)
            )
        except ReplayError as error:
            print(f"replay: {error}", file=sys.stderr)
            return 1
        print(f"republished {count} events")
        return 0
    if args.command == "openapi":
        sys.stdout.write(whole_api_document(settings))
        return 0
    if args.command == "rebuild":
        from projector.rebuild import rebuild

        asyncio.run(rebuild(settings))
        return 0
    if args.command == "verify":
        from projector.rebuild import verify

        differences = asyncio.run(verify(settings))
        return 1 if differences else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
