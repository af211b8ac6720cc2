"""One order gives one connected trace: HTTP request, outbox publish, and each handler.

The hops between the gateway, the relay and the services go through PostgreSQL and Redis
exactly as between processes: the trace context travels in the outbox record and the
stream entry's headers. Spans are collected with an in-memory exporter.
"""

import asyncio
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.analytics.handlers import AnalyticsContext, handle_analytics
from services.gateway.app import create_app
from services.gateway.relay import OutboxRelay
from services.payments.handlers import PaymentsContext
from services.payments.handlers import handle as handle_payment
from services.payments.provider import SimulatedProvider
from shared.settings import LatencyProfile, Settings
from shared.streams.consumer import ConsumerOptions, GroupConsumer, GroupSpec
from shared.telemetry import configure_tracing
from shared.tiers import TierMap, WorkType

pytestmark = pytest.mark.timeout(60)

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "sample-order.json"
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    configure_tracing("orderflow-tests", exporter=EXPORTER)
    yield EXPORTER
    EXPORTER.clear()


async def wait_for(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_order_trace_connects_request_to_handlers(
    spans: InMemorySpanExporter,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    spans.clear()
    tiers = TierMap(settings.stream_prefix)
    payments = PaymentsContext(
        sessions, SimulatedProvider(settings.payment_limit), LatencyProfile.NONE
    )
    analytics = AnalyticsContext(sessions, LatencyProfile.NONE)
    consumers = [
        GroupConsumer(
            redis,
            GroupSpec(
                group=group,
                stream=tiers.stream_of(work),
                dead_letter_stream=tiers.dead_letter_stream(tiers.tier_of(work)),
                handler=handler,
                accepts=frozenset({"OrderCreated"}),
            ),
            ConsumerOptions(block_ms=50, handler_timeout_seconds=5, reclaim_idle_seconds=10),
        )
        for group, work, handler in (
            ("payments", WorkType.PAYMENT, partial(handle_payment, payments)),
            ("analytics", WorkType.ANALYTICS, partial(handle_analytics, analytics)),
        )
    ]
    relay = OutboxRelay(sessions, redis, tiers, batch_size=100, poll_seconds=1)
    tasks = [asyncio.create_task(consumer.run()) for consumer in consumers]

    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post(
            "/api/v1/orders",
            content=SAMPLE.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 201
        order_id = response.json()["id"]
        assert await relay.publish_batch() == 1

        async def handled() -> bool:
            names = {span.name for span in spans.get_finished_spans()}
            return {"handle payments OrderCreated", "handle analytics OrderCreated"} <= names

        await wait_for(handled)

    for consumer in consumers:
        consumer.stop()
    await asyncio.gather(*tasks)

    finished = spans.get_finished_spans()
    by_name = {span.name: span for span in finished}
    request = by_name["POST /api/v1/orders"]
    publish = by_name["publish OrderCreated"]
    payment = by_name["handle payments OrderCreated"]
    counting = by_name["handle analytics OrderCreated"]
    trace_id = request.context.trace_id

    assert request.kind is SpanKind.SERVER
    assert publish.kind is SpanKind.PRODUCER
    assert payment.kind is SpanKind.CONSUMER
    assert publish.parent is not None and publish.parent.span_id == request.context.span_id
    assert payment.parent is not None and payment.parent.span_id == publish.context.span_id
    assert counting.parent is not None and counting.parent.span_id == publish.context.span_id
    assert payment.attributes is not None and payment.attributes["order.id"] == order_id
    order_spans = [span for span in finished if span.context.trace_id == trace_id]
    database_spans = [
        span
        for span in order_spans
        if span.attributes and span.attributes.get("db.system") == "postgresql"
    ]
    handler_ids = {payment.context.span_id, counting.context.span_id}
    assert any(span.parent and span.parent.span_id in handler_ids for span in database_spans)
    assert any(
        span.parent and span.parent.span_id == request.context.span_id for span in database_spans
    )
