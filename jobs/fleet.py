"""The fleet as Redis sees it: worker heartbeats, measured job and load durations, queue depths.

Workers announce themselves with a heartbeat key that expires within seconds, so a worker that dies
drops out of the fleet on its own. Durations are the last jobs' wall times per profile, and load times
the last loads of its checkpoint; their medians give queue ETAs and placement costs that come from
measurements, not guesses. Torch-free: the bot reads these too.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

HEARTBEAT_KEY = "likeness:worker:"
HEARTBEAT_TTL_S = 6
HEARTBEAT_EVERY_S = 2.0
DURATIONS_KEY = "likeness:durations:"
DURATIONS_KEPT = 50
LOADS_KEY = "likeness:loads:"  # the last load times of a profile's checkpoint, kept like durations


class Residency(BaseModel):
    """Where a worker's pipelines are and how they moved: on the GPU (`WorkerBeat.loaded`), parked in host
    memory to make room (brought back in about a second), or dropped; counted since the worker started."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    offloaded: tuple[str, ...] = Field(
        default=(), description="checkpoints parked in host memory, least recently used first"
    )
    host_budget_gb: float = Field(default=0.0, description="host memory for parked pipelines; 0 = none")
    loads: int = Field(default=0, description="loads from disk")
    offloads: int = Field(default=0, description="moves from the GPU to host memory")
    restores: int = Field(default=0, description="moves back from host memory to the GPU")
    drops: int = Field(default=0, description="pipelines let go of (loaded again from disk when next used)")
    fast_path: tuple[str, ...] = Field(
        default=(), description="speed-ups on the resident pipelines (jobs/acceleration.py), e.g. compile"
    )


class WorkerBeat(BaseModel):
    """What a worker says about itself every couple of seconds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    worker: str
    queues: tuple[str, ...]
    profiles: tuple[str, ...] = Field(description="profiles it serves")
    loaded: tuple[str, ...] = Field(default=(), description="checkpoints resident now")
    device: str = ""
    memory_budget_gb: float = 0.0
    current_job: str | None = None
    sent_at: float = Field(default_factory=time.time)
    # For placement (older workers leave them out: they look idle and holding nothing).
    holds: tuple[str, ...] = Field(
        default=(), description="served profiles it runs without a load, least recently used first"
    )
    capacity: int = Field(default=1, ge=1, description="how many profiles it can hold at once")
    busy: bool = Field(default=False, description="running a job or loading a profile")
    paused: str = Field(
        default="",
        description="why it stopped taking jobs for good (it keeps failing); empty = working. Routing and "
        "queue status leave a paused worker out",
    )
    holding: str = Field(
        default="",
        description="why it takes no job for now: a job told to stop (cancelled, or past its limit) still "
        "holds its device; empty = free. It still serves its profiles: routing keeps counting it",
    )
    residency: Residency = Field(default_factory=Residency, description="host-memory parking and counts")


class QueueStatus(BaseModel):
    """Who serves a queue right now, how long it is, and how long a new job should wait."""

    model_config = ConfigDict(frozen=True)

    queue: str
    workers: int
    waiting: int
    eta_s: float | None = Field(description="measured: waiting jobs × median duration / workers")


async def publish_beat(redis: Any, beat: WorkerBeat) -> None:
    await redis.set(HEARTBEAT_KEY + beat.worker, beat.model_dump_json(), ex=HEARTBEAT_TTL_S)


async def forget_beat(redis: Any, worker: str) -> None:
    """Leave the fleet at once (on shutdown) rather than when the heartbeat expires."""
    await redis.delete(HEARTBEAT_KEY + worker)


async def live_workers(redis: Any) -> list[WorkerBeat]:
    keys = [key async for key in redis.scan_iter(match=HEARTBEAT_KEY + "*", count=200)]
    if not keys:
        return []
    beats = []
    for raw in await redis.mget(keys):
        if raw is not None:  # expired between SCAN and MGET
            beats.append(WorkerBeat.model_validate(json.loads(raw)))
    return sorted(beats, key=lambda beat: beat.worker)


async def _record(redis: Any, key: str, seconds: float) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(key, f"{seconds:.3f}")
        pipe.ltrim(key, 0, DURATIONS_KEPT - 1)
        await pipe.execute()


def median_of(values: Sequence[bytes | str]) -> float | None:
    """The median of measurements as Redis returns them (None when there are none)."""
    return statistics.median(float(v) for v in values) if values else None


async def record_duration(redis: Any, profile: str, seconds: float) -> None:
    await _record(redis, DURATIONS_KEY + profile, seconds)


async def median_duration(redis: Any, profile: str) -> float | None:
    return median_of(await redis.lrange(DURATIONS_KEY + profile, 0, DURATIONS_KEPT - 1))


async def record_load(redis: Any, profile: str, seconds: float) -> None:
    """How long loading the profile's checkpoint took (only jobs that had to load it say so)."""
    await _record(redis, LOADS_KEY + profile, seconds)


async def median_load(redis: Any, profile: str) -> float | None:
    return median_of(await redis.lrange(LOADS_KEY + profile, 0, DURATIONS_KEPT - 1))


async def queue_status(redis: Any, queue: str, profile: str) -> QueueStatus:
    # A worker whose device a stopped job holds for a while still serves the queue; a paused one does not.
    serving = [beat for beat in await live_workers(redis) if queue in beat.queues and not beat.paused]
    waiting = int(await redis.zcard(queue))
    median = await median_duration(redis, profile)
    eta = None
    if serving and median is not None:
        busy = sum(1 for beat in serving if beat.current_job)
        eta = (waiting + busy) * median / len(serving)
    return QueueStatus(queue=queue, workers=len(serving), waiting=waiting, eta_s=eta)
