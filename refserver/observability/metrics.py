"""Prometheus metrics: one `CollectorRegistry` per app, request metrics recorded as they happen, and collectors
that read the existing `statistics()` methods at scrape time (so the observed modules need no metric code).

Names (all prefixed `refserver_`) are listed in docs/operations.md. Label values are bounded: routes are URL
rules (`/mcp`, not the requested path), methods are the HTTP methods we know, statuses are numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import attrs
from attrs import AttrsInstance
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds to the response headers: a healthy echo is a few ms; 30 s is beyond any request that is not a stream."""
REDIS_BUCKETS: Final = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
"""One bridged Redis call takes well under a millisecond locally; 2 s is the command timeout."""
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Any other method is counted as `other`, so a client cannot create label values."""
AUTH_FAILURE_REASONS: Final = ("missing_token", "invalid_token", "insufficient_scope", "auth_server_unavailable")
UNMATCHED_ROUTE: Final = "unmatched"

Kind = Literal["gauge", "counter"]


@attrs.frozen
class Stat:
    """One number of a `statistics()` record (or dict), exported as a metric."""

    key: str
    name: str
    kind: Kind
    help: str


REGISTRY_STATS: Final = (
    Stat("sessions", "refserver_sessions", "gauge", "Live MCP sessions on this instance."),
    Stat("in_flight_requests", "refserver_mcp_requests_in_flight", "gauge", "MCP requests executing here."),
    Stat("created", "refserver_sessions_created", "counter", "Sessions created on this instance."),
    Stat("adopted", "refserver_sessions_adopted", "counter", "Sessions taken over from the store (Redis)."),
    Stat("reaped_idle", "refserver_sessions_reaped_idle", "counter", "Sessions closed by the idle reaper."),
    Stat("deleted", "refserver_sessions_deleted", "counter", "Sessions ended by DELETE (or their legacy stream)."),
    Stat("draining", "refserver_draining", "gauge", "1 while shutdown drains this instance."),
)
EVENT_LOG_STATS: Final = (
    Stat("streams", "refserver_event_log_streams", "gauge", "Streams held in memory (memory backend)."),
    Stat("streams_watched", "refserver_event_log_streams", "gauge", "Streams with local listeners (Redis backend)."),
    Stat("events_appended", "refserver_event_log_events_appended", "counter", "Events appended to the event log."),
)
REDIS_STATS: Final = (
    Stat("running", "refserver_redis_up", "gauge", "1 while the Redis connection runs."),
    Stat("connections", "refserver_redis_connections", "gauge", "Pooled Redis connections."),
    Stat("in_use", "refserver_redis_connections_in_use", "gauge", "Pooled Redis connections in use."),
    Stat("in_flight", "refserver_redis_commands_in_flight", "gauge", "Redis calls waiting for an answer."),
    Stat("commands", "refserver_redis_commands", "counter", "Redis calls started (a pipeline or script is one)."),
    Stat("errors", "refserver_redis_errors", "counter", "Redis calls that failed (timeouts included)."),
    Stat("timeouts", "refserver_redis_timeouts", "counter", "Redis calls that timed out."),
)
WRITE_STALL_STATS: Final = (
    Stat("pending_writes", "refserver_http_pending_writes", "gauge", "Response writes waiting for their client."),
    Stat(
        "dropped",
        "refserver_http_stalled_connections_dropped",
        "counter",
        "Connections dropped because a write waited past REFSERVER_WRITE_STALL_LIMIT for a client not reading.",
    ),
)
TASK_RUNNER_STATS: Final = (
    Stat("running", "refserver_tasks_running", "gauge", "Task runs in progress on this instance."),
    Stat("workers", "refserver_task_workers", "gauge", "Task runs this instance takes at once."),
    Stat("runs_ended", "refserver_task_runs_ended", "counter", "Task runs that ended here with their outcome."),
    Stat("runs_lost", "refserver_task_runs_lost", "counter", "Claimed task runs whose instance had been lost."),
)
TASK_STORE_STATS: Final = (
    Stat("created", "refserver_tasks_created", "counter", "Tasks created through this instance."),
    Stat("refused", "refserver_tasks_refused", "counter", "Task creations refused by a bound (per user, queue)."),
    Stat("queued", "refserver_task_queue_length", "gauge", "Task runs queued or running (last seen here)."),
)
BUS_STATS: Final = (
    Stat("connected", "refserver_pubsub_connected", "gauge", "1 while the pub/sub subscriber is connected."),
    Stat("channels", "refserver_pubsub_channels", "gauge", "Pub/sub channels subscribed."),
    Stat("received", "refserver_pubsub_messages_received", "counter", "Pub/sub messages received."),
    Stat("published", "refserver_pubsub_messages_published", "counter", "Pub/sub messages published."),
    Stat("reconnects", "refserver_pubsub_reconnects", "counter", "Pub/sub connection failures (each retry)."),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


Statistics = Mapping[str, Any] | AttrsInstance
"""What a `statistics()` method returns: a frozen attrs record (the backend's) or a dict (the others')."""


def statistics_fields(values: Statistics) -> Mapping[str, Any]:
    return values if isinstance(values, Mapping) else attrs.asdict(values, recurse=False)


class StatisticsCollector:
    """Exports numbers of `source()` (a `statistics()` method) when Prometheus scrapes."""

    def __init__(self, source: Callable[[], Statistics], stats: Sequence[Stat]) -> None:
        self._source = source
        self._stats = tuple(stats)

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known for sure at collection (memory and Redis event logs differ)

    def collect(self) -> Iterable[Metric]:
        values = statistics_fields(self._source())
        for stat in self._stats:
            value = _number(values.get(stat.key))
            if value is None:
                continue
            if stat.kind == "counter":
                yield CounterMetricFamily(stat.name, stat.help, value=value)
            else:
                yield GaugeMetricFamily(stat.name, stat.help, value=value)


class VerifierCollector:
    """The token verifier: whether its authorization server answers, and its verification outcomes."""

    OUTCOMES: Final = ("accepted", "rejected", "unavailable")

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        values = self._source()
        yield GaugeMetricFamily(
            "refserver_auth_server_up",
            "1 while the authorization server answers (always 1 when embedded).",
            value=0.0 if values.get("state") == "degraded" else 1.0,
        )
        outcomes = CounterMetricFamily(
            "refserver_token_verifications", "Bearer tokens verified, by outcome.", labels=["outcome"]
        )
        for outcome in self.OUTCOMES:
            value = _number(values.get(outcome))
            if value is not None:
                outcomes.add_metric([outcome], value)
        yield outcomes


class _LiveCollector:
    """The two gauges the HTTP middleware keeps as plain integers."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "refserver_http_requests_in_flight",
            "HTTP requests received whose response headers are not sent yet.",
            value=self._metrics.in_flight,
        )
        yield GaugeMetricFamily(
            "refserver_http_open_streams", "SSE responses being streamed to clients.", value=self._metrics.open_streams
        )


class Metrics:
    """The metric objects of one app; `render()` is the `/metrics` body."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        # No `_created` series: a timestamp per label set doubles the page and no dashboard here uses it.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "refserver_http_requests",
            "HTTP requests answered, by method, route (URL rule) and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "refserver_http_request_duration_seconds",
            "Seconds from a request's arrival to its response headers (an SSE stream's length is not included).",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = 0
        """HTTP requests received whose response headers are not sent yet (plain ints: no lock per request)."""
        self.open_streams = 0
        """SSE responses being streamed to clients."""
        self.registry.register(_LiveCollector(self))
        self.auth_failures = Counter(
            "refserver_auth_failures",
            "MCP requests refused by the resource server, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        self.redis_latency = Histogram(
            "refserver_redis_command_duration_seconds",
            "Seconds per Redis call (a pipeline or a script is one call), failures included; kind=pubsub is the "
            "subscriber connection, whose reads wait up to 50 ms for a message by design.",
            ["kind"],
            buckets=REDIS_BUCKETS,
            registry=self.registry,
        )
        self._redis_children = {kind: self.redis_latency.labels(kind) for kind in ("command", "pubsub")}
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        if process_metrics:
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in KNOWN_METHODS else "other", route, str(status))
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (self.requests.labels(*key), self.latency.labels(*key))
        children[0].inc()
        children[1].observe(seconds)

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason if reason in AUTH_FAILURE_REASONS else "other").inc()

    def observe_redis_call(self, command: Callable[..., Any], seconds: float) -> None:
        """`RedisConnection.on_call`: the subscriber's calls are told apart by the helper that builds them."""
        kind = "pubsub" if "pubsub" in getattr(command, "__qualname__", "") else "command"
        self._redis_children[kind].observe(seconds)

    def add_statistics(self, source: Callable[[], Statistics], stats: Sequence[Stat]) -> None:
        self.registry.register(StatisticsCollector(source, stats))

    def add_verifier(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self.registry.register(VerifierCollector(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)
