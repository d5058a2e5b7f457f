"""Cursors: whatever a signed or unsigned cursor decodes to, only the issued shape passes."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from query_service.cursors import SIGNATURE_BYTES, encode_cursor
from query_service.queries import parse_list_query
from shared.errors import ValidationFailed

SECRET = b"test-secret"
ID = "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"


def signed(payload: bytes) -> str:
    """A cursor holding `payload`, signed with the service's secret (as if the secret leaked or
    an older release had issued it): the signature is right, the content is not."""
    signature = hmac.new(SECRET, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(signature + payload).decode().rstrip("=")


def refusal(cursor: str, *extra: tuple[str, str]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query([("cursor", cursor), *extra], max_offset=100_000, secret=SECRET)
    details = caught.value.details
    assert isinstance(details, dict)
    return details


def walk_payload(values: Any, walk: Any = ()) -> bytes:
    return orjson.dumps({"v": values, "p": list(walk)})


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe not json",
        b"",
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
        orjson.dumps({"p": []}),
        orjson.dumps({"v": "abc", "p": []}),
        orjson.dumps({"v": None, "p": []}),
        orjson.dumps({"v": {"a": 1}, "p": []}),
        orjson.dumps({"v": [], "p": []}),
        orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", ID], "p": {}}),
        orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", ID], "p": [["sort"]]}),
        orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", ID], "p": [[1, 2]]}),
        orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", ID], "p": [["colour", "red"]]}),
        orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", ID], "p": [["sort", "-nope"]]}),
        orjson.dumps({"v": ["2026-01-01T00:00:00+00:00", ID], "p": [], "x": 1}),
    ],
)
def test_a_signed_cursor_of_any_other_shape_is_a_422(payload: bytes) -> None:
    assert set(refusal(signed(payload))) == {"cursor"}


@pytest.mark.parametrize(
    ("sort", "values"),
    [
        ("-created_at", [17, ID]),
        ("-created_at", ["yesterday", ID]),
        ("-created_at", ["2026-01-01T00:00:00", ID]),
        ("-created_at", [None, ID]),
        ("-created_at", [["2026-01-01T00:00:00+00:00"], ID]),
        ("due_date", ["2026-02-30", ID]),
        ("due_date", [20260101, ID]),
        ("priority", ["3", ID]),
        ("priority", [True, ID]),
        ("priority", [3.5, ID]),
        ("priority", [99999999999, ID]),
        ("title", [42, ID]),
        ("title", [{"a": "b"}, ID]),
        ("title", ["nul\u0000byte", ID]),
        ("title", ["abc", "not-a-uuid"]),
        ("title", ["abc", 12]),
        ("title", ["abc", None]),
        ("title", ["abc"]),
        ("title", ["abc", ID, "extra"]),
    ],
)
def test_sort_keys_of_the_wrong_type_for_the_sort_are_a_422(sort: str, values: Any) -> None:
    cursor = signed(walk_payload(values, [["sort", sort]]))

    assert set(refusal(cursor)) == {"cursor"}


def test_relevance_keys_must_be_finite_numbers() -> None:
    walk = [["q", "report"], ["sort", "relevance"]]
    for value in ("high", None, True, [1.0]):
        assert set(refusal(signed(walk_payload([value, ID], walk)))) == {"cursor"}

    accepted = parse_list_query(
        [("cursor", signed(walk_payload([0.5, ID], walk)))], max_offset=10, secret=SECRET
    )
    assert accepted.after is not None
    assert accepted.after[0] == 0.5


def test_a_cursor_given_with_another_filter_is_a_422_and_with_the_same_one_continues() -> None:
    cursor = encode_cursor(["abc", ID], [("completed", "true"), ("sort", "title")], SECRET)

    assert set(refusal(cursor, ("completed", "false"), ("sort", "title"))) == {"cursor"}
    assert set(refusal(cursor, ("sort", "title"))) == {"cursor"}
    same = parse_list_query(
        [("cursor", cursor), ("sort", "title"), ("completed", "true")], max_offset=10, secret=SECRET
    )
    assert same.offset is None


def test_sort_by_relevance_needs_a_search() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_list_query([("sort", "relevance")], max_offset=10, secret=SECRET)

    assert caught.value.details == {"sort": "Sort by relevance needs q"}
