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

from services.chaos.load import LoadGenerator
from services.chaos.system import ChaosSystem
from shared.ids import event_id_for
from shared.streams.groups import DEAD_LETTER_FIELD_PREFIX
from shared.tiers import GROUP_NAMES, Tier, WorkType

POSTGRES_OUTAGE_SECONDS = 5.0
WATCH_TIMEOUT_SECONDS = 90.0
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
    """What the checks must find again: the bad entries this run put into the system."""

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

    async def finish_watches(self) -> None:
        if self._watches:
            await asyncio.gather(*self._watches, return_exceptions=True)

    def _watch(self, record: FaultRecord, watch: Awaitable[None]) -> None:
        task = asyncio.ensure_future(watch)
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)

    # -- process kills ---------------------------------------------------------------------

    async def _kill(self, record: FaultRecord) -> None:
        name = KILL_TARGETS[record.kind]
        starts = self.system.children[name].starts
        pid = await self.system.kill(name)
        killed_at = time.monotonic()
        record.detail = f"SIGKILL {name} (pid {pid}); the watcher restarts it"
        if await self.system.wait_restarted(name, starts, WATCH_TIMEOUT_SECONDS):
            record.observations.append(f"restarted after {time.monotonic() - killed_at:.1f} s")
        else:
            record.failures.append(f"{name} was not restarted within {WATCH_TIMEOUT_SECONDS:g} s")
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
        self._watch(record, self._watch_poison(record, event_ids))

    async def _watch_poison(self, record: FaultRecord, event_ids: set[str]) -> None:
        started = time.monotonic()
        stream = self.system.tiers.dead_letter_stream(self._tier_of_group(POISON_GROUP))
        while time.monotonic() - started < WATCH_TIMEOUT_SECONDS:
            letters = await self._dead_letters(stream)
            found = {
                _field(fields, "event_id")
                for fields in letters
                if _field(fields, f"{DEAD_LETTER_FIELD_PREFIX}group") == POISON_GROUP
            }
            if event_ids <= found:
                record.observations.append(
                    f"all {len(event_ids)} dead-lettered by {POISON_GROUP} after "
                    f"{time.monotonic() - started:.1f} s"
                )
                return
            await asyncio.sleep(WATCH_POLL_SECONDS)
        record.failures.append(f"not all dead-lettered within {WATCH_TIMEOUT_SECONDS:g} s")

    # -- Redis faults ----------------------------------------------------------------------

    async def _dead_consumer(self, record: FaultRecord) -> None:
        """Read a batch under a made-up consumer name and never acknowledge it."""
        stream = self.system.tiers.stream_of(WorkType.PAYMENT)
        client = self.system.redis()
        try:
            deadline = time.monotonic() + WATCH_TIMEOUT_SECONDS
            entries: list[Any] = []
            while not entries and time.monotonic() < deadline:
                response = await client.xreadgroup(
                    DEAD_CONSUMER_GROUP,
                    DEAD_CONSUMER,
                    {stream: ">"},
                    count=DEAD_CONSUMER_BATCH,
                    block=1000,
                )
                entries = [entry for _, batch in response or [] for entry in batch]
        finally:
            await client.aclose()
        ids = [_text(entry_id) for entry_id, _ in entries]
        self.injected.dead_consumer_entries.extend(ids)
        record.detail = (
            f"XREADGROUP of {len(ids)} entries as {DEAD_CONSUMER!r} in group "
            f"{DEAD_CONSUMER_GROUP} of {stream}, never acknowledged"
        )
        record.ended_at = datetime.now(UTC)
        if not ids:
            record.failures.append("read no entry to leave pending")
            return
        self._watch(record, self._watch_dead_consumer(record, stream))

    async def _watch_dead_consumer(self, record: FaultRecord, stream: str) -> None:
        started = time.monotonic()
        client = self.system.redis()
        try:
            while time.monotonic() - started < WATCH_TIMEOUT_SECONDS:
                pending = await client.xpending_range(
                    stream, DEAD_CONSUMER_GROUP, "-", "+", 100, consumername=DEAD_CONSUMER
                )
                if not pending:
                    record.observations.append(
                        f"every entry reclaimed by a live consumer after "
                        f"{time.monotonic() - started:.1f} s"
                    )
                    return
                await asyncio.sleep(WATCH_POLL_SECONDS)
        finally:
            await client.aclose()
        record.failures.append(f"entries still pending after {WATCH_TIMEOUT_SECONDS:g} s")

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
        self._watch(record, self._watch_groups(record))

    async def _watch_groups(self, record: FaultRecord) -> None:
        started = time.monotonic()
        while time.monotonic() - started < WATCH_TIMEOUT_SECONDS:
            if await self.system.groups_ready():
                record.observations.append(
                    f"every group recreated after {time.monotonic() - started:.1f} s"
                )
                return
            await asyncio.sleep(WATCH_POLL_SECONDS)
        record.failures.append(f"groups not recreated within {WATCH_TIMEOUT_SECONDS:g} s")

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
            entry_id = _text(await client.xadd(stream, cast(Any, fields)))
        finally:
            await client.aclose()
        self.injected.malformed_entry_id = entry_id
        self.injected.malformed_groups = groups
        record.detail = f"XADD of an entry with an invalid payload to {stream} ({entry_id})"
        record.ended_at = datetime.now(UTC)
        self._watch(record, self._watch_malformed(record, entry_id, groups))

    async def _watch_malformed(
        self, record: FaultRecord, entry_id: str, groups: tuple[str, ...]
    ) -> None:
        started = time.monotonic()
        stream = self.system.tiers.dead_letter_stream(MALFORMED_TIER)
        prefix = DEAD_LETTER_FIELD_PREFIX
        while time.monotonic() - started < WATCH_TIMEOUT_SECONDS:
            letters = [
                fields
                for fields in await self._dead_letters(stream)
                if _field(fields, f"{prefix}entry-id") == entry_id
            ]
            if {_field(fields, f"{prefix}group") for fields in letters} >= set(groups):
                attempts = sorted(_field(fields, f"{prefix}attempts") for fields in letters)
                record.observations.append(
                    f"dead-lettered by {', '.join(groups)} after "
                    f"{time.monotonic() - started:.1f} s (attempts {', '.join(attempts)})"
                )
                return
            await asyncio.sleep(WATCH_POLL_SECONDS)
        record.failures.append(f"not dead-lettered by all of {groups} in time")

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

    async def _dead_letters(self, stream: str) -> list[dict[bytes, bytes]]:
        client = self.system.redis()
        try:
            entries = await client.xrange(stream)
        except Exception:  # Redis may be restarting; the watch polls again
            return []
        finally:
            await client.aclose()
        return [fields for _, fields in entries]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode(errors="replace")
