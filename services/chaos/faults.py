"""The faults of a chaos run, spread over the load on a fixed schedule.

Each fault is injected while orders flow, and most also start a watch that waits, with a
deadline, for the system to show it coped: a reclaimed entry, a recreated group, a dead
letter. Redis keeps its dead letters only while it keeps its data, so the malformed entry
and the poison orders come after the restart that deletes it.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from redis.exceptions import RedisError

from services.chaos.load import LoadGenerator
from services.chaos.system import ChaosSystem
from shared.ids import event_id_for
from shared.streams.groups import DEAD_LETTER_FIELD_PREFIX
from shared.streams.replies import as_text
from shared.tiers import GROUP_NAMES, Tier, WorkType

POSTGRES_OUTAGE_SECONDS = 5.0
WAIT_LIMIT_SECONDS = 90.0  # for a killed process to come back, or for entries to read
WATCH_POLL_SECONDS = 0.2
POISON_ORDER_COUNT = 3
POISON_PREFIX = "poison-"
POISON_GROUP = "analytics"
DEAD_CONSUMER = "chaos-dead-consumer"
DEAD_CONSUMER_GROUP = "payments"
DEAD_CONSUMER_BATCH = 5
MALFORMED_TIER = Tier.DEFAULT
MALFORMED_EVENT_ID = "chaos-malformed-entry"

# Every fault kind, in the order of the schedule, with its share of the load's duration at
# which it starts. Kinds are printed as they are named here.
SCHEDULE: tuple[tuple[float, str], ...] = (
    (0.04, "kill:payments"),
    (0.09, "same-key-burst"),
    (0.13, "kill:inventory"),
    (0.18, "dead-consumer"),
    (0.23, "kill:relay"),
    (0.29, "redis-restart-kept"),
    (0.36, "kill:notifications"),
    (0.42, "redis-restart-wiped"),
    (0.49, "malformed-entry"),
    (0.53, "poison-orders"),
    (0.60, "postgres-outage"),
    (0.72, "kill:gateway"),
    (0.79, "kill:smtp"),
    (0.86, "kill:analytics"),
)
FAULT_KINDS = tuple(kind for _, kind in SCHEDULE)

# The process each kill fault stops; payments runs twice and loses its first process.
KILL_TARGETS = {
    "kill:payments": "payments-1",
    "kill:inventory": "inventory",
    "kill:relay": "relay",
    "kill:notifications": "notifications",
    "kill:gateway": "gateway",
    "kill:smtp": "smtp",
    "kill:analytics": "analytics",
}


# Checks once what a watch waits for: returns what it saw, or None to be asked again.
Probe = Callable[[], Awaitable[str | None]]


@dataclass
class FaultRecord:
    """One injected fault: when it started and ended, and what the system was seen doing."""

    kind: str
    started_at: datetime
    detail: str = ""
    ended_at: datetime | None = None
    observations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Injected:
    """The bad entries this run put into the system, which the checks must find again."""

    malformed_entry_id: str | None = None
    malformed_groups: tuple[str, ...] = ()
    poison_order_ids: list[str] = field(default_factory=list)
    dead_consumer_entries: list[str] = field(default_factory=list)


class FaultInjector:
    def __init__(self, system: ChaosSystem, load: LoadGenerator, duration_seconds: float) -> None:
        self.system = system
        self.load = load
        self.duration_seconds = duration_seconds
        self.records: list[FaultRecord] = []
        self.injected = Injected()
        self._watches: set[asyncio.Task[None]] = set()
        self._actions: dict[str, Callable[[FaultRecord], Awaitable[None]]] = {
            "same-key-burst": self._same_key_burst,
            "dead-consumer": self._dead_consumer,
            "redis-restart-kept": self._redis_restart_kept,
            "redis-restart-wiped": self._redis_restart_wiped,
            "malformed-entry": self._malformed_entry,
            "poison-orders": self._poison_orders,
            "postgres-outage": self._postgres_outage,
        }

    async def run(self, load_started: float) -> None:
        """Inject each fault at its time; a fault starts only after the previous one ended."""
        for share, kind in SCHEDULE:
            delay = load_started + share * self.duration_seconds - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            record = FaultRecord(kind, datetime.now(UTC))
            self.records.append(record)
            action = self._actions.get(kind) or self._kill
            try:
                await action(record)
            except Exception as exc:  # reported as a failed injection, and the run goes on
                record.failures.append(f"injection failed: {type(exc).__name__}: {exc}")
            if record.ended_at is None:
                record.ended_at = datetime.now(UTC)

    async def finish_watches(self, grace_seconds: float) -> None:
        """Give the watches still running `grace_seconds`, then stop them as failed."""
        if not self._watches:
            return
        _, unfinished = await asyncio.wait(set(self._watches), timeout=grace_seconds)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    def _watch(self, record: FaultRecord, probe: Probe, expectation: str) -> None:
        """Poll `probe` in the background until it returns what it saw."""
        task = asyncio.create_task(self._poll(record, probe, expectation))
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)

    async def _poll(self, record: FaultRecord, probe: Probe, expectation: str) -> None:
        started = time.monotonic()
        try:
            while True:
                try:
                    seen = await probe()
                except (RedisError, OSError):  # Redis may be restarting; poll again
                    seen = None
                if seen is not None:
                    elapsed = time.monotonic() - started
                    record.observations.append(f"{seen} after {elapsed:.1f} s")
                    return
                await asyncio.sleep(WATCH_POLL_SECONDS)
        except asyncio.CancelledError:
            record.failures.append(f"{expectation}: not seen before the run ended")
            raise

    # -- process kills ---------------------------------------------------------------------

    async def _kill(self, record: FaultRecord) -> None:
        name = KILL_TARGETS[record.kind]
        starts = self.system.children[name].starts
        pid = await self.system.kill(name)
        killed_at = time.monotonic()
        record.detail = f"SIGKILL {name} (pid {pid}); the watcher restarts it"
        if await self.system.wait_restarted(name, starts, WAIT_LIMIT_SECONDS):
            record.observations.append(f"restarted after {time.monotonic() - killed_at:.1f} s")
        else:
            record.failures.append(f"{name} was not restarted within {WAIT_LIMIT_SECONDS:g} s")
        record.ended_at = datetime.now(UTC)

    # -- load-side faults ------------------------------------------------------------------

    async def _same_key_burst(self, record: FaultRecord) -> None:
        record.detail = "20 concurrent POSTs with one Idempotency-Key and one body"
        ids = await self.load.burst()
        distinct = {order_id for order_id in ids if order_id is not None}
        record.observations.append(
            f"{sum(order_id is not None for order_id in ids)} answered 201, "
            f"{len(distinct)} distinct order id(s)"
        )
        if len(distinct) != 1:
            record.failures.append(f"expected one order id, got {sorted(distinct)}")

    async def _poison_orders(self, record: FaultRecord) -> None:
        placed = await self.load.place_poison_orders(POISON_PREFIX, POISON_ORDER_COUNT)
        self.injected.poison_order_ids.extend(placed)
        record.detail = (
            f"{len(placed)} orders of customers {POISON_PREFIX}*, whose {POISON_GROUP} "
            "handler always fails"
        )
        record.ended_at = datetime.now(UTC)
        event_ids = {event_id_for("OrderCreated", order_id) for order_id in placed}
        stream = self.system.tiers.dead_letter_stream(self._tier_of_group(POISON_GROUP))

        async def all_dead_lettered() -> str | None:
            found = {
                _field(fields, "event_id")
                for _, fields in await self.system.read_stream(stream)
                if _field(fields, f"{DEAD_LETTER_FIELD_PREFIX}group") == POISON_GROUP
            }
            if event_ids <= found:
                return f"all {len(event_ids)} dead-lettered by {POISON_GROUP}"
            return None

        self._watch(record, all_dead_lettered, "the poison orders' dead letters")

    # -- Redis faults ----------------------------------------------------------------------

    async def _dead_consumer(self, record: FaultRecord) -> None:
        """Read a batch under a made-up consumer name and never acknowledge it."""
        stream = self.system.tiers.stream_of(WorkType.PAYMENT)
        client = self.system.redis()
        try:
            deadline = time.monotonic() + WAIT_LIMIT_SECONDS
            entries: list[Any] = []
            while not entries and time.monotonic() < deadline:
                response = await client.xreadgroup(
                    DEAD_CONSUMER_GROUP,
                    DEAD_CONSUMER,
                    {stream: ">"},
                    count=DEAD_CONSUMER_BATCH,
                    block=1000,
                )
                batches = cast(list[tuple[bytes, list[Any]]], response or [])
                entries = [entry for _, batch in batches for entry in batch]
        finally:
            await client.aclose()
        ids = [as_text(entry_id) for entry_id, _ in entries]
        self.injected.dead_consumer_entries.extend(ids)
        record.detail = (
            f"XREADGROUP of {len(ids)} entries as {DEAD_CONSUMER!r} in group "
            f"{DEAD_CONSUMER_GROUP} of {stream}, never acknowledged"
        )
        record.ended_at = datetime.now(UTC)
        if not ids:
            record.failures.append("read no entry to leave pending")
            return

        async def all_reclaimed() -> str | None:
            client = self.system.redis()
            try:
                pending = await client.xpending_range(
                    stream, DEAD_CONSUMER_GROUP, "-", "+", 100, consumername=DEAD_CONSUMER
                )
            finally:
                await client.aclose()
            return None if pending else "every entry reclaimed by a live consumer"

        self._watch(record, all_reclaimed, "the reclaim of the dead consumer's entries")

    async def _redis_restart_kept(self, record: FaultRecord) -> None:
        record.detail = "Redis stopped and started again with its append-only file"
        stopped = time.monotonic()
        await self.system.restart_redis(keep_data=True)
        record.ended_at = datetime.now(UTC)
        record.observations.append(f"Redis down for {time.monotonic() - stopped:.1f} s")

    async def _redis_restart_wiped(self, record: FaultRecord) -> None:
        record.detail = "Redis stopped, its data deleted, started empty (groups and entries gone)"
        stopped = time.monotonic()
        await self.system.restart_redis(keep_data=False)
        record.ended_at = datetime.now(UTC)
        record.observations.append(f"Redis down for {time.monotonic() - stopped:.1f} s")

        async def groups_recreated() -> str | None:
            return "every group recreated" if await self.system.groups_ready() else None

        self._watch(record, groups_recreated, "the consumer groups")

    async def _malformed_entry(self, record: FaultRecord) -> None:
        stream = self.system.tiers.stream(MALFORMED_TIER)
        groups = tuple(
            GROUP_NAMES[work]
            for work in WorkType
            if self.system.tiers.tier_of(work) == MALFORMED_TIER
        )
        fields = {
            "type": "OrderCreated",
            "event_id": MALFORMED_EVENT_ID,
            "order_id": "ORD-chaos-malformed",
            "payload": '{"type": "OrderCreated", "order": "not an order"}',
        }
        client = self.system.redis()
        try:
            entry_id = as_text(await client.xadd(stream, cast(Any, fields)))
        finally:
            await client.aclose()
        self.injected.malformed_entry_id = entry_id
        self.injected.malformed_groups = groups
        record.detail = f"XADD of an entry with an invalid payload to {stream} ({entry_id})"
        record.ended_at = datetime.now(UTC)
        dead_stream = self.system.tiers.dead_letter_stream(MALFORMED_TIER)
        prefix = DEAD_LETTER_FIELD_PREFIX

        async def dead_lettered_by_each_group() -> str | None:
            letters = [
                fields
                for _, fields in await self.system.read_stream(dead_stream)
                if _field(fields, f"{prefix}entry-id") == entry_id
            ]
            if {_field(fields, f"{prefix}group") for fields in letters} < set(groups):
                return None
            attempts = sorted(_field(fields, f"{prefix}attempts") for fields in letters)
            return f"dead-lettered by {', '.join(groups)} (attempts {', '.join(attempts)})"

        self._watch(record, dead_lettered_by_each_group, "the malformed entry's dead letters")

    # -- PostgreSQL ------------------------------------------------------------------------

    async def _postgres_outage(self, record: FaultRecord) -> None:
        record.detail = f"PostgreSQL stopped for {POSTGRES_OUTAGE_SECONDS:g} s, then started"
        stopped = time.monotonic()
        await self.system.stop_postgres()
        await asyncio.sleep(POSTGRES_OUTAGE_SECONDS)
        await self.system.start_postgres()
        record.ended_at = datetime.now(UTC)
        record.observations.append(f"PostgreSQL down for {time.monotonic() - stopped:.1f} s")

    # -- helpers ---------------------------------------------------------------------------

    def _tier_of_group(self, group: str) -> Tier:
        work = next(work for work, name in GROUP_NAMES.items() if name == group)
        return self.system.tiers.tier_of(work)


def _field(fields: dict[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode(errors="replace")
