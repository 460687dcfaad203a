"""The Courier: open generations are finished and delivered exactly once after a crash or a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.courier import Courier, PostFailed
from bot.ledger import Generation, Ledger
from bot.studio import Finished, Origin, Studio
from jobs.queue import JobHandle, LocalQueue
from jobs.spec import JobResult, JobSpec
from router.catalog import Catalog

ORIGIN = Origin(platform="discord", server_id="s1", channel_id="c1", user_id="u1")


class Counting:
    """A runner that counts its runs; `fail` makes the job fail with a reason."""

    def __init__(self, *, fail: bool = False) -> None:
        self.runs: list[str] = []
        self.fail = fail

    async def __call__(self, spec: JobSpec, progress: object) -> JobResult:
        self.runs.append(spec.job_id)
        return JobResult(
            job_id=spec.job_id, generation_id=spec.generation_id, ok=not self.fail, error="GPU fell over"
        )


class Posts:
    """The platform: records posts; `failures` are raised first, one per post attempt."""

    def __init__(self, *failures: PostFailed) -> None:
        self.posted: list[str] = []
        self.reported: list[tuple[str, str]] = []
        self.failures = list(failures)

    async def deliver(self, generation: Generation, finished: Finished) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.posted.append(generation.id)

    async def report(self, generation: Generation, reason: str) -> None:
        self.reported.append((generation.id, reason))


async def a_studio(
    tmp_path: Path, catalog: Catalog, runner: Counting | None = None
) -> tuple[Studio, LocalQueue]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = LocalQueue(runner or Counting())
    return Studio(ledger=ledger, catalog=catalog, queue=queue, generations_dir=tmp_path / "g"), queue


async def test_a_generation_the_bot_died_on_is_run_and_delivered_once(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    class Stalled(LocalQueue):
        async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
            return await super().submit(spec, queue_name, fast=fast)

    never = asyncio.Event()

    async def hang(spec: JobSpec, progress: object) -> JobResult:
        await never.wait()
        raise AssertionError("unreachable")

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    dying = Stalled(hang)
    before = Studio(ledger=ledger, catalog=tiny_catalog, queue=dying, generations_dir=tmp_path / "g")
    submission = await before.portrait(ORIGIN, "a portrait --fast")
    await dying.close()  # the bot dies with the job in its in-process queue

    runner = Counting()
    studio, queue = await a_studio(tmp_path, tiny_catalog, runner)
    posts = Posts()
    outcomes = await Courier(studio, posts.deliver, posts.report).resume()
    assert [(o.generation_id, o.state) for o in outcomes] == [(submission.generation_id, "delivered")]
    assert posts.posted == [submission.generation_id]
    assert runner.runs == [submission.spec.job_id]  # the same job, under its own id
    assert await Courier(studio, posts.deliver, posts.report).resume() == []  # nothing twice
    assert posts.posted == [submission.generation_id]
    await queue.close()


async def test_a_generation_recorded_but_never_enqueued_is_enqueued(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    class Down:
        async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
            raise ConnectionError("redis is down")

        async def live_profiles(self) -> None:
            return None

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    broken = Studio(ledger=ledger, catalog=tiny_catalog, queue=Down(), generations_dir=tmp_path / "g")  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await broken.portrait(ORIGIN, "a portrait")
    (recorded,) = await ledger.open_generations()
    assert recorded.status == "recorded"
    studio, queue = await a_studio(tmp_path, tiny_catalog)
    posts = Posts()
    outcomes = await Courier(studio, posts.deliver, posts.report).resume()
    assert [o.state for o in outcomes] == ["delivered"]
    stored = await ledger.get(recorded.id)
    assert stored is not None and stored.status == "delivered"
    await queue.close()


async def test_finished_but_not_delivered_is_posted_without_running_again(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    runner = Counting()
    studio, queue = await a_studio(tmp_path, tiny_catalog, runner)
    finished = await studio.finish(await studio.portrait(ORIGIN, "a portrait --seed 3"))
    posts = Posts()
    outcomes = await Courier(studio, posts.deliver, posts.report).resume()
    assert [o.state for o in outcomes] == ["delivered"] and len(runner.runs) == 1
    generation = await studio.ledger.get(finished.generation_id)
    assert generation is not None
    assert studio.finished_of(generation).caption == finished.caption
    await queue.close()


async def test_a_job_that_fails_on_resume_is_reported_with_its_reason(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    studio, queue = await a_studio(tmp_path, tiny_catalog)
    await studio.ledger.record(
        generation_id="g_aaaaaaaaaaaa", platform="discord", server_id="s1", channel_id="c", user_id="u",
        request={}, route={"lane": "normal", "caption": "x"},
        spec=JobSpec(generation_id="g_aaaaaaaaaaaa", kind="noop").model_dump(mode="json"),
        job_id="j_x", queue="q",
    )  # fmt: skip
    await queue.close()
    failing, queue = await a_studio(tmp_path, tiny_catalog, Counting(fail=True))
    posts = Posts()
    outcomes = await Courier(failing, posts.deliver, posts.report).resume()
    assert [o.state for o in outcomes] == ["failed"]
    assert posts.reported == [("g_aaaaaaaaaaaa", "generation g_aaaaaaaaaaaa failed: GPU fell over")]
    stored = await failing.ledger.get("g_aaaaaaaaaaaa")
    assert stored is not None and (stored.status, stored.error) == ("failed", "GPU fell over")
    await queue.close()


async def test_passing_post_failures_are_retried_and_permanent_ones_recorded(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    studio, queue = await a_studio(tmp_path, tiny_catalog)
    first = await studio.finish(await studio.portrait(ORIGIN, "a portrait"))
    flaky = Posts(PostFailed("502 Bad Gateway"), PostFailed("connection reset"))
    outcomes = await Courier(studio, flaky.deliver, flaky.report, backoff_s=0.01).resume()
    assert [o.state for o in outcomes] == ["delivered"] and flaky.posted == [first.generation_id]

    second = await studio.finish(await studio.portrait(ORIGIN, "a portrait"))
    gone = Posts(PostFailed("Unknown Channel", permanent=True))
    outcomes = await Courier(studio, gone.deliver, gone.report, backoff_s=0.01).resume()
    assert [(o.generation_id, o.state) for o in outcomes] == [(second.generation_id, "failed")]
    stored = await studio.ledger.get(second.generation_id)
    assert stored is not None and stored.error == "could not be delivered: Unknown Channel"
    assert gone.posted == []
    assert await Courier(studio, gone.deliver, gone.report).resume() == []  # not retried forever
    await queue.close()
