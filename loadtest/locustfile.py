"""Locust load test of the orderflow gateway, with the requests and shapes of loadtest/k6.

Run it headless against a gateway:

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8080

Without --host, BASE_URL or http://127.0.0.1:8080 is used. ORDERFLOW_LOCUST_SHAPE picks
the load shape: basic, stress, spike or soak, or none to use locust's own --users,
--spawn-rate and --run-time. When it is unset, the web UI's --class-picker offers all four
shapes and a headless run uses basic.

Every virtual user repeats one iteration: GET /health, POST /api/v1/orders, GET the new
order, GET /api/v1/orders?page=1&limit=10, then a one-second pause. A 429 or 503 response
means that the gateway shed the request. It is reported as a success under the request
name plus " [shed]", not as a failure, and the user then also waits for the delay in its
Retry-After header.
"""

import itertools
import os
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, NotRequired, TypedDict, cast
from urllib.parse import quote

from locust import HttpUser, LoadTestShape, task
from locust.clients import ResponseContextManager

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
SHAPE_ENV_VAR = "ORDERFLOW_LOCUST_SHAPE"
NO_SHAPE = "none"

# Pause between iterations of one user, as in the k6 scripts.
THINK_TIME_SECONDS = 1.0

SHED_STATUSES = frozenset({429, 503})
SHED_NAME_SUFFIX = " [shed]"
# Used when Retry-After is missing or unreadable.
DEFAULT_RETRY_DELAY_SECONDS = 1.0
# Upper bound on one wait, so a wrong header cannot stall a user for the whole run.
MAX_RETRY_DELAY_SECONDS = 10.0

PRODUCT_COUNT = 100
QUANTITY_RANGE = (1, 5)
UNIT_PRICE_DOLLARS_RANGE = (10, 1009)
PAYMENT_METHODS = ("credit_card", "debit_card", "bank_transfer")
CUSTOMER_EMAIL_DOMAIN = "loadtest.example.com"
ORDER_ID_PREFIX = "ORD-"

# Request names group the statistics: /api/v1/orders/{id} is one row, not one per id.
HEALTH = "/health"
CREATE_ORDER = "/api/v1/orders"
GET_ORDER = "/api/v1/orders/{id}"
LIST_ORDERS = "/api/v1/orders?page=1&limit=10"


class OrderItem(TypedDict):
    product_id: str
    product_name: str
    quantity: int
    unit_price: int


class ShippingAddress(TypedDict):
    street: str
    city: str
    state: str
    postal_code: str
    country: str


class OrderBody(TypedDict):
    customer_id: str
    customer_email: str
    items: list[OrderItem]
    shipping_address: ShippingAddress
    payment_method: str
    notes: NotRequired[str]


@dataclass(frozen=True)
class Customer:
    id: str
    email: str


SHIPPING_ADDRESSES: tuple[ShippingAddress, ...] = tuple(
    ShippingAddress(street=street, city=city, state=state, postal_code=postal_code, country="USA")
    for street, city, state, postal_code in (
        ("123 Main St", "San Francisco", "CA", "94102"),
        ("77 Harbor Rd", "Seattle", "WA", "98101"),
        ("9 Elm Ave", "Austin", "TX", "73301"),
    )
)
DELIVERY_NOTES = "Leave the parcel at the front desk"

# Separates this process's customers from those of other runs and other locust workers.
RUN_ID = uuid.uuid4().hex[:8]
_user_numbers = itertools.count(1)


def customer_for(run_id: str, user_number: int) -> Customer:
    """Return the customer of one virtual user, unique per run and user number."""
    customer_id = f"cust-lt-{run_id}-{user_number}"
    return Customer(id=customer_id, email=f"{customer_id}@{CUSTOMER_EMAIL_DOMAIN}")


def build_order(rng: random.Random, customer: Customer) -> OrderBody:
    """Build an order body with one item line of random product, quantity and price.

    About half of the bodies carry the optional notes, so both forms get exercised.
    """
    product_number = rng.randrange(PRODUCT_COUNT)
    order = OrderBody(
        customer_id=customer.id,
        customer_email=customer.email,
        items=[
            OrderItem(
                product_id=f"prod-{product_number}",
                product_name=f"Load test product {product_number}",
                quantity=rng.randint(*QUANTITY_RANGE),
                unit_price=rng.randint(*UNIT_PRICE_DOLLARS_RANGE),
            )
        ],
        shipping_address=ShippingAddress(**rng.choice(SHIPPING_ADDRESSES)),
        payment_method=rng.choice(PAYMENT_METHODS),
    )
    if rng.random() < 0.5:
        order["notes"] = DELIVERY_NOTES
    return order


def retry_delay_seconds(retry_after: str | None, now: datetime | None = None) -> float:
    """Return how long to wait after a shed response, in [0, MAX_RETRY_DELAY_SECONDS].

    Retry-After contains either a number of seconds or an HTTP date.
    """
    text = (retry_after or "").strip()
    seconds = DEFAULT_RETRY_DELAY_SECONDS
    if re.fullmatch(r"[0-9]+", text):
        seconds = float(text)
    elif text:
        try:
            retry_at = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            retry_at = None
        if retry_at is not None:
            if retry_at.tzinfo is None:
                retry_at = retry_at.replace(tzinfo=UTC)
            seconds = max(0.0, (retry_at - (now or datetime.now(UTC))).total_seconds())
    return min(seconds, MAX_RETRY_DELAY_SECONDS)


def _json_object(response: ResponseContextManager) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


# Each check below returns why a response breaks the contract, or None when it is valid.


def _check_health(response: ResponseContextManager) -> str | None:
    if response.status_code != 200:
        return f"expected status 200, got {response.status_code}"
    return None


def _check_created(response: ResponseContextManager) -> str | None:
    if response.status_code != 201:
        return f"expected status 201, got {response.status_code}"
    order_id = (_json_object(response) or {}).get("id")
    if not isinstance(order_id, str) or not order_id.startswith(ORDER_ID_PREFIX):
        return f"expected an order id starting with {ORDER_ID_PREFIX}, got {order_id!r}"
    return None


def _order_check(order_id: str) -> Callable[[ResponseContextManager], str | None]:
    def check(response: ResponseContextManager) -> str | None:
        if response.status_code != 200:
            return f"expected status 200, got {response.status_code}"
        returned_id = (_json_object(response) or {}).get("id")
        if returned_id != order_id:
            return f"expected order {order_id}, got {returned_id!r}"
        return None

    return check


def _check_page(response: ResponseContextManager) -> str | None:
    if response.status_code != 200:
        return f"expected status 200, got {response.status_code}"
    page = _json_object(response) or {}
    total = page.get("total")
    if not isinstance(total, int) or total <= 0:
        return f"expected total > 0, got {total!r}"
    if not isinstance(page.get("orders"), list):
        return "expected orders to be a list"
    return None


def _report_as_shed(response: ResponseContextManager) -> None:
    # NOTE: locust 2.47 has no public way to rename a request once its response arrives.
    # This relies on request_meta being the dict that locust reports when the with-block
    # exits, which tests/unit/test_loadtest_scripts.py checks.
    request_meta = cast(dict[str, Any], response.request_meta)
    request_meta["name"] = f"{request_meta['name']}{SHED_NAME_SUFFIX}"
    _record_outcome(response, None)


def _record_outcome(response: ResponseContextManager, problem: str | None) -> None:
    """Mark `response` as a success, or as a failure for the reason `problem`."""
    # locust 2.47 leaves success() and failure() unannotated.
    if problem is None:
        response.success()  # type: ignore[no-untyped-call]
    else:
        response.failure(problem)  # type: ignore[no-untyped-call]


class OrderFlowUser(HttpUser):
    """A customer who places an order, reads it back and lists orders, over and over."""

    host = os.environ.get("BASE_URL", DEFAULT_BASE_URL)

    def on_start(self) -> None:
        self.customer = customer_for(RUN_ID, next(_user_numbers))
        self.rng = random.Random()
        self.retry_delay_seconds = 0.0

    def wait_time(self) -> float:
        """Return the think time plus any delay from a shed response's Retry-After."""
        delay = THINK_TIME_SECONDS + self.retry_delay_seconds
        self.retry_delay_seconds = 0.0
        return delay

    @task
    def place_and_read_order(self) -> None:
        """Send the iteration's requests, stopping at the first shed response."""
        if self._send("GET", "/health", HEALTH, _check_health) is None:
            return

        body = build_order(self.rng, self.customer)
        created = self._send("POST", "/api/v1/orders", CREATE_ORDER, _check_created, body)
        if created is None:
            return

        # A failed create leaves nothing to read back, but the list request still runs.
        order_id = None
        if created.status_code == 201:
            order_id = (_json_object(created) or {}).get("id")
        if isinstance(order_id, str):
            path = f"/api/v1/orders/{quote(order_id, safe='')}"
            if self._send("GET", path, GET_ORDER, _order_check(order_id)) is None:
                return
        self._send("GET", "/api/v1/orders?page=1&limit=10", LIST_ORDERS, _check_page)

    def _send(
        self,
        method: str,
        path: str,
        name: str,
        check: Callable[[ResponseContextManager], str | None],
        body: OrderBody | None = None,
    ) -> ResponseContextManager | None:
        """Send one request and report it to locust.

        Return the response, or None when the gateway shed the request.
        """
        response = self.client.request(method, path, name=name, json=body, catch_response=True)
        with response:
            if response.status_code in SHED_STATUSES:
                _report_as_shed(response)
                retry_after = response.headers.get("Retry-After")
                self.retry_delay_seconds = retry_delay_seconds(retry_after)
                return None

            _record_outcome(response, check(response))
        return response


@dataclass(frozen=True)
class Stage:
    """A linear ramp from the previous stage's target (0 for the first) to `target_users`."""

    duration_seconds: float
    target_users: int


# The stages of loadtest/k6/shapes.js in seconds. A unit test checks that both agree.
SHAPE_STAGES: dict[str, tuple[Stage, ...]] = {
    # 4 minutes: 20 users, then 50, then down to 0.
    "basic": (Stage(30, 20), Stage(60, 20), Stage(30, 50), Stage(90, 50), Stage(30, 0)),
    # 10 minutes: steps of 50, 100, 200, 300 and 400 users, held after each ramp.
    "stress": (
        Stage(30, 50),
        Stage(60, 50),
        Stage(30, 100),
        Stage(60, 100),
        Stage(30, 200),
        Stage(60, 200),
        Stage(30, 300),
        Stage(60, 300),
        Stage(30, 400),
        Stage(120, 400),
        Stage(90, 0),
    ),
    # 3 minutes 40 seconds: 10 users, a jump to 200 within 10 seconds, and back to 10.
    "spike": (
        Stage(10, 10),
        Stage(60, 10),
        Stage(10, 200),
        Stage(60, 200),
        Stage(10, 10),
        Stage(60, 10),
        Stage(10, 0),
    ),
    # 30 minutes: 50 users held for 26 minutes between 2-minute ramps.
    "soak": (Stage(120, 50), Stage(1560, 50), Stage(120, 0)),
}

# Lets a hold stage finish a ramp that locust did not complete in time.
MIN_SPAWN_RATE_PER_SECOND = 1.0


def stage_target(stages: tuple[Stage, ...], run_time_seconds: float) -> tuple[int, float] | None:
    """Return the user count and spawn rate for `run_time_seconds`, or None after the stages.

    The count is the current stage's target. The spawn rate reaches it by the end of the
    stage when the stage starts at the previous target, so locust ramps as k6 does.
    """
    previous_users = 0
    stage_end_seconds = 0.0
    for stage in stages:
        stage_end_seconds += stage.duration_seconds
        if run_time_seconds < stage_end_seconds:
            change = abs(stage.target_users - previous_users)
            spawn_rate = max(change / stage.duration_seconds, MIN_SPAWN_RATE_PER_SECOND)
            return stage.target_users, spawn_rate
        previous_users = stage.target_users
    return None


def _selected_shape() -> str | None:
    """Return the shape that ORDERFLOW_LOCUST_SHAPE names, or None when it is unset."""
    value = os.environ.get(SHAPE_ENV_VAR, "").strip().lower()
    if not value:
        return None
    if value != NO_SHAPE and value not in SHAPE_STAGES:
        choices = ", ".join([*SHAPE_STAGES, NO_SHAPE])
        message = f"{SHAPE_ENV_VAR}={value!r} is not a load shape: use one of {choices}"
        raise ValueError(message)
    return value


_SELECTED_SHAPE = _selected_shape()


def _is_offered(shape_name: str) -> bool:
    return _SELECTED_SHAPE in (None, shape_name)


class StagedShape(LoadTestShape):
    """Runs `stages` from the start of the test, then stops the test."""

    abstract = True
    stages: ClassVar[tuple[Stage, ...]] = ()

    def tick(self) -> tuple[int, float] | None:
        return stage_target(self.stages, self.get_run_time())  # type: ignore[no-untyped-call]


# Locust uses the first shape class that is not abstract, so the order below matters:
# basic comes first and is the default.


class BasicShape(StagedShape):
    """4 minutes: 20 users, then 50, then down to 0."""

    abstract = not _is_offered("basic")
    stages = SHAPE_STAGES["basic"]


class StressShape(StagedShape):
    """10 minutes: steps of 50, 100, 200, 300 and 400 users."""

    abstract = not _is_offered("stress")
    stages = SHAPE_STAGES["stress"]


class SpikeShape(StagedShape):
    """3 minutes 40 seconds: 10 users, 200 within 10 seconds, back to 10."""

    abstract = not _is_offered("spike")
    stages = SHAPE_STAGES["spike"]


class SoakShape(StagedShape):
    """30 minutes, mostly at 50 users."""

    abstract = not _is_offered("soak")
    stages = SHAPE_STAGES["soak"]
