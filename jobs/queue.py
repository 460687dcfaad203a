"""The job queue: one protocol, two transports.

`LocalQueue` runs a worker inside the same process (the embedded default). `ArqQueue` sends jobs to
arq workers through Redis, one arq queue per route queue; progress comes back on a Redis stream per
job. Both pass the same contract tests (tests/jobs/test_queue_contract.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

from jobs.fleet import QueueStatus, live_workers, queue_status
from jobs.spec import JobResult, JobSpec, ProgressEvent, pack, unpack

log = logging.getLogger(__name__)

ARQ_FUNCTION = "run_job"
# One atomic step: a job with a result has ended; one a worker holds (its in-progress lock) gets a cancel
# mark that the worker reads between steps; one still waiting is taken off the queue.
# A job taken off the queue gets its (failed) result in the same step, and its in-progress key is touched
# for a moment: a worker that read the job's place in the queue just before (arq WATCHes that key from
# its read to its claim) then fails its claim, instead of running a job whose data is gone and storing
# "job expired" over the cancel.
# KEYS: its result, its in-progress lock, its queue, its data, its cancel mark; ARGV: its id, the reason,
# the mark's and the result's lifetime in seconds, the packed result, how long the touch lasts (ms).
_CANCEL_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[5], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 'stopping'
end
if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[4])
  redis.call('SET', KEYS[1], ARGV[4], 'EX', tonumber(ARGV[3]))
  redis.call('SET', KEYS[2], 'cancelled', 'PX', tonumber(ARGV[5]))
  return 'removed'
end
return 'unknown'
"""
CLAIM_FENCE_MS = 2000  # how long a cancelled job's in-progress key stays touched
CANCEL_KEY = "likeness:cancel:"  # a running job's cancel mark: the reason, read by its worker
# Less than arq's expires_extra_ms (a day): arq keeps a job until its score plus that margin.
FAST_LANE_MS = 3600 * 1000
EVENTS_KEY = "likeness:events:"
EVENTS_TTL_S = 24 * 3600
TERMINAL = frozenset({"finished", "failed"})
STARTED = frozenset({"started", "loading", "step", "encoding"})  # a worker has the job in hand

# What a cancel did: took the job off the queue; asked its worker to stop it (it ends with the reason);
# nothing, because it runs where it cannot be stopped, has already ended, or is not known to the queue.
CancelOutcome = Literal["removed", "stopping", "running", "finished", "unknown"]
StartHook = Callable[[], Awaitable[None]]


class QueueUnavailable(ConnectionError):
    """The queue's transport cannot be reached; the message says where and what to do."""


class JobHandle(Protocol):
    """A submitted job: its progress events, then its result."""

    @property
    def job_id(self) -> str: ...

    def events(self) -> AsyncIterator[ProgressEvent]:
        """Progress until the job finishes or fails (the last event says which)."""
        ...

    async def result(self, timeout: float | None = None, *, on_start: StartHook | None = None) -> JobResult:
        """The job's result; `on_start` is awaited once when a worker is seen to have started it."""
        ...


class Queue(Protocol):
    async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
        """Enqueue `spec`; `fast` jobs go ahead of every normal job (the priority lane)."""
        ...

    async def status(self, queue_name: str, profile: str) -> QueueStatus:
        """Who serves the queue now, how many wait, and a measured ETA where there is one."""
        ...

    async def live_profiles(self) -> frozenset[str] | None:
        """The profiles some live worker serves now; None when every profile is served (in process)."""
        ...

    async def cancel(self, job_id: str, queue_name: str, reason: str) -> CancelOutcome:
        """Take a job off its queue if no worker has started it ("removed"), or ask the worker running it
        to stop between steps ("stopping"); either way whoever waits on it gets a failed result with
        `reason`. "running": it runs where it cannot be stopped; "finished": it has already ended;
        "unknown": the queue does not know it."""
        ...

    async def close(self) -> None: ...


Runner = Callable[[JobSpec, Callable[[ProgressEvent], None]], Awaitable[JobResult]]
Stop = Callable[[str, str], None]  # (job id, reason): the runner ends that job at its next step
ENDED_KEPT = 1000  # job ids LocalQueue remembers as ended, to answer a late cancel


# --- in-process -----------------------------------------------------------------------------------


class _LocalHandle:
    def __init__(self, job_id: str) -> None:
        self._job_id = job_id
        self._events: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        self._result: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._started = asyncio.Event()

    @property
    def job_id(self) -> str:
        return self._job_id

    def emit(self, event: ProgressEvent) -> None:
        if event.state in STARTED:
            self._started.set()
        self._events.put_nowait(event)

    def finish(self, result: JobResult) -> None:
        state = "finished" if result.ok else "failed"
        self.emit(ProgressEvent(job_id=self._job_id, state=state, message=result.error))
        if not self._result.done():
            self._result.set_result(result)

    async def events(self) -> AsyncIterator[ProgressEvent]:
        while True:
            event = await self._events.get()
            yield event
            if event.state in TERMINAL:
                return

    async def result(self, timeout: float | None = None, *, on_start: StartHook | None = None) -> JobResult:
        async with asyncio.timeout(timeout):
            if on_start is not None:
                started: asyncio.Future[Any] = asyncio.ensure_future(self._started.wait())
                either: set[asyncio.Future[Any]] = {started, self._result}
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    started.cancel()
                if not self._result.done():
                    await on_start()
            return await asyncio.shield(self._result)


class LocalQueue:
    """A worker inside this process: jobs run one at a time, in submission order.

    `stop` (the JobRunner's) lets a cancel end a running job at its next step; without it a running job
    cannot be stopped.
    """

    def __init__(self, runner: Runner, *, stop: Stop | None = None) -> None:
        self._runner = runner
        self._stop = stop
        # (lane, order, …): fast jobs (lane 0) first, then submission order.
        self._pending: asyncio.PriorityQueue[tuple[int, int, JobSpec, _LocalHandle]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._fast_waiting = 0
        self._handles: dict[str, _LocalHandle] = {}
        self._started: set[str] = set()
        self._cancelled: set[str] = set()
        self._ended: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
        if spec.job_id in self._handles:  # the same job twice is the same job
            return self._handles[spec.job_id]
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="likeness-local-worker")
        handle = _LocalHandle(spec.job_id)
        self._handles[spec.job_id] = handle
        ahead = self._fast_waiting if fast else self._pending.qsize()
        handle.emit(ProgressEvent(job_id=spec.job_id, state="queued", position=ahead))
        self._fast_waiting += fast
        self._pending.put_nowait((0 if fast else 1, next(self._order), spec, handle))
        return handle

    async def status(self, queue_name: str, profile: str) -> QueueStatus:
        # The worker inside this process serves every queue.
        return QueueStatus(queue=queue_name, workers=1, waiting=self._pending.qsize(), eta_s=None)

    async def live_profiles(self) -> frozenset[str] | None:
        return None

    async def cancel(self, job_id: str, queue_name: str, reason: str) -> CancelOutcome:
        handle = self._handles.get(job_id)
        if job_id in self._ended or job_id in self._cancelled:
            return "finished"
        if handle is None:
            return "unknown"
        if job_id in self._started:
            if self._stop is None:
                return "running"
            self._stop(job_id, reason)  # the runner ends it with this reason at its next step
            return "stopping"
        self._cancelled.add(job_id)  # skipped when its turn comes
        handle.finish(JobResult(job_id=job_id, generation_id="", ok=False, error=reason))
        return "removed"

    def _ended_now(self, job_id: str) -> None:
        self._handles.pop(job_id, None)
        self._ended[job_id] = None
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def _work(self) -> None:
        while True:
            lane, _order, spec, handle = await self._pending.get()
            self._fast_waiting -= lane == 0
            if spec.job_id in self._cancelled:
                self._cancelled.discard(spec.job_id)
                self._ended_now(spec.job_id)
                continue
            self._started.add(spec.job_id)
            try:
                result = await self._runner(spec, handle.emit)
            except Exception as exc:  # the runner reports failures itself; this is a last resort
                log.exception("local job %s crashed", spec.job_id)
                result = JobResult(
                    job_id=spec.job_id,
                    generation_id=spec.generation_id,
                    ok=False,
                    error=f"worker crashed: {exc}",
                )
            handle.finish(result)
            self._ended_now(spec.job_id)
            self._started.discard(spec.job_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# --- arq on Redis ---------------------------------------------------------------------------------


def arq_redis_settings(url: str) -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(url)


async def publish_event(redis: Any, event: ProgressEvent) -> None:
    """Append one event to its job's Redis stream (kept a day, the last 500 events)."""
    key = EVENTS_KEY + event.job_id
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(key, {"e": pack(event.model_dump())}, maxlen=500, approximate=True)
        pipe.expire(key, EVENTS_TTL_S)
        await pipe.execute()


class EventPublisher:
    """Worker side: appends a job's progress events, in order, to its Redis stream."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._drain())

    def emit(self, event: ProgressEvent) -> None:
        self._queue.put_nowait(event)

    async def _drain(self) -> None:
        while (event := await self._queue.get()) is not None:
            try:
                await publish_event(self._redis, event)
            except Exception:  # progress is best effort; the result travels separately
                log.warning("could not publish progress for %s", event.job_id, exc_info=True)

    async def close(self) -> None:
        """Publish what is pending, then stop."""
        self._queue.put_nowait(None)
        await self._task


class _ArqHandle:
    def __init__(self, queue: ArqQueue, job_id: str, queue_name: str) -> None:
        self._queue = queue
        self._job_id = job_id
        self._queue_name = queue_name

    @property
    def job_id(self) -> str:
        return self._job_id

    async def events(self) -> AsyncIterator[ProgressEvent]:
        redis = self._queue.redis
        position = await redis.zrank(self._queue_name, self._job_id)
        if position is not None:
            yield ProgressEvent(job_id=self._job_id, state="queued", position=int(position))
        key = EVENTS_KEY + self._job_id
        last = "0-0"
        while True:
            # A finished job whose stream expired still has a result; check it when the stream is quiet.
            reply = await redis.xread({key: last}, block=1000, count=100)
            if not reply:
                done = await self._queue.finished_result(self._job_id)
                if done is not None:
                    yield ProgressEvent(
                        job_id=self._job_id, state="finished" if done.ok else "failed", message=done.error
                    )
                    return
                continue
            for entry_id, fields in reply[0][1]:
                last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                event = ProgressEvent.model_validate(unpack(fields[b"e"]))
                yield event
                if event.state in TERMINAL:
                    return

    async def result(self, timeout: float | None = None, *, on_start: StartHook | None = None) -> JobResult:
        """Wait on the job's event stream instead of polling, then read arq's result record."""
        redis = self._queue.redis
        key = EVENTS_KEY + self._job_id
        last = "0-0"
        ended = False
        started = on_start is None
        async with asyncio.timeout(timeout):
            while True:
                done = await self._queue.finished_result(self._job_id)
                if done is not None:
                    return done
                if ended:  # the worker said it ended; arq stores the result a moment later
                    await asyncio.sleep(self._queue.poll_delay_s)
                    continue
                # Streams expire before results do: wake at least once a second to look at the result.
                reply = await redis.xread({key: last}, block=1000, count=100)
                for entry_id, fields in reply[0][1] if reply else ():
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    state = ProgressEvent.model_validate(unpack(fields[b"e"])).state
                    ended = ended or state in TERMINAL
                    if not started and not ended and state in STARTED and on_start is not None:
                        started = True
                        await on_start()


class ArqQueue:
    """Jobs to arq workers over Redis; msgpack on the wire, never pickle."""

    def __init__(self, redis: Any, *, poll_delay_s: float = 0.05) -> None:
        self.redis = redis
        self.poll_delay_s = poll_delay_s
        self._last_score = [0, 0]  # per lane (fast, normal), in ms

    @classmethod
    async def connect(cls, url: str, *, poll_delay_s: float = 0.05) -> ArqQueue:
        from arq import create_pool
        from redis.exceptions import RedisError

        settings = arq_redis_settings(url)
        settings.conn_retries = 2
        try:
            redis = await create_pool(settings, job_serializer=pack, job_deserializer=unpack)
        except (OSError, RedisError) as exc:
            raise QueueUnavailable(
                f"cannot reach Redis at {settings.host}:{settings.port} ({exc}); start it, fix "
                "LIKENESS_REDIS_URL, or unset it to run the worker in this process"
            ) from exc
        return cls(redis, poll_delay_s=poll_delay_s)

    async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
        # arq refuses a job id it already knows: a duplicate submit joins the job already under way.
        await self.redis.enqueue_job(
            ARQ_FUNCTION,
            spec.model_dump(),
            _job_id=spec.job_id,
            _queue_name=queue_name,
            _defer_until=self._score(fast),
        )
        return _ArqHandle(self, spec.job_id, queue_name)

    def _score(self, fast: bool) -> datetime:
        """When the job counts as enqueued: arq's queue is a sorted set scored by that time.

        Scores from this process strictly increase, so jobs submitted in the same millisecond keep their
        order (equal scores would sort by job id). A fast job is scored an hour early: workers take it
        before the normal jobs of the last hour, and after the fast jobs before it.
        """
        now_ms = int(time.time() * 1000) - (FAST_LANE_MS if fast else 0)
        lane = 0 if fast else 1
        score = max(now_ms, self._last_score[lane] + 1)
        self._last_score[lane] = score
        return datetime.fromtimestamp(score / 1000, UTC)

    async def status(self, queue_name: str, profile: str) -> QueueStatus:
        return await queue_status(self.redis, queue_name, profile)

    async def live_profiles(self) -> frozenset[str] | None:
        beats = await live_workers(self.redis)
        return frozenset(name for beat in beats if not beat.paused for name in beat.profiles)

    async def cancel(self, job_id: str, queue_name: str, reason: str) -> CancelOutcome:
        """Cancel in one atomic step (a Lua script). A job a worker holds (its in-progress lock) gets a
        cancel mark: the worker reads it within a fraction of a second, stops the pipeline at its next
        step and ends the job with `reason`. A waiting one is taken off the queue: a worker that reads it
        after finds neither its place in the queue nor its data; its result is stored as arq would, and
        the end event wakes whoever waits."""
        from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix

        failed = JobResult(job_id=job_id, generation_id="", ok=False, error=reason)
        record = {"s": True, "r": failed.model_dump(), "t": 1, "f": ARQ_FUNCTION, "a": [], "k": {}}
        outcome = await self.redis.eval(
            _CANCEL_SCRIPT,
            5,
            result_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            queue_name,
            job_key_prefix + job_id,
            CANCEL_KEY + job_id,
            job_id,
            reason,
            EVENTS_TTL_S,
            pack(record),
            CLAIM_FENCE_MS,
        )
        said = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if said != "removed":
            return cast(CancelOutcome, said)
        await publish_event(self.redis, ProgressEvent(job_id=job_id, state="failed", message=reason))
        return "removed"

    async def finished_result(self, job_id: str) -> JobResult | None:
        from arq.constants import result_key_prefix

        raw = await self.redis.get(result_key_prefix + job_id)
        if raw is None:
            return None
        record = unpack(raw)
        if not record.get("s"):
            return JobResult(job_id=job_id, generation_id="", ok=False, error=str(record.get("r")))
        return JobResult.model_validate(record["r"])

    async def close(self) -> None:
        await self.redis.aclose()
