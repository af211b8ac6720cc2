"""Checks of the load-test scripts: the k6 scripts through node, the locustfile in process.

The locustfile is imported with LOCUST_SKIP_MONKEY_PATCH set, because importing locust
otherwise lets gevent patch sockets and threads for every later test in the session.
"""

import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from requests import Response

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
K6_DIR = REPO_ROOT / "loadtest" / "k6"
NODE_TIMEOUT_SECONDS = 45
SHAPE_ENV_VAR = "ORDERFLOW_LOCUST_SHAPE"
SHAPE_CLASSES = ("BasicShape", "StressShape", "SpikeShape", "SoakShape")

# The order body contract of POST /api/v1/orders as the load clients use it.
PRODUCT_ID = re.compile(r"prod-(0|[1-9][0-9]?)")
PAYMENT_METHODS = {"credit_card", "debit_card", "bank_transfer"}
ORDER_FIELDS = {"customer_id", "customer_email", "items", "shipping_address", "payment_method"}
ITEM_FIELDS = {"product_id", "product_name", "quantity", "unit_price"}
ADDRESS_FIELDS = {"street", "city", "state", "postal_code", "country"}

requires_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH")


def load_locustfile(shape: str | None, module_name: str) -> ModuleType:
    """Import loadtest/locustfile.py as `module_name` with ORDERFLOW_LOCUST_SHAPE=`shape`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOCUST_SKIP_MONKEY_PATCH", "1")
        if shape is None:
            patch.delenv(SHAPE_ENV_VAR, raising=False)
        else:
            patch.setenv(SHAPE_ENV_VAR, shape)
        spec = importlib.util.spec_from_file_location(module_name, LOCUSTFILE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return module


@pytest.fixture(scope="module")
def locustfile() -> Iterator[ModuleType]:
    module = load_locustfile(None, "orderflow_locustfile_default")
    yield module
    sys.modules.pop(module.__name__, None)


def item_problems(item: dict[str, Any]) -> list[str]:
    """Return what is wrong with the single item line of a load-client order."""
    problems = []
    if item.keys() != ITEM_FIELDS:
        problems.append(f"item fields {sorted(item)}")

    if not PRODUCT_ID.fullmatch(str(item.get("product_id"))):
        problems.append(f"product_id {item.get('product_id')!r}")

    quantity = item.get("quantity")
    if type(quantity) is not int or not 1 <= quantity <= 5:
        problems.append(f"quantity {quantity!r}")

    price = item.get("unit_price")
    if type(price) is not int or not 10 <= price <= 1009:
        problems.append(f"unit_price {price!r}")
    return problems


def order_problems(order: dict[str, Any]) -> list[str]:
    """Return what is wrong with `order` under the load clients' contract."""
    problems = []
    missing = ORDER_FIELDS - order.keys()
    if missing:
        problems.append(f"missing {sorted(missing)}")
    unknown = order.keys() - ORDER_FIELDS - {"notes"}
    if unknown:
        problems.append(f"unknown {sorted(unknown)}")

    if "@" not in order.get("customer_email", ""):
        problems.append("invalid customer_email")

    items = order.get("items", [])
    if len(items) == 1:
        problems.extend(item_problems(items[0]))
    else:
        problems.append(f"expected one item line, got {len(items)}")

    address = order.get("shipping_address", {})
    if address.keys() != ADDRESS_FIELDS or not all(address.values()):
        problems.append(f"shipping_address {address!r}")

    if order.get("payment_method") not in PAYMENT_METHODS:
        problems.append(f"payment_method {order.get('payment_method')!r}")
    if "notes" in order and not isinstance(order["notes"], str):
        problems.append("notes not a string")
    return problems


@requires_node
def test_k6_check_passes_when_scripts_valid() -> None:
    result = subprocess.run(
        ["node", str(K6_DIR / "check.mjs")],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
        check=False,
        cwd=REPO_ROOT,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    last_line = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[1-9][0-9]* passed, 0 failed", last_line), last_line


@requires_node
def test_k6_stages_match_locust_when_converted(locustfile: ModuleType) -> None:
    shapes_url = (K6_DIR / "shapes.js").as_uri()
    script = (
        f"import {{ STAGES, durationSeconds }} from '{shapes_url}';"
        "const seconds = Object.fromEntries(Object.entries(STAGES).map(([name, stages]) =>"
        " [name, stages.map((s) => [durationSeconds(s.duration), s.target])]));"
        "console.log(JSON.stringify(seconds));"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    k6_stages = json.loads(result.stdout)
    locust_stages = {
        name: [[stage.duration_seconds, stage.target_users] for stage in stages]
        for name, stages in locustfile.SHAPE_STAGES.items()
    }
    assert k6_stages == locust_stages


@pytest.mark.parametrize(
    ("shape_class", "run_time_seconds", "expected_users"),
    [
        ("BasicShape", 0, 20),
        ("BasicShape", 89.9, 20),
        ("BasicShape", 90, 50),
        ("BasicShape", 209.9, 50),
        ("BasicShape", 210, 0),
        ("StressShape", 0, 50),
        ("StressShape", 90, 100),
        ("StressShape", 180, 200),
        ("StressShape", 270, 300),
        ("StressShape", 360, 400),
        ("StressShape", 509.9, 400),
        ("StressShape", 599.9, 0),
        ("SpikeShape", 0, 10),
        ("SpikeShape", 69.9, 10),
        ("SpikeShape", 70, 200),
        ("SpikeShape", 140, 10),
        ("SpikeShape", 219.9, 0),
        ("SoakShape", 0, 50),
        ("SoakShape", 1679.9, 50),
        ("SoakShape", 1680, 0),
    ],
)
def test_shape_tick_follows_stages_when_running(
    locustfile: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    shape_class: str,
    run_time_seconds: float,
    expected_users: int,
) -> None:
    shape = getattr(locustfile, shape_class)()
    monkeypatch.setattr(shape, "get_run_time", lambda: run_time_seconds)

    tick = shape.tick()

    assert tick is not None
    users, spawn_rate = tick
    assert users == expected_users
    assert spawn_rate >= locustfile.MIN_SPAWN_RATE_PER_SECOND


@pytest.mark.parametrize(
    ("shape_class", "end_seconds"),
    [("BasicShape", 240), ("StressShape", 600), ("SpikeShape", 220), ("SoakShape", 1800)],
)
def test_shape_tick_returns_none_when_stages_end(
    locustfile: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    shape_class: str,
    end_seconds: float,
) -> None:
    shape = getattr(locustfile, shape_class)()
    monkeypatch.setattr(shape, "get_run_time", lambda: end_seconds - 0.1)
    assert shape.tick() is not None

    monkeypatch.setattr(shape, "get_run_time", lambda: end_seconds)
    assert shape.tick() is None

    monkeypatch.setattr(shape, "get_run_time", lambda: end_seconds + 3600)
    assert shape.tick() is None


def test_stage_target_reaches_target_when_stage_ends(locustfile: ModuleType) -> None:
    for name, stages in locustfile.SHAPE_STAGES.items():
        previous_users, start_seconds = 0, 0.0
        for index, stage in enumerate(stages):
            tick = locustfile.stage_target(stages, start_seconds)
            assert tick is not None, f"{name} stage {index}"
            users, spawn_rate = tick
            assert users == stage.target_users, f"{name} stage {index}"
            reachable = spawn_rate * stage.duration_seconds
            assert reachable >= abs(users - previous_users), f"{name} stage {index}"
            previous_users = stage.target_users
            start_seconds += stage.duration_seconds


def test_spike_rate_is_19_when_jumping(locustfile: ModuleType) -> None:
    assert locustfile.stage_target(locustfile.SHAPE_STAGES["spike"], 75) == (200, 19.0)


def test_shape_env_offers_all_when_unset(locustfile: ModuleType) -> None:
    offered = [name for name in SHAPE_CLASSES if not getattr(locustfile, name).abstract]
    assert offered == list(SHAPE_CLASSES)


@pytest.mark.parametrize(
    ("shape", "offered"),
    [
        ("spike", ["SpikeShape"]),
        ("SOAK", ["SoakShape"]),
        ("basic", ["BasicShape"]),
        ("none", []),
    ],
)
def test_shape_env_selects_shape_when_set(shape: str, offered: list[str]) -> None:
    module_name = f"orderflow_locustfile_{shape.lower()}"
    module = load_locustfile(shape, module_name)
    try:
        assert [name for name in SHAPE_CLASSES if not getattr(module, name).abstract] == offered
    finally:
        sys.modules.pop(module_name, None)


def test_shape_env_raises_when_unknown() -> None:
    with pytest.raises(ValueError, match=r"'ramp' is not a load shape: use one of basic"):
        load_locustfile("ramp", "orderflow_locustfile_unknown")
    assert "orderflow_locustfile_unknown" not in sys.modules


def test_build_order_matches_contract_when_seeded(locustfile: ModuleType) -> None:
    rng = random.Random(20240611)
    customer = locustfile.customer_for("check", 1)

    for index in range(1000):
        order = locustfile.build_order(rng, customer)
        assert order_problems(order) == [], f"order {index}: {order}"
        assert json.loads(json.dumps(order)) == order


def test_build_order_covers_ranges_when_repeated(locustfile: ModuleType) -> None:
    rng = random.Random(7)
    customer = locustfile.customer_for("check", 1)

    orders = [locustfile.build_order(rng, customer) for _ in range(2000)]

    items = [order["items"][0] for order in orders]
    assert {item["product_id"] for item in items} == {f"prod-{n}" for n in range(100)}
    assert {item["quantity"] for item in items} == {1, 2, 3, 4, 5}
    assert {order["payment_method"] for order in orders} == PAYMENT_METHODS
    assert any("notes" in order for order in orders)
    assert any("notes" not in order for order in orders)
    assert min(item["unit_price"] for item in items) < 60
    assert max(item["unit_price"] for item in items) > 960


def test_customer_for_differs_when_user_or_run_differs(locustfile: ModuleType) -> None:
    customers = [
        locustfile.customer_for("run1", 1),
        locustfile.customer_for("run1", 2),
        locustfile.customer_for("run2", 1),
    ]

    assert len({customer.id for customer in customers}) == 3
    assert len({customer.email for customer in customers}) == 3
    assert all(customer.email.startswith(f"{customer.id}@") for customer in customers)


@pytest.mark.parametrize(
    ("retry_after", "expected_seconds"),
    [
        (None, 1.0),
        ("", 1.0),
        ("soon", 1.0),
        ("0", 0.0),
        ("3", 3.0),
        ("3600", 10.0),
        ("Tue, 11 Jun 2024 10:00:04 GMT", 4.0),
        ("Tue, 11 Jun 2024 09:59:00 GMT", 0.0),
    ],
)
def test_retry_delay_reads_header_when_shed(
    locustfile: ModuleType, retry_after: str | None, expected_seconds: float
) -> None:
    now = datetime(2024, 6, 11, 10, 0, 0, tzinfo=UTC)
    assert locustfile.retry_delay_seconds(retry_after, now) == expected_seconds


def test_retry_delay_uses_clock_when_now_omitted(locustfile: ModuleType) -> None:
    in_five_seconds = datetime.now(UTC) + timedelta(seconds=5)
    header = format_datetime(in_five_seconds, usegmt=True)

    delay = locustfile.retry_delay_seconds(header)

    assert 3.0 <= delay <= 5.0


class FakeClient:
    """Fake HttpSession that returns a scripted response for each method and request name."""

    def __init__(self, request_event: Any, answers: dict[str, tuple[int, Any, dict[str, str]]]):
        self.request_event = request_event
        self.answers = answers
        self.calls: list[tuple[str, str, str]] = []

    def request(
        self, method: str, path: str, name: str, json: Any = None, catch_response: bool = False
    ) -> Any:
        # Imported here, after the locustfile fixture imported locust without monkey patching.
        from locust.clients import ResponseContextManager  # noqa: PLC0415

        self.calls.append((method, path, name))
        status, body, headers = self.answers[f"{method} {name}"]
        if callable(body):
            body = body(json)
        response = Response()
        response.status_code = status
        response._content = b"" if body is None else _json_bytes(body)
        response.headers.update(headers)
        request_meta = {
            "request_type": method,
            "name": name,
            "response_time": 1.0,
            "response_length": len(response._content),
            "context": {},
            "response": response,
            "exception": None,
            "start_time": 0.0,
            "url": f"http://127.0.0.1:9{path}",
        }
        return ResponseContextManager.wrap_response(
            response, self.request_event, request_meta, catch_response
        )


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body).encode()


def healthy_answers(order_id: str = "ORD-0001") -> dict[str, tuple[int, Any, dict[str, str]]]:
    return {
        "GET /health": (200, {"status": "ok"}, {}),
        "POST /api/v1/orders": (201, lambda body: {**body, "id": order_id}, {}),
        "GET /api/v1/orders/{id}": (200, {"id": order_id}, {}),
        "GET /api/v1/orders?page=1&limit=10": (
            200,
            {"total": 1, "orders": [], "next_cursor": None},
            {},
        ),
    }


@pytest.fixture
def user_with_client(locustfile: ModuleType) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """Yield a started OrderFlowUser and the list its reported requests are appended to."""
    # Imported here, after the locustfile fixture imported locust without monkey patching.
    from locust.env import Environment  # noqa: PLC0415

    environment = Environment(user_classes=[locustfile.OrderFlowUser])
    reported: list[dict[str, Any]] = []
    environment.events.request.add_listener(  # type: ignore[no-untyped-call]
        lambda **event: reported.append(event)
    )
    user = locustfile.OrderFlowUser(environment)
    session = user.client
    user.on_start()
    yield user, reported
    session.close()


def test_user_sends_four_requests_when_gateway_accepts(
    locustfile: ModuleType, user_with_client: tuple[Any, list[dict[str, Any]]]
) -> None:
    user, reported = user_with_client
    user.client = FakeClient(user.environment.events.request, healthy_answers("ORD-0001"))

    user.place_and_read_order()

    assert user.client.calls == [
        ("GET", "/health", "/health"),
        ("POST", "/api/v1/orders", "/api/v1/orders"),
        ("GET", "/api/v1/orders/ORD-0001", "/api/v1/orders/{id}"),
        ("GET", "/api/v1/orders?page=1&limit=10", "/api/v1/orders?page=1&limit=10"),
    ]
    assert [event["exception"] for event in reported] == [None] * 4
    assert user.wait_time() == locustfile.THINK_TIME_SECONDS


def test_user_reports_shed_when_create_returns_503(
    locustfile: ModuleType, user_with_client: tuple[Any, list[dict[str, Any]]]
) -> None:
    user, reported = user_with_client
    answers = healthy_answers()
    answers["POST /api/v1/orders"] = (503, {"detail": "busy"}, {"Retry-After": "2"})
    user.client = FakeClient(user.environment.events.request, answers)

    user.place_and_read_order()

    assert [call[2] for call in user.client.calls] == ["/health", "/api/v1/orders"]
    assert reported[1]["name"] == "/api/v1/orders [shed]"
    assert reported[1]["exception"] is None
    assert user.wait_time() == locustfile.THINK_TIME_SECONDS + 2.0
    assert user.wait_time() == locustfile.THINK_TIME_SECONDS


def test_user_reports_failure_when_order_id_lacks_prefix(
    user_with_client: tuple[Any, list[dict[str, Any]]],
) -> None:
    user, reported = user_with_client
    user.client = FakeClient(user.environment.events.request, healthy_answers("12345"))

    user.place_and_read_order()

    create_event = reported[1]
    assert create_event["name"] == "/api/v1/orders"
    assert "starting with ORD-" in str(create_event["exception"])
    assert [call[2] for call in user.client.calls][-1] == "/api/v1/orders?page=1&limit=10"


def test_user_reports_failure_when_list_total_zero(
    user_with_client: tuple[Any, list[dict[str, Any]]],
) -> None:
    user, reported = user_with_client
    answers = healthy_answers()
    answers["GET /api/v1/orders?page=1&limit=10"] = (200, {"total": 0, "orders": []}, {})
    user.client = FakeClient(user.environment.events.request, answers)

    user.place_and_read_order()

    assert "expected total > 0" in str(reported[-1]["exception"])
