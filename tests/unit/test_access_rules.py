"""The key gate knows no service: which reads are audited or public is what it is given."""

from __future__ import annotations

from query_service.resources import READ_ACCESS
from shared.auth import AccessRules, required_scope


def scope(method: str, path: str, query: bytes = b"") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}


def test_without_rules_every_read_needs_read_and_every_write_write() -> None:
    rules = AccessRules()

    assert required_scope(scope("GET", "/api/v1/tasks/x/history"), rules) == "read"
    assert required_scope(scope("GET", "/api/v1/tasks/x", b"version=1"), rules) == "read"
    assert required_scope(scope("PATCH", "/api/v1/tasks/x"), rules) == "write"
    assert not rules.public("/api/v1/tasks")


def test_the_query_services_rules_audit_history_the_feed_and_time_travel() -> None:
    assert required_scope(scope("GET", "/api/v1/tasks/x/history"), READ_ACCESS) == "audit"
    assert required_scope(scope("GET", "/api/v1/events"), READ_ACCESS) == "audit"
    assert required_scope(scope("GET", "/api/v1/tasks/x", b"as_of=2026"), READ_ACCESS) == "audit"
    assert required_scope(scope("GET", "/api/v1/tasks", b"tag=a"), READ_ACCESS) == "read"


def test_the_query_services_rules_open_lists_and_tasks_but_not_deleted_ones() -> None:
    assert READ_ACCESS.public("/api/v1/tasks")
    assert READ_ACCESS.public("/api/v1/tasks/x")
    assert not READ_ACCESS.public("/api/v1/tasks/x/history")
    assert READ_ACCESS.private({"include_deleted"})
    assert READ_ACCESS.private({"version"})
    assert not READ_ACCESS.private({"tag", "sort"})
