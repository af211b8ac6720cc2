"""The four benchmark scenarios: intake, e2e, demo and priority.

Each returns the result's headline figures (the keys every `result.json` has) plus its
own details. Rates are orders per second. The generator's own summary of each load run
is kept, so a run where the generator could not keep the rate reports it.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.bench.load import LoadRun, OpenLoopGenerator, RateProfile
from services.bench.measures import (
    backlog_at,
    backlog_peak,
    catch_up_seconds,
    completion_rate,
    kept_pace,
    tier_clock,
    whole_seconds,
)
from services.bench.observe import (
    BacklogReader,
    OrderTiming,
    Sampler,
    collect_orders,
    order_latencies,
    wait_drained,
)
from services.bench.payload import order_requests
from services.bench.system import LocalSystem
from shared.latency import DEMO_SECONDS
from shared.tiers import TIER_WEIGHTS, Tier, WorkType

# The figures every result.json has, None where the scenario does not measure them.
HEADLINE_KEYS = (
    "accepted_per_s",
    "http_p50_ms",
    "http_p99_ms",
    "errors",
    "processed_per_s",
    "e2e_p50_s",
    "e2e_p99_s",
    "drain_s",
)
DEFAULT_RATES: dict[str, tuple[float, ...]] = {
    "intake": (250, 500, 1000, 1500, 2000, 2500, 3000),
    "e2e": (25, 50, 100, 200, 400, 700, 1000),
}
DEFAULT_DURATION_SECONDS = {"intake": 10.0, "e2e": 15.0, "priority": 30.0}
INTAKE_P99_LIMIT_MS = 50.0  # the intake target: p99 under 50 ms with no errors
# Intake stops after this many failed steps in a row. One more step after a failure
# separates a noise spike (other work on the machine) from the rate where latency climbs.
INTAKE_FAILED_STEPS_TO_STOP = 2
# Between intake steps the services get this long to work off the previous step's orders,
# so that each step starts with the CPU free of leftover work.
INTAKE_SETTLE_SECONDS = 30.0
CUSTOMERS_PER_STEP = 20
# Orders accepted while HTTP requests timed out may still be stored. After the streams
# have drained, unfinished orders are fetched again until the drain timeout, and for at
# least this many seconds.
COLLECT_TIMEOUT_SECONDS = 15.0
# Orders must also complete at this share of the accepted rate, which catches a backlog that
# grew from the first second on, where the quarters compare two slow ends.
KEPT_UP_SHARE = 0.9
# The k6 stress shape (loadtest/k6/shapes.js): (seconds, virtual users) stages.
STRESS_STAGES: tuple[tuple[float, float], ...] = (
    (30, 50), (60, 50), (30, 100), (60, 100), (30, 200), (60, 200),
    (30, 300), (60, 300), (30, 400), (120, 400), (90, 0),
)  # fmt: skip
# A k6 virtual user runs one iteration, with one order, and then thinks for 1 s.
ORDERS_PER_USER_PER_SECOND = 1.0


@dataclass
class BenchContext:
    """Everything a scenario uses: clients, the generator, settings and what was recorded."""

    client: httpx.AsyncClient
    backlog: BacklogReader
    generator: OpenLoopGenerator
    host: str
    port: int
    run_id: str
    origin: float  # time.time() of offset 0
    tier_of: Callable[[str], str]
    sampler: Sampler
    drain_timeout_seconds: float
    system: LocalSystem | None = None
    runs: list[LoadRun] = field(default_factory=list)
    orders: list[OrderTiming] = field(default_factory=list)
    load_end_offsets: list[float] = field(default_factory=list)

    def customers(self, label: str) -> list[str]:
        return [f"bench-{self.run_id}-{label}-{n}" for n in range(CUSTOMERS_PER_STEP)]

    async def load(self, customers: Sequence[str], profile: RateProfile) -> LoadRun:
        requests = order_requests(self.host, self.port, customers, seed=len(self.runs))
        run = await self.generator.run(requests, profile)
        self.runs.append(run)
        self.load_end_offsets.append(round(time.time() - self.origin, 3))
        return run


def headline(
    run: dict[str, Any] | None,
    processed_per_s: float | None = None,
    e2e: dict[str, Any] | None = None,
    drain_s: float | None = None,
) -> dict[str, Any]:
    """Return the figures every result has, None where the scenario did not measure them."""
    fully = (e2e or {}).get("fully_processed_s", {})
    return {
        "accepted_per_s": run["accepted_per_s"] if run else None,
        "http_p50_ms": run["http_p50_ms"] if run else None,
        "http_p99_ms": run["http_p99_ms"] if run else None,
        "errors": run["errors"] if run else 0,
        "processed_per_s": processed_per_s,
        "e2e_p50_s": fully.get("p50"),
        "e2e_p99_s": fully.get("p99"),
        "drain_s": drain_s,
    }


async def run_intake(
    ctx: BenchContext, rates: Sequence[float], seconds: float, pause_services: bool
) -> dict[str, Any]:
    """Step up the order rate until two steps in a row miss p99 < 50 ms or have errors."""
    steps: list[dict[str, Any]] = []
    if pause_services and ctx.system is not None:
        ctx.system.pause_services()
    try:
        for index, rate in enumerate(rates):
            if index and not pause_services:
                await wait_drained(ctx.backlog, INTAKE_SETTLE_SECONDS)
            run = await ctx.load(ctx.customers(f"i{index}"), RateProfile.constant(rate, seconds))
            summary = run.summary()
            failures = _intake_failures(summary)
            steps.append({"rate": rate, **summary, "passed": not failures, "failures": failures})
            recent = steps[-INTAKE_FAILED_STEPS_TO_STOP:]
            if len(recent) == INTAKE_FAILED_STEPS_TO_STOP and not any(
                step["passed"] for step in recent
            ):
                break
    finally:
        if pause_services and ctx.system is not None:
            ctx.system.resume_services()
    best = _last_passed(steps)
    return {
        **headline(best or steps[0]),
        "verdict": _verdict(best, "the highest rate with p99 under 50 ms and no errors"),
        "steps": steps,
        "services_paused": pause_services and ctx.system is not None,
    }


def _intake_failures(summary: dict[str, Any]) -> list[str]:
    failures = []
    if summary["errors"]:
        failures.append(f"{summary['errors']} requests failed: {summary['status_counts']}")
    if summary["http_p99_ms"] is None or summary["http_p99_ms"] >= INTAKE_P99_LIMIT_MS:
        failures.append(f"p99 {summary['http_p99_ms']} ms is not under {INTAKE_P99_LIMIT_MS} ms")
    if summary["shortfall"]:
        failures.append(summary["shortfall"])
    return failures


async def run_e2e(ctx: BenchContext, rates: Sequence[float], seconds: float) -> dict[str, Any]:
    """Step up the order rate until orders are no longer all processed at the pace they come."""
    steps: list[dict[str, Any]] = []
    for index, rate in enumerate(rates):
        step = await _e2e_step(ctx, f"e{index}", rate, seconds)
        steps.append(step)
        if step["failures"]:
            break
    best = _last_passed(steps)
    reported = best or steps[0]
    return {
        **headline(reported, reported["processed_per_s"], reported["e2e"], reported["drain_s"]),
        "verdict": _verdict(best, "the highest rate whose orders were all fully processed"),
        "steps": steps,
    }


async def _e2e_step(ctx: BenchContext, label: str, rate: float, seconds: float) -> dict[str, Any]:
    customers = ctx.customers(label)
    run = await ctx.load(customers, RateProfile.constant(rate, seconds))
    orders, drain_s = await settle(ctx, customers)

    summary = run.summary()
    e2e = order_latencies(orders, ctx.tier_of)
    pace = kept_pace([o for o in orders if o.done_at is not None], whole_seconds)
    failures = [] if not summary["shortfall"] else [summary["shortfall"]]
    if summary["errors"]:
        failures.append(f"{summary['errors']} requests failed: {summary['status_counts']}")
    if drain_s is None:
        failures.append(f"the backlog did not drain within {ctx.drain_timeout_seconds:.0f} s")
    if e2e["fully_processed"] < max(len(orders), summary["accepted"]):
        failures.append(f"{e2e['fully_processed']} of {len(orders)} orders fully processed")
    if not pace["kept"]:
        failures.append(
            f"processing fell behind: p99 grew from {pace['first_quarter_p99_s']} s "
            f"to {pace['last_quarter_p99_s']} s over the step"
        )
    processed_per_s = completion_rate(orders)
    if (processed_per_s or 0.0) < KEPT_UP_SHARE * summary["accepted_per_s"]:
        failures.append(
            f"orders completed at {processed_per_s}/s, below {KEPT_UP_SHARE:.0%} of the "
            f"{summary['accepted_per_s']}/s accepted"
        )
    return {
        "rate": rate,
        **summary,
        "processed_per_s": processed_per_s,
        "drain_s": drain_s,
        "e2e": e2e,
        "pace": pace,
        "passed": not failures,
        "failures": failures,
    }


async def run_demo(ctx: BenchContext, scale: float) -> dict[str, Any]:
    """Run the stress shape, scaled in time and rate, and time the drain after it."""
    stages = tuple(
        (stage_seconds * scale, users * scale * ORDERS_PER_USER_PER_SECOND)
        for stage_seconds, users in STRESS_STAGES
    )
    customers = ctx.customers("demo")
    run = await ctx.load(customers, RateProfile(stages=stages))
    load_end_offset = ctx.load_end_offsets[-1]
    orders, drain_s = await settle(ctx, customers)

    summary = run.summary()
    e2e = order_latencies(orders, ctx.tier_of)
    return {
        **headline(summary, completion_rate(orders), e2e, drain_s),
        "verdict": (
            f"the backlog drained {drain_s} s after the load ended"
            if drain_s is not None
            else f"the backlog did not drain within {ctx.drain_timeout_seconds:.0f} s"
        ),
        "scale": scale,
        "load": summary,
        "e2e": e2e,
        "backlog_peak": backlog_peak(ctx.sampler),
        "backlog_at_load_end": backlog_at(ctx.sampler, load_end_offset),
    }


async def run_priority(ctx: BenchContext, rate: float, seconds: float) -> dict[str, Any]:
    """Overload the low tier but not the critical one, then watch every tier catch up."""
    customers = ctx.customers("priority")
    run = await ctx.load(customers, RateProfile.constant(rate, seconds))
    load_end_offset = ctx.load_end_offsets[-1]
    orders, drain_s = await settle(ctx, customers)

    finished = [o for o in orders if o.done_at is not None]
    tiers = ("critical", "high", "default", "low")
    pace = {tier: kept_pace(finished, tier_clock(ctx.tier_of, tier)) for tier in tiers}
    e2e = order_latencies(orders, ctx.tier_of)
    summary = run.summary()
    verdict = (
        f"critical {'kept' if pace['critical']['kept'] else 'did not keep'} its latency "
        f"(p99 {e2e['tiers_s'].get('critical', {}).get('p99')} s); low "
        f"{'fell behind' if not pace['low']['kept'] else 'kept up'} "
        f"(p99 {e2e['tiers_s'].get('low', {}).get('p99')} s)"
    )
    return {
        **headline(summary, completion_rate(orders), e2e, drain_s),
        "verdict": verdict,
        "rate": rate,
        "load": summary,
        "e2e": e2e,
        "pace": pace,
        "backlog_peak": backlog_peak(ctx.sampler),
        "backlog_at_load_end": backlog_at(ctx.sampler, load_end_offset),
        "catch_up_s": catch_up_seconds(ctx.sampler, load_end_offset),
    }


async def settle(
    ctx: BenchContext, customers: Sequence[str]
) -> tuple[list[OrderTiming], float | None]:
    """Wait until the streams have drained and the customers' orders are fully processed.

    Return the orders and the seconds from the end of the load until both were true, or
    None when that did not happen within the drain timeout. Streams alone are not enough,
    because an order whose request was still in the gateway when the load ended can reach
    the outbox, and so the streams, after they first looked empty.
    """
    load_end = time.monotonic()
    load_end_unix = time.time()
    deadline = load_end + ctx.drain_timeout_seconds
    drained = await wait_drained(ctx.backlog, ctx.drain_timeout_seconds)
    remaining = max(deadline - time.monotonic(), COLLECT_TIMEOUT_SECONDS)
    orders = await collect_orders(ctx.client, customers, remaining)
    ctx.orders.extend(orders)
    # A sample now records the drained state, which the one-second samples may have missed.
    await ctx.sampler.sample()
    if drained is None or not all(order.fully_processed for order in orders):
        return orders, None
    last_done = max((order.done_at or load_end_unix for order in orders), default=load_end_unix)
    return orders, round(max(drained - load_end, last_done - load_end_unix, 0.0), 2)


def priority_rate(consumer_base: int, batch_size: int) -> float:
    """Return an order rate between the low tier's capacity and the critical tier's.

    Under the demo step times a group handles at most consumers x batch size entries per
    step time. With the defaults (base 1, batch 32) payment, the critical tier, handles
    6 x 32 / 2 s = 96 orders/s and warehouse, the low tier, 1 x 32 / 0.5 s = 64/s, so the
    midpoint, 80/s, overloads the low tier and not the critical one.
    """
    per_consumer = consumer_base * batch_size
    critical = TIER_WEIGHTS[Tier.CRITICAL] * per_consumer / DEMO_SECONDS[WorkType.PAYMENT]
    low = TIER_WEIGHTS[Tier.LOW] * per_consumer / DEMO_SECONDS[WorkType.WAREHOUSE]
    return round((critical + low) / 2, 1)


def _last_passed(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    passed = [step for step in steps if step["passed"]]
    return passed[-1] if passed else None


def _verdict(best: dict[str, Any] | None, criterion: str) -> str:
    if best is None:
        return f"no rate passed, so {criterion} is below the first step"
    rate = best["rate"]
    return f"{criterion}: {rate:g} orders/s requested, {best['accepted_per_s']:g}/s accepted"
