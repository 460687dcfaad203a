"""Foundation benchmarks: what the queue and the worker add on top of the diffusion pipeline itself.

    python bench/foundation.py [--quick]

Everything runs on the CPU with the tiny-xl profile (a random-weight SDXL built on this machine), in one
process, against a redis-server this script starts on a free loopback port and stops at the end. Every
measurement is compared with a baseline taken in the same process, interleaved round by round, so the
ratios hold up on a noisy machine better than the absolute times do. Nothing here asserts on time: the
script prints a markdown table (median, baseline, ratio, target) and the reader judges.

See docs/benchmarks.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from arq import Worker, create_pool, func
from arq.connections import RedisSettings

from jobs.pipelines import txt2img
from jobs.queue import ArqQueue, JobHandle, LocalQueue
from jobs.settings import WorkerSettings
from jobs.spec import JobResult, JobSpec, ProgressEvent, Recipe, pack, unpack
from jobs.worker import JobRunner, SupportsRun, arq_worker
from router.catalog import Catalog, load_catalog

PROFILE = "tiny-xl"
QUEUE = "bench:likeness:profile:tiny-xl"
RAW_QUEUE = "bench:raw"
POLL_DELAY_S = 0.01  # the same poll delay on every worker and every result poll, ours and raw
KEEP_RESULT_S = 24 * 3600  # what arq_worker keeps results for; the raw worker gets the same
SEEDS4 = (7, 8, 9, 10)
WIDTH, HEIGHT, STEPS = 256, 256, 4
PROMPT = "editorial portrait of a fisherman, soft window light"
NEGATIVE = "blurry"
JOB_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Plan:
    rounds: int  # interleaved rounds per pipeline measurement (1, 2)
    residency_jobs: int
    queue_jobs: int  # no-op jobs per throughput round
    queue_rounds: int  # throughput rounds per side and poll delay, interleaved ours / raw
    latency_samples: int  # idle enqueue-to-start samples per side


FULL = Plan(rounds=7, residency_jobs=20, queue_jobs=500, queue_rounds=3, latency_samples=100)
QUICK = Plan(rounds=3, residency_jobs=20, queue_jobs=500, queue_rounds=1, latency_samples=30)
FAST_POLL_S = 0.001  # arq starts at most one job per poll with max_jobs=1: a short poll shows per-job cost


@dataclass(frozen=True)
class Row:
    measurement: str
    median: str
    baseline: str
    ratio: str
    target: str


_T0 = time.perf_counter()


def say(message: str) -> None:
    """Progress on stderr; the table alone goes to stdout."""
    print(f"[bench {time.perf_counter() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)


# --- the machine and redis-server ------------------------------------------------------------------


def machine_line() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    redis_version = "?"
    binary = shutil.which("redis-server")
    if binary is not None:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
        redis_version = next((p[2:] for p in out.split() if p.startswith("v=")), "?")
    return (
        f"{model}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), "
        f"torch {torch.__version__}, diffusers {version('diffusers')}, arq {version('arq')}, "
        f"redis-server {redis_version}, Python {platform.python_version()} ({sys.platform})"
    )


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """A throw-away redis-server on a free loopback port, no persistence; stopped on the way out."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: `apt-get install -y redis-server`")
    for _ in range(5):
        port = _free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(workdir), "--protected-mode", "yes", "--loglevel", "warning"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = RedisServer(port, process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if server.ping():
                break
            time.sleep(0.02)
        if server.ping():
            try:
                yield server
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return
        process.kill()
        process.wait()
    raise SystemExit("could not start redis-server on a free loopback port")


# --- statistics and formatting ---------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def paired_ratio(ours: list[float], baseline: list[float]) -> float:
    """Median of the per-round ratios: rounds are interleaved, so drift on the machine cancels out."""
    return median([a / b for a, b in zip(ours, baseline, strict=True)])


def seconds(value: float) -> str:
    return f"{value:.3f} s"


def millis(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def rate(value: float) -> str:
    return f"{value:.0f} jobs/s"


def times(value: float) -> str:
    return f"{value:.2f}"


# --- jobs -------------------------------------------------------------------------------------------


def tiny_spec(
    seeds: tuple[int, ...], *, width: int = WIDTH, height: int = HEIGHT, steps: int = STEPS
) -> JobSpec:
    """A txt2img job on tiny-xl (a fresh job id each call)."""
    return JobSpec(
        generation_id="g_bench",
        prompt=PROMPT,
        negative=NEGATIVE,
        recipe=Recipe(
            profile=PROFILE,
            family="sdxl",
            checkpoint="tiny:sdxl",
            scheduler="EulerDiscreteScheduler",
            steps=steps,
            cfg=5.0,
            width=width,
            height=height,
            seeds=seeds,
        ),
    )


def noop_spec() -> JobSpec:
    return JobSpec(generation_id="g_bench", kind="noop")


def checked(result: JobResult) -> JobResult:
    if not result.ok:
        raise RuntimeError(f"bench job {result.job_id} failed: {result.error}")
    return result


async def through(queue: LocalQueue | ArqQueue, spec: JobSpec) -> tuple[float, JobResult]:
    """Submit → result, timed."""
    started = time.perf_counter()
    handle: JobHandle = await queue.submit(spec, QUEUE)
    result = checked(await handle.result(timeout=JOB_TIMEOUT_S))
    return time.perf_counter() - started, result


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """An arq worker polling in this event loop until the block ends."""
    task = asyncio.create_task(worker.async_run())
    await asyncio.sleep(0.1)  # connected and polling
    try:
        yield worker
        # The client sees a result before arq's job task has returned; Worker.close() would cancel it.
        await asyncio.gather(*worker.tasks.values())
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


# --- 1. worker overhead ----------------------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    settings: WorkerSettings
    catalog: Catalog
    runner: JobRunner
    redis_url: str


async def worker_overhead(bench: Bench) -> list[Row]:
    profile = bench.catalog.get(PROFILE)
    memory = profile.memory_gb if profile is not None else 8.0
    probe = tiny_spec(SEEDS4)
    assert probe.recipe is not None
    pipeline, _ = bench.runner.cache.get(probe.recipe.checkpoint, probe.recipe.family, memory)

    def bare() -> float:
        spec = tiny_spec(SEEDS4)
        assert spec.recipe is not None
        started = time.perf_counter()
        txt2img(pipeline, spec.prompt, spec.negative, spec.recipe, lambda step, total: None)
        return time.perf_counter() - started

    local = LocalQueue(bench.runner.run)
    arq_queue = await ArqQueue.connect(bench.redis_url, poll_delay_s=POLL_DELAY_S)

    async def via_arq() -> tuple[float, JobResult]:
        # The worker polls only while its job is in flight: an idle poller would also slow the others.
        worker = arq_worker(bench.runner, QUEUE, bench.redis_url, poll_delay_s=POLL_DELAY_S)
        async with running(worker):
            return await through(arq_queue, tiny_spec(SEEDS4))

    say("1. worker overhead: warming up")
    for _ in range(2):
        bare()
        await through(local, tiny_spec(SEEDS4))
    await via_arq()

    bare_s: list[float] = []
    local_s: list[float] = []
    arq_s: list[float] = []
    local_results: list[JobResult] = []
    arq_results: list[JobResult] = []

    async def one_bare() -> None:
        bare_s.append(bare())

    async def one_local() -> None:
        took, result = await through(local, tiny_spec(SEEDS4))
        local_s.append(took)
        local_results.append(result)

    async def one_arq() -> None:
        took, result = await via_arq()
        arq_s.append(took)
        arq_results.append(result)

    steps: list[Callable[[], Awaitable[None]]] = [one_bare, one_local, one_arq]
    for round_ in range(bench.plan.rounds):
        say(f"1. worker overhead: round {round_ + 1}/{bench.plan.rounds}")
        for k in range(len(steps)):  # rotate the order so no side always goes first
            await steps[(round_ + k) % len(steps)]()
    await local.close()
    await arq_queue.close()

    def phase(results: list[JobResult], name: str) -> list[float]:
        return [r.timings[name] for r in results]

    def outside(took: list[float], results: list[JobResult]) -> list[float]:
        return [t - r.timings["total"] for t, r in zip(took, results, strict=True)]

    bare_m = seconds(median(bare_s))
    shape = f"{len(SEEDS4)}×{WIDTH}×{HEIGHT}, {STEPS} steps"
    rows = [
        (f"1a. {shape} job, LocalQueue submit→result vs bare txt2img", local_s, "≤ 1.10"),
        ("1b. same job, ArqQueue + arq worker (same process) vs bare", arq_s, "≤ 1.10"),
        (
            "1c. LocalQueue: pipeline call in the worker (timings.run) vs bare",
            phase(local_results, "run"),
            "≈ 1",
        ),
        ("1d. ArqQueue: pipeline call in the worker (timings.run) vs bare", phase(arq_results, "run"), "≈ 1"),
        (
            "1e. encode: 4 PNGs with metadata + grid image (timings.encode)",
            phase(local_results, "encode"),
            "—",
        ),
        (
            "1f. LocalQueue: submit→result minus timings.total (queue)",
            outside(local_s, local_results),
            "—",
        ),
        (
            "1g. ArqQueue: submit→result minus timings.total (Redis, polls)",
            outside(arq_s, arq_results),
            "—",
        ),
    ]
    return [
        Row(name, seconds(median(values)), bare_m, times(paired_ratio(values, bare_s)), target)
        for name, values, target in rows
    ]


# --- 2. batching -----------------------------------------------------------------------------------


async def batching(bench: Bench) -> list[Row]:
    local = LocalQueue(bench.runner.run)

    async def four_singles() -> tuple[float, float]:
        started = time.perf_counter()
        handles = [await local.submit(tiny_spec((seed,)), QUEUE) for seed in SEEDS4]
        results = [checked(await h.result(timeout=JOB_TIMEOUT_S)) for h in handles]
        return time.perf_counter() - started, sum(r.timings["run"] for r in results)

    say("2. batching: warming up")
    await through(local, tiny_spec((SEEDS4[0],)))
    batch_s: list[float] = []
    singles_s: list[float] = []
    batch_run_s: list[float] = []
    singles_run_s: list[float] = []
    for round_ in range(bench.plan.rounds):
        say(f"2. batching: round {round_ + 1}/{bench.plan.rounds}")
        for k in range(2):
            if (round_ + k) % 2 == 0:
                took, result = await through(local, tiny_spec(SEEDS4))
                batch_s.append(took)
                batch_run_s.append(result.timings["run"])
            else:
                took, run = await four_singles()
                singles_s.append(took)
                singles_run_s.append(run)
    await local.close()
    return [
        Row(
            "2a. one 4-variation job vs four 1-variation jobs (LocalQueue)",
            seconds(median(batch_s)),
            seconds(median(singles_s)),
            times(paired_ratio(batch_s, singles_s)),
            "< 1 (report)",
        ),
        Row(
            "2b. same, pipeline call only (timings.run, summed over the 4 jobs)",
            seconds(median(batch_run_s)),
            seconds(median(singles_run_s)),
            times(paired_ratio(batch_run_s, singles_run_s)),
            "—",
        ),
    ]


# --- 3. residency ----------------------------------------------------------------------------------


async def residency(bench: Bench) -> list[Row]:
    say(f"3. residency: {bench.plan.residency_jobs} jobs on a fresh worker")
    fresh = JobRunner(bench.settings, bench.catalog)  # an empty PipelineCache: the first job loads
    local = LocalQueue(fresh.run)
    handles = [
        await local.submit(tiny_spec((seed,), width=128, height=128, steps=2), QUEUE)
        for seed in range(bench.plan.residency_jobs)
    ]
    results = [checked(await h.result(timeout=JOB_TIMEOUT_S)) for h in handles]
    await local.close()
    loads = sum(fresh.cache.loads.values())
    loaded_in = sum(r.timings.get("load", 0.0) for r in results)
    del fresh
    return [
        Row(
            f"3. pipeline loads over {len(results)} tiny-xl jobs, fresh worker (LocalQueue)",
            f"{loads} load{'s' if loads != 1 else ''} ({loaded_in:.2f} s)",
            "1",
            times(loads / 1),
            "= 1 load",
        )
    ]


# --- 4. the queue itself ---------------------------------------------------------------------------


async def noop(ctx: dict[str, Any]) -> None:
    """The raw arq baseline's job function."""
    return None


async def noop_stamped(ctx: dict[str, Any]) -> None:
    ctx["starts"][ctx["job_id"]] = time.perf_counter()


def raw_worker(
    redis_url: str,
    *,
    burst: bool,
    msgpack: bool,
    poll_delay_s: float = POLL_DELAY_S,
    stamped: bool = False,
    **ctx: Any,
) -> Worker:
    """Plain arq with the settings arq_worker gives ours: max_jobs=1, same poll delay and keep_result."""
    serializers: dict[str, Any] = {"job_serializer": pack, "job_deserializer": unpack} if msgpack else {}
    return Worker(
        functions=[func(noop_stamped if stamped else noop, name="noop")],
        queue_name=RAW_QUEUE,
        redis_settings=RedisSettings.from_dsn(redis_url),
        ctx=dict(ctx),
        burst=burst,
        poll_delay=poll_delay_s,
        max_jobs=1,
        handle_signals=False,
        keep_result=KEEP_RESULT_S,
        **serializers,
    )


class StampingRunner:
    """The real JobRunner, noting when the arq job function hands it a job."""

    def __init__(self, inner: SupportsRun) -> None:
        self.inner = inner
        self.starts: dict[str, float] = {}

    async def run(self, spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        self.starts[spec.job_id] = time.perf_counter()
        return await self.inner.run(spec, progress)


@dataclass
class Drain:
    """One throughput round: jobs enqueued first (timed), then drained by a burst worker (timed)."""

    enqueue_rate: float
    drain_rate: float


async def queue_bench(bench: Bench) -> list[Row]:
    plan, url = bench.plan, bench.redis_url
    ours_queue = await ArqQueue.connect(url, poll_delay_s=POLL_DELAY_S)
    raw_pool = await create_pool(RedisSettings.from_dsn(url), job_serializer=pack, job_deserializer=unpack)
    pickle_pool = await create_pool(RedisSettings.from_dsn(url))

    async def ours_round(jobs: int, poll_delay_s: float) -> Drain:
        await ours_queue.redis.flushdb()
        specs = [noop_spec() for _ in range(jobs)]
        started = time.perf_counter()
        for spec in specs:
            await ours_queue.submit(spec, QUEUE)
        enqueued = time.perf_counter() - started
        worker = arq_worker(bench.runner, QUEUE, url, burst=True, poll_delay_s=poll_delay_s)
        started = time.perf_counter()
        await worker.async_run()
        drained = time.perf_counter() - started
        done, failed = worker.jobs_complete, worker.jobs_failed
        await worker.close()
        if (done, failed) != (jobs, 0):
            raise RuntimeError(f"our worker ran {done} jobs, {failed} failed, of {jobs}")
        return Drain(jobs / enqueued, jobs / drained)

    async def raw_round(jobs: int, poll_delay_s: float, *, msgpack: bool) -> Drain:
        pool = raw_pool if msgpack else pickle_pool
        await pool.flushdb()
        started = time.perf_counter()
        for _ in range(jobs):
            await pool.enqueue_job("noop", _queue_name=RAW_QUEUE)
        enqueued = time.perf_counter() - started
        worker = raw_worker(url, burst=True, msgpack=msgpack, poll_delay_s=poll_delay_s)
        started = time.perf_counter()
        await worker.async_run()
        drained = time.perf_counter() - started
        done, failed = worker.jobs_complete, worker.jobs_failed
        await worker.close()
        if (done, failed) != (jobs, 0):
            raise RuntimeError(f"the raw arq worker ran {done} jobs, {failed} failed, of {jobs}")
        return Drain(jobs / enqueued, jobs / drained)

    say("4. queue: warming up")
    await ours_round(50, FAST_POLL_S)
    await raw_round(50, FAST_POLL_S, msgpack=True)
    await raw_round(50, FAST_POLL_S, msgpack=False)

    jobs = plan.queue_jobs
    sides = ("ours", "raw", "pickle")
    drains: dict[tuple[str, float], list[Drain]] = {}
    for poll in (POLL_DELAY_S, FAST_POLL_S):
        for round_ in range(plan.queue_rounds):
            say(
                f"4. queue: throughput at poll {poll * 1000:.0f} ms, round {round_ + 1}/{plan.queue_rounds} "
                f"({jobs} no-op jobs a side)"
            )
            for k in range(len(sides)):
                side = sides[(round_ + k) % len(sides)]
                if side == "pickle" and poll != FAST_POLL_S:
                    continue
                if side == "ours":
                    drain = await ours_round(jobs, poll)
                else:
                    drain = await raw_round(jobs, poll, msgpack=side == "raw")
                drains.setdefault((side, poll), []).append(drain)

    def drained(side: str, poll: float) -> list[float]:
        return [d.drain_rate for d in drains[(side, poll)]]

    def enqueued(side: str) -> list[float]:
        return [d.enqueue_rate for p in (POLL_DELAY_S, FAST_POLL_S) for d in drains[(side, p)]]

    # Idle latency: one job at a time to a worker polling an empty queue. Both workers poll side by side
    # (on their own queues) and the samples alternate, so both see the same background.
    rng = random.Random(7)
    say(f"4. queue: idle latency, {plan.latency_samples} jobs a side, alternating")
    await ours_queue.redis.flushdb()
    stamping = StampingRunner(bench.runner)
    starts: dict[str, float] = {}
    ours_start: list[float] = []
    ours_result: list[float] = []
    raw_start: list[float] = []
    raw_result: list[float] = []

    async def ours_sample() -> None:
        spec = noop_spec()
        started = time.perf_counter()
        handle = await ours_queue.submit(spec, QUEUE)
        checked(await handle.result(timeout=10))
        ours_result.append(time.perf_counter() - started)
        ours_start.append(stamping.starts[spec.job_id] - started)

    async def raw_sample() -> None:
        started = time.perf_counter()
        job = await raw_pool.enqueue_job("noop", _queue_name=RAW_QUEUE)
        assert job is not None
        await job.result(timeout=10, poll_delay=POLL_DELAY_S)
        raw_result.append(time.perf_counter() - started)
        raw_start.append(starts[job.job_id] - started)

    async with (
        running(arq_worker(stamping, QUEUE, url, poll_delay_s=POLL_DELAY_S)),
        running(raw_worker(url, burst=False, msgpack=True, stamped=True, starts=starts)),
    ):
        for i in range(2 * plan.latency_samples):
            await asyncio.sleep(rng.uniform(0.02, 0.04))  # idle, at a random point of the poll cycle
            await (ours_sample() if i % 2 == 0 else raw_sample())

    await ours_queue.close()
    await raw_pool.aclose()
    await pickle_pool.aclose()
    slow, fast = POLL_DELAY_S, FAST_POLL_S
    return [
        Row(
            f"4a. throughput, {jobs} no-op jobs drained by a burst worker (max_jobs=1, poll 10 ms): "
            "ours vs raw arq, both msgpack",
            rate(median(drained("ours", slow))),
            rate(median(drained("raw", slow))),
            times(paired_ratio(drained("ours", slow), drained("raw", slow))),
            "≥ 0.80",
        ),
        Row(
            "4b. same at poll 1 ms (arq starts ≤ 1 job per poll: this shows the per-job cost)",
            rate(median(drained("ours", fast))),
            rate(median(drained("raw", fast))),
            times(paired_ratio(drained("ours", fast), drained("raw", fast))),
            "≥ 0.80",
        ),
        Row(
            "4c. same at poll 1 ms, ours vs raw arq with its default pickle serializer",
            rate(median(drained("ours", fast))),
            rate(median(drained("pickle", fast))),
            times(paired_ratio(drained("ours", fast), drained("pickle", fast))),
            "—",
        ),
        Row(
            f"4d. enqueue rate, {jobs} jobs one await at a time: ArqQueue.submit vs enqueue_job (msgpack)",
            rate(median(enqueued("ours"))),
            rate(median(enqueued("raw"))),
            times(paired_ratio(enqueued("ours"), enqueued("raw"))),
            "—",
        ),
        Row(
            "4e. idle latency p50 (poll 10 ms), enqueue → job function starts",
            millis(percentile(ours_start, 0.5)),
            millis(percentile(raw_start, 0.5)),
            times(percentile(ours_start, 0.5) / percentile(raw_start, 0.5)),
            "≈ 5 ms + overhead",
        ),
        Row(
            "4f. idle latency p50 (poll 10 ms), enqueue → result in the client",
            millis(percentile(ours_result, 0.5)),
            millis(percentile(raw_result, 0.5)),
            times(percentile(ours_result, 0.5) / percentile(raw_result, 0.5)),
            "—",
        ),
    ]


# --- main -----------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    header = Row("measurement", "median", "baseline", "ratio", "target")
    lines = [header, Row("---", "---:", "---:", "---:", "---")]
    return "\n".join(
        f"| {r.measurement} | {r.median} | {r.baseline} | {r.ratio} | {r.target} |" for r in lines + rows
    )


async def run_all(plan: Plan, data_dir: Path, redis_url: str) -> list[Row]:
    settings = WorkerSettings(data_dir=data_dir, device="cpu", redis_url=redis_url, poll_delay_s=POLL_DELAY_S)
    catalog = load_catalog(probe=lambda checkpoint: checkpoint.startswith("tiny:"))
    runner = JobRunner(settings, catalog)
    say(f"loading tiny-xl (built under {data_dir / 'models'} on first use)")
    started = time.perf_counter()
    await runner.preload([PROFILE])
    say(f"tiny-xl ready in {time.perf_counter() - started:.1f} s")
    bench = Bench(plan, settings, catalog, runner, redis_url)
    rows: list[Row] = []
    rows += await worker_overhead(bench)
    rows += await batching(bench)
    rows += await residency(bench)
    rows += await queue_bench(bench)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds: about a minute on 2 cores")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="likeness-bench-")))
        configured = os.environ.get("LIKENESS_DATA_DIR")
        data_dir = Path(configured).expanduser() if configured else scratch / "data"
        redis_dir = scratch / "redis"
        redis_dir.mkdir()
        server = stack.enter_context(redis_server(redis_dir))
        say(f"redis-server on {server.url}; data dir {data_dir}")
        rows = asyncio.run(run_all(plan, data_dir, server.url))
    took = time.perf_counter() - started

    print(f"Machine: {machine_line()}")
    print(
        f"Mode: {'--quick' if args.quick else 'full'}; {plan.rounds} interleaved rounds per pipeline row; "
        f"tiny-xl on CPU; poll delay {POLL_DELAY_S * 1000:.0f} ms on workers and result polls "
        f"({FAST_POLL_S * 1000:.0f} ms in 4b/4c); whole run {took:.0f} s"
    )
    print()
    print(table(rows))
    print()
    print(
        "ratio = median of the per-round ratios (rounds interleave the sides in rotating order); "
        "medians are of the rounds alone.\n"
        "Times are wall-clock, from submit (or the bare call) to the result in hand. 4e is stamped where "
        "arq's job function hands the job to the runner (ours) or enters `noop` (raw).\n"
        "timings.encode covers the 4 PNGs and the grid, encoded in parallel threads."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
