"""Creating the database when it is missing, and serialising schema changes across processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DDL_LOCK_KEY = 7_301_124_001
"""Advisory lock held around every `CREATE`: concurrent start-ups must not race."""


def _admin_dsn(dsn: str) -> tuple[str, str]:
    url = urlsplit(dsn)
    name = url.path.lstrip("/")
    return urlunsplit(url._replace(path="/postgres")), name


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` unless it exists (safe when many start at once)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        admin_dsn, name = _admin_dsn(dsn)
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        except asyncpg.UniqueViolationError:
            pass
        finally:
            await admin.close()
    else:
        await conn.close()


@contextlib.asynccontextmanager
async def ddl_lock(conn: asyncpg.Connection) -> AsyncIterator[None]:
    await conn.execute("SELECT pg_advisory_lock($1)", DDL_LOCK_KEY)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", DDL_LOCK_KEY)


async def drop_database(dsn: str) -> None:
    admin_dsn, name = _admin_dsn(dsn)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
