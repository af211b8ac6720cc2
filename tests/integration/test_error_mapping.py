"""The gateway's mapping of errors to HTTP responses, and 503s when PostgreSQL is down."""

import contextlib
import inspect
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from litestar.testing import AsyncTestClient
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

import shared.errors
from services.gateway.app import create_app
from services.gateway.errors import (
    DEPENDENCY_ERRORS,
    DEPENDENCY_RETRY_AFTER_SECONDS,
    STATUS_BY_ERROR,
    dependency_error_response,
    orderflow_error_response,
)
from shared.errors import (
    DependencyUnavailable,
    DocumentNotReady,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    OrderflowError,
    OrderNotFound,
    Overloaded,
)
from shared.settings import Settings

pytestmark = pytest.mark.timeout(60)

# The handlers ignore the request, so the unit cases pass none.
NO_REQUEST: Any = None
ORDERS = "/api/v1/orders"
POLL_SECONDS = 0.05
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
}

# One example of each mapped error with the status the HTTP contract gives it.
EXPECTED_STATUS: list[tuple[OrderflowError, int]] = [
    (InvalidInput({"items.0.quantity": "must be at least 1 (got 0)"}), 400),
    (OrderNotFound("ORD-unknown"), 404),
    (DocumentNotReady("ORD-1", "invoice"), 404),
    (InvalidTransition("ORD-1", "shipped", "cancel"), 409),
    (IdempotencyConflict("key-1"), 422),
    (Overloaded("orders.critical", 500, 100, 7), 503),
    (DependencyUnavailable("postgresql", "connection refused"), 503),
]

# An id shaped like the ones the API issues, so the request reaches the database.
WELL_FORMED_ID = "ORD-" + "0" * 32


def shared_error_classes() -> list[type[OrderflowError]]:
    return [
        value
        for _, value in inspect.getmembers(shared.errors, inspect.isclass)
        if issubclass(value, OrderflowError) and value is not OrderflowError
    ]


def test_expected_status_table_covers_every_mapping() -> None:
    assert {type(error) for error, _ in EXPECTED_STATUS} == set(STATUS_BY_ERROR)


@pytest.mark.parametrize(
    ("error", "status"), EXPECTED_STATUS, ids=[type(error).__name__ for error, _ in EXPECTED_STATUS]
)
def test_error_response_has_contract_status(error: OrderflowError, status: int) -> None:
    response = orderflow_error_response(NO_REQUEST, error)

    assert response.status_code == status
    assert response.content["status_code"] == status
    assert response.content["detail"] == str(error)


def test_invalid_input_lists_each_field() -> None:
    error = InvalidInput({"items.0.quantity": "too small (got 0)", "customer_email": "invalid"})

    response = orderflow_error_response(NO_REQUEST, error)

    assert response.status_code == 400
    assert response.content["errors"] == [
        {"field": "items.0.quantity", "message": "too small (got 0)"},
        {"field": "customer_email", "message": "invalid"},
    ]
    assert response.content["detail"] == "invalid input in customer_email, items.0.quantity"


@pytest.mark.parametrize("error_class", shared_error_classes(), ids=lambda kind: kind.__name__)
def test_every_orderflow_error_mapped_when_defined(error_class: type[OrderflowError]) -> None:
    assert any(issubclass(error_class, kind) for kind in STATUS_BY_ERROR)


def test_every_error_class_has_status_case() -> None:
    assert set(shared_error_classes()) <= {type(error) for error, _ in EXPECTED_STATUS}


def test_base_error_maps_to_500() -> None:
    response = orderflow_error_response(NO_REQUEST, OrderflowError("a bug"))

    assert response.status_code == 500


def test_overloaded_sets_retry_after_when_mapped() -> None:
    response = orderflow_error_response(NO_REQUEST, Overloaded("orders.high", 9, 1, 7))

    assert response.headers["Retry-After"] == "7"


def test_dependency_unavailable_sets_retry_after() -> None:
    error = DependencyUnavailable("redis", "connection refused")

    response = orderflow_error_response(NO_REQUEST, error)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(DEPENDENCY_RETRY_AFTER_SECONDS)
    assert "redis is unavailable" in response.content["detail"]


@pytest.mark.parametrize(
    ("error", "status"),
    [(error, status) for error, status in EXPECTED_STATUS if status < 500],
    ids=[type(error).__name__ for error, status in EXPECTED_STATUS if status < 500],
)
def test_client_errors_omit_retry_after(error: OrderflowError, status: int) -> None:
    response = orderflow_error_response(NO_REQUEST, error)

    assert response.status_code == status
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("error", "dependency"),
    [
        (OperationalError("SELECT 1", {}, OSError("refused")), "postgresql"),
        (InterfaceError("SELECT 1", {}, OSError("closed")), "postgresql"),
        (PoolTimeoutError("pool exhausted"), "postgresql"),
        (RedisError("refused"), "redis"),
        (ConnectionRefusedError(111, "refused"), "postgresql"),
        (TimeoutError(), "postgresql"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_dependency_errors_return_503_when_raised(error: Exception, dependency: str) -> None:
    assert isinstance(error, DEPENDENCY_ERRORS)
    with structlog.testing.capture_logs() as logs:
        response = dependency_error_response(NO_REQUEST, error)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(DEPENDENCY_RETRY_AFTER_SECONDS)
    assert response.content["detail"].startswith(f"{dependency} is unavailable")
    assert [log["dependency"] for log in logs] == [dependency]


@pytest.fixture(autouse=True)
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    # Rendering an error's traceback with its local variables takes seconds per 500 response.
    with structlog.testing.capture_logs() as logs:
        yield logs


@contextlib.asynccontextmanager
async def gateway_with_database(
    settings: Settings, database_url: str
) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(settings.model_copy(update={"database_url": database_url}))
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", ORDERS),
        ("GET", ORDERS),
        ("GET", f"{ORDERS}/{WELL_FORMED_ID}"),
        ("GET", f"{ORDERS}/{WELL_FORMED_ID}/status"),
        ("POST", f"{ORDERS}/{WELL_FORMED_ID}/cancel"),
    ],
)
async def test_routes_return_503_when_postgresql_refuses(
    settings: Settings, captured_logs: list[MutableMapping[str, Any]], method: str, path: str
) -> None:
    # Nothing listens on port 1, so every connection attempt is refused at once.
    closed_port_url = "postgresql+asyncpg://postgres@127.0.0.1:1/orderflow"
    body = SAMPLE_ORDER if path == ORDERS else {"reason": "changed my mind"}

    async with gateway_with_database(settings, closed_port_url) as client:
        response = await client.request(method, path, json=body if method == "POST" else None)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(DEPENDENCY_RETRY_AFTER_SECONDS)
    assert response.json()["detail"].startswith("postgresql is unavailable")
    assert "unexpected error" not in [log["event"] for log in captured_logs]


async def test_ready_returns_503_when_postgresql_refuses(settings: Settings) -> None:
    closed_port_url = "postgresql+asyncpg://postgres@127.0.0.1:1/orderflow"

    async with gateway_with_database(settings, closed_port_url) as client:
        response = await client.get("/ready")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["postgresql"].startswith("failed")
    assert response.json()["redis"] == "ok"


async def test_order_post_503_when_socket_missing(settings: Settings, tmp_path: Path) -> None:
    missing_socket_url = f"postgresql+asyncpg://postgres@/orderflow?host={tmp_path}/missing"

    async with gateway_with_database(settings, missing_socket_url) as client:
        response = await client.post(ORDERS, json=SAMPLE_ORDER)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(DEPENDENCY_RETRY_AFTER_SECONDS)
