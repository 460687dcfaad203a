"""Placement: which profile's queue an idle worker takes its next job from, and what workers preload.

Loading a profile costs tens of seconds (20–40 s for SDXL/SD3-class checkpoints) while a job takes a few,
so a fleet where each worker loads whatever job comes next spends most of its time swapping models. These
rules keep workers on the profiles they hold, swap only when the swap pays for itself, and bound how long
any queue, however rare its profile, can wait.

`next_profile` rules, in order (the first that applies wins; ties go to the oldest job, then the longest
queue, then the profile name):

1. **Warm and starving.** A profile the worker holds whose oldest job has waited longer than
   `starvation_s`.
2. **Starving and unheld: rescued even from warm work.** A starving queue whose profile no other worker
   holds is loaded, even if the worker has warm work waiting, unless the worker is the only holder of a
   warm queue with jobs waiting (leaving would just strand that queue instead). Nothing else could ever
   serve such a queue while the fleet stays busy, so this is what bounds a rare profile's wait.
3. **Warm work.** A profile the worker holds with jobs waiting, oldest job first (FIFO across the
   profiles it holds keeps their tails short).
4. **Unheld or starving: loaded by a worker with nothing warm to do.** A queue with jobs waiting and no
   holder anywhere in the fleet is loaded, oldest first; so is a starving one, unless the load would
   evict the last copy of a profile in the fleet (that would only move the starvation; rule 5 decides).
5. **Swap only when the backlog pays for it.** Load a cold profile when the work this worker would take
   off its queue, ``waiting × job_s / (holders + 1)``, exceeds what the swap costs: the profile's
   ``load_s``, plus the evicted profile's ``load_s`` if no other worker holds that one (its next job
   will need a reload). Among those, the queue where that work is largest.
6. Otherwise **stay warm**: None; the next job of a held profile is cheaper than any swap on offer.

In rules 2, 4 and 5 a worker never loads a profile that another *idle* worker holds: that worker takes
the job on its next poll, without a load, so the answer does not depend on which idle worker asks first.
Workers that are loading a profile count as holding it, so two idle workers do not both rush to load it.

Tuned with `bench/fleet_sim.py` (8 single-profile workers, 4 profiles, bursty arrivals at 80–85 % load,
20 seeds; see docs/benchmarks.md). Each rule is there because the simpler version did worse there:

- letting any starving queue pull workers off warm work, not only an unheld one, made queues starve in
  turn and swap back and forth (at 85 % load: 2.5× the swaps, p95 wait 105 s instead of 88 s);
- ignoring the last copy's reload (rules 4 and 5) almost tripled the swaps, and the rarest profile's
  worst wait went from 82 s to 160 s: its only holder left it for a burst elsewhere;
- a `starvation_s` of 45 s multiplied the swaps by 3.7; 180 s and more did not improve p95 and let the
  worst waits grow (to 313 s on one seed at 300 s).

`plan_assignment` says what workers preload at start: worker slots proportional to demand
(jobs/s × job_s), every profile with demand getting at least one.

Pure functions of their arguments: no I/O and no clock (waits arrive measured, in `QueueView`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_STARVATION_S = 120.0


@dataclass(frozen=True)
class WorkerView:
    """A worker as placement sees it (what its heartbeat says)."""

    name: str
    loaded: tuple[str, ...]  # profiles resident now or being loaded, least recently used first
    capacity: int  # how many profiles fit its memory at once (>= 1); a load beyond it evicts loaded[0]
    busy: bool  # running a job or loading a profile


@dataclass(frozen=True)
class QueueView:
    """One profile's queue: how many jobs wait and for how long, and what a job and a load cost."""

    profile: str
    waiting: int
    oldest_wait_s: float  # how long the oldest waiting job has waited (0 when none)
    load_s: float  # measured median time to load the profile
    job_s: float  # measured median job duration


def _oldest_first(queue: QueueView) -> tuple[float, int, str]:
    return (-queue.oldest_wait_s, -queue.waiting, queue.profile)


def _cleared_work_s(queue: QueueView, holders: int) -> float:
    """The work (seconds) one more worker would take off this queue by joining its holders."""
    return queue.waiting * queue.job_s / (holders + 1)


def _reload_cost_s(worker: WorkerView, queues: Sequence[QueueView], fleet: Sequence[WorkerView]) -> float:
    """What a load costs later on top of itself: reloading the profile it evicts if that was the last copy."""
    if not worker.loaded or len(worker.loaded) < worker.capacity:
        return 0.0  # a free slot: nothing is evicted
    evicted = worker.loaded[0]
    if any(evicted in w.loaded for w in fleet if w.name != worker.name):
        return 0.0
    return next((q.load_s for q in queues if q.profile == evicted), 0.0)


def next_profile(
    worker: WorkerView,
    queues: Sequence[QueueView],
    fleet: Sequence[WorkerView],
    *,
    starvation_s: float = DEFAULT_STARVATION_S,
) -> str | None:
    """Which queue the idle `worker` should take its next job from, or None to stay idle (see module doc).

    `fleet` is every live worker; `worker` may be in it or not (it is left out of its own holder counts).
    """
    pending = [q for q in queues if q.waiting > 0]
    if not pending:
        return None
    holders = {
        q.profile: [w for w in fleet if w.name != worker.name and q.profile in w.loaded] for q in pending
    }
    warm = [q for q in pending if q.profile in worker.loaded]
    # Cold queues this worker might load; one that an idle worker holds is that worker's, for free.
    cold = [q for q in pending if q.profile not in worker.loaded and all(w.busy for w in holders[q.profile])]

    def starving(q: QueueView) -> bool:
        return q.oldest_wait_s > starvation_s

    # 1. Warm and starving.
    warm_starving = [q for q in warm if starving(q)]
    if warm_starving:
        return min(warm_starving, key=_oldest_first).profile

    # 2. Starving with no holder: only a worker leaving other work can serve it while the fleet is busy.
    only_holder_of_waiting = any(not holders[q.profile] for q in warm)
    rescue = [q for q in cold if starving(q) and not holders[q.profile]]
    if rescue and not only_holder_of_waiting:
        return min(rescue, key=_oldest_first).profile

    # 3. Warm work.
    if warm:
        return min(warm, key=_oldest_first).profile

    # 4. Nothing warm to do: give an unheld queue its first worker, or a starving one another (but do not
    #    give up the fleet's last copy of a profile for a queue that others already serve).
    extra_s = _reload_cost_s(worker, queues, fleet)
    needy = [q for q in cold if not holders[q.profile] or (starving(q) and extra_s == 0)]
    if needy:
        return min(needy, key=_oldest_first).profile

    # 5. A swap that pays for itself (and for reloading the last copy of what it evicts).
    worth = {q.profile: _cleared_work_s(q, len(holders[q.profile])) for q in cold}
    paying = [q for q in cold if worth[q.profile] > q.load_s + extra_s]
    if paying:
        return min(paying, key=lambda q: (-worth[q.profile], *_oldest_first(q))).profile

    # 6. Stay warm.
    return None


def plan_assignment(demand: Mapping[str, float], workers: Sequence[WorkerView]) -> dict[str, tuple[str, ...]]:
    """Which profiles each worker should preload: slots proportional to demand, each demanded profile once.

    `demand` is the work each profile brings, in worker-seconds per second (jobs/s × job_s); profiles with
    no demand get nothing. Slots are filled one round over the workers at a time (every worker's first
    slot, then every worker's second, up to its `capacity`): each goes to the profile with the most demand
    per holder, ``demand / (holders + 1)``, that the worker does not hold yet, profiles nobody holds
    first. That is D'Hondt apportionment with a minimum of one: 8 single-slot workers and demand
    2.4 / 1.25 / 0.6 / 0.35 get 4 / 2 / 1 / 1. With more demanded profiles than first slots, the largest
    get them and the rest are loaded when their jobs come (`next_profile` rule 4).
    Returns every worker's name, in the order given, with the profiles to load in that order.
    """
    wanted = {profile: load for profile, load in demand.items() if load > 0}
    plan: dict[str, list[str]] = {w.name: [] for w in workers}
    holders = dict.fromkeys(wanted, 0)
    for slot in range(max((w.capacity for w in workers), default=0)):
        for w in workers:
            options = [p for p in wanted if p not in plan[w.name]]
            if slot >= w.capacity or not options:
                continue
            best = min(options, key=lambda p: (holders[p] > 0, -wanted[p] / (holders[p] + 1), p))
            plan[w.name].append(best)
            holders[best] += 1
    return {name: tuple(profiles) for name, profiles in plan.items()}
