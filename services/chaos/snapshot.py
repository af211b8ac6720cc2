"""Waiting for a chaos run to settle, and loading what the checks compare.

`wait_until_settled` polls until every order has reached a final state with its
compensations done and no group has an entry left to handle. `take_snapshot` then loads
the tables the checks read, once.
"""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import asyncpg

from services.chaos.system import ChaosSystem, plain_dsn

# Orders not settled yet: not in a final state, a step unfinished, or a compensation (stock
# release, refund, payment-failed e-mail) still missing. $1 is the poisoned customer prefix,
# and a poisoned order is settled once every step but the poisoned one is.
UNSETTLED_SQL = """
SELECT o.id, o.customer_id LIKE $1 || '%' AS poisoned
FROM orders o
WHERE o.status NOT IN ('shipped', 'cancelled', 'payment_failed')
   OR EXISTS (
        SELECT 1 FROM order_steps s
        WHERE s.order_id = o.id
          AND s.state NOT IN ('done', 'failed', 'skipped', 'refunded', 'released')
          AND NOT (o.customer_id LIKE $1 || '%' AND s.step = 'analytics'))
   OR (o.status IN ('cancelled', 'payment_failed') AND EXISTS (
        SELECT 1 FROM stock_reservations r WHERE r.order_id = o.id AND r.released_at IS NULL))
   OR (o.status = 'cancelled' AND EXISTS (
        SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.status = 'captured'))
   OR (o.status = 'payment_failed' AND NOT EXISTS (
        SELECT 1 FROM emails e WHERE e.order_id = o.id AND e.kind = 'payment-failed'))
"""


@dataclass
class Snapshot:
    """The tables the checks read, loaded once after the run settled."""

    orders: dict[str, asyncpg.Record] = field(default_factory=dict)
    steps: dict[str, dict[str, str]] = field(default_factory=dict)
    items: dict[str, list[asyncpg.Record]] = field(default_factory=dict)
    payments: dict[str, str] = field(default_factory=dict)
    emails: list[asyncpg.Record] = field(default_factory=list)
    invoices: dict[str, str] = field(default_factory=dict)
    counted: dict[str, Decimal] = field(default_factory=dict)
    daily: asyncpg.Record | None = None
    products: asyncpg.Record | None = None
    shipments: dict[str, str] = field(default_factory=dict)
    reservations: list[asyncpg.Record] = field(default_factory=list)
    stock: dict[str, int] = field(default_factory=dict)
    settled_at: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Settling:
    settled: bool
    seconds: float
    unsettled: int
    pending_entries: int


async def wait_until_settled(
    system: ChaosSystem, poison_prefix: str, timeout_seconds: float
) -> Settling:
    """Poll until every order is settled and no group has pending or undelivered entries."""
    started = time.monotonic()
    unsettled = pending = -1
    while True:
        try:
            unsettled = len(await _unsettled(system.database_url, poison_prefix))
            pending = await stream_backlog(system)
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"  settling: a server did not answer ({exc}); polling again", flush=True)
        elapsed = time.monotonic() - started
        if unsettled == 0 and pending == 0:
            return Settling(True, elapsed, 0, 0)
        if elapsed > timeout_seconds:
            return Settling(False, elapsed, unsettled, pending)
        await asyncio.sleep(0.5)


async def _unsettled(database_url: str, poison_prefix: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(plain_dsn(database_url))
    try:
        rows: list[asyncpg.Record] = await connection.fetch(UNSETTLED_SQL, poison_prefix)
        return rows
    finally:
        await connection.close()


async def stream_backlog(system: ChaosSystem) -> int:
    """Return the entries that some group has not acknowledged or not read yet."""
    client = system.redis()
    total = 0
    try:
        for stream in system.tiers.all_streams():
            for info in await client.xinfo_groups(stream):
                lag = info.get("lag")
                total += int(info["pending"]) + (int(lag) if lag is not None else 0)
    finally:
        await client.aclose()
    return total


async def take_snapshot(database_url: str) -> Snapshot:
    connection = await asyncpg.connect(plain_dsn(database_url))
    snapshot = Snapshot()
    try:
        for row in await connection.fetch("SELECT * FROM orders"):
            snapshot.orders[row["id"]] = row
        for row in await connection.fetch("SELECT order_id, step, state FROM order_steps"):
            snapshot.steps.setdefault(row["order_id"], {})[row["step"]] = row["state"]
        for row in await connection.fetch("SELECT * FROM order_items"):
            snapshot.items.setdefault(row["order_id"], []).append(row)
        payments = await connection.fetch("SELECT order_id, status FROM payments")
        snapshot.payments = {row["order_id"]: row["status"] for row in payments}
        snapshot.emails = list(await connection.fetch("SELECT * FROM emails"))
        invoices = await connection.fetch("SELECT order_id, file_name FROM invoices")
        snapshot.invoices = {row["order_id"]: row["file_name"] for row in invoices}
        counted = await connection.fetch("SELECT order_id, amount FROM analytics_orders")
        snapshot.counted = {row["order_id"]: row["amount"] for row in counted}
        snapshot.daily = await connection.fetchrow(
            "SELECT coalesce(sum(orders), 0) AS orders, coalesce(sum(units), 0) AS units, "
            "coalesce(sum(revenue), 0) AS revenue FROM analytics_daily"
        )
        snapshot.products = await connection.fetchrow(
            "SELECT coalesce(sum(units), 0) AS units, coalesce(sum(revenue), 0) AS revenue "
            "FROM analytics_products"
        )
        shipments = await connection.fetch("SELECT order_id, tracking_number FROM shipments")
        snapshot.shipments = {row["order_id"]: row["tracking_number"] for row in shipments}
        snapshot.reservations = list(await connection.fetch("SELECT * FROM stock_reservations"))
        stock = await connection.fetch("SELECT id, stock FROM products")
        snapshot.stock = {row["id"]: int(row["stock"]) for row in stock}
        settled = await connection.fetch(
            "SELECT order_id, max(updated_at) AS at FROM order_steps GROUP BY order_id"
        )
        snapshot.settled_at = {row["order_id"]: row["at"] for row in settled}
    finally:
        await connection.close()
    return snapshot
