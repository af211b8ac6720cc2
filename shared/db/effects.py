"""Statements the handlers share: exactly-once markers, step updates and outbox writes."""

from datetime import UTC, datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from shared.db.models import Order, OrderStep, OutboxRecord, ProcessedEvent
from shared.events import BaseEvent
from shared.metrics import ORDER_LATENCY, STEP_LATENCY
from shared.telemetry import current_headers

OUTBOX_CHANNEL = "orderflow_outbox"


async def mark_processed(session: AsyncSession, group: str, event_id: str) -> bool:
    """Record that `group` handled `event_id`; return False if it already had.

    Call it first inside the transaction of the effect: a concurrent duplicate then waits
    on the primary key until this transaction ends, then finds the marker.
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


FINAL_STEP_STATES = ("done", "failed", "skipped", "refunded", "released")


async def set_step(
    session: AsyncSession, order_id: str, step: str, state: str, detail: str | None = None
) -> None:
    """Set one step's state, and record the order's latency metrics when the step ends.

    NOTE: the latency is observed before the caller commits, so a rolled-back transaction
    still counts. Two steps ending at the same moment may both miss the last-step figure.
    """
    now = datetime.now(UTC)
    other = aliased(OrderStep)
    unfinished_others = (
        select(func.count())
        .where(
            other.order_id == OrderStep.order_id,
            other.step != OrderStep.step,
            other.state.not_in(FINAL_STEP_STATES),
        )
        .scalar_subquery()
    )
    created_at = select(Order.created_at).where(Order.id == OrderStep.order_id).scalar_subquery()
    result = await session.execute(
        update(OrderStep)
        .where(OrderStep.order_id == order_id, OrderStep.step == step)
        .values(state=state, detail=detail, updated_at=now)
        .returning(created_at, unfinished_others)
    )
    row = result.one_or_none()
    if row is None or state not in FINAL_STEP_STATES:
        return
    accepted_at, unfinished = row
    elapsed = (now - accepted_at).total_seconds()
    STEP_LATENCY.labels(step).observe(elapsed)
    if unfinished == 0:
        ORDER_LATENCY.observe(elapsed)


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
