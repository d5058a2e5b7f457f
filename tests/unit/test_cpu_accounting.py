"""The benchmark's /proc accounting counts a process's own CPU, its live children's and the CPU
of children that ended, once each, and turns two samples into milliseconds per request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cpu import (
    Meter,
    Root,
    children,
    per_request_ms,
    processes_named,
    read_stat,
    tree_seconds,
)

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"
TICK = 1 / os.sysconf("SC_CLK_TCK")


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_own_cpu_matches_the_process_clock() -> None:
    meter = Meter({"me": (Root(os.getpid(), tree=False),)})
    before, clock = meter.sample(), time.process_time()

    burn(0.3)

    spent = meter.sample()["me"] - before["me"]
    assert spent == pytest.approx(time.process_time() - clock, abs=3 * TICK)
    assert spent >= 0.3 - 3 * TICK


def test_the_stat_line_is_parsed_whatever_the_command_name() -> None:
    stat = read_stat(os.getpid())

    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()
    assert stat.own == pytest.approx(time.process_time(), abs=0.05)


def test_a_live_child_counts_in_the_tree_and_not_in_the_parent_alone() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BURN.format(seconds=0.4) + "import time; time.sleep(30)\n"]
    )
    try:
        deadline = time.monotonic() + 30
        while read_stat(child.pid).own < 0.4 - TICK and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = read_stat(os.getpid()).own

        tree = tree_seconds(os.getpid())

        assert tree - mine >= 0.4 - 3 * TICK
    finally:
        child.kill()
        child.wait()


def test_an_ended_child_moves_into_the_parents_total_without_being_counted_twice() -> None:
    root = Meter({"tree": (Root(os.getpid()),)})
    before = root.sample()["tree"]

    subprocess.run([sys.executable, "-c", BURN.format(seconds=0.4)], check=True)

    after = root.sample()["tree"]
    waited = read_stat(os.getpid()).waited
    assert waited >= 0.4 - 3 * TICK
    # The child's start-up adds some CPU; a double count would add another 0.4 s at least.
    assert 0.4 - 3 * TICK <= after - before < 0.8


def test_a_process_that_is_gone_counts_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()

    assert tree_seconds(child.pid) == 0.0


def test_topmost_processes_by_name_leave_out_their_same_named_children(tmp_path: Path) -> None:
    # A Python under a name of its own, which starts a child under the same name.
    named = tmp_path / "cpuacct-top"
    named.symlink_to(sys.executable)
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([{str(named)!r}, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([str(named), "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        [child] = children(parent.pid)
        assert read_stat(child).comm == read_stat(parent.pid).comm == "cpuacct-top"

        assert processes_named("cpuacct-top") == [parent.pid]
    finally:
        for pid in children(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_two_samples_become_milliseconds_per_request_with_a_total() -> None:
    spent = per_request_ms(
        {"service": 1.0, "postgres": 2.0}, {"service": 1.5, "postgres": 2.2}, 100
    )

    assert spent == pytest.approx({"service": 5.0, "postgres": 2.0, "total": 7.0})
    assert per_request_ms({"service": 1.0}, {"service": 2.0}, 0) == {}
