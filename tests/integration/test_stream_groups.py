"""Group creation, dead letters and trimming against a real Redis."""

from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.streams.groups import dead_letter, ensure_group, safe_trim_id, trim_acknowledged

pytestmark = pytest.mark.timeout(30)


Entry = tuple[bytes, dict[bytes, bytes]]


def stream_of(prefix: str) -> str:
    return f"{prefix}orders.low"


async def add_entries(redis: Redis, stream: str, count: int) -> list[bytes]:
    return [
        cast(bytes, await redis.xadd(stream, {"payload": f"entry {index}"}))
        for index in range(count)
    ]


async def read_entries(redis: Redis, stream: str, group: str, count: int) -> list[Entry]:
    """Deliver up to `count` new entries to `group` and return them, unacknowledged."""
    response = await redis.xreadgroup(group, f"{group}-consumer", {stream: ">"}, count=count)
    batches = cast(list[tuple[bytes, list[Entry]]], response)
    return batches[0][1] if batches else []


async def read_ids(redis: Redis, stream: str, group: str, count: int) -> list[bytes]:
    return [entry_id for entry_id, _ in await read_entries(redis, stream, group, count)]


async def stream_entries(redis: Redis, stream: str) -> list[Entry]:
    return cast(list[Entry], await redis.xrange(stream))


async def remaining_ids(redis: Redis, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in await stream_entries(redis, stream)]


# -- ensure_group ----------------------------------------------------------------------------


async def test_ensure_group_creates_once_when_called_twice(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)

    first = await ensure_group(redis, stream, "analytics")
    second = await ensure_group(redis, stream, "analytics")

    assert first is True
    assert second is False
    assert await redis.exists(stream) == 1


async def test_ensure_group_delivers_older_entries_when_created_late(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    written = await add_entries(redis, stream, 3)

    await ensure_group(redis, stream, "analytics")

    assert await read_ids(redis, stream, "analytics", 10) == written


async def test_ensure_group_raises_when_key_not_stream(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    await redis.set(stream, "not a stream")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await ensure_group(redis, stream, "analytics")


# -- dead_letter -----------------------------------------------------------------------------


async def test_dead_letter_copies_and_acks_when_entry_pending(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    dead_stream = f"{stream}.dead"
    await ensure_group(redis, stream, "warehouse")
    await redis.xadd(stream, {"type": "OrderReadyToShip", "payload": "{}"})
    [(entry_id, fields)] = await read_entries(redis, stream, "warehouse", 1)

    await dead_letter(
        redis,
        stream=stream,
        group="warehouse",
        dead_letter_stream=dead_stream,
        entry_id=entry_id,
        fields=fields,
        error="RuntimeError: carrier unavailable",
        attempts=6,
    )

    [(_, dead)] = await stream_entries(redis, dead_stream)
    assert dead[b"type"] == b"OrderReadyToShip"
    assert dead[b"payload"] == b"{}"
    assert dead[b"dead-group"] == b"warehouse"
    assert dead[b"dead-stream"] == stream.encode()
    assert dead[b"dead-entry-id"] == entry_id
    assert dead[b"dead-error"] == b"RuntimeError: carrier unavailable"
    assert dead[b"dead-attempts"] == b"6"
    assert b"dead-failed-at" in dead
    assert (await redis.xpending(stream, "warehouse"))["pending"] == 0


async def test_dead_letter_keeps_entry_pending_when_copy_fails(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    dead_stream = f"{stream}.dead"
    await redis.set(dead_stream, "not a stream")
    await ensure_group(redis, stream, "warehouse")
    await redis.xadd(stream, {"payload": "{}"})
    [(entry_id, fields)] = await read_entries(redis, stream, "warehouse", 1)

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await dead_letter(
            redis,
            stream=stream,
            group="warehouse",
            dead_letter_stream=dead_stream,
            entry_id=entry_id,
            fields=fields,
            error="RuntimeError: carrier unavailable",
            attempts=6,
        )

    assert (await redis.xpending(stream, "warehouse"))["pending"] == 1


# -- trimming --------------------------------------------------------------------------------


async def test_trim_keeps_oldest_pending_when_group_lags(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)
    await ensure_group(redis, stream, "analytics")
    await ensure_group(redis, stream, "warehouse")
    written = await add_entries(redis, stream, 10)
    await redis.xack(stream, "analytics", *await read_ids(redis, stream, "analytics", 10))
    warehouse_read = await read_ids(redis, stream, "warehouse", 10)
    await redis.xack(stream, "warehouse", *warehouse_read[:4])
    # Acknowledging an entry after the oldest pending one does not make older ones removable.
    await redis.xack(stream, "warehouse", warehouse_read[6])

    removed = await trim_acknowledged(redis, stream, frozenset({"analytics", "warehouse"}))

    assert removed == 4
    assert await remaining_ids(redis, stream) == written[4:]


async def test_trim_keeps_undelivered_entries_when_nothing_pending(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    await ensure_group(redis, stream, "analytics")
    await ensure_group(redis, stream, "warehouse")
    written = await add_entries(redis, stream, 10)
    await redis.xack(stream, "analytics", *await read_ids(redis, stream, "analytics", 10))
    await redis.xack(stream, "warehouse", *await read_ids(redis, stream, "warehouse", 3))

    removed = await trim_acknowledged(redis, stream, frozenset({"analytics", "warehouse"}))

    assert removed == 3
    assert await remaining_ids(redis, stream) == written[3:]


async def test_trim_removes_entries_when_every_group_acked(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    await ensure_group(redis, stream, "analytics")
    await ensure_group(redis, stream, "warehouse")
    await add_entries(redis, stream, 5)
    for group in ("analytics", "warehouse"):
        await redis.xack(stream, group, *await read_ids(redis, stream, group, 5))
    written_after = await add_entries(redis, stream, 2)

    removed = await trim_acknowledged(redis, stream, frozenset({"analytics", "warehouse"}))

    assert removed == 5
    assert await remaining_ids(redis, stream) == written_after


async def test_trim_removes_nothing_when_expected_group_missing(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    await ensure_group(redis, stream, "analytics")
    written = await add_entries(redis, stream, 5)
    await redis.xack(stream, "analytics", *await read_ids(redis, stream, "analytics", 5))

    trim_id = await safe_trim_id(redis, stream, frozenset({"analytics", "warehouse"}))
    removed = await trim_acknowledged(redis, stream, frozenset({"analytics", "warehouse"}))

    assert trim_id is None
    assert removed == 0
    assert await remaining_ids(redis, stream) == written


async def test_trim_removes_nothing_when_stream_missing(redis: Redis, stream_prefix: str) -> None:
    stream = stream_of(stream_prefix)

    removed = await trim_acknowledged(redis, stream, frozenset({"analytics"}))

    assert removed == 0
    assert await redis.exists(stream) == 0


async def test_trim_removes_nothing_when_stream_has_no_groups(
    redis: Redis, stream_prefix: str
) -> None:
    stream = stream_of(stream_prefix)
    written = await add_entries(redis, stream, 3)

    removed = await trim_acknowledged(redis, stream, frozenset())

    assert removed == 0
    assert await remaining_ids(redis, stream) == written
