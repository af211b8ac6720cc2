"""Structured logging: JSON lines, or readable lines on a terminal.

Context such as `order_id`, `event_id`, `stream` and `group` is bound with
`structlog.contextvars`, so every line logged while handling one message carries it.
"""

import logging
import sys
import time
from typing import Any

import structlog


def configure_logging(level: str = "INFO", log_format: str = "auto", process: str = "") -> None:
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        # Plain tracebacks: the default renders every frame's locals, which took seconds.
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    if process:
        structlog.contextvars.bind_contextvars(process=process)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(name)s %(message)s")
    for noisy in ("uvicorn.access", "faststream", "aiosmtpd", "mail.log", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RepeatLimiter:
    """Lets through the first of a run of repeated failures, then one per interval.

    It keeps an outage of Redis or PostgreSQL from flooding the log with one line per retry.
    """

    def __init__(self, interval_seconds: float = 30.0) -> None:
        self.interval_seconds = interval_seconds
        self.suppressed = 0
        self._last_logged = 0.0
        self.failing = False

    def should_log(self) -> bool:
        now = time.monotonic()
        if not self.failing or now - self._last_logged >= self.interval_seconds:
            self.failing = True
            self._last_logged = now
            return True
        self.suppressed += 1
        return False

    def recovered(self) -> bool:
        """Mark the end of an outage; return True if one was in progress."""
        was_failing = self.failing
        self.failing = False
        self.suppressed = 0
        return was_failing
