"""Heartbeats, measured durations and queue status on a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from jobs.fleet import (
    DURATIONS_KEPT,
    HEARTBEAT_KEY,
    WorkerBeat,
    forget_beat,
    live_workers,
    median_duration,
    median_load,
    publish_beat,
    queue_status,
    record_duration,
    record_load,
)
from jobs.queue import ArqQueue

QUEUE = "likeness:profile:tiny-xl"


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[ArqQueue]:
    connected = await ArqQueue.connect(redis_url)
    yield connected
    await connected.close()


def beat(name: str, *, current_job: str | None = None, queues: tuple[str, ...] = (QUEUE,)) -> WorkerBeat:
    return WorkerBeat(worker=name, queues=queues, profiles=("tiny-xl",), current_job=current_job)


async def test_workers_appear_with_their_heartbeat_and_leave_with_it(queue: ArqQueue) -> None:
    assert await live_workers(queue.redis) == []
    await publish_beat(queue.redis, beat("gpu-b"))
    await publish_beat(queue.redis, beat("gpu-a", current_job="j_1"))
    assert [(b.worker, b.current_job) for b in await live_workers(queue.redis)] == [
        ("gpu-a", "j_1"),
        ("gpu-b", None),
    ]
    assert 0 < await queue.redis.ttl("likeness:worker:gpu-a") <= 6
    await forget_beat(queue.redis, "gpu-a")
    assert [b.worker for b in await live_workers(queue.redis)] == ["gpu-b"]


async def test_durations_keep_the_last_jobs_and_give_their_median(queue: ArqQueue) -> None:
    assert await median_duration(queue.redis, "tiny-xl") is None
    for seconds in (9.0, 1.0, 2.0):
        await record_duration(queue.redis, "tiny-xl", seconds)
    assert await median_duration(queue.redis, "tiny-xl") == 2.0
    for _ in range(DURATIONS_KEPT):
        await record_duration(queue.redis, "tiny-xl", 4.0)
    assert await median_duration(queue.redis, "tiny-xl") == 4.0


async def test_load_times_are_kept_apart_from_job_durations(queue: ArqQueue) -> None:
    assert await median_load(queue.redis, "tiny-xl") is None
    for seconds in (30.0, 20.0, 25.0):
        await record_load(queue.redis, "tiny-xl", seconds)
    await record_duration(queue.redis, "tiny-xl", 4.0)
    assert await median_load(queue.redis, "tiny-xl") == 25.0
    assert await median_duration(queue.redis, "tiny-xl") == 4.0


async def test_beats_say_what_placement_needs_and_older_beats_still_read(queue: ArqQueue) -> None:
    await publish_beat(
        queue.redis,
        WorkerBeat(
            worker="gpu-a",
            queues=(QUEUE,),
            profiles=("tiny-xl", "tiny-identity-xl"),
            loaded=("tiny:sdxl",),
            holds=("tiny-xl", "tiny-identity-xl"),
            capacity=3,
            busy=True,
        ),
    )
    # A worker of the previous release: no holds, capacity or busy.
    await queue.redis.set(
        HEARTBEAT_KEY + "gpu-old",
        json.dumps(
            {"worker": "gpu-old", "queues": [QUEUE], "profiles": ["tiny-xl"], "loaded": ["tiny:sdxl"]}
        ),
        ex=6,
    )
    new, old = await live_workers(queue.redis)
    assert (new.holds, new.capacity, new.busy) == (("tiny-xl", "tiny-identity-xl"), 3, True)
    assert (old.worker, old.loaded, old.holds, old.capacity, old.busy) == (
        "gpu-old",
        ("tiny:sdxl",),
        (),
        1,
        False,
    )


async def test_queue_status_counts_servers_and_measures_the_wait(queue: ArqQueue) -> None:
    unserved = await queue_status(queue.redis, QUEUE, "tiny-xl")
    assert (unserved.workers, unserved.waiting, unserved.eta_s) == (0, 0, None)
    await publish_beat(queue.redis, beat("gpu-a", current_job="j_1"))
    await publish_beat(queue.redis, beat("gpu-b"))
    await publish_beat(queue.redis, beat("gpu-c", queues=("likeness:profile:other",)))
    await queue.redis.zadd(QUEUE, {"j_2": 1, "j_3": 2, "j_4": 3})
    await record_duration(queue.redis, "tiny-xl", 10.0)
    status = await queue.status(QUEUE, "tiny-xl")
    assert (status.workers, status.waiting) == (2, 3)
    assert status.eta_s == pytest.approx((3 + 1) * 10.0 / 2)


def test_a_beat_says_what_holds_its_device_apart_from_why_it_is_paused() -> None:
    # A worker from before `holding` still reads: its device is free as far as the fleet knows.
    old = WorkerBeat.model_validate({"worker": "old", "queues": [QUEUE], "profiles": ["tiny-xl"]})
    assert (old.holding, old.paused) == ("", "")
    held = WorkerBeat(worker="gpu-a", queues=(QUEUE,), profiles=("tiny-xl",), holding="waiting for job j_1")
    assert WorkerBeat.model_validate(json.loads(held.model_dump_json())).holding == "waiting for job j_1"
