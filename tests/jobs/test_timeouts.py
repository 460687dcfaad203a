"""Each job's time limit, scaled by its work: pixels × steps × batch, tiles, frames (jobs/timeouts.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.settings import BotSettings
from jobs.pipelines import img2img_steps
from jobs.spec import InputImage, JobSpec, MotionRecipe, Parent, Recipe, UpscaleRecipe
from jobs.tiling import padded_size, tile_boxes
from jobs.timeouts import (
    TRIES,
    Pace,
    denoising_steps,
    describe_work,
    job_limit_s,
    megapixel_steps,
    timed_out_twice,
)

MID_GPU = Pace(seconds_per_megapixel_step=0.5, safety=3.0, load_s=900.0, floor_s=60.0, ceiling_s=900.0)
SOURCE = (InputImage(role="source", data=b"png"),)


def spec(
    kind: str = "txt2img",
    *,
    size: tuple[int, int] = (1024, 1024),
    steps: int = 30,
    batch: int = 4,
    family: str = "sdxl",
    **recipe: object,
) -> JobSpec:
    values: dict[str, object] = dict(
        profile="photoreal-xl",
        family=family,
        checkpoint="some/checkpoint",
        scheduler="EulerDiscreteScheduler",
        steps=steps,
        cfg=5.0,
        width=size[0],
        height=size[1],
        seeds=tuple(range(batch)),
    )
    values.update(recipe)
    extra: dict[str, object] = {}
    if kind != "txt2img":
        extra = {"parent": Parent(generation_id="g_parent", index=1), "inputs": SOURCE}
    return JobSpec(generation_id="g_1", kind=kind, recipe=Recipe(**values), **extra)


def test_the_worked_example_of_the_docstring() -> None:
    portrait = spec()  # 1024×1024, 30 steps, 4 variations, SDXL
    assert megapixel_steps(portrait) == pytest.approx(1.048576 * 30 * 4)
    # From the moment its pipeline is ready: a load, however long, is not counted.
    assert job_limit_s(portrait, MID_GPU) == pytest.approx(188.7, abs=0.1)
    slow_disk = Pace(seconds_per_megapixel_step=0.5, safety=3.0, load_s=3600.0, floor_s=60.0, ceiling_s=900.0)
    assert job_limit_s(portrait, slow_disk) == job_limit_s(portrait, MID_GPU)
    small = spec(size=(512, 512), steps=20, batch=1)
    assert megapixel_steps(small) == pytest.approx(5.24, abs=0.01)
    assert job_limit_s(small, MID_GPU) == 60.0  # the floor


def test_the_limit_grows_with_pixels_steps_and_batch_up_to_the_ceiling() -> None:
    base = job_limit_s(spec(batch=2, steps=30), MID_GPU)
    assert base == pytest.approx(94.4, abs=0.1)
    assert job_limit_s(spec(batch=4, steps=30), MID_GPU) == pytest.approx(2 * base)
    assert job_limit_s(spec(batch=2, steps=60), MID_GPU) == pytest.approx(2 * base)
    assert job_limit_s(spec(size=(1448, 1448), batch=2, steps=30), MID_GPU) > 1.9 * base
    assert job_limit_s(spec(size=(2048, 2048), steps=100, batch=8), MID_GPU) == 900.0
    slow = Pace(seconds_per_megapixel_step=1.0, safety=3.0, floor_s=60.0, ceiling_s=900.0)
    assert job_limit_s(spec(batch=2), slow) == pytest.approx(2 * base)


def test_heavier_families_get_longer_limits() -> None:
    limits = {family: job_limit_s(spec(family=family), MID_GPU) for family in ("sd15", "sdxl", "sd3", "flux")}
    assert limits["sd15"] < limits["sdxl"] < limits["sd3"] < limits["flux"] < 900.0
    unknown = job_limit_s(spec(family="something-new"), MID_GPU)
    assert unknown >= limits["flux"]


def test_vary_counts_only_the_steps_img2img_runs() -> None:
    for steps, strength in ((30, 0.35), (30, 0.7), (7, 0.5), (4, 1.0)):
        assert denoising_steps(steps, strength) == img2img_steps(steps, strength)
    subtle = spec("vary", steps=30, strength=0.35)
    assert megapixel_steps(subtle) == pytest.approx(1.048576 * 10 * 4)
    assert describe_work(subtle) == "4 × 1024×1024 × 10 steps"


def test_an_upscale_counts_its_tiles_at_the_input_resolution() -> None:
    tiles = UpscaleRecipe(factor=4, tile=128, overlap=16)
    job = spec("upscale", size=(2048, 2048), steps=20, batch=1, family="sd-upscale", upscale=tiles)
    # The 512×512 source in tiles of 128 input pixels that overlap by 16: 5 × 5 tiles.
    count = len(tile_boxes(*padded_size(512, 512), 128, 16))
    assert count == 25
    assert megapixel_steps(job) == pytest.approx(count * (8 * 128) ** 2 / 1e6 * 20)
    assert describe_work(job) == "2048×2048 in 25 tiles × 20 steps"
    esrgan = spec("upscale", size=(2048, 2048), steps=1, batch=1, family="esrgan", upscale=tiles)
    assert megapixel_steps(esrgan) == pytest.approx(2048 * 2048 / 1e6)
    lanczos = spec("upscale", size=(2048, 2048), steps=1, batch=1, family="lanczos", upscale=tiles)
    assert megapixel_steps(lanczos) == 0.0
    assert job_limit_s(lanczos, MID_GPU) == 60.0  # nothing to load, nothing to denoise


def test_an_animation_counts_frames_times_steps() -> None:
    motion = MotionRecipe(frames=25, fps=8, motion=127)
    clip = spec("animate", size=(1024, 576), steps=25, batch=1, family="svd", motion=motion)
    assert megapixel_steps(clip) == pytest.approx(25 * 1024 * 576 / 1e6 * 25)
    assert job_limit_s(clip, MID_GPU) == pytest.approx(25 * 0.589824 * 25 * 0.5 * 3)
    assert describe_work(clip) == "25 frames of 1024×576 × 25 steps"


def test_the_reason_a_user_reads_names_the_work_and_the_fix() -> None:
    reason = timed_out_twice(spec(batch=1), 189.4)
    assert reason == (
        "timed out twice: the portrait took longer than 189 s for 1024×1024 × 30 steps; the workers may "
        "be overloaded — try fewer steps or a smaller size"
    )


def test_the_bot_waits_for_both_tries_of_the_longest_job(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIKENESS_JOB_TIMEOUT_S", "LIKENESS_JOB_WAIT_S"):
        monkeypatch.delenv(name, raising=False)
    assert BotSettings().job_wait_s >= TRIES * BotSettings().job_timeout_s
    assert BotSettings(job_timeout_s=600, job_wait_s=1200).job_wait_s == 1200
    monkeypatch.setenv("LIKENESS_JOB_TIMEOUT_S", "900")
    monkeypatch.setenv("LIKENESS_JOB_WAIT_S", "1000")
    with pytest.raises(ValidationError, match="set LIKENESS_JOB_WAIT_S to at least 1800"):
        BotSettings()
