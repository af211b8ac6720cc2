"""Telling a dependency outage apart from a failure the event causes."""

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared.outages import is_dependency_outage

pytestmark = pytest.mark.timeout(10)


def raised_from(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


class DeliveryFailed(Exception):
    """Stands in for an adapter error raised `from` the client library's error."""


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        PoolTimeoutError("QueuePool limit of size 5 overflow 5 reached"),
        raised_from(DeliveryFailed("could not connect to SMTP"), ConnectionRefusedError()),
        raised_from(
            DBAPIError("COMMIT", {}, Exception("shutting down")),
            asyncpg.CannotConnectNowError("the database system is shutting down"),
        ),
        raised_from(
            DBAPIError("SELECT 1", {}, Exception("closed")),
            raised_from(Exception("wrapped"), asyncpg.ConnectionDoesNotExistError("closed")),
        ),
        DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True),
    ],
    ids=["refused", "reset", "pool", "smtp", "shutdown", "nested", "invalidated"],
)
def test_outage_detected_when_dependency_unreachable(error: BaseException) -> None:
    assert is_dependency_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError(),
        ValueError("entry payload is not a valid event"),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        raised_from(DeliveryFailed("550 mailbox unavailable"), ValueError("rejected")),
    ],
    ids=["timeout", "value", "integrity", "rejected-mail"],
)
def test_outage_ignored_when_event_at_fault(error: BaseException) -> None:
    assert not is_dependency_outage(error)
