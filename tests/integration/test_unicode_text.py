"""Look-alike and invisible text: one tag per normalised form, no hidden characters in tags, no
bidirectional overrides in titles or descriptions, and list filters normalised as on write."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import JSON


async def test_fullwidth_and_case_variants_of_a_tag_are_stored_as_one_tag(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/api/v1/tasks",
        headers=JSON,
        json={"title": "t", "tags": ["\uff57\uff4f\uff52\uff4b", "WORK", " Work ", "Stra\u00dfe"]},
    )

    assert created.status_code == 201
    assert created.json()["tags"] == ["work", "strasse"]


@pytest.mark.parametrize(
    "tag",
    [
        "work\u200b",  # zero-width space
        "\u200dwork",  # zero-width joiner
        "wo\u00adrk",  # soft hyphen
        "\ufeffwork",  # byte order mark
        "work\u202e",  # right-to-left override
        "work\u2066",  # left-to-right isolate
    ],
)
async def test_a_tag_with_an_invisible_format_character_is_refused(
    client: httpx.AsyncClient, tag: str
) -> None:
    created = await client.post("/api/v1/tasks", headers=JSON, json={"title": "t", "tags": [tag]})
    task = await client.post("/api/v1/tasks", headers=JSON, json={"title": "t"})
    patched = await client.patch(
        f"/api/v1/tasks/{task.json()['id']}", headers=JSON, json={"tags": ["ok", tag]}
    )

    assert created.status_code == 422
    assert set(created.json()["details"]) == {"tags.0"}
    assert patched.status_code == 422
    assert set(patched.json()["details"]) == {"tags.1"}


async def test_a_fullwidth_comma_becomes_a_comma_and_is_refused(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/api/v1/tasks", headers=JSON, json={"title": "t", "tags": ["a\uff0cb"]}
    )

    assert created.status_code == 422
    assert set(created.json()["details"]) == {"tags.0"}


@pytest.mark.parametrize("control", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e"])
@pytest.mark.parametrize("field", ["title", "description"])
async def test_bidirectional_overrides_are_refused_in_titles_and_descriptions(
    client: httpx.AsyncClient, field: str, control: str
) -> None:
    text = f"invoice {control}fdp.exe\u202c"
    body = {"title": "t", field: text}
    created = await client.post("/api/v1/tasks", headers=JSON, json=body)
    task = await client.post("/api/v1/tasks", headers=JSON, json={"title": "t"})
    patched = await client.patch(
        f"/api/v1/tasks/{task.json()['id']}", headers=JSON, json={field: text}
    )

    for answer in (created, patched):
        assert answer.status_code == 422
        assert answer.json()["error"] == "Validation failed"
        assert set(answer.json()["details"]) == {field}


@pytest.mark.parametrize("control", ["\u2066", "\u2067", "\u2068", "\u2069"])
async def test_bidirectional_isolates_are_refused_in_titles(
    client: httpx.AsyncClient, control: str
) -> None:
    created = await client.post("/api/v1/tasks", headers=JSON, json={"title": f"a{control}b"})

    assert created.status_code == 422
    assert set(created.json()["details"]) == {"title"}


async def test_other_scripts_and_joiners_in_free_text_are_kept(client: httpx.AsyncClient) -> None:
    # Zero-width joiners belong to emoji and scripts: only bidi overrides and isolates are refused
    # in titles; right-to-left text itself (Arabic, Hebrew) is fine.
    title = "\u0645\u0631\u062d\u0628\u0627 \U0001f468\u200d\U0001f469\u200d\U0001f467"
    body = {"title": title, "description": "\u05e9\u05dc\u05d5\u05dd"}
    created = await client.post("/api/v1/tasks", headers=JSON, json=body)

    assert created.status_code == 201
    assert created.json()["title"] == title


async def test_list_filters_normalise_tags_as_on_write(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/tasks", headers=JSON, json={"title": "t", "tags": ["work"]}
    )
    wait = {"X-Min-Position": created.headers["x-event-position"]}

    fullwidth_work = "%EF%BD%97%EF%BD%8F%EF%BD%92%EF%BD%8B"
    fullwidth = await client.get(f"/api/v1/tasks?tags={fullwidth_work}", headers=wait)
    upper_all = await client.get("/api/v1/tasks?tags_all=WORK", headers=wait)
    invisible = await client.get("/api/v1/tasks?tags=work%E2%80%8B", headers=wait)
    too_long = await client.get(f"/api/v1/tasks?tags={'x' * 51}", headers=wait)

    assert fullwidth.status_code == 200
    assert [task["id"] for task in fullwidth.json()["items"]] == [created.json()["id"]]
    assert upper_all.json()["total"] == 1
    assert invisible.status_code == 422
    assert set(invisible.json()["details"]) == {"tags"}
    assert too_long.status_code == 422
    assert set(too_long.json()["details"]) == {"tags"}
