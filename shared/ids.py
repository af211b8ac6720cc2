"""Identifiers: time-sortable and unique across processes (UUIDv7)."""

import uuid

import uuid_utils

ORDER_ID_PREFIX = "ORD-"


def new_order_id() -> str:
    """Return `ORD-` plus a UUIDv7 in hex, so ids sort by creation time."""
    return ORDER_ID_PREFIX + uuid_utils.uuid7().hex


# Namespace of the UUIDv5 event ids; fixed forever, since stored ids depend on it.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a4e-9b7d-4c1e-8a57-3d2f0e9b1c64")


def event_id_for(event_type: str, order_id: str) -> str:
    """Return the id of the one `event_type` event of an order (a UUIDv5, stable)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{event_type}:{order_id}"))
