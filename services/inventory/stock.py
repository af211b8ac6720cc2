"""Stock decisions as plain functions."""

from collections.abc import Iterable

from shared.events import OrderLine


def quantities_by_product(lines: Iterable[OrderLine]) -> list[tuple[str, int]]:
    """Sum quantities per product, sorted by product id.

    Reserving in one global order keeps two orders that share products from deadlocking.
    """
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.product_id] = totals.get(line.product_id, 0) + line.quantity
    return sorted(totals.items())
