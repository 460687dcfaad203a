"""One contract, two queues: LocalQueue (in-process) and ArqQueue (arq on a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from jobs.queue import ArqQueue, LocalQueue, Queue
from jobs.spec import InputImage, JobResult, JobSpec, ProgressEvent, Recipe
from tests.arq_support import running_worker
from tests.conftest import RedisServer

QUEUE = "likeness:profile:test"


@dataclass
class EchoRunner:
    """Runs no model: reports `steps` progress events and echoes what it was given. A job told to `stop`
    ends at its next step with the reason, as a JobRunner's does."""

    calls: list[str] = field(default_factory=list)
    delay: float = 0.0
    stops: dict[str, str] = field(default_factory=dict)

    def stop(self, job_id: str, reason: str) -> None:
        self.stops[job_id] = reason

    async def run(self, spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        self.calls.append(spec.job_id)
        progress(ProgressEvent(job_id=spec.job_id, state="started"))
        steps = spec.recipe.steps if spec.recipe else 0
        for step in range(1, steps + 1):
            await asyncio.sleep(self.delay)
            if spec.job_id in self.stops:
                return JobResult(
                    job_id=spec.job_id,
                    generation_id=spec.generation_id,
                    ok=False,
                    error=self.stops[spec.job_id],
                )
            progress(ProgressEvent(job_id=spec.job_id, state="step", step=step, total=steps))
        if spec.prompt == "crash":
            raise RuntimeError("boom")
        if spec.prompt == "fail":
            return JobResult(
                job_id=spec.job_id, generation_id=spec.generation_id, ok=False, error="it failed"
            )
        sizes = ",".join(str(len(i.data)) for i in spec.inputs)
        return JobResult(
            job_id=spec.job_id, generation_id=spec.generation_id, ok=True, worker="echo", notices=(sizes,)
        )


def make_spec(prompt: str = "a portrait", steps: int = 3, **extra: object) -> JobSpec:
    recipe = Recipe(
        profile="test",
        family="sdxl",
        checkpoint="tiny:sdxl",
        scheduler="EulerDiscreteScheduler",
        steps=steps,
        cfg=5.0,
        width=256,
        height=256,
        seeds=(1, 2, 3, 4),
    )
    return JobSpec(generation_id="g_test", prompt=prompt, recipe=recipe, **extra)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "arq"])
async def queue_and_runner(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Queue, EchoRunner]]:
    runner = EchoRunner()
    if request.param == "local":
        local = LocalQueue(runner.run, stop=runner.stop)
        yield local, runner
        await local.close()
        return
    url = request.getfixturevalue("redis_url")
    queue = await ArqQueue.connect(url, poll_delay_s=0.01)
    async with running_worker(runner, QUEUE, url):
        yield queue, runner
    await queue.close()


async def test_events_then_result(queue_and_runner: tuple[Queue, EchoRunner]) -> None:
    queue, runner = queue_and_runner
    spec = make_spec(steps=3)
    handle = await queue.submit(spec, QUEUE)
    events = [event async for event in handle.events()]
    result = await handle.result(timeout=10)
    assert result.ok
    assert result.job_id == spec.job_id
    assert result.worker == "echo"
    assert [(e.step, e.total) for e in events if e.state == "step"] == [(1, 3), (2, 3), (3, 3)]
    assert events[-1].state == "finished"
    assert all(e.job_id == spec.job_id for e in events)
    assert runner.calls == [spec.job_id]


async def test_failure_is_reported_with_its_reason(queue_and_runner: tuple[Queue, EchoRunner]) -> None:
    queue, _ = queue_and_runner
    handle = await queue.submit(make_spec(prompt="fail"), QUEUE)
    events = [event async for event in handle.events()]
    result = await handle.result(timeout=10)
    assert not result.ok
    assert result.error == "it failed"
    assert events[-1].state == "failed"


async def test_a_runner_that_raises_still_ends_the_job(queue_and_runner: tuple[Queue, EchoRunner]) -> None:
    queue, _ = queue_and_runner
    handle = await queue.submit(make_spec(prompt="crash"), QUEUE)
    events = [event async for event in handle.events()]
    result = await handle.result(timeout=10)
    assert not result.ok
    assert "boom" in result.error
    assert events[-1].state == "failed"


async def test_the_same_job_twice_runs_once(queue_and_runner: tuple[Queue, EchoRunner]) -> None:
    queue, runner = queue_and_runner
    spec = make_spec()
    first = await queue.submit(spec, QUEUE)
    second = await queue.submit(spec, QUEUE)
    assert (await first.result(timeout=10)).ok
    assert (await second.result(timeout=10)).ok
    await asyncio.sleep(0.1)
    assert runner.calls == [spec.job_id]


async def test_jobs_run_in_order_and_queued_jobs_know_their_place(
    queue_and_runner: tuple[Queue, EchoRunner],
) -> None:
    queue, runner = queue_and_runner
    runner.delay = 0.02
    specs = [make_spec(prompt=f"job {i}") for i in range(3)]
    handles = [await queue.submit(spec, QUEUE) for spec in specs]
    first_events = [[e async for e in h.events()] for h in handles]
    for handle in handles:
        assert (await handle.result(timeout=10)).ok
    assert runner.calls == [s.job_id for s in specs]
    queued_last = [e for e in first_events[2] if e.state == "queued"]
    assert queued_last, "a job submitted behind others reports that it is queued"


async def test_input_images_cross_the_queue_as_bytes(queue_and_runner: tuple[Queue, EchoRunner]) -> None:
    queue, _ = queue_and_runner
    data = bytes(range(256)) * 40
    spec = make_spec(inputs=(InputImage(role="reference", data=data),))
    handle = await queue.submit(spec, QUEUE)
    result = await handle.result(timeout=10)
    assert result.notices == (str(len(data)),)


async def test_fast_jobs_go_ahead_of_normal_ones(queue_and_runner: tuple[Queue, EchoRunner]) -> None:
    queue, runner = queue_and_runner
    runner.delay = 0.05
    first = await queue.submit(make_spec(prompt="running"), QUEUE)
    await asyncio.sleep(0.1)  # the first job is under way; the rest wait
    normal = [await queue.submit(make_spec(prompt=f"normal {i}"), QUEUE) for i in range(2)]
    fast = [await queue.submit(make_spec(prompt=f"fast {i}"), QUEUE, fast=True) for i in range(2)]
    for handle in (first, *normal, *fast):
        assert (await handle.result(timeout=20)).ok
    order = [first.job_id, *(h.job_id for h in fast), *(h.job_id for h in normal)]
    assert runner.calls == order


async def test_a_queued_job_is_taken_off_and_a_running_one_stopped(
    queue_and_runner: tuple[Queue, EchoRunner],
) -> None:
    queue, runner = queue_and_runner
    runner.delay = 0.1  # the first job would run 10 s: the second waits behind it
    running = await queue.submit(make_spec(prompt="first", steps=100), QUEUE)
    waiting = await queue.submit(make_spec(prompt="second"), QUEUE)
    steps: list[int] = []
    async with asyncio.timeout(20):
        async for event in running.events():
            if event.state == "step":
                steps.append(event.step)
                break
    first_id = runner.calls[0]
    assert await queue.cancel("j_unknown", QUEUE, "cancelled by u1") == "unknown"
    second_id = waiting.job_id
    assert await queue.cancel(second_id, QUEUE, "cancelled by u1") == "removed"
    assert await queue.cancel(second_id, QUEUE, "cancelled by u1") == "finished"  # only once
    result = await waiting.result(timeout=10)
    assert (result.ok, result.error) == (False, "cancelled by u1")
    events = [event async for event in waiting.events()]
    assert events[-1].state == "failed"

    assert await queue.cancel(first_id, QUEUE, "cancelled by u2") == "stopping"
    async with asyncio.timeout(20):
        async for event in running.events():
            steps.append(event.step)
    stopped = await running.result(timeout=20)
    assert (stopped.ok, stopped.error) == (False, "cancelled by u2")
    assert max(steps) < 20, steps  # the worker looks for the mark five times a second: a few steps
    assert await queue.cancel(first_id, QUEUE, "cancelled by u2") == "finished"
    await asyncio.sleep(0.3)
    assert runner.calls == [first_id]  # the cancelled job never ran


async def test_a_running_job_on_a_runner_that_cannot_stop_is_left_to_finish() -> None:
    runner = EchoRunner(delay=0.05)
    queue = LocalQueue(runner.run)  # no `stop`
    try:
        handle = await queue.submit(make_spec(steps=5), QUEUE)
        async with asyncio.timeout(10):
            async for event in handle.events():
                if event.state == "step":
                    break
        assert await queue.cancel(handle.job_id, QUEUE, "cancelled by u1") == "running"
        assert (await handle.result(timeout=10)).ok
    finally:
        await queue.close()


async def test_the_start_of_a_job_is_told_once_before_its_result(
    queue_and_runner: tuple[Queue, EchoRunner],
) -> None:
    queue, runner = queue_and_runner
    runner.delay = 0.05
    told: list[str] = []

    async def started() -> None:
        told.append("started")

    handle = await queue.submit(make_spec(steps=4), QUEUE)
    result = await handle.result(timeout=10, on_start=started)
    assert result.ok
    assert told == ["started"]
    # A job that has ended already is not started again: the hook is not called.
    assert (await handle.result(timeout=10, on_start=started)).ok
    assert told == ["started"]


async def test_a_worker_claiming_a_job_as_it_is_cancelled_fails_its_claim(redis_url: str) -> None:
    """A worker reads a waiting job's place in the queue, then the job is cancelled, then the worker claims
    it the way arq does (WATCH on its in-progress key, then MULTI/EXEC): the claim fails, and the job's
    result stays the cancel, not arq's "job expired"."""
    from arq.constants import in_progress_key_prefix
    from redis.exceptions import WatchError

    queue = await ArqQueue.connect(redis_url)
    try:
        handle = await queue.submit(make_spec(prompt="never run"), QUEUE)
        job_id = handle.job_id
        in_progress = in_progress_key_prefix + job_id
        async with queue.redis.pipeline(transaction=True) as claim:
            await claim.watch(in_progress)
            assert not await claim.exists(in_progress) and await claim.zscore(QUEUE, job_id)
            assert await queue.cancel(job_id, QUEUE, "cancelled by u1") == "removed"
            claim.multi()
            claim.psetex(in_progress, 60_000, b"1")
            with pytest.raises(WatchError):
                await claim.execute()
        result = await handle.result(timeout=10)
        assert (result.ok, result.error) == (False, "cancelled by u1")
    finally:
        await queue.close()


def connections_received(server: RedisServer) -> int:
    info = server.command("INFO", "stats").decode()
    line = next(line for line in info.splitlines() if line.startswith("total_connections_received:"))
    return int(line.split(":")[1])


async def test_jobs_that_end_at_once_keep_the_workers_redis_connections(
    redis_url: str, redis_server: RedisServer
) -> None:
    """A job's end cancels its cancel-watch, often while a look is in flight; a read cancelled midway
    would make the client close that connection, and every job would cost the worker a reconnect."""
    runner = EchoRunner()
    queue = await ArqQueue.connect(redis_url, poll_delay_s=0.01)
    jobs = 40
    async with running_worker(runner, QUEUE, redis_url):
        first = await queue.submit(JobSpec(generation_id="g_test", kind="noop"), QUEUE)
        assert (await first.result(timeout=10)).ok
        before = connections_received(redis_server)
        for _ in range(jobs):
            handle = await queue.submit(JobSpec(generation_id="g_test", kind="noop"), QUEUE)
            assert (await handle.result(timeout=10)).ok
        # The client's own waits may open a connection now and then; the worker's jobs open none.
        opened = connections_received(redis_server) - before - 1  # the INFO that reads it is one
        assert opened < jobs // 4, f"{opened} connections opened for {jobs} jobs"
    await queue.close()
