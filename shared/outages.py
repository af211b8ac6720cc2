"""Telling a dependency outage apart from a failure that the event itself causes.

A handler that fails because PostgreSQL or the SMTP server refuses connections would fail
the same way for any event, so such failures should be retried until the dependency is
back rather than count toward the event's dead-letter limit.
"""

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# PostgreSQL refusing or dropping connections: class 08 errors, the server starting up,
# shutting down or out of connection slots, and a client left in a broken state by a drop.
POSTGRES_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # asyncpg's own state error when it finds a connection the server dropped mid-operation
    asyncpg.InternalClientError,
    # a pooled connection the server closed, e.g. by a restart, found on its next use
    asyncpg.ConnectionDoesNotExistError,
)
OUTAGE_ERRORS = (ConnectionError, PoolTimeoutError, *POSTGRES_OUTAGE_ERRORS)


def is_dependency_outage(exc: BaseException) -> bool:
    """Return whether `exc`, or an error it was raised `from`, means a dependency is down.

    That is a refused, reset or dropped connection (`ConnectionError`, which the SMTP client's
    connect error also is), a database connection SQLAlchemy found broken, a PostgreSQL
    outage error, or a connection pool that had no connection to hand out in time.
    A `TimeoutError` alone is not an outage: a handler that hangs on one event must still
    reach the dead-letter stream.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OUTAGE_ERRORS):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__
    return False
