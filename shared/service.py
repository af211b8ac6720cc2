"""Wiring shared by the four event-driven services.

Each service is a FastStream app whose startup builds the database engine and runs one
`GroupConsumer` per work type the service owns. Nothing connects before the app starts.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import structlog
from faststream import FastStream
from faststream.redis import RedisBroker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.engine import make_engine, make_session_factory
from shared.events import Event, OrderCreated
from shared.metrics import record_handler_outcome, serve_metrics
from shared.outages import is_dependency_outage
from shared.settings import FaultInjection, Settings
from shared.streams.consumer import ConsumerOptions, Delivery, GroupConsumer, GroupSpec
from shared.streams.retry import RetryPolicy
from shared.telemetry import configure_tracing, instrument_engine
from shared.tiers import GROUP_NAMES, TierMap, WorkType

log = structlog.get_logger("orderflow.service")

SHUTDOWN_GRACE_SECONDS = 8.0


@dataclass(frozen=True)
class WorkBinding:
    """One work type a service performs: the event types it reacts to and its handler."""

    work: WorkType
    accepts: frozenset[str]
    handler: Callable[[Event, Delivery], Awaitable[None]]


Binder = Callable[[async_sessionmaker[AsyncSession]], list[WorkBinding]]


RETRY_OVERRIDE_KEYS = frozenset({"base_seconds", "factor", "cap_seconds", "max_attempts"})


def retry_policy(settings: Settings, work: WorkType) -> RetryPolicy:
    """Return the retry policy of `work`: the global settings with its overrides applied."""
    overrides = settings.retry_overrides.get(work.value, {})
    unknown = set(overrides) - RETRY_OVERRIDE_KEYS
    if unknown:
        raise ValueError(
            f"invalid ORDERFLOW_RETRY_OVERRIDES for {work.value}: unknown keys {sorted(unknown)}; "
            f"allowed are {sorted(RETRY_OVERRIDE_KEYS)}"
        )
    return RetryPolicy(
        base_seconds=float(overrides.get("base_seconds", settings.retry_base_seconds)),
        factor=float(overrides.get("factor", settings.retry_factor)),
        cap_seconds=float(overrides.get("cap_seconds", settings.retry_cap_seconds)),
        max_attempts=int(overrides.get("max_attempts", settings.retry_max_attempts)),
    )


def consumer_options(settings: Settings, work: WorkType) -> ConsumerOptions:
    return ConsumerOptions(
        batch_size=settings.consumer_batch_size,
        block_ms=settings.stream_block_ms,
        handler_timeout_seconds=settings.handler_timeout_seconds,
        reclaim_idle_seconds=settings.reclaim_idle_seconds,
        retry=retry_policy(settings, work),
        on_outcome=record_handler_outcome,
        is_outage=is_dependency_outage,
    )


class InjectedFault(Exception):
    """The failure ORDERFLOW_FAULT_INJECTION requests. Only tests and chaos runs turn it on."""


def with_fault_injection(binding: WorkBinding, fault: FaultInjection | None) -> WorkBinding:
    """Return `binding` with a handler that fails for the orders `fault` selects.

    The binding is returned unchanged when `fault` is None or names another group.
    """
    if fault is None or GROUP_NAMES[binding.work] != fault.group:
        return binding
    handler = binding.handler

    async def failing_handler(event: Event, delivery: Delivery) -> None:
        customer_id = event.order.customer_id if isinstance(event, OrderCreated) else ""
        if customer_id.startswith(fault.customer_prefix):
            raise InjectedFault(
                f"ORDERFLOW_FAULT_INJECTION fails group {fault.group} for customer "
                f"{customer_id!r}; unset it to handle this order normally"
            )
        await handler(event, delivery)

    log.warning("fault injection is on", group=fault.group, prefix=fault.customer_prefix)
    return replace(binding, handler=failing_handler)


class ServiceRuntime:
    """Starts and stops the consumer groups of one service inside its FastStream app."""

    def __init__(self, name: str, settings: Settings, bind: Binder) -> None:
        self.name = name
        self.settings = settings
        self.bind = bind
        self.broker = RedisBroker(settings.redis_url)
        self.app = FastStream(self.broker, logger=None)
        self.app.after_startup(self.start)
        self.app.on_shutdown(self.stop)
        self.tiers = TierMap(settings.stream_prefix, settings.work_tiers)
        self.consumers: list[GroupConsumer] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.engine: AsyncEngine | None = None

    async def start(self) -> None:
        configure_tracing(self.name, self.settings.otlp_endpoint)
        serve_metrics(self.settings.metrics_host, self.settings.metrics_port)
        redis = await self.broker.connect()
        self.engine = make_engine(self.settings.database_url, self.settings.database_pool_size)
        instrument_engine(self.engine)
        for bound in self.bind(make_session_factory(self.engine)):
            binding = with_fault_injection(bound, self.settings.fault_injection)
            spec = self.group_spec(binding)
            consumer = GroupConsumer(redis, spec, consumer_options(self.settings, binding.work))
            task = asyncio.create_task(consumer.run(), name=f"{self.name}:{spec.group}")
            task.add_done_callback(self._on_consumer_exit)
            self.consumers.append(consumer)
            self.tasks.append(task)
            log.info("consuming", stream=spec.stream, group=spec.group, consumers=spec.consumers)
        log.info("service started", service=self.name)

    def group_spec(self, binding: WorkBinding) -> GroupSpec:
        tier = self.tiers.tier_of(binding.work)
        return GroupSpec(
            group=GROUP_NAMES[binding.work],
            stream=self.tiers.stream(tier),
            dead_letter_stream=self.tiers.dead_letter_stream(tier),
            handler=binding.handler,
            accepts=binding.accepts,
            consumers=self.tiers.consumer_count(binding.work, self.settings.consumer_base),
        )

    def _on_consumer_exit(self, task: "asyncio.Task[None]") -> None:
        if task.cancelled() or task.exception() is None:
            return
        # An unexpected error ended a group's loops: exit so the supervisor restarts the
        # process, rather than run on without that group.
        log.error("consumer failed, stopping the service", error=repr(task.exception()))
        self.app.exit()

    async def stop(self) -> None:
        """Stop reading, let in-flight handlers finish within the grace period, then exit.

        Entries still unfinished stay pending and are reclaimed by another consumer.
        """
        for consumer in self.consumers:
            consumer.stop()
        unfinished: set[asyncio.Task[None]] = set()
        if self.tasks:
            _, unfinished = await asyncio.wait(self.tasks, timeout=SHUTDOWN_GRACE_SECONDS)
        for task in unfinished:
            task.cancel()
        if self.engine is not None:
            await self.engine.dispose()
        log.info("service stopped", service=self.name, unfinished_groups=len(unfinished))


def run_service(runtime: ServiceRuntime) -> None:
    asyncio.run(runtime.app.run())
