"""The order request body, its validation rules, and parsing that turns every bad body into
InvalidInput (a 400), never an unhandled error."""

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

from shared.errors import InvalidInput

MAX_ITEMS = 100
MAX_QUANTITY = 10_000
# NUMERIC(12, 2) stores at most ten digits before the point.
MAX_AMOUNT = Decimal("9999999999.99")
MAX_UNIT_PRICE = Decimal("99999999.99")
CENT = Decimal("0.01")
ERROR_VALUE_CHARS = 80

ModelT = TypeVar("ModelT", bound=BaseModel)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = re.compile(rf"^[^@\s\x00]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")


def _no_control_characters(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        raise ValueError("must not contain control characters such as line breaks or tabs")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _valid_email(value: str) -> str:
    if len(value) > 254 or not EMAIL_PATTERN.fullmatch(value):
        raise ValueError("must be an e-mail address such as name@example.com")
    return value


def _money(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value <= 0:
        raise ValueError("must be greater than 0")
    # Before quantize, which raises InvalidOperation on magnitudes such as 1e400.
    if value > MAX_UNIT_PRICE:
        raise ValueError(f"must be at most {MAX_UNIT_PRICE}")
    if value != value.quantize(CENT):
        raise ValueError("must have at most two decimal places")
    return value.quantize(CENT)


_CheckedText = AfterValidator(_no_control_characters)
Text20 = Annotated[str, Field(min_length=1, max_length=20), _CheckedText]
Text100 = Annotated[str, Field(min_length=1, max_length=100), _CheckedText]
Text200 = Annotated[str, Field(min_length=1, max_length=200), _CheckedText]


class PaymentMethod(StrEnum):
    CREDIT_CARD = "credit_card"
    DEBIT_CARD = "debit_card"
    BANK_TRANSFER = "bank_transfer"


class ItemRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    product_id: Text100
    product_name: Text200
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]
    unit_price: Annotated[Decimal, AfterValidator(_money)]

    @field_validator("unit_price", mode="before")
    @classmethod
    def _reject_non_numbers(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
            # pydantic reports ValueError as a field error; TypeError would escape it.
            raise ValueError("must be a number such as 19.99")  # noqa: TRY004
        return value


class AddressRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    street: Text200
    city: Text100
    state: Text100
    postal_code: Text20
    country: Text100


def _optional_text(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _sum_lines(items: list[ItemRequest]) -> Decimal:
    return sum((item.unit_price * item.quantity for item in items), Decimal("0.00"))


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    customer_id: Text100
    customer_email: Annotated[str, Field(max_length=254), AfterValidator(_valid_email)]
    items: Annotated[list[ItemRequest], Field(min_length=1, max_length=MAX_ITEMS)]
    shipping_address: AddressRequest
    payment_method: PaymentMethod
    notes: Annotated[str | None, Field(max_length=1000), AfterValidator(_optional_text)] = None

    @field_validator("items")
    @classmethod
    def _total_fits(cls, items: list[ItemRequest]) -> list[ItemRequest]:
        total = _sum_lines(items)
        if total > MAX_AMOUNT:
            raise ValueError(f"order total {total} must be at most {MAX_AMOUNT}")
        return items

    def total_amount(self) -> Decimal:
        return _sum_lines(self.items)

    def fingerprint(self) -> str:
        """Return a hash of the validated body, the same for semantically equal bodies."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class CancelRequest(BaseModel):
    reason: Annotated[str, Field(min_length=5, max_length=500), _CheckedText]


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "body"


def _shown_value(value: object) -> object:
    if isinstance(value, str):
        return value[:ERROR_VALUE_CHARS]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return type(value).__name__


def problems_from(exc: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for error in exc.errors():
        field = _field_path(tuple(error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] != "missing":
            message = f"{message} (got {_shown_value(error.get('input'))!r})"
        problems.setdefault(field, message)
    return problems


def parse_json_body(raw: bytes) -> Any:
    """Decode a JSON body keeping numbers exact: decimals stay Decimal, not float."""
    if not raw.strip():
        raise InvalidInput({"body": "request body is empty; send a JSON object"})
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, InvalidOperation) as exc:
        raise InvalidInput({"body": f"request body is not valid JSON: {exc}"}) from exc
    except RecursionError as exc:
        raise InvalidInput({"body": "request body nests arrays or objects too deeply"}) from exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def validate_model(model: type[ModelT], data: Any) -> ModelT:
    if not isinstance(data, dict):
        raise InvalidInput({"body": f"expected a JSON object, got {type(data).__name__}"})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(problems_from(exc)) from exc
