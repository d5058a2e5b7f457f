"""Settings for every process, read once from `TASKS_*` environment variables."""

from __future__ import annotations

import json
from urllib.parse import unquote, urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One typed settings object; build it explicitly with `Settings()` and pass it on."""

    model_config = SettingsConfigDict(env_prefix="TASKS_", extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/tasks"
    read_database_url: str | None = None
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"

    exchange: str = "tasks.events"
    projector_queue: str = "tasks.projector"
    dead_letter_queue: str = "tasks.projector.dlq"

    host: str = "127.0.0.1"
    # HTTP worker processes per service (uvicorn workers); 1 keeps the single-process mode one
    # process. On two cores, 2 lets the API use both while PostgreSQL and RabbitMQ idle.
    workers: int = 1
    port: int = 8000
    command_port: int = 8001
    query_port: int = 8002
    projector_port: int = 8003
    relay_port: int = 8004

    run_relay: bool = True
    api_keys: list[str] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)
    log_level: str = "INFO"
    # One JSON line per request (uvicorn's own access log stays off: it is not structured).
    access_log: bool = True

    write_pool_size: int = 8
    read_pool_min: int = 2
    read_pool_max: int = 10

    max_body_bytes: int = 1_048_576
    max_offset: int = 100_000
    # Signs cursors so a tampered one is refused; cursors only hold sort keys, not secrets.
    cursor_secret: str = "tasks-cursor"  # noqa: S105
    # The app's own limits (shared/limits.py): a longer query string is 414, more header bytes
    # (names and values) 431, a request body still incomplete after the timeout 408.
    max_query_length: int = 8192
    max_header_bytes: int = 16_384
    body_read_timeout_seconds: float = 30.0
    # An idle keep-alive connection is closed after this long (longer than the gateway's 20 s).
    keep_alive_timeout_seconds: int = 30
    min_position_wait_seconds: float = 5.0

    relay_batch_size: int = 500
    relay_poll_seconds: float = 1.0
    projector_prefetch: int = 1000
    projector_batch_size: int = 500
    group_commit_max: int = 100
    # How often the projector checks whether the read table needs VACUUM / ANALYZE, which it
    # runs itself only when the server's autovacuum is off (projector/maintenance.py); 0: never.
    read_vacuum_seconds: float = Field(default=15.0, ge=0)
    # Processes that fold the store in `rebuild` (one range of task ids each); 1 folds in-process.
    rebuild_workers: int = Field(default=2, ge=1, le=64)

    @property
    def read_dsn(self) -> str:
        return self.read_database_url or self.database_url

    def as_environment(self) -> dict[str, str]:
        """These settings as the `TASKS_*` variables a child process reads them from."""
        return {
            f"TASKS_{name.upper()}": json.dumps(value) if isinstance(value, list) else str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def eventsourcing_env(self) -> dict[str, str]:
        """The library's `POSTGRES_*` environment, derived from `database_url`."""
        url = urlsplit(self.database_url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": str(self.write_pool_size),
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_PRE_PING": "y",
        }
