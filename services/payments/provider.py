"""Payment-provider adapter and the simulated provider used by default.

The simulated provider declines a charge above `ORDERFLOW_PAYMENT_LIMIT` (the card limit,
50,000.00 by default) and approves every other one. Its results depend only on the
idempotency key and the amount, so a retried charge gets the same result and reference.
"""

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reference: str
    decline_reason: str | None = None


class PaymentProvider(Protocol):
    async def charge(self, idempotency_key: str, amount: Decimal, method: str) -> ChargeResult:
        """Charge `amount`; a repeated call with the same key must not charge twice."""
        ...

    async def refund(self, idempotency_key: str, reference: str, amount: Decimal) -> str:
        """Refund a captured charge; return the refund's reference."""
        ...


def _reference(prefix: str, key: str) -> str:
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:24]


class SimulatedProvider:
    def __init__(self, limit: Decimal) -> None:
        self.limit = limit

    async def charge(self, idempotency_key: str, amount: Decimal, method: str) -> ChargeResult:
        reference = _reference("ch_", idempotency_key)
        if amount > self.limit:
            reason = f"amount {amount} exceeds the card limit of {self.limit}"
            return ChargeResult(approved=False, reference=reference, decline_reason=reason)
        return ChargeResult(approved=True, reference=reference)

    async def refund(self, idempotency_key: str, reference: str, amount: Decimal) -> str:
        return _reference("re_", f"{idempotency_key}:{reference}")
