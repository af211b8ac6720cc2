"""Charge an order when it is created; refund a captured charge when it is cancelled."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import case, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payments.provider import ChargeResult, PaymentProvider
from shared.db.effects import add_to_outbox, mark_processed, set_step, was_processed
from shared.db.models import Order, Payment
from shared.events import Event, OrderCancelled, OrderCreated, OrderReadyToShip, PaymentFailed
from shared.latency import simulate
from shared.settings import LatencyProfile
from shared.streams.consumer import Delivery
from shared.tiers import WorkType

GROUP = "payments"
STEP = WorkType.PAYMENT.value


@dataclass(frozen=True)
class PaymentsContext:
    sessions: async_sessionmaker[AsyncSession]
    provider: PaymentProvider
    latency: LatencyProfile


async def handle(ctx: PaymentsContext, event: Event, delivery: Delivery) -> None:
    if isinstance(event, OrderCreated):
        await charge_order(ctx, event)
    elif isinstance(event, OrderCancelled):
        await refund_cancelled_order(ctx, event)


async def charge_order(ctx: PaymentsContext, event: OrderCreated) -> None:
    """Move the order to `payment_processing`, charge it, and record the outcome.

    The charge happens between two transactions, so no database connection is held while
    the provider responds. A redelivered event resumes at the charge, which the provider
    deduplicates by the order id.
    """
    if not await _start_processing(ctx, event):
        return

    await simulate(ctx.latency, WorkType.PAYMENT)
    result = await ctx.provider.charge(
        event.order_id, event.order.total_amount, event.order.payment_method
    )

    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, GROUP, event.event_id):
            return
        if result.approved:
            await _record_capture(ctx, session, event, result)
        else:
            await _record_decline(session, event, result)


async def _start_processing(ctx: PaymentsContext, event: OrderCreated) -> bool:
    """Return False when there is nothing to charge: already handled, or order cancelled."""
    async with ctx.sessions.begin() as session:
        if await was_processed(session, GROUP, event.event_id):
            return False
        started = await session.execute(
            update(Order)
            .where(
                Order.id == event.order_id,
                Order.status.in_(("pending", "payment_processing")),
            )
            .values(
                status="payment_processing",
                payment_status="processing",
                updated_at=datetime.now(UTC),
            )
            .returning(Order.id)
        )
        if started.scalar_one_or_none() is None:
            # A redelivery of this event may have charged the order while this transaction
            # waited for the order's row lock: then its marker exists and its step is final.
            if await mark_processed(session, GROUP, event.event_id):
                await set_step(session, event.order_id, STEP, "skipped", "order was not payable")
            return False
        await set_step(session, event.order_id, STEP, "processing")
        return True


async def _record_capture(
    ctx: PaymentsContext, session: AsyncSession, event: OrderCreated, result: ChargeResult
) -> None:
    amount = event.order.total_amount
    await session.execute(
        insert(Payment)
        .values(
            order_id=event.order_id,
            amount=amount,
            status="captured",
            provider_reference=result.reference,
        )
        .on_conflict_do_nothing()
    )
    confirmed = await session.execute(
        update(Order)
        .where(Order.id == event.order_id, Order.status == "payment_processing")
        .values(
            payment_status="completed",
            status=case((Order.stock_status == "reserved", "processing"), else_="confirmed"),
            updated_at=datetime.now(UTC),
        )
        .returning(Order.status)
    )
    status = confirmed.scalar_one_or_none()
    if status is None:
        # The order was cancelled while the provider was charging: give the money back.
        await _refund(ctx, session, event.order_id, result.reference, amount)
        return
    await set_step(session, event.order_id, STEP, "done", result.reference)
    if status == "processing":
        await add_to_outbox(session, OrderReadyToShip(order_id=event.order_id))


async def _record_decline(session: AsyncSession, event: OrderCreated, result: ChargeResult) -> None:
    reason = result.decline_reason or "declined by the payment provider"
    await session.execute(
        insert(Payment)
        .values(
            order_id=event.order_id,
            amount=event.order.total_amount,
            status="declined",
            provider_reference=result.reference,
            decline_reason=reason,
        )
        .on_conflict_do_nothing()
    )
    failed = await session.execute(
        update(Order)
        .where(Order.id == event.order_id, Order.status == "payment_processing")
        .values(status="payment_failed", payment_status="failed", updated_at=datetime.now(UTC))
        .returning(Order.id)
    )
    await set_step(session, event.order_id, STEP, "failed", reason)
    if failed.scalar_one_or_none() is not None:
        await set_step(session, event.order_id, WorkType.WAREHOUSE.value, "skipped", reason)
        await add_to_outbox(session, PaymentFailed(order_id=event.order_id, reason=reason))


async def refund_cancelled_order(ctx: PaymentsContext, event: OrderCancelled) -> None:
    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, GROUP, event.event_id):
            return
        payment = (
            await session.execute(
                select(Payment).where(Payment.order_id == event.order_id).with_for_update()
            )
        ).scalar_one_or_none()
        if payment is None or payment.status != "captured":
            return
        await _refund(ctx, session, event.order_id, payment.provider_reference, payment.amount)


async def _refund(
    ctx: PaymentsContext, session: AsyncSession, order_id: str, reference: str, amount: Decimal
) -> None:
    refund_reference = await ctx.provider.refund(order_id, reference, amount)
    now = datetime.now(UTC)
    await session.execute(
        update(Payment)
        .where(Payment.order_id == order_id, Payment.status == "captured")
        .values(status="refunded", refunded_at=now)
    )
    await session.execute(
        update(Order).where(Order.id == order_id).values(payment_status="refunded", updated_at=now)
    )
    await set_step(session, order_id, STEP, "refunded", refund_reference)
