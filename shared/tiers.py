"""Work types, priority tiers, and the stream and group names they map to."""

from collections.abc import Mapping
from enum import StrEnum


class WorkType(StrEnum):
    """The six kinds of work an order goes through; also the names of its steps."""

    PAYMENT = "payment"
    INVENTORY = "inventory"
    EMAIL = "email"
    INVOICE = "invoice"
    ANALYTICS = "analytics"
    WAREHOUSE = "warehouse"


class Tier(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


# Consumers per group are the tier's weight times ORDERFLOW_CONSUMER_BASE.
TIER_WEIGHTS: Mapping[Tier, int] = {Tier.CRITICAL: 6, Tier.HIGH: 4, Tier.DEFAULT: 2, Tier.LOW: 1}

DEFAULT_TIERS: Mapping[WorkType, Tier] = {
    WorkType.PAYMENT: Tier.CRITICAL,
    WorkType.INVENTORY: Tier.HIGH,
    WorkType.EMAIL: Tier.DEFAULT,
    WorkType.INVOICE: Tier.DEFAULT,
    WorkType.ANALYTICS: Tier.LOW,
    WorkType.WAREHOUSE: Tier.LOW,
}

GROUP_NAMES: Mapping[WorkType, str] = {
    WorkType.PAYMENT: "payments",
    WorkType.INVENTORY: "inventory",
    WorkType.EMAIL: "email",
    WorkType.INVOICE: "invoice",
    WorkType.ANALYTICS: "analytics",
    WorkType.WAREHOUSE: "warehouse",
}


class TierMap:
    """Resolves work types to tiers, streams and consumer counts for one configuration."""

    def __init__(self, prefix: str = "", overrides: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self._tiers = dict(DEFAULT_TIERS)
        for work, tier in (overrides or {}).items():
            try:
                self._tiers[WorkType(work)] = Tier(tier)
            except ValueError as exc:
                raise ValueError(
                    f"invalid tier override {work}={tier}: work types are "
                    f"{[w.value for w in WorkType]}, tiers are {[t.value for t in Tier]}"
                ) from exc

    def tier_of(self, work: WorkType) -> Tier:
        return self._tiers[work]

    def stream(self, tier: Tier) -> str:
        return f"{self.prefix}orders.{tier.value}"

    def dead_letter_stream(self, tier: Tier) -> str:
        return f"{self.prefix}orders.{tier.value}.dead"

    def stream_of(self, work: WorkType) -> str:
        return self.stream(self.tier_of(work))

    def streams_for(self, works: frozenset[WorkType]) -> list[str]:
        """Return the streams that carry at least one of `works`, in tier order."""
        tiers_needed = {self.tier_of(work) for work in works}
        return [self.stream(tier) for tier in Tier if tier in tiers_needed]

    def consumer_count(self, work: WorkType, base: int) -> int:
        return TIER_WEIGHTS[self.tier_of(work)] * base

    def all_streams(self) -> list[str]:
        return [self.stream(tier) for tier in Tier]
