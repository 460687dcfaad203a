"""Run one of our arq workers inside a test, and stop it the way a SIGTERM would."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from jobs.worker import SupportsRun, arq_worker


@contextlib.asynccontextmanager
async def running_worker(runner: SupportsRun, queue_name: str, redis_url: str) -> AsyncIterator[None]:
    worker = arq_worker(runner, queue_name, redis_url, poll_delay_s=0.01, job_timeout_s=60)
    task = asyncio.create_task(worker.async_run())
    try:
        yield
    finally:
        # Let a job that is still storing its result finish, as on SIGTERM, before closing.
        worker.handle_sig_wait_for_completion(signal.SIGTERM)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        await worker.close()
