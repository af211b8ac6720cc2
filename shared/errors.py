"""The root of every error orderflow raises on purpose, free of HTTP.

The gateway maps each subclass to a status code in one place.
"""


class OrderflowError(Exception):
    """Base class of orderflow's own errors."""


class InvalidInput(OrderflowError):
    """A request or event carried values that break a rule.

    `problems` maps each bad field (dotted path) to what is wrong with it.
    """

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        fields = ", ".join(sorted(problems))
        super().__init__(f"invalid input in {fields}")


class OrderNotFound(OrderflowError):
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id!r} not found; check the id returned at creation")


class InvalidTransition(OrderflowError):
    """The order's current state forbids the requested action."""

    def __init__(self, order_id: str, status: str, action: str) -> None:
        self.order_id = order_id
        self.status = status
        self.action = action
        super().__init__(f"cannot {action} order {order_id!r} while it is {status!r}")


class IdempotencyConflict(OrderflowError):
    """An `Idempotency-Key` was reused with a different request body."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different body; "
            "send a new key for a new order"
        )


class DocumentNotReady(OrderflowError):
    """A generated document (an invoice) does not exist yet."""

    def __init__(self, order_id: str, document: str) -> None:
        self.order_id = order_id
        super().__init__(
            f"the {document} of order {order_id!r} is not generated yet; retry in a few seconds"
        )


class Overloaded(OrderflowError):
    """The system sheds load: a tier's backlog is above its limit."""

    def __init__(self, stream: str, backlog: int, limit: int, retry_after_seconds: int) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(
            f"stream {stream!r} holds {backlog} unprocessed entries, above the limit of {limit}; "
            f"retry after {retry_after_seconds} s"
        )


class DependencyUnavailable(OrderflowError):
    """PostgreSQL or Redis cannot be reached right now."""

    def __init__(self, dependency: str, detail: str) -> None:
        self.dependency = dependency
        super().__init__(f"{dependency} is unavailable: {detail}")
