"""Cancellation that survives libraries which swallow it."""

from __future__ import annotations

import asyncio


def reraise_if_cancelled() -> None:
    """Call from an ``except`` of a background loop that keeps going on errors. redis-py can turn a
    cancel that lands inside its own timeout into a ``TimeoutError`` or ``ConnectionError``; the
    task is still being cancelled (``Task.cancelling()``), so this ends it instead of looping on,
    which would leave whoever awaits the task (a server's shutdown) waiting forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
