"""GroupConsumer against a real Redis: acknowledging, retries, dead letters, reclaim, outages.

Every test runs the consumer with timings in tens of milliseconds, so a retry, a reclaim or a
dead letter happens within a second or two, and waits for its outcome by polling Redis.
"""

import asyncio
import inspect
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import structlog
from redis.asyncio import Redis
from structlog.testing import capture_logs

from shared.events import Event, OrderReadyToShip, PaymentFailed, encode_entry
from shared.streams import consumer as consumer_module
from shared.streams.consumer import ConsumerOptions, Delivery, GroupConsumer, GroupSpec
from shared.streams.groups import ensure_group
from shared.streams.retry import RetryPolicy

pytestmark = pytest.mark.timeout(30)

Entry = tuple[bytes, dict[bytes, bytes]]

GROUP = "warehouse"
ACCEPTED_TYPE = "OrderReadyToShip"
POLL_INTERVAL_SECONDS = 0.02
WAIT_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
GROUP_MISSING_MESSAGE = "consumer group was missing and is created"
GROUP_CREATED_MESSAGE = "consumer group created"
# Coroutines that run as their own tasks while a GroupConsumer runs.
CONSUMER_TASK_NAMES = frozenset(
    {
        "GroupConsumer._read_loop",
        "GroupConsumer._retry_loop",
        "GroupConsumer._reclaim_loop",
        "GroupConsumer._claim_and_handle",
    }
)


def fast_options(**overrides: Any) -> ConsumerOptions:
    values: dict[str, Any] = {
        "batch_size": 10,
        "block_ms": 50,
        "handler_timeout_seconds": 0.5,
        "reclaim_idle_seconds": 1.0,
        "retry": RetryPolicy(base_seconds=0.01, cap_seconds=0.05, max_attempts=3),
    }
    values.update(overrides)
    return ConsumerOptions(**values)


def stream_of(prefix: str) -> str:
    return f"{prefix}orders.low"


def dead_stream_of(prefix: str) -> str:
    return f"{prefix}orders.low.dead"


def make_spec(prefix: str, handler: Callable[[Event, Delivery], Awaitable[None]]) -> GroupSpec:
    return GroupSpec(
        group=GROUP,
        stream=stream_of(prefix),
        dead_letter_stream=dead_stream_of(prefix),
        handler=handler,
        accepts=frozenset({ACCEPTED_TYPE}),
    )


def ready_to_ship() -> OrderReadyToShip:
    return OrderReadyToShip(order_id=f"ORD-{uuid.uuid4().hex}")


async def add_event(redis: Redis, stream: str, event: OrderReadyToShip | PaymentFailed) -> bytes:
    fields = encode_entry(event.type, event.event_id, event.order_id, event.model_dump_json(), {})
    return cast(bytes, await redis.xadd(stream, fields))  # type: ignore[arg-type]


async def stream_entries(redis: Redis, stream: str) -> list[Entry]:
    return cast(list[Entry], await redis.xrange(stream))


async def pending_count(redis: Redis, stream: str, group: str = GROUP) -> int:
    summary = await redis.xpending(stream, group)
    return int(summary["pending"])


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]],
    description: str,
    timeout_seconds: float = WAIT_TIMEOUT_SECONDS,
    running_task: "asyncio.Task[None] | None" = None,
) -> None:
    """Poll `check` until it is true; fail early if `running_task` has ended."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        if running_task is not None and running_task.done():
            raise AssertionError(f"run() ended while waiting for {description}")
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {description}")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


@asynccontextmanager
async def running(consumer: GroupConsumer) -> AsyncIterator["asyncio.Task[None]"]:
    """Run the consumer as a task; stop it and wait for `run()` to return on exit."""
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=STOP_TIMEOUT_SECONDS)


class RecordingHandler:
    """Records every call, fails the first `failures` attempts of each event, and can be slow.

    It also notes an entry handled while a call for the same entry is still running.
    """

    def __init__(self, failures: float = 0, work_seconds: float = 0.0) -> None:
        self.failures = failures
        self.work_seconds = work_seconds
        self.calls: list[tuple[Event, Delivery]] = []
        self.overlapping: list[str] = []
        self._running: set[str] = set()

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        self.calls.append((event, delivery))
        if delivery.entry_id in self._running:
            self.overlapping.append(delivery.entry_id)
        self._running.add(delivery.entry_id)
        try:
            if self.work_seconds:
                await asyncio.sleep(self.work_seconds)
            attempts_so_far = self.calls_for(event.event_id)
            if attempts_so_far <= self.failures:
                raise RuntimeError(f"simulated failure {attempts_so_far} of {event.event_id}")
        finally:
            self._running.discard(delivery.entry_id)

    def calls_for(self, event_id: str) -> int:
        return sum(1 for event, _ in self.calls if event.event_id == event_id)

    def attempts_of(self, event_id: str) -> list[int]:
        return [delivery.attempt for event, delivery in self.calls if event.event_id == event_id]

    def handled_event_ids(self) -> set[str]:
        return {event.event_id for event, _ in self.calls}


def consumer_tasks_alive() -> list["asyncio.Task[Any]"]:
    """Return the unfinished tasks that run a GroupConsumer loop or retry."""
    alive = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if task.done() or not inspect.iscoroutine(coro):
            continue
        if coro.__qualname__ in CONSUMER_TASK_NAMES:
            alive.append(task)
    return alive


def text_fields(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in fields.items()}


def messages(entries: Iterable[MutableMapping[str, Any]], text: str) -> list[Any]:
    return [entry for entry in entries if entry["event"] == text]


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_seconds", [1.0, 2.0])
async def test_consumer_rejects_timeout_when_not_below_reclaim(
    redis: Redis, stream_prefix: str, timeout_seconds: float
) -> None:
    options = fast_options(handler_timeout_seconds=timeout_seconds, reclaim_idle_seconds=1.0)

    with pytest.raises(ValueError, match="must be shorter than the reclaim idle time"):
        GroupConsumer(redis, make_spec(stream_prefix, RecordingHandler()), options)


# -- acknowledging ---------------------------------------------------------------------------


async def test_consumer_acks_once_when_handler_succeeds(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    handler = RecordingHandler()
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    events = [ready_to_ship() for _ in range(5)]

    async with running(consumer):
        for event in events:
            await add_event(redis, stream, event)
        await wait_until(lambda: len(handler.calls) >= len(events), "five handled events")
        await wait_until(lambda: _pending_is(redis, stream, 0), "no pending entries")

    assert Counter(event.event_id for event, _ in handler.calls) == {
        event.event_id: 1 for event in events
    }
    assert {delivery.attempt for _, delivery in handler.calls} == {1}
    assert await redis.xlen(dead_stream_of(stream_prefix)) == 0


async def test_consumer_skips_handler_when_type_unaccepted(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    handler = RecordingHandler()
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    ignored = PaymentFailed(order_id="ORD-ignored", reason="card declined")
    accepted = ready_to_ship()

    async with running(consumer):
        await add_event(redis, stream, ignored)
        await add_event(redis, stream, accepted)
        await wait_until(lambda: accepted.event_id in handler.handled_event_ids(), "accepted")
        await wait_until(lambda: _pending_is(redis, stream, 0), "no pending entries")

    assert handler.handled_event_ids() == {accepted.event_id}
    assert await redis.xlen(dead_stream_of(stream_prefix)) == 0


# -- retries and dead letters ----------------------------------------------------------------


async def test_consumer_retries_when_handler_fails_twice(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    recorder = RecordingHandler(failures=2)
    counters: list[int] = []

    async def handler(event: Event, delivery: Delivery) -> None:
        rows = await redis.xpending_range(
            stream, GROUP, min=delivery.entry_id, max=delivery.entry_id, count=1
        )
        counters.append(int(rows[0]["times_delivered"]))
        await recorder(event, delivery)

    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    event = ready_to_ship()

    async with running(consumer):
        await add_event(redis, stream, event)
        await wait_until(lambda: recorder.calls_for(event.event_id) >= 3, "a third attempt")
        await wait_until(lambda: _pending_is(redis, stream, 0), "the entry acknowledged")

    assert recorder.attempts_of(event.event_id) == [1, 2, 3]
    assert counters == [1, 2, 3]
    assert await redis.xlen(dead_stream_of(stream_prefix)) == 0


async def test_consumer_dead_letters_when_attempts_exhausted(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    dead_stream = dead_stream_of(stream_prefix)
    handler = RecordingHandler(failures=math.inf)
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    event = ready_to_ship()

    async with running(consumer):
        entry_id = await add_event(redis, stream, event)
        await wait_until(lambda: _length_is(redis, dead_stream, 1), "one dead letter")
        await wait_until(lambda: _pending_is(redis, stream, 0), "the original acknowledged")

    [(_, original)] = await stream_entries(redis, stream)
    [(_, dead)] = await stream_entries(redis, dead_stream)
    fields = text_fields(dead)
    assert fields["dead-attempts"] == "3"
    assert fields["dead-group"] == GROUP
    assert fields["dead-stream"] == stream
    assert fields["dead-entry-id"] == entry_id.decode()
    assert fields["dead-error"].startswith("RuntimeError: simulated failure 3")
    assert dead[b"payload"] == original[b"payload"]
    assert handler.attempts_of(event.event_id) == [1, 2, 3]


async def test_consumer_dead_letters_when_handler_times_out(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    dead_stream = dead_stream_of(stream_prefix)
    handler = RecordingHandler(work_seconds=5.0)
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    event = ready_to_ship()

    async with running(consumer):
        await add_event(redis, stream, event)
        await wait_until(lambda: _length_is(redis, dead_stream, 1), "one dead letter")
        await wait_until(lambda: _pending_is(redis, stream, 0), "the original acknowledged")

    [(_, dead)] = await stream_entries(redis, dead_stream)
    fields = text_fields(dead)
    assert "timed out" in fields["dead-error"]
    assert fields["dead-attempts"] == "3"
    assert handler.attempts_of(event.event_id) == [1, 2, 3]


async def test_consumer_runs_entry_once_when_retries_queue(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    dead_stream = dead_stream_of(stream_prefix)
    handler = RecordingHandler(work_seconds=5.0)
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    events = [ready_to_ship() for _ in range(4)]
    # Added before the start, the entries arrive in one batch and fail together. If their
    # retries ran one after another, the later ones would wait past the reclaim idle time and
    # be claimed a second time.
    for event in events:
        await add_event(redis, stream, event)

    async with running(consumer):
        await wait_until(lambda: _length_is(redis, dead_stream, 4, at_least=True), "4 letters")
        await wait_until(lambda: _pending_is(redis, stream, 0), "every entry acknowledged")

    assert handler.overlapping == []
    assert [handler.calls_for(event.event_id) for event in events] == [3, 3, 3, 3]
    assert await redis.xlen(dead_stream) == 4


async def test_consumer_dead_letters_when_entry_malformed(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    dead_stream = dead_stream_of(stream_prefix)
    handler = RecordingHandler()
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    valid = ready_to_ship()

    async with running(consumer):
        no_payload = cast(bytes, await redis.xadd(stream, {"type": ACCEPTED_TYPE}))
        not_json = cast(bytes, await redis.xadd(stream, {"payload": "{not json"}))
        await add_event(redis, stream, valid)
        await wait_until(lambda: _length_is(redis, dead_stream, 2), "two dead letters")
        await wait_until(lambda: valid.event_id in handler.handled_event_ids(), "valid event")
        await wait_until(lambda: _pending_is(redis, stream, 0), "no pending entries")

    dead = [text_fields(fields) for _, fields in await stream_entries(redis, dead_stream)]
    assert [fields["dead-entry-id"] for fields in dead] == [no_payload.decode(), not_json.decode()]
    assert [fields["dead-attempts"] for fields in dead] == ["1", "1"]
    assert "no payload field" in dead[0]["dead-error"]
    assert "not a valid event" in dead[1]["dead-error"]
    assert dead[1]["payload"] == "{not json"
    assert handler.handled_event_ids() == {valid.event_id}


async def test_consumer_survives_entry_when_header_not_utf8(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    handler = RecordingHandler()
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    bad, valid = ready_to_ship(), ready_to_ship()
    fields: dict[str, str | bytes] = {
        **encode_entry(bad.type, bad.event_id, bad.order_id, bad.model_dump_json(), {}),
        "h-traceparent": b"\xff\xfe",
    }

    async with running(consumer) as task:
        await redis.xadd(stream, fields)  # type: ignore[arg-type]
        await add_event(redis, stream, valid)
        await wait_until(
            lambda: valid.event_id in handler.handled_event_ids(), "valid", running_task=task
        )
        await wait_until(lambda: _pending_is(redis, stream, 0), "no pending", running_task=task)

        assert not task.done()


# -- reclaim ---------------------------------------------------------------------------------


async def test_consumer_reclaims_every_entry_when_owner_died(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    options = fast_options()
    handler = RecordingHandler()
    events = [ready_to_ship() for _ in range(250)]
    await ensure_group(redis, stream, GROUP)
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            fields = encode_entry(
                event.type, event.event_id, event.order_id, event.model_dump_json(), {}
            )
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        await pipe.execute()
    response = await redis.xreadgroup(GROUP, "crashed-consumer", {stream: ">"}, count=len(events))
    read_at = time.monotonic()
    [(_, read)] = cast(list[tuple[bytes, list[Entry]]], response)
    assert len(read) == len(events)

    called_at: list[float] = []

    async def timed_handler(event: Event, delivery: Delivery) -> None:
        called_at.append(time.monotonic())
        await handler(event, delivery)

    consumer = GroupConsumer(redis, make_spec(stream_prefix, timed_handler), options)

    async with running(consumer):
        await wait_until(
            lambda: len(handler.handled_event_ids()) >= len(events), "all 250 entries reclaimed"
        )
        await wait_until(lambda: _pending_is(redis, stream, 0), "no pending entries")

    handled = Counter(event.event_id for event, _ in handler.calls)
    assert handled == {event.event_id: 1 for event in events}
    assert {delivery.attempt for _, delivery in handler.calls} == {2}
    assert min(called_at) - read_at >= options.reclaim_idle_seconds


# -- missing group ---------------------------------------------------------------------------


async def _read_is_blocked(redis: Redis, client_name: str) -> bool:
    clients = await redis.client_list()
    return any(
        client
        for client in clients
        if client.get("name") == client_name
        and "b" in client.get("flags", "")
        and client.get("cmd") == "xreadgroup"
    )


@pytest.mark.parametrize("removal", ["delete stream", "destroy group"])
async def test_consumer_recreates_group_when_removed(
    redis: Redis,
    redis_url: str,
    stream_prefix: str,
    removal: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = stream_of(stream_prefix)
    client_name = f"{stream_prefix}consumer"
    consumer_redis = Redis.from_url(redis_url, client_name=client_name)
    handler = RecordingHandler()
    before, after = ready_to_ship(), ready_to_ship()

    try:
        with capture_logs() as logs:
            # A fresh logger uses the capturing processors, even if an earlier test configured
            # structlog to cache loggers on first use.
            monkeypatch.setattr(consumer_module, "log", structlog.get_logger("orderflow.consumer"))
            # A long block keeps the read loop inside XREADGROUP when the group disappears.
            # Redis 7.0.15 then ends the read with -UNBLOCKED for a deleted stream and with
            # -NOGROUP for a destroyed group. Valkey 9.1 replies -NOGROUP to both.
            consumer = GroupConsumer(
                consumer_redis, make_spec(stream_prefix, handler), fast_options(block_ms=2000)
            )
            async with running(consumer) as task:
                await add_event(redis, stream, before)
                await wait_until(lambda: before.event_id in handler.handled_event_ids(), "first")
                await wait_until(lambda: _read_is_blocked(redis, client_name), "a blocked read")

                # The first start creates the group and logs it at INFO, as a normal start.
                created_before = len(messages(logs, GROUP_CREATED_MESSAGE))
                missing_before = len(messages(logs, GROUP_MISSING_MESSAGE))
                if removal == "delete stream":
                    await redis.delete(stream)
                else:
                    await redis.xgroup_destroy(stream, GROUP)
                await wait_until(
                    lambda: _group_exists(redis, stream), "the group", running_task=task
                )
                await add_event(redis, stream, after)
                await wait_until(
                    lambda: after.event_id in handler.handled_event_ids(),
                    "the second event",
                    running_task=task,
                )
                await wait_until(lambda: _pending_is(redis, stream, 0), "no pending entries")

                assert not task.done()
    finally:
        await consumer_redis.aclose()

    assert created_before == 1
    assert missing_before == 0
    assert len(messages(logs, GROUP_MISSING_MESSAGE)) == 1
    assert handler.calls_for(after.event_id) == 1


# -- stopping and failing --------------------------------------------------------------------


async def test_consumer_finishes_inflight_handler_when_stopped(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    started = asyncio.Event()
    finished: list[str] = []

    async def handler(event: Event, delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.3)  # the work that must finish after stop()
        finished.append(event.event_id)

    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    event = ready_to_ship()
    task = asyncio.create_task(consumer.run())
    await add_event(redis, stream, event)
    await asyncio.wait_for(started.wait(), timeout=WAIT_TIMEOUT_SECONDS)

    consumer.stop()
    stopped_at = time.monotonic()
    await asyncio.wait_for(task, timeout=2.0)

    assert time.monotonic() - stopped_at < 2.0
    assert finished == [event.event_id]
    assert await pending_count(redis, stream) == 0


async def test_consumer_finishes_inflight_retry_when_stopped(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    retry_started = asyncio.Event()
    finished: list[int] = []

    async def handler(event: Event, delivery: Delivery) -> None:
        if delivery.attempt == 1:
            raise RuntimeError("simulated failure, so the entry is retried")
        retry_started.set()
        await asyncio.sleep(0.3)  # the work that must finish after stop()
        finished.append(delivery.attempt)

    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    task = asyncio.create_task(consumer.run())
    await add_event(redis, stream, ready_to_ship())
    await asyncio.wait_for(retry_started.wait(), timeout=WAIT_TIMEOUT_SECONDS)

    consumer.stop()
    await asyncio.wait_for(task, timeout=2.0)

    assert finished == [2]
    assert await pending_count(redis, stream) == 0


class HandlerCrash(BaseException):
    """An error that escapes the consumer's `except Exception`, as a stand-in for any loop bug."""


def crashed_with_handler_crash(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.subgroup(HandlerCrash) is not None
    return isinstance(error, HandlerCrash)


async def stop_leftovers(consumer: GroupConsumer) -> None:
    """Stop whatever a failed `run()` left running, so no task outlives the test."""
    consumer.stop()
    leftover = consumer_tasks_alive()
    if leftover:
        await asyncio.wait_for(
            asyncio.gather(*leftover, return_exceptions=True), timeout=STOP_TIMEOUT_SECONDS
        )


async def test_consumer_leaves_no_loops_when_run_fails(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    crashed: list[str] = []

    async def handler(event: Event, delivery: Delivery) -> None:
        if not crashed:
            crashed.append(delivery.entry_id)
            raise HandlerCrash

    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), fast_options())
    task = asyncio.create_task(consumer.run())
    await add_event(redis, stream, ready_to_ship())

    try:
        with pytest.raises((HandlerCrash, BaseExceptionGroup)) as caught:
            await asyncio.wait_for(task, timeout=WAIT_TIMEOUT_SECONDS)
        assert crashed_with_handler_crash(caught.value)
        assert consumer_tasks_alive() == []
    finally:
        await stop_leftovers(consumer)


async def test_consumer_leaves_no_retries_when_run_fails(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    retried, crashing = ready_to_ship(), ready_to_ship()
    retry_started = asyncio.Event()
    release = asyncio.Event()

    async def handler(event: Event, delivery: Delivery) -> None:
        if event.event_id == crashing.event_id:
            raise HandlerCrash
        if delivery.attempt == 1:
            raise RuntimeError("simulated failure, so the entry is retried")
        retry_started.set()
        await release.wait()

    options = fast_options(handler_timeout_seconds=0.9)
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), options)
    task = asyncio.create_task(consumer.run())
    await add_event(redis, stream, retried)

    try:
        await asyncio.wait_for(retry_started.wait(), timeout=WAIT_TIMEOUT_SECONDS)
        await add_event(redis, stream, crashing)
        with pytest.raises((HandlerCrash, BaseExceptionGroup)) as caught:
            await asyncio.wait_for(task, timeout=WAIT_TIMEOUT_SECONDS)
        assert crashed_with_handler_crash(caught.value)
        assert consumer_tasks_alive() == []
    finally:
        release.set()
        await stop_leftovers(consumer)


# -- conditions polled by the tests ----------------------------------------------------------


async def _pending_is(redis: Redis, stream: str, expected: int) -> bool:
    return await pending_count(redis, stream) == expected


async def _length_is(redis: Redis, stream: str, expected: int, *, at_least: bool = False) -> bool:
    length = int(await redis.xlen(stream))
    return length >= expected if at_least else length == expected


async def _group_exists(redis: Redis, stream: str) -> bool:
    if not await redis.exists(stream):
        return False
    groups = await redis.xinfo_groups(stream)
    return any(info["name"] in (GROUP, GROUP.encode()) for info in groups)


async def test_consumer_removes_departed_consumers(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    handler = RecordingHandler()
    options = fast_options(departed_idle_seconds=0.3)
    consumer = GroupConsumer(redis, make_spec(stream_prefix, handler), options)

    async with running(consumer):
        await wait_until(lambda: _group_exists(redis, stream), "the group")
        await redis.xgroup_createconsumer(stream, GROUP, "gone-host-1-0")

        async def departed_removed() -> bool:
            names = {c["name"] for c in await redis.xinfo_consumers(stream, GROUP)}
            return b"gone-host-1-0" not in names and "gone-host-1-0" not in names

        await wait_until(departed_removed, "the departed consumer removed")
        names = {c["name"] for c in await redis.xinfo_consumers(stream, GROUP)}

    assert {name.decode() if isinstance(name, bytes) else name for name in names} <= set(
        consumer.names
    )
