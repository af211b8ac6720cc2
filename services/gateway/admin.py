"""Admin API: streams, consumer groups, consumers and dead letters.

With `ORDERFLOW_ADMIN_TOKEN` set, every admin route needs `Authorization: Bearer <token>`.
Without it, the read routes are open and the routes that change anything return 403.
"""

import hmac
import time
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.gateway.routes import json_response
from services.gateway.schemas import parse_json_body
from shared.errors import InvalidInput
from shared.streams.dlq import (
    DeadLetterNotFound,
    count_dead_letters,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from shared.streams.groups import oldest_pending_age_ms
from shared.streams.replies import as_text
from shared.tiers import Tier, TierMap

MAX_LISTED = 500


def _presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _token_matches(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    expected: str = connection.app.state.admin_token
    presented = _presented_token(connection)
    return presented is not None and hmac.compare_digest(presented, expected)


def admin_read_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.app.state.admin_token and not _token_matches(connection):
        raise NotAuthorizedException(
            "admin routes need the header Authorization: Bearer <ORDERFLOW_ADMIN_TOKEN>"
        )


def admin_write_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not connection.app.state.admin_token:
        raise PermissionDeniedException(
            "admin actions are disabled because ORDERFLOW_ADMIN_TOKEN is not set; "
            "set it and send it as a Bearer token"
        )
    if not _token_matches(connection):
        raise NotAuthorizedException(
            "admin actions need the header Authorization: Bearer <ORDERFLOW_ADMIN_TOKEN>"
        )


async def describe_streams(redis: Redis, tiers: TierMap) -> list[dict[str, Any]]:
    """Return each tier stream with its length, groups, consumers and dead-letter count."""
    dead = await count_dead_letters(redis, tiers)
    now_ms = int(time.time() * 1000)
    described = []
    for tier in Tier:
        stream = tiers.stream(tier)
        groups: list[dict[str, Any]] = []
        try:
            raw_groups = await redis.xinfo_groups(stream)
        except ResponseError:
            raw_groups = []
        for info in raw_groups:
            name = str(as_text(info["name"]))
            consumers = await redis.xinfo_consumers(stream, name)
            oldest_ms = await _oldest_pending_age_ms(redis, stream, name, now_ms)
            groups.append(
                {
                    "name": name,
                    "pending": info["pending"],
                    "lag": info.get("lag"),
                    "last_delivered_id": as_text(info["last-delivered-id"]),
                    "oldest_pending_age_ms": oldest_ms,
                    "consumers": [
                        {
                            "name": as_text(consumer["name"]),
                            "pending": consumer["pending"],
                            "idle_ms": consumer["idle"],
                        }
                        for consumer in consumers
                    ],
                }
            )
        described.append(
            {
                "tier": tier.value,
                "stream": stream,
                "length": int(await redis.xlen(stream)),
                "dead_letters": dead[tier.value],
                "groups": groups,
            }
        )
    return described


async def _oldest_pending_age_ms(redis: Redis, stream: str, group: str, now_ms: int) -> int | None:
    return await oldest_pending_age_ms(redis, stream, group, now_ms)


def _tiers(state: State) -> TierMap:
    tiers: TierMap = state.tiers
    return tiers


@get("/api/v1/admin/streams", guards=[admin_read_guard], summary="Tier streams and groups")
async def admin_streams(state: State) -> Response[bytes]:
    return json_response({"streams": await describe_streams(state.redis, _tiers(state))})


@get("/api/v1/admin/dead-letters", guards=[admin_read_guard], summary="List dead letters")
async def admin_dead_letters(
    state: State,
    group: str | None = None,
    tier: Tier | None = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LISTED)] = 100,
) -> Response[bytes]:
    letters = await list_dead_letters(state.redis, _tiers(state), group, tier, limit)
    return json_response({"dead_letters": [letter.as_dict() for letter in letters]})


def _selection(body: Any) -> tuple[list[str] | None, str | None]:
    if not isinstance(body, dict):
        raise InvalidInput({"body": "expected a JSON object with `references` or `group`"})
    references = body.get("references")
    group = body.get("group")
    everything = body.get("all") is True
    if references is not None and not (
        isinstance(references, list) and all(isinstance(r, str) for r in references)
    ):
        raise InvalidInput({"references": "must be a list of TIER:ENTRY_ID strings"})
    if group is not None and not isinstance(group, str):
        raise InvalidInput({"group": f"must be a group name (got {group!r})"})
    if not references and group is None and not everything:
        raise InvalidInput(
            {"body": 'name `references`, a `group`, or send {"all": true} for every dead letter'}
        )
    return references or None, group


async def _apply(request: Request[Any, Any, Any], state: State, action: Any) -> Response[bytes]:
    references, group = _selection(parse_json_body(await request.body()))
    try:
        done = await action(state.redis, _tiers(state), references, group)
    except ValueError as exc:
        raise InvalidInput({"references": str(exc)}) from exc
    except DeadLetterNotFound as exc:
        return json_response({"status_code": 404, "detail": str(exc)}, 404)
    return json_response({"count": len(done), "references": done})


@post("/api/v1/admin/dead-letters/replay", guards=[admin_write_guard], status_code=200)
async def admin_replay(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Replay dead letters: `{"references": [...]}`, `{"group": "email"}` or `{"all": true}`."""
    return await _apply(request, state, replay_dead_letters)


@post("/api/v1/admin/dead-letters/purge", guards=[admin_write_guard], status_code=200)
async def admin_purge(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Delete dead letters for good; the same body as replay."""
    return await _apply(request, state, purge_dead_letters)


ADMIN_ROUTES = [admin_streams, admin_dead_letters, admin_replay, admin_purge]
