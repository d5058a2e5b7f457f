"""List parameters: every rule of api.md, the key each 422 names, the cursor and keyset SQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote

import pytest

from query_service.cursors import decode_cursor, encode_cursor
from query_service.queries import (
    ListQuery,
    list_statement,
    parse_list_query,
)
from shared.errors import ValidationFailed

SECRET = b"test-secret"


def parse(query_string: str) -> ListQuery:
    # As Starlette reads a query string: blank values kept, percent-escapes decoded.
    items = parse_qsl(query_string, keep_blank_values=True)
    return parse_list_query(items, max_offset=100_000, secret=SECRET)


def refused_key(query_string: str) -> str:
    with pytest.raises(ValidationFailed) as caught:
        parse(query_string)
    details = caught.value.details
    assert isinstance(details, dict)
    assert len(details) == 1
    return next(iter(details))


@pytest.mark.parametrize(
    ("query_string", "key"),
    [
        ("colour=red", "colour"),
        ("Completed=true", "Completed"),
        ("limit=5&limit=6", "limit"),
        ("priority=", "priority"),
        ("tags=", "tags"),
        ("limit", "limit"),
        ("tags=work,,home", "tags"),
        ("tags=work,", "tags"),
        ("priority=1, ,2", "priority"),
        ("tags=" + ",".join(f"t{i}" for i in range(51)), "tags"),
        ("priority=" + ",".join(["3"] * 51), "priority"),
        ("tags=" + "x" * 51, "tags"),
        ("completed=True", "completed"),
        ("completed=1", "completed"),
        ("completed=yes", "completed"),
        ("overdue=TRUE", "overdue"),
        ("has_due_date=0", "has_due_date"),
        ("include_deleted=false ", "include_deleted"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=%D9%A3", "limit"),  # ARABIC-INDIC DIGIT THREE: int() would read it
        ("limit=5%0A", "limit"),  # a trailing newline is not a number's end
        ("offset=100001", "offset"),
        ("offset=-1", "offset"),
        ("priority=0", "priority"),
        ("priority=6", "priority"),
        ("priority=high", "priority"),
        ("priority_min=0", "priority_min"),
        ("priority_max=9", "priority_max"),
        ("q=" + "a" * 201, "q"),
        ("q=report%00", "q"),
        ("q=report%1B", "q"),
        ("q=report%7F", "q"),
        ("q=report%C2%85", "q"),  # NEL, a C1 control
        ("tags=wo%01rk", "tags"),
        ("due_before=2026-13-01", "due_before"),
        ("due_before=2026-1-01", "due_before"),
        ("due_after=2026-02-30", "due_after"),
        ("due_after=2026-02-01T00:00:00Z", "due_after"),
        ("created_after=2026-01-01T00:00:00", "created_after"),
        ("created_after=2026-01-01", "created_after"),
        ("created_before=2026-01-01T00:00:00+01:00", "created_before"),  # '+' arrived as a space
        ("updated_after=yesterday", "updated_after"),
        ("updated_after=2026-01-01T25:00:00Z", "updated_after"),
        ("sort=colour", "sort"),
        ("sort=title,-title", "sort"),
        ("sort=priority,priority", "sort"),
        ("sort=--title", "sort"),
        ("sort=title,", "sort"),
        ("cursor=abc&offset=0", "cursor"),
        ("cursor=abc", "cursor"),
        ("min_position=-1", "min_position"),
        ("min_position=x", "min_position"),
    ],
)
def test_each_invalid_parameter_is_refused_naming_it(query_string: str, key: str) -> None:
    assert refused_key(query_string) == key


def test_no_parameters_mean_live_tasks_newest_first_twenty_at_offset_zero() -> None:
    query = parse("")

    assert query.filters == []
    assert query.include_deleted is False
    assert query.sort == [("created_at", True)]
    assert (query.limit, query.offset, query.after) == (20, 0, None)


def test_valid_values_are_parsed_and_normalised() -> None:
    query = parse(
        "completed=false&priority=5,4,5&tags=%20Work%20,URGENT,work&tags_all=home"
        "&due_before=2026-12-31&created_after=2026-01-01T00:00:00%2B02:00"
        "&updated_after=2026-01-01T00:00:00.5Z&q=%22quarterly+report%22+-draft"
        "&sort=-priority,due_date,title&limit=100&offset=100000&include_deleted=true"
    )

    filters = dict(query.filters)
    assert filters["completed"] is False
    assert filters["priority"] == [4, 5]
    assert filters["tags"] == ["urgent", "work"]
    assert filters["tags_all"] == ["home"]
    assert filters["due_before"] == date(2026, 12, 31)
    assert filters["created_after"] == datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert filters["updated_after"] == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert filters["q"] == '"quarterly report" -draft'
    assert query.sort == [("priority", True), ("due_date", False), ("title", False)]
    assert (query.limit, query.offset, query.include_deleted) == (100, 100_000, True)


def test_tab_and_newline_are_allowed_in_text_parameters() -> None:
    query = parse("q=quarterly%09report%0Adraft")

    assert dict(query.filters)["q"] == "quarterly\treport\ndraft"


def test_the_offset_bound_is_a_setting() -> None:
    items = [("offset", "501")]

    with pytest.raises(ValidationFailed):
        parse_list_query(items, max_offset=500, secret=SECRET)
    assert parse_list_query(items, max_offset=501, secret=SECRET).offset == 501


def test_a_cursor_continues_only_the_query_it_came_from() -> None:
    walk = [("sort", "title"), ("tags", "work,home")]
    cursor = encode_cursor(["abc", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"], walk, SECRET)

    same = parse(f"tags=HOME,work&sort=title&limit=7&cursor={cursor}")

    assert same.after is not None
    assert [same.after[0], str(same.after[1])] == ["abc", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"]
    assert same.offset is None
    assert same.limit == 7
    assert refused_key(f"tags=work&sort=title&cursor={cursor}") == "cursor"
    assert refused_key(f"tags=work,home&sort=-title&cursor={cursor}") == "cursor"
    assert (
        refused_key(f"tags=work,home&sort=title&include_deleted=true&cursor={cursor}") == "cursor"
    )


def test_a_cursor_alone_carries_its_filter_and_sort() -> None:
    walk = [("completed", "false"), ("sort", "-priority,title"), ("tags", "work")]
    cursor = encode_cursor([4, "abc", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"], walk, SECRET)

    alone = parse(f"cursor={cursor}")

    assert alone.sort == [("priority", True), ("title", False)]
    assert dict(alone.filters) == {"completed": False, "tags": ["work"]}
    assert alone.walk == walk


def test_a_cursor_signed_with_another_secret_or_altered_is_refused() -> None:
    walk = [("sort", "title")]
    foreign = encode_cursor(["abc", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"], walk, b"other")
    genuine = encode_cursor(["abc", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"], walk, SECRET)
    altered = genuine[:20] + ("B" if genuine[20] == "A" else "A") + genuine[21:]

    for cursor in (foreign, altered, genuine + "A", "", "@@@"):
        with pytest.raises(ValidationFailed):
            decode_cursor(cursor, SECRET)
    assert decode_cursor(genuine, SECRET)[0][0] == "abc"


def test_the_keyset_after_a_due_date_lets_tasks_without_one_follow_in_both_directions() -> None:
    for sort in ("due_date", "-due_date"):
        query = parse(f"sort={sort}")
        query.after = ["2026-05-01", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"]

        statement, _ = list_statement(query)

        assert "due_date IS NULL" in statement
        assert "NULLS LAST" in statement


def test_a_cursor_whose_values_do_not_fit_the_sort_is_refused() -> None:
    walk = [("sort", "due_date")]
    for values in (["not a date", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"], ["2026-05-01"]):
        cursor = encode_cursor(values, walk, SECRET)

        assert refused_key(f"cursor={cursor}") == "cursor"


def test_the_statement_takes_every_value_as_a_parameter() -> None:
    # Ends in `;`, not a word: the search goes whole, with no prefix part split off.
    query = parse("q=x%27%3B+DROP+TABLE+tasks%3B&tags=a%27b&sort=title")
    query.after = ["t'; --", "0f7c0b33-69b1-4d6a-9d0e-0b7f6f3f2a11"]

    statement, args = list_statement(query)

    assert "DROP" not in statement
    assert "'b" not in statement
    assert "x'; DROP TABLE tasks;" in args
    assert "t'; --" in args


@pytest.mark.parametrize(
    ("q", "parts"),
    [
        ("financ", ["financ", "financ:*"]),
        ("quarterly financ", ["quarterly ", "financ", "financ:*"]),
        ('"quarterly report"', ['"quarterly report"']),
        ('"quarterly report', ['"quarterly report']),
        ("report -draft", ["report -draft"]),
        ("report or", ["report or"]),
        ("report or plan", ["report ", "plan", "plan:*"]),
        ("report or plan financ", ["report ", " plan ", "financ", "financ:*"]),
        ('"a or b" financ', ['"a or b" ', "financ", "financ:*"]),
        ("report draft?", ["report draft?"]),
    ],
)
def test_the_last_plain_word_of_a_search_is_also_a_prefix(q: str, parts: list[str]) -> None:
    query = parse(f"q={quote(q)}")

    _, args = list_statement(query)

    assert [arg for arg in args if isinstance(arg, str)] == parts
