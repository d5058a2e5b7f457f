"""Read-your-writes as a plain REST client meets it, against processes started for real: a bare
keep-alive client (no cookie, no header of ours) reads back every write by id at once, and a
client that keeps cookies finds each new task in a list at once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from bench.client import Connection
from shared.config import Settings
from tests.e2e.test_gateway import NGINX, gateway_stack
from tests.helpers import JSON, running

pytestmark = pytest.mark.slow

ROUNDS = 200
LIST_ROUNDS = 100
MODES = ["single process", "two worker processes", "split behind the gateway"]
GATEWAY_RATE = 100
"""Requests a second the gateway allows one client (deploy/nginx.conf's limit_req): a client
behind it keeps to that between rounds; within a round each read follows its write at once."""


@contextlib.contextmanager
def deployed(mode: str, settings: Settings, tmp_path: Path) -> Iterator[str]:
    """The whole API on one base URL, deployed as `mode`."""
    if mode == "split behind the gateway":
        if NGINX is None:
            pytest.skip("nginx is not installed (.ci/run installs Debian's nginx with apt-get)")
        with gateway_stack(settings.model_copy(update={"access_log": False}), tmp_path) as stack:
            yield stack.url
        return
    workers = 2 if mode == "two worker processes" else 1
    configured = settings.model_copy(update={"workers": workers, "access_log": False})
    with running(configured, tmp_path, ["cli.py", "serve"], "port") as server:
        yield server.url


async def stale_reads_of_a_bare_client(base_url: str, rounds: int, pace: float = 0.0) -> list[str]:
    """Create, read; patch, read; delete, read, on one keep-alive connection that sends no
    cookie and no header of ours: every read that does not show the write just made."""
    address = urlsplit(base_url)
    assert address.hostname is not None
    assert address.port is not None
    connection = Connection(address.hostname, address.port)
    body = {"Content-Type": "application/json"}
    stale: list[str] = []
    try:
        for n in range(rounds):
            await asyncio.sleep(pace)
            created = await connection.request(
                "POST", "/api/v1/tasks", orjson.dumps({"title": f"task {n}"}), body
            )
            assert created.status == 201, created.body
            path = created.headers["location"]
            read = await connection.request("GET", path)
            if read.status != 200 or orjson.loads(read.body) != orjson.loads(created.body):
                stale.append(f"{n} create: {read.status}")
            patched = await connection.request(
                "PATCH", path, orjson.dumps({"priority": 1 + n % 5, "title": f"t{n}"}), body
            )
            assert patched.status == 200, patched.body
            read = await connection.request("GET", path)
            if read.status != 200 or orjson.loads(read.body) != orjson.loads(patched.body):
                stale.append(f"{n} patch: {read.status}")
            deleted = await connection.request("DELETE", path)
            assert deleted.status == 204, deleted.body
            read = await connection.request("GET", path)
            if read.status != 404:
                stale.append(f"{n} delete: {read.status}")
    finally:
        await connection.close()
    return stale


async def misses_of_a_cookie_keeping_client(
    base_url: str, rounds: int, pace: float = 0.0
) -> list[str]:
    """Create a task with a fresh tag, then list that tag, on a client that keeps cookies:
    every list that does not hold the new task."""
    misses: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for n in range(rounds):
            await asyncio.sleep(pace)
            tag = f"fresh-{uuid.uuid4().hex[:12]}"
            created = await http.post(
                "/api/v1/tasks", headers=JSON, json={"title": f"list {n}", "tags": [tag]}
            )
            assert created.status_code == 201, created.text
            listed = await http.get("/api/v1/tasks", params={"tags": tag})
            if listed.status_code != 200 or listed.json()["items"] != [created.json()]:
                misses.append(f"{n}: {listed.status_code} {listed.text[:200]}")
    return misses


@pytest.mark.parametrize("mode", MODES)
async def test_a_bare_keep_alive_client_reads_back_every_write_by_id_at_once(
    settings: Settings, tmp_path: Path, mode: str
) -> None:
    # A round is six requests for the bare client and two for the cookie-keeping one.
    per_request = 1 / GATEWAY_RATE if mode == "split behind the gateway" else 0.0
    with deployed(mode, settings, tmp_path) as url:
        stale = await stale_reads_of_a_bare_client(url, ROUNDS, 6 * per_request)
        misses = await misses_of_a_cookie_keeping_client(url, LIST_ROUNDS, 2 * per_request)

    assert stale == []
    assert misses == []
