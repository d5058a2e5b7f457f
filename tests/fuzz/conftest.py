"""One real single-process server for the whole fuzzing module, on a database of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from shared.config import Settings
from tests.conftest import _cleanup, _with_database
from tests.helpers import Process, running

FUZZ_KEY = "fuzz-key"


@pytest.fixture(scope="module")
def fuzz_settings(service_urls: tuple[str, str]) -> Iterator[Settings]:
    """As the `settings` fixture, but shared by every fuzzed operation: starting a server per
    operation would cost more than the fuzzing itself."""
    db_url, amqp_url = service_urls
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        database_url=_with_database(db_url, f"tasks_test_{suffix}"),
        amqp_url=amqp_url,
        exchange=f"test.{suffix}.events",
        projector_queue=f"test.{suffix}.projector",
        dead_letter_queue=f"test.{suffix}.projector.dlq",
        relay_poll_seconds=0.2,
        access_log=False,
        api_keys=[FUZZ_KEY],
    )
    yield settings
    asyncio.run(_cleanup(settings))


@pytest.fixture(scope="module")
def api(fuzz_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """`cli.py serve`: the whole API (`composition.create_app`) over real HTTP (uvicorn)."""
    logs = tmp_path_factory.mktemp("fuzz")
    with running(fuzz_settings, logs, ["cli.py", "serve"], "port", "api") as server:
        yield server
