"""Dead letters: list, replay and purge the per-tier dead-letter streams.

A dead letter is named `TIER:ENTRY_ID` (for example `default:1733300000000-0`), since entry
ids are unique only within one stream. Replaying appends the original entry to its tier
stream again; every group of that tier receives it, and the groups that had handled the event
skip it by its event id.
"""

from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.asyncio import Redis

from shared.streams.groups import DEAD_LETTER_FIELD_PREFIX
from shared.tiers import Tier, TierMap


class DeadLetterNotFound(LookupError):
    def __init__(self, reference: str) -> None:
        super().__init__(
            f"dead letter {reference!r} not found; `orderflow dlq list` shows the current ones"
        )


@dataclass(frozen=True)
class DeadLetter:
    reference: str
    tier: str
    group: str
    stream: str
    original_entry_id: str
    error: str
    attempts: int
    failed_at: str
    event_type: str
    order_id: str
    event_id: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_reference(reference: str) -> tuple[Tier, str]:
    tier_text, _, entry_id = reference.partition(":")
    try:
        tier = Tier(tier_text)
    except ValueError as exc:
        raise ValueError(
            f"invalid dead-letter reference {reference!r}: expected TIER:ENTRY_ID with TIER "
            f"one of {', '.join(t.value for t in Tier)}"
        ) from exc
    if not entry_id:
        raise ValueError(f"invalid dead-letter reference {reference!r}: the entry id is missing")
    return tier, entry_id


Entry = tuple[bytes, dict[bytes, bytes]]


async def _xrange(
    redis: Redis, stream: str, start: str = "-", end: str = "+", count: int | None = None
) -> list[Entry]:
    entries = await redis.xrange(stream, min=start, max=end, count=count)
    return cast(list[Entry], entries or [])


def _text(fields: dict[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode(errors="replace")


def _dead_letter(tier: Tier, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    dead = DEAD_LETTER_FIELD_PREFIX
    attempts = _text(fields, f"{dead}attempts")
    return DeadLetter(
        reference=f"{tier.value}:{entry_id.decode()}",
        tier=tier.value,
        group=_text(fields, f"{dead}group"),
        stream=_text(fields, f"{dead}stream"),
        original_entry_id=_text(fields, f"{dead}entry-id"),
        error=_text(fields, f"{dead}error"),
        attempts=int(attempts) if attempts.isdigit() else 0,
        failed_at=_text(fields, f"{dead}failed-at"),
        event_type=_text(fields, "type"),
        order_id=_text(fields, "order_id"),
        event_id=_text(fields, "event_id"),
    )


async def list_dead_letters(
    redis: Redis,
    tiers: TierMap,
    group: str | None = None,
    tier: Tier | None = None,
    limit: int = 100,
) -> list[DeadLetter]:
    """Return up to `limit` dead letters, oldest first, optionally of one group or tier."""
    found: list[DeadLetter] = []
    for each in [tier] if tier else list(Tier):
        entries = await _xrange(redis, tiers.dead_letter_stream(each), count=max(limit * 4, 100))
        for entry_id, fields in entries:
            letter = _dead_letter(each, entry_id, fields)
            if group is None or letter.group == group:
                found.append(letter)
    return found[:limit]


async def count_dead_letters(redis: Redis, tiers: TierMap) -> dict[str, int]:
    return {tier.value: int(await redis.xlen(tiers.dead_letter_stream(tier))) for tier in Tier}


async def _select(
    redis: Redis, tiers: TierMap, references: list[str] | None, group: str | None
) -> list[tuple[Tier, bytes, dict[bytes, bytes]]]:
    selected: list[tuple[Tier, bytes, dict[bytes, bytes]]] = []
    if references:
        for reference in references:
            tier, entry_id_text = parse_reference(reference)
            entries = await _xrange(
                redis, tiers.dead_letter_stream(tier), entry_id_text, entry_id_text
            )
            if not entries:
                raise DeadLetterNotFound(reference)
            selected.append((tier, entries[0][0], entries[0][1]))
        return selected
    for tier in Tier:
        for entry_id, fields in await _xrange(redis, tiers.dead_letter_stream(tier)):
            if group is None or _text(fields, f"{DEAD_LETTER_FIELD_PREFIX}group") == group:
                selected.append((tier, entry_id, fields))
    return selected


async def replay_dead_letters(
    redis: Redis, tiers: TierMap, references: list[str] | None = None, group: str | None = None
) -> list[str]:
    """Put dead letters back on their tier streams and remove them; return their references.

    Pass `references`, or `group` for all of one group's, or neither for every dead letter.
    """
    replayed = []
    for tier, entry_id, fields in await _select(redis, tiers, references, group):
        original = {
            key: value
            for key, value in fields.items()
            if not key.startswith(DEAD_LETTER_FIELD_PREFIX.encode())
        }
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(tiers.stream(tier), original)  # type: ignore[arg-type]
            pipe.xdel(tiers.dead_letter_stream(tier), entry_id)
            await pipe.execute()
        replayed.append(f"{tier.value}:{entry_id.decode()}")
    return replayed


async def purge_dead_letters(
    redis: Redis, tiers: TierMap, references: list[str] | None = None, group: str | None = None
) -> list[str]:
    """Delete dead letters for good; the same selection rules as `replay_dead_letters`."""
    purged = []
    for tier, entry_id, _fields in await _select(redis, tiers, references, group):
        await redis.xdel(tiers.dead_letter_stream(tier), entry_id)
        purged.append(f"{tier.value}:{entry_id.decode()}")
    return purged
