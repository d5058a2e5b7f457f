"""A refused body is read to its end before the 413, so a proxy in front can finish sending it
and pass the 413 on (instead of failing with 502); a body far above the limit is not read."""

from __future__ import annotations

from typing import Any

import pytest

from command_service.gate import DISCARD_FACTOR, BodyGate

LIMIT = 1_000


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app behind the gate must not be reached")


def scope_for(length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/tasks",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
        ],
        "app": None,
    }


async def refuse(length: int, chunk: int = 100) -> tuple[int, int]:
    """(bytes of the body the gate read, status it answered)."""
    sent = 0
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        part = min(chunk, length - sent)
        sent += part
        return {"type": "http.request", "body": b"x" * part, "more_body": sent < length}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await BodyGate(never_called, max_bytes=LIMIT)(scope_for(length), receive, send)
    return sent, statuses[0]


@pytest.fixture(autouse=True)
def every_path_is_routed(monkeypatch: pytest.MonkeyPatch) -> None:
    """No router here: the gate's own check that a route serves the request is answered yes."""
    monkeypatch.setattr("command_service.gate._routed", lambda _scope: True)


async def test_a_declared_length_over_the_limit_is_read_to_its_end_then_refused() -> None:
    read, status = await refuse(LIMIT * 2)

    assert status == 413
    assert read == LIMIT * 2


async def test_a_body_far_above_the_limit_is_refused_without_reading_it() -> None:
    read, status = await refuse(LIMIT * (DISCARD_FACTOR + 2))

    assert status == 413
    assert read == 0
