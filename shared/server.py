"""Running an app with uvicorn (uvloop, httptools), the same way in every process."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from shared.config import Settings
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
