"""A worker's intake: which of its queues may hand it the next job, so a process runs one job at a time.

`serve()` runs one arq Worker per queue it serves. Left alone, each would poll its own queue, and a
process serving three queues could hold three jobs, two of them waiting for its device while idle workers
elsewhere could have run them. The `Dispatcher` lets at most one of them pick a job (arq's
`allow_pick_jobs`), none while a job is in flight, and with several queues asks
`router.placement.next_profile` which one: warm work first, a swap only when it pays, a starving queue
rescued. With one queue there is nothing to choose and it costs no Redis call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from arq import Worker
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import DeserializationError, deserialize_job

from jobs.fleet import DURATIONS_KEPT, DURATIONS_KEY, LOADS_KEY, live_workers, median_of
from jobs.spec import JobResult, JobSpec, ProgressEvent, unpack
from router.catalog import Catalog
from router.placement import DEFAULT_STARVATION_S, QueueView, WorkerView, next_profile

log = logging.getLogger(__name__)

DEFAULT_LOAD_S = 20.0  # a profile's load time until one is measured: SDXL-class checkpoints take 20–40 s
DEFAULT_JOB_S = 5.0  # a job's duration until one is measured: a few seconds on a GPU
HEAD_JOBS = 10  # jobs read at the head of each queue to find the oldest enqueue time
REFRESH_S = 1.0  # how long the fleet's heartbeats and the measured medians are reused


class GatedWorker(Worker):
    """An arq Worker that honours `allow_pick_jobs` for each job it starts, and says when a job ends.

    arq reads the flag before it reads its queue; checking it again per job makes a flag cleared during
    that read (another queue opened, or shutdown began) hold as well. `may_take` is asked too, at once
    rather than at the dispatcher's next decision: a job given up on past its time limit may still hold
    the device. The jobs in `leave_to_others` (job id → until when, monotonic) are left for other
    workers to take: they ran past their limit here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.when_job_ends: Callable[[], None] = lambda: None
        self.may_take: Callable[[], bool] = lambda: True
        self.leave_to_others: dict[str, float] = {}

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            if not self.allow_pick_jobs or not self.may_take() or self.job_counter >= self.max_jobs:
                return
            if self._left_to_others(job_id.decode()):
                continue
            await super().start_jobs([job_id])
            task = self.tasks.get(job_id.decode())
            if task is not None:
                task.add_done_callback(lambda _: self.when_job_ends())

    def _left_to_others(self, job_id: str) -> bool:
        until = self.leave_to_others.get(job_id)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self.leave_to_others[job_id]  # nobody else took it in time: this worker may try it again
        return False


class Gate(Protocol):
    """What the dispatcher sets and watches on an arq Worker."""

    allow_pick_jobs: bool
    job_counter: int


class Cache(Protocol):
    @property
    def resident(self) -> list[str]: ...  # checkpoints, least recently used first

    @property
    def budget_gb(self) -> float: ...


class Holder(Protocol):
    """What the dispatcher reads of the runner: its name, what it holds, whether its device is taken."""

    @property
    def name(self) -> str: ...

    @property
    def current_job(self) -> str | None: ...

    @property
    def cache(self) -> Cache: ...


class DeviceName(Protocol):
    @property
    def name(self) -> str: ...


class Runner(Holder, Protocol):
    """What `serve()` needs of a runner: a `JobRunner`, or a fake in tests."""

    @property
    def device(self) -> DeviceName: ...

    async def preload(self, profile_names: list[str]) -> None: ...

    async def run(self, spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult: ...


@dataclass(frozen=True)
class Served:
    """A profile this worker serves, as placement needs it."""

    name: str
    queue: str
    checkpoint: str
    memory_gb: float
    needs_weights: bool = True  # Lanczos needs none: it is always ready and takes no memory


def served_profiles(catalog: Catalog, names: Sequence[str]) -> list[Served]:
    return [
        Served(p.name, p.queue_name, p.checkpoint, p.memory_gb, p.family != "lanczos")
        for p in map(catalog.get, names)
        if p is not None
    ]


@dataclass(frozen=True)
class _Queued:
    enqueued: float | None  # epoch seconds (None: its record could not be read)
    profile: str | None


class Dispatcher:
    """Opens at most one of this process's queues at a time, and none while a job is in flight.

    `gates` are the arq Workers by queue. Every poll interval (and as soon as a job ends) `tick()` decides;
    `stop()` closes every queue for good. Decisions that change the open queue are logged with a reason.
    """

    def __init__(
        self,
        gates: Mapping[str, Gate],
        profiles: Sequence[Served],
        redis: Any,
        holder: Holder,
        *,
        burst: bool = False,
        poll_delay_s: float = 0.05,
        starvation_s: float = DEFAULT_STARVATION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._gates = dict(gates)
        self._profiles = {p.name: p for p in profiles}
        self._served_on = {queue: [p for p in profiles if p.queue == queue] for queue in self._gates}
        self._redis = redis
        self._holder = holder
        self._burst = burst
        self._poll_delay_s = poll_delay_s
        self._starvation_s = starvation_s
        self._clock = clock
        self._live = set(self._gates)  # queues whose Worker still runs (burst Workers end)
        self._open: str | None = None
        self._chosen: str | None = None  # the profile the open queue was opened for
        self._logged: str | None = ""  # the queue of the last decision logged ("": none yet)
        self._stopped = False
        self._wake = asyncio.Event()
        # busy, holds, capacity, why it is paused or what holds its device changed: the heartbeat tells
        # the fleet
        self.changed = asyncio.Event()
        self._told: tuple[bool, tuple[str, ...], int, str, str] = (False, (), 0, "", "")
        self._queued: dict[str, _Queued] = {}  # jobs at the queues' heads, by id
        self._job_s: dict[str, float] = {}
        self._load_s: dict[str, float] = {}
        self._measured_at = -math.inf
        self._fleet: list[WorkerView] = []
        self._fleet_at = -math.inf
        # arq Workers start with the flag on: closed until decided, except a lone queue (nothing to decide;
        # arq's max_jobs=1 keeps it to one job).
        for gate in self._gates.values():
            gate.allow_pick_jobs = False
        if len(self._gates) == 1:
            (queue,) = self._gates
            self._set_open(queue, self._sole_profile(queue))

    # --- what this worker is -------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A job is in flight: taken by one of the Workers, or holding the device."""
        return self._holder.current_job is not None or any(g.job_counter > 0 for g in self._gates.values())

    def holds(self) -> tuple[str, ...]:
        """The served profiles it runs without a load, least recently used first.

        Those whose checkpoint is resident (one checkpoint can back several profiles), the one being loaded
        for the job under way, and last those that need no weights (Lanczos), which are never evicted.
        """
        rank = {checkpoint: i for i, checkpoint in enumerate(self._holder.cache.resident)}
        weighty = [p for p in self._profiles.values() if p.needs_weights]
        held = [
            p.name for p in sorted(weighty, key=lambda p: rank.get(p.checkpoint, -1)) if p.checkpoint in rank
        ]
        loading = self._profiles.get(self._chosen or "")
        if self.busy and loading is not None and loading.needs_weights and loading.name not in held:
            held.append(loading.name)  # placement counts a worker loading a profile as holding it
        return (*held, *(p.name for p in self._profiles.values() if not p.needs_weights))

    def capacity(self) -> int:
        """How many served profiles it holds at once: as many of the largest as fit the memory budget, plus
        those that take no memory of their own (Lanczos, a second profile on a held checkpoint)."""
        weighty = [p for p in self._profiles.values() if p.needs_weights]
        held = [self._profiles[name] for name in self.holds()]
        riders = len(held) - len({p.checkpoint for p in held if p.needs_weights})
        if not weighty:
            return max(1, riders)
        largest = max(p.memory_gb for p in weighty)
        return max(1, int(self._holder.cache.budget_gb // largest)) + riders

    def worker_view(self) -> WorkerView:
        return WorkerView(self._holder.name, self.holds(), self.capacity(), busy=self.busy)

    # --- what the fleet and the queues are -----------------------------------------------------------

    async def fleet_views(self) -> list[WorkerView]:
        """The other live workers, from their heartbeats (read at most once every REFRESH_S)."""
        if time.monotonic() - self._fleet_at >= REFRESH_S:
            self._fleet = [
                WorkerView(beat.worker, beat.holds, beat.capacity, beat.busy or beat.current_job is not None)
                for beat in await live_workers(self._redis)
                if beat.worker != self._holder.name
            ]
            self._fleet_at = time.monotonic()
        return self._fleet

    async def queue_views(self, queues: Sequence[str] | None = None) -> dict[str, QueueView]:
        """Each queue (all live ones by default) as placement sees it, by queue name.

        One pipeline reads every queue's due jobs and head, which of the head's jobs already run somewhere
        (arq keeps a job in its queue until it ends), and once every REFRESH_S the measured medians. Jobs
        new at a head cost one more read, of their records, for their enqueue times: the scores are not
        enqueue times (fast-lane jobs are scored an hour early).
        """
        queues = [q for q in self._gates if q in self._live] if queues is None else list(queues)
        now = self._clock()
        # arq's scores are milliseconds; a job is due once its score has passed. Those due before the next
        # decision count as waiting: ArqQueue keeps a burst's order by scoring each job a millisecond after
        # the last, so its jobs run a few ms ahead of the clock, and leaving them out would open a cold
        # queue (a load) while warm work is due a moment later. A deferred job is deferred by more.
        due = int((now + self._poll_delay_s) * 1000)
        seen = list(self._queued)  # the heads of the last read: whether they run now is read with the rest
        measure = time.monotonic() - self._measured_at >= REFRESH_S
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zcount(queue, "-inf", due)
                pipe.zrangebyscore(queue, "-inf", due, start=0, num=HEAD_JOBS)
            if seen:
                pipe.mget([in_progress_key_prefix + job for job in seen])
            if measure:
                for name in self._profiles:
                    pipe.lrange(DURATIONS_KEY + name, 0, DURATIONS_KEPT - 1)
                    pipe.lrange(LOADS_KEY + name, 0, DURATIONS_KEPT - 1)
            replies = await pipe.execute()
        rest = replies[2 * len(queues) :]
        running = (
            {job for job, flag in zip(seen, rest[0], strict=True) if flag is not None} if seen else set()
        )
        if measure:
            self._measured(rest[1:] if seen else rest)
        heads = {queue: [raw.decode() for raw in replies[2 * i + 1]] for i, queue in enumerate(queues)}
        await self._read_jobs([job for head in heads.values() for job in head if job not in self._queued])
        self._queued = {
            job: self._queued[job] for head in heads.values() for job in head if job in self._queued
        }
        views = {}
        for i, queue in enumerate(queues):
            waiting = max(0, int(replies[2 * i]) - sum(job in running for job in heads[queue]))
            known = [self._queued[job] for job in heads[queue] if job in self._queued and job not in running]
            ages = [now - job.enqueued for job in known if job.enqueued is not None]
            profile = self._profile_of(queue, known)
            views[queue] = QueueView(
                profile=profile,
                waiting=waiting,
                oldest_wait_s=max(0.0, *ages) if waiting else 0.0,
                load_s=self._load_s.get(profile, DEFAULT_LOAD_S),
                job_s=self._job_s.get(profile, DEFAULT_JOB_S),
            )
        return views

    def _measured(self, replies: Sequence[Any]) -> None:
        self._job_s, self._load_s = {}, {}
        for name, durations, loads in zip(self._profiles, replies[::2], replies[1::2], strict=True):
            if (job_s := median_of(durations)) is not None:
                self._job_s[name] = job_s
            if (load_s := median_of(loads)) is not None:
                self._load_s[name] = load_s
        self._measured_at = time.monotonic()

    async def _read_jobs(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        for job_id, raw in zip(
            job_ids, await self._redis.mget([job_key_prefix + j for j in job_ids]), strict=True
        ):
            if raw is None:  # it ended between the two reads
                continue
            try:
                job = deserialize_job(raw, deserializer=unpack)
            except DeserializationError:
                self._queued[job_id] = _Queued(None, None)
                continue
            spec = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
            recipe = spec.get("recipe")
            profile = recipe.get("profile") if isinstance(recipe, dict) else None
            self._queued[job_id] = _Queued(job.enqueue_time.timestamp(), profile)

    def _profile_of(self, queue: str, head: list[_Queued]) -> str:
        """The profile a job from `queue` needs: its only served profile, or, on a queue several share,
        that of the job at its head (the one the worker would take)."""
        served = [p.name for p in self._served_on[queue]]
        if len(served) > 1 and head and head[0].profile in served:
            return str(head[0].profile)
        return served[0]

    # --- deciding ------------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Decide once which queue may hand this worker a job now."""
        if self._stopped:
            return
        self._tell_fleet()
        # It keeps failing (for good: paused), or a job told to stop still holds its device (for a while:
        # holding).
        if getattr(self._holder, "paused", None) or getattr(self._holder, "holding", None):
            self._close()
            return
        if len(self._gates) == 1:
            (queue,) = self._gates
            self._set_open(queue, self._sole_profile(queue))  # open, as at the start, unless paused
            return
        if self.busy:
            self._close()
            return
        live = [q for q in self._gates if q in self._live]
        if len(live) <= 1:
            self._decided(live[0] if live else None, self._sole_profile(live[0]) if live else None, "")
            return
        views = await self.queue_views(live)
        if self._stopped:
            return
        if self.busy:  # a Worker took a job while the queues were read: decide after it
            self._close()
            return
        self._decided(*self._choose(views, await self.fleet_views() if not self._burst else []))

    def _choose(
        self, views: dict[str, QueueView], fleet: list[WorkerView]
    ) -> tuple[str | None, str | None, str]:
        pending = {queue: view for queue, view in views.items() if view.waiting}
        if not pending:
            # Nothing waits: open the queue of its most recently used profile, whose next job placement
            # would give it anyway (warm work), so that job is picked as fast as on a lone queue.
            held = [n for n in self.holds() if self._profiles[n].needs_weights] or list(self.holds())
            if not held:
                return None, None, ""
            return self._profiles[held[-1]].queue, held[-1], ""
        if self._burst:  # placement may leave a queue to others; a burst must drain all of its own
            oldest = min(pending, key=lambda q: (-pending[q].oldest_wait_s, q))
            return oldest, pending[oldest].profile, "burst mode: the oldest job first"
        me = self.worker_view()
        profile = next_profile(me, list(views.values()), fleet, starvation_s=self._starvation_s)
        queue = next((q for q, view in views.items() if view.profile == profile), None)
        return queue, profile, _why(profile, me, list(views.values()), fleet, self._starvation_s)

    def _decided(self, queue: str | None, profile: str | None, reason: str) -> None:
        """Open `queue` alone (None: none). A decision with a reason is logged when it changes the queue
        last logged; resting on the warm queue while nothing waits is not a decision worth a line."""
        if self._stopped:
            return
        if reason and queue != self._logged:
            self._logged = queue
            name = self._holder.name
            if queue is None:
                log.info("worker %s takes no job: %s", name, reason)
            else:
                log.info("worker %s takes jobs from %s: %s", name, queue, reason)
        self._set_open(queue, profile)

    def _sole_profile(self, queue: str) -> str | None:
        served = self._served_on[queue]
        return served[0].name if len(served) == 1 else None

    def _set_open(self, queue: str | None, profile: str | None) -> None:
        for name, gate in self._gates.items():
            gate.allow_pick_jobs = name == queue
        self._open, self._chosen = queue, profile

    def _close(self) -> None:
        for gate in self._gates.values():
            gate.allow_pick_jobs = False

    def _tell_fleet(self) -> None:
        now = (
            self.busy,
            self.holds(),
            self.capacity(),
            getattr(self._holder, "paused", None) or "",
            getattr(self._holder, "holding", None) or "",
        )
        if now != self._told:
            self._told = now
            self.changed.set()

    # --- running -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Decide every poll interval, and as soon as a job ends, until stopped."""
        failing = False
        while not self._stopped:
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # the intake must outlive a Redis hiccup: without it the worker takes nothing
                if not failing:
                    log.warning(
                        "worker %s could not decide its next queue; retrying",
                        self._holder.name,
                        exc_info=True,
                    )
                failing = True
            else:
                if failing:
                    log.info("worker %s decides its next queue again", self._holder.name)
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_delay_s)

    def wake(self) -> None:
        """Decide now (a job ended)."""
        self._wake.set()

    def retire(self, queue: str) -> None:
        """The Worker of `queue` has ended (burst mode): choose among the others."""
        self._live.discard(queue)
        self._wake.set()

    def stop(self) -> None:
        """Close every queue for good: shutdown has begun."""
        self._stopped = True
        self._close()
        self._wake.set()

    @property
    def open_queue(self) -> str | None:
        """The queue it would take its next job from (closed while a job is in flight)."""
        return None if self._stopped else self._open


def _why(
    choice: str | None, me: WorkerView, views: list[QueueView], fleet: list[WorkerView], starvation_s: float
) -> str:
    """The reason for a placement decision, in words for the log."""

    def holders(profile: str) -> list[WorkerView]:
        return [w for w in fleet if profile in w.loaded]

    if choice is None:
        parts = []
        for view in (v for v in views if v.waiting):
            idle = [w.name for w in holders(view.profile) if not w.busy]
            left = f"idle {idle[0]} holds it" if idle else "a swap would cost more than it saves"
            parts.append(f"{view.profile} ({view.waiting} waiting): {left}")
        return "staying warm; " + "; ".join(parts)
    view = next(v for v in views if v.profile == choice)
    age = f"its oldest job has waited {view.oldest_wait_s:.0f} s"
    starving = view.oldest_wait_s > starvation_s
    if choice in me.loaded:
        return f"warm work, starving: {age}" if starving else f"warm work, {view.waiting} waiting"
    if not holders(choice):
        return f"no live worker holds {choice}" + (f" and it is starving: {age}" if starving else "")
    if starving:
        return f"starving: {age}"
    return f"swap: {view.waiting} jobs of {view.job_s:.1f} s outweigh a {view.load_s:.0f} s load"
