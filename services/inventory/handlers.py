"""Reserve an order's stock, all lines or none; release it when payment fails or the order
is cancelled. An order that cannot be reserved is cancelled, which refunds its payment."""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.inventory.stock import quantities_by_product
from shared.db.effects import add_to_outbox, mark_processed, set_step
from shared.db.models import Order, Product, StockReservation
from shared.events import (
    Event,
    OrderCancelled,
    OrderCreated,
    OrderReadyToShip,
    PaymentFailed,
)
from shared.latency import simulate
from shared.settings import LatencyProfile
from shared.streams.consumer import Delivery
from shared.tiers import WorkType

GROUP = "inventory"
STEP = WorkType.INVENTORY.value
UNRESERVABLE_STATUSES = frozenset({"cancelled", "payment_failed", "shipped"})


@dataclass(frozen=True)
class InventoryContext:
    sessions: async_sessionmaker[AsyncSession]
    latency: LatencyProfile


class OutOfStock(Exception):
    def __init__(self, product_id: str, quantity: int) -> None:
        self.product_id = product_id
        super().__init__(f"{product_id} has fewer than {quantity} units in stock")


async def handle(ctx: InventoryContext, event: Event, delivery: Delivery) -> None:
    if isinstance(event, OrderCreated):
        await reserve_stock(ctx, event)
    elif isinstance(event, PaymentFailed | OrderCancelled):
        await release_stock(ctx, event.event_id, event.order_id)


async def reserve_stock(ctx: InventoryContext, event: OrderCreated) -> None:
    await simulate(ctx.latency, WorkType.INVENTORY, len(event.order.items))
    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, GROUP, event.event_id):
            return
        # Locking the order first orders this transaction against payment and cancel.
        row = (
            await session.execute(
                select(Order.status, Order.stock_status)
                .where(Order.id == event.order_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise LookupError(f"order {event.order_id} not found; its event arrived first")
        status, stock_status = row
        if stock_status != "pending":
            return
        if status in UNRESERVABLE_STATUSES:
            await set_step(session, event.order_id, STEP, "skipped", f"order is {status}")
            return

        quantities = quantities_by_product(event.order.items)
        try:
            async with session.begin_nested():
                await _take_stock(session, event.order_id, quantities)
        except OutOfStock as exc:
            await _cancel_for_missing_stock(session, event.order_id, str(exc))
            return

        ready = status == "confirmed"
        await session.execute(
            update(Order)
            .where(Order.id == event.order_id)
            .values(
                stock_status="reserved",
                status="processing" if ready else status,
                updated_at=datetime.now(UTC),
            )
        )
        await set_step(
            session, event.order_id, STEP, "done", f"{len(quantities)} products reserved"
        )
        if ready:
            await add_to_outbox(session, OrderReadyToShip(order_id=event.order_id))


async def _take_stock(
    session: AsyncSession, order_id: str, quantities: list[tuple[str, int]]
) -> None:
    for product_id, quantity in quantities:
        reserved = await session.execute(
            update(Product)
            .where(Product.id == product_id, Product.stock >= quantity)
            .values(stock=Product.stock - quantity)
            .returning(Product.id)
        )
        if reserved.scalar_one_or_none() is None:
            raise OutOfStock(product_id, quantity)
    await session.execute(
        insert(StockReservation),
        [
            {"order_id": order_id, "product_id": product_id, "quantity": quantity}
            for product_id, quantity in quantities
        ],
    )


async def _cancel_for_missing_stock(session: AsyncSession, order_id: str, reason: str) -> None:
    now = datetime.now(UTC)
    await session.execute(
        update(Order)
        .where(Order.id == order_id)
        .values(
            stock_status="out_of_stock",
            status="cancelled",
            cancel_reason=f"out of stock: {reason}",
            updated_at=now,
        )
    )
    await set_step(session, order_id, STEP, "failed", f"out of stock: {reason}")
    await set_step(session, order_id, WorkType.WAREHOUSE.value, "skipped", "order cancelled")
    await add_to_outbox(session, OrderCancelled(order_id=order_id, reason="out of stock"))


async def release_stock(ctx: InventoryContext, event_id: str, order_id: str) -> None:
    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, GROUP, event_id):
            return
        await session.execute(select(Order.id).where(Order.id == order_id).with_for_update())
        released = await session.execute(
            update(StockReservation)
            .where(StockReservation.order_id == order_id, StockReservation.released_at.is_(None))
            .values(released_at=datetime.now(UTC))
            .returning(StockReservation.product_id, StockReservation.quantity)
        )
        rows = sorted(released.all())
        for product_id, quantity in rows:
            await session.execute(
                update(Product)
                .where(Product.id == product_id)
                .values(stock=Product.stock + quantity)
            )
        if rows:
            await session.execute(
                update(Order).where(Order.id == order_id).values(stock_status="released")
            )
            await set_step(session, order_id, STEP, "released", f"{len(rows)} products released")
