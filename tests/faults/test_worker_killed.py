"""A worker killed mid-job: its job runs again on another worker once the short in-progress lock lapses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from arq.constants import in_progress_key_prefix

from jobs.queue import ArqQueue
from jobs.spec import ProgressEvent
from tests.jobs.test_worker import tiny_spec

LOCK_S = 3.0


def start_worker(name: str, data_dir: Path, redis_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(
        LIKENESS_DATA_DIR=str(data_dir),
        LIKENESS_REDIS_URL=redis_url,
        LIKENESS_WORKER_NAME=name,
        LIKENESS_JOB_LOCK_S=str(LOCK_S),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker", "--profiles", "tiny-xl"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.timeout(480)
async def test_the_job_of_a_killed_worker_runs_on_another(shared_data_dir: Path, redis_url: str) -> None:
    queue = await ArqQueue.connect(redis_url)
    spec = tiny_spec((1, 2, 3, 4), steps=40)  # long enough to be killed in the middle
    first = start_worker("gpu-a", shared_data_dir, redis_url)
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await queue.submit(spec, "likeness:profile:tiny-xl")
        events: list[ProgressEvent] = []
        async with asyncio.timeout(240):
            async for event in handle.events():
                events.append(event)
                if event.state == "step" and event.step >= 2:
                    break
        first.send_signal(signal.SIGKILL)  # mid-job, no chance to clean up
        first.wait()
        # The dead worker's lock on the job lapses within LOCK_S of its last renewal, not after arq's
        # default of the longest job timeout plus 10 s (-2: already gone).
        left_ms = await queue.redis.pttl(in_progress_key_prefix + spec.job_id)
        assert left_ms == -2 or 0 < left_ms <= LOCK_S * 1000, left_ms
        second = start_worker("gpu-b", shared_data_dir, redis_url)
        result = await handle.result(timeout=240)
        assert result.ok, result.error
        assert result.worker == "gpu-b"
        assert len(result.images) == 4
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        await queue.close()
