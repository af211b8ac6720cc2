"""The one place where errors become HTTP responses.

Every error a client can cause maps to a 4xx. PostgreSQL or Redis being unreachable maps
to 503 with Retry-After, so only a bug in orderflow itself ends as a 500.
"""

import asyncio
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared.errors import (
    DependencyUnavailable,
    DocumentNotReady,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    OrderflowError,
    OrderNotFound,
    Overloaded,
)
from shared.outages import is_dependency_outage

log = structlog.get_logger("orderflow.gateway")

DEPENDENCY_RETRY_AFTER_SECONDS = 5

STATUS_BY_ERROR: dict[type[OrderflowError], int] = {
    InvalidInput: HTTP_400_BAD_REQUEST,
    OrderNotFound: HTTP_404_NOT_FOUND,
    DocumentNotReady: HTTP_404_NOT_FOUND,
    InvalidTransition: HTTP_409_CONFLICT,
    IdempotencyConflict: HTTP_422_UNPROCESSABLE_ENTITY,
    Overloaded: HTTP_503_SERVICE_UNAVAILABLE,
    DependencyUnavailable: HTTP_503_SERVICE_UNAVAILABLE,
}

# Errors raised when PostgreSQL or Redis cannot be reached.
DEPENDENCY_ERRORS = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    RedisError,
    # asyncpg's connection errors (refused, no such socket, unknown host) reach the
    # gateway unwrapped by SQLAlchemy.
    OSError,
    asyncio.TimeoutError,
)


def error_body(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> Any:
    body: dict[str, Any] = {"status_code": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def orderflow_error_response(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status = next(
        (code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind)),
        HTTP_500_INTERNAL_SERVER_ERROR,
    )
    errors = None
    if isinstance(exc, InvalidInput):
        errors = [{"field": field, "message": text} for field, text in exc.problems.items()]
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    if isinstance(exc, DependencyUnavailable):
        headers["Retry-After"] = str(DEPENDENCY_RETRY_AFTER_SECONDS)
    return Response(error_body(status, str(exc), errors), status_code=status, headers=headers)


def validation_error_response(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Litestar's own parameter validation (path, query, headers): 400 naming each field."""
    assert isinstance(exc, ValidationException)
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append({"field": item.get("key", "request"), "message": item.get("message")})
    detail = "invalid request parameters"
    return Response(error_body(400, detail, errors), status_code=HTTP_400_BAD_REQUEST)


def http_error_response(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return Response(
        error_body(exc.status_code, exc.detail), status_code=exc.status_code, headers=headers
    )


def dependency_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    dependency = "redis" if isinstance(exc, RedisError) else "postgresql"
    log.warning("dependency unavailable", dependency=dependency, error=str(exc)[:300])
    return orderflow_error_response(
        request, DependencyUnavailable(dependency, "retry in a few seconds")
    )


def unexpected_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Map every other error: 503 when a dependency is down, 500 for a bug in orderflow.

    The outage test is the one the consumers use, widened by DEPENDENCY_ERRORS for errors a
    request can meet that a handler cannot, such as a missing database socket.
    """
    if isinstance(exc, DEPENDENCY_ERRORS) or is_dependency_outage(exc):
        return dependency_error_response(request, exc)
    log.error("unexpected error", path=request.url.path, exc_info=exc)
    detail = "internal error; the request was not completed, please retry"
    return Response(
        error_body(HTTP_500_INTERNAL_SERVER_ERROR, detail),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


EXCEPTION_HANDLERS: Any = {
    OrderflowError: orderflow_error_response,
    ValidationException: validation_error_response,
    HTTPException: http_error_response,
    Exception: unexpected_error_response,
}
