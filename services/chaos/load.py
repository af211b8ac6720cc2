"""The HTTP load of a chaos run: orders at a steady rate, replays, conflicts and cancels.

The client behaves as a careful real one does. Every order carries an Idempotency-Key. A
request that fails on the way (a refused connection, a 503 or 429) is sent again with the
same key after the Retry-After delay, capped so that the load keeps its pace. Every status
the gateway returns is recorded, so the checks can tell a shed request from a server error.
"""

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

BURST_SIZE = 20  # concurrent requests sharing one Idempotency-Key
RETRY_AFTER_CAP_SECONDS = 1.0
TRANSPORT_RETRY_SECONDS = 0.25
REQUEST_TIMEOUT_SECONDS = 15.0
MAX_IN_FLIGHT = 400  # orders whose requests are still running; more pause the schedule

# Share of orders that also get each follow-up request.
REPLAY_SHARE = 0.05  # the same key and body again: must return the same order
CONFLICT_SHARE = 0.02  # the same key with another body: must be rejected with 422
CANCEL_NOW_SHARE = 0.08  # a cancel right after creation, racing payment
CANCEL_LATER_SHARE = 0.03  # a cancel a second or two later, racing shipping
TWO_LINE_SHARE = 0.2
CANCEL_REASON = "chaos run: cancelled to race the payment"

SHIPPING_ADDRESS = {
    "street": "1 Chaos Road",
    "city": "Springfield",
    "state": "IL",
    "postal_code": "62701",
    "country": "USA",
}
PAYMENT_METHODS = ("credit_card", "debit_card", "bank_transfer")


@dataclass(frozen=True)
class AcceptedOrder:
    order_id: str
    key: str
    customer_id: str
    poison: bool
    accepted_at: datetime


@dataclass(frozen=True)
class ServerError:
    at: datetime
    method: str
    path: str
    status: int
    retry_after: str | None


@dataclass
class LoadRecord:
    """Everything the load saw, for the report and the checks."""

    statuses: Counter[str] = field(default_factory=Counter)
    shed: list[datetime] = field(default_factory=list)
    server_errors: list[ServerError] = field(default_factory=list)
    transport_errors: int = 0
    accepted: dict[str, AcceptedOrder] = field(default_factory=dict)
    order_of_key: dict[str, str] = field(default_factory=dict)
    key_mismatches: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    replays: int = 0
    conflicts: int = 0
    cancels: Counter[int] = field(default_factory=Counter)
    abandoned: int = 0  # requests given up at the deadline without a final response
    bursts: list[list[str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class OrderPlan:
    """The requests for one order, drawn up front so that a seed repeats the run."""

    number: int
    body: dict[str, Any]
    conflicting_body: dict[str, Any]
    replay: bool
    conflict: bool
    cancel_now: bool
    cancel_later_seconds: float | None


def order_body(rng: random.Random, customer_id: str, number: int) -> dict[str, Any]:
    """Build an order like the load clients': lines of prod-0..prod-99, whole-dollar prices."""
    line_count = 2 if rng.random() < TWO_LINE_SHARE else 1
    products = rng.sample(range(100), line_count)
    return {
        "customer_id": customer_id,
        "customer_email": f"chaos-{number}@example.com",
        "items": [
            {
                "product_id": f"prod-{product}",
                "product_name": f"Product {product}",
                "quantity": rng.randint(1, 5),
                "unit_price": rng.randint(10, 1009),
            }
            for product in products
        ],
        "shipping_address": SHIPPING_ADDRESS,
        "payment_method": rng.choice(PAYMENT_METHODS),
    }


class LoadGenerator:
    def __init__(self, base_url: str, rate: float, seed: int, run_tag: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=REQUEST_TIMEOUT_SECONDS,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        self.rate = rate
        self.rng = random.Random(seed)
        self.run_tag = run_tag
        self.record = LoadRecord()
        self.stopping = asyncio.Event()
        self.give_up_at = float("inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = 0

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    # -- the schedule ----------------------------------------------------------------------

    async def run(self) -> None:
        """Start one order every 1/rate seconds until `stopping` is set."""
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stopping.is_set():
            if len(self._tasks) < MAX_IN_FLIGHT:
                self._start(self._place(self._plan()))
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < -1.0:
                next_at = time.monotonic()  # fell behind after a pause; do not burst
            if delay > 0:
                await asyncio.sleep(delay)

    async def finish(self, timeout_seconds: float) -> None:
        """Stop scheduling and let running orders finish; requests give up at the deadline."""
        self.stopping.set()
        self.give_up_at = time.monotonic() + timeout_seconds
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_seconds + 5)

    def _start(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _plan(self) -> OrderPlan:
        self._numbers += 1
        number = self._numbers
        rng = self.rng
        cancel_later = rng.random() < CANCEL_LATER_SHARE
        return OrderPlan(
            number=number,
            body=order_body(rng, f"chaos-{number % 500}", number),
            conflicting_body=order_body(rng, f"chaos-{number % 500}", number),
            replay=rng.random() < REPLAY_SHARE,
            conflict=rng.random() < CONFLICT_SHARE,
            cancel_now=rng.random() < CANCEL_NOW_SHARE,
            cancel_later_seconds=rng.uniform(0.5, 3.0) if cancel_later else None,
        )

    async def _place(self, plan: OrderPlan) -> None:
        key = f"chaos-{self.run_tag}-{plan.number}"
        order_id = await self.create_order(plan.body, key)
        if order_id is None:
            return
        if plan.cancel_now:
            await self.cancel(order_id)
        if plan.replay:
            self.record.replays += 1
            await self.create_order(plan.body, key)
        if plan.conflict and plan.conflicting_body != plan.body:
            await self._send_conflict(plan.conflicting_body, key)
        if plan.cancel_later_seconds is not None:
            await asyncio.sleep(plan.cancel_later_seconds)
            await self.cancel(order_id)

    # -- requests that the fault schedule sends --------------------------------------------

    async def burst(self) -> list[str | None]:
        """Send BURST_SIZE identical requests with one key at once; return the order ids."""
        number = 0
        body = order_body(self.rng, "chaos-burst", number)
        key = f"chaos-{self.run_tag}-burst-{len(self.record.bursts)}"
        ids = await asyncio.gather(*(self.create_order(body, key) for _ in range(BURST_SIZE)))
        self.record.bursts.append(list(ids))
        return list(ids)

    async def place_poison_orders(self, prefix: str, count: int) -> list[str]:
        """Create `count` orders whose customer id starts with the poisoned prefix."""
        placed = []
        for index in range(count):
            body = order_body(self.rng, f"{prefix}{index}", index)
            key = f"chaos-{self.run_tag}-{prefix}{index}"
            order_id = await self.create_order(body, key, poison=True)
            if order_id is not None:
                placed.append(order_id)
        return placed

    # -- requests --------------------------------------------------------------------------

    async def create_order(
        self, body: dict[str, Any], key: str, poison: bool = False
    ) -> str | None:
        response = await self._send(
            "POST", "/api/v1/orders", body, {"Idempotency-Key": key}, route="POST /orders"
        )
        if response is None:
            return None
        if response.status_code != 201:
            self.record.unexpected.append(
                f"POST /api/v1/orders with key {key} returned {response.status_code}: "
                f"{response.text[:200]}"
            )
            return None
        order_id = str(response.json()["id"])
        known = self.record.order_of_key.setdefault(key, order_id)
        if known != order_id:
            self.record.key_mismatches.append(f"key {key} gave {known} and then {order_id}")
        if order_id not in self.record.accepted:
            self.record.accepted[order_id] = AcceptedOrder(
                order_id, key, str(body["customer_id"]), poison, datetime.now(UTC)
            )
        return order_id

    async def _send_conflict(self, body: dict[str, Any], key: str) -> None:
        self.record.conflicts += 1
        response = await self._send(
            "POST", "/api/v1/orders", body, {"Idempotency-Key": key}, route="POST /orders"
        )
        if response is not None and response.status_code != 422:
            self.record.unexpected.append(
                f"reusing key {key} with another body returned {response.status_code}, expected 422"
            )

    async def cancel(self, order_id: str) -> None:
        path = f"/api/v1/orders/{order_id}/cancel"
        response = await self._send(
            "POST", path, {"reason": CANCEL_REASON}, {}, route="POST /orders/{id}/cancel"
        )
        if response is None:
            return
        self.record.cancels[response.status_code] += 1
        if response.status_code not in {200, 409}:
            self.record.unexpected.append(
                f"cancel of {order_id} returned {response.status_code}: {response.text[:200]}"
            )

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        route: str,
    ) -> httpx.Response | None:
        """Send until the gateway returns a status other than 429 or 5xx, or the deadline passes."""
        while time.monotonic() < self.give_up_at:
            try:
                response = await self.client.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                self.record.transport_errors += 1
                await asyncio.sleep(TRANSPORT_RETRY_SECONDS)
                continue
            status = response.status_code
            self.record.statuses[f"{route} {status}"] += 1
            if status != 429 and status < 500:
                return response
            retry_after = response.headers.get("Retry-After")
            if status == 503 and retry_after is not None:
                self.record.shed.append(datetime.now(UTC))
            elif status != 429:
                self.record.server_errors.append(
                    ServerError(datetime.now(UTC), method, path, status, retry_after)
                )
            await asyncio.sleep(_retry_delay(retry_after))
        self.record.abandoned += 1
        return None


def _retry_delay(retry_after: str | None) -> float:
    try:
        seconds = float(retry_after) if retry_after is not None else 0.5
    except ValueError:
        seconds = 0.5
    return min(max(seconds, 0.05), RETRY_AFTER_CAP_SECONDS)
