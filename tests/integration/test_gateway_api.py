"""The gateway's HTTP API against real PostgreSQL and Redis, through the Litestar app."""

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient, TestClient
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.app import create_app
from services.gateway.backlog import BacklogMonitor
from shared.db.models import Order, OutboxRecord
from shared.settings import Settings
from shared.tiers import Tier, TierMap, WorkType

pytestmark = pytest.mark.timeout(90)

SAMPLE_ORDER: dict[str, Any] = {
    "customer_id": "cust-123",
    "customer_email": "customer@example.com",
    "items": [
        {"product_id": "prod-1", "product_name": "Laptop", "quantity": 1, "unit_price": 1200.00},
        {"product_id": "prod-2", "product_name": "Mouse", "quantity": 2, "unit_price": 25.00},
    ],
    "shipping_address": {
        "street": "123 Main St",
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94102",
        "country": "USA",
    },
    "payment_method": "credit_card",
    "notes": "Please deliver before 5 PM",
}
ORDERS = "/api/v1/orders"
POLL_SECONDS = 0.05
REFRESH_WAIT_SECONDS = 10.0

Sessions = async_sessionmaker[AsyncSession]


def order_for(customer_id: str) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE_ORDER)
    body["customer_id"] = customer_id
    return body


@contextlib.asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture(autouse=True)
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Capture structlog events instead of rendering them.

    Rendering an error's traceback with its local variables takes seconds per 500 response.
    """
    with structlog.testing.capture_logs() as logs:
        yield logs


@pytest.fixture
async def gateway(
    settings: Settings, sessions: Sessions, redis: Redis
) -> AsyncIterator[AsyncTestClient[Any]]:
    async with open_gateway(settings) as client:
        yield client


async def place_order(client: AsyncTestClient[Any], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(ORDERS, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def outbox_rows(sessions: Sessions, order_id: str) -> list[OutboxRecord]:
    async with sessions() as session:
        query = select(OutboxRecord).where(OutboxRecord.order_id == order_id)
        return list((await session.execute(query.order_by(OutboxRecord.id))).scalars())


async def count_orders(sessions: Sessions, *conditions: Any) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(Order).where(*conditions)
        return int((await session.execute(query)).scalar_one())


def error_fields(response: Any) -> list[str]:
    return [error["field"] for error in response.json().get("errors", [])]


async def test_create_order_returns_201_when_sample_sent(gateway: AsyncTestClient[Any]) -> None:
    response = await gateway.post(ORDERS, content=json.dumps(SAMPLE_ORDER).encode())
    order = response.json()

    assert response.status_code == 201
    assert order["id"].startswith("ORD-")
    assert '"total_amount":1250.00' in response.text
    assert order["status"] == "pending"
    assert order["payment_status"] == "pending"
    assert set(order["steps"]) == {work.value for work in WorkType}
    assert [step["state"] for step in order["steps"].values()] == ["pending"] * 6
    assert order["fully_processed"] is False
    assert order["invoice_url"] is None
    assert order["items"][1] == {
        "product_id": "prod-2",
        "product_name": "Mouse",
        "quantity": 2,
        "unit_price": 25.00,
    }
    assert order["shipping_address"] == SAMPLE_ORDER["shipping_address"]


async def test_create_order_writes_one_outbox_row(
    gateway: AsyncTestClient[Any], sessions: Sessions
) -> None:
    order = await place_order(gateway, SAMPLE_ORDER)

    rows = await outbox_rows(sessions, order["id"])

    assert [row.event_type for row in rows] == ["OrderCreated"]
    payload = json.loads(rows[0].payload)
    assert payload["order_id"] == order["id"]
    assert payload["order"]["total_amount"] == "1250.00"
    assert rows[0].published_at is None


async def test_get_order_returns_stored_order(gateway: AsyncTestClient[Any]) -> None:
    created = await place_order(gateway, SAMPLE_ORDER)

    response = await gateway.get(f"{ORDERS}/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert '"total_amount":1250.00' in response.text


async def test_order_status_returns_steps_when_known(gateway: AsyncTestClient[Any]) -> None:
    created = await place_order(gateway, SAMPLE_ORDER)

    response = await gateway.get(f"{ORDERS}/{created['id']}/status")
    status = response.json()

    assert response.status_code == 200
    assert status["id"] == created["id"]
    assert status["status"] == "pending"
    assert status["steps"] == created["steps"]
    assert status["fully_processed"] is False


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/status"), ("GET", "/invoice"), ("POST", "/cancel")],
)
async def test_order_routes_return_404_when_unknown(
    gateway: AsyncTestClient[Any], method: str, suffix: str
) -> None:
    unknown = "ORD-00000000000000000000000000000000"
    body = {"reason": "changed my mind"} if method == "POST" else None

    response = await gateway.request(method, f"{ORDERS}/{unknown}{suffix}", json=body)

    assert response.status_code == 404
    assert unknown in response.json()["detail"]
    assert "not found" in response.json()["detail"]


async def test_list_orders_counts_total_when_paged(gateway: AsyncTestClient[Any]) -> None:
    created = await place_order(gateway, SAMPLE_ORDER)

    response = await gateway.get(ORDERS, params={"page": 1, "limit": 10})
    page = response.json()

    assert response.status_code == 200
    assert page["total"] > 0
    assert created["id"] in [order["id"] for order in page["orders"]]
    assert len(page["orders"]) <= 10


async def test_cursor_pages_list_each_order_once(
    gateway: AsyncTestClient[Any], sessions: Sessions
) -> None:
    customer = "cust-pages"
    created: list[str] = []
    for _ in range(5):
        batch = await asyncio.gather(*(place_order(gateway, order_for(customer)) for _ in range(5)))
        created.extend(order["id"] for order in batch)
    # Ten orders share one timestamp, so only the id orders them within it.
    shared_time = datetime.now(UTC).replace(microsecond=123456)
    async with sessions.begin() as session:
        await session.execute(
            update(Order).where(Order.id.in_(created[5:15])).values(created_at=shared_time)
        )
    async with sessions() as session:
        rows = (await session.execute(select(Order.created_at, Order.id))).all()
    expected = [order_id for _, order_id in sorted(rows, reverse=True) if order_id in created]

    seen: list[str] = []
    page_sizes: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"customer_id": customer, "limit": 10}
        if cursor:
            params["cursor"] = cursor
        response = await gateway.get(ORDERS, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == 25
        page_sizes.append(len(page["orders"]))
        seen.extend(order["id"] for order in page["orders"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(created) == 25
    assert seen == expected
    assert len(set(seen)) == 25
    assert page_sizes == [10, 10, 5]


async def test_list_filters_by_customer_and_status(
    gateway: AsyncTestClient[Any],
) -> None:
    first = await place_order(gateway, order_for("cust-filter"))
    second = await place_order(gateway, order_for("cust-filter"))
    other = await place_order(gateway, order_for("cust-other"))
    cancelled = await gateway.post(
        f"{ORDERS}/{first['id']}/cancel", json={"reason": "ordered twice"}
    )
    assert cancelled.status_code == 200

    by_customer = (await gateway.get(ORDERS, params={"customer_id": "cust-filter"})).json()
    pending = (
        await gateway.get(ORDERS, params={"customer_id": "cust-filter", "status": "pending"})
    ).json()
    by_status = (await gateway.get(ORDERS, params={"status": "cancelled"})).json()

    assert {order["id"] for order in by_customer["orders"]} == {first["id"], second["id"]}
    assert by_customer["total"] == 2
    assert [order["id"] for order in pending["orders"]] == [second["id"]]
    assert pending["total"] == 1
    assert [order["id"] for order in by_status["orders"]] == [first["id"]]
    assert other["id"] not in {order["id"] for order in by_status["orders"]}


@pytest.mark.parametrize(
    ("name", "value"),
    [("limit", "0"), ("limit", "101"), ("limit", "x"), ("page", "0"), ("page", "y")],
)
async def test_list_orders_rejects_invalid_parameter(
    gateway: AsyncTestClient[Any], name: str, value: str
) -> None:
    response = await gateway.get(ORDERS, params={name: value})

    assert response.status_code == 400
    assert error_fields(response) == [name]


async def test_list_orders_rejects_unknown_status(gateway: AsyncTestClient[Any]) -> None:
    response = await gateway.get(ORDERS, params={"status": "lost"})

    assert response.status_code == 400
    assert error_fields(response) == ["status"]
    assert "'lost'" in response.json()["errors"][0]["message"]


async def test_list_orders_rejects_garbage_cursor(gateway: AsyncTestClient[Any]) -> None:
    response = await gateway.get(ORDERS, params={"cursor": "not-a-cursor!"})

    assert response.status_code == 400
    assert error_fields(response) == ["cursor"]


async def test_list_orders_rejects_overflowing_cursor_time(
    gateway: AsyncTestClient[Any],
) -> None:
    cursor = "MDAwMS0wMS0wMVQwMDowMDowMCswNTowMHxPUkQtMQ"  # "0001-01-01T00:00:00+05:00|ORD-1"

    response = await gateway.get(ORDERS, params={"cursor": cursor})

    assert response.status_code == 400
    assert error_fields(response) == ["cursor"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"{ORDERS}/ORD-%00", 404),
        ("GET", f"{ORDERS}/ORD-%00/status", 404),
        ("GET", f"{ORDERS}/ORD-%00/invoice", 404),
        ("POST", f"{ORDERS}/ORD-%00/cancel", 404),
        ("GET", f"{ORDERS}?customer_id=cust%00", 400),
    ],
)
async def test_order_routes_reject_nul_in_url(
    gateway: AsyncTestClient[Any], method: str, path: str, status: int
) -> None:
    body = {"reason": "changed my mind"} if method == "POST" else None

    response = await gateway.request(method, path, json=body)

    assert response.status_code == status


@pytest.mark.parametrize("reason", ["", "abcd", "    ", "\x00\x00\x00\x00\x00"])
async def test_cancel_returns_400_when_reason_invalid(
    gateway: AsyncTestClient[Any], reason: str
) -> None:
    order = await place_order(gateway, SAMPLE_ORDER)

    response = await gateway.post(f"{ORDERS}/{order['id']}/cancel", json={"reason": reason})

    assert response.status_code == 400
    assert error_fields(response) == ["reason"]


async def test_cancel_rejects_body_when_not_json(gateway: AsyncTestClient[Any]) -> None:
    order = await place_order(gateway, SAMPLE_ORDER)

    response = await gateway.post(f"{ORDERS}/{order['id']}/cancel", content=b"reason=late")

    assert response.status_code == 400
    assert error_fields(response) == ["body"]


async def test_cancel_marks_order_cancelled_when_pending(
    gateway: AsyncTestClient[Any], sessions: Sessions
) -> None:
    order = await place_order(gateway, SAMPLE_ORDER)

    response = await gateway.post(
        f"{ORDERS}/{order['id']}/cancel", json={"reason": "found it cheaper"}
    )
    cancelled = response.json()
    rows = await outbox_rows(sessions, order["id"])

    assert response.status_code == 200
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_reason"] == "found it cheaper"
    assert cancelled["steps"]["warehouse"]["state"] == "skipped"
    assert [row.event_type for row in rows] == ["OrderCreated", "OrderCancelled"]
    assert json.loads(rows[1].payload)["reason"] == "found it cheaper"
    assert (await gateway.get(f"{ORDERS}/{order['id']}")).json()["status"] == "cancelled"


async def test_cancel_returns_409_when_already_cancelled(
    gateway: AsyncTestClient[Any], sessions: Sessions
) -> None:
    order = await place_order(gateway, SAMPLE_ORDER)
    path = f"{ORDERS}/{order['id']}/cancel"
    first = await gateway.post(path, json={"reason": "found it cheaper"})

    second = await gateway.post(path, json={"reason": "second thoughts"})

    assert first.status_code == 200
    assert second.status_code == 409
    assert "'cancelled'" in second.json()["detail"]
    assert len(await outbox_rows(sessions, order["id"])) == 2


async def test_invoice_returns_404_when_not_generated(gateway: AsyncTestClient[Any]) -> None:
    order = await place_order(gateway, SAMPLE_ORDER)

    response = await gateway.get(f"{ORDERS}/{order['id']}/invoice")

    assert response.status_code == 404
    assert "invoice" in response.json()["detail"]
    assert "not generated yet" in response.json()["detail"]


async def test_health_returns_200_when_process_up(gateway: AsyncTestClient[Any]) -> None:
    response = await gateway.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_returns_200_when_dependencies_up(gateway: AsyncTestClient[Any]) -> None:
    response = await gateway.get("/ready")

    assert response.status_code == 200
    assert response.json()["postgresql"] == "ok"
    assert response.json()["redis"] == "ok"


async def test_metrics_lists_request_counter_when_scraped(gateway: AsyncTestClient[Any]) -> None:
    await gateway.get("/health")

    response = await gateway.get("/metrics")

    assert response.status_code == 200
    assert "orderflow_http_requests_total" in response.text
    assert 'route="/health"' in response.text


async def test_schema_describes_order_routes_when_fetched(gateway: AsyncTestClient[Any]) -> None:
    page = await gateway.get("/schema")
    document = await gateway.get("/schema/openapi.json")

    assert page.status_code == 200
    assert document.status_code == 200
    assert ORDERS in document.json()["paths"]
    assert f"{ORDERS}/{{order_id}}/cancel" in document.json()["paths"]


async def test_create_order_rejects_oversized_body(
    gateway: AsyncTestClient[Any], settings: Settings, sessions: Sessions
) -> None:
    raw = json.dumps(SAMPLE_ORDER).encode()
    at_limit = raw + b" " * (settings.max_body_bytes - len(raw))
    over_limit = at_limit + b" "

    accepted = await gateway.post(ORDERS, content=at_limit)
    rejected = await gateway.post(ORDERS, content=over_limit)

    assert accepted.status_code == 201
    assert rejected.status_code == 413
    assert await count_orders(sessions) == 1


async def test_idempotency_creates_one_order_under_concurrency(
    gateway: AsyncTestClient[Any], sessions: Sessions
) -> None:
    headers = {"Idempotency-Key": "key-concurrent-1"}

    responses = await asyncio.gather(
        *(gateway.post(ORDERS, json=SAMPLE_ORDER, headers=headers) for _ in range(20))
    )
    ids = {response.json()["id"] for response in responses}
    order_id = next(iter(ids))

    assert [response.status_code for response in responses] == [201] * 20
    assert len(ids) == 1
    assert await count_orders(sessions, Order.idempotency_key == "key-concurrent-1") == 1
    assert await count_orders(sessions) == 1
    assert len(await outbox_rows(sessions, order_id)) == 1
    replayed = [response.headers.get("Idempotent-Replayed") for response in responses]
    assert replayed.count("true") == 19


async def test_idempotency_returns_422_when_body_differs(
    gateway: AsyncTestClient[Any], sessions: Sessions
) -> None:
    headers = {"Idempotency-Key": "key-differs-1"}
    first = await gateway.post(ORDERS, json=SAMPLE_ORDER, headers=headers)

    second = await gateway.post(ORDERS, json=order_for("cust-456"), headers=headers)

    assert first.status_code == 201
    assert second.status_code == 422
    assert "key-differs-1" in second.json()["detail"]
    assert await count_orders(sessions) == 1


async def test_idempotency_replays_when_body_reformatted(
    gateway: AsyncTestClient[Any],
) -> None:
    headers = {"Idempotency-Key": "key-reformatted-1"}
    compact = json.dumps(SAMPLE_ORDER, separators=(",", ":")).encode()
    spaced = json.dumps(SAMPLE_ORDER, indent=2).replace("1200.0", "1200.00").encode()

    first = await gateway.post(ORDERS, content=compact, headers=headers)
    second = await gateway.post(ORDERS, content=spaced, headers=headers)

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json()["id"] == first.json()["id"]


async def test_idempotency_rejects_key_when_too_long(gateway: AsyncTestClient[Any]) -> None:
    response = await gateway.post(ORDERS, json=SAMPLE_ORDER, headers={"Idempotency-Key": "k" * 256})

    assert response.status_code == 400
    assert error_fields(response) == ["Idempotency-Key"]


async def test_create_order_sheds_load_when_backlogged(
    settings: Settings, sessions: Sessions, redis: Redis
) -> None:
    stream = f"{settings.stream_prefix}orders.critical"
    await redis.xgroup_create(stream, "payments", id="0", mkstream=True)
    for number in range(3):
        await redis.xadd(stream, {"n": str(number)})
    marker = f'orderflow_stream_backlog_entries{{stream="{stream}"}} 3.0'

    async with open_gateway(settings.model_copy(update={"backlog_limit": 1})) as client:
        deadline = time.monotonic() + REFRESH_WAIT_SECONDS
        while marker not in (await client.get("/metrics")).text:
            assert time.monotonic() < deadline, "the backlog monitor never counted the entries"
            await asyncio.sleep(POLL_SECONDS)
        response = await client.post(ORDERS, json=SAMPLE_ORDER)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert stream in response.json()["detail"]
    assert await count_orders(sessions) == 0


async def test_backlog_monitor_stops_when_cancelled_early(
    redis_url: str, stream_prefix: str
) -> None:
    tiers = TierMap(stream_prefix)
    dead_letter_streams = [tiers.dead_letter_stream(tier) for tier in Tier]
    for ticks in range(40):
        client = Redis.from_url(redis_url)
        monitor = BacklogMonitor(client, tiers.all_streams(), 10, dead_letter_streams)
        monitor.start()
        task = monitor._task
        assert task is not None
        for _ in range(ticks):
            await asyncio.sleep(0)
        stopping = asyncio.create_task(monitor.stop())
        finished, _ = await asyncio.wait({stopping}, timeout=1.0)
        if not finished:
            # Clean up: a second cancel reaches the monitor in its sleep.
            task.cancel()
            await asyncio.wait({stopping}, timeout=2.0)
        await client.aclose()
        assert finished, f"stop() did not return when cancelled after {ticks} loop ticks"


def json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=10**20, max_value=10**40)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=50)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=10,
    )


FUZZED_PATHS = [
    "customer_id",
    "customer_email",
    "items",
    "items.0",
    "items.0.quantity",
    "items.0.unit_price",
    "items.0.product_name",
    "shipping_address",
    "shipping_address.postal_code",
    "payment_method",
    "notes",
]


def set_path(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    parts: list[Any] = [int(part) if part.isdigit() else part for part in path.split(".")]
    node: Any = changed
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return changed


@pytest.fixture
def sync_gateway(settings: Settings, sessions: Sessions, redis: Redis) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(settings)) as client:
        yield client


FUZZ_SETTINGS = hypothesis_settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(300)
def test_post_never_500_for_any_json(sync_gateway: TestClient[Any]) -> None:
    @FUZZ_SETTINGS
    @given(body=json_values())
    def post_body(body: Any) -> None:
        response = sync_gateway.post(ORDERS, content=json.dumps(body).encode())
        assert response.status_code < 500, response.text
        assert response.status_code in (201, 400), response.text

    post_body()


@pytest.mark.timeout(300)
def test_post_never_500_for_fuzzed_field(sync_gateway: TestClient[Any]) -> None:
    @FUZZ_SETTINGS
    @given(path=st.sampled_from(FUZZED_PATHS), value=json_values())
    @example(path="items.0.unit_price", value=10**30)
    def post_changed_order(path: str, value: Any) -> None:
        body = set_path(SAMPLE_ORDER, path, value)
        response = sync_gateway.post(ORDERS, content=json.dumps(body).encode())
        assert response.status_code < 500, response.text
        assert response.status_code in (201, 400), response.text

    post_changed_order()


JSON_NUMBER = r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?"


@pytest.mark.timeout(300)
def test_post_never_500_for_fuzzed_number(sync_gateway: TestClient[Any]) -> None:
    @FUZZ_SETTINGS
    @given(
        path=st.sampled_from(["items.0.unit_price", "items.0.quantity"]),
        literal=st.from_regex(JSON_NUMBER, fullmatch=True),
    )
    @example(path="items.0.unit_price", literal="1e400")
    def post_number(path: str, literal: str) -> None:
        text = json.dumps(set_path(SAMPLE_ORDER, path, "NUMBER")).replace('"NUMBER"', literal)
        response = sync_gateway.post(ORDERS, content=text.encode())
        assert response.status_code < 500, f"{literal}: {response.text}"
        assert response.status_code in (201, 400), response.text

    post_number()


async def test_idempotent_replay_answers_while_shedding(
    settings: Settings, sessions: Sessions, redis: Redis
) -> None:
    body = order_for("replay-while-shedding")
    headers = {"Idempotency-Key": "replay-while-shedding-key"}

    async with open_gateway(settings) as client:
        first = await client.post(ORDERS, json=body, headers=headers)
        # Any backlog, even an empty one, is now above the limit.
        client.app.state.backlog.limit = -1
        replay = await client.post(ORDERS, json=body, headers=headers)
        fresh = await client.post(ORDERS, json=order_for("new-while-shedding"))

    assert first.status_code == 201
    assert replay.status_code == 201
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert fresh.status_code == 503
    assert "Retry-After" in fresh.headers
