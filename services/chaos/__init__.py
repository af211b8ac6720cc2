"""Chaos runs: the whole system under load and faults, then a check of its guarantees."""

from services.chaos.runner import MIN_DURATION_SECONDS, ChaosOptions, run_chaos

__all__ = ["MIN_DURATION_SECONDS", "ChaosOptions", "run_chaos"]
