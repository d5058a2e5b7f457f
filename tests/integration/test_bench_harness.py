"""The benchmark harness runs end to end on a tiny data set and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import asyncpg
import pytest

from tests.helpers import ROOT

SCENARIOS = {
    "get",
    "list",
    "search",
    "title",
    "offset",
    "cursor",
    "offset_vacuumed",
    "patch",
    "create",
    "read_after_write",
}
CEILED = SCENARIOS - {"read_after_write"}
"""Scenarios with a ceiling of their own, and CPU sampled around their wrk rounds (a create
followed by a read is driven by the harness's own client, not wrk)."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("wrk") is None, reason="wrk is not installed (make bench does)"
    ),
]


@dataclass(frozen=True)
class Run:
    done: subprocess.CompletedProcess[str]
    out: Path

    def results(self) -> dict[str, Any]:
        assert self.done.returncode == 0, self.done.stderr[-5000:]
        [json_file] = self.out.glob("*.json")
        data: dict[str, Any] = json.loads(json_file.read_text())
        return data


@pytest.fixture(scope="module")
def harness(service_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One run of `python -m bench` on 200 tasks, 1-second scenarios, shared by the tests."""
    database_url, amqp_url = service_urls
    out = tmp_path_factory.mktemp("bench")
    command = [
        *(sys.executable, "-m", "bench", "--tasks", "200", "--rounds", "1"),
        *("--warmup", "1", "--duration", "1", "--lag-seconds", "1", "--out", str(out)),
        *("--database-url", database_url, "--amqp-url", amqp_url),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return Run(done, out)


def test_the_harness_measures_every_scenario_and_its_ceiling_without_errors(harness: Run) -> None:
    results = harness.results()

    assert results["seed"]["tasks"] == 200
    assert set(results["scenarios"]) == SCENARIOS
    for name, entry in results["scenarios"].items():
        assert entry["http"]["requests"] > 0, name
        assert entry["http"]["errors"] == 0, (name, entry["http"]["rounds"])
        if name in CEILED:
            assert entry["ceiling"]["requests"] > 0, name
            assert entry["ceiling"]["errors"] == 0, name
            # CPU per request of each process involved, sampled from /proc around every round.
            cpu = entry["http"]["cpu_ms"]
            assert cpu["service"] > 0, (name, cpu)
            assert cpu["postgres"] > 0, (name, cpu)
            assert cpu["total"] == pytest.approx(sum(v for k, v in cpu.items() if k != "total"))
            rounds = entry["http"]["rounds"]
            assert all(round_["cpu_ms"]["service"] > 0 for round_ in rounds), name
            assert entry["ceiling"]["cpu_ms"]["postgres"] > 0, name
    assert results["scenarios"]["read_after_write"]["http"]["p99_ms"] > 0
    assert results["ceilings"]["http"]["requests"] > 0
    assert results["ceilings"]["http"]["cpu_ms"]["trivial"] > 0
    # The deep offset is measured as seeded and again after a manual VACUUM, side by side.
    assert results["scenarios"]["offset"]["read_table_before"]["heap_fetches"] >= 0
    assert results["scenarios"]["offset_vacuumed"]["read_table_before"]["last_vacuum"]
    assert "offset" in {c["what"] for c in results["targets"] if "offset_vacuumed" in c["target"]}
    # The performance targets, each against what the same run measured beside it.
    targets = {(c["what"], c["target"]) for c in results["targets"]}
    assert ("get", "≥ 60% of the trivial endpoint") in targets
    assert ("create", "≥ 150% of raw append") in targets
    assert ("patch", "≥ 100% of raw update") in targets
    assert ("title", "≥ 50% of raw SQL") in targets
    assert results["projection_lag"]["writes"] > 0
    assert results["projection_lag"]["failures"] == []
    assert results["rebuild"]["events"] >= 200
    assert results["feed"]["events"] >= 200
    assert results["feed"]["events_per_second"] > 0
    assert results["rebuild"]["cpu_ms_per_1000_events"]["rebuild"] > 0
    assert results["projection_lag"]["cpu_ms"]["service"] > 0
    assert all(mb > 0 for mb in results["rss_mb"]["service"].values())
    assert {"projection lag", "rebuild", *SCENARIOS} <= {c["what"] for c in results["targets"]}


def test_the_harness_writes_a_markdown_table_of_every_scenario_and_prints_it(harness: Run) -> None:
    results = harness.results()

    [markdown_file] = harness.out.glob("*.md")

    table = markdown_file.read_text()
    assert markdown_file.stem == next(harness.out.glob("*.json")).stem
    assert "| scenario | req/s | p99 | CPU ms per request | ceiling req/s |" in table
    for entry in results["scenarios"].values():
        assert f"| {entry['label']} |" in table
    for measure in (
        "projection lag",
        "event feed paging",
        "rebuild of",
        "peak RSS: cli.py serve",
        "= ",
        "service ",
    ):
        assert measure in table
    assert table in harness.done.stdout


async def test_the_harness_drops_its_databases_queues_and_exchange_afterwards(
    harness: Run, service_urls: tuple[str, str]
) -> None:
    database_url, amqp_url = service_urls
    results = harness.results()

    conn = await asyncpg.connect(database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = ANY($1::text[])",
            [results["database"], results["database"] + "_ceiling"],
        )
    finally:
        await conn.close()

    assert left == 0
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for queue in results["queues"]:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(queue, passive=True)
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await channel.declare_exchange(results["exchange"], passive=True)
