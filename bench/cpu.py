"""CPU time of the processes a scenario involves, from `/proc`, as a figure that does not drift
with the machine's load the way throughput does.

A process tree's CPU time is its own `utime + stime`, plus `cutime + cstime` (children it has
waited for), plus the same of every live child, recursively. Children that end between two
samples move from "live" to their parent's `cutime`, so the total never goes backwards and
nothing is counted twice: PostgreSQL's backends come and go under the postmaster, uvicorn's
workers under the service.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    """The fields of `/proc/<pid>/stat` this module needs (times in seconds)."""

    pid: int
    comm: str
    ppid: int
    own: float
    """utime + stime"""
    waited: float
    """cutime + cstime: children that ended and were waited for"""


def read_stat(pid: int | str) -> Stat:
    text = (PROC / str(pid) / "stat").read_text()
    # comm is in parentheses and may itself hold spaces or parentheses: split at the last ")".
    head, _, tail = text.rpartition(")")
    number, _, comm = head.partition(" (")
    fields = tail.split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return Stat(
        int(number), comm, int(fields[1]), (utime + stime) / TICKS, (cutime + cstime) / TICKS
    )


def children(pid: int) -> list[int]:
    """Live children of `pid`, from every thread's `children` list."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in (PROC / str(pid) / "task").iterdir():
            # A thread may end between listing and reading.
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def tree_seconds(pid: int) -> float:
    """CPU seconds of `pid` and all its descendants, live or waited for; 0 once it is gone."""
    try:
        stat = read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return stat.own + stat.waited + sum(tree_seconds(child) for child in children(pid))


def own_seconds(pid: int) -> float:
    """CPU seconds of `pid` alone (all its threads), without its children."""
    try:
        return read_stat(pid).own
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def processes_named(name: str) -> list[int]:
    """The topmost processes whose command is `name` (their parent is not also `name`)."""
    stats: dict[int, Stat] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
                stat = read_stat(entry.name)
                if stat.comm == name:
                    stats[stat.pid] = stat
    return sorted(pid for pid, stat in stats.items() if stat.ppid not in stats)


@dataclass(frozen=True)
class Root:
    """One measured process: with `tree`, its descendants too."""

    pid: int
    tree: bool = True

    def seconds(self) -> float:
        return tree_seconds(self.pid) if self.tree else own_seconds(self.pid)


@dataclass(frozen=True)
class Meter:
    """Named groups of processes whose CPU time is sampled before and after a measured round.

    Picklable, so a child process (the write ceilings) can sample the same groups.
    """

    groups: dict[str, tuple[Root, ...]] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        return {name: sum(root.seconds() for root in roots) for name, roots in self.groups.items()}

    def only(self, names: Iterable[str]) -> Meter:
        return Meter({name: roots for name, roots in self.groups.items() if name in names})

    def with_group(self, name: str, *roots: Root) -> Meter:
        return Meter({**self.groups, name: roots})


def per_request_ms(
    before: dict[str, float], after: dict[str, float], requests: int
) -> dict[str, float]:
    """CPU milliseconds per request of each group between two samples, and their `total`."""
    if requests <= 0:
        return {}
    spent = {name: max(0.0, after[name] - before[name]) * 1000 / requests for name in before}
    spent["total"] = sum(spent.values())
    return spent


def postgres_roots(backend_pid: int) -> tuple[Root, ...]:
    """The PostgreSQL server's processes: the postmaster above one of its backends (so every
    backend, background worker and ended backend counts), else every topmost `postgres`."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        parent = read_stat(read_stat(backend_pid).ppid)
        if parent.comm in ("postgres", "postmaster"):
            return (Root(parent.pid),)
    return tuple(Root(pid) for pid in processes_named("postgres"))


def rabbitmq_roots() -> tuple[Root, ...]:
    """The broker's Erlang VM (`beam.smp`) and its helper children."""
    return tuple(Root(pid) for pid in processes_named("beam.smp"))
