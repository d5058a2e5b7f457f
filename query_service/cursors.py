"""Signed keyset cursors: the last row's sort keys and the walk (filter and sort) they continue.

A cursor is `base64url(signature + JSON)`; the JSON is `{"v": [keys..., id], "p": [[name, value],
...]}`, the list parameters that define the walk, exactly as the client gave them; a sort key is
written as JSON holds it (dates and moments in ISO 8601). Whatever a cursor decodes to, only that
shape passes, and each sort key is read back strictly as the kind its sort key holds. The
signing secret is generated at the first start and kept in PostgreSQL, so every replica signs
and checks with the same one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from shared import fields, text
from shared.config import Settings
from shared.database import ddl_lock, ensure_database
from shared.errors import ValidationFailed

SIGNATURE_BYTES = 12
CURSOR_KEY = "cursor"
SECRETS_TABLE = """
CREATE TABLE IF NOT EXISTS service_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
)
"""


def invalid(reason: str = "Invalid, tampered, or from another filter or sort") -> ValidationFailed:
    return ValidationFailed({"cursor": reason})


def encode_cursor(values: list[Any], walk: list[tuple[str, str]], secret: bytes) -> str:
    payload = orjson.dumps({"v": values, "p": [list(pair) for pair in walk]})
    signature = hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(signature + payload).decode().rstrip("=")


def decode_cursor(cursor: str, secret: bytes) -> tuple[list[Any], list[tuple[str, str]]]:
    """The sort keys and the walk of a cursor this deployment signed; 422 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, binascii.Error):
        raise invalid() from None
    signature, payload = raw[:SIGNATURE_BYTES], raw[SIGNATURE_BYTES:]
    expected = hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    if len(signature) < SIGNATURE_BYTES or not hmac.compare_digest(signature, expected):
        raise invalid()
    # Signed, so ours unless the secret leaked; still checked as if it were anybody's.
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise invalid() from None
    if not isinstance(data, dict) or set(data) != {"v", "p"}:
        raise invalid()
    values, walk = data["v"], data["p"]
    if not isinstance(values, list) or not values or not isinstance(walk, list):
        raise invalid()
    pairs: list[tuple[str, str]] = []
    for pair in walk:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(part, str) for part in pair)
        ):
            raise invalid()
        pairs.append((pair[0], pair[1]))
    return values, pairs


def cursor_values(names: list[str], row: Any) -> list[Any]:
    """The row's sort keys (the statement's `k_<name>` columns) and its id, as a cursor holds
    them."""
    values: list[Any] = []
    for name in names:
        value = row[f"k_{name}"]
        if isinstance(value, (datetime, date)):
            value = value.isoformat()
        values.append(value)
    values.append(str(row["id"]))
    return values


Reader = Callable[[Any], Any]
"""A cursor's value of one kind of sort key, read back as its column's type; ValueError for
anything else."""
# What `datetime.isoformat` writes of a timestamptz: always an offset, never `Z`.
_MOMENT = re.compile(fields.DATE.pattern + r"T[0-9:.]{8,15}[+-][0-9]{2}:[0-9]{2}")


def read_moment(raw: Any) -> datetime:
    if not isinstance(raw, str) or not _MOMENT.fullmatch(raw):
        raise ValueError
    return datetime.fromisoformat(raw)


def read_date(raw: Any) -> date:
    if not isinstance(raw, str) or not fields.DATE.fullmatch(raw):
        raise ValueError
    return date.fromisoformat(raw)


def read_priority(raw: Any) -> int:
    if type(raw) is not int or not fields.MIN_PRIORITY <= raw <= fields.MAX_PRIORITY:
        raise ValueError
    return raw


def read_title(raw: Any) -> str:
    if not isinstance(raw, str) or text.FORBIDDEN.search(raw):
        raise ValueError
    return raw


def read_rank(raw: Any) -> float:
    if type(raw) not in (int, float) or not math.isfinite(raw):
        raise ValueError
    return float(raw)


def read_keys(values: list[Any], readers: list[tuple[Reader, bool]]) -> list[Any]:
    """A cursor's sort keys, each read by its (reader, nullable), then the row's id; 422 for
    any other shape."""
    if len(values) != len(readers) + 1:
        raise invalid()
    keys: list[Any] = []
    try:
        for (read, nullable), raw in zip(readers, values, strict=False):
            keys.append(None if raw is None and nullable else read(raw))
    except ValueError:
        raise invalid() from None
    last = values[-1]
    if not isinstance(last, str) or not fields.WRITTEN_ID.fullmatch(last):
        raise invalid()
    return [*keys, UUID(last)]


async def load_secret(settings: Settings, create: bool | None = None) -> bytes:
    """The cursor signing secret: the setting when given, else the deployment's own, created
    by whichever process starts first (or by `cli.py migrate` where the apps may not create
    anything: `migrate_on_start` off) and read by all the others."""
    if settings.cursor_secret:
        return settings.cursor_secret.encode()
    if settings.migrate_on_start if create is None else create:
        await ensure_database(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        if settings.migrate_on_start if create is None else create:
            async with ddl_lock(conn):
                await conn.execute(SECRETS_TABLE)
                await conn.execute(
                    "INSERT INTO service_secrets (name, value) VALUES ($1, $2) "
                    "ON CONFLICT (name) DO NOTHING",
                    CURSOR_KEY,
                    secrets.token_bytes(32),
                )
        value = await conn.fetchval("SELECT value FROM service_secrets WHERE name = $1", CURSOR_KEY)
    finally:
        await conn.close()
    return bytes(value)
