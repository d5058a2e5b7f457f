"""The HTTP event feed: the wire's CloudEvents from the store, in position order, filtered and
paged by position, with `Link: rel="next"`; it needs a key when keys are set."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from composition import create_app
from shared.config import Settings
from shared.domain import format_timestamp
from tests.asyncapi import validate_event
from tests.helpers import JSON, BoundConsumer, serving

FEED = "/api/v1/events"


async def write_some_history(client: httpx.AsyncClient) -> list[str]:
    """Three tasks: one created only, one updated twice, one deleted. Returns their ids."""
    ids = []
    for number in range(3):
        created = await client.post(
            "/api/v1/tasks",
            json={"title": f"Task {number}", "tags": ["feed"]},
            headers={**JSON, "X-Request-ID": f"create-{number}"},
        )
        assert created.status_code == 201
        ids.append(created.json()["id"])
    second = f"/api/v1/tasks/{ids[1]}"
    assert (await client.patch(second, json={"priority": 5}, headers=JSON)).status_code == 200
    patched = await client.patch(
        second, json={"completed": True}, headers={**JSON, "X-Request-ID": "complete-1"}
    )
    assert patched.status_code == 200
    assert (await client.delete(f"/api/v1/tasks/{ids[2]}")).status_code == 204
    return ids


def next_link(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    return match.group(1)


async def walk(client: httpx.AsyncClient, url: str) -> tuple[list[dict[str, Any]], int]:
    """Every page from `url` on, following Link; the events and the number of pages."""
    events: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        page = await client.get(next_url)
        assert page.status_code == 200, page.text
        events.extend(page.json())
        pages += 1
        next_url = next_link(page)
    return events, pages


async def test_the_feed_serves_the_same_ids_and_bodies_as_the_wire_in_position_order(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async with BoundConsumer(settings) as consumer:
        await write_some_history(client)
        wire = await consumer.wait_for(6)

    feed = await client.get(FEED)

    assert feed.status_code == 200
    assert feed.headers["content-type"] == "application/cloudevents-batch+json"
    assert "link" not in feed.headers
    events = feed.json()
    by_id = {body["id"]: body for body in wire}
    assert events == [by_id[event["id"]] for event in events]
    assert len(events) == len(by_id) == 6
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    for event in events:
        validate_event(event)


async def test_the_feed_pages_by_position_and_links_each_page_to_the_next(
    client: httpx.AsyncClient,
) -> None:
    await write_some_history(client)
    everything = (await client.get(FEED)).json()

    first = await client.get(FEED, params={"limit": "2"})
    paged, pages = await walk(client, f"{FEED}?limit=2")
    from_middle = (await client.get(FEED, params={"after": everything[2]["position"]})).json()
    beyond = await client.get(FEED, params={"after": everything[-1]["position"]})

    assert len(first.json()) == 2
    assert next_link(first) == f"{FEED}?after={everything[1]['position']}&limit=2"
    assert paged == everything
    assert pages == 3
    assert from_middle == everything[3:]
    assert beyond.status_code == 200
    assert beyond.json() == []
    assert "link" not in beyond.headers


async def test_the_feed_filters_by_task_type_correlation_id_and_time(
    client: httpx.AsyncClient,
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = await write_some_history(client)
    everything = (await client.get(FEED)).json()
    update_time = next(e["time"] for e in everything if e["type"] == "task.updated")

    one_task = (await client.get(FEED, params={"task_id": ids[1]})).json()
    updates = (await client.get(FEED, params={"type": "task.updated"})).json()
    csv = (await client.get(FEED, params={"type": "task.updated,task.soft_deleted"})).json()
    repeated = (
        await client.get(FEED, params=[("type", "task.updated"), ("type", "task.soft_deleted")])
    ).json()
    request = (await client.get(FEED, params={"correlation_id": "complete-1"})).json()
    since = (await client.get(FEED, params={"since": update_time})).json()
    until = (await client.get(FEED, params={"until": update_time})).json()
    window = (
        await client.get(FEED, params={"since": format_timestamp(before), "until": update_time})
    ).json()
    combined = await client.get(
        FEED, params={"task_id": ids[1], "type": "task.updated", "limit": 1}
    )

    assert [e["sequence"][-1] for e in one_task] == ["1", "2", "3"]
    assert {e["subject"] for e in one_task} == {ids[1]}
    assert [e["type"] for e in updates] == ["task.updated", "task.updated"]
    assert csv == repeated == [e for e in everything if e["type"] != "task.created"]
    assert [(e["subject"], e["data"]["changes"]["completed"]) for e in request] == [(ids[1], True)]
    assert since == [e for e in everything if e["time"] >= update_time]
    assert until == [e for e in everything if e["time"] < update_time]
    assert window == until
    assert [e["data"]["changes"] for e in combined.json()] == [{"priority": 5}]
    link = next_link(combined)
    assert link is not None
    assert f"task_id={ids[1]}" in link
    assert "type=task.updated" in link
    following = (await client.get(link)).json()
    assert [e["data"]["changes"]["completed"] for e in following] == [True]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=-1", "after"),
        ("after=1&after=2", "after"),
        ("type=task.renamed", "type"),
        ("type=task.updated,", "type"),
        ("task_id=nope", "task_id"),
        ("since=2026-01-01T00:00:00", "since"),
        ("until=yesterday", "until"),
        ("actor=", "actor"),
        ("correlation_id=%01", "correlation_id"),
        ("cursor=abc", "cursor"),
    ],
)
async def test_an_invalid_feed_parameter_is_422_naming_it(
    client: httpx.AsyncClient, query: str, parameter: str
) -> None:
    response = await client.get(f"{FEED}?{query}")

    assert response.status_code == 422
    assert response.json()["error"] == "Validation failed"
    assert list(response.json()["details"]) == [parameter]


async def test_a_selective_filter_reads_a_bounded_window_and_links_past_it(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from query_service import events

    monkeypatch.setattr(events, "SCAN_ROWS", 3)
    ids = await write_some_history(client)

    walked, pages = await walk(client, f"{FEED}?type=task.soft_deleted")

    assert [e["subject"] for e in walked] == [ids[2]]
    assert pages == 3  # positions 1-3, 4-6 (the deletion at 6), then nothing at the head


async def test_the_feed_needs_a_key_when_keys_are_set(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys={"auditor": "audit-key"})
    async with serving(create_app(settings)) as client:
        missing = await client.get(FEED)
        wrong = await client.get(FEED, headers={"Authorization": "Bearer nope"})
        allowed = await client.get(FEED, headers={"Authorization": "Bearer audit-key"})
        history = await client.get(f"/api/v1/tasks/{'0' * 8}-0000-0000-0000-{'0' * 12}/history")

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert allowed.status_code == 200
    assert allowed.json() == []
    assert history.status_code == 401


async def test_a_feed_consumer_polling_at_the_head_sees_new_events_after_its_position(
    client: httpx.AsyncClient,
) -> None:
    await write_some_history(client)
    head = (await client.get(FEED)).json()[-1]["position"]

    created = await client.post("/api/v1/tasks", json={"title": "Later"}, headers=JSON)
    newer = (await client.get(FEED, params={"after": head})).json()

    assert [e["subject"] for e in newer] == [created.json()["id"]]
    assert newer[0]["position"] == int(created.headers["x-event-position"])
