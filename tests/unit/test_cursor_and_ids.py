"""List cursors and order ids: round trips, rejection of forged cursors, and id ordering."""

import base64
import re
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.gateway.orders import decode_cursor, encode_cursor
from shared.errors import InvalidInput
from shared.ids import new_order_id

pytestmark = pytest.mark.timeout(30)

ORDER_ID_PATTERN = re.compile(r"^ORD-[0-9a-f]{32}$")
# The orders.id column is VARCHAR(40).
ORDER_ID_MAX_CHARS = 40


def forged_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("created_at", "order_id"),
    [
        (datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), "ORD-01a2b3c4d5e6f708192a3b4c5d6e7f80"),
        (datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), "ORD-" + "f" * 32),
        (
            datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "ORD-" + "0" * 32,
        ),
    ],
)
def test_cursor_round_trips_when_encoded(created_at: datetime, order_id: str) -> None:
    cursor = encode_cursor(created_at, order_id)

    decoded_at, decoded_id = decode_cursor(cursor)

    assert decoded_at == created_at
    assert decoded_at.utcoffset() == timedelta(0)
    assert decoded_id == order_id
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!!", id="punctuation"),
        pytest.param("=", id="padding-only"),
        pytest.param("YWJj", id="base64-of-abc"),
        pytest.param("%%%", id="percent"),
        pytest.param("a" * 10_000, id="very-long"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(), id="not-utf8"),
        pytest.param(forged_cursor("2024-01-01T00:00:00|ORD-1"), id="naive-time"),
        pytest.param(forged_cursor("2024-01-01T00:00:00+00:00|"), id="empty-id"),
        pytest.param(forged_cursor("2024-01-01T00:00:00+00:00"), id="no-separator"),
        pytest.param(forged_cursor("yesterday|ORD-1"), id="time-not-iso"),
        pytest.param(forged_cursor("2024-13-01T00:00:00+00:00|ORD-1"), id="month-13"),
    ],
)
def test_cursor_decode_rejects_garbage(cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(cursor)

    assert list(caught.value.problems) == ["cursor"]
    assert repr(cursor[:40]) in caught.value.problems["cursor"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0001-01-01T00:00:00+05:00|ORD-1", id="before-year-1-in-utc"),
        pytest.param("9999-12-31T23:59:59-05:00|ORD-1", id="after-year-9999-in-utc"),
    ],
)
def test_cursor_rejects_time_out_of_range(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(forged_cursor(text))

    assert list(caught.value.problems) == ["cursor"]


def test_cursor_rejects_id_with_nul() -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(forged_cursor("2024-01-01T00:00:00+00:00|ORD-\x00"))

    assert list(caught.value.problems) == ["cursor"]


def test_order_id_is_prefixed_uuid7() -> None:
    order_id = new_order_id()

    assert ORDER_ID_PATTERN.match(order_id)
    assert len(order_id) <= ORDER_ID_MAX_CHARS
    assert uuid.UUID(hex=order_id.removeprefix("ORD-")).version == 7


def test_order_id_embeds_creation_time() -> None:
    before_ms = time.time_ns() // 1_000_000
    order_id = new_order_id()
    after_ms = time.time_ns() // 1_000_000

    # The first 48 bits of a UUIDv7 are the Unix time in milliseconds.
    embedded_ms = int(order_id.removeprefix("ORD-")[:12], 16)

    assert before_ms <= embedded_ms <= after_ms


def test_order_ids_unique_when_10000_created() -> None:
    ids = [new_order_id() for _ in range(10_000)]

    assert len(set(ids)) == 10_000
    assert all(ORDER_ID_PATTERN.match(order_id) for order_id in ids)


def test_order_ids_sort_when_created_together() -> None:
    # Most of these share a millisecond, so the order within one millisecond counts too.
    ids = [new_order_id() for _ in range(10_000)]

    assert ids == sorted(ids)


def test_order_ids_sort_when_milliseconds_apart() -> None:
    first = new_order_id()
    deadline = time.monotonic() + 1.0
    second = new_order_id()
    while second[4:16] == first[4:16] and time.monotonic() < deadline:
        second = new_order_id()

    assert second[4:16] > first[4:16]
    assert second > first


@pytest.mark.parametrize("order_id", ["ORD-x", "ORD-1", "id|with|bars", "ünïcode-id"])
def test_cursor_rejects_id_not_issued(order_id: str) -> None:
    cursor = encode_cursor(datetime(2024, 1, 1, tzinfo=UTC), order_id)

    with pytest.raises(InvalidInput) as raised:
        decode_cursor(cursor)

    assert list(raised.value.problems) == ["cursor"]
