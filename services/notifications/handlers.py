"""Send the order e-mails and generate the invoice PDF.

Both reach outside the database, so each first checks the event was not handled yet, does
the outside work, then records the effect and the event id in one transaction. A crash in
between repeats the outside work with the same identity: the same Message-ID for SMTP and
the same file name for the invoice.
"""

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications.invoice import InvoiceDocument, InvoiceLine, write_invoice
from services.notifications.mail import (
    build_confirmation,
    build_payment_failed,
    send_message,
)
from shared.db.effects import mark_processed, set_step, was_processed
from shared.db.models import EmailRecord, Invoice, Order
from shared.events import Event, OrderCreated, PaymentFailed
from shared.latency import simulate
from shared.settings import LatencyProfile
from shared.streams.consumer import Delivery
from shared.tiers import WorkType

EMAIL_GROUP = "email"
INVOICE_GROUP = "invoice"
SMTP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class NotificationsContext:
    sessions: async_sessionmaker[AsyncSession]
    latency: LatencyProfile
    smtp_host: str
    smtp_port: int
    sender: str
    invoice_folder: Path

    @property
    def mail_domain(self) -> str:
        return self.sender.rpartition("@")[2] or "orderflow.local"


def invoice_lines(event: OrderCreated) -> tuple[InvoiceLine, ...]:
    return tuple(
        InvoiceLine(line.product_id, line.product_name, line.quantity, line.unit_price)
        for line in event.order.items
    )


async def handle_email(ctx: NotificationsContext, event: Event, delivery: Delivery) -> None:
    if isinstance(event, OrderCreated):
        message = build_confirmation(
            event.order_id,
            event.order.customer_email,
            invoice_lines(event),
            event.order.total_amount,
            ctx.sender,
            ctx.mail_domain,
        )
        await _send_once(ctx, event.event_id, event.order_id, "confirmation", message, True)
    elif isinstance(event, PaymentFailed):
        email = await _customer_email(ctx, event.order_id)
        message = build_payment_failed(
            event.order_id, email, event.reason, ctx.sender, ctx.mail_domain
        )
        await _send_once(ctx, event.event_id, event.order_id, "payment-failed", message, False)


async def _customer_email(ctx: NotificationsContext, order_id: str) -> str:
    async with ctx.sessions() as session:
        order = await session.get(Order, order_id)
        if order is None:
            raise LookupError(f"order {order_id} not found for its payment-failed e-mail")
        return order.customer_email


async def _send_once(
    ctx: NotificationsContext,
    event_id: str,
    order_id: str,
    kind: str,
    message: EmailMessage,
    is_step: bool,
) -> None:
    async with ctx.sessions() as session:
        if await was_processed(session, EMAIL_GROUP, event_id):
            return
    await simulate(ctx.latency, WorkType.EMAIL)
    await send_message(message, ctx.smtp_host, ctx.smtp_port, SMTP_TIMEOUT_SECONDS)
    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, EMAIL_GROUP, event_id):
            return
        await session.execute(
            insert(EmailRecord)
            .values(order_id=order_id, kind=kind, message_id=str(message["Message-ID"]))
            .on_conflict_do_nothing()
        )
        if is_step:
            await set_step(session, order_id, WorkType.EMAIL.value, "done", "confirmation sent")


async def handle_invoice(ctx: NotificationsContext, event: Event, delivery: Delivery) -> None:
    if not isinstance(event, OrderCreated):
        return
    async with ctx.sessions() as session:
        if await was_processed(session, INVOICE_GROUP, event.event_id):
            return
    await simulate(ctx.latency, WorkType.INVOICE)
    document = InvoiceDocument(
        order_id=event.order_id,
        customer_id=event.order.customer_id,
        customer_email=event.order.customer_email,
        created_at=event.order.created_at,
        shipping_address=event.order.shipping_address,
        payment_method=event.order.payment_method,
        lines=invoice_lines(event),
        total=event.order.total_amount,
    )
    path = await asyncio.to_thread(write_invoice, document, ctx.invoice_folder)
    async with ctx.sessions.begin() as session:
        if not await mark_processed(session, INVOICE_GROUP, event.event_id):
            return
        await session.execute(
            insert(Invoice)
            .values(order_id=event.order_id, file_name=path.name)
            .on_conflict_do_nothing()
        )
        await set_step(session, event.order_id, WorkType.INVOICE.value, "done", path.name)
