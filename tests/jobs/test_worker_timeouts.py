"""A job past its time limit whose thread will not stop: the worker keeps its device, and says so, until the
thread ends; the job goes back on its queue for another worker meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from PIL import Image

from jobs.fleet import live_workers
from jobs.queue import ArqQueue
from jobs.settings import WorkerSettings
from jobs.spec import JobSpec, ProgressEvent, Recipe
from jobs.worker import OVERRUNS_KEY, JobRunner, Made, serve
from router.catalog import Catalog

QUEUE = "likeness:profile:tiny-xl"


class HangingRunner(JobRunner):
    """A JobRunner whose first job hangs on the device, deaf to any stop, until `release` is set: what a
    stuck kernel looks like from the worker. Then it goes on as any job does: a stop takes effect at its
    next check. Its other jobs make a grey image at once."""

    def __init__(self, settings: WorkerSettings, catalog: Catalog) -> None:
        super().__init__(settings, catalog)
        self.release = threading.Event()
        self.hung = threading.Event()
        self.made: list[str] = []

    def _make(self, spec: JobSpec, recipe: Recipe, progress: Callable[[ProgressEvent], None]) -> Made:
        if not self.hung.is_set():
            self.hung.set()
            self.release.wait(60)
        self._check_stop(spec.job_id)
        self.made.append(spec.job_id)
        return Made(images=[Image.new("RGB", (recipe.width, recipe.height), "grey")], timings={})


def tiny_job(steps: int = 2) -> JobSpec:
    recipe = Recipe(
        profile="tiny-xl",
        family="sdxl",
        checkpoint="tiny:sdxl",
        scheduler="EulerDiscreteScheduler",
        steps=steps,
        cfg=5.0,
        width=64,
        height=64,
        seeds=(1,),
    )
    return JobSpec(generation_id="g_test", prompt="a portrait", recipe=recipe)


async def until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)
    return value


@contextlib.asynccontextmanager
async def serving(settings: WorkerSettings, catalog: Catalog, runner: JobRunner) -> AsyncIterator[None]:
    """serve() in a task, stopped with a SIGTERM at the end as a deploy stops it."""
    task = asyncio.create_task(serve(settings, catalog, runner=runner))
    await until(lambda: signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None) or task.done())
    try:
        yield
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, timeout=30)


@pytest.mark.timeout(120)
async def test_a_stuck_job_keeps_the_device_and_the_worker_takes_nothing_until_it_lets_go(
    redis_url: str, shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    settings = WorkerSettings(
        redis_url=redis_url,
        profiles=["tiny-xl"],
        data_dir=shared_data_dir,
        device="cpu",
        worker_name="gpu-a",
        poll_delay_s=0.01,
        seconds_per_megapixel_step=0.001,  # every job's limit is the floor
        job_timeout_floor_s=1.0,
        job_load_allowance_s=0.0,
    )
    runner = HangingRunner(settings, tiny_catalog)
    queue = await ArqQueue.connect(redis_url, poll_delay_s=0.01)
    try:
        async with serving(settings, tiny_catalog, runner):
            stuck = await queue.submit(tiny_job(), QUEUE)
            await until(runner.hung.is_set)
            given_up = time.monotonic()
            waiting = await queue.submit(tiny_job(), QUEUE)
            again: list[ProgressEvent] = []
            async with asyncio.timeout(20):
                async for event in stuck.events():
                    if event.state == "queued" and event.message:
                        again.append(event)
                        break
            assert "took longer than 1 s on gpu-a; trying again on another worker" in again[0].message
            # Back on its queue under its id, free for any worker (its lock let go); this one leaves it to
            # the others.
            assert await queue.redis.zscore(QUEUE, stuck.job_id) is not None
            async with asyncio.timeout(5):
                while True:
                    if not await queue.redis.exists(in_progress_key_prefix + stuck.job_id):
                        break
                    await asyncio.sleep(0.01)
            assert await queue.redis.get(OVERRUNS_KEY + stuck.job_id) == b"1"

            # The thread still holds the device: the heartbeat says so, and no job is taken.
            async def beat() -> Any:
                return next((b for b in await live_workers(queue.redis) if b.paused), None)

            deadline = time.monotonic() + 10
            paused = None
            while paused is None and time.monotonic() < deadline:
                paused = await beat()
                await asyncio.sleep(0.05)
            assert paused is not None
            assert paused.current_job == stuck.job_id and paused.busy
            assert f"waiting for job {stuck.job_id} to let go of the device" in paused.paused
            assert "ran past its 1 s limit" in paused.paused
            assert await queue.live_profiles() == frozenset()  # routing leaves it out meanwhile
            await asyncio.sleep(0.5)
            assert not await queue.redis.exists(in_progress_key_prefix + waiting.job_id)
            assert runner.made == []

            runner.release.set()  # the stuck thread ends (the stop takes effect at once)
            result = await waiting.result(timeout=30)
            assert result.ok, result.error
            assert runner.made == [waiting.job_id]  # the stuck one stopped as soon as it could
            assert time.monotonic() - given_up > 1.5
            # The job given up on was left to other workers: still waiting for one.
            assert await queue.redis.zscore(QUEUE, stuck.job_id) is not None
            assert await queue.finished_result(stuck.job_id) is None
            assert await queue.live_profiles() == frozenset({"tiny-xl"})
    finally:
        runner.release.set()
        await queue.close()
