"""The HTTP ceiling: one FastAPI route returning a task-sized dict, on the service's uvicorn stack.

python -m bench.trivial   # serves GET /trivial and /health on TASKS_PORT
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.config import Settings
from shared.openapi import TASK_EXAMPLE
from shared.server import serve

TASK = TASK_EXAMPLE
"""The contract's example task: what the trivial endpoint answers."""


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/trivial")
    async def trivial() -> dict[str, Any]:
        return TASK

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    settings = Settings()
    serve("bench.trivial:create_app", settings, settings.port)
