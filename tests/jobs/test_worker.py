"""The worker on real tiny diffusers pipelines, on the CPU: determinism, batching, residency, progress."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.media import read_parameters, read_recipe
from jobs.pipelines import PipelineCache
from jobs.queue import ArqQueue
from jobs.settings import WorkerSettings
from jobs.spec import Adapter, InputImage, JobResult, JobSpec, ProgressEvent, Recipe
from jobs.worker import JobRun, JobRunner, Made, run_job
from router.catalog import Catalog
from tests.arq_support import running_worker


def tiny_spec(
    seeds: tuple[int, ...] = (7, 8, 9, 10), *, profile: str = "tiny-xl", **recipe: object
) -> JobSpec:
    family = "sd15" if profile == "tiny-sd15" else "sdxl"
    values: dict[str, object] = dict(
        profile=profile,
        family=family,
        checkpoint=f"tiny:{family}",
        scheduler="EulerDiscreteScheduler",
        steps=3,
        cfg=5.0,
        width=192,
        height=320,
        seeds=seeds,
    )
    values.update(recipe)
    return JobSpec(
        generation_id="g_test",
        prompt="editorial portrait of a fisherman",
        negative="blurry",
        recipe=Recipe(**values),  # type: ignore[arg-type]
    )


@pytest.fixture
def runner(shared_data_dir: Path, tiny_catalog: Catalog) -> JobRunner:
    return JobRunner(WorkerSettings(data_dir=shared_data_dir, device="cpu"), tiny_catalog)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


async def run(runner: JobRunner, spec: JobSpec) -> tuple[JobResult, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    result = await runner.run(spec, events.append)
    await asyncio.sleep(0)  # let thread-posted events land
    assert result.ok, result.error
    return result, events


async def test_same_seed_same_pixels_and_progress_per_step(runner: JobRunner) -> None:
    first, events = await run(runner, tiny_spec((7,)))
    second, _ = await run(runner, tiny_spec((7,)))
    other, _ = await run(runner, tiny_spec((8,)))
    assert np.array_equal(pixels(first.images[0].png), pixels(second.images[0].png))
    assert not np.array_equal(pixels(first.images[0].png), pixels(other.images[0].png))
    assert [(e.step, e.total) for e in events if e.state == "step"] == [(1, 3), (2, 3), (3, 3)]
    assert (first.images[0].width, first.images[0].height) == (192, 320)
    assert any("noise" in notice for notice in first.notices)


@pytest.mark.parametrize("profile", ["tiny-xl", "tiny-sd15"])
async def test_each_variation_of_a_batch_is_reproducible_alone(runner: JobRunner, profile: str) -> None:
    batch, _ = await run(runner, tiny_spec((7, 8, 9, 10), profile=profile))
    assert [i.seed for i in batch.images] == [7, 8, 9, 10]
    for image in batch.images:
        alone, _ = await run(runner, tiny_spec((image.seed,), profile=profile))
        difference = np.abs(pixels(image.png).astype(int) - pixels(alone.images[0].png).astype(int))
        assert difference.max() <= 1, (
            f"variation {image.index} differs by {difference.max()} from its seed alone"
        )


async def test_rerun_from_the_embedded_recipe_gives_the_same_pixels(runner: JobRunner) -> None:
    batch, _ = await run(runner, tiny_spec((11, 12, 13)))
    second = batch.images[1]
    recipe = read_recipe(second.png)
    assert recipe.kept == (2,)
    assert recipe.seed_of(2) == 12
    parameters = read_parameters(second.png)
    assert parameters is not None
    assert "Seed: 12" in parameters
    assert "Negative prompt: blurry" in parameters
    again, _ = await run(runner, recipe)
    assert [(image.index, image.seed) for image in again.images] == [(2, 12)]
    assert np.array_equal(pixels(second.png), pixels(again.images[0].png))
    assert batch.grid is not None
    with Image.open(io.BytesIO(batch.grid)) as grid:
        assert grid.size == (192 * 2 + 8, 320 * 2 + 8)


async def test_a_resident_profile_is_loaded_once(runner: JobRunner) -> None:
    for seed in range(3):
        await run(runner, tiny_spec((seed,)))
    assert runner.cache.loads == {"tiny:sdxl": 1}
    assert runner.cache.resident == ["tiny:sdxl"]


async def test_budget_drops_the_least_recently_used(shared_data_dir: Path, tiny_catalog: Catalog) -> None:
    # Each tiny profile declares 0.1 GB: a 0.15 GB budget holds one of them at a time.
    runner = JobRunner(
        WorkerSettings(data_dir=shared_data_dir, device="cpu", memory_budget_gb=0.15), tiny_catalog
    )
    await run(runner, tiny_spec((1,)))
    await run(runner, tiny_spec((1,), profile="tiny-sd15"))
    assert runner.cache.resident == ["tiny:sd15"]
    await run(runner, tiny_spec((1,)))
    assert runner.cache.loads == {"tiny:sdxl": 2, "tiny:sd15": 1}


async def test_missing_weights_fail_with_a_reason(runner: JobRunner, tmp_path: Path) -> None:
    spec = tiny_spec((1,), checkpoint=str(tmp_path / "no-such-model"), profile="tiny-xl")
    result = await runner.run(spec, lambda event: None)
    assert not result.ok
    assert "not on this worker" in result.error and "models.toml" in result.error


async def test_a_newer_spec_version_is_refused_with_a_reason(runner: JobRunner) -> None:
    data = tiny_spec().model_dump() | {"version": 99}
    result = JobResult.model_validate(await run_job({"runner": runner, "job_id": "j_x"}, data))
    assert not result.ok
    assert "version 99" in result.error


async def test_arq_end_to_end_on_redis(runner: JobRunner, redis_url: str) -> None:
    queue = await ArqQueue.connect(redis_url, poll_delay_s=0.01)
    try:
        async with running_worker(runner, "likeness:profile:tiny-xl", redis_url):
            spec = tiny_spec((5, 6))
            handle = await queue.submit(spec, "likeness:profile:tiny-xl")
            events = [event async for event in handle.events()]
            result = await handle.result(timeout=60)
    finally:
        await queue.close()
    local, _ = await run(runner, tiny_spec((5, 6)))
    assert result.ok and len(result.images) == 2
    assert [e.step for e in events if e.state == "step"] == [1, 2, 3]
    assert events[-1].state == "finished"
    for remote_image, local_image in zip(result.images, local.images, strict=True):
        assert np.array_equal(pixels(remote_image.png), pixels(local_image.png))


def face_jpeg() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()[0:256, 96:352]).resize((128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def identity_spec(
    seeds: tuple[int, ...], *, faces: int = 1, scale: float = 1.0, adapter: bool = True
) -> JobSpec:
    plain = tiny_spec(seeds, profile="tiny-identity-xl")
    assert plain.recipe is not None
    recipe = plain.recipe.model_copy(
        update={"adapter": Adapter(source="tiny:ip-adapter", scale=scale) if adapter else None}
    )
    inputs = tuple(InputImage(role="face", media_type="image/jpeg", data=face_jpeg()) for _ in range(faces))
    return plain.model_copy(update={"recipe": recipe, "inputs": inputs})


async def test_identity_jobs_and_plain_jobs_share_one_resident_pipeline(runner: JobRunner) -> None:
    plain_before, _ = await run(runner, tiny_spec((21, 22)))
    with_face, _ = await run(runner, identity_spec((21, 22)))
    plain_after, _ = await run(runner, tiny_spec((21, 22)))
    assert runner.cache.loads == {"tiny:sdxl": 1}
    assert not np.array_equal(pixels(with_face.images[0].png), pixels(plain_before.images[0].png))
    # With the adapter attached, a job without faces is bit-identical to one on a pipeline without it.
    for before, after in zip(plain_before.images, plain_after.images, strict=True):
        assert np.array_equal(pixels(before.png), pixels(after.png))
    again, _ = await run(runner, identity_spec((21, 22)))
    assert np.array_equal(pixels(with_face.images[1].png), pixels(again.images[1].png))
    two, _ = await run(runner, identity_spec((21,), faces=2))
    assert two.ok


async def test_the_identity_adapter_loads_with_the_pipeline_of_a_profile_that_draws_characters(
    shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    """tiny-xl and tiny-identity-xl share one checkpoint: where the worker serves the identity profile,
    the adapter is in place from the load on (compiled and warmed up with it on a GPU), and the
    first identity job loads nothing more; where it does not, the pipeline stays plain."""
    from jobs.identity import has_ip_adapter

    settings = WorkerSettings(data_dir=shared_data_dir, device="cpu")
    both = JobRunner(settings, tiny_catalog)
    await both.preload(["tiny-xl", "tiny-identity-xl"])
    pipeline, took = both.cache.get("tiny:sdxl", "sdxl", 0.1)
    assert took == 0.0 and has_ip_adapter(pipeline)
    assert "identity_adapter" in both.cache.residency().fast_path
    faceless, _ = await run(both, tiny_spec((41,)))
    with_face, _ = await run(both, identity_spec((41,)))
    assert both.cache.loads == {"tiny:sdxl": 1}

    plain_only = JobRunner(settings, tiny_catalog)
    await plain_only.preload(["tiny-xl"])
    plain_pipeline, _ = plain_only.cache.get("tiny:sdxl", "sdxl", 0.1)
    assert not has_ip_adapter(plain_pipeline)
    plain, _ = await run(plain_only, tiny_spec((41,)))
    # A job without faces on the pipeline with the adapter: the pixels of the plain pipeline.
    assert np.array_equal(pixels(faceless.images[0].png), pixels(plain.images[0].png))
    assert not np.array_equal(pixels(with_face.images[0].png), pixels(plain.images[0].png))


async def test_a_pipeline_loaded_with_its_adapter_is_counted_as_the_largest_profile_on_it(
    shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    """identity-xl declares more memory than sdxl-base (the adapter and its image encoder): where the
    adapter comes with the pipeline, whichever profile loads it, the budget counts the larger figure,
    once for the two profiles."""
    profiles = dict(tiny_catalog.profiles)
    profiles["tiny-identity-xl"] = replace(profiles["tiny-identity-xl"], memory_gb=0.3)
    catalog = replace(tiny_catalog, profiles=profiles)
    settings = WorkerSettings(data_dir=shared_data_dir, device="cpu", memory_budget_gb=0.35)
    both = JobRunner(settings, catalog)
    await both.preload(["tiny-xl", "tiny-identity-xl"])
    assert both.cache.loads == {"tiny:sdxl": 1}
    assert both.cache.used_gb == pytest.approx(0.3)

    plain_only = JobRunner(settings, catalog)
    await plain_only.preload(["tiny-xl"])
    await run(plain_only, tiny_spec((1,)))
    assert plain_only.cache.used_gb == pytest.approx(0.1)


async def test_identity_scale_zero_is_no_identity(runner: JobRunner) -> None:
    plain, _ = await run(runner, tiny_spec((31,)))
    zero, _ = await run(runner, identity_spec((31,), scale=0.0))
    assert np.array_equal(pixels(plain.images[0].png), pixels(zero.images[0].png))


async def test_faces_without_an_adapter_fail_with_a_reason(runner: JobRunner) -> None:
    result = await runner.run(identity_spec((1,), adapter=False), lambda event: None)
    assert not result.ok
    assert result.error == "tiny-identity-xl has no identity adapter, so it cannot draw characters"


class TwoRuns(JobRunner):
    """A JobRunner whose first run waits in its encoding, and whose second run waits before its device
    work, each until the test lets it go: a try that is still encoding when the retry of the same job
    starts on the same worker."""

    def __init__(self, settings: WorkerSettings, catalog: Catalog) -> None:
        super().__init__(settings, catalog)
        self.encoding = threading.Event()
        self.finish_encoding = threading.Event()
        self.second = threading.Event()
        self.go_on = threading.Event()

    def _encode(self, spec: JobSpec, made: Made) -> JobResult:
        if not self.encoding.is_set():
            self.encoding.set()
            self.finish_encoding.wait(30)
        return super()._encode(spec, made)

    def _make(self, run: JobRun, recipe: Recipe, progress: Callable[[ProgressEvent], None]) -> Made:
        if self.encoding.is_set():
            self.second.set()
            self.go_on.wait(30)
        return super()._make(run, recipe, progress)


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30)


async def test_a_stop_of_one_run_never_reaches_the_retry_of_the_same_job(
    shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    runner = TwoRuns(WorkerSettings(data_dir=shared_data_dir, device="cpu"), tiny_catalog)
    spec = tiny_spec((3,), steps=2, width=64, height=64)
    first = asyncio.create_task(runner.run(spec, lambda event: None))
    await wait_for(runner.encoding)
    runner.stop(spec.job_id, "it ran past its 60 s limit")  # too late for the first run: it encodes
    retry = asyncio.create_task(runner.run(spec, lambda event: None))
    await wait_for(runner.second)
    runner.finish_encoding.set()
    assert (await first).ok  # its end leaves the retry's run alone
    runner.stop(spec.job_id, "cancelled by u1")  # meant for the retry, and it reaches it
    runner.go_on.set()
    result = await retry
    assert not result.ok and result.error == "cancelled by u1"


class LastStepCancel(JobRunner):
    """A JobRunner where a cancel lands while the pipeline's last step runs: after its last stop check."""

    def _make(self, run: JobRun, recipe: Recipe, progress: Callable[[ProgressEvent], None]) -> Made:
        made = super()._make(run, recipe, progress)
        self.stop(run.spec.job_id, "cancelled by u1")
        return made


async def test_a_cancel_during_the_last_step_is_honoured_before_encoding(
    shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    runner = LastStepCancel(WorkerSettings(data_dir=shared_data_dir, device="cpu"), tiny_catalog)
    events: list[ProgressEvent] = []
    result = await runner.run(tiny_spec((3,), steps=2, width=64, height=64), events.append)
    await asyncio.sleep(0)
    assert not result.ok and result.error == "cancelled by u1"
    assert "encoding" not in [event.state for event in events]


async def test_a_parked_pipeline_brought_back_is_timed_as_a_restore_not_a_load(
    shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    """Placement reads load times to price a switch of profiles: a restore from host memory must not
    pass for one."""
    runner = JobRunner(WorkerSettings(data_dir=shared_data_dir, device="cpu"), tiny_catalog)
    # Room on the "device" for one tiny pipeline (0.1 GB), and in host memory for another.
    runner.cache = PipelineCache(
        shared_data_dir / "models", runner.device, 0.15, host_budget_gb=0.15, host_device="cpu"
    )

    async def timings(profile: str) -> dict[str, float]:
        spec = tiny_spec((1,), profile=profile, steps=1, width=64, height=64)
        result = await runner.run(spec, lambda event: None)
        assert result.ok, result.error
        return result.timings

    assert (await timings("tiny-xl"))["load"] > 0
    assert (await timings("tiny-sd15"))["load"] > 0  # tiny-xl is parked to make room
    back = await timings("tiny-xl")
    assert back["load"] == 0 and back["restore"] > 0
