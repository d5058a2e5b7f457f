"""Generated bodies against the field rules: valid ones are accepted and normalised as the
contract says, invalid ones are refused under the key of the field that broke a rule."""

from __future__ import annotations

import json
import unicodedata
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from command_service.commands import validate_create, validate_patch
from shared.errors import ValidationFailed

# Every code point a text field may hold: no surrogates, no control characters but tab and
# newline (the contract's list; Cc is exactly C0, DEL and C1), no bidirectional override or
# isolate controls.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
ALLOWED = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=BIDI) | st.sampled_from(
    "\t\n"
)
# A tag holds no invisible format characters (Cf) either, before or after normalisation.
TAG_ALLOWED = st.characters(exclude_categories=("Cs", "Cc", "Cf")) | st.sampled_from("\t\n")
FORBIDDEN = st.sampled_from(
    ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", "\ud800", "\udfff", *BIDI]
)
SPACE = st.text(st.sampled_from(" \t\n\u00a0\u3000"), max_size=3)
FIELDS = ("title", "description", "priority", "due_date", "tags")


def encode(body: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the escape a JSON client would send.
    return json.dumps(body).encode()


def refusal(call: Any, body: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        call(encode(body))
    details = caught.value.details
    assert isinstance(details, dict)
    return details


def trimmed_length(low: int, high: int) -> st.SearchStrategy[str]:
    """Text whose trimmed form has `low` to `high` code points, padded with whitespace."""
    core = st.text(ALLOWED, min_size=low, max_size=high).filter(
        lambda text: low <= len(text.strip()) <= high
    )
    return st.tuples(SPACE, core, SPACE).map("".join)


def normal_tag(tag: str) -> str:
    """The contract's stored form: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", tag).strip().casefold()


def expected_tags(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(normal_tag(tag) for tag in tags))


def valid_tag(tag: str) -> bool:
    stored = normal_tag(tag)
    return (
        1 <= len(stored) <= 50
        and "," not in stored
        and not any(unicodedata.category(char) == "Cf" for char in stored)
    )


titles = trimmed_length(1, 200)
descriptions = st.none() | st.text(ALLOWED, max_size=300) | st.just("d" * 10_000)
priorities = st.integers(1, 5)
calendar_dates = st.dates(date(1900, 1, 1), date(9999, 12, 31)).map(date.isoformat)
tag_values = st.text(TAG_ALLOWED, min_size=1, max_size=52).filter(valid_tag)
tag_lists = st.lists(tag_values, max_size=30).filter(lambda tags: len(expected_tags(tags)) <= 20)


@st.composite
def create_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"title": draw(titles)}
    optional = {
        "description": descriptions,
        "priority": priorities,
        "due_date": st.none() | calendar_dates,
        "tags": tag_lists,
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    return body


@examples(max_examples=150, deadline=None)
@given(create_bodies())
def test_a_valid_create_body_is_accepted_and_normalised_as_the_contract_says(
    body: dict[str, Any],
) -> None:
    expected = {
        "title": body["title"].strip(),
        "description": body.get("description"),
        "priority": body.get("priority", 3),
        "due_date": body.get("due_date"),
        "tags": expected_tags(body.get("tags", [])),
    }

    accepted = validate_create(encode(body))

    assert accepted == expected


# (field, a value breaking its rule, the key the refusal must name)
BROKEN = st.one_of(
    st.tuples(st.just("title"), trimmed_length(201, 260), st.just("title")),
    st.tuples(st.just("title"), SPACE, st.just("title")),
    st.tuples(st.just("title"), st.none() | st.integers() | st.lists(titles), st.just("title")),
    st.tuples(
        st.just("title"),
        st.tuples(titles, FORBIDDEN, titles).map("".join),
        st.just("title"),
    ),
    st.tuples(
        st.just("description"),
        st.tuples(st.text(ALLOWED, max_size=20), FORBIDDEN).map("".join),
        st.just("description"),
    ),
    st.tuples(st.just("description"), st.just("d" * 10_001), st.just("description")),
    st.tuples(
        st.just("priority"),
        st.integers().filter(lambda n: not 1 <= n <= 5)
        | st.booleans()
        | st.floats(1, 5)
        | st.sampled_from(["3", None]),
        st.just("priority"),
    ),
    st.tuples(
        st.just("due_date"),
        st.sampled_from(["2026-2-01", "2026-02-30", "20261201", "2026-12-01T00:00:00Z", ""])
        | st.integers()
        | st.text(ALLOWED, max_size=12).filter(lambda text: len(text) != 10),
        st.just("due_date"),
    ),
    st.tuples(st.just("tags"), st.none() | st.text(max_size=5), st.just("tags")),
    st.tuples(
        st.just("tags"),
        st.lists(tag_values, min_size=21, max_size=40).filter(
            lambda tags: len(expected_tags(tags)) > 20
        ),
        st.just("tags"),
    ),
)


@st.composite
def broken_tag(draw: st.DrawFn) -> tuple[list[Any], str]:
    """A valid tag list with one bad item; the refusal names that item's index."""
    tags: list[Any] = draw(st.lists(tag_values, max_size=5))
    bad = draw(
        st.sampled_from(["", "   ", "a,b", "a\uff0cb", "x" * 51, "a\u200b", "\ufeffa", "a\u202e"])
        | st.integers()
        | st.none()
        | st.tuples(tag_values, FORBIDDEN).map("".join)
    )
    index = draw(st.integers(0, len(tags)))
    tags.insert(index, bad)
    return tags, f"tags.{index}"


@examples(max_examples=150, deadline=None)
@given(create_bodies(), BROKEN | broken_tag().map(lambda pair: ("tags", pair[0], pair[1])))
def test_a_create_body_breaking_one_rule_is_refused_under_that_field(
    body: dict[str, Any], broken: tuple[str, Any, str]
) -> None:
    name, value, key = broken
    body[name] = value

    details = refusal(validate_create, body)

    assert list(details) == [key]


@examples(max_examples=50, deadline=None)
@given(create_bodies(), st.sampled_from(["id", "version", "completed", "Title", "tag"]))
def test_an_unknown_or_read_only_field_on_create_is_refused_by_its_name(
    body: dict[str, Any], extra: str
) -> None:
    body[extra] = "x"

    details = refusal(validate_create, body)

    assert list(details) == [extra]


@st.composite
def patch_bodies(draw: st.DrawFn) -> dict[str, Any]:
    values = {
        "title": titles,
        "description": descriptions,
        "priority": priorities,
        "due_date": st.none() | calendar_dates,
        "tags": tag_lists,
        "completed": st.booleans(),
    }
    names = draw(st.lists(st.sampled_from(list(values)), unique=True))
    return {name: draw(values[name]) for name in names}


@examples(max_examples=150, deadline=None)
@given(patch_bodies())
def test_a_valid_patch_keeps_exactly_the_fields_present_normalised(body: dict[str, Any]) -> None:
    expected = dict(body)
    if "title" in body:
        expected["title"] = body["title"].strip()
    if "tags" in body:
        expected["tags"] = expected_tags(body["tags"])

    accepted = validate_patch(encode(body))

    assert accepted == expected


@examples(max_examples=100, deadline=None)
@given(
    patch_bodies(),
    st.sampled_from(["title", "priority", "tags", "completed"]),
    st.sampled_from([None, 0, 2.5]),
)
def test_null_or_a_wrongly_typed_value_in_a_patch_is_refused_under_that_field(
    body: dict[str, Any], name: str, value: Any
) -> None:
    body[name] = value

    details = refusal(validate_patch, body)

    assert list(details) == [name]


@examples(max_examples=30, deadline=None)
@given(st.integers(1, 400))
def test_a_due_date_is_accepted_by_its_form_and_the_past_is_left_to_the_application(
    days: int,
) -> None:
    past = (date.today() - timedelta(days=days)).isoformat()

    accepted = validate_create(encode({"title": "x", "due_date": past}))

    assert accepted["due_date"] == past


def test_the_create_normalisation_covers_exactly_the_contract_fields() -> None:
    assert tuple(validate_create(encode({"title": "x"}))) == FIELDS
