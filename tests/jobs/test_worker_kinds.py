"""The worker's job kinds beside txt2img, on real tiny pipelines: vary, upscale, animate."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.media import png_bytes, read_parameters, read_recipe
from jobs.settings import WorkerSettings
from jobs.spec import InputImage, JobSpec, MotionRecipe, Parent, Recipe, UpscaleRecipe
from jobs.video import probe_video, read_mp4_comment
from jobs.worker import JobRunner
from router.catalog import Catalog
from tests.jobs.test_worker import identity_spec, pixels, run, runner, tiny_spec

__all__ = ["runner"]  # the fixture


def source_input(png: bytes) -> InputImage:
    return InputImage(role="source", media_type="image/png", data=png, sha256=hashlib.sha256(png).hexdigest())


def vary_of(parent: JobSpec, png: bytes, *, strength: float, seeds: tuple[int, ...] = (41, 42)) -> JobSpec:
    assert parent.recipe is not None
    recipe = parent.recipe.model_copy(update={"strength": strength, "seeds": seeds, "steps": 4})
    return parent.model_copy(
        update={
            "kind": "vary",
            "generation_id": "g_child",
            "recipe": recipe,
            "inputs": (*parent.inputs, source_input(png)),
            "parent": Parent(generation_id=parent.generation_id, index=1),
        }
    )


async def test_vary_starts_from_the_source_and_reuses_the_resident_weights(runner: JobRunner) -> None:
    parent = tiny_spec((7,))
    made, _ = await run(runner, parent)
    source = made.images[0].png
    subtle, events = await run(runner, vary_of(parent, source, strength=0.35))
    strong, _ = await run(runner, vary_of(parent, source, strength=0.7))
    again, _ = await run(runner, vary_of(parent, source, strength=0.35))
    assert runner.cache.loads == {"tiny:sdxl": 1}
    assert [image.seed for image in subtle.images] == [41, 42]
    assert subtle.grid is not None
    # img2img runs only the last `strength` of the steps: 4 × 0.35 → 1 step, 4 × 0.7 → 2.
    assert [(e.step, e.total) for e in events if e.state == "step"] == [(1, 1)]
    assert np.array_equal(pixels(subtle.images[0].png), pixels(again.images[0].png))
    original = pixels(source).astype(int)
    near = np.abs(pixels(subtle.images[0].png).astype(int) - original).mean()
    far = np.abs(pixels(strong.images[0].png).astype(int) - original).mean()
    assert 0 < near < far, (near, far)
    # A different source gives a different result with the same seeds.
    flat = png_bytes(Image.new("RGB", (192, 320), (200, 30, 30)))
    other, _ = await run(runner, vary_of(parent, flat, strength=0.35))
    assert not np.array_equal(pixels(other.images[0].png), pixels(subtle.images[0].png))


async def test_a_varied_png_names_its_parent_and_carries_no_source_bytes(runner: JobRunner) -> None:
    parent = tiny_spec((7,))
    made, _ = await run(runner, parent)
    child, _ = await run(runner, vary_of(parent, made.images[0].png, strength=0.35))
    parameters = read_parameters_of(child.images[1].png)
    assert "Denoising strength: 0.35" in parameters
    assert "Likeness parent: g_test #1 (vary)" in parameters
    recipe = read_recipe(child.images[1].png)
    assert recipe.kind == "vary" and recipe.parent is not None and recipe.parent.generation_id == "g_test"
    assert recipe.source().data == b"" and recipe.source().sha256


def read_parameters_of(png: bytes) -> str:
    text = read_parameters(png)
    assert text is not None
    return text


async def test_vary_keeps_the_character(runner: JobRunner) -> None:
    parent = identity_spec((5,))
    made, _ = await run(runner, parent)
    source = made.images[0].png
    with_face, _ = await run(runner, vary_of(parent, source, strength=0.7))
    no_face = vary_of(parent, source, strength=0.7)
    no_face = no_face.model_copy(update={"inputs": (no_face.source(),)})
    without, _ = await run(runner, no_face)
    assert not np.array_equal(pixels(with_face.images[0].png), pixels(without.images[0].png))


def animate_of(parent: JobSpec, png: bytes, *, seed: int = 3, max_bytes: int = 10 * 2**20) -> JobSpec:
    recipe = Recipe(
        profile="tiny-svd",
        family="svd",
        checkpoint="tiny:svd",
        scheduler="",
        steps=2,
        cfg=3.0,
        width=64,
        height=64,
        seeds=(seed,),
        motion=MotionRecipe(frames=4, fps=8, motion=127, decode_chunk=2, max_bytes=max_bytes),
    )
    return JobSpec(
        generation_id="g_video",
        kind="animate",
        prompt=parent.prompt,
        recipe=recipe,
        inputs=(source_input(png),),
        parent=Parent(generation_id=parent.generation_id, index=1),
    )


async def test_animate_makes_an_h264_mp4_and_a_preview_that_name_their_parent(runner: JobRunner) -> None:
    parent = tiny_spec((7,))
    made, _ = await run(runner, parent)
    result, events = await run(runner, animate_of(parent, made.images[0].png))
    video = result.video
    assert video is not None and not result.images and result.grid is None
    info = probe_video(video.mp4)
    assert (info.codec, info.pix_fmt, info.width, info.height, info.frames) == ("h264", "yuv420p", 64, 64, 4)
    assert info.fps == 8
    assert video.preview_type in ("image/webp", "image/gif")
    with Image.open(io.BytesIO(video.preview)) as preview:
        assert preview.n_frames == 4
    embedded = JobSpec.model_validate_json(read_mp4_comment(video.mp4))
    assert embedded.kind == "animate" and embedded.parent is not None
    assert embedded.parent.describe() == "g_test #1" and embedded.source().data == b""
    assert [(e.step, e.total) for e in events if e.state == "step"] == [(1, 2), (2, 2)]
    again, _ = await run(runner, animate_of(parent, made.images[0].png))
    assert again.video is not None and again.video.preview == video.preview  # same seed, same frames


def upscale_of(parent: JobSpec, png: bytes, *, family: str, checkpoint: str, factor: int = 2) -> JobSpec:
    assert parent.recipe is not None
    recipe = Recipe(
        profile=f"test-{family}",
        family=family,
        checkpoint=checkpoint,
        scheduler="",
        steps=2,
        cfg=5.0,
        width=parent.recipe.width * factor,
        height=parent.recipe.height * factor,
        seeds=(11,),
        upscale=UpscaleRecipe(factor=2 if factor == 2 else 4, tile=64, overlap=16, noise_level=20),
    )
    return JobSpec(
        generation_id="g_big",
        kind="upscale",
        prompt=parent.prompt,
        recipe=recipe,
        inputs=(source_input(png),),
        parent=Parent(generation_id=parent.generation_id, index=1),
    )


@pytest.mark.parametrize(
    ("family", "checkpoint", "factor"),
    [("sd-upscale", "tiny:sd-upscale", 2), ("esrgan", "tiny:esrgan", 4), ("lanczos", "builtin:lanczos", 4)],
)
async def test_upscale_with_each_engine_gives_one_png_of_the_size_asked(
    runner: JobRunner, family: str, checkpoint: str, factor: int
) -> None:
    parent = tiny_spec((7,))
    made, _ = await run(runner, parent)
    result, events = await run(
        runner, upscale_of(parent, made.images[0].png, family=family, checkpoint=checkpoint, factor=factor)
    )
    assert len(result.images) == 1 and result.grid is None
    image = result.images[0]
    assert (image.width, image.height) == (192 * factor, 320 * factor)
    assert pixels(image.png).shape == (320 * factor, 192 * factor, 3)
    parameters = read_parameters_of(image.png)
    assert f"Postprocess upscale by: {factor}, Postprocess upscaler: test-{family}" in parameters
    assert "Likeness parent: g_test #1 (upscale)" in parameters
    steps = [(e.step, e.total) for e in events if e.state == "step"]
    assert steps and steps[-1][0] == steps[-1][1]  # one step per tile, to the last
    if family == "lanczos":
        assert any("Lanczos" in notice for notice in result.notices)


async def test_a_worker_that_keeps_failing_stops_taking_jobs_and_says_why(
    shared_data_dir: Path, tiny_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = JobRunner(
        WorkerSettings(data_dir=shared_data_dir, device="cpu", max_failures_per_hour=3), tiny_catalog
    )

    def broken(*args: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(runner, "_make", broken)
    for attempt in range(3):
        assert runner.paused is None, attempt
        result = await runner.run(tiny_spec((1,)), lambda event: None)
        assert not result.ok and "internal error" in result.error
    assert runner.paused is not None
    assert "stopped taking jobs after 3 failures within an hour" in runner.paused
