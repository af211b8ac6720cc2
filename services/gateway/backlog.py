"""Backlog per tier, refreshed in the background, for load shedding and `/ready`."""

import asyncio
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared.errors import Overloaded
from shared.logs import RepeatLimiter
from shared.metrics import (
    DEAD_LETTERS,
    GROUP_CONSUMERS,
    GROUP_LAG,
    GROUP_OLDEST_PENDING_AGE,
    GROUP_PENDING,
    STREAM_BACKLOG,
    STREAM_LENGTH,
)
from shared.streams.groups import oldest_pending_age_ms
from shared.tasks import cancel_and_wait

log = structlog.get_logger("orderflow.backlog")

REFRESH_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5


async def stream_backlog(redis: Redis, stream: str, record: bool = False) -> int:
    """Return the entries of `stream` its slowest group has not acknowledged.

    For each group that is the entries not yet delivered (`lag`) plus those delivered but
    not acknowledged (`pending`). A stream without groups counts its whole length.
    With `record`, the per-group gauges are set too.
    """
    length = int(await redis.xlen(stream))
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        groups = []
    if record:
        STREAM_LENGTH.labels(stream).set(length)
    if not groups:
        return length
    worst = 0
    for group in groups:
        lag = group.get("lag")
        # Redis cannot tell the lag after some deletions; count the whole stream then.
        lag = length if lag is None else int(lag)
        pending = int(group.get("pending", 0))
        worst = max(worst, lag + pending)
        if record:
            await _record_group(redis, stream, group, lag, pending)
    return worst


async def _record_group(
    redis: Redis, stream: str, group: dict[str, Any], lag: int, pending: int
) -> None:
    name = group["name"].decode() if isinstance(group["name"], bytes) else str(group["name"])
    GROUP_PENDING.labels(stream, name).set(pending)
    GROUP_LAG.labels(stream, name).set(lag)
    GROUP_CONSUMERS.labels(stream, name).set(int(group.get("consumers", 0)))
    age_ms = None
    if pending:
        age_ms = await oldest_pending_age_ms(redis, stream, name, int(time.time() * 1000))
    GROUP_OLDEST_PENDING_AGE.labels(stream, name).set((age_ms or 0) / 1000)


class BacklogMonitor:
    def __init__(
        self, redis: Redis, streams: list[str], limit: int, dead_letter_streams: list[str]
    ) -> None:
        self.redis = redis
        self.streams = streams
        self.dead_letter_streams = dead_letter_streams
        self.limit = limit
        self.backlog: dict[str, int] = dict.fromkeys(streams, 0)
        self.redis_ok = True
        self._failures = RepeatLimiter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="backlog-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def refresh(self) -> None:
        for stream in self.streams:
            backlog = await stream_backlog(self.redis, stream, record=True)
            self.backlog[stream] = backlog
            STREAM_BACKLOG.labels(stream).set(backlog)
        for stream in self.dead_letter_streams:
            DEAD_LETTERS.labels(stream).set(int(await self.redis.xlen(stream)))

    def check(self) -> None:
        """Raise Overloaded when a tier's backlog is above the limit."""
        for stream, backlog in self.backlog.items():
            if backlog > self.limit:
                raise Overloaded(stream, backlog, self.limit, RETRY_AFTER_SECONDS)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                self.redis_ok = False
                if self._failures.should_log():
                    log.warning("backlog refresh failed", error=str(exc))
            else:
                self.redis_ok = True
                self._failures.recovered()
            await asyncio.sleep(REFRESH_SECONDS)
