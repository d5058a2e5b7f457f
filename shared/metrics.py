"""Prometheus metrics: HTTP requests by route and status, and the pipeline's counters and lag."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PipelineCollector(Collector):
    """Reads the live counters of whatever this process runs (writes, relay, projector)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        appended = getattr(getattr(self.state, "tasks", None), "appended", None)
        if appended is not None:
            yield _counter("tasks_events_appended", "Events appended to the store", appended)
        relay = getattr(self.state, "relay", None)
        if relay is not None:
            yield _counter(
                "tasks_events_published", "Events confirmed by RabbitMQ", relay.published
            )
            yield from _lag("tasks_relay_lag", "Relay", getattr(self.state, "relay_lag", None))
        projector = getattr(self.state, "projector", None)
        if projector is not None:
            yield _counter(
                "tasks_events_projected", "Events applied to the read table", projector.applied
            )
            yield _counter(
                "tasks_dead_letters", "Messages set aside as undecodable", projector.dead_lettered
            )
            yield from _lag(
                "tasks_projection_lag", "Projection", getattr(self.state, "projection_lag", None)
            )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _lag(name: str, who: str, lag: dict[str, float] | None) -> Iterator[Metric]:
    if lag is None:
        return
    yield GaugeMetricFamily(
        f"{name}_positions", f"{who} lag behind the store, in positions", value=lag["positions"]
    )
    yield GaugeMetricFamily(
        f"{name}_seconds", f"{who} lag: age of the oldest unprocessed event", value=lag["seconds"]
    )


class Metrics:
    """One registry per app (no global state: tests build many apps in one process)."""

    def __init__(self, state: Any) -> None:
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
        self.registry.register(PipelineCollector(state))

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count and time one request by its route template (bounded label values)."""
        template = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        self.requests.labels(method, template, str(status)).inc()
        self.latency.labels(method, template).observe(seconds)

    async def render(self, request: Request) -> Response:
        state = request.app.state
        if getattr(state, "relay", None) is not None:
            state.relay_lag = await _safe(state.relay.lag)
        if getattr(state, "projector", None) is not None:
            state.projection_lag = await _safe(state.projector.lag)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)


async def _safe(lag: Any) -> dict[str, float] | None:
    try:
        result: dict[str, float] = await lag()
    except Exception:  # noqa: BLE001 - a scrape must not fail because the database blinked
        return None
    return result
