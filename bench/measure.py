"""One measured round (throughput, latency, errors, CPU per request) and the median over several
rounds."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.cpu import Meter, per_request_ms


@dataclass(frozen=True)
class Round:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: dict[str, int] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per request of each process group involved (`bench.cpu`), and `total`."""


@dataclass(frozen=True)
class Summary:
    """Medians over the rounds; errors summed, so a single failure anywhere shows."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    rounds: list[Round]
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """Median over the rounds of each group's CPU milliseconds per request."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rounds"] = [asdict(r) for r in self.rounds]
        return data


def summarise(rounds: list[Round]) -> Summary:
    return Summary(
        rps=statistics.median(r.rps for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        requests=sum(r.requests for r in rounds),
        errors=sum(sum(r.errors.values()) for r in rounds),
        rounds=rounds,
        cpu_ms={
            name: statistics.median(r.cpu_ms[name] for r in rounds if name in r.cpu_ms)
            for name in dict.fromkeys(name for r in rounds for name in r.cpu_ms)
        },
    )


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def from_latencies(latencies: list[float], seconds: float, errors: int = 0) -> Round:
    """A round from per-request latencies in seconds, over `seconds` of wall time."""
    ordered = sorted(latencies)
    return Round(
        rps=len(ordered) / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        requests=len(ordered),
        errors={"failed": errors} if errors else {},
    )


def with_cpu(measured: Round, meter: Meter, before: dict[str, float]) -> Round:
    """`measured` with the CPU per request each group spent since `before` (`meter.sample()`)."""
    return replace(measured, cpu_ms=per_request_ms(before, meter.sample(), measured.requests))
