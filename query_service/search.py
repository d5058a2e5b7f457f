"""Full-text search (`q`) as one tsquery, so one GIN scan: web-search syntax, stemmed (English)
alongside exact words, and the last plain word also matched as a prefix (`financ` finds
`financial`). Every piece of the text is a `$n` argument; nothing of it is written into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Arg = Callable[[Any], str]
"""Adds a value to the statement's arguments and answers its placeholder (`$n`)."""

# The last word of a search, when it is a plain word (not quoted, not excluded): also a prefix.
_LAST_WORD = re.compile(r"(?:^|\s)([^\W_]+)\s*$")
# `or` between groups, outside quotes (web-search syntax: it binds loosest, as in `a b or c`).
_OR = re.compile(r"(?<!\S)or(?!\S)", re.IGNORECASE)


def _words(text: str, arg: Arg) -> str:
    """Stemmed (English); the exact words (simple) when English leaves nothing (stop words
    only). An exact match is a stemmed match too, so OR-ing both would only blur the plan."""
    placeholder = arg(text)
    english = f"websearch_to_tsquery('english', {placeholder})"
    return (
        f"(CASE WHEN numnode({english}) > 0 THEN {english}"
        f" ELSE websearch_to_tsquery('simple', {placeholder}) END)"
    )


def tsquery_sql(q: str, arg: Arg) -> str:
    """The search as one tsquery: web-search syntax, stemmed, and the last plain word matched
    stemmed or as the prefix of an exact word."""
    found = _LAST_WORD.search(q)
    head = q[: found.start(1)] if found else q
    if found is None or found.group(1).lower() == "or" or head.count('"') % 2:
        return _words(q, arg)
    # Only the last `or` group ends with the word: `a or b financ` is a | (b & financ*).
    splits = [m for m in _OR.finditer(head) if head[: m.start()].count('"') % 2 == 0]
    groups = _words(head[: splits[-1].start()], arg) if splits else None
    head = head[splits[-1].end() :] if splits else head
    before = _words(head, arg) if head.strip() else None
    word = found.group(1)
    prefix = f"(websearch_to_tsquery('english', {arg(word)})"
    prefix += f" || to_tsquery('simple', {arg(word + ':*')}))"
    last = prefix if before is None else f"({before} && {prefix})"
    return last if groups is None else f"({groups} || {last})"
