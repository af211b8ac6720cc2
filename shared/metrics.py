"""Prometheus metrics. Every name starts with `orderflow_` and carries its unit."""

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_SECONDS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

HTTP_REQUESTS = Counter(
    "orderflow_http_requests_total",
    "HTTP requests answered by the gateway, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "orderflow_http_request_duration_seconds",
    "Time from request start to the end of the response, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
EVENTS_PUBLISHED = Counter(
    "orderflow_events_published_total",
    "Stream entries appended by the outbox relay, by stream and event type.",
    ["stream", "event_type"],
)
EVENTS_HANDLED = Counter(
    "orderflow_events_handled_total",
    "Entries handled by a consumer group, by outcome: processed, retried or dead_lettered.",
    ["group", "outcome"],
)
HANDLER_DURATION = Histogram(
    "orderflow_handler_duration_seconds",
    "Time a handler took, by consumer group and outcome.",
    ["group", "outcome"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
OUTBOX_BACKLOG = Gauge(
    "orderflow_outbox_backlog_records",
    "Outbox records not yet published, as last seen by the relay.",
)
STREAM_BACKLOG = Gauge(
    "orderflow_stream_backlog_entries",
    "Entries of a tier stream not yet acknowledged by its slowest group (lag plus pending).",
    ["stream"],
)


def record_handler_outcome(group: str, outcome: str, _event_type: str, seconds: float) -> None:
    EVENTS_HANDLED.labels(group, outcome).inc()
    HANDLER_DURATION.labels(group, outcome).observe(seconds)
