"""The reconciler: publishes again the events of orders whose steps stopped short.

When Redis restarts without its data, entries that were published but not yet handled are
gone. The relay notices the restart (Redis's run id changes) and runs `reconcile`, which
rebuilds each unfinished order's events from PostgreSQL and queues them in the outbox again.
An order is unfinished while one of its steps is. A cancelled or declined order is also
unfinished while it still has reserved stock, a cancelled one while its payment is still
captured, and a declined one until its payment-failed e-mail is sent, because these
compensations follow events that no step waits for.
Event ids are derived from the order id, so groups that had handled an event skip it.
"""

from collections.abc import Sequence
from datetime import datetime

import structlog
from sqlalchemy import and_, exists, or_, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.effects import OUTBOX_CHANNEL
from shared.db.models import (
    EmailRecord,
    Order,
    OrderItem,
    OrderStep,
    OutboxRecord,
    Payment,
    StockReservation,
)
from shared.events import (
    BaseEvent,
    OrderCancelled,
    OrderCreated,
    OrderLine,
    OrderReadyToShip,
    OrderSnapshot,
    PaymentFailed,
)

log = structlog.get_logger("orderflow.reconcile")

UNFINISHED_STEP_STATES = ("pending", "processing")
# The `emails.kind` of the e-mail the notifications service sends on PaymentFailed.
PAYMENT_FAILED_MAIL_KIND = "payment-failed"
BATCH_SIZE = 500


def events_for(order: Order, items: Sequence[OrderItem], decline: str | None) -> list[BaseEvent]:
    """Return the events an order in this state has had published, rebuilt from its rows."""
    snapshot = OrderSnapshot(
        customer_id=order.customer_id,
        customer_email=order.customer_email,
        payment_method=order.payment_method,
        shipping_address=order.shipping_address,
        items=tuple(
            OrderLine(
                product_id=item.product_id,
                product_name=item.product_name,
                quantity=item.quantity,
                unit_price=item.unit_price,
            )
            for item in items
        ),
        total_amount=order.total_amount,
        created_at=order.created_at,
    )
    events: list[BaseEvent] = [
        OrderCreated(order_id=order.id, order=snapshot, occurred_at=order.created_at)
    ]
    if order.status == "processing":
        events.append(OrderReadyToShip(order_id=order.id))
    if order.status == "payment_failed":
        events.append(PaymentFailed(order_id=order.id, reason=decline or "payment failed"))
    if order.status == "cancelled":
        events.append(OrderCancelled(order_id=order.id, reason=order.cancel_reason or ""))
    return events


async def _requeue(session: AsyncSession, events: list[BaseEvent]) -> None:
    for event in events:
        statement = insert(OutboxRecord).values(
            event_id=event.event_id,
            order_id=event.order_id,
            event_type=str(getattr(event, "type", "")),
            payload=event.model_dump_json(),
            headers={},
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[OutboxRecord.event_id], set_={"published_at": None}
            )
        )


async def reconcile(
    sessions: async_sessionmaker[AsyncSession], created_before: datetime | None = None
) -> int:
    """Queue again the events of every unfinished order; return the order count."""
    unfinished_step = exists().where(
        OrderStep.order_id == Order.id, OrderStep.state.in_(UNFINISHED_STEP_STATES)
    )
    held_stock = exists().where(
        StockReservation.order_id == Order.id, StockReservation.released_at.is_(None)
    )
    captured = exists().where(Payment.order_id == Order.id, Payment.status == "captured")
    failure_mail = exists().where(
        EmailRecord.order_id == Order.id, EmailRecord.kind == PAYMENT_FAILED_MAIL_KIND
    )
    unfinished = or_(
        unfinished_step,
        and_(Order.status.in_(("cancelled", "payment_failed")), held_stock),
        and_(Order.status == "cancelled", captured),
        and_(Order.status == "payment_failed", ~failure_mail),
    )
    query = select(Order).where(unfinished).order_by(Order.created_at, Order.id)
    if created_before is not None:
        query = query.where(Order.created_at < created_before)

    total = 0
    last: tuple[datetime, str] | None = None
    while True:
        page = (
            query
            if last is None
            else query.where(tuple_(Order.created_at, Order.id) > tuple_(*last))
        )
        async with sessions.begin() as session:
            orders = list((await session.execute(page.limit(BATCH_SIZE))).scalars())
            if not orders:
                break
            await _requeue_orders(session, orders)
            await session.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        total += len(orders)
        last = (orders[-1].created_at, orders[-1].id)
    log.info("reconciled unfinished orders", orders=total)
    return total


async def _requeue_orders(session: AsyncSession, orders: list[Order]) -> None:
    ids = [order.id for order in orders]
    items: dict[str, list[OrderItem]] = {order_id: [] for order_id in ids}
    item_rows = await session.execute(
        select(OrderItem).where(OrderItem.order_id.in_(ids)).order_by(OrderItem.line_no)
    )
    for item in item_rows.scalars():
        items[item.order_id].append(item)
    declined = await session.execute(
        select(Payment.order_id, Payment.decline_reason).where(
            Payment.order_id.in_(ids), Payment.status == "declined"
        )
    )
    declines = {order_id: reason for order_id, reason in declined.all()}
    for order in orders:
        await _requeue(session, events_for(order, items[order.id], declines.get(order.id)))
