"""Placement rules (router/placement.py), each on its own, and a small run of the fleet simulation."""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.placement import (
    DEFAULT_STARVATION_S,
    QueueView,
    WorkerView,
    next_profile,
    plan_assignment,
)

ROOT = Path(__file__).resolve().parents[2]


def queue(
    profile: str, waiting: int = 0, oldest: float = 0.0, load: float = 30.0, job: float = 5.0
) -> QueueView:
    return QueueView(profile, waiting, oldest if waiting else 0.0, load, job)


def worker(name: str, *loaded: str, busy: bool = False, capacity: int = 1) -> WorkerView:
    return WorkerView(name, loaded, capacity, busy)


# --- rule 3: warm work ----------------------------------------------------------------------------------


def test_warm_profile_preferred_over_a_swap_the_backlog_would_justify() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "a", busy=True), worker("w2", "b", busy=True)]
    queues = [queue("a", 1, oldest=2.0), queue("b", 40, oldest=60.0)]  # b: 40 × 5 / 2 = 100 s > 30 s load
    assert next_profile(me, queues, fleet) == "a"


def test_among_warm_profiles_the_oldest_job_goes_first() -> None:
    me = worker("me", "a", "b", capacity=2)
    fleet = [me, worker("w1", "a", "b", busy=True, capacity=2)]
    queues = [queue("a", 9, oldest=10.0), queue("b", 1, oldest=30.0)]
    assert next_profile(me, queues, fleet) == "b"


# --- rules 1 and 2: starving queues ---------------------------------------------------------------------


def test_warm_starving_queue_goes_first() -> None:
    me = worker("me", "a", "b", capacity=2)
    fleet = [me]
    queues = [queue("a", 30, oldest=100.0), queue("b", 1, oldest=DEFAULT_STARVATION_S + 1)]
    assert next_profile(me, queues, fleet) == "b"


def test_starving_unheld_queue_pulls_a_worker_off_warm_work() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "a", busy=True)]  # someone else still serves a
    queues = [queue("a", 20, oldest=50.0), queue("rare", 1, oldest=DEFAULT_STARVATION_S + 1, load=40.0)]
    assert next_profile(me, queues, fleet) == "rare"


def test_the_only_holder_of_a_waiting_queue_does_not_leave_it_for_a_starving_one() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "b", busy=True)]
    queues = [queue("a", 3, oldest=10.0), queue("rare", 1, oldest=DEFAULT_STARVATION_S + 1)]
    assert next_profile(me, queues, fleet) == "a"


def test_starving_queue_held_by_busy_workers_gets_a_free_worker() -> None:
    me = worker("me", "c")
    fleet = [me, worker("w1", "b", busy=True), worker("w2", "c", busy=True)]
    queues = [queue("b", 2, oldest=DEFAULT_STARVATION_S + 1), queue("c", 0)]  # 2 × 5 / 2 < 30: no backlog
    assert next_profile(me, queues, fleet) == "b"


def test_starving_queue_others_serve_does_not_take_the_last_copy_of_a_profile() -> None:
    me = worker("me", "c")  # the only worker holding c: giving it up only moves the problem
    fleet = [me, worker("w1", "b", busy=True)]
    queues = [queue("b", 2, oldest=DEFAULT_STARVATION_S + 1), queue("c", 0)]
    assert next_profile(me, queues, fleet) is None


def test_warm_work_beats_a_starving_queue_that_others_hold() -> None:
    # Pulling workers off warm work for a held queue made queues starve in turn (see the module doc).
    me = worker("me", "a")
    fleet = [me, worker("w1", "a", busy=True), worker("w2", "b", busy=True)]
    queues = [queue("a", 4, oldest=20.0), queue("b", 9, oldest=DEFAULT_STARVATION_S + 50)]
    assert next_profile(me, queues, fleet) == "a"


def test_starvation_threshold_is_a_parameter() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "a", busy=True)]
    queues = [queue("a", 5, oldest=5.0), queue("rare", 1, oldest=30.0)]
    assert next_profile(me, queues, fleet) == "a"
    assert next_profile(me, queues, fleet, starvation_s=20.0) == "rare"


# --- rule 4: unheld queues ------------------------------------------------------------------------------


def test_unheld_queue_is_loaded_by_a_worker_with_nothing_warm_to_do() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "a", busy=True)]
    queues = [queue("a", 0), queue("rare", 1, oldest=1.0, load=40.0, job=7.0)]  # 7 s of work, 40 s load
    assert next_profile(me, queues, fleet) == "rare"


def test_a_worker_loading_a_profile_counts_as_holding_it() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "a", busy=True), worker("w2", "rare", busy=True)]  # w2 is loading it
    queues = [queue("a", 0), queue("rare", 1, oldest=1.0, load=40.0, job=7.0)]
    assert next_profile(me, queues, fleet) is None


# --- rule 5: swap only when the backlog pays for it -----------------------------------------------------


def test_swap_only_when_the_backlog_outlasts_the_load() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "a", busy=True), worker("w2", "b", busy=True)]
    small = [queue("a", 0), queue("b", 11, oldest=20.0)]  # 11 × 5 / (1 + 1) = 27.5 s < 30 s
    large = [queue("a", 0), queue("b", 13, oldest=20.0)]  # 13 × 5 / 2 = 32.5 s > 30 s
    assert next_profile(me, small, fleet) is None
    assert next_profile(me, large, fleet) == "b"


def test_evicting_the_last_copy_of_a_profile_adds_its_reload_to_the_cost() -> None:
    me = worker("me", "a")  # nobody else holds a: its next job will need a 20 s load
    fleet = [me, worker("w1", "b", busy=True)]
    queues = [queue("a", 0, load=20.0), queue("b", 13, oldest=20.0)]  # 32.5 s < 30 s + 20 s
    assert next_profile(me, queues, fleet) is None
    queues = [queue("a", 0, load=20.0), queue("b", 21, oldest=20.0)]  # 52.5 s > 50 s
    assert next_profile(me, queues, fleet) == "b"


def test_a_free_slot_evicts_nothing() -> None:
    me = worker("me", "a", capacity=2)
    fleet = [me, worker("w1", "b", busy=True)]
    queues = [queue("a", 0, load=20.0), queue("b", 13, oldest=20.0)]
    assert next_profile(me, queues, fleet) == "b"


def test_swap_goes_where_it_clears_the_most_work() -> None:
    me = worker("me", "a")
    fleet = [me, worker("w1", "a"), worker("w2", "b", busy=True), worker("w3", "c", busy=True)]
    queues = [queue("b", 14, oldest=90.0), queue("c", 20, oldest=10.0), queue("a", 0)]
    assert next_profile(me, queues, fleet) == "c"


# --- rule 6: stay warm ----------------------------------------------------------------------------------


def test_idle_when_nothing_waits() -> None:
    me = worker("me", "a")
    assert next_profile(me, [queue("a"), queue("b")], [me]) is None
    assert next_profile(me, [], [me]) is None


def test_never_loads_what_an_idle_worker_already_holds() -> None:
    me = worker("me", "a")
    queues = [queue("b", 50, oldest=DEFAULT_STARVATION_S + 10)]
    assert next_profile(me, queues, [me, worker("w1", "b")]) is None  # w1 takes it without a load
    assert next_profile(me, queues, [me, worker("w1", "b", busy=True)]) == "b"


def test_the_answer_does_not_depend_on_the_worker_being_in_its_fleet() -> None:
    me = worker("me", "a")
    others = [worker("w1", "a", busy=True), worker("w2", "b", busy=True)]
    for queues in (
        [queue("a", 0), queue("b", 13, oldest=20.0)],
        [queue("a", 2, oldest=1.0), queue("rare", 1, oldest=DEFAULT_STARVATION_S + 1)],
        [queue("a", 0), queue("rare", 1, oldest=1.0)],
    ):
        assert next_profile(me, queues, [me, *others]) == next_profile(me, queues, others)


PROFILES = ("a", "b", "c", "d")


@st.composite
def situations(draw: st.DrawFn) -> tuple[WorkerView, list[QueueView], list[WorkerView]]:
    capacity = draw(st.integers(1, 3))
    held = st.lists(st.sampled_from(PROFILES), max_size=capacity, unique=True).map(tuple)
    me = WorkerView("me", draw(held), capacity, False)
    others = [
        WorkerView(f"w{i}", draw(held), capacity, draw(st.booleans())) for i in range(draw(st.integers(0, 6)))
    ]
    queues = []
    for profile in PROFILES:
        waiting = draw(st.integers(0, 40))
        oldest = draw(st.floats(0.0, 400.0)) if waiting else 0.0
        queues.append(
            QueueView(profile, waiting, oldest, draw(st.floats(5.0, 60.0)), draw(st.floats(1.0, 10.0)))
        )
    return me, queues, [me, *others]


@settings(max_examples=300, deadline=None)
@given(situations())
def test_answers_are_well_formed(situation: tuple[WorkerView, list[QueueView], list[WorkerView]]) -> None:
    me, queues, fleet = situation
    chosen = next_profile(me, queues, fleet)
    waiting = {q.profile for q in queues if q.waiting}
    if chosen is None:
        # Idle only when there is nothing it holds to do.
        assert not waiting & set(me.loaded)
        return
    assert chosen in waiting
    if chosen not in me.loaded:
        assert all(w.busy for w in fleet if w.name != me.name and chosen in w.loaded)


# --- plan_assignment ------------------------------------------------------------------------------------


def test_assignment_is_proportional_and_covers_every_demanded_profile() -> None:
    workers = [worker(f"w{i}") for i in range(8)]
    plan = plan_assignment({"a": 2.4, "b": 1.25, "c": 0.6, "d": 0.35, "unused": 0.0}, workers)
    assert list(plan) == [w.name for w in workers]
    counts = {p: sum(p in held for held in plan.values()) for p in ("a", "b", "c", "d", "unused")}
    assert counts == {"a": 4, "b": 2, "c": 1, "d": 1, "unused": 0}
    assert all(len(held) == 1 for held in plan.values())


def test_assignment_gives_a_tiny_demand_a_worker_too() -> None:
    plan = plan_assignment({"a": 100.0, "rare": 0.01}, [worker("w0"), worker("w1"), worker("w2")])
    assert sorted(p for held in plan.values() for p in held) == ["a", "a", "rare"]


def test_assignment_fills_every_slot_with_distinct_profiles() -> None:
    workers = [worker(f"w{i}", capacity=2) for i in range(4)]
    plan = plan_assignment({"a": 3.0, "b": 1.0, "c": 0.5}, workers)
    assert all(len(held) == 2 and len(set(held)) == 2 for held in plan.values())
    assert {p for held in plan.values() for p in held} == {"a", "b", "c"}
    counts = {p: sum(p in held for held in plan.values()) for p in ("a", "b", "c")}
    assert counts["a"] >= counts["b"] >= counts["c"] >= 1


def test_assignment_with_more_profiles_than_slots_keeps_the_largest() -> None:
    plan = plan_assignment({"a": 1.0, "b": 3.0, "c": 2.0}, [worker("w0"), worker("w1")])
    assert sorted(p for held in plan.values() for p in held) == ["b", "c"]


def test_assignment_of_an_empty_fleet_or_no_demand() -> None:
    assert plan_assignment({"a": 1.0}, []) == {}
    assert plan_assignment({}, [worker("w0")]) == {"w0": ()}


# --- the simulation -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_sim() -> ModuleType:
    path = ROOT / "bench" / "fleet_sim.py"
    spec = importlib.util.spec_from_file_location("fleet_sim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_sim"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("workers", [8, 4])
def test_small_simulation_beats_fifo_without_starving_the_rare_profile(
    fleet_sim: ModuleType, workers: int
) -> None:
    started = time.perf_counter()
    jobs = fleet_sim.make_jobs(300, workers, 0.8, random.Random(1))
    assert fleet_sim.offered_utilization(jobs, workers) == pytest.approx(0.8)
    rarest = min(fleet_sim.PROFILES, key=lambda p: p.share)
    summaries = {}
    for policy in ("ours", "fifo"):
        result = fleet_sim.simulate(jobs, policy=policy, workers=workers)
        assert len(result.all_waits()) == len(jobs)  # every job ran, once
        assert min(result.all_waits()) >= 0
        summaries[policy] = fleet_sim.summarize(result, rarest.name, workers)
    ours, fifo = summaries["ours"], summaries["fifo"]
    assert time.perf_counter() - started < 3.0

    assert ours.p95 <= 0.5 * fifo.p95
    assert ours.swaps < fifo.swaps
    # The rarest profile (5 %, the slowest to load) is not starved: a queue nobody holds is rescued once
    # it passes the threshold, after which it waits for a worker to come free and for its 40 s load.
    assert ours.rare_worst <= 2 * DEFAULT_STARVATION_S
    assert ours.rare_worst < fifo.rare_worst
    if workers == 4:
        assert ours.swaps > 0  # one worker per profile: the popular one needs help, so the rules swap
