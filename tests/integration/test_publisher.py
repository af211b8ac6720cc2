"""publish_events against a real Redis: routing to tier streams in one pipeline."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.events import (
    Event,
    OrderCreated,
    OrderLine,
    OrderReadyToShip,
    OrderSnapshot,
    decode_entry,
)
from shared.streams.publisher import OutgoingEvent, publish_events
from shared.tiers import Tier, TierMap

pytestmark = pytest.mark.timeout(30)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class PipelineRecorder:
    """A stand-in for the Redis client that records the commands of each executed pipeline.

    Any use of the client outside a pipeline raises AssertionError, so a stray command fails.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.executed: list[list[str]] = []

    def pipeline(self, transaction: bool = True) -> Pipeline:
        pipe = self._redis.pipeline(transaction=transaction)
        execute = pipe.execute

        async def recording_execute(raise_on_error: bool = True) -> list[Any]:
            self.executed.append([str(args[0]).upper() for args, _ in pipe.command_stack])
            return await execute(raise_on_error)

        pipe.execute = recording_execute  # type: ignore[method-assign]
        return pipe

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"publish_events called redis.{name} outside a pipeline")


def order_created() -> OrderCreated:
    snapshot = OrderSnapshot(
        customer_id="cust-123",
        customer_email="customer@example.com",
        payment_method="credit_card",
        shipping_address={
            "street": "123 Main St",
            "city": "San Francisco",
            "state": "CA",
            "postal_code": "94102",
            "country": "USA",
        },
        items=(
            OrderLine(
                product_id="prod-1",
                product_name="Laptop",
                quantity=1,
                unit_price=Decimal("1200.00"),
            ),
            OrderLine(
                product_id="prod-2", product_name="Mouse", quantity=2, unit_price=Decimal("25.00")
            ),
        ),
        total_amount=Decimal("1250.00"),
        created_at=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
    )
    return OrderCreated(order_id="ORD-0195f3a2-test", order=snapshot)


def outgoing(event: OrderCreated | OrderReadyToShip, headers: dict[str, str]) -> OutgoingEvent:
    return OutgoingEvent(
        event.type, event.event_id, event.order_id, event.model_dump_json(), headers
    )


async def stream_entries(redis: Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream))


async def decoded(redis: Redis, stream: str) -> list[tuple[Event, dict[str, str]]]:
    return [decode_entry(fields) for _, fields in await stream_entries(redis, stream)]


async def test_publish_routes_each_event_when_batch_mixed(redis: Redis, stream_prefix: str) -> None:
    tiers = TierMap(prefix=stream_prefix)
    created = order_created()
    ready = OrderReadyToShip(order_id=created.order_id)
    headers = {"traceparent": TRACEPARENT, "baggage": "tenant=shop-1"}
    recorder = PipelineRecorder(redis)

    written = await publish_events(
        cast(Redis, recorder), tiers, [outgoing(created, headers), outgoing(ready, {})]
    )

    critical, high, default, low = (tiers.stream(tier) for tier in Tier)
    assert written == [critical, high, default, low, low]
    assert recorder.executed == [["XADD"] * 5]
    for stream in (critical, high, default):
        assert await decoded(redis, stream) == [(created, headers)]
    assert await decoded(redis, low) == [(created, headers), (ready, {})]


async def test_publish_keeps_entry_fields_when_decoded(redis: Redis, stream_prefix: str) -> None:
    tiers = TierMap(prefix=stream_prefix)
    created = order_created()

    await publish_events(redis, tiers, [outgoing(created, {"traceparent": TRACEPARENT})])

    [(_, fields)] = await stream_entries(redis, tiers.stream(Tier.CRITICAL))
    assert fields[b"type"] == b"OrderCreated"
    assert fields[b"event_id"] == created.event_id.encode()
    assert fields[b"order_id"] == created.order_id.encode()
    assert fields[b"h-traceparent"] == TRACEPARENT.encode()
    event, _ = decode_entry(fields)
    assert isinstance(event, OrderCreated)
    assert event.order.total_amount == Decimal("1250.00")
    assert event.order.items[1].unit_price == Decimal("25.00")


async def test_publish_follows_overrides_when_tiers_configured(
    redis: Redis, stream_prefix: str
) -> None:
    tiers = TierMap(prefix=stream_prefix, overrides={"warehouse": "critical", "analytics": "high"})
    created = order_created()
    ready = OrderReadyToShip(order_id=created.order_id)

    written = await publish_events(redis, tiers, [outgoing(created, {}), outgoing(ready, {})])

    critical, high, default, low = (tiers.stream(tier) for tier in Tier)
    assert written == [critical, high, default, critical]
    assert await redis.exists(low) == 0
    assert await decoded(redis, critical) == [(created, {}), (ready, {})]


async def test_publish_skips_event_when_type_unknown(redis: Redis, stream_prefix: str) -> None:
    tiers = TierMap(prefix=stream_prefix)
    recorder = PipelineRecorder(redis)
    unknown = OutgoingEvent("OrderArchived", "event-1", "ORD-1", "{}", {})

    written = await publish_events(cast(Redis, recorder), tiers, [unknown])

    assert written == []
    assert recorder.executed == []
    for stream in tiers.all_streams():
        assert await redis.exists(stream) == 0
