"""Identifiers: time-sortable and unique across processes (UUIDv7)."""

import uuid_utils

ORDER_ID_PREFIX = "ORD-"


def new_order_id() -> str:
    """Return `ORD-` plus a UUIDv7 in hex, so ids sort by creation time."""
    return ORDER_ID_PREFIX + uuid_utils.uuid7().hex


def new_event_id() -> str:
    return str(uuid_utils.uuid7())
