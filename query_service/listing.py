"""A list page: its turn among the list queries, the page and its exact total as of one position,
the cursor and the links that continue the walk, and the body.

At most `list_concurrency` list queries run at once; one that cannot start within
`list_queue_seconds`, one past its statement budget, or one before the read table exists is
503, never a hang. The page, its total and `X-Projection-Position` always describe one snapshot
of the read model: either one statement reads all three, or the page's own snapshot is at the
position a remembered total was counted at (query_service/totals.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import orjson

from query_service.queries import ListQuery, list_statements
from query_service.totals import TotalCache
from query_service.watcher import PositionWatcher
from shared.config import Settings
from shared.errors import ServiceUnavailable


class ListState(Protocol):
    """What a list read needs of the query service's state."""

    settings: Settings
    list_pool: asyncpg.Pool
    list_slots: asyncio.Semaphore
    totals: TotalCache
    watcher: PositionWatcher
    cursor_secret: bytes


@dataclass(frozen=True)
class Page:
    position: int
    """The projection position the page and its total describe."""
    body: bytes
    links: dict[str, str]
    """`next` (by cursor) and `prev` (on an offset page after the first) URLs."""

    def link_header(self) -> dict[str, str] | None:
        if not self.links:
            return None
        return {"Link": ", ".join(f'<{url}>; rel="{rel}"' for rel, url in self.links.items())}


async def read_page(state: ListState, query: ListQuery) -> Page:
    """One page of the walk with its exact total; the watcher learns the position it saw."""
    try:
        async with _turn(state):
            position, total, rows = await _page_and_total(state, query)
    except asyncpg.UndefinedTableError:
        raise ServiceUnavailable(
            "The read model is not initialised yet", {"Retry-After": "1"}
        ) from None
    except asyncpg.QueryCanceledError:
        raise ServiceUnavailable(
            "The list query ran past its time budget; narrow it or try again later",
            {"Retry-After": "1"},
        ) from None
    page = [row for row in rows if row["doc"] is not None]
    more = len(page) > query.limit
    page = page[: query.limit]
    next_cursor = query.next_cursor(page[-1], state.cursor_secret) if more else None
    links = _links(query, next_cursor)
    body = (
        b'{"items":['
        + ",".join(row["doc"] for row in page).encode()
        + b'],"total":'
        + str(total).encode()
        + b',"limit":'
        + str(query.limit).encode()
        + b',"offset":'
        + orjson.dumps(query.offset)
        + b',"next_cursor":'
        + orjson.dumps(next_cursor)
        + b',"next":'
        + orjson.dumps(links.get("next"))
        + b"}"
    )
    state.watcher.advance(position)
    return Page(position, body, links)


def _links(query: ListQuery, next_cursor: str | None) -> dict[str, str]:
    """`next` by cursor (it carries the walk); `prev` on an offset page after the first."""
    links: dict[str, str] = {}
    if next_cursor is not None:
        links["next"] = query.page_url(cursor=next_cursor)
    if query.offset:
        links["prev"] = query.page_url(offset=max(0, query.offset - query.limit))
    return links


@contextlib.asynccontextmanager
async def _turn(state: ListState) -> AsyncIterator[None]:
    """A turn among the list queries: at most `list_concurrency` run at once, and one that
    cannot start within `list_queue_seconds` is 503 (never a hang)."""
    try:
        async with asyncio.timeout(state.settings.list_queue_seconds):
            await state.list_slots.acquire()  # gives the turn back if cancelled once granted
    except TimeoutError:
        raise ServiceUnavailable(
            "Too many list queries at once; try again later", {"Retry-After": "1"}
        ) from None
    try:
        yield
    finally:
        state.list_slots.release()


async def _page_and_total(
    state: ListState, query: ListQuery
) -> tuple[int, int, list[asyncpg.Record]]:
    """The page, its exact total and the position they both describe.

    When a total for these filters is remembered at a position no older than the watcher's,
    the page alone is read; its snapshot's position says whether the total still holds.
    Otherwise (or when the position has moved) one statement reads page, total and position.
    """
    statements = list_statements(query)
    totals = state.totals
    known = totals.position_of(statements.total_key)
    if known is not None and known >= state.watcher.position:
        rows = await state.list_pool.fetch(statements.page_sql, *statements.args)
        position = rows[0]["position"]
        total = totals.total(statements.total_key, position, rows[0]["generation"])
        if total is not None:
            return position, total, rows
    rows = await state.list_pool.fetch(statements.sql, *statements.args)
    position, total = rows[0]["position"], rows[0]["total"]
    totals.remember(statements.total_key, position, total, rows[0]["generation"])
    return position, total, rows
