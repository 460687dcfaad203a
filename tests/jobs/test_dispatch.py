"""The worker's intake on a real Redis: one job at a time per process, from the queue placement chooses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix

from jobs.dispatch import DEFAULT_JOB_S, DEFAULT_LOAD_S, Dispatcher, served_profiles
from jobs.fleet import (
    HEARTBEAT_KEY,
    WorkerBeat,
    live_workers,
    median_load,
    publish_beat,
    record_duration,
    record_load,
)
from jobs.queue import ARQ_FUNCTION, ArqQueue
from jobs.settings import WorkerSettings
from jobs.spec import JobResult, JobSpec, ProgressEvent, Recipe, pack, unpack
from jobs.worker import run_job, serve
from router.catalog import Catalog

XL, SD15, UPSCALE = "tiny-xl", "tiny-sd15", "tiny-upscale"
CHECKPOINTS = {XL: "tiny:sdxl", SD15: "tiny:sd15", UPSCALE: "tiny:sd-upscale"}


def queue_of(profile: str) -> str:
    return f"likeness:profile:{profile}"


def spec(profile: str) -> JobSpec:
    recipe = Recipe(
        profile=profile,
        family="sdxl",
        checkpoint=CHECKPOINTS[profile],
        scheduler="EulerDiscreteScheduler",
        steps=4,
        cfg=5.0,
        width=64,
        height=64,
        seeds=(1,),
    )
    return JobSpec(generation_id="g_test", prompt="a portrait", recipe=recipe)


@dataclass
class FakeCache:
    resident: list[str]
    budget_gb: float = 0.15  # the tiny profiles take 0.1 GB: one at a time


@dataclass
class FakeDevice:
    name: str = "cpu"


class FakeRunner:
    """Stands in for JobRunner: a job 'loads' its checkpoint into the cache (evicting the other), takes a
    moment, and is recorded with how many jobs ran at once."""

    def __init__(self, resident: Iterable[str] = (), *, name: str = "gpu-a") -> None:
        self.name = name
        self.current_job: str | None = None
        self.cache = FakeCache(list(resident))
        self.device = FakeDevice()
        self.ran: list[str] = []
        self.running = 0
        self.most = 0
        self.hold: asyncio.Event | None = None  # set: jobs wait for it

    async def preload(self, profile_names: list[str]) -> None:
        return None

    async def run(self, spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        assert spec.recipe is not None
        self.running += 1
        self.most = max(self.most, self.running)
        self.ran.append(spec.recipe.profile)
        load = 0.0
        if spec.recipe.checkpoint not in self.cache.resident:
            self.cache.resident = [spec.recipe.checkpoint]
            load = 0.25
        self.current_job = spec.job_id
        try:
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(0.01)
        finally:
            self.current_job = None
            self.running -= 1
        return JobResult(
            job_id=spec.job_id,
            generation_id=spec.generation_id,
            ok=True,
            worker=self.name,
            timings={"load": load, "total": load + 0.01},
        )


@dataclass
class FakeGate:
    allow_pick_jobs: bool = True
    job_counter: int = 0


@dataclass
class Spy:
    """A Redis client that records every use."""

    used: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        self.used.append(name)
        raise AssertionError(f"a lone queue used Redis: {name}")


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[ArqQueue]:
    connected = await ArqQueue.connect(redis_url)
    yield connected
    await connected.close()


async def submit(queue: ArqQueue, profile: str, count: int = 1, *, fast: bool = False) -> list[str]:
    ids = []
    for _ in range(count):
        job = spec(profile)
        await queue.submit(job, queue_of(profile), fast=fast)
        ids.append(job.job_id)
    return ids


async def backdate(queue: ArqQueue, job_id: str, seconds: float) -> None:
    """Make a queued job look enqueued `seconds` earlier (its arq record; its score stays)."""
    key = job_key_prefix + job_id
    record = unpack(await queue.redis.get(key))
    record["et"] -= int(seconds * 1000)
    await queue.redis.set(key, pack(record), keepttl=True)


def dispatcher(
    queue: ArqQueue, catalog: Catalog, runner: FakeRunner, profiles: Iterable[str] = (XL, SD15)
) -> tuple[Dispatcher, dict[str, FakeGate]]:
    served = served_profiles(catalog, list(profiles))
    gates = {p.queue: FakeGate() for p in served}
    return Dispatcher(gates, served, queue.redis, runner), gates


def opened(gates: dict[str, FakeGate]) -> list[str]:
    return [name for name, gate in gates.items() if gate.allow_pick_jobs]


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def settings(url: str, tmp_path: Path, *profiles: str) -> WorkerSettings:
    return WorkerSettings(
        redis_url=url, profiles=list(profiles), data_dir=tmp_path, worker_name="gpu-a", poll_delay_s=0.01
    )


def serving_signals() -> bool:
    return signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)


def terminate() -> None:
    # Only while serve() handles SIGTERM: with the default handler it would end the test run.
    assert serving_signals()
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.asynccontextmanager
async def serving(
    worker_settings: WorkerSettings, catalog: Catalog, runner: FakeRunner
) -> AsyncIterator[asyncio.Task[None]]:
    """serve() in a task; stopped with a SIGTERM at the end, like a deploy stops it."""
    task = asyncio.create_task(serve(worker_settings, catalog, runner=runner))
    try:
        await until(lambda: serving_signals() or task.done())
        yield task
    finally:
        if not task.done():
            terminate()
        await asyncio.wait_for(task, timeout=30)


# --- what the dispatcher sees ---------------------------------------------------------------------------


async def test_views_count_due_jobs_and_age_them_by_enqueue_time(
    queue: ArqQueue, tiny_catalog: Catalog
) -> None:
    first = (await submit(queue, XL))[0]
    await backdate(queue, first, 30)
    await submit(queue, XL, fast=True)  # scored an hour early, enqueued just now
    later = spec(XL)
    await queue.redis.enqueue_job(
        ARQ_FUNCTION, later.model_dump(), _job_id=later.job_id, _queue_name=queue_of(XL), _defer_by=600
    )
    await backdate(queue, (await submit(queue, SD15))[0], 5)
    for seconds in (3.0, 5.0, 4.0):
        await record_duration(queue.redis, XL, seconds)
    await record_load(queue.redis, XL, 12.0)
    intake, _ = dispatcher(queue, tiny_catalog, FakeRunner())

    views = await intake.queue_views()
    xl, sd15 = views[queue_of(XL)], views[queue_of(SD15)]
    assert (xl.profile, xl.waiting, xl.job_s, xl.load_s) == (XL, 2, 4.0, 12.0)  # the deferred job is not due
    assert 30 <= xl.oldest_wait_s < 40  # the fast job heads the queue, but the normal one waited longest
    assert (sd15.profile, sd15.waiting, sd15.job_s, sd15.load_s) == (SD15, 1, DEFAULT_JOB_S, DEFAULT_LOAD_S)
    assert 5 <= sd15.oldest_wait_s < 15

    # A job some worker has started stays in arq's queue until it ends; it no longer waits.
    await queue.redis.set(in_progress_key_prefix + first, b"1")
    xl = (await intake.queue_views())[queue_of(XL)]
    assert xl.waiting == 1
    assert xl.oldest_wait_s < 10


async def test_load_times_are_measured_per_profile(queue: ArqQueue) -> None:
    runner = FakeRunner()
    ctx = {"runner": runner, "redis": queue.redis, "job_id": "j_1"}
    await run_job(ctx, spec(XL).model_dump())  # loads tiny:sdxl
    await run_job(ctx, spec(XL).model_dump())  # warm: no load to record
    assert await median_load(queue.redis, XL) == 0.25
    assert await queue.redis.llen("likeness:loads:" + XL) == 1


async def test_jobs_a_burst_scored_ahead_of_the_clock_count_as_waiting(
    queue: ArqQueue, tiny_catalog: Catalog
) -> None:
    # ArqQueue keeps a burst's order by scoring each job a millisecond after the last: the last jobs of a
    # burst are due a few ms after they are submitted. A decision made in between must count them, or it
    # opens the cold queue (a load) while warm work is due a moment later.
    now = time.time()

    async def due_at(profile: str, when: float) -> None:
        job = spec(profile)
        await queue.redis.enqueue_job(
            ARQ_FUNCTION,
            job.model_dump(),
            _job_id=job.job_id,
            _queue_name=queue_of(profile),
            _defer_until=datetime.fromtimestamp(when, UTC),
        )

    await due_at(SD15, now - 1)
    for ahead_s in (0.002, 0.003, 600):  # two of a burst; one deferred for ten minutes
        await due_at(XL, now + ahead_s)
    served = served_profiles(tiny_catalog, [XL, SD15])
    gates = {p.queue: FakeGate() for p in served}
    intake = Dispatcher(gates, served, queue.redis, FakeRunner(["tiny:sdxl"]), clock=lambda: now)

    views = await intake.queue_views()
    assert (views[queue_of(XL)].waiting, views[queue_of(SD15)].waiting) == (2, 1)
    await intake.tick()
    assert opened(gates) == [queue_of(XL)]  # warm work first


# --- decisions -----------------------------------------------------------------------------------------


async def test_a_queue_nobody_holds_is_served(queue: ArqQueue, tiny_catalog: Catalog) -> None:
    intake, gates = dispatcher(queue, tiny_catalog, FakeRunner(["tiny:sdxl"]))
    assert opened(gates) == []  # closed until it decides
    await intake.tick()
    assert opened(gates) == [queue_of(XL)]  # nothing waits: its warm queue stays open
    await submit(queue, SD15)
    await intake.tick()
    assert opened(gates) == [queue_of(SD15)]


async def test_a_starving_queue_nobody_holds_is_rescued_from_warm_work(
    queue: ArqQueue, tiny_catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    # gpu-b, busy, holds tiny-xl too: leaving tiny-xl's queue does not strand it.
    await publish_beat(
        queue.redis, WorkerBeat(worker="gpu-b", queues=(), profiles=(XL,), holds=(XL,), busy=True)
    )
    await submit(queue, XL, 3)
    await submit(queue, SD15)
    intake, gates = dispatcher(queue, tiny_catalog, FakeRunner(["tiny:sdxl"]))
    await intake.tick()
    assert opened(gates) == [queue_of(XL)]  # warm work first

    await backdate(queue, (await submit(queue, SD15))[0], 200)
    caplog.set_level(logging.INFO, logger="jobs.dispatch")
    for _ in range(3):
        await intake.tick()
    assert opened(gates) == [queue_of(SD15)]
    decisions = [r.getMessage() for r in caplog.records]
    assert decisions == [
        "worker gpu-a takes jobs from likeness:profile:tiny-sd15: no live worker holds tiny-sd15 "
        "and it is starving: its oldest job has waited 200 s"
    ]


async def test_no_queue_opens_while_a_job_is_in_flight_or_after_stop(
    queue: ArqQueue, tiny_catalog: Catalog
) -> None:
    runner = FakeRunner(["tiny:sdxl"])
    intake, gates = dispatcher(queue, tiny_catalog, runner, (XL, SD15, UPSCALE))
    await submit(queue, XL)
    await submit(queue, SD15)
    gates[queue_of(UPSCALE)].job_counter = 1
    await intake.tick()
    assert opened(gates) == []
    gates[queue_of(UPSCALE)].job_counter = 0
    runner.current_job = "j_elsewhere"  # the device is taken
    await intake.tick()
    assert opened(gates) == []
    runner.current_job = None
    await intake.tick()
    assert opened(gates) == [queue_of(XL)]

    intake.stop()
    assert opened(gates) == []
    await intake.tick()
    await asyncio.wait_for(intake.run(), timeout=5)  # returns at once once stopped
    assert opened(gates) == []


async def test_a_lone_queue_is_always_open_and_costs_no_redis_call(tiny_catalog: Catalog) -> None:
    served = served_profiles(tiny_catalog, [XL])
    gate = FakeGate()
    spy = Spy()
    intake = Dispatcher({queue_of(XL): gate}, served, spy, FakeRunner(), poll_delay_s=0.001)
    task = asyncio.create_task(intake.run())
    await asyncio.sleep(0.1)
    assert gate.allow_pick_jobs
    intake.stop()
    await asyncio.wait_for(task, timeout=5)
    assert spy.used == []
    assert not gate.allow_pick_jobs


async def test_a_paused_worker_opens_no_queue_and_is_left_out_of_routing(
    tiny_catalog: Catalog, queue: ArqQueue
) -> None:
    runner = FakeRunner()
    gate = FakeGate()
    intake = Dispatcher({queue_of(XL): gate}, served_profiles(tiny_catalog, [XL]), Spy(), runner)
    assert gate.allow_pick_jobs
    runner.paused = "stopped taking jobs after 5 failures within an hour"  # type: ignore[attr-defined]
    await intake.tick()
    assert not gate.allow_pick_jobs
    beat = WorkerBeat(worker="gpu-a", queues=(queue_of(XL),), profiles=(XL,), paused=runner.paused)  # type: ignore[attr-defined]
    await publish_beat(queue.redis, beat)
    assert await queue.live_profiles() == frozenset()
    assert (await queue.status(queue_of(XL), XL)).workers == 0


# --- serve(): arq Workers with the dispatcher --------------------------------------------------------


async def test_three_full_queues_run_one_job_at_a_time_warm_work_first(
    queue: ArqQueue, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    await submit(queue, SD15, 3)
    await submit(queue, UPSCALE, 3)
    await submit(queue, XL, 3)
    runner = FakeRunner(["tiny:sdxl"])
    async with serving(settings(redis_url, tmp_path, XL, SD15, UPSCALE), tiny_catalog, runner):
        await until(lambda: len(runner.ran) == 9)
    assert runner.most == 1
    # Warm work first, then the queues nobody holds, oldest first, each drained while it is warm.
    assert runner.ran == [XL] * 3 + [SD15] * 3 + [UPSCALE] * 3


async def test_warm_work_is_taken_and_a_queue_an_idle_worker_holds_is_left_to_it(
    queue: ArqQueue, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    await publish_beat(
        queue.redis, WorkerBeat(worker="gpu-b", queues=(queue_of(SD15),), profiles=(SD15,), holds=(SD15,))
    )
    await submit(queue, SD15, 2)  # older, but gpu-b holds tiny-sd15 and is idle
    await submit(queue, XL, 2)
    runner = FakeRunner(["tiny:sdxl"])
    async with serving(settings(redis_url, tmp_path, XL, SD15), tiny_catalog, runner):
        await until(lambda: len(runner.ran) == 2)
        beats = {beat.worker: beat for beat in await live_workers(queue.redis)}
        await asyncio.sleep(0.3)  # many polls later, still nothing from tiny-sd15
    assert runner.ran == [XL, XL]
    assert await queue.redis.zcard(queue_of(SD15)) == 2
    mine = beats["gpu-a"]
    assert (mine.holds, mine.capacity, mine.queues) == ((XL,), 1, (queue_of(SD15), queue_of(XL)))


async def test_a_lone_queue_polls_as_plain_arq_does(
    queue: ArqQueue, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    runner = FakeRunner(["tiny:sdxl"])
    async with serving(settings(redis_url, tmp_path, XL), tiny_catalog, runner):
        await submit(queue, XL)
        await until(lambda: len(runner.ran) == 1)
        await queue.redis.config_resetstat()
        await asyncio.sleep(0.5)
        stats = await queue.redis.info("commandstats")
    used = {name.removeprefix("cmdstat_") for name in stats}
    # arq's poll (zrangebyscore) and the heartbeat (set); no reads of placement's views.
    assert used.isdisjoint({"zcount", "mget", "scan", "lrange", "zrange"}), used
    assert "zrangebyscore" in used


async def test_sigterm_finishes_the_job_under_way_and_takes_no_other(
    queue: ArqQueue, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    first = (await submit(queue, XL))[0]
    await submit(queue, XL)
    await submit(queue, SD15, 2)
    runner = FakeRunner(["tiny:sdxl"])
    runner.hold = asyncio.Event()
    task = asyncio.create_task(serve(settings(redis_url, tmp_path, XL, SD15), tiny_catalog, runner=runner))
    await until(lambda: runner.running == 1)
    terminate()
    await asyncio.sleep(0.2)  # many polls: nothing new starts while the job finishes
    runner.hold.set()
    await asyncio.wait_for(task, timeout=30)
    assert runner.ran == [XL]
    result = await queue.finished_result(first)
    assert result is not None and result.ok
    assert await queue.redis.zcard(queue_of(XL)) + await queue.redis.zcard(queue_of(SD15)) == 3
    assert not await queue.redis.exists(HEARTBEAT_KEY + "gpu-a")


async def test_burst_drains_every_queue_and_exits(
    queue: ArqQueue, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    # Placement would leave tiny-sd15 to idle gpu-b; a burst drains it all the same.
    await publish_beat(queue.redis, WorkerBeat(worker="gpu-b", queues=(), profiles=(SD15,), holds=(SD15,)))
    await submit(queue, XL, 2)
    await submit(queue, SD15, 2)
    await submit(queue, UPSCALE, 2)
    runner = FakeRunner(["tiny:sdxl"])
    worker_settings = settings(redis_url, tmp_path, XL, SD15, UPSCALE)
    await asyncio.wait_for(serve(worker_settings, tiny_catalog, burst=True, runner=runner), timeout=60)
    assert sorted(runner.ran) == sorted([XL, XL, SD15, SD15, UPSCALE, UPSCALE])
    assert runner.most == 1
