"""The total cache: exact only at the position it was counted at, bounded, keyed by the filter."""

from __future__ import annotations

import re
from datetime import date
from urllib.parse import parse_qsl

import pytest

from query_service import filters
from query_service.queries import ListQuery, list_statements, parse_list_query
from query_service.totals import TotalCache

SECRET = b"test-secret"


def highest_parameter(sql: str) -> int:
    return max(int(n) for n in re.findall(r"\$(\d+)", sql))


def parse(query_string: str) -> ListQuery:
    items = parse_qsl(query_string, keep_blank_values=True)
    return parse_list_query(items, max_offset=100_000, secret=SECRET)


def test_a_total_is_served_only_at_the_position_it_was_counted_at() -> None:
    cache = TotalCache()
    cache.remember("k", 7, 120)

    at_seven, at_eight, at_six = cache.total("k", 7), cache.total("k", 8), cache.total("k", 6)

    assert (at_seven, at_eight, at_six) == (120, None, None)
    assert cache.total("other", 7) is None


def test_a_total_counted_at_an_older_position_never_replaces_a_newer_one() -> None:
    cache = TotalCache()
    cache.remember("k", 9, 50)

    cache.remember("k", 8, 49)

    assert cache.position_of("k") == 9
    assert cache.total("k", 9) == 50
    assert cache.total("k", 8) is None


def test_a_newer_total_replaces_the_older_one() -> None:
    cache = TotalCache()
    cache.remember("k", 9, 50)

    cache.remember("k", 10, 51)

    assert (cache.total("k", 10), cache.total("k", 9)) == (51, None)


def test_the_cache_keeps_at_most_its_size_dropping_the_least_recently_used() -> None:
    cache = TotalCache(size=3)
    for n in range(3):
        cache.remember(f"f{n}", 1, n)
    cache.total("f0", 1)

    cache.remember("f3", 1, 3)

    assert len(cache.entries) == 3
    assert cache.position_of("f1") is None
    assert [cache.total(f"f{n}", 1) for n in (0, 2, 3)] == [0, 2, 3]


def test_sort_limit_offset_and_cursor_share_the_total_of_their_filters() -> None:
    first = list_statements(parse("tags=work,urgent&priority=3"))
    others = [
        list_statements(parse(q))
        for q in (
            "priority=3&tags=urgent,WORK&limit=5",
            "tags=work,urgent&priority=3&sort=title&offset=40",
            "priority=3&tags=work,urgent&sort=-due_date,priority",
        )
    ]

    assert {statements.total_key for statements in others} == {first.total_key}


@pytest.mark.parametrize(
    "query_string",
    [
        "tags=work",
        "tags_all=work,urgent",
        "priority=3,4",
        "include_deleted=true&tags=work,urgent&priority=3",
        "completed=true&tags=work,urgent&priority=3",
        "q=work&tags=work,urgent&priority=3",
    ],
)
def test_other_filters_have_other_totals(query_string: str) -> None:
    reference = list_statements(parse("tags=work,urgent&priority=3")).total_key

    key = list_statements(parse(query_string)).total_key

    assert key != reference


def test_the_overdue_total_belongs_to_its_utc_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filters, "_today", lambda: date(2026, 11, 26))
    today = list_statements(parse("overdue=true")).total_key
    monkeypatch.setattr(filters, "_today", lambda: date(2026, 11, 27))

    tomorrow = list_statements(parse("overdue=true")).total_key

    assert today != tomorrow


def test_both_statements_take_the_same_arguments_and_only_one_counts() -> None:
    statements = list_statements(parse("tags=work&priority=3&offset=10&sort=title"))

    assert "count(*)" in statements.sql
    assert "count(*)" not in statements.page_sql
    assert highest_parameter(statements.sql) == len(statements.args)
    assert highest_parameter(statements.page_sql) == len(statements.args)
