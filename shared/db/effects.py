"""Statements the handlers share: exactly-once markers, step updates and outbox writes."""

from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import OrderStep, OutboxRecord, ProcessedEvent
from shared.events import BaseEvent
from shared.telemetry import current_headers

OUTBOX_CHANNEL = "orderflow_outbox"


async def mark_processed(session: AsyncSession, group: str, event_id: str) -> bool:
    """Record that `group` handled `event_id`; return False if it already had.

    Call it first inside the transaction of the effect: a concurrent duplicate then waits
    on the primary key until this transaction ends and sees the marker.
    """
    result = await session.execute(
        insert(ProcessedEvent)
        .values(group_name=group, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(ProcessedEvent.event_id)
    )
    return result.scalar_one_or_none() is not None


async def was_processed(session: AsyncSession, group: str, event_id: str) -> bool:
    found = await session.execute(
        select(ProcessedEvent.event_id).where(
            ProcessedEvent.group_name == group, ProcessedEvent.event_id == event_id
        )
    )
    return found.scalar_one_or_none() is not None


async def set_step(
    session: AsyncSession, order_id: str, step: str, state: str, detail: str | None = None
) -> None:
    await session.execute(
        update(OrderStep)
        .where(OrderStep.order_id == order_id, OrderStep.step == step)
        .values(state=state, detail=detail, updated_at=datetime.now(UTC))
    )


async def add_to_outbox(
    session: AsyncSession, event: BaseEvent, headers: dict[str, str] | None = None
) -> None:
    """Stage `event` for the relay in the caller's transaction and wake the relay on commit."""
    event_type = str(getattr(event, "type", type(event).__name__))
    await session.execute(
        insert(OutboxRecord)
        .values(
            event_id=event.event_id,
            order_id=event.order_id,
            event_type=event_type,
            payload=event.model_dump_json(),
            headers=current_headers() if headers is None else headers,
        )
        .on_conflict_do_nothing(index_elements=[OutboxRecord.event_id])
    )
    await session.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
