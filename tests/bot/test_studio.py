"""The Studio end to end on the embedded default: parse, route, record, enqueue, run tiny, keep files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.errors import BadFlag, BadPrompt, GenerationRefused, JobFailed, JobTimedOut, UnknownProfile
from bot.ledger import Ledger
from bot.studio import Origin, Studio
from jobs.fleet import WorkerBeat, publish_beat
from jobs.media import read_recipe
from jobs.queue import ArqQueue, JobHandle, LocalQueue
from jobs.settings import WorkerSettings
from jobs.spec import JobResult, JobSpec, ProgressEvent
from jobs.worker import JobRunner
from router.catalog import Catalog, load_catalog

ORIGIN = Origin(platform="cli", server_id="s1", channel_id="c1", user_id="u1")


@pytest.fixture
async def studio(tmp_path: Path, shared_data_dir: Path, tiny_catalog: Catalog) -> AsyncIterator[Studio]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    runner = JobRunner(WorkerSettings(data_dir=shared_data_dir, device="cpu"), tiny_catalog)
    queue = LocalQueue(runner.run)
    yield Studio(
        ledger=ledger,
        catalog=tiny_catalog,
        queue=queue,
        generations_dir=tmp_path / "generations",
        seed_source=lambda: 1234,
    )
    await queue.close()


async def test_portrait_is_recorded_run_and_kept(studio: Studio) -> None:
    submission = await studio.portrait(ORIGIN, "editorial portrait of a fisherman --ar 2:3 --seed 7 --n 2")
    recorded = await studio.ledger.get(submission.generation_id)
    assert recorded is not None
    assert recorded.status == "queued"
    assert recorded.spec["recipe"]["seeds"] == [7, 8]
    assert recorded.route["profile"] == "tiny-xl"
    events = [event async for event in submission.handle.events()]
    assert events[-1].state == "finished"
    finished = await studio.finish(submission)
    assert [path.name for path in finished.files] == [
        f"{submission.generation_id}_1.png",
        f"{submission.generation_id}_2.png",
    ]
    assert finished.grid is not None and finished.grid.is_file()
    assert read_recipe(finished.files[1]).seed_of(2) == 8
    assert "seed 7" in finished.caption and "tiny-xl" in finished.caption
    stored = await studio.ledger.get(submission.generation_id)
    assert stored is not None
    assert stored.status == "finished"
    assert stored.result["files"] == [str(f) for f in finished.files]
    await studio.delivered(submission.generation_id)
    stored = await studio.ledger.get(submission.generation_id)
    assert stored is not None and stored.status == "delivered"


async def test_seed_comes_from_the_seed_source_when_not_given(studio: Studio) -> None:
    submission = await studio.portrait(ORIGIN, "a portrait --n 1 --steps 1")
    assert submission.spec.recipe is not None and submission.spec.recipe.seeds == (1234,)
    await studio.finish(submission)


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("", BadPrompt, "the prompt is empty"),
        ("a portrait --ar 7:3", BadFlag, "--ar 7:3"),
        ("a portrait --engine dalle", UnknownProfile, "--engine dalle is not a profile here"),
        (
            "a portrait --engine photoreal-xl --steps 120",
            BadFlag,
            "--steps 120 is out of range for photoreal-xl",
        ),
    ],
)
async def test_bad_requests_are_refused_before_anything_is_recorded(
    studio: Studio, text: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words.replace("-", r"\-")):
        await studio.portrait(ORIGIN, text)
    assert await studio.ledger.open_generations() == []


async def test_a_failed_job_is_recorded_with_its_reason(tmp_path: Path, tiny_catalog: Catalog) -> None:
    async def failing(spec: JobSpec, progress: object) -> JobResult:
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=False, error="GPU on fire")

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = LocalQueue(failing)
    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
    submission = await studio.portrait(ORIGIN, "a portrait")
    with pytest.raises(JobFailed, match="GPU on fire"):
        await studio.finish(submission)
    stored = await ledger.get(submission.generation_id)
    assert stored is not None
    assert (stored.status, stored.error) == ("failed", "GPU on fire")
    await queue.close()


async def test_recorded_before_enqueued(tmp_path: Path, tiny_catalog: Catalog) -> None:
    seen: list[str | None] = []
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()

    class SpyQueue:
        async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> object:
            stored = await ledger.get(spec.generation_id)
            seen.append(stored.status if stored else None)
            raise ConnectionError("redis is down")

        async def live_profiles(self) -> None:
            return None

        async def close(self) -> None:
            return None

    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=SpyQueue(), generations_dir=tmp_path / "g")  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await studio.portrait(ORIGIN, "a portrait")
    assert seen == ["recorded"]
    assert len(await ledger.open_generations()) == 1


async def test_rerun_of_an_embedded_recipe(studio: Studio) -> None:
    first = await studio.finish(await studio.portrait(ORIGIN, "a portrait --n 2 --seed 3 --steps 2"))
    old = read_recipe(first.files[1])
    again = await studio.finish(await studio.rerun(ORIGIN, old))
    assert again.generation_id != first.generation_id
    assert again.seeds == (4,)
    assert again.files[0].name == f"{again.generation_id}_2.png"
    assert "re-run of" in again.caption


async def test_progress_reaches_the_caller(studio: Studio) -> None:
    submission = await studio.portrait(ORIGIN, "a portrait --n 1 --steps 3")
    states: list[ProgressEvent] = []
    async with asyncio.timeout(60):
        async for event in submission.handle.events():
            states.append(event)
    assert [e.step for e in states if e.state == "step"] == [1, 2, 3]
    await studio.finish(submission)


async def test_no_worker_means_a_clear_timeout(tmp_path: Path, tiny_catalog: Catalog, redis_url: str) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = await ArqQueue.connect(redis_url)
    studio = Studio(
        ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g", job_wait_s=0.5
    )
    submission = await studio.portrait(ORIGIN, "a portrait")
    with pytest.raises(
        JobTimedOut, match=r"Is a worker serving likeness:profile:tiny-xl.*--profiles tiny-xl"
    ):
        await studio.finish(submission)
    stored = await ledger.get(submission.generation_id)
    assert stored is not None
    assert stored.status == "queued"
    await queue.close()


async def test_a_profile_no_worker_serves_gives_way_to_one_that_is_served(
    tmp_path: Path, redis_url: str
) -> None:
    catalog = load_catalog(default="photoreal-xl")  # a bot host: the workers hold the real weights
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = await ArqQueue.connect(redis_url)
    studio = Studio(ledger=ledger, catalog=catalog, queue=queue, generations_dir=tmp_path / "g")
    text = 'a barista with a name tag that says "Ruth" --n 1'
    nobody = await studio.portrait(ORIGIN, text)
    assert nobody.profile == "text-sd35"
    assert any("no worker serves text-sd35 right now" in notice for notice in nobody.notices)
    beat = WorkerBeat(
        worker="gpu-1", queues=("likeness:profile:photoreal-xl",), profiles=("photoreal-xl",), loaded=(),
        device="cuda", memory_budget_gb=20.0, current_job=None,
    )  # fmt: skip
    await publish_beat(queue.redis, beat)
    served = await studio.portrait(ORIGIN, text)
    assert served.profile == "photoreal-xl"
    assert "no worker serves text-sd35 right now; using photoreal-xl instead" in served.reasons
    assert served.notices == ()
    forced = await studio.portrait(ORIGIN, text + " --engine text-sd35")
    assert forced.profile == "text-sd35"  # --engine is never second-guessed
    await queue.close()


async def test_a_realism_tip_comes_with_plastic_skin_words(studio: Studio) -> None:
    submission = await studio.portrait(ORIGIN, "flawless woman, 8k masterpiece --n 1 --steps 1")
    assert submission.tips
    finished = await studio.finish(submission)
    assert any("visible pores" in notice for notice in finished.notices)
    clean = await studio.portrait(ORIGIN, "portrait by a window, natural skin texture --n 1 --steps 1")
    assert clean.tips == ()
    await studio.finish(clean)


async def test_fast_requests_take_the_priority_lane(tmp_path: Path, tiny_catalog: Catalog) -> None:
    lanes: list[bool] = []

    class LaneQueue(LocalQueue):
        async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
            lanes.append(fast)
            return await super().submit(spec, queue_name, fast=fast)

    async def ok(spec: JobSpec, progress: object) -> JobResult:
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=True)

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = LaneQueue(ok)
    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
    await studio.portrait(ORIGIN, "a portrait --fast")
    await studio.portrait(ORIGIN, "a portrait")
    assert lanes == [True, False]
    await queue.close()


async def test_a_queued_request_is_cancelled_by_its_requester_or_a_manager(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    gate = asyncio.Event()

    async def slow(spec: JobSpec, progress: object) -> JobResult:
        await gate.wait()
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=True)

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = LocalQueue(slow)
    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
    running = await studio.portrait(ORIGIN, "a portrait")
    waiting = await studio.portrait(ORIGIN, "a portrait")
    other = await studio.portrait(ORIGIN, "a portrait")
    await asyncio.sleep(0.05)  # the first one starts
    stranger = Origin(platform="cli", server_id="s1", channel_id="c1", user_id="u2")
    with pytest.raises(GenerationRefused, match=r"only the requester of .* or a server manager can cancel"):
        await studio.cancel(stranger, waiting.generation_id)
    with pytest.raises(GenerationRefused, match="was made in another server"):
        await studio.cancel(Origin("cli", "s2", "c", "u1"), waiting.generation_id)
    # This runner cannot be told to stop: a running job is left to finish.
    with pytest.raises(GenerationRefused, match="is already running where it cannot be stopped"):
        await studio.cancel(ORIGIN, running.generation_id)
    assert await studio.cancel(ORIGIN, waiting.generation_id) == f"cancelled `{waiting.generation_id}`"
    await studio.cancel(stranger, other.generation_id, is_manager=True)
    with pytest.raises(JobFailed, match="cancelled by u1"):
        await studio.finish(waiting)
    stored = await ledger.get(waiting.generation_id)
    assert stored is not None and (stored.status, stored.error) == ("failed", "cancelled by u1")
    with pytest.raises(GenerationRefused, match="is failed; there is nothing left to cancel"):
        await studio.cancel(ORIGIN, waiting.generation_id)
    gate.set()
    await studio.finish(running)
    with pytest.raises(GenerationRefused, match="is finished; there is nothing left to cancel"):
        await studio.cancel(ORIGIN, running.generation_id)
    await queue.close()


async def test_a_running_request_is_marked_running_then_stopped_by_a_cancel(
    studio: Studio, shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    runner = JobRunner(WorkerSettings(data_dir=shared_data_dir, device="cpu"), tiny_catalog)
    queue = LocalQueue(runner.run, stop=runner.stop)
    studio.queue = queue
    try:
        submission = await studio.portrait(ORIGIN, "a portrait --n 1 --steps 50")
        waiting = await studio.portrait(ORIGIN, "a portrait --n 1 --steps 2")
        finishing = asyncio.create_task(studio.finish(submission))
        steps: list[int] = []
        async with asyncio.timeout(60):
            async for event in submission.handle.events():
                if event.state == "step":
                    steps.append(event.step)
                    if event.step >= 2:
                        break
        record = await studio.ledger.get(submission.generation_id)
        assert record is not None and record.status == "running"

        said = await studio.cancel(ORIGIN, submission.generation_id)
        assert said.startswith(f"stopping `{submission.generation_id}`")
        async with asyncio.timeout(60):
            async for event in submission.handle.events():
                steps.append(event.step)
        with pytest.raises(JobFailed, match="cancelled by u1"):
            await finishing
        assert max(steps) < 50, steps
        stored = await studio.ledger.get(submission.generation_id)
        assert stored is not None and (stored.status, stored.error) == ("failed", "cancelled by u1")
        # The worker takes the next job.
        assert (await studio.finish(waiting)).files
    finally:
        await queue.close()


async def test_the_running_mark_never_overwrites_an_ended_generation(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    async def done(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        progress(ProgressEvent(job_id=spec.job_id, state="started"))
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=False, error="no GPU")

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = LocalQueue(done)
    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
    submission = await studio.portrait(ORIGIN, "a portrait")
    await submission.handle.result(timeout=10)
    with pytest.raises(JobFailed, match="no GPU"):
        await studio.finish(submission)
    stored = await ledger.get(submission.generation_id)
    assert stored is not None and stored.status == "failed"
    assert not await ledger.set_status(submission.generation_id, "running", only_from=("queued",))
    await queue.close()


class HeldSubmit(LocalQueue):
    """The in-process queue, where a submit made while `hold` is set waits for `release`: the moment between
    the ledger's record and the job landing on the queue, where a cancel may come in."""

    def __init__(self, runner: Callable[..., object]) -> None:
        super().__init__(runner)  # type: ignore[arg-type]
        self.hold = False
        self.submitting = asyncio.Event()
        self.release = asyncio.Event()

    async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
        if self.hold:
            self.submitting.set()
            await self.release.wait()
        return await super().submit(spec, queue_name, fast=fast)


async def test_a_cancel_while_the_job_is_being_submitted_takes_it_off_the_queue(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    runs: list[str] = []
    busy = asyncio.Event()

    async def run(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        runs.append(spec.generation_id)
        await busy.wait()  # the one worker is busy with the first request meanwhile
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=True)

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = HeldSubmit(run)
    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
    try:
        first = await studio.portrait(ORIGIN, "a first portrait --n 1")
        queue.hold = True
        asking = asyncio.create_task(studio.portrait(ORIGIN, "a second portrait --n 1"))
        await queue.submitting.wait()
        (recorded,) = [g for g in await ledger.open_generations() if g.id != first.generation_id]
        assert recorded.status == "recorded"
        cancelling = asyncio.create_task(studio.cancel(ORIGIN, recorded.id))
        await asyncio.sleep(0.2)
        assert not cancelling.done()  # it waits for the job to land on the queue
        queue.release.set()
        assert await asyncio.wait_for(cancelling, 10) == f"cancelled `{recorded.id}`"
        submission = await asyncio.wait_for(asking, 10)
        with pytest.raises(JobFailed, match="cancelled by u1"):
            await studio.finish(submission)
        stored = await ledger.get(recorded.id)
        assert stored is not None and (stored.status, stored.error) == ("failed", "cancelled by u1")
        busy.set()
        await studio.finish(first)
        assert runs == [first.generation_id]  # the cancelled one never ran
    finally:
        busy.set()
        await queue.close()


async def test_a_generation_cancelled_while_running_stays_cancelled_after_a_restart(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    """The bot stopped after asking a running job to stop and before the worker's answer: at the next
    start the Courier does not run it again."""
    runs: list[str] = []

    async def run(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        runs.append(spec.generation_id)
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=True)

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = LocalQueue(run)
    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
    try:
        await ledger.record(
            generation_id="g_aaaaaaaaaaaa", platform="cli", server_id="s1", channel_id="c1", user_id="u1",
            request={}, route={}, spec={}, job_id="j_aaaaaaaaaaaa", queue="profile:tiny-xl",
        )  # fmt: skip
        await ledger.set_status("g_aaaaaaaaaaaa", "running", error="cancelled by u1")
        (left,) = await ledger.open_generations()
        with pytest.raises(JobFailed, match="was cancelled by u1"):
            await studio.reattach(left)
        stored = await ledger.get("g_aaaaaaaaaaaa")
        assert stored is not None and (stored.status, stored.error) == ("failed", "cancelled by u1")
        assert runs == []
    finally:
        await queue.close()
