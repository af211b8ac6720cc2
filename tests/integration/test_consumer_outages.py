"""GroupConsumer against a real Redis: failures blamed on an outage never dead-letter an entry.

The handler fails with a refused connection more often than the retry limit allows, as it
would while PostgreSQL restarts, and the entry must still be handled once the outage ends.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import cast

import pytest
from redis.asyncio import Redis

from shared.events import Event, OrderReadyToShip, encode_entry
from shared.outages import is_dependency_outage
from shared.streams.consumer import ConsumerOptions, Delivery, GroupConsumer, GroupSpec
from shared.streams.groups import ensure_group
from shared.streams.retry import RetryPolicy

pytestmark = pytest.mark.timeout(30)

GROUP = "warehouse"
MAX_ATTEMPTS = 3
POLL_INTERVAL_SECONDS = 0.02
WAIT_TIMEOUT_SECONDS = 10.0


def make_consumer(
    redis: Redis, prefix: str, handler: Callable[[Event, Delivery], Awaitable[None]]
) -> GroupConsumer:
    spec = GroupSpec(
        group=GROUP,
        stream=f"{prefix}orders.low",
        dead_letter_stream=f"{prefix}orders.low.dead",
        handler=handler,
        accepts=frozenset({"OrderReadyToShip"}),
    )
    options = ConsumerOptions(
        batch_size=10,
        block_ms=50,
        handler_timeout_seconds=0.5,
        reclaim_idle_seconds=1.0,
        retry=RetryPolicy(base_seconds=0.01, cap_seconds=0.02, max_attempts=MAX_ATTEMPTS),
        is_outage=is_dependency_outage,
    )
    return GroupConsumer(redis, spec, options)


class FlakyHandler:
    """Fails with a refused connection `outage_failures` times, then with `final_error`."""

    def __init__(self, outage_failures: int, final_error: Exception | None = None) -> None:
        self.outage_failures = outage_failures
        self.final_error = final_error
        self.attempts: list[int] = []
        self.handled = 0

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        self.attempts.append(delivery.attempt)
        if len(self.attempts) <= self.outage_failures:
            raise ConnectionRefusedError(111, "Connect call failed")
        if self.final_error is not None:
            raise self.final_error
        self.handled += 1


@asynccontextmanager
async def running(consumer: GroupConsumer) -> AsyncIterator[None]:
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=5)


async def add_entry(redis: Redis, stream: str) -> None:
    event = OrderReadyToShip(order_id=f"ORD-{uuid.uuid4().hex}")
    fields = encode_entry(event.type, event.event_id, event.order_id, event.model_dump_json(), {})
    await redis.xadd(stream, cast(dict[str | bytes, str], fields))  # type: ignore[arg-type]


async def wait_for(check: Callable[[], Awaitable[bool]], description: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_TIMEOUT_SECONDS} s: {description}")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


async def test_outage_retries_exceed_limit_when_dependency_down(
    redis: Redis, stream_prefix: str
) -> None:
    handler = FlakyHandler(outage_failures=MAX_ATTEMPTS * 2)
    consumer = make_consumer(redis, stream_prefix, handler)
    stream = consumer.spec.stream
    await ensure_group(redis, stream, GROUP)
    await add_entry(redis, stream)

    async def handled() -> bool:
        return handler.handled == 1

    async with running(consumer):
        await wait_for(handled, "the entry handled after the outage")

    assert len(handler.attempts) == MAX_ATTEMPTS * 2 + 1
    assert await redis.xlen(consumer.spec.dead_letter_stream) == 0
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_own_failures_dead_letter_after_outage(redis: Redis, stream_prefix: str) -> None:
    handler = FlakyHandler(outage_failures=MAX_ATTEMPTS * 2, final_error=ValueError("bad"))
    consumer = make_consumer(redis, stream_prefix, handler)
    stream = consumer.spec.stream
    await ensure_group(redis, stream, GROUP)
    await add_entry(redis, stream)

    async def dead_lettered() -> bool:
        return int(await redis.xlen(consumer.spec.dead_letter_stream)) == 1

    async with running(consumer):
        await wait_for(dead_lettered, "the entry dead-lettered")

    own_failures = len(handler.attempts) - MAX_ATTEMPTS * 2
    assert own_failures == MAX_ATTEMPTS
    assert handler.handled == 0
