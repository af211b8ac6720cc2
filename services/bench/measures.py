"""Measures computed from recorded orders and backlog samples, shared by the scenarios."""

from collections.abc import Callable
from typing import Any

from services.bench.observe import OrderTiming, Sampler, tier_seconds
from services.bench.stats import percentile

# An order rate is kept up when the last quarter of orders waited no more than this many
# times the first quarter's p99, plus a second. A growing backlog would make later orders
# wait ever longer.
PACE_GROWTH_FACTOR = 2.0
PACE_SLACK_SECONDS = 1.0


def tier_clock(tier_of: Callable[[str], str], tier: str) -> Callable[[OrderTiming], float]:
    def seconds(order: OrderTiming) -> float:
        return tier_seconds(order, tier_of).get(tier, 0.0)

    return seconds


def whole_seconds(order: OrderTiming) -> float:
    return (order.done_at or order.created) - order.created


def kept_pace(orders: list[OrderTiming], seconds: Callable[[OrderTiming], float]) -> dict[str, Any]:
    """Compare the p99 wait of the first and last quarter of `orders` by acceptance time."""
    ordered = sorted(orders, key=lambda order: order.created)
    quarter = max(len(ordered) // 4, 1)
    first = sorted(seconds(order) for order in ordered[:quarter])
    last = sorted(seconds(order) for order in ordered[-quarter:])
    first_p99 = percentile(first, 0.99)
    last_p99 = percentile(last, 0.99)
    kept_up = (
        first_p99 is not None
        and last_p99 is not None
        and last_p99 <= PACE_GROWTH_FACTOR * first_p99 + PACE_SLACK_SECONDS
    )
    return {
        "kept": kept_up,
        "first_quarter_p99_s": None if first_p99 is None else round(first_p99, 3),
        "last_quarter_p99_s": None if last_p99 is None else round(last_p99, 3),
    }


def completion_rate(orders: list[OrderTiming]) -> float | None:
    """Return fully processed orders per second between the first and the last completion.

    N completions span N - 1 intervals, so that is the count divided by the span.
    """
    done = sorted(order.done_at for order in orders if order.done_at is not None)
    if len(done) < 2 or done[-1] <= done[0]:
        return None
    return round((len(done) - 1) / (done[-1] - done[0]), 2)


def backlog_peak(sampler: Sampler) -> dict[str, int]:
    peak: dict[str, int] = {}
    for sample in sampler.samples:
        for tier, backlog in sample.backlog.items():
            peak[tier] = max(peak.get(tier, 0), backlog)
    return peak


def backlog_at(sampler: Sampler, offset: float) -> dict[str, int]:
    """Return the backlog of the last sample taken at or before `offset`."""
    before = [sample for sample in sampler.samples if sample.offset <= offset]
    return dict(before[-1].backlog) if before else {}


def catch_up_seconds(sampler: Sampler, load_end_offset: float) -> dict[str, float | None]:
    """Return, per tier, seconds from the load's end until its backlog was zero for good."""
    result: dict[str, float | None] = {}
    tiers = {tier for sample in sampler.samples for tier in sample.backlog}
    for tier in sorted(tiers):
        last_busy = max(
            (s.offset for s in sampler.samples if s.backlog.get(tier, 0) > 0), default=None
        )
        if last_busy is None or last_busy < load_end_offset:
            result[tier] = 0.0
            continue
        later_idle = [
            s.offset for s in sampler.samples if s.offset > last_busy and not s.backlog.get(tier)
        ]
        result[tier] = round(later_idle[0] - load_end_offset, 2) if later_idle else None
    return result
