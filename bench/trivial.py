"""The HTTP ceiling: one FastAPI route returning a task-sized dict, on the service's uvicorn stack.

python -m bench.trivial   # serves GET /trivial and /health on TASKS_PORT
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from shared.config import Settings
from shared.server import serve

TASK: dict[str, Any] = {
    "id": "9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11",
    "title": "Write the quarterly report",
    "description": "Numbers from finance first",
    "priority": 4,
    "due_date": "2026-12-15",
    "tags": ["work", "urgent"],
    "completed": False,
    "completed_at": None,
    "deleted": False,
    "deleted_at": None,
    "created_at": "2026-11-26T09:30:00.123456Z",
    "updated_at": "2026-11-26T09:30:00.123456Z",
    "version": 1,
}


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
