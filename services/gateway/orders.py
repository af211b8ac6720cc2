"""The order service of the gateway: create, read, list and cancel orders.

Creating an order writes the order, its lines, its six steps and the `OrderCreated` outbox
record in one transaction, so an accepted order always has its event on the way.
"""

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.schemas import OrderRequest
from shared.db.effects import FINAL_STEP_STATES, add_to_outbox, set_step
from shared.db.models import (
    DailySales,
    Invoice,
    Order,
    OrderItem,
    OrderStep,
    ProductSales,
)
from shared.errors import (
    DocumentNotReady,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    OrderNotFound,
)
from shared.events import OrderCancelled, OrderCreated, OrderLine, OrderSnapshot
from shared.ids import new_order_id
from shared.tiers import WorkType

STEP_NAMES = tuple(work.value for work in WorkType)
CANCELLABLE = ("pending", "payment_processing", "confirmed", "processing")
MAX_PAGE_SIZE = 100
ITEM_FIELDS = ("product_id", "product_name", "quantity", "unit_price")
ORDER_ID_PATTERN = re.compile(r"ORD-[0-9a-f]{32}")
ALLOWED_STATUSES = frozenset(
    {
        "pending",
        "payment_processing",
        "confirmed",
        "processing",
        "shipped",
        "payment_failed",
        "cancelled",
    }
)


@dataclass(frozen=True)
class CreatedOrder:
    order: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class ListQuery:
    customer_id: str | None = None
    status: str | None = None
    limit: int = 20
    cursor: str | None = None
    page: int | None = None


class OrderService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], base_url: str, invoice_folder: Path
    ) -> None:
        self.sessions = sessions
        self.base_url = base_url.rstrip("/")
        self.invoice_folder = invoice_folder

    async def create(
        self,
        request: OrderRequest,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> CreatedOrder:
        """Store a new order with its outbox event; replay the stored one for a reused key."""
        now = datetime.now(UTC)
        order_id = new_order_id()
        fingerprint = request.fingerprint() if idempotency_key else None
        row = _order_row(order_id, request, now, idempotency_key, fingerprint)

        async with self.sessions.begin() as session:
            inserted = await session.execute(
                insert(Order).values(row).on_conflict_do_nothing().returning(Order.id)
            )
            if inserted.scalar_one_or_none() is None:
                return await self._replay(session, idempotency_key, fingerprint)

            await session.execute(insert(OrderItem), _item_rows(order_id, request))
            await session.execute(
                insert(OrderStep),
                [{"order_id": order_id, "step": step, "updated_at": now} for step in STEP_NAMES],
            )
            event = OrderCreated(order_id=order_id, order=_snapshot(request, now), occurred_at=now)
            await add_to_outbox(session, event, headers)

        return CreatedOrder(
            order=self._view(row, _item_rows(order_id, request), []), replayed=False
        )

    async def find_replay(self, request: OrderRequest, idempotency_key: str) -> CreatedOrder | None:
        """Return the order stored under `idempotency_key`, or None if there is none yet.

        The gateway checks this before shedding load, so a client retrying an accepted order gets
        its order even while new orders are rejected.
        """
        async with self.sessions() as session:
            found = await session.execute(
                select(Order.id).where(Order.idempotency_key == idempotency_key)
            )
            if found.scalar_one_or_none() is None:
                return None
            return await self._replay(session, idempotency_key, request.fingerprint())

    async def _replay(
        self, session: AsyncSession, key: str | None, fingerprint: str | None
    ) -> CreatedOrder:
        existing = (
            await session.execute(select(Order).where(Order.idempotency_key == key))
        ).scalar_one_or_none()
        if existing is None or key is None:
            # Only the idempotency key is unique besides the fresh UUIDv7 id.
            raise RuntimeError("order insert conflicted without an idempotency key")
        if existing.request_fingerprint != fingerprint:
            raise IdempotencyConflict(key)
        return CreatedOrder(order=await self._load_view(session, existing), replayed=True)

    async def get(self, order_id: str) -> dict[str, Any]:
        _require_order_id(order_id)
        async with self.sessions() as session:
            order = await session.get(Order, order_id)
            if order is None:
                raise OrderNotFound(order_id)
            return await self._load_view(session, order)

    async def status(self, order_id: str) -> dict[str, Any]:
        view = await self.get(order_id)
        keys = ("id", "status", "payment_status", "tracking_number", "steps", "fully_processed")
        return {key: view[key] for key in keys}

    async def list_page(self, query: ListQuery) -> dict[str, Any]:
        conditions = []
        if query.customer_id and "\x00" in query.customer_id:
            raise InvalidInput({"customer_id": "must not contain NUL characters"})
        if query.customer_id:
            conditions.append(Order.customer_id == query.customer_id)
        if query.status:
            if query.status not in ALLOWED_STATUSES:
                allowed = ", ".join(sorted(ALLOWED_STATUSES))
                raise InvalidInput({"status": f"must be one of {allowed} (got {query.status!r})"})
            conditions.append(Order.status == query.status)

        page_query: Select[Order] = select(Order).where(*conditions)
        if query.cursor:
            created_at, last_id = decode_cursor(query.cursor)
            page_query = page_query.where(
                or_(
                    Order.created_at < created_at,
                    and_(Order.created_at == created_at, Order.id < last_id),
                )
            )
        elif query.page:
            page_query = page_query.offset((query.page - 1) * query.limit)
        page_query = page_query.order_by(Order.created_at.desc(), Order.id.desc()).limit(
            query.limit
        )

        async with self.sessions() as session:
            total = (
                await session.execute(select(func.count()).select_from(Order).where(*conditions))
            ).scalar_one()
            orders = list((await session.execute(page_query)).scalars())
            views = await self._load_views(session, orders)

        next_cursor = None
        if len(orders) == query.limit:
            next_cursor = encode_cursor(orders[-1].created_at, orders[-1].id)
        return {"total": total, "orders": views, "next_cursor": next_cursor, "limit": query.limit}

    async def cancel(self, order_id: str, reason: str) -> dict[str, Any]:
        """Cancel an order that has not shipped; payments refunds and inventory releases."""
        _require_order_id(order_id)
        async with self.sessions.begin() as session:
            cancelled = await session.execute(
                update(Order)
                .where(Order.id == order_id, Order.status.in_(CANCELLABLE))
                .values(status="cancelled", cancel_reason=reason, updated_at=datetime.now(UTC))
                .returning(Order.id)
            )
            if cancelled.scalar_one_or_none() is None:
                order = await session.get(Order, order_id)
                if order is None:
                    raise OrderNotFound(order_id)
                raise InvalidTransition(order_id, order.status, "cancel")
            await set_step(session, order_id, WorkType.WAREHOUSE.value, "skipped", "cancelled")
            await add_to_outbox(session, OrderCancelled(order_id=order_id, reason=reason))
        return await self.get(order_id)

    async def invoice_file(self, order_id: str) -> Path:
        _require_order_id(order_id)
        async with self.sessions() as session:
            if await session.get(Order, order_id) is None:
                raise OrderNotFound(order_id)
            invoice = await session.get(Invoice, order_id)
        if invoice is None:
            raise DocumentNotReady(order_id, "invoice")
        path = self.invoice_folder / invoice.file_name
        if not path.is_file():
            raise DocumentNotReady(order_id, "invoice")
        return path

    async def analytics_summary(self, top: int = 10) -> dict[str, Any]:
        async with self.sessions() as session:
            days = (await session.execute(select(DailySales).order_by(DailySales.day))).scalars()
            products = await session.execute(
                select(
                    ProductSales.product_id,
                    func.sum(ProductSales.units).label("units"),
                    func.sum(ProductSales.revenue).label("revenue"),
                )
                .group_by(ProductSales.product_id)
                .order_by(func.sum(ProductSales.revenue).desc(), ProductSales.product_id)
                .limit(top)
            )
            daily: list[dict[str, Any]] = [
                {
                    "day": d.day.isoformat(),
                    "orders": d.orders,
                    "units": d.units,
                    "revenue": d.revenue,
                }
                for d in days
            ]
            top_products = [
                {"product_id": p.product_id, "units": int(p.units), "revenue": p.revenue}
                for p in products
            ]
        totals = {
            "orders": sum(d["orders"] for d in daily),
            "units": sum(d["units"] for d in daily),
            "revenue": sum((d["revenue"] for d in daily), start=Decimal("0.00")),
        }
        return {"totals": totals, "days": daily, "top_products": top_products}

    async def _load_view(self, session: AsyncSession, order: Order) -> dict[str, Any]:
        return (await self._load_views(session, [order]))[0]

    async def _load_views(self, session: AsyncSession, orders: list[Order]) -> list[dict[str, Any]]:
        """Build the views of `orders` with two queries, whatever their number."""
        ids = [order.id for order in orders]
        items: dict[str, list[dict[str, Any]]] = {order_id: [] for order_id in ids}
        steps: dict[str, list[dict[str, Any]]] = {order_id: [] for order_id in ids}
        item_query = select(OrderItem).where(OrderItem.order_id.in_(ids))
        for item in (await session.execute(item_query.order_by(OrderItem.line_no))).scalars():
            items[item.order_id].append(
                {
                    "product_id": item.product_id,
                    "product_name": item.product_name,
                    "quantity": item.quantity,
                    "unit_price": item.unit_price,
                }
            )
        step_query = select(OrderStep).where(OrderStep.order_id.in_(ids))
        for step in (await session.execute(step_query)).scalars():
            steps[step.order_id].append(
                {
                    "step": step.step,
                    "state": step.state,
                    "detail": step.detail,
                    "updated_at": step.updated_at,
                }
            )
        columns = Order.__table__.columns.keys()
        return [
            self._view(
                {column: getattr(order, column) for column in columns},
                items[order.id],
                steps[order.id],
            )
            for order in orders
        ]

    def _view(
        self, row: dict[str, Any], items: list[dict[str, Any]], steps: list[dict[str, Any]]
    ) -> dict[str, Any]:
        by_name = {step["step"]: step for step in steps}
        step_view = {
            name: {
                "state": by_name.get(name, {}).get("state", "pending"),
                "detail": by_name.get(name, {}).get("detail"),
                "updated_at": by_name.get(name, {}).get("updated_at", row["created_at"]),
            }
            for name in STEP_NAMES
        }
        invoice_ready = step_view[WorkType.INVOICE.value]["state"] == "done"
        return {
            "id": row["id"],
            "customer_id": row["customer_id"],
            "customer_email": row["customer_email"],
            "items": [{key: item[key] for key in ITEM_FIELDS} for item in items],
            "shipping_address": row["shipping_address"],
            "payment_method": row["payment_method"],
            "notes": row["notes"],
            "status": row["status"],
            "payment_status": row["payment_status"],
            "total_amount": row["total_amount"],
            "tracking_number": row.get("tracking_number"),
            "cancel_reason": row.get("cancel_reason"),
            "invoice_url": f"{self.base_url}/api/v1/orders/{row['id']}/invoice"
            if invoice_ready
            else None,
            "steps": step_view,
            "fully_processed": all(s["state"] in FINAL_STEP_STATES for s in step_view.values()),
            "created_at": row["created_at"],
            "updated_at": row.get("updated_at", row["created_at"]),
        }


def _order_row(
    order_id: str,
    request: OrderRequest,
    now: datetime,
    idempotency_key: str | None,
    fingerprint: str | None,
) -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_id": request.customer_id,
        "customer_email": request.customer_email,
        "payment_method": request.payment_method.value,
        "shipping_address": request.shipping_address.model_dump(),
        "notes": request.notes,
        "status": "pending",
        "payment_status": "pending",
        "stock_status": "pending",
        "total_amount": request.total_amount(),
        "tracking_number": None,
        "cancel_reason": None,
        "idempotency_key": idempotency_key,
        "request_fingerprint": fingerprint,
        "created_at": now,
        "updated_at": now,
    }


def _item_rows(order_id: str, request: OrderRequest) -> list[dict[str, Any]]:
    return [
        {
            "order_id": order_id,
            "line_no": line_no,
            "product_id": item.product_id,
            "product_name": item.product_name,
            "quantity": item.quantity,
            "unit_price": item.unit_price,
        }
        for line_no, item in enumerate(request.items, start=1)
    ]


def _snapshot(request: OrderRequest, now: datetime) -> OrderSnapshot:
    return OrderSnapshot(
        customer_id=request.customer_id,
        customer_email=request.customer_email,
        payment_method=request.payment_method.value,
        shipping_address=request.shipping_address.model_dump(),
        items=tuple(
            OrderLine(
                product_id=item.product_id,
                product_name=item.product_name,
                quantity=item.quantity,
                unit_price=item.unit_price,
            )
            for item in request.items
        ),
        total_amount=request.total_amount(),
        created_at=now,
    )


def _require_order_id(order_id: str) -> None:
    """Raise OrderNotFound for an id this API cannot have issued, before any query."""
    if not ORDER_ID_PATTERN.fullmatch(order_id):
        raise OrderNotFound(order_id)


def encode_cursor(created_at: datetime, order_id: str) -> str:
    raw = f"{created_at.isoformat()}|{order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    invalid = InvalidInput(
        {"cursor": f"is not a cursor returned by this API (got {cursor[:40]!r})"}
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, _, order_id = raw.partition("|")
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None:
            raise invalid
        # Converting rejects times that only exist in another zone, such as year 1 at +05:00.
        created_at = created_at.astimezone(UTC)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError) as exc:
        raise invalid from exc
    if not ORDER_ID_PATTERN.fullmatch(order_id):
        raise invalid
    return created_at, order_id
