"""Running an app with uvicorn (uvloop, httptools), the same way in every process.

A process that cannot start (a bad setting, PostgreSQL out of reach) says so in one line on
stderr and exits 1, before uvicorn starts; a broker that is down does not stop it (the relay
and the projector reconnect, and `/ready` says 503 meanwhile).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from pydantic_settings import SettingsError

from shared.config import Settings
from shared.database import ensure_database
from shared.failures import bad_settings, describe
from shared.logging import configure_logging


def from_environment(create_app: Callable[[Settings], FastAPI]) -> FastAPI:
    """Build an app in a (worker) process from its own `TASKS_*` environment."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def serve(factory: str, settings: Settings, port: int) -> None:
    """Serve the app that `factory` ("module:function") builds, in `settings.workers` processes.

    Every worker runs the whole app; in single-process mode each also runs a relay and a
    projector, and the advisory lock and the single active consumer keep one of each working.
    """
    configure_logging(settings.log_level)
    asyncio.run(databases_answer(settings))
    uvicorn.run(
        factory,
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        # Past this many open connections and requests, 503 instead of more memory and
        # descriptors; the gateway's per-client limits keep one client far below it.
        limit_concurrency=settings.limit_concurrency,
        # Client addresses come from `X-Forwarded-For` only when the gateway sent it.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        # Only the h11 parser has a header limit of its own; httptools leaves it to the app
        # (shared/limits.py answers 431 in the error shape).
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


async def databases_answer(settings: Settings) -> None:
    """The databases exist (created when missing) and answer, or this raises."""
    await ensure_database(settings.database_url)
    if settings.read_dsn != settings.database_url:
        await ensure_database(settings.read_dsn)


def main(service: str, factory: str, port_setting: str) -> int:
    """`python -m <service>`: serve what `factory` builds on the port the setting names, or say
    in one line why not."""
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as error:
        sys.stderr.write(f"python -m {service}: {bad_settings(error)}\n")
        return 1
    try:
        serve(factory, settings, getattr(settings, port_setting))
    except Exception as error:  # noqa: BLE001 - one line for any failure to start
        sys.stderr.write(f"python -m {service}: {describe(error, settings)}\n")
        return 1
    return 0
