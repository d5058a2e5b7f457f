"""The bounded soak (`make soak`) runs end to end on a short budget: load, memory, verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_a_two_second_soak_serves_mixed_traffic_without_errors_and_verifies_clean(
    service_urls: tuple[str, str], tmp_path: Path
) -> None:
    database_url, amqp_url = service_urls
    command = [sys.executable, "-m", "bench.soak", "--duration", "2", "--max-requests", "3000"]
    command += ["--seed-tasks", "30", "--connections", "4", "--out", str(tmp_path)]
    command += ["--database-url", database_url, "--amqp-url", amqp_url]

    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    [result_file] = tmp_path.glob("soak-*.json")
    result = json.loads(result_file.read_text())
    load = result["load"]
    assert 0 < load["requests"] <= 3000
    assert load["errors"] == {}
    # The heaviest kinds of the mix (12 % or more each) always show up, even on a slow machine.
    assert {"get", "list", "list_filtered", "create", "patch"} <= {
        kind for kind, statuses in load["statuses"].items() if statuses
    }
    assert load["p50_ms"] <= load["p99_ms"]
    assert result["verify"]["differences"] == 0
    for moment in ("start", "end"):
        memory = result["memory_mb"][moment]
        assert 0 < memory["VmRSS"] <= memory["VmHWM"]
    assert (tmp_path / result_file.name.replace(".json", ".md")).read_text().startswith("# Soak")
