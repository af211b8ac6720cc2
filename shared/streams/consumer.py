"""The consume loop of one consumer group: read, handle, acknowledge, retry, dead-letter.

FastStream 0.7.8's stream subscriber stops for good when its group disappears, and its nack
sends nothing to Redis (the entry just stays pending), so each service runs this loop on the
broker's Redis connection instead.

Guarantees, per group:
- An entry is acknowledged only after its handler returned (the handler commits its effect
  and the event id together), or after it was copied to the dead-letter stream.
- A failed entry stays pending. This process retries it after a backoff by claiming it again,
  which raises Redis's delivery counter; so does a reclaim after a crash, and the counter is
  the attempt number. At the maximum the entry is dead-lettered. A failure that `is_outage`
  blames on a dependency being down is retried until the dependency is back and does not
  count toward the maximum, because the event is not at fault.
- Entries pending on a consumer that went away are claimed with XAUTOCLAIM once idle for
  `reclaim_idle_seconds`. Handlers run under a shorter timeout, so a live handler's entry is
  never claimed while it still runs.
- A missing group is recreated, and an outage is logged once, then once per interval.
"""

import asyncio
import contextlib
import heapq
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.events import Event, EventDecodeError, decode_entry
from shared.logs import RepeatLimiter
from shared.streams.groups import dead_letter, ensure_group, is_missing_group
from shared.streams.retry import RetryPolicy
from shared.telemetry import span_from

log = structlog.get_logger("orderflow.consumer")

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
OUTAGE_BACKOFF_CAP_SECONDS = 5.0
RECLAIM_BATCH = 100


@dataclass(frozen=True)
class Delivery:
    """The stream entry an event came from, with its delivery count as the attempt number."""

    stream: str
    group: str
    entry_id: str
    attempt: int
    headers: dict[str, str]


Handler = Callable[[Event, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class GroupSpec:
    group: str
    stream: str
    dead_letter_stream: str
    handler: Handler
    accepts: frozenset[str]
    consumers: int = 1


@dataclass
class ConsumerOptions:
    batch_size: int = 32
    block_ms: int = 1000
    handler_timeout_seconds: float = 10.0
    reclaim_idle_seconds: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # A consumer with nothing pending that was idle this long belongs to a finished process.
    departed_idle_seconds: float = 600.0
    on_outcome: Callable[[str, str, str, float], None] | None = None
    # Tells a dependency outage apart from a failure the event causes; see `_after_failure`.
    is_outage: Callable[[BaseException], bool] | None = None


def consumer_name(index: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{index}"


class GroupConsumer:
    """Runs `spec.consumers` read loops, a retry loop and a reclaim loop for one group."""

    def __init__(self, redis: Redis, spec: GroupSpec, options: ConsumerOptions) -> None:
        if options.handler_timeout_seconds >= options.reclaim_idle_seconds:
            raise ValueError(
                f"handler timeout {options.handler_timeout_seconds} s must be shorter than the "
                f"reclaim idle time {options.reclaim_idle_seconds} s, or a slow handler's entry "
                "is claimed and run twice at once"
            )
        self.redis = redis
        self.spec = spec
        self.options = options
        self.names = [consumer_name(index) for index in range(spec.consumers)]
        self._stopping = asyncio.Event()
        self._retries: list[tuple[float, bytes, str, int]] = []
        self._task_group: asyncio.TaskGroup | None = None
        # Retries in flight at once; more would only open more Redis connections during a
        # mass failure, when every entry fails at the same time.
        self._retry_slots = asyncio.Semaphore(options.batch_size)
        self._retry_ready = asyncio.Event()
        self._outage = RepeatLimiter()
        # Outage failures per pending entry, which the delivery counter counts as attempts.
        self._outage_failures: dict[bytes, int] = {}
        self._reclaim_cursor = b"0-0"
        self._log = log.bind(stream=spec.stream, group=spec.group)

    async def run(self) -> None:
        """Consume until `stop()` is called; returns once every loop has finished."""
        await self._ensure_group_with_backoff(first_start=True)
        # A TaskGroup cancels the other loops, and the retries in flight, when one fails.
        async with asyncio.TaskGroup() as group:
            self._task_group = group
            for name in self.names:
                group.create_task(self._read_loop(name))
            group.create_task(self._retry_loop())
            group.create_task(self._reclaim_loop())

    def stop(self) -> None:
        self._stopping.set()
        self._retry_ready.set()

    # -- reading --------------------------------------------------------------------------

    async def _read_loop(self, name: str) -> None:
        while not self._stopping.is_set():
            try:
                response = await self.redis.xreadgroup(
                    groupname=self.spec.group,
                    consumername=name,
                    streams={self.spec.stream: ">"},
                    count=self.options.batch_size,
                    block=self.options.block_ms,
                )
            except ResponseError as exc:
                if not is_missing_group(exc):
                    raise
                await self._ensure_group_with_backoff()
                continue
            except REDIS_ERRORS as exc:
                await self._wait_out_outage(exc)
                continue

            self._note_recovered()
            batches = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], response)
            for _stream, entries in batches or ():
                await self._handle_batch(name, entries, attempt=1)

    async def _handle_batch(
        self, name: str, entries: Sequence[tuple[bytes, dict[bytes, bytes]]], attempt: int
    ) -> None:
        outcomes = await asyncio.gather(
            *(self._handle_entry(name, entry_id, fields, attempt) for entry_id, fields in entries)
        )
        done = [entry_id for (entry_id, _), ok in zip(entries, outcomes, strict=True) if ok]
        if done:
            await self._ack(done)

    async def _ack(self, entry_ids: list[bytes]) -> None:
        for entry_id in entry_ids:
            self._outage_failures.pop(entry_id, None)
        try:
            await self.redis.xack(self.spec.stream, self.spec.group, *entry_ids)
        except REDIS_ERRORS as exc:
            # The effects are committed; the entries come back through reclaim and their
            # handlers find the event id already recorded, so nothing runs twice.
            self._log.warning("ack failed, entries will be reclaimed", error=str(exc))

    # -- handling one entry ---------------------------------------------------------------

    async def _handle_entry(
        self, name: str, entry_id: bytes, fields: dict[bytes, bytes], attempt: int
    ) -> bool:
        """Run the handler for one entry; return True when the entry may be acknowledged."""
        entry = entry_id.decode()
        try:
            event, headers = decode_entry(fields)
        except EventDecodeError as exc:
            self._log.error("entry is not a valid event, dead-lettering", entry_id=entry)
            await self._dead_letter(entry_id, fields, str(exc), attempt)
            return False

        if event.type not in self.spec.accepts:
            return True

        delivery = Delivery(self.spec.stream, self.spec.group, entry, attempt, headers)
        started = time.perf_counter()
        attributes = {"messaging.destination.name": self.spec.stream, "order.id": event.order_id}
        with (
            span_from(f"handle {self.spec.group} {event.type}", headers, attributes=attributes),
            structlog.contextvars.bound_contextvars(
                order_id=event.order_id,
                event_id=event.event_id,
                event_type=event.type,
                stream=self.spec.stream,
                group=self.spec.group,
                attempt=attempt,
                trace_id=_trace_id(headers),
            ),
        ):
            try:
                async with asyncio.timeout(self.options.handler_timeout_seconds):
                    await self.spec.handler(event, delivery)
            except Exception as exc:
                return await self._after_failure(name, entry_id, fields, attempt, exc, started)

            elapsed = time.perf_counter() - started
            self._log.info("event handled", duration_ms=round(elapsed * 1000, 2))
            self._record("processed", event.type, elapsed)
            return True

    async def _after_failure(
        self,
        name: str,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        attempt: int,
        exc: Exception,
        started: float,
    ) -> bool:
        elapsed = time.perf_counter() - started
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, TimeoutError):
            error = f"handler timed out after {self.options.handler_timeout_seconds} s"
        outage = self.options.is_outage is not None and self.options.is_outage(exc)
        if outage:
            self._outage_failures[entry_id] = self._outage_failures.get(entry_id, 0) + 1
        # NOTE: the count of outage failures lives in this process only, so an entry that
        # another process reclaims after an outage may reach the maximum sooner.
        own_failures = attempt - self._outage_failures.get(entry_id, 0)
        if self.options.retry.exhausted(own_failures) and not outage:
            self._log.error("event failed on its last attempt, dead-lettering", error=error)
            self._record("dead_lettered", "", elapsed)
            await self._dead_letter(entry_id, fields, error, attempt)
            return False

        delay = self.options.retry.delay_seconds(attempt)
        self._log.warning(
            "event failed, will retry", error=error, retry_in_s=round(delay, 3), outage=outage
        )
        self._record("retried", "", elapsed)
        # The entry has been idle at least `delay` when the retry claims it, unless another
        # consumer claimed it meanwhile. The claim's minimum idle time then makes it a no-op.
        min_idle_ms = int(delay * 1000)
        heapq.heappush(self._retries, (time.monotonic() + delay, entry_id, name, min_idle_ms))
        self._retry_ready.set()
        return False

    async def _dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes], error: str, attempt: int
    ) -> None:
        self._outage_failures.pop(entry_id, None)
        try:
            await dead_letter(
                self.redis,
                stream=self.spec.stream,
                group=self.spec.group,
                dead_letter_stream=self.spec.dead_letter_stream,
                entry_id=entry_id,
                fields=fields,
                error=error,
                attempts=attempt,
            )
        except (*REDIS_ERRORS, ResponseError) as exc:
            self._log.warning("dead-lettering failed, entry stays pending", error=str(exc))

    def _record(self, outcome: str, event_type: str, seconds: float) -> None:
        if self.options.on_outcome is not None:
            self.options.on_outcome(self.spec.group, outcome, event_type, seconds)

    # -- retries and reclaim ---------------------------------------------------------------

    async def _retry_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._retries:
                self._retry_ready.clear()
                await self._retry_ready.wait()
                continue
            due_at = self._retries[0][0]
            wait = due_at - time.monotonic()
            if wait > 0:
                self._retry_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry_ready.wait(), timeout=wait)
                continue
            _, entry_id, name, min_idle_ms = heapq.heappop(self._retries)
            # Each retry runs in its own task, so a slow one never delays the others.
            assert self._task_group is not None
            self._task_group.create_task(self._retry(name, entry_id, min_idle_ms))

    async def _reclaim_loop(self) -> None:
        idle_ms = int(self.options.reclaim_idle_seconds * 1000)
        interval = max(self.options.reclaim_idle_seconds / 4, 0.05)
        name = self.names[0]
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            if self._stopping.is_set():
                return
            try:
                await self._reclaim_once(name, idle_ms)
            except ResponseError as exc:
                if not is_missing_group(exc):
                    raise
                await self._ensure_group_with_backoff()
            except REDIS_ERRORS as exc:
                await self._wait_out_outage(exc)

    async def _reclaim_once(self, name: str, idle_ms: int) -> None:
        """Claim entries idle longer than the reclaim time, one XAUTOCLAIM page per call.

        The cursor is kept between calls, so every pending entry is reached in turn.
        """
        response = await self.redis.xautoclaim(
            self.spec.stream,
            self.spec.group,
            name,
            min_idle_time=idle_ms,
            start_id=self._reclaim_cursor,
            count=RECLAIM_BATCH,
        )
        next_cursor, claimed = response[0], response[1]
        self._reclaim_cursor = next_cursor
        if next_cursor == b"0-0":
            await self._forget_departed_consumers()
        if claimed:
            self._log.info("reclaimed idle entries", count=len(claimed))
            await self._handle_claimed(name, claimed)

    async def _forget_departed_consumers(self) -> None:
        """Delete consumers of finished processes: nothing pending and long idle.

        Consumer names carry the process id, so each restart adds one; without this the
        group's consumer list grows forever.
        """
        threshold_ms = int(self.options.departed_idle_seconds * 1000)
        consumers = await self.redis.xinfo_consumers(self.spec.stream, self.spec.group)
        for consumer in consumers:
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            idle = int(consumer.get("idle", 0))
            if consumer.get("pending", 0) == 0 and idle > threshold_ms and name not in self.names:
                await self.redis.xgroup_delconsumer(self.spec.stream, self.spec.group, name)
                self._log.info("removed departed consumer", consumer=name, idle_ms=idle)

    async def _retry(self, name: str, entry_id: bytes, min_idle_ms: int) -> None:
        async with self._retry_slots:
            await self._claim_and_handle(name, [entry_id], min_idle_ms)

    async def _claim_and_handle(self, name: str, entry_ids: list[bytes], min_idle_ms: int) -> None:
        try:
            claimed = await self.redis.xclaim(
                self.spec.stream, self.spec.group, name, min_idle_ms, list[Any](entry_ids)
            )
        except ResponseError as exc:
            if not is_missing_group(exc):
                raise
            return
        except REDIS_ERRORS as exc:
            self._log.warning(
                "retry claim failed, the reclaim loop will pick it up", error=str(exc)
            )
            return
        await self._handle_claimed(name, cast(list[tuple[bytes, dict[bytes, bytes]]], claimed))

    async def _handle_claimed(
        self, name: str, claimed: Sequence[tuple[bytes, dict[bytes, bytes] | None]]
    ) -> None:
        live = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        attempts = await self._delivery_counts(name, [entry_id for entry_id, _ in live])
        outcomes = await asyncio.gather(
            *(
                self._handle_entry(name, entry_id, fields, attempts.get(entry_id, 1))
                for entry_id, fields in live
            )
        )
        done = [entry_id for (entry_id, _), ok in zip(live, outcomes, strict=True) if ok]
        if done:
            await self._ack(done)

    async def _delivery_counts(self, name: str, entry_ids: list[bytes]) -> dict[bytes, int]:
        if not entry_ids:
            return {}
        ordered = sorted(entry_ids, key=_id_key)
        rows: list[dict[str, Any]] = await self.redis.xpending_range(
            self.spec.stream,
            self.spec.group,
            min=ordered[0],
            max=ordered[-1],
            count=len(entry_ids) + RECLAIM_BATCH,
            consumername=name,
        )
        return {row["message_id"]: int(row["times_delivered"]) for row in rows}

    # -- outages ---------------------------------------------------------------------------

    async def _ensure_group_with_backoff(self, first_start: bool = False) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                created = await ensure_group(self.redis, self.spec.stream, self.spec.group)
            except REDIS_ERRORS as exc:
                await self._wait_out_outage(exc, delay)
                delay = min(delay * 2, OUTAGE_BACKOFF_CAP_SECONDS)
                continue
            if created and first_start:
                self._log.info("consumer group created")
            elif created:
                self._log.warning("consumer group was missing and is created")
            self._note_recovered()
            return

    async def _wait_out_outage(self, exc: BaseException, delay: float = 1.0) -> None:
        if self._outage.should_log():
            self._log.warning(
                "redis unavailable, retrying",
                error=str(exc) or type(exc).__name__,
                suppressed_repeats=self._outage.suppressed,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _note_recovered(self) -> None:
        if self._outage.failing and self._outage.recovered():
            self._log.info("redis reachable again")


def _id_key(entry_id: bytes) -> tuple[int, int]:
    millis, _, seq = entry_id.decode().partition("-")
    return int(millis), int(seq or 0)


def _trace_id(headers: dict[str, str]) -> str | None:
    parts = headers.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else None
