"""Driving one load shape with wrk (2 threads, 32 connections by default) and reading its JSON."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.measure import Round

SCRIPT = Path(__file__).with_name("load.lua")
MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class Load:
    """What every request of a run looks like: a path (a prefix when ids are drawn) and a body."""

    method: str
    path: str
    ids_file: Path | None = None
    bodies_file: Path | None = None
    content_type: str = "application/json"


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    return found


def run_wrk(
    base_url: str, load: Load, seconds: int, threads: int = 2, connections: int = 32
) -> Round:
    """One fixed-duration run; status errors count every answer other than 2xx/3xx."""
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        base_url,
        "--",
        load.method,
        load.path,
        str(load.ids_file) if load.ids_file else "-",
        str(load.bodies_file) if load.bodies_file else "-",
        load.content_type,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}")
    data = orjson.loads(lines[-1][len(MARKER) :])
    seconds_taken = data["duration_us"] / 1e6
    latency = data["latency_us"]
    return Round(
        rps=data["requests"] / seconds_taken if seconds_taken > 0 else 0.0,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        requests=int(data["requests"]),
        errors={name: int(count) for name, count in data["errors"].items() if count},
    )
