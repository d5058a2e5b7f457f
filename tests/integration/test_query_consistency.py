"""Read-your-writes: X-Projection-Position on every read, X-Min-Position waits or answers 503,
a position never issued is 422, and a read by id needs no position at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.datastructures import State

from composition import create_command_app, create_query_app, projector_resource
from projector.projection import migrate_read_model
from shared.config import Settings
from tests.helpers import JSON, serving

UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def test_a_hundred_writes_are_each_read_back_at_once_with_x_min_position(
    client: httpx.AsyncClient,
) -> None:
    task_id = (await client.post("/api/v1/tasks", json={"title": "t0"}, headers=JSON)).json()["id"]
    misses = []

    for n in range(100):
        if n % 2:
            write = await client.post("/api/v1/tasks", json={"title": f"t{n}"}, headers=JSON)
            task_id = write.json()["id"]
        else:
            write = await client.patch(
                f"/api/v1/tasks/{task_id}", json={"title": f"t{n}"}, headers=JSON
            )
        position = write.headers["x-event-position"]
        if n % 4 < 2:
            read = await client.get(
                f"/api/v1/tasks/{task_id}", headers={"X-Min-Position": position}
            )
            seen = read.json() if read.status_code == 200 else None
        else:
            read = await client.get("/api/v1/tasks", params={"min_position": position, "limit": 1})
            seen = read.json()["items"][0] if read.status_code == 200 else None
        if seen != write.json() or int(read.headers["x-projection-position"]) < int(position):
            misses.append((n, read.status_code, read.headers.get("x-projection-position")))

    assert misses == []


@contextlib.asynccontextmanager
async def split_without_projector(
    make_settings: Callable[..., Settings], wait: float
) -> AsyncIterator[tuple[Settings, httpx.AsyncClient, httpx.AsyncClient]]:
    """The command service (with relay) and the query service, and no projector running."""
    settings = make_settings(min_position_wait_seconds=wait)
    async with (
        serving(create_command_app(settings)) as writes,
        serving(create_query_app(settings)) as reads,
    ):
        yield settings, writes, reads


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"] == "Service unavailable"
    assert isinstance(answer.json()["details"], str)
    assert "x-projection-position" in answer.headers


async def test_a_read_told_to_wait_for_a_stopped_projector_answers_503_and_once_it_runs_200(
    make_settings: Callable[..., Settings],
) -> None:
    async with split_without_projector(make_settings, wait=1.0) as (settings, writes, reads):
        await migrate_read_model(settings)
        write = await writes.post("/api/v1/tasks", json={"title": "x"}, headers=JSON)
        position = write.headers["x-event-position"]
        task_id = write.json()["id"]

        stale = await reads.get(f"/api/v1/tasks/{task_id}", headers={"X-Min-Position": position})
        stale_list = await reads.get("/api/v1/tasks", params={"min_position": position})
        without = await reads.get(f"/api/v1/tasks/{task_id}")

        assert_unavailable(stale)
        assert_unavailable(stale_list)
        assert stale.headers["x-projection-position"] == "0"
        # Asked for nothing, a read by id answers from the store what the read table lacks.
        assert without.status_code == 200
        assert without.json() == write.json()
        assert without.headers["etag"] == '"1"'
        assert without.headers["x-projection-position"] == "0"

        async with projector_resource(settings).open(State()):
            fresh = await reads.get(
                f"/api/v1/tasks/{task_id}", headers={"X-Min-Position": position}
            )

        assert fresh.status_code == 200
        assert fresh.json() == write.json()
        assert int(fresh.headers["x-projection-position"]) >= int(position)


async def test_a_position_beyond_the_store_is_422_at_once_naming_where_it_came_from(
    make_settings: Callable[..., Settings],
) -> None:
    # A bound far beyond the test's own timeout: only an immediate answer passes.
    async with split_without_projector(make_settings, wait=3600) as (settings, writes, reads):
        await migrate_read_model(settings)
        await writes.post("/api/v1/tasks", json={"title": "x"}, headers=JSON)
        beyond = "1000000"

        cookie = {"Cookie": f"tasks_position={beyond}"}

        answers = await asyncio.wait_for(
            asyncio.gather(
                reads.get("/api/v1/tasks", headers={"X-Min-Position": beyond}),
                reads.get("/api/v1/tasks", params={"min_position": beyond}),
                reads.get("/api/v1/tasks", headers=cookie),
                reads.get(
                    "/api/v1/tasks",
                    params={"min_position": beyond},
                    headers={"X-Min-Position": "0"},
                ),
                reads.get(
                    "/api/v1/tasks",
                    params={"min_position": "0"},
                    headers={"X-Min-Position": beyond, **cookie},
                ),
                reads.get(f"/api/v1/tasks/{UNKNOWN}", params={"min_position": beyond}),
                reads.get(f"/api/v1/tasks/{UNKNOWN}", headers={"X-Min-Position": beyond}),
            ),
            timeout=60,
        )
        reached = await reads.get("/api/v1/tasks", params={"min_position": "0"})

        named = [
            ["X-Min-Position"],
            ["min_position"],
            ["tasks_position"],
            ["min_position"],
            ["X-Min-Position", "tasks_position"],
            ["min_position"],
            ["X-Min-Position"],
        ]
        for answer, keys in zip(answers, named, strict=True):
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"] == "Validation failed"
            assert sorted(answer.json()["details"]) == keys
            assert "retry-after" not in answer.headers
            assert "x-projection-position" in answer.headers
        assert reached.status_code == 200


async def test_a_bad_minimum_position_is_refused_naming_where_it_came_from(
    client: httpx.AsyncClient,
) -> None:
    cases = [
        ({"X-Min-Position": "-1"}, {}, "X-Min-Position"),
        ({"X-Min-Position": "abc"}, {}, "X-Min-Position"),
        ({"X-Min-Position": "1.0"}, {}, "X-Min-Position"),
        # SUPERSCRIPT TWO: str.isdigit() says yes, int() says no.
        ({"X-Min-Position": "²".encode("latin-1")}, {}, "X-Min-Position"),
        ({}, {"min_position": "x"}, "min_position"),
        ({}, {"min_position": ""}, "min_position"),
    ]

    answers = []
    for headers, params, _ in cases:
        for path in ("/api/v1/tasks", f"/api/v1/tasks/{UNKNOWN}"):
            answers.append(await client.get(path, headers=headers, params=params))

    for (_, _, key), pair in zip(cases, zip(answers[::2], answers[1::2], strict=True), strict=True):
        for answer in pair:
            assert answer.status_code == 422, answer.text
            assert list(answer.json()["details"]) == [key]
            assert "x-projection-position" in answer.headers
