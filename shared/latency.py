"""Simulated step times of the `demo` latency profile.

They are the step times of the Asynq demo this project replaces, so that a run with
`ORDERFLOW_SIMULATED_LATENCY=demo` can be compared with it. They never block the event loop.
"""

import asyncio

from shared.settings import LatencyProfile
from shared.tiers import WorkType

DEMO_SECONDS: dict[WorkType, float] = {
    WorkType.PAYMENT: 2.0,
    WorkType.INVENTORY: 0.5,
    WorkType.EMAIL: 1.0,
    WorkType.INVOICE: 3.0,
    WorkType.ANALYTICS: 0.2,
    WorkType.WAREHOUSE: 0.5,
}
DEMO_INVENTORY_SECONDS_PER_LINE = 0.1


def step_seconds(profile: LatencyProfile, work: WorkType, lines: int = 0) -> float:
    if profile is LatencyProfile.NONE:
        return 0.0
    extra = DEMO_INVENTORY_SECONDS_PER_LINE * lines if work is WorkType.INVENTORY else 0.0
    return DEMO_SECONDS[work] + extra


async def simulate(profile: LatencyProfile, work: WorkType, lines: int = 0) -> None:
    seconds = step_seconds(profile, work, lines)
    if seconds > 0:
        await asyncio.sleep(seconds)
