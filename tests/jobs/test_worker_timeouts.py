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
from arq.worker import Retry
from PIL import Image

from jobs.fleet import WorkerBeat, live_workers, queue_status
from jobs.queue import ArqQueue
from jobs.settings import WorkerSettings
from jobs.spec import JobSpec, ProgressEvent, Recipe
from jobs.timeouts import Pace
from jobs.worker import OVERRUNS_KEY, PACE, JobRun, JobRunner, Made, _run_within_limit, serve
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

    def _make(self, run: JobRun, recipe: Recipe, progress: Callable[[ProgressEvent], None]) -> Made:
        spec = run.spec
        run.ready()  # its pipeline is resident: the job's clock starts
        if not self.hung.is_set():
            self.hung.set()
            self.release.wait(60)
        self._check_stop(run)
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


async def holding_beat(queue: ArqQueue, timeout: float = 10.0) -> WorkerBeat:
    """The first heartbeat that says a stopped job holds the worker's device."""
    async with asyncio.timeout(timeout):
        while True:
            held = next((b for b in await live_workers(queue.redis) if b.holding), None)
            if held is not None:
                return held
            await asyncio.sleep(0.05)


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
            held = await holding_beat(queue)
            assert held.current_job == stuck.job_id and held.busy
            assert f"waiting for job {stuck.job_id} to let go of the device" in held.holding
            assert "ran past its 1 s limit" in held.holding
            assert held.paused == ""  # held for a while, not failing: routing still counts it
            assert await queue.live_profiles() == frozenset({"tiny-xl"})
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


@pytest.mark.timeout(120)
async def test_a_worker_whose_device_a_cancelled_job_holds_still_serves_its_profile(
    redis_url: str, shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    # gpu-a alone serves tiny-xl. While a cancelled job lets go of its device, gpu-a takes no job, but the
    # fleet still counts it: routing must not send new portraits to another profile meanwhile.
    settings = WorkerSettings(
        redis_url=redis_url,
        profiles=["tiny-xl"],
        data_dir=shared_data_dir,
        device="cpu",
        worker_name="gpu-a",
        poll_delay_s=0.01,
    )
    runner = HangingRunner(settings, tiny_catalog)
    queue = await ArqQueue.connect(redis_url, poll_delay_s=0.01)
    try:
        async with serving(settings, tiny_catalog, runner):
            cancelled = await queue.submit(tiny_job(), QUEUE)
            await until(runner.hung.is_set)
            assert await queue.cancel(cancelled.job_id, QUEUE, "cancelled by u1") == "stopping"
            waiting = await queue.submit(tiny_job(), QUEUE)

            held = await holding_beat(queue)
            assert held.worker == "gpu-a" and held.paused == ""
            why = f"waiting for job {cancelled.job_id} to let go of the device (cancelled by u1)"
            assert held.holding == why
            assert await queue.live_profiles() == frozenset({"tiny-xl"})
            status = await queue_status(queue.redis, QUEUE, "tiny-xl")
            assert (status.workers, status.waiting) == (1, 2)
            await asyncio.sleep(0.3)
            assert not await queue.redis.exists(in_progress_key_prefix + waiting.job_id)  # nothing taken

            runner.release.set()
            stopped = await cancelled.result(timeout=30)
            assert not stopped.ok and stopped.error == "cancelled by u1"
            result = await waiting.result(timeout=30)
            assert result.ok, result.error
            assert runner.made == [waiting.job_id]
    finally:
        runner.release.set()
        await queue.close()


class SlowLoadRunner(JobRunner):
    """A JobRunner whose pipeline takes `load_s` to get ready: a cold load with compile and warm-up on a
    slow disk, as the job sees it."""

    load_s = 3.0

    def _pipeline(
        self, spec: JobSpec, recipe: Recipe, progress: Callable[[ProgressEvent], None]
    ) -> tuple[Any, float]:
        started = time.perf_counter()
        time.sleep(self.load_s)
        pipeline, _ = super()._pipeline(spec, recipe, progress)
        return pipeline, time.perf_counter() - started


@pytest.mark.timeout(120)
async def test_a_long_load_does_not_count_against_the_job_limit_but_has_its_own_bound(
    redis_url: str, shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    settings = WorkerSettings(data_dir=shared_data_dir, device="cpu", worker_name="gpu-a")
    runner = SlowLoadRunner(settings, tiny_catalog)
    runner.cache.get("tiny:sdxl", "sdxl", 0.1)  # the tiny model itself loads at once
    queue = await ArqQueue.connect(redis_url)
    # Every job's limit is the floor, 2 s; the load takes 3 s.
    pace = Pace(seconds_per_megapixel_step=0.0001, floor_s=2.0, ceiling_s=60.0, load_s=60.0)
    try:
        job = tiny_job()
        result = await _run_within_limit({"redis": queue.redis, PACE: pace}, runner, job)
        assert result.ok, result.error
        assert result.timings["load"] >= 3.0
        assert await queue.redis.get(OVERRUNS_KEY + job.job_id) is None

        # A load past its own bound is given up on like a run past its limit.
        again = tiny_job()
        short = Pace(seconds_per_megapixel_step=0.0001, floor_s=2.0, ceiling_s=60.0, load_s=1.0)
        with pytest.raises(Retry):
            await _run_within_limit({"redis": queue.redis, PACE: short}, runner, again)
        assert await queue.redis.get(OVERRUNS_KEY + again.job_id) == b"1"
        await until(lambda: runner.current_job is None)
    finally:
        await queue.close()
