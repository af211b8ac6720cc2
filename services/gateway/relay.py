"""The outbox relay: publishes committed outbox records to the tier streams.

A transaction that writes an outbox record also sends NOTIFY, so in the common case the
relay publishes within milliseconds of the commit. It also polls the outbox every
`relay_poll_seconds`, which covers a missed notification, a relay restart and a Redis outage.
Records are locked with SKIP LOCKED, so several relays can run side by side. A record can
be published twice (the commit after the publish fails); handlers ignore a repeated event id.
The relay also trims the streams below what every group has acknowledged.
"""

import asyncio
import contextlib
import signal
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.reconcile import reconcile
from shared.db.effects import OUTBOX_CHANNEL
from shared.db.engine import make_engine, make_session_factory
from shared.db.models import OutboxRecord
from shared.logs import RepeatLimiter
from shared.metrics import EVENTS_PUBLISHED, OUTBOX_BACKLOG, serve_metrics
from shared.settings import Settings
from shared.streams.groups import trim_acknowledged
from shared.streams.publisher import OutgoingEvent, publish_events
from shared.telemetry import configure_tracing, current_headers, instrument_engine, span_from
from shared.tiers import GROUP_NAMES, TierMap, WorkType

log = structlog.get_logger("orderflow.relay")

TRIM_INTERVAL_SECONDS = 10.0
RESTART_CHECK_SECONDS = 1.0
PUBLISHED_RETENTION = timedelta(hours=1)
FAILURE_BACKOFF_CAP_SECONDS = 5.0


def _outgoing(record: OutboxRecord) -> OutgoingEvent:
    """Build the entry of one record; with tracing on, its publish span becomes the parent
    of the handlers' spans."""
    attributes = {"order.id": record.order_id}
    with span_from(f"publish {record.event_type}", record.headers, SpanKind.PRODUCER, attributes):
        headers = current_headers() or record.headers
    return OutgoingEvent(
        record.event_type, record.event_id, record.order_id, record.payload, headers
    )


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        tiers: TierMap,
        batch_size: int,
        poll_seconds: float,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.tiers = tiers
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self._failures = RepeatLimiter()

    async def publish_batch(self) -> int:
        """Publish up to one batch of unpublished records; return how many were published."""
        async with self.sessions.begin() as session:
            rows = (
                await session.execute(
                    select(OutboxRecord)
                    .where(OutboxRecord.published_at.is_(None))
                    .order_by(OutboxRecord.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
            records = list(rows)
            if not records:
                return 0
            events = [_outgoing(record) for record in records]
            streams = await publish_events(self.redis, self.tiers, events)
            await session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.id.in_([r.id for r in records]))
                .values(published_at=datetime.now(UTC))
            )
        for stream in streams:
            EVENTS_PUBLISHED.labels(stream, "").inc()
        return len(records)

    async def drain(self) -> None:
        """Publish until the outbox is empty."""
        while await self.publish_batch() == self.batch_size:
            pass

    async def run(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                await self.drain()
            except (RedisError, DBAPIError, OSError, TimeoutError) as exc:
                if self._failures.should_log():
                    log.warning("publishing failed, retrying", error=str(exc)[:300])
                await self._sleep(delay)
                delay = min(delay * 2, FAILURE_BACKOFF_CAP_SECONDS)
                continue
            if self._failures.recovered():
                log.info("publishing resumed")
            delay = 0.1
            await self._sleep(self.poll_seconds, wake_early=True)

    async def _sleep(self, seconds: float, wake_early: bool = False) -> None:
        waiters = [asyncio.create_task(self.stopping.wait())]
        if wake_early:
            waiters.append(asyncio.create_task(self.wake.wait()))
        _, pending = await asyncio.wait(waiters, timeout=seconds, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()

    async def listen(self, database_url: str) -> None:
        """Hold a LISTEN connection that wakes the publish loop; reconnect when it drops."""
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        while not self.stopping.is_set():
            try:
                connection = await asyncpg.connect(dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await self._sleep(1.0)
                continue
            lost = asyncio.Event()
            try:
                connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await connection.add_listener(OUTBOX_CHANNEL, lambda *_args: self.wake.set())
                self.wake.set()
                stop = asyncio.create_task(self.stopping.wait())
                drop = asyncio.create_task(lost.wait())
                await asyncio.wait([stop, drop], return_when="FIRST_COMPLETED")
                stop.cancel()
                drop.cancel()
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)

    async def watch_redis_restarts(self) -> None:
        """Run the reconciler whenever Redis may have lost entries.

        That is when Redis comes back as a new server (a new run id), and when the marker key
        that each reconciliation sets is missing: Redis lost its data, perhaps while no relay
        was running to see it restart. A restart without persistence loses unhandled entries
        and consumer groups; one with persistence may lose the last second. Either way the
        reconciler queues the events of every unfinished order again, and handlers skip what
        they had already done.
        """
        marker = f"{self.tiers.prefix}orderflow:reconciled-run-id"
        known_run_id: str | None = None
        while not self.stopping.is_set():
            try:
                run_id = str((await self.redis.info("server"))["run_id"])
                marked = bool(await self.redis.exists(marker))
            except (RedisError, OSError, KeyError):
                run_id, marked = None, False
            restarted = known_run_id is not None and run_id != known_run_id
            if run_id is not None and (restarted or not marked):
                log.warning("redis may have lost entries, reconciling", run_id=run_id)
                try:
                    await reconcile(self.sessions)
                    await self.redis.set(marker, run_id)
                except (DBAPIError, RedisError, OSError) as exc:
                    log.warning("reconciling failed, will retry", error=str(exc)[:300])
                    run_id = known_run_id
            if run_id is not None:
                known_run_id = run_id
            await self._sleep(RESTART_CHECK_SECONDS)

    async def housekeeping(self) -> None:
        """Trim acknowledged stream entries and forget long-published outbox records."""
        expected: dict[str, set[str]] = {self.tiers.stream_of(work): set() for work in WorkType}
        for work in WorkType:
            expected[self.tiers.stream_of(work)].add(GROUP_NAMES[work])
        while not self.stopping.is_set():
            await self._sleep(TRIM_INTERVAL_SECONDS)
            try:
                for stream, groups in expected.items():
                    await trim_acknowledged(self.redis, stream, frozenset(groups))
                async with self.sessions.begin() as session:
                    cutoff = datetime.now(UTC) - PUBLISHED_RETENTION
                    await session.execute(
                        delete(OutboxRecord).where(OutboxRecord.published_at < cutoff)
                    )
                    backlog = await session.scalar(
                        select(func.count()).where(OutboxRecord.published_at.is_(None))
                    )
                OUTBOX_BACKLOG.set(backlog or 0)
            except (RedisError, DBAPIError, OSError, TimeoutError) as exc:
                log.warning("housekeeping failed, will retry", error=str(exc)[:300])


async def run_relay(settings: Settings) -> None:
    configure_tracing("relay", settings.otlp_endpoint)
    serve_metrics(settings.metrics_host, settings.metrics_port)
    engine = make_engine(settings.database_url, pool_size=4)
    instrument_engine(engine)
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    relay = OutboxRelay(
        make_session_factory(engine),
        redis,
        TierMap(settings.stream_prefix, settings.work_tiers),
        settings.relay_batch_size,
        settings.relay_poll_seconds,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, relay.stopping.set)
    log.info("relay started")
    try:
        await asyncio.gather(
            relay.run(),
            relay.listen(settings.database_url),
            relay.housekeeping(),
            relay.watch_redis_restarts(),
        )
    finally:
        await redis.aclose()
        await engine.dispose()
        log.info("relay stopped")
