"""The one command-line entry: run any part or all of them, and the operations on the store.

python cli.py serve              # the whole API on :8000, relay and projector inside
python cli.py relay              # the relay alone (standbys wait for the lock)
python cli.py migrate            # create databases, tables and broker topology
python cli.py replay --from-position N [--to-position M] (--queue NAME [--routing-key P]... | --all)
python cli.py rebuild            # rebuild the read table from the store, reads keep working
python cli.py verify             # compare the read table with a replay of the store

A command that fails prints one line on stderr naming what to check and exits 1 (`--debug`
adds the traceback); migrate, replay, rebuild and verify end with a one-line summary.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback

from pydantic import ValidationError
from pydantic_settings import SettingsError

from composition import whole_api_document
from shared.config import Settings
from shared.failures import bad_settings, describe
from shared.server import serve


async def migrate(settings: Settings) -> str:
    """Create what every part needs; returns what now exists, for the summary line."""
    import asyncpg

    from command_service.application import migrate_store
    from projector.projection import migrate_read_model
    from query_service.cursors import load_secret
    from shared.messaging import connect, declare_topology
    from shared.store import count

    await migrate_store(settings)
    await migrate_read_model(settings)
    await load_secret(settings, create=True)
    connection = await connect(settings, "migrate")
    async with connection:
        await declare_topology(await connection.channel(), settings)
    store = await asyncpg.connect(settings.database_url)
    try:
        events = await count(store)
    finally:
        await store.close()
    return (
        f"event store ({events} events), read table, exchange {settings.exchange} "
        f"and queue {settings.projector_queue} ready"
    )


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on failure, print the whole traceback, not only the one-line reason",
    )
    parser = argparse.ArgumentParser(
        prog="cli.py",
        description=__doc__.splitlines()[0],
        epilog="Settings come from TASKS_* environment variables (docs/operations.md).",
        parents=[debug],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[debug])

    command("serve", "run the whole API in one process on TASKS_PORT (8000)")
    command("relay", "run the relay alone on TASKS_RELAY_PORT (8004)")
    command("migrate", "create databases, tables and broker topology")
    replay = command("replay", "republish stored events (same ids)")
    replay.add_argument(
        "--from-position",
        type=int,
        required=True,
        metavar="P",
        help="first store position to republish (inclusive)",
    )
    replay.add_argument(
        "--to-position",
        type=int,
        metavar="M",
        help="last store position to republish (inclusive; default: the store's end)",
    )
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--queue",
        metavar="NAME",
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
    command("openapi", "write the whole API's OpenAPI document to stdout")
    command("rebuild", "rebuild the read table from the store without downtime")
    command("verify", "compare the read table with a replay of the store")
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    """One command; the operations end with a one-line summary on stdout."""
    started = time.monotonic()

    def took() -> str:
        return f"in {time.monotonic() - started:.1f} s"

    if args.command == "serve":
        serve("composition:app_from_environment", settings, settings.port)
        return 0
    if args.command == "relay":
        serve("composition:relay_app_from_environment", settings, settings.relay_port)
        return 0
    if args.command == "migrate":
        print(f"migrated: {asyncio.run(migrate(settings))} {took()}")
        return 0
    if args.command == "replay":
        from command_service.replay import ReplayError
        from command_service.replay import replay as run_replay

        if args.all and args.routing_keys:
            print(
                "replay: --routing-key goes with --queue (--all publishes to the exchange)",
                file=sys.stderr,
            )
            return 2
        patterns = args.routing_keys or ["#"]
        try:
            count = asyncio.run(
                run_replay(settings, args.from_position, args.to_position, args.queue, patterns)
            )
        except ReplayError as error:
            print(f"replay: {error}", file=sys.stderr)
            return 1
        target = f"queue {args.queue}" if args.queue else f"exchange {settings.exchange}"
        print(f"replayed: republished {count} events to {target} {took()}")
        return 0
    if args.command == "openapi":
        sys.stdout.write(whole_api_document(settings))
        return 0
    if args.command == "rebuild":
        from projector.rebuild import rebuild

        result = asyncio.run(rebuild(settings))
        print(
            f"rebuilt the read table: {result['tasks']} tasks from {result['events']} events "
            f"(+{result['caught_up']} stored meanwhile), position {result['position']}, {took()}"
        )
        return 0
    if args.command == "verify":
        from projector.verify import verify

        differences = asyncio.run(verify(settings))
        return 1 if differences else 0
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run a command; a failure is one line on stderr (the traceback too with --debug)."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    if not debug and args.command not in ("serve", "relay"):
        # aiormq logs a failed connection that the command then reports in its own line.
        logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as error:
        return fail(args.command, error, bad_settings(error), debug)
    try:
        return run(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - one line for any failure; --debug: traceback
        return fail(args.command, error, describe(error, settings), debug)


def fail(command: str, error: BaseException, line: str, debug: bool) -> int:
    if debug:
        traceback.print_exception(error)
    sys.stderr.write(f"cli.py {command}: {line}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
