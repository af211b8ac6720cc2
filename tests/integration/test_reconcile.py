"""The reconciler against a real PostgreSQL: which orders it queues again after Redis lost data.

Besides orders with an unfinished step, it must pick up cancelled or declined orders whose
compensation (refund, stock release, payment-failed e-mail) never ran, although every one of
their steps is final.
"""

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.reconcile import reconcile
from services.gateway.relay import OutboxRelay
from shared.db.models import (
    EmailRecord,
    Order,
    OrderItem,
    OrderStep,
    OutboxRecord,
    Payment,
    StockReservation,
)
from shared.tiers import TierMap, WorkType

pytestmark = pytest.mark.timeout(30)

WAIT_TIMEOUT_SECONDS = 10.0

FINAL_STEPS = {
    WorkType.PAYMENT: "done",
    WorkType.INVENTORY: "done",
    WorkType.EMAIL: "done",
    WorkType.INVOICE: "done",
    WorkType.ANALYTICS: "done",
    WorkType.WAREHOUSE: "skipped",
}


async def add_order(
    sessions: async_sessionmaker[AsyncSession], status: str, steps: dict[WorkType, str]
) -> str:
    order_id = f"ORD-{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        session.add(
            Order(
                id=order_id,
                customer_id="cust-1",
                customer_email="cust-1@example.com",
                payment_method="credit_card",
                shipping_address={"street": "1 Main St", "city": "Springfield"},
                status=status,
                payment_status="completed",
                stock_status="reserved",
                total_amount=Decimal("20.00"),
                cancel_reason="changed my mind" if status == "cancelled" else None,
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        session.add(
            OrderItem(
                order_id=order_id,
                line_no=1,
                product_id="prod-1",
                product_name="Lamp",
                quantity=2,
                unit_price=Decimal("10.00"),
            )
        )
        for work, state in steps.items():
            session.add(OrderStep(order_id=order_id, step=work.value, state=state))
    return order_id


async def add_effects(
    sessions: async_sessionmaker[AsyncSession],
    order_id: str,
    payment: str | None = None,
    held_stock: bool = False,
    failure_mail: bool = False,
) -> None:
    async with sessions.begin() as session:
        if payment is not None:
            session.add(
                Payment(
                    order_id=order_id,
                    amount=Decimal("20.00"),
                    status=payment,
                    provider_reference=f"ch_{order_id}",
                    decline_reason="card limit" if payment == "declined" else None,
                )
            )
        if held_stock:
            session.add(StockReservation(order_id=order_id, product_id="prod-1", quantity=2))
        if failure_mail:
            session.add(
                EmailRecord(order_id=order_id, kind="payment-failed", message_id=f"<{order_id}>")
            )


async def queued_types(sessions: async_sessionmaker[AsyncSession], order_id: str) -> set[str]:
    async with sessions() as session:
        rows = await session.execute(
            select(OutboxRecord.event_type).where(OutboxRecord.order_id == order_id)
        )
        return set(rows.scalars())


async def test_reconcile_requeues_cancel_when_payment_captured(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    order_id = await add_order(sessions, "cancelled", FINAL_STEPS)
    await add_effects(sessions, order_id, payment="captured")

    assert await reconcile(sessions) == 1
    assert await queued_types(sessions, order_id) == {"OrderCreated", "OrderCancelled"}


async def test_reconcile_requeues_cancel_when_stock_held(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    order_id = await add_order(sessions, "cancelled", FINAL_STEPS)
    await add_effects(sessions, order_id, payment="refunded", held_stock=True)

    assert await reconcile(sessions) == 1
    assert "OrderCancelled" in await queued_types(sessions, order_id)


async def test_reconcile_requeues_failure_when_mail_missing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    steps = {**FINAL_STEPS, WorkType.PAYMENT: "failed", WorkType.INVENTORY: "skipped"}
    order_id = await add_order(sessions, "payment_failed", steps)
    await add_effects(sessions, order_id, payment="declined")

    assert await reconcile(sessions) == 1
    assert await queued_types(sessions, order_id) == {"OrderCreated", "PaymentFailed"}


async def test_reconcile_skips_orders_when_settled(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cancelled = await add_order(sessions, "cancelled", FINAL_STEPS)
    await add_effects(sessions, cancelled, payment="refunded")
    steps = {**FINAL_STEPS, WorkType.PAYMENT: "failed", WorkType.INVENTORY: "skipped"}
    declined = await add_order(sessions, "payment_failed", steps)
    await add_effects(sessions, declined, payment="declined", failure_mail=True)
    shipped = await add_order(sessions, "shipped", {**FINAL_STEPS, WorkType.WAREHOUSE: "done"})
    await add_effects(sessions, shipped, payment="captured", held_stock=True)

    assert await reconcile(sessions) == 0
    assert await queued_types(sessions, cancelled) == set()
    assert await queued_types(sessions, declined) == set()
    assert await queued_types(sessions, shipped) == set()


async def test_relay_reconciles_when_redis_marker_missing(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, stream_prefix: str
) -> None:
    order_id = await add_order(sessions, "pending", dict.fromkeys(WorkType, "pending"))
    relay = OutboxRelay(sessions, redis, TierMap(stream_prefix), batch_size=10, poll_seconds=0.1)
    marker = f"{stream_prefix}orderflow:reconciled-run-id"

    watcher = asyncio.create_task(relay.watch_redis_restarts())
    try:
        deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
        while not await redis.exists(marker):
            assert time.monotonic() < deadline, "the relay did not reconcile in time"
            assert not watcher.done(), "watch_redis_restarts ended early"
            await asyncio.sleep(0.05)
    finally:
        relay.stopping.set()
        await asyncio.wait_for(watcher, timeout=5)

    assert await queued_types(sessions, order_id) == {"OrderCreated"}
