"""The operator's monitor page at `/monitor` and the throughput figures it charts.

The page is static HTML, CSS and JavaScript that polls the admin API from the browser, so
it shows only what the API returns and needs the same Bearer token. `ThroughputSampler`
reads every group's counters from Redis at a fixed interval and keeps a window of samples,
from which `GET /api/v1/admin/throughput` returns the entries each group finished per second.
"""

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import structlog
from litestar import Response, get
from litestar.datastructures import State
from litestar.response import File
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.gateway.admin import admin_read_guard
from services.gateway.routes import json_response
from shared.logs import RepeatLimiter
from shared.streams.replies import as_text
from shared.tasks import cancel_and_wait
from shared.tiers import Tier, TierMap

log = structlog.get_logger("orderflow.monitor")

STATIC_DIR = Path(__file__).parent / "static"

# The page loads its script and style from this gateway only and sends no data elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

GroupKey = tuple[str, str]
"""A consumer group as (tier, group name)."""


@dataclass(frozen=True)
class GroupCounters:
    """The counters of one group at one moment, from XINFO GROUPS."""

    entries_read: int
    pending: int

    @property
    def finished(self) -> int:
        """Entries delivered and no longer pending: acknowledged or dead-lettered."""
        return self.entries_read - self.pending


@dataclass(frozen=True)
class Sample:
    at_ms: int
    """Wall-clock time, for the chart's time axis."""
    monotonic: float
    """Monotonic time, for the interval between two samples."""
    counters: dict[GroupKey, GroupCounters]


def finished_between(before: GroupCounters, after: GroupCounters) -> int:
    """Return how many entries a group finished between two samples, never below zero.

    A read counter that went backwards means the group started again from nothing, because
    Redis restarted empty or the group was recreated. What it finished since then is all that
    can be known of that interval, so it is a lower bound.
    """
    if after.entries_read < before.entries_read:
        return max(after.finished, 0)
    return max(after.finished - before.finished, 0)


class ThroughputSampler:
    """Samples each tier's consumer groups every `interval_seconds` for the throughput chart.

    It needs Redis 7, whose XINFO GROUPS reports `entries-read`. A failed sample is logged
    once per outage (then once per 30 s) and skipped, and sampling goes on.
    """

    def __init__(
        self,
        redis: Redis,
        tiers: TierMap,
        interval_seconds: float = 5.0,
        window_seconds: float = 600.0,
    ) -> None:
        if interval_seconds <= 0 or window_seconds < interval_seconds:
            raise ValueError(
                f"invalid sampling: interval {interval_seconds} s must be above 0 and at most "
                f"the window {window_seconds} s"
            )
        self.redis = redis
        self.tiers = tiers
        self.interval_seconds = interval_seconds
        self.window_seconds = window_seconds
        self.redis_ok = True
        self._samples: deque[Sample] = deque(maxlen=int(window_seconds / interval_seconds) + 2)
        self._failures = RepeatLimiter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="throughput-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def sample_once(self) -> None:
        """Read every group's counters and add them to the window.

        Raises RedisError or OSError when Redis fails, and then adds nothing.
        """
        counters: dict[GroupKey, GroupCounters] = {}
        for tier in Tier:
            try:
                groups = await self.redis.xinfo_groups(self.tiers.stream(tier))
            except ResponseError as exc:
                if "no such key" not in str(exc).lower():
                    raise
                continue
            for info in groups:
                entries_read = _entries_read(info)
                if entries_read is not None:
                    counters[(tier.value, as_text(info["name"]))] = GroupCounters(
                        entries_read, int(info["pending"])
                    )
        self._add(Sample(int(time.time() * 1000), time.monotonic(), counters))

    def rates(self) -> dict[str, Any]:
        """Return the entries finished per second by each group over the window.

        Every pair of consecutive samples gives one point per group present in both, stamped
        with the later sample's time. A group seen in one sample only is listed without points.
        """
        series: dict[GroupKey, list[dict[str, Any]]] = {}
        if self._samples:
            series = {key: [] for key in self._samples[-1].counters}
        for before, after in pairwise(self._samples):
            elapsed = after.monotonic - before.monotonic
            for key, counters in after.counters.items():
                previous = before.counters.get(key)
                if previous is None or elapsed <= 0:
                    continue
                finished = finished_between(previous, counters)
                point = {
                    "at_ms": after.at_ms,
                    "finished": finished,
                    "per_second": round(finished / elapsed, 3),
                }
                series.setdefault(key, []).append(point)

        tier_order = [tier.value for tier in Tier]
        groups = [
            {
                "tier": tier,
                "stream": self.tiers.stream(Tier(tier)),
                "group": group,
                "per_second": points[-1]["per_second"] if points else None,
                "points": points,
            }
            for (tier, group), points in sorted(
                series.items(), key=lambda item: (tier_order.index(item[0][0]), item[0][1])
            )
        ]
        return {
            "interval_seconds": self.interval_seconds,
            "window_seconds": self.window_seconds,
            "now_ms": int(time.time() * 1000),
            "redis_ok": self.redis_ok,
            "groups": groups,
        }

    def _add(self, sample: Sample) -> None:
        self._samples.append(sample)
        # One sample older than the window stays, so the window's first interval has a rate.
        while (
            len(self._samples) > 2
            and sample.monotonic - self._samples[1].monotonic > self.window_seconds
        ):
            self._samples.popleft()

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except (RedisError, OSError) as exc:
                self.redis_ok = False
                if self._failures.should_log():
                    log.warning(
                        "throughput sample failed, will retry",
                        error=str(exc) or type(exc).__name__,
                        retry_in_s=self.interval_seconds,
                        suppressed_repeats=self._failures.suppressed,
                    )
            else:
                self.redis_ok = True
                if self._failures.failing and self._failures.recovered():
                    log.info("throughput sampling resumed")
            await asyncio.sleep(self.interval_seconds)


def _entries_read(info: dict[str, Any]) -> int | None:
    """Return a group's read counter, or None while Redis does not report it.

    Redis 7.0 reports nil until a group's first read after XGROUP CREATE. A group whose last
    delivered id is 0-0 has read nothing, so its counter is 0. A group created at `$` or at
    another id gets no rate until its first read sets the counter.
    """
    entries_read = info.get("entries-read")
    if entries_read is not None:
        return int(entries_read)
    if as_text(info.get("last-delivered-id", b"")) == "0-0":
        return 0
    return None


def _static(name: str, media_type: str) -> File:
    # File adds `; charset=utf-8` to text media types itself.
    return File(
        path=STATIC_DIR / name,
        filename=name,
        media_type=media_type,
        content_disposition_type="inline",
        headers=PAGE_HEADERS,
    )


@get("/monitor", include_in_schema=False)
async def monitor_page() -> File:
    """Serve the monitor page. The browser fetches its data from the admin API."""
    return _static("monitor.html", "text/html")


@get("/monitor/monitor.js", include_in_schema=False)
async def monitor_script() -> File:
    return _static("monitor.js", "text/javascript")


@get("/monitor/monitor.css", include_in_schema=False)
async def monitor_style() -> File:
    return _static("monitor.css", "text/css")


@get(
    "/api/v1/admin/throughput",
    guards=[admin_read_guard],
    summary="Entries finished per second by each consumer group over the last minutes",
)
async def admin_throughput(state: State) -> Response[bytes]:
    sampler: ThroughputSampler = state.throughput
    return json_response(sampler.rates())


MONITOR_ROUTES = [monitor_page, monitor_script, monitor_style, admin_throughput]
