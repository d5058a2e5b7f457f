"""Every field rule over HTTP: a refusal is 422 in the error shape under the right key, and the
event store is left untouched; an accepted body is stored normalised."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from command_service import commands
from shared.config import Settings
from tests.helpers import JSON, store_events

TODAY = datetime.now(UTC).date()
YESTERDAY = (TODAY - timedelta(days=1)).isoformat()


@pytest.fixture(autouse=True)
def pinned_today(monkeypatch: pytest.MonkeyPatch) -> None:
    # The boundary cases below must not straddle midnight UTC.
    monkeypatch.setattr(commands, "today_utc", lambda: TODAY)


def encode(body: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the escape "\ud800", as a JSON client would.
    return json.dumps(body).encode()


async def problem_with_refusal(
    client: httpx.AsyncClient,
    settings: Settings,
    method: str,
    path: str,
    raw: bytes,
    key: str,
    headers: dict[str, str | bytes] | None = None,
) -> str | None:
    """None when the request is refused as 422 under `key` alone and nothing is appended."""
    before = len(await store_events(settings))
    response = await client.request(method, path, content=raw, headers={**JSON, **(headers or {})})
    after = len(await store_events(settings))
    body = response.json()
    if response.status_code != 422:
        return f"status {response.status_code}: {body}"
    details = body.get("details")
    if body.get("error") != "Validation failed" or set(body) != {"error", "details"}:
        return f"shape {body}"
    if not isinstance(details, dict) or list(details) != [key]:
        return f"details {details}, expected only {key!r}"
    if not isinstance(details[key], str) or not details[key]:
        return f"message {details[key]!r}"
    if after != before:
        return f"{after - before} events appended"
    return None


CREATE_REFUSALS: list[tuple[str, bytes, str]] = [
    ("missing title", encode({}), "title"),
    ("null title", encode({"title": None}), "title"),
    ("empty title", encode({"title": ""}), "title"),
    ("whitespace-only title", encode({"title": " \t\n "}), "title"),
    ("title of 201", encode({"title": "a" * 201}), "title"),
    ("title of 201 astral code points", encode({"title": "😀" * 201}), "title"),
    ("trimmed title of 201", encode({"title": " " + "a" * 201 + " "}), "title"),
    ("title not a string", encode({"title": 5}), "title"),
    ("title with NUL", encode({"title": "a\u0000b"}), "title"),
    ("title with a control character", encode({"title": "a\u001bb"}), "title"),
    ("title with carriage return", encode({"title": "a\rb"}), "title"),
    ("title with lone surrogate", encode({"title": "a\ud800b"}), "title"),
    ("title with lone low surrogate", b'{"title": "\\udc00"}', "title"),
    ("description of 10001", encode({"title": "x", "description": "d" * 10_001}), "description"),
    ("description not a string", encode({"title": "x", "description": ["d"]}), "description"),
    ("description with NUL", encode({"title": "x", "description": "\u0000"}), "description"),
    ("priority 0", encode({"title": "x", "priority": 0}), "priority"),
    ("priority 6", encode({"title": "x", "priority": 6}), "priority"),
    ("priority true", encode({"title": "x", "priority": True}), "priority"),
    ("priority 3.0", encode({"title": "x", "priority": 3.0}), "priority"),
    ("priority string", encode({"title": "x", "priority": "3"}), "priority"),
    ("priority null", encode({"title": "x", "priority": None}), "priority"),
    ("due date yesterday", encode({"title": "x", "due_date": YESTERDAY}), "due_date"),
    ("due date unpadded", encode({"title": "x", "due_date": "2099-1-01"}), "due_date"),
    ("due date not real", encode({"title": "x", "due_date": "2099-02-30"}), "due_date"),
    ("due date timestamp", encode({"title": "x", "due_date": "2099-01-01T00:00:00Z"}), "due_date"),
    ("due date number", encode({"title": "x", "due_date": 20990101}), "due_date"),
    ("tags not a list", encode({"title": "x", "tags": "work"}), "tags"),
    ("tags null", encode({"title": "x", "tags": None}), "tags"),
    ("tag not a string", encode({"title": "x", "tags": ["a", 2]}), "tags.1"),
    ("tag empty after trim", encode({"title": "x", "tags": ["a", "b", "  "]}), "tags.2"),
    ("tag with comma", encode({"title": "x", "tags": ["a,b"]}), "tags.0"),
    ("tag of 51", encode({"title": "x", "tags": ["t" * 51]}), "tags.0"),
    ("tag with control", encode({"title": "x", "tags": ["a\u0001"]}), "tags.0"),
    ("21 distinct tags", encode({"title": "x", "tags": [f"t{i}" for i in range(21)]}), "tags"),
    ("unknown field", encode({"title": "x", "colour": "red"}), "colour"),
    ("read-only id", encode({"title": "x", "id": "9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11"}), "id"),
    ("read-only version", encode({"title": "x", "version": 1}), "version"),
    ("completed on create", encode({"title": "x", "completed": True}), "completed"),
    ("not JSON", b"title=x", "body"),
    ("empty body", b"", "body"),
    ("JSON array", b'[{"title": "x"}]', "body"),
    ("JSON string", b'"x"', "body"),
    ("JSON null", b"null", "body"),
    ("invalid UTF-8", b'{"title": "\xff"}', "body"),
    ("NaN", b'{"title": "x", "priority": NaN}', "body"),
]


async def test_every_invalid_create_is_refused_under_its_key_and_appends_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    problems = {}

    for case, raw, key in CREATE_REFUSALS:
        problem = await problem_with_refusal(client, settings, "POST", "/api/v1/tasks", raw, key)
        if problem:
            problems[case] = problem

    assert problems == {}
    assert await store_events(settings) == []


CREATE_ACCEPTED: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"title": "  padded  "}, {"title": "padded", "priority": 3, "tags": [], "due_date": None}),
    ({"title": "a" * 200}, {"title": "a" * 200}),
    ({"title": "😀" * 200}, {"title": "😀" * 200}),
    ({"title": "x", "description": "d" * 10_000}, {"description": "d" * 10_000}),
    ({"title": "x", "description": " tab\tnewline\n "}, {"description": " tab\tnewline\n "}),
    ({"title": "x", "description": None}, {"description": None}),
    ({"title": "x", "priority": 1}, {"priority": 1}),
    ({"title": "x", "priority": 5}, {"priority": 5}),
    ({"title": "x", "due_date": TODAY.isoformat()}, {"due_date": TODAY.isoformat()}),
    ({"title": "x", "due_date": None}, {"due_date": None}),
    ({"title": "x", "tags": [" Work", "WORK ", "urgent", "work"]}, {"tags": ["work", "urgent"]}),
    ({"title": "x", "tags": ["t" * 50]}, {"tags": ["t" * 50]}),
    (
        {"title": "x", "tags": [f"t{i}" for i in range(20)] + ["T3"]},
        {"tags": [f"t{i}" for i in range(20)]},
    ),
]


async def test_valid_creates_on_each_boundary_are_stored_normalised(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for body, expected in CREATE_ACCEPTED:
        response = await client.post("/api/v1/tasks", content=encode(body), headers=JSON)

        assert response.status_code == 201, (body, response.text)
        task = response.json()
        assert {name: task[name] for name in expected} == expected
        [created] = await store_events(settings, response.json()["id"])
        stored = json.loads(created["state"])
        assert {name: stored[name] for name in expected} == expected


PATCH_REFUSALS: list[tuple[str, bytes, str]] = [
    ("null title", encode({"title": None}), "title"),
    ("null priority", encode({"priority": None}), "priority"),
    ("null tags", encode({"tags": None}), "tags"),
    ("null completed", encode({"completed": None}), "completed"),
    ("completed 1", encode({"completed": 1}), "completed"),
    ("completed string", encode({"completed": "false"}), "completed"),
    ("empty title", encode({"title": ""}), "title"),
    ("title of 201", encode({"title": "a" * 201}), "title"),
    ("priority 0", encode({"priority": 0}), "priority"),
    ("priority 6", encode({"priority": 6}), "priority"),
    ("priority true", encode({"priority": True}), "priority"),
    ("description of 10001", encode({"description": "d" * 10_001}), "description"),
    ("changed due date yesterday", encode({"due_date": YESTERDAY}), "due_date"),
    ("due date not real", encode({"due_date": "2099-13-01"}), "due_date"),
    ("tag with comma", encode({"tags": ["ok", "a,b"]}), "tags.1"),
    ("21 distinct tags", encode({"tags": [f"t{i}" for i in range(21)]}), "tags"),
    ("lone surrogate", encode({"description": "\udfff"}), "description"),
    ("read-only id", encode({"id": "x"}), "id"),
    ("read-only version", encode({"version": 2}), "version"),
    ("read-only completed_at", encode({"completed_at": None}), "completed_at"),
    ("read-only deleted", encode({"deleted": True}), "deleted"),
    ("unknown field", encode({"titel": "typo"}), "titel"),
    ("not JSON", b"{", "body"),
    ("JSON array", b"[]", "body"),
]


async def test_every_invalid_patch_is_refused_under_its_key_and_appends_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "x", "tags": ["a"]}, headers=JSON)
    path = f"/api/v1/tasks/{created.json()['id']}"
    problems = {}

    for case, raw, key in PATCH_REFUSALS:
        for content_type in ("application/json", "application/merge-patch+json"):
            headers: dict[str, str | bytes] = {"Content-Type": content_type}
            problem = await problem_with_refusal(client, settings, "PATCH", path, raw, key, headers)
            if problem:
                problems[f"{case} as {content_type}"] = problem

    assert problems == {}
    assert len(await store_events(settings)) == 1


HEADER_REFUSALS: list[tuple[str, str | bytes]] = [
    ("Idempotency-Key", ""),
    ("Idempotency-Key", "k" * 201),
    ("Idempotency-Key", "with space"),
    ("Idempotency-Key", "café".encode()),
    ("If-Match", "3"),
    ("If-Match", "W/3"),
    ("If-Match", '"3'),
    ("If-Match", ""),
]


async def test_an_invalid_header_is_refused_under_its_name_and_appends_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await client.post("/api/v1/tasks", json={"title": "x"})
    task_path = f"/api/v1/tasks/{created.json()['id']}"
    problems = {}

    for header, value in HEADER_REFUSALS:
        method, path = ("PATCH", task_path) if header == "If-Match" else ("POST", "/api/v1/tasks")
        raw = encode({"title": "y"})
        problem = await problem_with_refusal(
            client, settings, method, path, raw, header, {header: value}
        )
        if problem:
            problems[f"{header}: {value!r}"] = problem

    assert problems == {}
