"""Least-privilege PostgreSQL roles, one per part: the command side appends to the store, the
projector writes the read table, the query side only reads.

Created by `cli.py migrate --roles` as the tables' owner, after the tables exist; the apps then
connect as their role with `TASKS_MIGRATE_ON_START=false` (a role may not create anything).
The store stays append-only for the command role although the library's `LOCK TABLE ... IN
EXCLUSIVE MODE` needs the UPDATE privilege: a trigger refuses that role every UPDATE and DELETE
(it has no TRUNCATE privilege).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

import asyncpg

from shared.config import Settings
from shared.database import ddl_lock
from shared.store import EVENTS_TABLE


@dataclass(frozen=True)
class Roles:
    """The three role names (a prefix keeps test roles apart from a deployment's)."""

    command: str = "tasks_command"
    projector: str = "tasks_projector"
    query: str = "tasks_query"


def _grants(roles: Roles) -> list[str]:
    command, projector, query = (
        _ident(roles.command),
        _ident(roles.projector),
        _ident(roles.query),
    )
    return [
        f"GRANT SELECT, INSERT, UPDATE ON {EVENTS_TABLE} TO {command}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {command}",
        f"GRANT SELECT, UPDATE ON relay_position TO {command}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON tasks TO {projector}",
        f"GRANT SELECT, UPDATE ON projection_state TO {projector}",
        f"GRANT SELECT ON {EVENTS_TABLE} TO {projector}",
        f"GRANT SELECT ON tasks, projection_state, {EVENTS_TABLE} TO {query}",
        # The cursor secret (`cli.py migrate` creates it unless a setting gives one).
        "DO $$ BEGIN IF to_regclass('service_secrets') IS NOT NULL THEN "
        f"EXECUTE 'GRANT SELECT ON service_secrets TO {query}'; END IF; END $$",
    ]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def create_roles(settings: Settings, passwords: dict[str, str], roles: Roles) -> None:
    """Create (or update the passwords of) the three roles and grant each only what it needs.

    `settings.database_url` connects as the owner of the tables; `passwords` maps "command",
    "projector" and "query" to each role's password. Safe to run again.
    """
    names = {"command": roles.command, "projector": roles.projector, "query": roles.query}
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with ddl_lock(conn):
            database = await conn.fetchval("SELECT current_database()")
            for part, name in names.items():
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
                verb = "ALTER" if exists else "CREATE"
                # DDL takes no bind parameters: the password is quoted as a literal here.
                await conn.execute(
                    f"{verb} ROLE {_ident(name)} LOGIN PASSWORD {_literal(passwords[part])}"
                )
                role = _ident(name)
                await conn.execute(f"GRANT CONNECT ON DATABASE {_ident(database)} TO {role}")
                await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            for statement in _grants(roles):
                await conn.execute(statement)
            await conn.execute(
                "CREATE OR REPLACE FUNCTION tasks_events_append_only() RETURNS trigger"
                " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION"
                " 'the event store is append-only' USING ERRCODE = 'insufficient_privilege';"
                " END $$"
            )
            command = _literal(roles.command)
            await conn.execute(f"DROP TRIGGER IF EXISTS tasks_events_append_only ON {EVENTS_TABLE}")
            await conn.execute(
                f"CREATE TRIGGER tasks_events_append_only BEFORE UPDATE OR DELETE ON {EVENTS_TABLE}"
                f" FOR EACH ROW WHEN (current_user = {command})"
                " EXECUTE FUNCTION tasks_events_append_only()"
            )
    finally:
        await conn.close()


PASSWORD_VARIABLES = {
    "command": "TASKS_DB_COMMAND_PASSWORD",
    "projector": "TASKS_DB_PROJECTOR_PASSWORD",
    "query": "TASKS_DB_QUERY_PASSWORD",
}


def main() -> int:
    """`python -m shared.roles`: the roles, created as the owner in `TASKS_DATABASE_URL`, with
    the passwords in the `PASSWORD_VARIABLES`."""
    missing = [variable for variable in PASSWORD_VARIABLES.values() if not os.environ.get(variable)]
    if missing:
        print(f"error: set {', '.join(missing)}", file=sys.stderr)
        return 2
    passwords = {part: os.environ[variable] for part, variable in PASSWORD_VARIABLES.items()}
    asyncio.run(create_roles(Settings(), passwords, Roles()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
