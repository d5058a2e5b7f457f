"""Settings for every process, read once from `TASKS_*` environment variables."""

from __future__ import annotations

import json
import re
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
RESERVED_ACTORS = frozenset({"anonymous", "unknown"})
"""Actors the service itself records: no key may take these names."""

Scope = Literal["read", "write", "audit"]


class ApiKeyEntry(BaseModel):
    """A named key limited to scopes: `read` (lists and tasks), `write` (POST, PATCH, DELETE),
    `audit` (history, time travel, the event feed). Without `scopes` it may do everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)
    scopes: list[Scope] | None = Field(default=None, min_length=1)


class Settings(BaseSettings):
    """One typed settings object; build it explicitly with `Settings()` and pass it on."""

    # Validation errors never echo input: API keys are secrets.
    model_config = SettingsConfigDict(
        env_prefix="TASKS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: str = "postgresql://postgres@127.0.0.1:5432/tasks"
    read_database_url: str | None = None
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"

    exchange: str = "tasks.events"
    # The broker's replayable log of every published event (a stream bound with `#`); by default
    # the exchange's name + ".log". Retention: RabbitMQ's x-max-age (Y, M, D, h, m, s units)
    # and x-max-length-bytes, whichever is reached first.
    event_log: str | None = None
    event_log_max_age: str = Field(default="7D", pattern=r"^[1-9][0-9]{0,8}[YMDhms]$")
    event_log_max_bytes: int = Field(default=2_000_000_000, ge=1_000_000)
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
    # Each process creates what it needs (database, tables) at start. Off where the apps connect
    # as least-privilege roles that may not create anything: `cli.py migrate` does it once.
    migrate_on_start: bool = True
    # A JSON list of keys, or an object naming each (the name is the actor recorded in events):
    # {"name": "key"} or
    # {"name": {"key": "...", "scopes": ["read"]}} (shared/auth.py).
    api_keys: dict[str, str | ApiKeyEntry] | list[str] = Field(default_factory=list)
    # With keys set, plain list and by-id reads need no key (deleted tasks, history, time travel
    # and the event feed still do).
    public_reads: bool = False
    cors_origins: list[str] = Field(default_factory=list)
    log_level: str = "INFO"
    # One JSON line per request (uvicorn's own access log stays off: it is not structured).
    access_log: bool = True
    # The access line logs the path only: query strings hold search terms.
    access_log_query: bool = False
    # Peers whose `X-Forwarded-For` names the client (the gateway); nobody's by default.
    forwarded_allow_ips: str = ""
    # Uvicorn answers 503 past this many concurrent connections and requests per process.
    limit_concurrency: int = Field(default=1000, ge=1)

    write_pool_size: int = 8
    read_pool_min: int = 2
    read_pool_max: int = 10
    # List queries have a pool of their own, `list_concurrency` connections (a flood of them
    # never delays reads by id), and run under a statement timeout; a list query that waits
    # longer than `list_queue_seconds` for a connection, or runs past the timeout, is 503.
    list_concurrency: int = Field(default=2, ge=1)
    list_queue_seconds: float = 1.0
    list_statement_timeout_ms: int = Field(default=2000, ge=1)

    max_body_bytes: int = 1_048_576
    max_offset: int = 100_000
    # Signs cursors so a tampered one is refused. Unset, each deployment generates its own at
    # first start and keeps it in PostgreSQL (every replica reads the same); set, it overrides.
    cursor_secret: str | None = None
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
    # A write waits this long for its group commit, then answers 503 with Retry-After; the
    # store decides whether it happened (a retry with the same Idempotency-Key finds it).
    commit_wait_seconds: float = Field(default=10.0, gt=0)
    # A commit thread busy with one batch for longer is stuck: /ready says 503, a new one starts.
    commit_stuck_seconds: float = Field(default=30.0, gt=0)
    # Gap repair and idle catch-up read and apply the store in pages of this many positions,
    # one transaction each.
    projector_repair_page: int = Field(default=1000, ge=1)
    # Nothing delivered for this long while the store is ahead and nobody advances the
    # projection: the projector catches up from the store (a lost last message is applied).
    projector_idle_seconds: float = Field(default=1.0, gt=0)
    # A relay or projector behind the store and not advancing for longer: /ready says 503.
    stall_seconds: float = Field(default=30.0, gt=0)
    # `?as_of` answers are cached `immutable` only for a moment at least this far in the past
    # (an event's time is taken before its commit, which may wait behind the append lock).
    as_of_settled_seconds: float = Field(default=60.0, ge=0)
    # How often the projector checks whether the read table needs VACUUM / ANALYZE, which it
    # runs itself only when the server's autovacuum is off (projector/maintenance.py); 0: never.
    read_vacuum_seconds: float = Field(default=15.0, ge=0)
    # Processes that fold the store in `rebuild` (one range of task ids each); 1 folds in-process.
    rebuild_workers: int = Field(default=2, ge=1, le=64)

    @field_validator("api_keys")
    @classmethod
    def _key_names(
        cls, value: dict[str, str | ApiKeyEntry] | list[str]
    ) -> dict[str, str | ApiKeyEntry] | list[str]:
        entries = list(value.values()) if isinstance(value, dict) else value
        keys = [entry if isinstance(entry, str) else entry.key for entry in entries]
        if any(not key for key in keys) or len(set(keys)) != len(keys):
            raise ValueError("API keys must be non-empty and distinct")
        for name in value if isinstance(value, dict) else ():
            if not KEY_NAME.fullmatch(name) or name in RESERVED_ACTORS:
                raise ValueError(
                    f"API key name {name[:100]!r}: 1 to 100 letters, digits, '.', '_', '-' or "
                    f"'@', and not {' or '.join(sorted(RESERVED_ACTORS))}"
                )
        return value

    @property
    def event_log_stream(self) -> str:
        """The stream's name: `event_log`, or the exchange's name + `.log`."""
        return self.event_log or f"{self.exchange}.log"

    @property
    def read_dsn(self) -> str:
        return self.read_database_url or self.database_url

    def as_environment(self) -> dict[str, str]:
        """These settings as the `TASKS_*` variables a child process reads them from."""
        return {
            f"TASKS_{name.upper()}": json.dumps(value)
            if isinstance(value, (list, dict))
            else str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def eventsourcing_env(self) -> dict[str, str]:
        """The library's `POSTGRES_*` environment, derived from `database_url`.

        Whatever the process environment holds: the library reads `TASKS_POSTGRES_*` (its
        application's name) before `POSTGRES_*`, so both are given. Its database functions stay
        off: their append takes no table lock, and the relay and the projector rely on positions
        committing in order.

        No pre-ping: checking each connection costs a round trip per checkout, and its pool
        backs off for seconds between failed checks, so one thread (the group commit) meeting a
        pool of connections a database restart has broken would stall. A broken connection fails
        its statement instead; the library retries (10 times, 0.2 s apart) on the next one, and
        the pool replaces each broken connection as it comes back. No overflow either, so the
        pool never holds more connections than that retry can get through (with
        `write_pool_size` above 9, a restart may answer some writes 503, to be retried).
        """
        url = urlsplit(self.database_url)
        derived = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": str(self.write_pool_size),
            "POSTGRES_MAX_OVERFLOW": "0",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_PRE_PING": "n",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
        pinned = {f"TASKS_{key}": value for key, value in derived.items()}
        return {**derived, **pinned}
