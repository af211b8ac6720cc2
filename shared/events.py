"""Versioned event schemas and their encoding as stream entries.

An entry's fields are `type`, `event_id`, `order_id` and `payload` (the whole event as
JSON), plus one `h-<name>` field per message header, such as the W3C `traceparent`.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from shared.ids import event_id_for
from shared.tiers import WorkType

HEADER_FIELD_PREFIX = "h-"


class EventDecodeError(ValueError):
    """A stream entry is not a valid event; retrying cannot fix it."""


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    product_id: str
    product_name: str
    quantity: int
    unit_price: Decimal


class OrderSnapshot(BaseModel):
    """The order data every service needs, carried inside `OrderCreated`."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    customer_email: str
    payment_method: str
    shipping_address: dict[str, str]
    items: tuple[OrderLine, ...]
    total_amount: Decimal
    created_at: datetime


class BaseEvent(BaseModel):
    """Common fields of every event.

    Each event type happens at most once per order, so its id is derived from the type and
    the order id. Publishing it again, as the reconciler does after Redis lost its streams,
    gives the same id, and every handler recognises it as already handled.
    """

    model_config = ConfigDict(frozen=True)

    # Work types that react to this event type; the relay routes by it.
    consumers: ClassVar[frozenset[WorkType]] = frozenset()

    event_id: str = ""
    version: int = 1
    order_id: str
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _derive_event_id(self) -> "BaseEvent":
        if not self.event_id:
            event_type = str(getattr(self, "type", type(self).__name__))
            object.__setattr__(self, "event_id", event_id_for(event_type, self.order_id))
        return self


class OrderCreated(BaseEvent):
    consumers: ClassVar[frozenset[WorkType]] = frozenset(
        {
            WorkType.PAYMENT,
            WorkType.INVENTORY,
            WorkType.EMAIL,
            WorkType.INVOICE,
            WorkType.ANALYTICS,
        }
    )

    type: Literal["OrderCreated"] = "OrderCreated"
    order: OrderSnapshot


class OrderReadyToShip(BaseEvent):
    """The order is paid and its stock reserved."""

    consumers: ClassVar[frozenset[WorkType]] = frozenset({WorkType.WAREHOUSE})

    type: Literal["OrderReadyToShip"] = "OrderReadyToShip"


class PaymentFailed(BaseEvent):
    consumers: ClassVar[frozenset[WorkType]] = frozenset({WorkType.INVENTORY, WorkType.EMAIL})

    type: Literal["PaymentFailed"] = "PaymentFailed"
    reason: str


class OrderCancelled(BaseEvent):
    """The order was cancelled: refund a captured payment and release reserved stock."""

    consumers: ClassVar[frozenset[WorkType]] = frozenset({WorkType.PAYMENT, WorkType.INVENTORY})

    type: Literal["OrderCancelled"] = "OrderCancelled"
    reason: str


Event = Annotated[
    OrderCreated | OrderReadyToShip | PaymentFailed | OrderCancelled,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: Mapping[str, type[BaseEvent]] = {
    "OrderCreated": OrderCreated,
    "OrderReadyToShip": OrderReadyToShip,
    "PaymentFailed": PaymentFailed,
    "OrderCancelled": OrderCancelled,
}


def consumers_of(event_type: str) -> frozenset[WorkType]:
    event_class = EVENT_TYPES.get(event_type)
    return event_class.consumers if event_class else frozenset()


def parse_event(payload: str | bytes) -> Event:
    try:
        return _EVENT_ADAPTER.validate_json(payload)
    except ValidationError as exc:
        raise EventDecodeError(f"entry payload is not a valid event: {exc}") from exc


def encode_entry(
    event_type: str, event_id: str, order_id: str, payload: str, headers: Mapping[str, str]
) -> dict[str, str]:
    """Build the fields of one stream entry from an event's JSON and its headers."""
    fields = {"type": event_type, "event_id": event_id, "order_id": order_id, "payload": payload}
    for name, value in headers.items():
        fields[HEADER_FIELD_PREFIX + name] = value
    return fields


def decode_entry(fields: Mapping[bytes, bytes]) -> tuple[Event, dict[str, str]]:
    """Return the event in a stream entry and its headers; raise EventDecodeError if invalid."""
    payload = fields.get(b"payload")
    if payload is None:
        raise EventDecodeError(f"entry has no payload field; fields are {sorted(fields)}")
    try:
        headers = {
            key.decode()[len(HEADER_FIELD_PREFIX) :]: value.decode()
            for key, value in fields.items()
            if key.startswith(HEADER_FIELD_PREFIX.encode())
        }
    except UnicodeDecodeError as exc:
        raise EventDecodeError(f"entry has a header that is not UTF-8: {exc}") from exc
    return parse_event(payload), headers


def event_json(event: BaseEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")
