"""Running an app with uvicorn (uvloop, httptools), the same way in every process."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from shared.config import Settings
from shared.logging import configure_logging


def serve(app: FastAPI, settings: Settings, port: int) -> None:
    configure_logging(settings.log_level)
    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        # Only the h11 parser has a header limit of its own; httptools leaves it to the app
        # (shared/limits.py answers 431 in the error shape).
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
