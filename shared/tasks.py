"""Helpers for the background tasks each process runs."""

import asyncio

CANCEL_RETRY_SECONDS = 0.1


async def cancel_and_wait(task: "asyncio.Task[None] | None") -> None:
    """Cancel `task` and wait until it has ended.

    The cancellation is repeated until it takes: redis-py 8.1 can swallow one that arrives
    while it opens a connection, and a single cancel then leaves the task running forever.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY_SECONDS)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
