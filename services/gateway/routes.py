"""HTTP routes of the gateway: the order API, analytics, health and metrics."""

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import File
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from services.gateway.backlog import BacklogMonitor
from services.gateway.orders import MAX_PAGE_SIZE, ListQuery, OrderService
from services.gateway.schemas import (
    CancelRequest,
    OrderRequest,
    parse_json_body,
    validate_model,
)
from shared.errors import InvalidInput
from shared.telemetry import current_headers

# Money leaves as JSON numbers with their two decimals (1250.00), as the old clients expect.
_encoder = msgspec.json.Encoder(decimal_format="number")

MAX_IDEMPOTENCY_KEY_CHARS = 255
READY_TIMEOUT_SECONDS = 2.0


def json_response(content: Any, status_code: int = HTTP_200_OK, **headers: str) -> Response[bytes]:
    return Response(
        _encoder.encode(content),
        status_code=status_code,
        media_type="application/json",
        headers=headers or None,
    )


def _orders(state: State) -> OrderService:
    service: OrderService = state.orders
    return service


@post("/api/v1/orders", summary="Place an order", status_code=HTTP_201_CREATED)
async def create_order(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """Validate and store an order; its events are published by the outbox relay.

    A repeated `Idempotency-Key` with the same body returns the stored order; with a
    different body it is rejected with 422.
    """
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        limit = MAX_IDEMPOTENCY_KEY_CHARS
        raise InvalidInput({"Idempotency-Key": f"must be 1 to {limit} characters"})
    order_request = validate_model(OrderRequest, parse_json_body(await request.body()))

    if key is not None and (replay := await _orders(state).find_replay(order_request, key)):
        return json_response(replay.order, HTTP_201_CREATED, **{"Idempotent-Replayed": "true"})
    backlog: BacklogMonitor = state.backlog
    backlog.check()

    created = await _orders(state).create(order_request, key, current_headers())
    extra = {"Idempotent-Replayed": "true"} if created.replayed else {}
    return json_response(created.order, HTTP_201_CREATED, **extra)


@get("/api/v1/orders", summary="List orders, newest first")
async def list_orders(
    state: State,
    customer_id: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE_SIZE)] = 20,
    cursor: str | None = None,
    page: Annotated[int | None, Parameter(ge=1, le=1_000_000)] = None,
) -> Response[bytes]:
    query = ListQuery(customer_id=customer_id, status=status, limit=limit, cursor=cursor, page=page)
    return json_response(await _orders(state).list_page(query))


@get("/api/v1/orders/{order_id:str}", summary="Get an order with its six steps")
async def get_order(state: State, order_id: str) -> Response[bytes]:
    return json_response(await _orders(state).get(order_id))


@get("/api/v1/orders/{order_id:str}/status", summary="Get an order's status and steps")
async def get_order_status(state: State, order_id: str) -> Response[bytes]:
    return json_response(await _orders(state).status(order_id))


@post("/api/v1/orders/{order_id:str}/cancel", summary="Cancel an order that has not shipped")
async def cancel_order(
    request: Request[Any, Any, Any], state: State, order_id: str
) -> Response[bytes]:
    cancel = validate_model(CancelRequest, parse_json_body(await request.body()))
    return json_response(await _orders(state).cancel(order_id, cancel.reason))


@get("/api/v1/orders/{order_id:str}/invoice", summary="Download the invoice PDF")
async def get_invoice(state: State, order_id: str) -> File:
    path = await _orders(state).invoice_file(order_id)
    return File(path=path, filename=path.name, media_type="application/pdf")


@get("/api/v1/analytics/summary", summary="Sales per day and top products")
async def analytics_summary(state: State) -> Response[bytes]:
    return json_response(await _orders(state).analytics_summary())


@get("/health", summary="Liveness: the process answers")
async def health() -> Response[bytes]:
    return json_response({"status": "ok"})


@get("/ready", summary="Readiness: PostgreSQL and Redis answer")
async def ready(state: State) -> Response[bytes]:
    checks = {"postgresql": "ok", "redis": "ok"}
    try:
        async with state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means not ready
        checks["postgresql"] = f"failed: {type(exc).__name__}"
    try:
        await state.redis.ping()
    except Exception as exc:  # any failure means not ready
        checks["redis"] = f"failed: {type(exc).__name__}"
    ok = all(value == "ok" for value in checks.values())
    status = HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE
    headers = {} if ok else {"Retry-After": "5"}
    return json_response({"status": "ready" if ok else "not ready", **checks}, status, **headers)


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    create_order,
    list_orders,
    get_order,
    get_order_status,
    cancel_order,
    get_invoice,
    analytics_summary,
    health,
    ready,
    metrics,
]
