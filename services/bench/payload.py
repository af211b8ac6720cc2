"""Order bodies shaped like the load clients' ones (`loadtest/k6/payload.js`).

One line of `prod-0` to `prod-99`, quantity 1 to 5 and a whole-dollar price of 10 to 1009,
so a benchmark and the k6 scripts put the same work on the system.
"""

import json
import random
from collections.abc import Sequence

from services.bench.client import build_post

PRODUCT_COUNT = 100
MAX_QUANTITY = 5
MIN_UNIT_PRICE_DOLLARS = 10
MAX_UNIT_PRICE_DOLLARS = 1009
PAYMENT_METHODS = ("credit_card", "debit_card", "bank_transfer")
CUSTOMER_EMAIL_DOMAIN = "loadtest.example.com"
ORDERS_PATH = "/api/v1/orders"
# Distinct bodies per request list; the generator sends them in turn.
DISTINCT_BODIES = 1000


def order_body(rng: random.Random, customer_id: str) -> dict[str, object]:
    product = rng.randrange(PRODUCT_COUNT)
    body: dict[str, object] = {
        "customer_id": customer_id,
        "customer_email": f"{customer_id}@{CUSTOMER_EMAIL_DOMAIN}",
        "items": [
            {
                "product_id": f"prod-{product}",
                "product_name": f"Load test product {product}",
                "quantity": rng.randint(1, MAX_QUANTITY),
                "unit_price": rng.randint(MIN_UNIT_PRICE_DOLLARS, MAX_UNIT_PRICE_DOLLARS),
            }
        ],
        "shipping_address": {
            "street": "123 Main St",
            "city": "San Francisco",
            "state": "CA",
            "postal_code": "94102",
            "country": "USA",
        },
        "payment_method": rng.choice(PAYMENT_METHODS),
    }
    # Half of the orders carry the optional field, as with the k6 clients.
    if rng.random() < 0.5:
        body["notes"] = "Leave the parcel at the front desk"
    return body


def order_requests(host: str, port: int, customers: Sequence[str], seed: int = 0) -> list[bytes]:
    """Return `DISTINCT_BODIES` prepared POST requests spread evenly over `customers`."""
    rng = random.Random(seed)
    return [
        build_post(
            host,
            port,
            ORDERS_PATH,
            json.dumps(order_body(rng, customers[index % len(customers)])).encode(),
        )
        for index in range(DISTINCT_BODIES)
    ]
