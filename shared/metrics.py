"""Prometheus metrics. Every name starts with `orderflow_` and carries its unit."""

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = structlog.get_logger("orderflow.metrics")

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
STREAM_LENGTH = Gauge(
    "orderflow_stream_length_entries", "Entries held by a tier stream (XLEN).", ["stream"]
)
GROUP_PENDING = Gauge(
    "orderflow_group_pending_entries",
    "Entries delivered to a consumer group but not acknowledged yet.",
    ["stream", "group"],
)
GROUP_LAG = Gauge(
    "orderflow_group_lag_entries",
    "Entries of the stream not yet delivered to the consumer group.",
    ["stream", "group"],
)
GROUP_CONSUMERS = Gauge(
    "orderflow_group_consumers", "Consumers registered in the group.", ["stream", "group"]
)
GROUP_OLDEST_PENDING_AGE = Gauge(
    "orderflow_group_oldest_pending_age_seconds",
    "Age of the group's oldest unacknowledged entry, from its id's timestamp; 0 when none.",
    ["stream", "group"],
)
DEAD_LETTERS = Gauge(
    "orderflow_dead_letters_entries", "Entries in a tier's dead-letter stream.", ["stream"]
)
STEP_LATENCY = Histogram(
    "orderflow_order_step_latency_seconds",
    "Time from an order's acceptance to the end of one of its steps, by step.",
    ["step"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
ORDER_LATENCY = Histogram(
    "orderflow_order_processing_seconds",
    "Time from an order's acceptance until its last step ended.",
    buckets=LATENCY_BUCKETS_SECONDS,
)
STREAM_BACKLOG = Gauge(
    "orderflow_stream_backlog_entries",
    "Entries of a tier stream not yet acknowledged by its slowest group (lag plus pending).",
    ["stream"],
)


def record_handler_outcome(group: str, outcome: str, _event_type: str, seconds: float) -> None:
    EVENTS_HANDLED.labels(group, outcome).inc()
    HANDLER_DURATION.labels(group, outcome).observe(seconds)


def serve_metrics(host: str, port: int) -> None:
    """Serve /metrics on host:port in a thread; a port in use is logged, not fatal."""
    if not port:
        return
    try:
        start_http_server(port, host)
    except OSError as exc:
        log.warning("metrics port unavailable, serving no metrics", port=port, error=str(exc))
        return
    log.info("serving metrics", url=f"http://{host}:{port}/metrics")
