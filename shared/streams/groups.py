"""Consumer-group housekeeping: creation, dead letters and trimming."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.streams.replies import as_text

DEAD_LETTER_FIELD_PREFIX = "dead-"

# KEYS: the stream, its dead-letter stream. ARGV: the group, the entry id, then field/value
# pairs of the dead letter.
DEAD_LETTER_SCRIPT = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""


async def ensure_group(redis: Redis, stream: str, group: str) -> bool:
    """Create `group` on `stream` (and the stream) if missing; return True if created.

    A new group starts at id 0, so entries added while the group was missing (after Redis
    restarted empty, for example) are still delivered.
    """
    try:
        await redis.xgroup_create(name=stream, groupname=group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


def is_missing_group(exc: ResponseError) -> bool:
    """Tell whether a read failed because the group or its stream is gone.

    Redis replies NOGROUP for a missing group, and ends a blocked XREADGROUP with
    UNBLOCKED when its stream is deleted.
    """
    return "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc)


async def dead_letter(
    redis: Redis,
    *,
    stream: str,
    group: str,
    dead_letter_stream: str,
    entry_id: bytes,
    fields: Mapping[bytes, bytes],
    error: str,
    attempts: int,
) -> None:
    """Copy an entry to the dead-letter stream with why it failed, then acknowledge it.

    Both commands run in one Lua script, which stops at the first error: an entry whose copy
    failed stays pending, and no crash can come between the copy and the acknowledgement.
    """
    record: dict[Any, Any] = dict(fields)
    record.update(
        {
            f"{DEAD_LETTER_FIELD_PREFIX}group": group,
            f"{DEAD_LETTER_FIELD_PREFIX}stream": stream,
            f"{DEAD_LETTER_FIELD_PREFIX}entry-id": entry_id,
            f"{DEAD_LETTER_FIELD_PREFIX}error": error[:2000],
            f"{DEAD_LETTER_FIELD_PREFIX}attempts": str(attempts),
            f"{DEAD_LETTER_FIELD_PREFIX}failed-at": datetime.now(UTC).isoformat(),
        }
    )
    arguments: list[Any] = [group, entry_id]
    for key, value in record.items():
        arguments += [key, value]
    await redis.eval(DEAD_LETTER_SCRIPT, 2, stream, dead_letter_stream, *arguments)


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    millis, _, seq = text.partition("-")
    return int(millis), int(seq or 0)


async def safe_trim_id(redis: Redis, stream: str, expected_groups: frozenset[str]) -> str | None:
    """Return the lowest id that every group of `stream` still needs, or None if unknown.

    Entries below it are acknowledged by every group; a group with pending entries needs
    its oldest pending one, and a group without needs everything after its last-delivered id.
    While one of `expected_groups` does not exist yet, nothing is safe to trim.
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return None
    names = {as_text(info["name"]) for info in groups}
    if not groups or not expected_groups <= names:
        return None

    needed: list[tuple[int, int]] = []
    for info in groups:
        name = info["name"]
        summary = await redis.xpending(stream, name)
        if summary["pending"]:
            needed.append(_parse_id(summary["min"]))
        else:
            millis, seq = _parse_id(info["last-delivered-id"])
            needed.append((millis, seq + 1))
    millis, seq = min(needed)
    return f"{millis}-{seq}"


async def trim_acknowledged(redis: Redis, stream: str, expected_groups: frozenset[str]) -> int:
    """Remove the entries every group has acknowledged; return how many were removed."""
    min_id = await safe_trim_id(redis, stream, expected_groups)
    if min_id is None:
        return 0
    removed: int = await redis.xtrim(stream, minid=min_id, approximate=False)
    return removed


async def oldest_pending_age_ms(redis: Redis, stream: str, group: str, now_ms: int) -> int | None:
    """Return the age of the group's oldest unacknowledged entry, from its id; None if none.

    The summary can be empty even when XINFO just counted pending entries, since they may
    have been acknowledged in between.
    """
    summary = await redis.xpending(stream, group)
    oldest = summary.get("min") if summary.get("pending") else None
    if oldest is None:
        return None
    millis, _ = _parse_id(oldest)
    return max(now_ms - millis, 0)
