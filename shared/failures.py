"""What an operator's command says when it fails: one line naming what to check.

A command (`cli.py migrate`, `rebuild`, `verify`, `replay`, `serve`...) that cannot reach
PostgreSQL or RabbitMQ, or is given a bad setting, prints one line on stderr and exits non-zero;
the traceback is for `--debug`. Which service failed is read from the exception and the frames
it passed through (asyncpg and psycopg are PostgreSQL; aio-pika, aiormq and pamqp are RabbitMQ),
so every command is covered without wrapping each connection it opens. A line never shows a
password: addresses are printed as host:port/name.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from pathlib import PurePath
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import SettingsError

from shared.config import Settings


class OperatorError(Exception):
    """A failure whose message is already the line to show (a precondition, not a bug)."""


_LIBRARIES = {
    "PostgreSQL": {"asyncpg", "psycopg", "psycopg_pool", "eventsourcing"},
    "RabbitMQ": {"aio_pika", "aiormq", "pamqp"},
}
_SECRET_SETTINGS = ("url", "key", "secret", "password")


def bad_settings(error: ValidationError | SettingsError) -> str:
    """`TASKS_REBUILD_WORKERS=0: Input should be greater than or equal to 1`, one per error."""
    if isinstance(error, SettingsError):  # a list setting that is not JSON
        field = re.search(r'field "(\w+)"', str(error))
        name = f"TASKS_{field.group(1).upper()}" if field else "a TASKS_* list setting"
        return f'bad setting {name}: not a JSON list (write it as ["a", "b"])'
    parts = []
    for item in error.errors():
        name = f"TASKS_{str(item['loc'][0]).upper()}" if item["loc"] else "TASKS_*"
        secret = any(word in name.lower() for word in _SECRET_SETTINGS)
        given = "" if secret or "input" not in item else f"={item['input']}"
        parts.append(f"{name}{given}: {item['msg']}")
    return "bad setting " + "; ".join(parts)


def describe(error: BaseException, settings: Settings) -> str:
    """The one line for a failed command: the service, its address and setting, the reason."""
    if isinstance(error, OperatorError):
        return str(error)
    reason = _reason(error)
    service = _service(error)
    if service == "PostgreSQL":
        where = f"TASKS_DATABASE_URL ({_address(settings.database_url)})"
        if settings.read_database_url and settings.read_database_url != settings.database_url:
            where += f" or TASKS_READ_DATABASE_URL ({_address(settings.read_database_url)})"
        hint = "is PostgreSQL running there, and do the database and its tables exist"
        if "does not exist" in reason and "relation" in reason:
            hint = "run `python cli.py migrate` first"
        return f"PostgreSQL failed: {reason}; check {where}: {hint}"
    if service == "RabbitMQ":
        where = f"TASKS_AMQP_URL ({_address(settings.amqp_url)})"
        return f"RabbitMQ failed: {reason}; check {where}: is RabbitMQ running there"
    return f"unexpected error: {reason} (run with --debug for the traceback)"


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _service(error: BaseException) -> str | None:
    for link in _chain(error):
        modules = {type(link).__module__.split(".")[0]}
        for frame in traceback.extract_tb(link.__traceback__):
            modules.update(PurePath(frame.filename).parts)
        for service, libraries in _LIBRARIES.items():
            if modules & libraries:
                return service
    return None


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


def _address(url: str) -> str:
    """host:port/name of a URL, without its user or password."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or '?'}:{parts.port or 'default port'}{parts.path or ''}"
    except ValueError:
        return "unparsable URL"
