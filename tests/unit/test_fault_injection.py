"""ORDERFLOW_FAULT_INJECTION: a handler that fails for chosen customers, and only for them."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from shared.events import Event, OrderCreated, OrderLine, OrderReadyToShip, OrderSnapshot
from shared.service import InjectedFault, WorkBinding, with_fault_injection
from shared.settings import FaultInjection, Settings
from shared.streams.consumer import Delivery
from shared.tiers import WorkType

pytestmark = pytest.mark.timeout(10)

DELIVERY = Delivery("orders.low", "analytics", "1-0", 1, {})
POISON = FaultInjection(group="analytics", customer_prefix="poison-")


def order_created(customer_id: str) -> OrderCreated:
    snapshot = OrderSnapshot(
        customer_id=customer_id,
        customer_email="someone@example.com",
        payment_method="credit_card",
        shipping_address={"street": "1 Main St", "city": "Springfield"},
        items=(OrderLine(product_id="prod-1", product_name="Lamp", quantity=1, unit_price=10),),
        total_amount=Decimal("10.00"),
        created_at=datetime.now(UTC),
    )
    return OrderCreated(order_id=f"ORD-{customer_id}", order=snapshot)


def recording_binding(work: WorkType, handled: list[str]) -> WorkBinding:
    async def handler(event: Event, delivery: Delivery) -> None:
        handled.append(event.order_id)

    return WorkBinding(work, frozenset({"OrderCreated", "OrderReadyToShip"}), handler)


async def test_injected_handler_raises_when_customer_poisoned() -> None:
    handled: list[str] = []
    binding = with_fault_injection(recording_binding(WorkType.ANALYTICS, handled), POISON)

    with pytest.raises(InjectedFault, match="poison-7"):
        await binding.handler(order_created("poison-7"), DELIVERY)

    assert handled == []


async def test_injected_handler_runs_when_customer_healthy() -> None:
    handled: list[str] = []
    binding = with_fault_injection(recording_binding(WorkType.ANALYTICS, handled), POISON)

    await binding.handler(order_created("cust-1"), DELIVERY)
    await binding.handler(OrderReadyToShip(order_id="ORD-poison-2"), DELIVERY)

    assert handled == ["ORD-cust-1", "ORD-poison-2"]


def test_binding_unchanged_when_group_differs() -> None:
    original = recording_binding(WorkType.EMAIL, [])

    assert with_fault_injection(original, POISON) is original
    assert with_fault_injection(original, None) is original


def test_fault_injection_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ORDERFLOW_FAULT_INJECTION", '{"group": "analytics", "customer_prefix": "poison-"}'
    )

    assert Settings().fault_injection == POISON


def test_fault_injection_rejected_when_group_unknown() -> None:
    with pytest.raises(ValidationError, match="group"):
        FaultInjection(group="shipping", customer_prefix="poison-")
