"""Fleet placement: a discrete-event simulation of GPU workers that have to load a profile before they run it.

Run: python bench/fleet_sim.py  [--workers 8] [--jobs 2000] [--seed 1] [--seeds 5] [--capacity 1]
(prints a markdown table; no assertions; no real time: a heapq event loop over simulated seconds).

What is simulated:

- N workers (default 8), each holding up to `capacity` loaded profiles (default 1; a load evicts the least
  recently used one). A worker runs one job at a time; loading a profile keeps it busy for the profile's
  load time and the job starts after that.
- 4 profiles with load times of 20–40 s and job durations of 3–8 s (uniform within each profile's range),
  in a skewed mix of 60 / 25 / 10 / 5 %. The rarest has the longest load: the worst case for starvation.
- Bursty arrivals: a Markov-modulated Poisson process that alternates calm phases (exponential, mean
  120 s) and bursts (mean 30 s) where jobs arrive 3× as fast. The offered load, counting job time only
  (no swaps), is `--utilization` (default 0.80) of the fleet: about 57 % in calm phases and 171 % in
  bursts, so queues build up in every burst and drain again. Each seed's arrival times are scaled so
  that it offers exactly that load (a run spans only about ten calm/burst cycles).

Policies, on the same jobs:

- ours: `router.placement.next_profile` (the real code) decides which queue an idle worker takes its next
  job from; workers start by preloading `plan_assignment` (the preload counts as loads, not swaps).
- FIFO: one global FIFO; an idle worker takes the oldest job and loads its profile if it does not hold it.
  Workers start empty.
- reference, no loads: the same global FIFO on workers that hold every profile from the start and never
  load anything (as if memory were unlimited). Not a policy anyone can run: it shows how much of the
  wait comes from the bursts alone.

Reported per policy: loads and swaps (a swap is a load that evicts a resident profile), the share of the
fleet's time spent loading, wait p50/p95/max (wait = start − arrival, where start is after any load the
job needed), the worst wait of the rarest profile, and the makespan (the last job's end). Each is the
median over `--seeds` seeds (seed, seed+1, …; every seed draws its own jobs, and all policies run on the
same ones), followed by the ratio ours / FIFO of those medians, and then a line per seed.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.placement import (  # noqa: E402
    DEFAULT_STARVATION_S,
    QueueView,
    WorkerView,
    next_profile,
    plan_assignment,
)


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    share: float  # fraction of the jobs
    load_s: float
    job_min_s: float
    job_max_s: float

    @property
    def job_s(self) -> float:
        """The median job duration (uniform durations: the midpoint); what workers would measure."""
        return (self.job_min_s + self.job_max_s) / 2


PROFILES: tuple[ProfileSpec, ...] = (
    ProfileSpec("photoreal-xl", 0.60, 20.0, 3.0, 5.0),
    ProfileSpec("identity-xl", 0.25, 30.0, 4.0, 6.0),
    ProfileSpec("sdxl-base", 0.10, 25.0, 4.0, 6.0),
    ProfileSpec("text-sd35", 0.05, 40.0, 6.0, 8.0),
)
CALM_MEAN_S = 120.0
BURST_MEAN_S = 30.0
BURST_FACTOR = 3.0  # arrival rate in a burst / in a calm phase


@dataclass(frozen=True)
class Job:
    arrival: float
    profile: str
    duration: float


def mean_job_s(profiles: Sequence[ProfileSpec]) -> float:
    return sum(p.share * p.job_s for p in profiles)


def make_jobs(
    count: int,
    workers: int,
    utilization: float,
    rng: random.Random,
    profiles: Sequence[ProfileSpec] = PROFILES,
) -> list[Job]:
    """`count` jobs from the MMPP, with the mean rate that offers `utilization` of the fleet's job time."""
    mean_rate = utilization * workers / mean_job_s(profiles)
    # Time-weighted mean of the two phase rates equals mean_rate.
    calm_rate = mean_rate * (CALM_MEAN_S + BURST_MEAN_S) / (CALM_MEAN_S + BURST_FACTOR * BURST_MEAN_S)
    names = [p.name for p in profiles]
    weights = [p.share for p in profiles]
    by_name = {p.name: p for p in profiles}
    jobs: list[Job] = []
    now, burst = 0.0, False
    phase_end = rng.expovariate(1 / CALM_MEAN_S)
    while len(jobs) < count:
        rate = calm_rate * (BURST_FACTOR if burst else 1.0)
        gap = rng.expovariate(rate)
        if now + gap > phase_end:  # memoryless: restart the clock at the phase change
            now, burst = phase_end, not burst
            phase_end = now + rng.expovariate(1 / (BURST_MEAN_S if burst else CALM_MEAN_S))
            continue
        now += gap
        spec = by_name[rng.choices(names, weights)[0]]
        jobs.append(Job(now, spec.name, rng.uniform(spec.job_min_s, spec.job_max_s)))
    # With ~10 calm/burst cycles per run, one seed would offer 60 % and the next 110 % of the fleet.
    # Stretch or squeeze time so every seed offers exactly `utilization`; the bursts keep their shape.
    scale = sum(j.duration for j in jobs) / (workers * jobs[-1].arrival) / utilization
    return [Job(j.arrival * scale, j.profile, j.duration) for j in jobs]


@dataclass
class Worker:
    index: int
    loaded: list[str]  # least recently used first
    busy: bool = False

    @property
    def name(self) -> str:
        return f"w{self.index}"


@dataclass
class Result:
    policy: str
    loads: int = 0
    swaps: int = 0
    load_s: float = 0.0  # worker-seconds spent loading
    makespan: float = 0.0
    waits: dict[str, list[float]] = field(default_factory=dict)  # per profile

    def all_waits(self) -> list[float]:
        return sorted(w for per in self.waits.values() for w in per)


# A policy: given the idle worker, the queues and the fleet, which profile's queue to take a job from.
Decide = Callable[[WorkerView, list[QueueView], list[WorkerView]], str | None]


def fifo(worker: WorkerView, queues: list[QueueView], fleet: list[WorkerView]) -> str | None:
    """The global FIFO: the profile of the oldest waiting job anywhere (the worker loads it if need be)."""
    pending = [q for q in queues if q.waiting]
    return max(pending, key=lambda q: q.oldest_wait_s).profile if pending else None


def simulate(
    jobs: Sequence[Job],
    *,
    policy: str,
    workers: int = 8,
    capacity: int = 1,
    starvation_s: float = DEFAULT_STARVATION_S,
    profiles: Sequence[ProfileSpec] = PROFILES,
) -> Result:
    """Run `jobs` (sorted by arrival) through a fleet under `policy`: "ours", "fifo" or "reference"."""
    specs = {p.name: p for p in profiles}
    result = Result(policy, waits={p.name: [] for p in profiles})
    queues: dict[str, deque[Job]] = {p.name: deque() for p in profiles}
    fleet = [Worker(i, []) for i in range(workers)]
    events: list[tuple[float, int, str, int]] = []  # (time, tie-break, kind, worker or job index)
    seq = 0

    def push(at: float, kind: str, index: int) -> None:
        nonlocal seq
        heapq.heappush(events, (at, seq, kind, index))
        seq += 1

    def views(now: float) -> tuple[list[QueueView], list[WorkerView]]:
        queue_views = [
            QueueView(
                profile=name,
                waiting=len(queue),
                oldest_wait_s=now - queue[0].arrival if queue else 0.0,
                load_s=specs[name].load_s,
                job_s=specs[name].job_s,
            )
            for name, queue in queues.items()
        ]
        worker_views = [WorkerView(w.name, tuple(w.loaded), capacity, w.busy) for w in fleet]
        return queue_views, worker_views

    decide: Decide
    if policy == "ours":

        def decide(worker: WorkerView, qs: list[QueueView], ws: list[WorkerView]) -> str | None:
            return next_profile(worker, qs, ws, starvation_s=starvation_s)

        # Preload what the plan says, for the expected demand (jobs/s × job_s ∝ share × job_s). The
        # loads take their time like any other: the workers are busy until they are done.
        demand = {p.name: p.share * p.job_s for p in profiles}
        plan = plan_assignment(demand, views(0.0)[1])
        for w in fleet:
            w.loaded = list(plan[w.name])
            if w.loaded:
                w.busy = True
                result.loads += len(w.loaded)
                preload_s = sum(specs[name].load_s for name in w.loaded)
                result.load_s += preload_s
                push(preload_s, "free", w.index)
    elif policy == "fifo":
        decide = fifo
    elif policy == "reference":
        decide = fifo
        capacity = len(profiles)  # room for everything, resident from the start, loaded for free
        for w in fleet:
            w.loaded = list(specs)
    else:
        raise ValueError(f"unknown policy {policy!r}")

    def start(w: Worker, profile: str, now: float) -> None:
        job = queues[profile].popleft()
        begins = now
        if profile in w.loaded:
            w.loaded.remove(profile)  # re-append below: most recently used
        else:
            if len(w.loaded) >= capacity:
                w.loaded.pop(0)
                result.swaps += 1
            result.loads += 1
            result.load_s += specs[profile].load_s
            begins += specs[profile].load_s
        w.loaded.append(profile)
        w.busy = True
        result.waits[profile].append(begins - job.arrival)
        end = begins + job.duration
        result.makespan = max(result.makespan, end)
        push(end, "free", w.index)

    def dispatch(now: float) -> None:
        # Ask idle workers in a fixed order until none of them takes anything: every start changes the
        # queues and the fleet, so the others are asked again with the new views.
        moved = True
        while moved:
            moved = False
            for w in fleet:
                if w.busy:
                    continue
                queue_views, worker_views = views(now)
                profile = decide(
                    WorkerView(w.name, tuple(w.loaded), capacity, False), queue_views, worker_views
                )
                if profile is not None:
                    start(w, profile, now)
                    moved = True

    for index, job in enumerate(jobs):
        push(job.arrival, "arrive", index)
    while events:
        now, _, kind, index = heapq.heappop(events)
        if kind == "arrive":
            job = jobs[index]
            queues[job.profile].append(job)
            if policy == "ours":
                # The moment this job would start starving: idle workers must look again then.
                push(job.arrival + starvation_s + 1e-6, "wake", index)
        elif kind == "free":
            fleet[index].busy = False
        dispatch(now)
    return result


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values), max(1, math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Summary:
    loads: int
    swaps: int
    p50: float
    p95: float
    worst: float
    rare_worst: float
    makespan: float
    loading: float  # share of the fleet's time (workers × makespan) spent loading profiles


def summarize(result: Result, rarest: str, workers: int) -> Summary:
    waits = result.all_waits()
    return Summary(
        loads=result.loads,
        swaps=result.swaps,
        loading=result.load_s / (workers * result.makespan) if result.makespan else 0.0,
        p50=percentile(waits, 50),
        p95=percentile(waits, 95),
        worst=waits[-1] if waits else 0.0,
        rare_worst=max(result.waits[rarest], default=0.0),
        makespan=result.makespan,
    )


def offered_utilization(jobs: Sequence[Job], workers: int) -> float:
    """Job time offered per worker-second of the arrival window (what the fleet would be busy, no swaps)."""
    return sum(j.duration for j in jobs) / (workers * jobs[-1].arrival) if jobs else 0.0


LABELS = {
    "ours": "ours (router.placement)",
    "fifo": "FIFO to any worker",
    "reference": "reference: all profiles resident, no loads",
}


POLICIES = ("ours", "fifo", "reference")
RAREST = min(PROFILES, key=lambda p: p.share).name


def run_policies(
    seeds: Sequence[int],
    *,
    workers: int = 8,
    jobs: int = 2000,
    capacity: int = 1,
    utilization: float = 0.80,
    starvation_s: float = DEFAULT_STARVATION_S,
) -> dict[str, list[Summary]]:
    """Every policy on every seed's jobs: one Summary per seed, by policy."""
    per_seed: dict[str, list[Summary]] = {p: [] for p in POLICIES}
    for seed in seeds:
        drawn = make_jobs(jobs, workers, utilization, random.Random(seed))
        for policy in POLICIES:
            result = simulate(
                drawn, policy=policy, workers=workers, capacity=capacity, starvation_s=starvation_s
            )
            per_seed[policy].append(summarize(result, RAREST, workers))
    return per_seed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (seed, seed+1, …)")
    parser.add_argument("--capacity", type=int, default=1, help="profiles a worker holds at once")
    parser.add_argument("--utilization", type=float, default=0.80, help="offered load without swaps")
    parser.add_argument("--starvation-s", type=float, default=DEFAULT_STARVATION_S)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.jobs < 1 or args.seeds < 1 or args.capacity < 1:
        parser.error("--workers, --jobs, --seeds and --capacity must be at least 1")
    if args.utilization <= 0:
        parser.error("--utilization must be above 0")

    started = time.perf_counter()
    rarest = RAREST
    policies = POLICIES
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed = run_policies(
        seeds,
        workers=args.workers,
        jobs=args.jobs,
        capacity=args.capacity,
        utilization=args.utilization,
        starvation_s=args.starvation_s,
    )
    elapsed = time.perf_counter() - started

    def med(policy: str, attr: str) -> float:
        return statistics.median(float(getattr(s, attr)) for s in per_seed[policy])

    def ratio(a: float, b: float) -> str:
        if not b:
            return "—"
        return f"{a / b:.2f}" if a / b >= 0.1 or a == 0 else f"{a / b:.1g}"  # 0.002, not 0.00

    burst = (
        args.utilization
        * BURST_FACTOR
        * (CALM_MEAN_S + BURST_MEAN_S)
        / (CALM_MEAN_S + BURST_FACTOR * BURST_MEAN_S)
    )
    calm = burst / BURST_FACTOR
    print(
        f"{args.workers} workers holding {args.capacity} profile(s) each (LRU); {args.jobs} jobs per seed; "
        f"seeds {seeds[0]}–{seeds[-1]}; starvation_s {args.starvation_s:.0f}; simulated in {elapsed:.1f} s"
    )
    print(
        "Profiles: "
        + ", ".join(
            f"{p.name} {p.share:.0%} (load {p.load_s:.0f} s, job {p.job_min_s:.0f}–{p.job_max_s:.0f} s)"
            for p in PROFILES
        )
    )
    print(
        f"Arrivals: MMPP, calm phases {CALM_MEAN_S:.0f} s and bursts {BURST_MEAN_S:.0f} s "
        f"(exponential means), {BURST_FACTOR:g}× the rate in bursts; offered load without swaps "
        f"{args.utilization:.0%} of the fleet ({calm:.0%} calm, {burst:.0%} in bursts)"
    )
    print()
    print(f"Medians over the {len(seeds)} seeds (each column on its own):")
    print()
    print(
        f"| policy | loads | swaps | time loading | wait p50 | wait p95 | wait max | worst wait, {rarest} "
        "(rarest) | makespan |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for policy in policies:
        print(
            f"| {LABELS[policy]} | {med(policy, 'loads'):.0f} | {med(policy, 'swaps'):.0f} "
            f"| {med(policy, 'loading'):.0%} | {med(policy, 'p50'):.1f} s | {med(policy, 'p95'):.1f} s "
            f"| {med(policy, 'worst'):.1f} s | {med(policy, 'rare_worst'):.1f} s "
            f"| {med(policy, 'makespan'):.0f} s |"
        )
    cells = [
        ratio(med("ours", attr), med("fifo", attr))
        for attr in ("loads", "swaps", "loading", "p50", "p95", "worst", "rare_worst", "makespan")
    ]
    print(f"| **ratio ours / FIFO** | {' | '.join(cells)} |")
    print()
    print(
        "Per seed, ours against FIFO (goal: p95 ratio ≤ 0.50; the rarest profile's worst wait stays bounded):"
    )
    print()
    print(
        f"| seed | p95 ours | p95 FIFO | p95 ratio | swaps ratio | worst wait {rarest}, ours | same, FIFO |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for seed, ours, fifo_ in zip(seeds, per_seed["ours"], per_seed["fifo"], strict=True):
        print(
            f"| {seed} | {ours.p95:.1f} s | {fifo_.p95:.1f} s | {ratio(ours.p95, fifo_.p95)} "
            f"| {ratio(ours.swaps, fifo_.swaps)} | {ours.rare_worst:.1f} s | {fifo_.rare_worst:.1f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
