"""Open-loop HTTP/1.1 load: requests go out on a schedule, whether or not earlier ones returned.

A closed loop (each client waits for its response before the next request) slows down with
the server and hides its queueing. Here each request has a scheduled send time taken from
the rate profile, and its latency is measured from that time, so waiting for a free
connection counts against the server. The client (`client.py`) is a small keep-alive
HTTP/1.1 protocol on asyncio, with request bytes built before the run, because the
generator shares the CPU with the system it measures.

The generator measures itself: the rate it achieved, how late its scheduler woke up, and
its CPU time. `LoadRun.shortfall()` explains a run that fell short of the requested rate.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from services.bench.client import ConnectionPool
from services.bench.stats import distribution, percentile

CONNECT_ERROR_STATUS = 0
TIMEOUT_STATUS = -1
# The scheduler sleeps at most this long between checks, in seconds.
MAX_SLEEP_SECONDS = 0.05
# The generator kept the rate when it completed at least this share of the requested requests.
KEPT_RATE_SHARE = 0.95
# A scheduler that wakes later than this (p99) was short of CPU, and the delay shows in
# every latency measured from the scheduled time.
MAX_SCHEDULER_LATE_MS = 20.0


@dataclass(frozen=True)
class RateProfile:
    """Requests per second over time: linear ramps from one target to the next, like k6 stages.

    Each stage is `(seconds, target_rate)`; the rate moves linearly from the previous
    target (`start_rate` for the first stage) to `target_rate` over `seconds`.
    """

    stages: tuple[tuple[float, float], ...]
    start_rate: float = 0.0

    @classmethod
    def constant(cls, rate: float, seconds: float) -> RateProfile:
        return cls(stages=((seconds, rate),), start_rate=rate)

    @property
    def seconds(self) -> float:
        return sum(stage_seconds for stage_seconds, _ in self.stages)

    @property
    def peak_rate(self) -> float:
        return max([self.start_rate, *(rate for _, rate in self.stages)])

    def rate_at(self, offset: float) -> float:
        previous = self.start_rate
        elapsed = 0.0
        for stage_seconds, target in self.stages:
            if offset < elapsed + stage_seconds:
                progress = (offset - elapsed) / stage_seconds if stage_seconds > 0 else 1.0
                return previous + (target - previous) * progress
            elapsed += stage_seconds
            previous = target
        return previous

    def expected_requests(self) -> float:
        """Return the number of requests the profile schedules (the area under the rate)."""
        total = 0.0
        previous = self.start_rate
        for stage_seconds, target in self.stages:
            total += (previous + target) / 2 * stage_seconds
            previous = target
        return total

    def time_of(self, count: float) -> float | None:
        """Return the offset at which `count` requests are due, or None past the profile's end.

        The area under a linear ramp grows quadratically, so each stage solves
        a*t + (b/2)*t^2 = remaining for t. Stepping by 1/rate instead would stall at the
        start of a ramp from zero, where the rate is still close to zero.
        """
        elapsed = 0.0
        remaining = count
        previous = self.start_rate
        for stage_seconds, target in self.stages:
            area = (previous + target) / 2 * stage_seconds
            if remaining <= 0:
                return elapsed
            if remaining <= area and stage_seconds > 0:
                slope = (target - previous) / stage_seconds
                if abs(slope) < 1e-12:
                    return elapsed + remaining / previous
                root = math.sqrt(max(previous * previous + 2 * slope * remaining, 0.0))
                return elapsed + (root - previous) / slope
            remaining -= area
            elapsed += stage_seconds
            previous = target
        return None


@dataclass
class LoadRun:
    """Record of one open-loop run: each request and response, in seconds from its start."""

    profile: RateProfile
    connections: int
    started_at: float = 0.0  # wall-clock time (time.time()) of offset 0
    seconds: float = 0.0  # from the start until the last response
    scheduled: array[float] = field(default_factory=lambda: array("d"))
    sent: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))  # from the scheduled time
    service: array[float] = field(default_factory=lambda: array("d"))  # from the actual send
    status: array[int] = field(default_factory=lambda: array("h"))
    scheduler_late: array[float] = field(default_factory=lambda: array("d"))
    error_samples: dict[int, str] = field(default_factory=dict)
    connection_waits: int = 0
    cpu_seconds: float = 0.0

    def status_counts(self) -> dict[str, int]:
        names = {CONNECT_ERROR_STATUS: "connection error", TIMEOUT_STATUS: "timeout"}
        counts = Counter(names.get(code, str(code)) for code in self.status)
        return dict(sorted(counts.items()))

    def accepted(self) -> int:
        return sum(1 for code in self.status if code == 201)

    def achieved_per_s(self) -> float:
        """Return the requests per second actually written to a socket within the load window."""
        window = self.profile.seconds
        in_window = sum(1 for offset in self.sent if offset < window)
        return in_window / window if window > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Summarise the run: rates per second, latency in milliseconds, generator health."""
        window = self.profile.seconds
        latencies = sorted(self.latency)
        answered = len(self.status)
        accepted = self.accepted()
        return {
            "requested_per_s": round(self.profile.expected_requests() / window, 2),
            "peak_requested_per_s": self.profile.peak_rate,
            "achieved_per_s": round(self.achieved_per_s(), 2),
            "sent": answered,
            "accepted": accepted,
            "errors": answered - accepted,
            "status_counts": self.status_counts(),
            "error_samples": {str(status): body for status, body in self.error_samples.items()},
            "accepted_per_s": round(accepted / window, 2),
            "http_p50_ms": _rounded(percentile(latencies, 0.5), 1000),
            "http_p90_ms": _rounded(percentile(latencies, 0.9), 1000),
            "http_p99_ms": _rounded(percentile(latencies, 0.99), 1000),
            "http_max_ms": _rounded(latencies[-1] if latencies else None, 1000),
            "service_ms": distribution(self.service, scale=1000, digits=2),
            "scheduler_late_p99_ms": round(self.scheduler_late_ms(), 2),
            "connection_waits": self.connection_waits,
            "generator_cpu_percent": round(100 * self.cpu_seconds / max(self.seconds, 1e-9), 1),
            "shortfall": self.shortfall(),
        }

    def shortfall(self) -> str | None:
        """Explain how the generator failed to send at the requested rate, or return None."""
        requested = self.profile.expected_requests() / self.profile.seconds
        achieved = self.achieved_per_s()
        if achieved >= KEPT_RATE_SHARE * requested:
            return None
        causes = []
        if self.scheduler_late_ms() > MAX_SCHEDULER_LATE_MS:
            late = self.scheduler_late_ms()
            causes.append(f"it was short of CPU (its scheduler woke up to {late:.0f} ms late)")
        if self.connection_waits:
            causes.append(
                f"all {self.connections} connections were busy {self.connection_waits} times, "
                "so the server answered too slowly for this rate (or raise --connections)"
            )
        cause = " and ".join(causes) or "the scheduler kept time and connections were free"
        return f"the load generator sent {achieved:.0f}/s of {requested:.0f}/s requested: {cause}"

    def lateness(self) -> str | None:
        """Warn when the scheduler woke up late, which adds to every measured latency."""
        late = self.scheduler_late_ms()
        if late <= MAX_SCHEDULER_LATE_MS:
            return None
        return (
            f"the load generator's scheduler woke up to {late:.0f} ms late (p99) because the "
            "machine was short of CPU; latencies are measured from the scheduled time and "
            "include that delay"
        )

    def scheduler_late_ms(self) -> float:
        return 1000 * (percentile(sorted(self.scheduler_late), 0.99) or 0.0)


def _rounded(seconds: float | None, scale: float) -> float | None:
    return None if seconds is None else round(seconds * scale, 2)


class OpenLoopGenerator:
    """Sends the prepared requests in turn at the rates of a profile and records each response."""

    def __init__(
        self, host: str, port: int, connections: int = 128, timeout_seconds: float = 10.0
    ) -> None:
        self.host = host
        self.port = port
        self.connections = connections
        self.timeout_seconds = timeout_seconds

    async def run(self, requests: Sequence[bytes], profile: RateProfile) -> LoadRun:
        if not requests:
            raise ValueError("no requests to send: pass at least one prepared request")
        if profile.seconds <= 0:
            raise ValueError(f"the rate profile lasts {profile.seconds} s; it must last longer")
        pool = ConnectionPool(self.host, self.port, self.connections)
        record = LoadRun(profile=profile, connections=self.connections)
        in_flight: set[asyncio.Task[None]] = set()
        process = psutil.Process()
        cpu_before = sum(process.cpu_times()[:2])
        record.started_at = time.time()
        start = time.perf_counter()
        try:
            await self._schedule(pool, requests, profile, record, start, in_flight)
            if in_flight:
                await asyncio.wait(in_flight, timeout=self.timeout_seconds + 1)
        finally:
            for task in in_flight:
                task.cancel()
            pool.close()
        record.seconds = time.perf_counter() - start
        record.cpu_seconds = sum(process.cpu_times()[:2]) - cpu_before
        record.connection_waits = pool.waits
        return record

    async def _schedule(
        self,
        pool: ConnectionPool,
        requests: Sequence[bytes],
        profile: RateProfile,
        record: LoadRun,
        start: float,
        in_flight: set[asyncio.Task[None]],
    ) -> None:
        loop = asyncio.get_running_loop()
        total_seconds = profile.seconds
        index = 0
        next_due = profile.time_of(index)
        while next_due is not None and next_due < total_seconds:
            now = time.perf_counter() - start
            if next_due <= now:
                record.scheduler_late.append(now - next_due)
            while next_due is not None and next_due <= now and next_due < total_seconds:
                request = requests[index % len(requests)]
                task = loop.create_task(self._send(pool, request, next_due, start, record))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                index += 1
                next_due = profile.time_of(index)
            if next_due is not None:
                await asyncio.sleep(min(max(next_due - now, 0.0), MAX_SLEEP_SECONDS))

    async def _send(
        self, pool: ConnectionPool, request: bytes, due: float, start: float, record: LoadRun
    ) -> None:
        status = CONNECT_ERROR_STATUS
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                connection = await pool.acquire()
                sent = time.perf_counter()
                try:
                    status = await connection.send(request)
                    if status >= 300 and status not in record.error_samples:
                        record.error_samples[status] = connection.error_body.decode(
                            errors="replace"
                        )
                except BaseException:
                    connection.close()
                    raise
                finally:
                    pool.release(connection)
        except TimeoutError:
            status = TIMEOUT_STATUS
        except (OSError, ValueError):
            status = CONNECT_ERROR_STATUS
        done = time.perf_counter()
        record.scheduled.append(due)
        record.sent.append(sent - start)
        record.latency.append(done - start - due)
        record.service.append(done - sent)
        record.status.append(status)
