"""Keys limited to scopes: `read` for lists and tasks, `write` for writes, `audit` for history,
time travel and the event feed; a key without scopes may do everything; 403 names the scope."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from composition import create_app
from shared.auth import api_keys
from shared.config import ApiKeyEntry, Settings
from shared.openapi import WHOLE_API
from tests.helpers import JSON, serving, store_events

KEYS = {
    "reader": {"key": "r-secret", "scopes": ["read"]},
    "writer": {"key": "w-secret", "scopes": ["read", "write"]},
    "auditor": {"key": "a-secret", "scopes": ["audit"]},
    "everything": "e-secret",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_each_key_does_what_its_scopes_allow_and_403_names_the_missing_one(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_keys=KEYS)
    async with serving(create_app(settings)) as http:
        created = await http.post(
            "/api/v1/tasks", headers={**JSON, **bearer("w-secret")}, json={"title": "t"}
        )
        path = f"/api/v1/tasks/{created.json()['id']}"
        wait = {"X-Min-Position": created.headers["x-event-position"]}
        answers = {
            "reader writes": await http.post(
                "/api/v1/tasks", headers={**JSON, **bearer("r-secret")}, json={"title": "no"}
            ),
            "reader deletes": await http.delete(path, headers=bearer("r-secret")),
            "reader lists": await http.get("/api/v1/tasks", headers={**wait, **bearer("r-secret")}),
            "reader reads": await http.get(path, headers=bearer("r-secret")),
            "reader history": await http.get(f"{path}/history", headers=bearer("r-secret")),
            "reader time travel": await http.get(f"{path}?version=1", headers=bearer("r-secret")),
            "writer history": await http.get(f"{path}/history", headers=bearer("w-secret")),
            "auditor history": await http.get(f"{path}/history", headers=bearer("a-secret")),
            "auditor time travel": await http.get(f"{path}?version=1", headers=bearer("a-secret")),
            "auditor lists": await http.get("/api/v1/tasks", headers=bearer("a-secret")),
            "auditor writes": await http.patch(
                path, headers={**JSON, **bearer("a-secret")}, json={"priority": 1}
            ),
            "everything patches": await http.patch(
                path, headers={**JSON, **bearer("e-secret")}, json={"priority": 5}
            ),
            "everything history": await http.get(f"{path}/history", headers=bearer("e-secret")),
        }

    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "reader writes": 403,
        "reader deletes": 403,
        "reader lists": 200,
        "reader reads": 200,
        "reader history": 403,
        "reader time travel": 403,
        "writer history": 403,
        "auditor history": 200,
        "auditor time travel": 200,
        "auditor lists": 403,
        "auditor writes": 403,
        "everything patches": 200,
        "everything history": 200,
    }
    for name, answer in answers.items():
        if answer.status_code == 403:
            missing = name.split(" ", 1)[1]
            scope = {"writes": "write", "deletes": "write", "lists": "read"}.get(missing, "audit")
            assert answer.json() == {
                "error": "Forbidden",
                "details": {"scope": f"This key lacks the {scope!r} scope"},
            }, name
            assert "x-projection-position" not in answer.headers
    assert answers["reader lists"].json()["total"] == 1
    # Only the writer's create and the unscoped key's patch reached the store.
    assert len(await store_events(settings)) == 2


def test_keys_with_scopes_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKS_API_KEYS", json.dumps(KEYS))

    settings = Settings()
    again = Settings.model_validate_json(
        json.dumps({"api_keys": settings.model_dump()["api_keys"]})
    )
    keys = {key.name: sorted(key.scopes) for key in api_keys(settings.api_keys)}

    assert keys == {
        "reader": ["read"],
        "writer": ["read", "write"],
        "auditor": ["audit"],
        "everything": ["audit", "read", "write"],
    }
    assert again.api_keys == settings.api_keys
    assert settings.api_keys["reader"] == ApiKeyEntry(key="r-secret", scopes=["read"])


@pytest.mark.parametrize(
    "entry",
    [
        {"key": "k", "scopes": ["admin"]},
        {"key": "k", "scopes": []},
        {"key": "", "scopes": ["read"]},
        {"key": "k", "scope": ["read"]},
    ],
)
def test_an_unknown_or_empty_scope_or_entry_is_refused_at_start(entry: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="api_keys"):
        Settings(api_keys={"name": entry})  # type: ignore[arg-type]


def security(document: dict[str, Any], path: str, method: str) -> list[dict[str, list[str]]]:
    requirements: list[dict[str, list[str]]] = document["paths"][path][method]["security"]
    return requirements


def test_the_openapi_document_names_the_scope_of_every_api_operation() -> None:
    keyed = create_app(Settings(api_keys=KEYS)).openapi()  # type: ignore[arg-type]
    public = create_app(Settings(api_keys=KEYS, public_reads=True)).openapi()  # type: ignore[arg-type]
    committed = json.loads(WHOLE_API.read_text())  # generated without keys

    scheme = keyed["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert all(scope in scheme["description"] for scope in ("read", "write", "audit"))
    expected = {
        ("/api/v1/tasks", "get"): "read",
        ("/api/v1/tasks", "post"): "write",
        ("/api/v1/tasks/{task_id}", "get"): "read",
        ("/api/v1/tasks/{task_id}", "patch"): "write",
        ("/api/v1/tasks/{task_id}", "delete"): "write",
        ("/api/v1/tasks/{task_id}/history", "get"): "audit",
    }
    for (path, method), scope in expected.items():
        assert security(keyed, path, method) == [{"bearer": [scope]}]
        # Without keys configured, the empty requirement says no key is needed.
        assert security(committed, path, method) == [{"bearer": [scope]}, {}]
        opened = method == "get" and not path.endswith("/history")
        assert security(public, path, method) == [{"bearer": [scope]}] + ([{}] if opened else [])
    for path, operations in keyed["paths"].items():
        for operation in operations.values():
            assert ("security" in operation) == path.startswith("/api/"), path
