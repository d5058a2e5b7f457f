"""Prometheus metrics: HTTP requests by route and status, and whatever the app's parts report.

One registry per app (no global state: tests build many apps in one process). This module
knows no service: each part of a process (the event store, the relay, the projector) hands
the app a `MetricSource`, read once per scrape, in the order given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import Scope

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MetricSource = Callable[[], Awaitable[Iterable[Metric]]]
"""A part's live figures, read at each scrape (it may ask a database: a failure is its own)."""


def counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def lag_gauges(name: str, who: str, lag: dict[str, float] | None) -> Iterator[Metric]:
    """`<name>_positions` and `<name>_seconds` for a lag; nothing when it could not be read."""
    if lag is None:
        return
    yield GaugeMetricFamily(
        f"{name}_positions", f"{who} lag behind the store, in positions", value=lag["positions"]
    )
    yield GaugeMetricFamily(
        f"{name}_seconds", f"{who} lag: age of the oldest unprocessed event", value=lag["seconds"]
    )


async def safe_lag(lag: Callable[[], Awaitable[dict[str, float]]]) -> dict[str, float] | None:
    """A lag for a scrape, or None: a scrape must not fail because the database blinked."""
    try:
        return await lag()
    except Exception:  # noqa: BLE001 - a scrape must not fail because the database blinked
        return None


class _Scraped(Collector):
    """What the sources reported for the scrape being rendered."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


class Metrics:
    """The app's registry: requests and latency by route, then the parts' own figures."""

    def __init__(self, sources: Sequence[MetricSource] = ()) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.sources = tuple(sources)
        self.scraped = _Scraped()
        self.registry.register(self.scraped)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count and time one request by its route template (bounded label values)."""
        template = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        self.requests.labels(method, template, str(status)).inc()
        self.latency.labels(method, template).observe(seconds)

    async def render(self) -> Response:
        scraped: list[Metric] = []
        for source in self.sources:
            scraped.extend(await source())
        self.scraped.metrics = scraped
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)
