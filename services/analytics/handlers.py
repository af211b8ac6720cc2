"""Count orders into daily and per-product aggregates; ship orders that are paid and reserved.

Warehouse reacts to `OrderReadyToShip`, which payments or inventory writes in the same
transaction that makes the order both paid and reserved, so it never waits or polls.
Its conditional update also refuses an order that was cancelled since.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import uuid_utils
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.effects import mark_processed, set_step
from shared.db.models import AnalyticsOrder, DailySales, Order, ProductSales, Shipment
from shared.events import Event, OrderCreated, OrderReadyToShip
from shared.latency import simulate
from shared.settings import LatencyProfile
from shared.streams.consumer import Delivery
from shared.tiers import WorkType

ANALYTICS_GROUP = "analytics"
WAREHOUSE_GROUP = "warehouse"


@dataclass(frozen=True)
class AnalyticsContext:
    sessions: async_sessionmaker[AsyncSession]
    latency: LatencyProfile


def new_tracking_number() -> str:
    return "TRK" + uuid_utils.uuid7().hex[-16:].upper()


async def handle_analytics(ctx: AnalyticsContext, event: Event, delivery: Delivery) -> None:
    if not isinstance(event, OrderCreated):
        return
    await simulate(ctx.latency, WorkType.ANALYTICS)
    order = event.order
    day = order.created_at.astimezone(UTC).date()
    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, ANALYTICS_GROUP, event.event_id):
            return
        counted = await session.execute(
            insert(AnalyticsOrder)
            .values(order_id=event.order_id, day=day, amount=order.total_amount)
            .on_conflict_do_nothing()
            .returning(AnalyticsOrder.order_id)
        )
        if counted.scalar_one_or_none() is None:
            return
        units = sum(line.quantity for line in order.items)
        daily = insert(DailySales).values(
            day=day, orders=1, units=units, revenue=order.total_amount
        )
        await session.execute(
            daily.on_conflict_do_update(
                index_elements=[DailySales.day],
                set_={
                    "orders": DailySales.orders + 1,
                    "units": DailySales.units + daily.excluded.units,
                    "revenue": DailySales.revenue + daily.excluded.revenue,
                },
            )
        )
        for product_id, quantity, revenue in _product_totals(event):
            sales = insert(ProductSales).values(
                day=day, product_id=product_id, units=quantity, revenue=revenue
            )
            await session.execute(
                sales.on_conflict_do_update(
                    index_elements=[ProductSales.day, ProductSales.product_id],
                    set_={
                        "units": ProductSales.units + sales.excluded.units,
                        "revenue": ProductSales.revenue + sales.excluded.revenue,
                    },
                )
            )
        await set_step(session, event.order_id, WorkType.ANALYTICS.value, "done")


def _product_totals(event: OrderCreated) -> list[tuple[str, int, Decimal]]:
    totals: dict[str, tuple[int, Decimal]] = {}
    for line in event.order.items:
        units, revenue = totals.get(line.product_id, (0, Decimal(0)))
        totals[line.product_id] = (
            units + line.quantity,
            revenue + line.quantity * line.unit_price,
        )
    return sorted((product, units, revenue) for product, (units, revenue) in totals.items())


async def handle_warehouse(ctx: AnalyticsContext, event: Event, delivery: Delivery) -> None:
    if not isinstance(event, OrderReadyToShip):
        return
    await simulate(ctx.latency, WorkType.WAREHOUSE)
    tracking = new_tracking_number()
    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, WAREHOUSE_GROUP, event.event_id):
            return
        shipped = await session.execute(
            update(Order)
            .where(
                Order.id == event.order_id,
                Order.status == "processing",
                Order.payment_status == "completed",
                Order.stock_status == "reserved",
            )
            .values(status="shipped", tracking_number=tracking, updated_at=datetime.now(UTC))
            .returning(Order.id)
        )
        step = WorkType.WAREHOUSE.value
        if shipped.scalar_one_or_none() is None:
            await set_step(session, event.order_id, step, "skipped", "order not shippable")
            return
        await session.execute(
            insert(Shipment).values(order_id=event.order_id, tracking_number=tracking)
        )
        await set_step(session, event.order_id, step, "done", tracking)
