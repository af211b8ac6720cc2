"""Retry timing: exponential backoff with full jitter."""

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 0.5
    factor: float = 2.0
    cap_seconds: float = 10.0
    max_attempts: int = 6

    def delay_seconds(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return how long to wait after failed attempt number `attempt` (1-based).

        Full jitter spreads retries of many failed entries over the whole window, so that
        they do not hit a recovering database together.
        """
        ceiling = min(self.cap_seconds, self.base_seconds * self.factor ** max(attempt - 1, 0))
        return (rng or random).uniform(0, ceiling)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts
