"""Backlog per tier, refreshed in the background, for load shedding and `/ready`."""

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import Overloaded
from shared.logs import RepeatLimiter
from shared.metrics import STREAM_BACKLOG

log = structlog.get_logger("orderflow.backlog")

REFRESH_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5


async def stream_backlog(redis: Redis, stream: str) -> int:
    """Return the entries of `stream` its slowest group has not acknowledged.

    For each group that is the entries not yet delivered (`lag`) plus those delivered but
    not acknowledged (`pending`). A stream without groups counts its whole length.
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except RedisError:
        return 0
    if not groups:
        return int(await redis.xlen(stream))
    worst = 0
    for group in groups:
        lag = group.get("lag")
        if lag is None:
            # Redis cannot tell the lag after deletions; count the whole stream.
            lag = await redis.xlen(stream)
        worst = max(worst, int(lag) + int(group.get("pending", 0)))
    return worst


class BacklogMonitor:
    def __init__(self, redis: Redis, streams: list[str], limit: int) -> None:
        self.redis = redis
        self.streams = streams
        self.limit = limit
        self.backlog: dict[str, int] = dict.fromkeys(streams, 0)
        self.redis_ok = True
        self._failures = RepeatLimiter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="backlog-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        for stream in self.streams:
            backlog = await stream_backlog(self.redis, stream)
            self.backlog[stream] = backlog
            STREAM_BACKLOG.labels(stream).set(backlog)

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
