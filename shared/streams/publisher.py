"""Publishing events to the tier streams."""

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.events import consumers_of, encode_entry
from shared.tiers import TierMap


@dataclass(frozen=True)
class OutgoingEvent:
    event_type: str
    event_id: str
    order_id: str
    payload: str
    headers: dict[str, str]


async def publish_events(
    redis: Redis, tiers: TierMap, events: Sequence[OutgoingEvent]
) -> list[str]:
    """Append each event to every tier stream that has work for it, in one round trip.

    Returns the streams written to, one per entry. Events no group consumes are skipped.
    """
    written: list[str] = []
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            fields = encode_entry(
                event.event_type, event.event_id, event.order_id, event.payload, event.headers
            )
            for stream in tiers.streams_for(consumers_of(event.event_type)):
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
                written.append(stream)
        if written:
            await pipe.execute()
    return written
