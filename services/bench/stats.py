"""Percentiles and per-second series, without numpy so the hot path stays plain Python."""

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of `values` (fraction 0.99 for p99), None if empty.

    `values` must already be sorted in ascending order.
    """
    if not values:
        return None
    rank = max(math.ceil(fraction * len(values)), 1)
    return values[min(rank, len(values)) - 1]


def distribution(values: Iterable[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """Summarise `values` multiplied by `scale` as count, p50, p90, p99 and max."""
    ordered = sorted(value * scale for value in values)
    if not ordered:
        return {"count": 0}
    summary: dict[str, float] = {"count": len(ordered)}
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        summary[name] = round(percentile(ordered, fraction) or 0.0, digits)
    summary["max"] = round(ordered[-1], digits)
    return summary


def per_second_counts(offsets: Iterable[float], seconds: int) -> list[int]:
    """Count `offsets` (seconds from the start) in one-second buckets `0 .. seconds - 1`."""
    counts = [0] * max(seconds, 0)
    for offset in offsets:
        bucket = int(offset)
        if 0 <= bucket < len(counts):
            counts[bucket] += 1
    return counts


def per_second_percentiles(
    pairs: Iterable[tuple[float, float]], seconds: int, fractions: Sequence[float]
) -> list[list[float | None]]:
    """Group `(offset, value)` pairs by second and return each bucket's percentiles.

    The result has one list per fraction, each with one entry per second (None when the
    second had no values).
    """
    buckets: list[list[float]] = [[] for _ in range(max(seconds, 0))]
    for offset, value in pairs:
        bucket = int(offset)
        if 0 <= bucket < len(buckets):
            buckets[bucket].append(value)
    series: list[list[float | None]] = [[] for _ in fractions]
    for bucket_values in buckets:
        bucket_values.sort()
        for index, fraction in enumerate(fractions):
            series[index].append(percentile(bucket_values, fraction))
    return series
