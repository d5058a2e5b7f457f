"""What a client of the list sees: next and prev links, a cursor that continues its walk alone,
stemmed and prefix search with a relevance order, a title order that ignores case and accents,
deleted tasks by id on request, and cursors that are never a 5xx whatever they hold."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import orjson
import pytest

from composition import create_app
from query_service.cursors import SIGNATURE_BYTES, encode_cursor
from query_service.queries import parse_list_query
from shared.config import Settings
from tests.helpers import JSON, eventually, serving

LIST = "/api/v1/tasks"


async def create(client: httpx.AsyncClient, title: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(LIST, json={"title": title, **fields}, headers=JSON)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def settled(client: httpx.AsyncClient, count: int, params: str = "") -> None:
    """Wait until the read model lists `count` tasks (the projector runs in this process)."""

    async def listed() -> bool:
        answer = await client.get(f"{LIST}?include_deleted=true&limit=1{params}")
        return bool(answer.json()["total"] == count)

    await eventually(listed)


@pytest.fixture
async def tasks(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    titles = [
        ("Write the quarterly report", "Numbers from finance first"),
        ("Reports for the board", None),
        ("Financial summary", "quarterly"),
        ("Holiday plans", "book the flights"),
        ("apple", None),
        ("Apple", None),
        ("Zebra crossing", None),
        ("éclair", None),
        ("Eclair", None),
        ("banana", "report"),
    ]
    made = [
        await create(client, title, description=description, priority=1 + i % 5)
        for i, (title, description) in enumerate(titles)
    ]
    await settled(client, len(made))
    return made


def titles(body: dict[str, Any]) -> list[str]:
    return [item["title"] for item in body["items"]]


async def test_every_page_links_to_the_next_and_an_offset_page_to_the_previous(
    client: httpx.AsyncClient, tasks: list[dict[str, Any]]
) -> None:
    first = await client.get(LIST, params={"priority_max": "4", "sort": "title", "limit": "3"})
    middle = await client.get(
        LIST, params={"priority_max": "4", "sort": "title", "limit": "3", "offset": "3"}
    )
    last = await client.get(
        LIST, params={"priority_max": "4", "sort": "title", "limit": "3", "offset": "6"}
    )

    assert first.status_code == middle.status_code == last.status_code == 200
    body = first.json()
    assert body["total"] == 8
    assert first.links["next"]["url"] == body["next"]
    assert "prev" not in first.links
    assert parse_qs(urlsplit(body["next"]).query) == {
        "cursor": [body["next_cursor"]],
        "limit": ["3"],
    }
    assert middle.links["next"]["url"] == middle.json()["next"]
    prev = parse_qs(urlsplit(middle.links["prev"]["url"]).query)
    assert prev == {"priority_max": ["4"], "sort": ["title"], "offset": ["0"], "limit": ["3"]}
    assert last.json()["next"] is None
    assert "next" not in last.links
    assert parse_qs(urlsplit(last.links["prev"]["url"]).query)["offset"] == ["3"]


async def test_following_next_links_alone_walks_a_filtered_sorted_list_to_its_end(
    client: httpx.AsyncClient, tasks: list[dict[str, Any]]
) -> None:
    everything = await client.get(LIST, params={"priority_max": "4", "sort": "-title,priority"})
    walked: list[str] = []
    url: str | None = f"{LIST}?priority_max=4&sort=-title,priority&limit=3"

    pages = 0
    while url is not None:
        page = await client.get(url)
        assert page.status_code == 200, page.text
        walked += [item["id"] for item in page.json()["items"]]
        url = page.json()["next"]
        pages += 1

    assert pages == 3
    assert walked == [item["id"] for item in everything.json()["items"]]
    assert len(walked) == 8


async def test_a_cursor_given_with_another_filter_or_sort_is_a_422(
    client: httpx.AsyncClient, tasks: list[dict[str, Any]]
) -> None:
    first = await client.get(LIST, params={"priority_max": "4", "sort": "title", "limit": "2"})
    cursor = first.json()["next_cursor"]

    same = await client.get(
        LIST, params={"sort": "title", "priority_max": "4", "cursor": cursor, "limit": "5"}
    )
    other_filter = await client.get(LIST, params={"priority_max": "3", "cursor": cursor})
    other_sort = await client.get(
        LIST, params={"priority_max": "4", "sort": "-title", "cursor": cursor}
    )

    assert same.status_code == 200
    assert same.json()["offset"] is None
    for answer in (other_filter, other_sort):
        assert answer.status_code == 422
        assert list(answer.json()["details"]) == ["cursor"]


async def test_search_stems_words_matches_the_last_word_as_a_prefix_and_ranks(
    client: httpx.AsyncClient, tasks: list[dict[str, Any]]
) -> None:
    reports = await client.get(LIST, params={"q": "reports", "sort": "title"})
    prefix = await client.get(LIST, params={"q": "financ", "sort": "title"})
    phrase = await client.get(LIST, params={"q": '"quarterly reports"'})
    partial = await client.get(LIST, params={"q": "quarterl"})
    excluded = await client.get(LIST, params={"q": "report -board", "sort": "title"})
    grouped = await client.get(LIST, params={"q": "holiday or zebr", "sort": "title"})
    stop_words = await client.get(LIST, params={"q": "the"})
    ranked = await client.get(LIST, params={"q": "quarterly report", "sort": "relevance"})
    unranked = await client.get(LIST, params={"sort": "relevance"})

    assert titles(reports.json()) == [
        "banana",
        "Reports for the board",
        "Write the quarterly report",
    ]
    assert titles(prefix.json()) == ["Financial summary", "Write the quarterly report"]
    assert titles(phrase.json()) == ["Write the quarterly report"]
    assert set(titles(partial.json())) == {"Financial summary", "Write the quarterly report"}
    assert titles(excluded.json()) == ["banana", "Write the quarterly report"]
    assert titles(grouped.json()) == ["Holiday plans", "Zebra crossing"]
    assert set(titles(stop_words.json())) == {
        "Write the quarterly report",
        "Reports for the board",
        "Holiday plans",
    }
    assert titles(ranked.json()) == ["Write the quarterly report"]
    assert unranked.status_code == 422
    assert list(unranked.json()["details"]) == ["sort"]


async def test_relevance_orders_by_rank_and_its_cursor_continues_the_walk(
    client: httpx.AsyncClient,
) -> None:
    for title, description in [
        ("report", "report report report"),
        ("report draft", None),
        ("misc", "a long description that mentions a report once among many other words"),
        ("report report", "report"),
    ]:
        await create(client, title, description=description)
    await settled(client, 4)

    whole = await client.get(LIST, params={"q": "report", "sort": "relevance"})
    first = await client.get(LIST, params={"q": "report", "sort": "relevance", "limit": "2"})
    rest = await client.get(first.json()["next"])
    reverse = await client.get(LIST, params={"q": "report", "sort": "-relevance"})

    # By how often the word occurs (4, 3, then 1 and 1: a tie, broken by id).
    assert titles(whole.json())[:2] == ["report", "report report"]
    assert set(titles(whole.json())[2:]) == {"report draft", "misc"}
    assert titles(first.json()) + titles(rest.json()) == titles(whole.json())
    assert rest.json()["next"] is None
    assert titles(reverse.json())[2:] == ["report report", "report"]


async def test_titles_sort_without_regard_to_case_or_accents_ties_broken_by_id(
    client: httpx.AsyncClient, tasks: list[dict[str, Any]]
) -> None:
    ids = {task["title"]: task["id"] for task in tasks}
    apples = sorted(["apple", "Apple"], key=lambda title: ids[title])
    eclairs = sorted(["éclair", "Eclair"], key=lambda title: ids[title])

    ascending = await client.get(LIST, params={"sort": "title"})
    descending = await client.get(LIST, params={"sort": "-title"})
    walked: list[str] = []
    url: str | None = f"{LIST}?sort=title&limit=1"
    while url is not None:
        page = (await client.get(url)).json()
        walked += titles(page)
        url = page["next"]

    middle = [
        "Financial summary",
        "Holiday plans",
        "Reports for the board",
        "Write the quarterly report",
    ]
    assert titles(ascending.json()) == [*apples, "banana", *eclairs, *middle, "Zebra crossing"]
    # Descending reverses the titles; equal titles still follow their ids in ascending order.
    assert titles(descending.json()) == [
        "Zebra crossing",
        *middle[::-1],
        *eclairs,
        "banana",
        *apples,
    ]
    assert walked == titles(ascending.json())


async def test_a_deleted_task_is_read_by_id_only_when_asked_for(
    client: httpx.AsyncClient,
) -> None:
    task = await create(client, "to be deleted")
    deleted = await client.delete(f"{LIST}/{task['id']}")
    assert deleted.status_code == 204
    position = deleted.headers["x-event-position"]

    hidden = await client.get(f"{LIST}/{task['id']}", headers={"X-Min-Position": position})
    shown = await client.get(
        f"{LIST}/{task['id']}?include_deleted=true", headers={"X-Min-Position": position}
    )
    live = await create(client, "alive")
    plain = await client.get(f"{LIST}/{live['id']}?include_deleted=false")
    wrong = await client.get(f"{LIST}/{task['id']}?include_deleted=yes")

    assert hidden.status_code == 404
    assert shown.status_code == 200, shown.text
    assert shown.json()["deleted"] is True
    assert shown.headers["etag"] == '"2"'
    assert plain.status_code in (200, 404)  # the read model may trail this fresh write
    assert wrong.status_code == 422
    assert list(wrong.json()["details"]) == ["include_deleted"]


async def test_include_deleted_by_id_needs_a_key_when_keys_are_set(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=["k1"])
    async with serving(create_app(settings)) as http:
        url = f"{LIST}/9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11?include_deleted=true"
        anonymous = await http.get(url)
        with_key = await http.get(url, headers={"Authorization": "Bearer k1"})

    assert anonymous.status_code == 401
    assert with_key.status_code == 404


def forged(secret: bytes, payload: bytes) -> str:
    signature = hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(signature + payload).decode().rstrip("=")


async def deployment_secret(settings: Settings) -> bytes:
    conn = await asyncpg.connect(settings.database_url)
    try:
        value = await conn.fetchval("SELECT value FROM service_secrets WHERE name = 'cursor'")
    finally:
        await conn.close()
    return bytes(value)


ID = "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"
FORGED_PAYLOADS = [
    b"not json at all",
    b"[1, 2]",
    orjson.dumps({"p": []}),
    orjson.dumps({"v": "x", "p": []}),
    orjson.dumps({"v": [{"a": 1}, ID], "p": [["sort", "title"]]}),
    orjson.dumps({"v": [17, ID], "p": []}),
    orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", 5], "p": []}),
    orjson.dumps({"v": [[1], ID], "p": [["sort", "priority"]]}),
    orjson.dumps({"v": ["x\u0000", ID], "p": [["sort", "title"]]}),
    orjson.dumps({"v": ["later", ID], "p": [["sort", "due_date"]]}),
    orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", ID], "p": [["limit", "5"]]}),
]


async def test_cursors_signed_with_the_deployment_secret_but_of_another_shape_are_422(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    secret = await deployment_secret(settings)

    answers = [
        await client.get(LIST, params={"cursor": forged(secret, payload)})
        for payload in FORGED_PAYLOADS
    ]

    for payload, answer in zip(FORGED_PAYLOADS, answers, strict=True):
        assert answer.status_code == 422, (payload, answer.text)
        assert list(answer.json()["details"]) == ["cursor"]


@pytest.fixture
async def two_replicas(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with serving(create_app(settings)) as one, serving(create_app(settings)) as other:
        yield one, other


async def test_every_replica_signs_with_one_generated_secret_and_a_setting_overrides_it(
    settings: Settings,
    two_replicas: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_settings: Callable[..., Settings],
) -> None:
    one, other = two_replicas
    for i in range(3):
        await create(one, f"task {i}")
    await settled(one, 3)

    first = await one.get(LIST, params={"limit": "1"})
    continued = await other.get(first.json()["next"])
    secret = await deployment_secret(settings)
    configured = make_settings(cursor_secret="from-the-setting")
    async with serving(create_app(configured)) as overridden:
        foreign = await overridden.get(LIST, params={"cursor": first.json()["next_cursor"]})
    walk = parse_list_query([], max_offset=10, secret=b"from-the-setting").walk

    assert Settings().cursor_secret is None
    assert len(secret) == 32
    assert continued.status_code == 200
    assert continued.json()["items"][0]["title"] == "task 1"
    assert foreign.status_code == 422
    assert encode_cursor(["x"], walk, b"from-the-setting") != encode_cursor(["x"], walk, secret)
