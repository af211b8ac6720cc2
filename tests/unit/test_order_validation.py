"""Order body validation: which bodies pass, and the field path and message of each rejection."""

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from services.gateway.schemas import OrderRequest, parse_json_body, validate_model
from shared.errors import InvalidInput

pytestmark = pytest.mark.timeout(30)

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

# Dotted path of every length-limited text field and its maximum length in characters.
TEXT_LIMITS = [
    ("customer_id", 100),
    ("items.0.product_id", 100),
    ("items.0.product_name", 200),
    ("shipping_address.street", 200),
    ("shipping_address.city", 100),
    ("shipping_address.state", 100),
    ("shipping_address.postal_code", 20),
    ("shipping_address.country", 100),
]
REQUIRED_FIELDS = [
    "customer_id",
    "customer_email",
    "items",
    "shipping_address",
    "payment_method",
    "items.0.product_id",
    "items.0.product_name",
    "items.0.quantity",
    "items.0.unit_price",
    "shipping_address.street",
    "shipping_address.city",
    "shipping_address.state",
    "shipping_address.postal_code",
    "shipping_address.country",
]


def _parent(body: dict[str, Any], path: str) -> tuple[Any, str | int]:
    parts: list[str | int] = [int(part) if part.isdigit() else part for part in path.split(".")]
    node: Any = body
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def order_with(path: str, value: Any) -> dict[str, Any]:
    """Return a copy of the sample order with the field at the dotted `path` set to `value`."""
    body = copy.deepcopy(SAMPLE_ORDER)
    parent, key = _parent(body, path)
    parent[key] = value
    return body


def order_without(path: str) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE_ORDER)
    parent, key = _parent(body, path)
    del parent[key]
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def price_literal(literal: str) -> bytes:
    """Return the sample order with the first unit price written as the raw JSON `literal`."""
    text = json.dumps(order_with("items.0.unit_price", "PRICE"))
    return text.replace('"PRICE"', literal).encode()


def validate(raw: bytes) -> OrderRequest:
    return validate_model(OrderRequest, parse_json_body(raw))


def problems_of(raw: bytes) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        validate(raw)
    return caught.value.problems


def line(price: str, quantity: int) -> dict[str, Any]:
    return {"product_id": "p", "product_name": "n", "quantity": quantity, "unit_price": price}


def test_sample_order_totals_1250_when_valid() -> None:
    order = validate(encode(SAMPLE_ORDER))

    assert order.total_amount() == Decimal("1250.00")
    assert str(order.total_amount()) == "1250.00"


def test_order_total_exact_when_summing_cents() -> None:
    raw = json.dumps(order_with("items", ["LINES"])).replace(
        '"LINES"',
        '{"product_id": "a", "product_name": "A", "quantity": 3, "unit_price": 19.99},'
        '{"product_id": "b", "product_name": "B", "quantity": 1, "unit_price": 0.10},'
        '{"product_id": "c", "product_name": "C", "quantity": 1, "unit_price": 0.20}',
    )

    order = validate(raw.encode())

    assert order.total_amount() == Decimal("60.27")
    assert str(order.total_amount()) == "60.27"
    assert all(isinstance(item.unit_price, Decimal) for item in order.items)


def test_order_accepts_limits_when_at_maximum() -> None:
    body = order_with("items", [line("99999999.99", 1)] * 100)
    body["items"][0] = line("0.01", 10_000)

    order = validate(encode(body))

    assert len(order.items) == 100
    assert order.total_amount() == Decimal("99999999.99") * 99 + Decimal("100.00")


def test_order_accepts_total_when_exactly_maximum() -> None:
    # 9,999,999,999.99 is the largest NUMERIC(12, 2) value.
    body = order_with("items", [line("99999999.99", 100), line("0.99", 1)])

    order = validate(encode(body))

    assert order.total_amount() == Decimal("9999999999.99")


@pytest.mark.parametrize(
    ("raw", "field", "shown"),
    [
        pytest.param(price_literal("0"), "items.0.unit_price", "(got 0)", id="price-zero"),
        pytest.param(price_literal("-5.00"), "items.0.unit_price", "-5.00", id="price-negative"),
        pytest.param(price_literal("1.234"), "items.0.unit_price", "1.234", id="price-3-decimals"),
        pytest.param(price_literal("0.001"), "items.0.unit_price", "0.001", id="price-tenth-cent"),
        pytest.param(price_literal("true"), "items.0.unit_price", "True", id="price-bool"),
        pytest.param(price_literal('"abc"'), "items.0.unit_price", "abc", id="price-text"),
        pytest.param(price_literal('"NaN"'), "items.0.unit_price", "NaN", id="price-nan-text"),
        pytest.param(price_literal("null"), "items.0.unit_price", "None", id="price-null"),
        pytest.param(price_literal("[1]"), "items.0.unit_price", "list", id="price-list"),
        pytest.param(
            price_literal("100000000"), "items.0.unit_price", "100000000", id="price-above-max"
        ),
        pytest.param(
            encode(order_with("items.0.quantity", 0)), "items.0.quantity", "(got 0)", id="qty-0"
        ),
        pytest.param(
            encode(order_with("items.0.quantity", 10_001)),
            "items.0.quantity",
            "10001",
            id="qty-10001",
        ),
        pytest.param(
            encode(order_with("items.0.quantity", 1.5)), "items.0.quantity", "1.5", id="qty-1.5"
        ),
        pytest.param(
            encode(order_with("items.0.quantity", "2")), "items.0.quantity", "'2'", id="qty-text"
        ),
        pytest.param(
            encode(order_with("items.0.quantity", True)), "items.0.quantity", "True", id="qty-bool"
        ),
        pytest.param(
            encode(order_with("items.0.quantity", -1)), "items.0.quantity", "-1", id="qty-negative"
        ),
        pytest.param(encode(order_with("items", [])), "items", "not 0", id="items-0"),
        pytest.param(
            encode(order_with("items", [line("1.00", 1)] * 101)),
            "items",
            "not 101",
            id="items-101",
        ),
        pytest.param(encode(order_with("items", {})), "items", "dict", id="items-object"),
        pytest.param(encode(order_with("items", ["x"])), "items.0", "'x'", id="item-text"),
        pytest.param(
            encode(order_with("shipping_address", "here")),
            "shipping_address",
            "'here'",
            id="address-text",
        ),
        pytest.param(
            encode(order_with("payment_method", "cash")), "payment_method", "cash", id="pay-cash"
        ),
        pytest.param(
            encode(order_with("payment_method", "CREDIT_CARD")),
            "payment_method",
            "CREDIT_CARD",
            id="pay-upper-case",
        ),
        pytest.param(
            encode(order_with("customer_id", 123)), "customer_id", "123", id="customer-number"
        ),
        pytest.param(encode(order_with("notes", 5)), "notes", "(got 5)", id="notes-number"),
    ],
)
def test_order_names_bad_field_when_invalid(raw: bytes, field: str, shown: str) -> None:
    problems = problems_of(raw)

    assert list(problems) == [field]
    assert shown in problems[field]


@pytest.mark.parametrize(
    "email",
    [
        "plain",
        "a@b",
        "@example.com",
        "a@@example.com",
        "a b@example.com",
        "a@example..com",
        "a@-example.com",
        "a@example-.com",
        "a@exa_mple.com",
        "a@example",
        " a@example.com",
        "a@example.com ",
        "a\n@example.com",
        "a\x00b@example.com",
        "x" * 65 + "@example.com",
        "",
    ],
)
def test_order_rejects_email_when_malformed(email: str) -> None:
    problems = problems_of(encode(order_with("customer_email", email)))

    assert list(problems) == ["customer_email"]
    assert repr(email[:80]) in problems["customer_email"]


def test_order_accepts_email_of_254_characters() -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 61

    order = validate(encode(order_with("customer_email", email)))

    assert len(email) == 254
    assert order.customer_email == email


def test_order_rejects_email_when_255_characters() -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 62

    problems = problems_of(encode(order_with("customer_email", email)))

    assert len(email) == 255
    assert list(problems) == ["customer_email"]
    assert "254" in problems["customer_email"]


def test_order_rejects_email_when_trailing_newline() -> None:
    problems = problems_of(encode(order_with("customer_email", "a@example.com\n")))

    assert list(problems) == ["customer_email"]


@pytest.mark.parametrize(
    "field",
    [
        "customer_id",
        "items.0.product_id",
        "items.0.product_name",
        "shipping_address.street",
        "shipping_address.city",
        "shipping_address.postal_code",
        "notes",
    ],
)
def test_order_rejects_text_when_nul_character(field: str) -> None:
    problems = problems_of(encode(order_with(field, "Main\x00St")))

    assert list(problems) == [field]
    assert "NUL" in problems[field]
    assert repr("Main\x00St") in problems[field]


@pytest.mark.parametrize("field", [field for field, _ in TEXT_LIMITS])
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_order_rejects_text_when_blank(field: str, blank: str) -> None:
    problems = problems_of(encode(order_with(field, blank)))

    assert list(problems) == [field]
    assert repr(blank) in problems[field]


@pytest.mark.parametrize(("field", "limit"), [*TEXT_LIMITS, ("notes", 1000)])
def test_order_accepts_text_at_length_limit(field: str, limit: int) -> None:
    order = validate(encode(order_with(field, "x" * limit)))

    assert order.total_amount() == Decimal("1250.00")


@pytest.mark.parametrize(("field", "limit"), [*TEXT_LIMITS, ("notes", 1000)])
def test_order_rejects_text_over_length_limit(field: str, limit: int) -> None:
    problems = problems_of(encode(order_with(field, "x" * (limit + 1))))

    assert list(problems) == [field]
    assert f"at most {limit} characters" in problems[field]


def test_order_accepts_notes_when_absent() -> None:
    assert validate(encode(order_with("notes", None))).notes is None
    assert validate(encode(order_without("notes"))).notes is None


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_order_rejects_body_when_field_missing(field: str) -> None:
    problems = problems_of(encode(order_without(field)))

    assert list(problems) == [field]
    assert problems[field] == "Field required"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b" \r\n\t", "empty", id="whitespace"),
        pytest.param(b"customer_id=cust-1", "not valid JSON", id="form-encoded"),
        pytest.param(b'{"customer_id": "cust-1"', "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe\x00", "not valid JSON", id="binary"),
        pytest.param(b"[]", "got list", id="array"),
        pytest.param(encode([SAMPLE_ORDER]), "got list", id="order-in-array"),
        pytest.param(b"null", "got NoneType", id="null"),
        pytest.param(b"42", "got int", id="number"),
        pytest.param(b'"order"', "got str", id="string"),
        pytest.param(price_literal("NaN"), "NaN", id="nan-literal"),
        pytest.param(price_literal("Infinity"), "Infinity", id="infinity-literal"),
        pytest.param(price_literal("-Infinity"), "Infinity", id="minus-infinity-literal"),
    ],
)
def test_order_rejects_body_when_not_object(raw: bytes, message: str) -> None:
    problems = problems_of(raw)

    assert list(problems) == ["body"]
    assert message in problems["body"]


def test_order_rejects_total_above_numeric_maximum() -> None:
    body = order_with("items", [line("99999999.99", 100), line("1.00", 1)])

    problems = problems_of(encode(body))

    assert list(problems) == ["items"]
    assert "at most 9999999999.99" in problems["items"]


def test_total_error_shows_total_when_rejected() -> None:
    body = order_with("items", [line("99999999.99", 100), line("1.00", 1)])

    problems = problems_of(encode(body))

    assert "10000000000.00" in problems["items"]


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param("1e400", id="exponent"),
        pytest.param("1" + "0" * 30, id="30-digit-integer"),
        pytest.param('"1e400"', id="exponent-text"),
    ],
)
def test_order_rejects_price_when_huge_magnitude(literal: str) -> None:
    problems = problems_of(price_literal(literal))

    assert list(problems) == ["items.0.unit_price"]


def test_order_rejects_body_when_nested_too_deeply() -> None:
    raw = b'{"notes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    with pytest.raises(InvalidInput) as raised:
        validate_model(OrderRequest, parse_json_body(raw))

    assert list(raised.value.problems) == ["body"]
    assert "too deeply" in raised.value.problems["body"]
