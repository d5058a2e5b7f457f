"""A read of the store that loses its connection is asked again; any other error is not."""

from __future__ import annotations

import asyncpg
import pytest

from shared.database import retried


class Flaky:
    """Fails with `error` the first `failures` times it is called, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "rows"


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionRefusedError(),
    ],
)
async def test_a_lost_connection_is_retried_until_the_read_answers(error: Exception) -> None:
    read = Flaky(3, error)

    assert await retried(read, attempts=4, wait=0) == "rows"
    assert read.calls == 4


async def test_after_the_last_attempt_the_error_stands() -> None:
    read = Flaky(5, asyncpg.CannotConnectNowError("the database system is starting up"))

    with pytest.raises(asyncpg.CannotConnectNowError):
        await retried(read, attempts=3, wait=0)
    assert read.calls == 3


async def test_an_error_of_the_statement_itself_is_not_retried() -> None:
    read = Flaky(1, asyncpg.UndefinedTableError("relation does not exist"))

    with pytest.raises(asyncpg.UndefinedTableError):
        await retried(read, attempts=3, wait=0)
    assert read.calls == 1
