"""`orderflow dlq list|replay|purge`: dead letters from the command line."""

import argparse
import json

from redis.asyncio import Redis

from shared.settings import Settings
from shared.streams.dlq import (
    DeadLetterNotFound,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from shared.tiers import Tier, TierMap


async def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    tiers = TierMap(settings.stream_prefix, settings.work_tiers)
    try:
        if args.action == "list":
            return await _list(redis, tiers, args)
        action = replay_dead_letters if args.action == "replay" else purge_dead_letters
        group = None if args.all else args.group
        try:
            done = await action(redis, tiers, args.references or None, group)
        except (ValueError, DeadLetterNotFound) as exc:
            print(f"error: {exc}")
            return 2
        verb = "replayed" if args.action == "replay" else "purged"
        for reference in done:
            print(reference)
        print(f"{verb} {len(done)} dead letters")
        return 0
    finally:
        await redis.aclose()


async def _list(redis: Redis, tiers: TierMap, args: argparse.Namespace) -> int:
    tier = Tier(args.tier) if args.tier else None
    letters = await list_dead_letters(redis, tiers, args.group, tier, args.limit)
    for letter in letters:
        if args.json:
            print(json.dumps(letter.as_dict()))
        else:
            print(
                f"{letter.reference}  group={letter.group}  attempts={letter.attempts}  "
                f"order={letter.order_id or '-'}  type={letter.event_type or '-'}  "
                f"error={letter.error[:120]}"
            )
    if not args.json:
        print(f"{len(letters)} dead letters")
    return 0
