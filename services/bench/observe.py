"""Observations besides HTTP responses: backlog, processes and order timings.

The backlog comes from `GET /api/v1/admin/streams`, process CPU and memory from psutil,
and the time each order's steps finished from the order API, so a system started
elsewhere (`--url`) can be measured too, except for its processes.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psutil
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.bench.stats import distribution
from shared.tiers import Tier, TierMap

SAMPLE_INTERVAL_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.5
LIST_PAGE_SIZE = 100  # the largest page GET /api/v1/orders returns
FINAL_STEP_STATES = frozenset({"done", "failed", "skipped", "refunded", "released"})
# Processes on the host summed under one name, including those that serve other systems.
HOST_PROCESS_NAMES = {
    "postgres": "postgres (host)",
    "redis-server": "redis (host)",
    "valkey-server": "redis (host)",
}
BYTES_PER_MB = 1024 * 1024
# Errors of one backlog reading, which the next reading retries.
READ_ERRORS = (httpx.HTTPError, RedisError, OSError, ValueError, KeyError)
GONE_ROLE = "exited"  # a process that exited between listing and reading it


BacklogReader = Callable[[], Awaitable[dict[str, int]]]


async def fetch_streams(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/admin/streams")
    response.raise_for_status()
    streams: list[dict[str, Any]] = response.json()["streams"]
    return streams


def admin_backlog(client: httpx.AsyncClient) -> BacklogReader:
    """Return a reader of tier backlogs through the admin API, for a system at any URL.

    An overloaded gateway responds late, so readings get sparse under overload.
    """

    async def read() -> dict[str, int]:
        return tier_backlogs(await fetch_streams(client))

    return read


def redis_backlog(redis: Redis, tiers: TierMap) -> BacklogReader:
    """Return a reader of tier backlogs straight from Redis, which an overloaded gateway
    does not slow down."""

    async def read() -> dict[str, int]:
        backlogs: dict[str, int] = {}
        for tier in Tier:
            stream = tiers.stream(tier)
            length = int(await redis.xlen(stream))
            try:
                groups = await redis.xinfo_groups(stream)
            except ResponseError:
                groups = []
            described = {"length": length}
            backlogs[tier.value] = max((group_backlog(described, g) for g in groups), default=0)
        return backlogs

    return read


def group_backlog(stream: dict[str, Any], group: dict[str, Any]) -> int:
    """Return entries a group has not finished: undelivered (lag) plus unacknowledged.

    Redis reports no lag after deletions inside the group's range; the stream length then
    is used instead, which overcounts until the relay trims acknowledged entries.
    """
    lag = group.get("lag")
    undelivered = int(stream["length"]) if lag is None else int(lag)
    return undelivered + int(group["pending"])


def tier_backlogs(streams: list[dict[str, Any]]) -> dict[str, int]:
    """Return each tier's backlog: that of its slowest group."""
    return {
        stream["tier"]: max((group_backlog(stream, g) for g in stream["groups"]), default=0)
        for stream in streams
    }


async def wait_drained(backlog: BacklogReader, timeout_seconds: float) -> float | None:
    """Poll until no group has a backlog; return the monotonic time it was seen, or None."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(*READ_ERRORS):
            if not any((await backlog()).values()):
                return time.monotonic()
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    return None


@dataclass
class Sample:
    offset: float  # seconds from the start of the benchmark
    backlog: dict[str, int]
    cpu_percent: dict[str, float]  # percent of one core
    rss_mb: dict[str, float]
    host_cpu_percent: float  # percent of all cores


@dataclass
class Sampler:
    """Samples backlog and process use once a second in the background."""

    backlog: BacklogReader
    origin: float  # time.time() of offset 0
    processes: Callable[[], list[psutil.Process]] = list
    samples: list[Sample] = field(default_factory=list)
    _task: "asyncio.Task[None] | None" = None
    _known: dict[int, psutil.Process] = field(default_factory=dict)

    def start(self) -> None:
        psutil.cpu_percent(interval=None)
        self._task = asyncio.create_task(self._run(), name="bench-sampler")

    async def stop(self) -> None:
        """Stop sampling after one last sample, so the series ends with the final state."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self.sample()

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)

    async def sample(self) -> None:
        """Take one sample now."""
        backlog: dict[str, int] = {}
        with contextlib.suppress(*READ_ERRORS):
            backlog = await self.backlog()
        # psutil reads /proc for every process, and a thread keeps that off the load's loop.
        cpu, rss = await asyncio.to_thread(self._process_use)
        self.samples.append(
            Sample(
                offset=round(time.time() - self.origin, 3),
                backlog=backlog,
                cpu_percent=cpu,
                rss_mb=rss,
                host_cpu_percent=psutil.cpu_percent(interval=None),
            )
        )

    def _process_use(self) -> tuple[dict[str, float], dict[str, float]]:
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        for process in self._watched():
            name = process_role(process)
            if name == GONE_ROLE:
                continue
            try:
                used = process.cpu_percent(interval=None)
                resident = process.memory_info().rss / BYTES_PER_MB
            except psutil.Error:
                continue
            cpu[name] = round(cpu.get(name, 0.0) + used, 1)
            # A role with several processes (the host's PostgreSQL) reports its largest one.
            rss[name] = round(max(rss.get(name, 0.0), resident), 1)
        return cpu, rss

    def _watched(self) -> list[psutil.Process]:
        current = {process.pid: process for process in self.processes()}
        for process in psutil.process_iter(["name"]):
            if process.info["name"] in HOST_PROCESS_NAMES:
                current[process.pid] = process
        current[psutil.Process().pid] = psutil.Process()
        # Reusing the Process objects keeps cpu_percent measuring since the last sample.
        self._known = {pid: self._known.get(pid, process) for pid, process in current.items()}
        return list(self._known.values())

    def summary(self) -> dict[str, dict[str, float]]:
        """Return mean and max CPU and max RSS per process role over all samples."""
        roles = sorted({name for sample in self.samples for name in sample.cpu_percent})
        result: dict[str, dict[str, float]] = {}
        for role in roles:
            cpu = [s.cpu_percent[role] for s in self.samples if role in s.cpu_percent]
            rss = [s.rss_mb[role] for s in self.samples if role in s.rss_mb]
            result[role] = {
                "cpu_mean_percent": round(sum(cpu) / len(cpu), 1),
                "cpu_max_percent": max(cpu),
                "rss_max_mb": max(rss, default=0.0),
            }
        return result


def process_role(process: psutil.Process) -> str:
    """Name a process by what it runs: `gateway`, `payments`, `bench`, `postgres (host)`."""
    if process.pid == psutil.Process().pid:
        return "bench"
    try:
        name = process.name()
        arguments = process.cmdline()
    except psutil.Error:
        return GONE_ROLE
    if name in HOST_PROCESS_NAMES:
        return HOST_PROCESS_NAMES[name]
    if "services.cli" in arguments:
        command = arguments[arguments.index("services.cli") + 1 :]
        if command[:1] == ["up"]:
            return "supervisor"
        if command[:1] == ["service"] and len(command) > 1:
            return command[1]
        return command[0] if command else name
    return name


@dataclass(frozen=True)
class OrderTiming:
    """When an order was accepted and when each of its steps reached its state."""

    order_id: str
    created: float  # Unix time
    steps: dict[str, tuple[str, float]]  # step -> (state, Unix time of that state)
    fully_processed: bool

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> "OrderTiming":
        steps = {
            name: (step["state"], _unix_time(step["updated_at"]))
            for name, step in view["steps"].items()
        }
        return cls(
            order_id=view["id"],
            created=_unix_time(view["created_at"]),
            steps=steps,
            fully_processed=bool(view["fully_processed"]),
        )

    @property
    def done_at(self) -> float | None:
        """Unix time of the last step, once every step is in a final state."""
        if not self.fully_processed:
            return None
        return max(when for _, when in self.steps.values())


def _unix_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def list_orders(client: httpx.AsyncClient, customer_id: str) -> list[OrderTiming]:
    """Return every order of one customer, following the list's cursor."""
    orders: list[OrderTiming] = []
    params: dict[str, Any] = {"customer_id": customer_id, "limit": LIST_PAGE_SIZE}
    while True:
        response = await client.get("/api/v1/orders", params=params)
        response.raise_for_status()
        page = response.json()
        orders.extend(OrderTiming.from_view(view) for view in page["orders"])
        if not page.get("next_cursor"):
            return orders
        params["cursor"] = page["next_cursor"]


async def collect_orders(
    client: httpx.AsyncClient, customers: Iterable[str], timeout_seconds: float
) -> list[OrderTiming]:
    """Return the customers' orders, fetching unfinished ones again until the deadline."""
    deadline = time.monotonic() + timeout_seconds
    orders: dict[str, OrderTiming] = {}
    for customer in customers:
        orders.update((order.order_id, order) for order in await list_orders(client, customer))
    unfinished = [order_id for order_id, order in orders.items() if not order.fully_processed]
    while unfinished and time.monotonic() < deadline:
        still: list[str] = []
        for order_id in unfinished:
            response = await client.get(f"/api/v1/orders/{order_id}")
            response.raise_for_status()
            orders[order_id] = OrderTiming.from_view(response.json())
            if not orders[order_id].fully_processed:
                still.append(order_id)
        unfinished = still
        if unfinished:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
    return list(orders.values())


def tier_seconds(order: OrderTiming, tier_of: Callable[[str], str]) -> dict[str, float]:
    """Return seconds from acceptance until each tier's last step reached a final state."""
    done: dict[str, float] = {}
    for step, (state, when) in order.steps.items():
        if state in FINAL_STEP_STATES:
            tier = tier_of(step)
            done[tier] = max(done.get(tier, 0.0), when - order.created)
    return done


def order_latencies(orders: list[OrderTiming], tier_of: Callable[[str], str]) -> dict[str, Any]:
    """Summarise seconds from acceptance to each step, each tier and the whole order.

    A tier counts for fully processed orders only, once its last step is done. Only steps
    in a final state count, and `step_states` counts the steps that ended in each state.
    """
    per_step: dict[str, list[float]] = {}
    per_tier: dict[str, list[float]] = {}
    states: dict[str, int] = {}
    whole: list[float] = []
    for order in orders:
        for step, (state, when) in order.steps.items():
            states[state] = states.get(state, 0) + 1
            if state in FINAL_STEP_STATES:
                per_step.setdefault(step, []).append(when - order.created)
        if order.done_at is None:
            continue
        whole.append(order.done_at - order.created)
        for tier, seconds in tier_seconds(order, tier_of).items():
            per_tier.setdefault(tier, []).append(seconds)
    return {
        "orders": len(orders),
        "fully_processed": len(whole),
        "fully_processed_s": distribution(whole),
        "steps_s": {step: distribution(values) for step, values in sorted(per_step.items())},
        "tiers_s": {
            tier.value: distribution(per_tier[tier.value])
            for tier in Tier
            if tier.value in per_tier
        },
        "step_states": dict(sorted(states.items())),
    }
