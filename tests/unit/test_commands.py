"""The field rules, PATCH parsing and If-Match parsing, on both sides of every boundary."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest

from command_service import commands
from command_service.commands import (
    check_idempotency_key,
    is_task_id,
    parse_if_match,
    validate_create,
    validate_patch,
)
from shared.errors import ValidationFailed

TODAY = date(2026, 11, 26)


@pytest.fixture(autouse=True)
def fixed_today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "today_utc", lambda: TODAY)


def encode(body: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the escape "\ud800", as a JSON client would.
    return json.dumps(body).encode()


def refusal(call: Any, raw: bytes) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        call(raw)
    details = caught.value.details
    assert isinstance(details, dict)
    assert all(isinstance(message, str) and message for message in details.values())
    return details


ACCEPTED_CREATE = [
    ({"title": "x"}, {"title": "x"}),
    ({"title": "  padded\t\n"}, {"title": "padded"}),
    ({"title": "a" * 200}, {"title": "a" * 200}),
    ({"title": " " + "a" * 200 + " "}, {"title": "a" * 200}),
    ({"title": "😀" * 200}, {"title": "😀" * 200}),
    ({"title": "tab\tand\nnewline"}, {"title": "tab\tand\nnewline"}),
    ({"title": "x", "description": None}, {"description": None}),
    ({"title": "x", "description": ""}, {"description": ""}),
    ({"title": "x", "description": "d" * 10_000}, {"description": "d" * 10_000}),
    ({"title": "x", "description": "  kept  \n"}, {"description": "  kept  \n"}),
    ({"title": "x"}, {"priority": 3, "description": None, "due_date": None, "tags": []}),
    ({"title": "x", "priority": 1}, {"priority": 1}),
    ({"title": "x", "priority": 5}, {"priority": 5}),
    ({"title": "x", "due_date": None}, {"due_date": None}),
    ({"title": "x", "due_date": "2026-12-31"}, {"due_date": "2026-12-31"}),
    ({"title": "x", "due_date": "2028-02-29"}, {"due_date": "2028-02-29"}),
    ({"title": "x", "tags": []}, {"tags": []}),
    ({"title": "x", "tags": [" Work ", "work", "URGENT", "Work"]}, {"tags": ["work", "urgent"]}),
    ({"title": "x", "tags": ["b", "a", "B"]}, {"tags": ["b", "a"]}),
    ({"title": "x", "tags": ["t" * 50]}, {"tags": ["t" * 50]}),
    ({"title": "x", "tags": [f"t{i}" for i in range(20)]}, {"tags": [f"t{i}" for i in range(20)]}),
    (
        {"title": "x", "tags": [f"t{i}" for i in range(20)] + ["T0", " t1 "]},
        {"tags": [f"t{i}" for i in range(20)]},
    ),
]


@pytest.mark.parametrize(("body", "expected"), ACCEPTED_CREATE)
def test_a_valid_create_body_is_accepted_and_normalised(
    body: dict[str, Any], expected: dict[str, Any]
) -> None:
    fields = validate_create(encode(body))

    assert {name: fields[name] for name in expected} == expected
    assert set(fields) == {"title", "description", "priority", "due_date", "tags"}


REFUSED_CREATE: list[tuple[str, Any, str]] = [
    ("missing title", {}, "title"),
    ("null title", {"title": None}, "title"),
    ("empty title", {"title": ""}, "title"),
    ("whitespace-only title", {"title": "  \t\n "}, "title"),
    ("title of 201 characters", {"title": "a" * 201}, "title"),
    ("title of 201 astral code points", {"title": "😀" * 201}, "title"),
    ("numeric title", {"title": 5}, "title"),
    ("list title", {"title": ["x"]}, "title"),
    ("title with NUL", {"title": "a\u0000b"}, "title"),
    ("title with bell", {"title": "a\u0007"}, "title"),
    ("title with carriage return", {"title": "a\rb"}, "title"),
    ("title with DEL", {"title": "a\u007f"}, "title"),
    ("title with C1 control", {"title": "a\u0085b"}, "title"),
    ("title with lone high surrogate", {"title": "a\ud800b"}, "title"),
    ("title with lone low surrogate", {"title": "\udc00"}, "title"),
    ("description of 10001", {"title": "x", "description": "d" * 10_001}, "description"),
    ("numeric description", {"title": "x", "description": 1}, "description"),
    ("description with NUL", {"title": "x", "description": "\u0000"}, "description"),
    ("description with escape", {"title": "x", "description": "\u001b[31m"}, "description"),
    ("priority 0", {"title": "x", "priority": 0}, "priority"),
    ("priority 6", {"title": "x", "priority": 6}, "priority"),
    ("priority -1", {"title": "x", "priority": -1}, "priority"),
    ("priority true", {"title": "x", "priority": True}, "priority"),
    ("priority 3.0", {"title": "x", "priority": 3.0}, "priority"),
    ("priority string", {"title": "x", "priority": "3"}, "priority"),
    ("priority null", {"title": "x", "priority": None}, "priority"),
    ("priority huge", {"title": "x", "priority": 10**30}, "priority"),
    ("due date yesterday", {"title": "x", "due_date": "2026-11-25"}, "due_date"),
    ("due date unpadded", {"title": "x", "due_date": "2026-12-1"}, "due_date"),
    ("due date not a day", {"title": "x", "due_date": "2026-02-30"}, "due_date"),
    ("due date not leap", {"title": "x", "due_date": "2027-02-29"}, "due_date"),
    ("due date month 13", {"title": "x", "due_date": "2026-13-01"}, "due_date"),
    ("due date timestamp", {"title": "x", "due_date": "2026-12-01T00:00:00Z"}, "due_date"),
    ("due date compact", {"title": "x", "due_date": "20261201"}, "due_date"),
    ("due date number", {"title": "x", "due_date": 20261201}, "due_date"),
    ("due date trailing newline", {"title": "x", "due_date": "2026-12-01\n"}, "due_date"),
    ("due date leading space", {"title": "x", "due_date": " 2026-12-01"}, "due_date"),
    ("due date other digits", {"title": "x", "due_date": "٢٠٢٦-١٢-٠١"}, "due_date"),
    ("due date empty", {"title": "x", "due_date": ""}, "due_date"),
    ("tags not a list", {"title": "x", "tags": "work"}, "tags"),
    ("tags null", {"title": "x", "tags": None}, "tags"),
    ("tags object", {"title": "x", "tags": {"a": 1}}, "tags"),
    ("tag not a string", {"title": "x", "tags": ["ok", 1]}, "tags.1"),
    ("tag empty", {"title": "x", "tags": ["ok", "fine", ""]}, "tags.2"),
    ("tag whitespace", {"title": "x", "tags": ["  "]}, "tags.0"),
    ("tag with comma", {"title": "x", "tags": ["a,b"]}, "tags.0"),
    ("tag of 51", {"title": "x", "tags": ["t" * 51]}, "tags.0"),
    ("tag with NUL", {"title": "x", "tags": ["a\u0000"]}, "tags.0"),
    ("tag with lone surrogate", {"title": "x", "tags": ["a", "\ud83d"]}, "tags.1"),
    ("21 distinct tags", {"title": "x", "tags": [f"t{i}" for i in range(21)]}, "tags"),
    ("unknown field", {"title": "x", "colour": "red"}, "colour"),
    ("read-only id", {"title": "x", "id": "9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11"}, "id"),
    ("read-only version", {"title": "x", "version": 1}, "version"),
    ("read-only created_at", {"title": "x", "created_at": "2026-11-26"}, "created_at"),
    ("completed on create", {"title": "x", "completed": False}, "completed"),
    ("deleted on create", {"title": "x", "deleted": False}, "deleted"),
]


@pytest.mark.parametrize(
    ("case", "body", "key"), REFUSED_CREATE, ids=[case for case, _, _ in REFUSED_CREATE]
)
def test_an_invalid_create_body_is_refused_under_the_field_key(
    case: str, body: Any, key: str
) -> None:
    raw = encode(body)

    details = refusal(_create_checked, raw)

    assert list(details) == [key], case


def _create_checked(raw: bytes) -> dict[str, Any]:
    """Create validation plus the past-date rule the application applies on a new task."""
    fields = validate_create(raw)
    commands.check_not_past(fields["due_date"])
    return fields


NOT_OBJECTS = [b"", b"not json", b"[]", b'"x"', b"null", b"3", b"{", b'{"title": NaN}']
NOT_OBJECTS += [b'{"title": "x"} {}', b"\xff\xfe", "\ufeff{}".encode(), b'{"title": "\xc3"}']


@pytest.mark.parametrize("raw", NOT_OBJECTS)
def test_a_body_that_is_not_a_json_object_is_refused_under_body(raw: bytes) -> None:
    assert list(refusal(validate_create, raw)) == ["body"]
    assert list(refusal(validate_patch, raw)) == ["body"]


def test_a_deeply_nested_body_is_refused_under_body_without_crashing() -> None:
    raw = b'{"title": "\\ud800", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    assert list(refusal(validate_create, raw)) == ["body"]


def test_every_problem_of_a_body_is_reported_under_its_own_key() -> None:
    raw = encode({"title": "", "priority": 9, "tags": ["ok", "a,b"], "extra": 1})

    details = refusal(validate_create, raw)

    assert set(details) == {"title", "priority", "tags.1", "extra"}


ACCEPTED_PATCH = [
    ({}, {}),
    ({"title": " new "}, {"title": "new"}),
    ({"description": None}, {"description": None}),
    ({"due_date": None}, {"due_date": None}),
    ({"due_date": "2020-01-01"}, {"due_date": "2020-01-01"}),
    ({"tags": []}, {"tags": []}),
    ({"tags": ["A", "a"]}, {"tags": ["a"]}),
    ({"completed": True}, {"completed": True}),
    ({"completed": False}, {"completed": False}),
    ({"priority": 5, "title": "t"}, {"priority": 5, "title": "t"}),
]


@pytest.mark.parametrize(("body", "expected"), ACCEPTED_PATCH)
def test_a_patch_body_yields_exactly_the_fields_present(
    body: dict[str, Any], expected: dict[str, Any]
) -> None:
    # A past due date passes here: only a *changed* date is checked, against the task.
    assert validate_patch(encode(body)) == expected


REFUSED_PATCH: list[tuple[str, Any, str]] = [
    ("null title", {"title": None}, "title"),
    ("null priority", {"priority": None}, "priority"),
    ("null tags", {"tags": None}, "tags"),
    ("null completed", {"completed": None}, "completed"),
    ("completed 1", {"completed": 1}, "completed"),
    ("completed string", {"completed": "true"}, "completed"),
    ("empty title", {"title": " "}, "title"),
    ("priority 6", {"priority": 6}, "priority"),
    ("priority 3.0", {"priority": 3.0}, "priority"),
    ("bad date", {"due_date": "tomorrow"}, "due_date"),
    ("bad tag", {"tags": ["a", "b", "c,d"]}, "tags.2"),
    ("long description", {"description": "d" * 10_001}, "description"),
    ("read-only id", {"id": "x"}, "id"),
    ("read-only completed_at", {"completed_at": None}, "completed_at"),
    ("read-only deleted", {"deleted": True}, "deleted"),
    ("read-only updated_at", {"updated_at": "2026-11-26T09:30:00.123456Z"}, "updated_at"),
    ("unknown field", {"titel": "typo"}, "titel"),
]


@pytest.mark.parametrize(
    ("case", "body", "key"), REFUSED_PATCH, ids=[case for case, _, _ in REFUSED_PATCH]
)
def test_an_invalid_patch_body_is_refused_under_the_field_key(
    case: str, body: Any, key: str
) -> None:
    assert list(refusal(validate_patch, encode(body))) == [key], case


def test_a_due_date_is_past_only_when_before_today_in_utc() -> None:
    yesterday = (TODAY - timedelta(days=1)).isoformat()

    assert commands.is_past(yesterday)
    assert not commands.is_past(TODAY.isoformat())
    assert not commands.is_past(None)


IF_MATCH = [
    ("*", []),
    (" * ", []),
    ('"3"', [3]),
    ('W/"3"', [3]),
    ('"1", W/"2" ,"3"', [1, 2, 3]),
    ('"abc"', [-1]),
    ('""', [-1]),
    ('"²"', [-1]),
    ('"9999999999999999999999"', [-1]),
    # Tags compare as the strings we sent: "1" is ours, "01" and "0" never are.
    ('"01"', [-1]),
    ('"0"', [-1]),
    ('W/"01", "2"', [-1, 2]),
]


@pytest.mark.parametrize(("header", "versions"), IF_MATCH)
def test_if_match_is_parsed_into_the_versions_it_names(header: str, versions: list[int]) -> None:
    assert parse_if_match(header) == versions


def test_an_absent_if_match_means_no_precondition() -> None:
    assert parse_if_match(None) is None


@pytest.mark.parametrize("header", ["3", "W/3", '"3', '3"', "", " ", '"3" "4"', 'w/"3"', '*, "3"'])
def test_a_malformed_if_match_is_refused_under_its_header_name(header: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_if_match(header)

    assert caught.value.details is not None
    assert list(caught.value.details) == ["If-Match"]


@pytest.mark.parametrize("key", ["k", "a" * 200, "!~", "order-42/retry_1"])
def test_a_valid_idempotency_key_is_kept(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "a" * 201, "a b", "é", "tab\there", "\x7f"])
def test_an_invalid_idempotency_key_is_refused_under_its_header_name(key: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_idempotency_key(key)

    assert caught.value.details is not None
    assert list(caught.value.details) == ["Idempotency-Key"]


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11", True),
        ("9B2F6C1E-3A7D-4A43-9D0E-0B7F6F3F2A11", True),
        ("9b2f6c1e3a7d4a439d0e0b7f6f3f2a11", False),
        ("{9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11}", False),
        ("urn:uuid:9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a11", False),
        ("9b2f6c1e-3a7d-4a43-9d0e-0b7f6f3f2a1", False),
        ("not-a-uuid", False),
        ("", False),
    ],
)
def test_only_the_canonical_uuid_form_names_a_task(raw: str, valid: bool) -> None:
    assert is_task_id(raw) is valid
