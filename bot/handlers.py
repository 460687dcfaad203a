"""The request handlers a chat adapter has running, so that stopping the adapter stops them too.

Platform-free: each adapter wraps every handler in `handlers.track()` and calls `handlers.stop()` when it
closes. A handler stopped this way leaves its generation in the ledger; the Courier finishes it at the
next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class HandlerTasks:
    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    @contextmanager
    def track(self) -> Iterator[None]:
        """The current task is a handler at work until the block ends."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            yield
        finally:
            self._running.discard(task)

    async def stop(self) -> None:
        """Cancel every handler at work (but the caller) and wait until they have ended."""
        working = [task for task in self._running if task is not asyncio.current_task()]
        for task in working:
            task.cancel()
        if working:
            await asyncio.wait(working)
