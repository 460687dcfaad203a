"""Animate: the tiny Stable Video Diffusion pipeline, built offline and run like the real checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, EulerDiscreteScheduler, StableVideoDiffusionPipeline
from PIL import Image
from skimage import data

import jobs.animate
from jobs.animate import MotionParams, animate, build_tiny_svd, ensure_tiny_svd

PARAMS = MotionParams(
    width=64,
    height=64,
    frames=4,
    fps=7,
    motion=127,
    noise_aug=0.02,
    steps=3,
    min_cfg=1.0,
    max_cfg=3.0,
    decode_chunk=2,
    seed=7,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_svd(tmp_path_factory.mktemp("svd") / "tiny-svd")


@pytest.fixture(scope="module")
def pipe(saved: Path) -> Any:
    """The saved pipeline, loaded back as a checkpoint would be."""
    pipeline = DiffusionPipeline.from_pretrained(str(saved), local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    astronaut: Any = data.astronaut  # skimage is untyped
    return Image.fromarray(astronaut()).resize((96, 128), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def frames(pipe: Any, portrait: Image.Image) -> list[Image.Image]:
    """`PARAMS` run once for the module."""
    return run(pipe, portrait)


def run(pipe: Any, image: Image.Image, params: MotionParams = PARAMS) -> list[Image.Image]:
    return animate(pipe, image, params, lambda step, total: None)


def pixels(frames: list[Image.Image]) -> np.ndarray[Any, Any]:
    return np.stack([np.asarray(frame) for frame in frames])


def weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_tiny_svd_loads_as_a_stable_video_diffusion_pipeline(pipe: Any) -> None:
    assert isinstance(pipe, StableVideoDiffusionPipeline)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.vae_scale_factor == 8
    assert pipe.image_encoder.config.image_size == 224
    assert sum(p.numel() for p in pipe.unet.parameters()) < 3_000_000


def test_animate_makes_the_requested_frames(frames: list[Image.Image]) -> None:
    assert len(frames) == PARAMS.frames
    assert all(frame.size == (64, 64) and frame.mode == "RGB" for frame in frames)
    video = pixels(frames)
    assert video.std() > 1.0  # noise, but not a blank (a NaN would have warned on the way to uint8)
    assert not np.array_equal(video[0], video[-1])


def test_animate_at_a_wide_size(pipe: Any, portrait: Image.Image) -> None:
    wide = dataclasses.replace(PARAMS, width=128, height=64, frames=3, steps=2)
    frames = run(pipe, portrait, wide)
    assert [frame.size for frame in frames] == [(128, 64)] * 3


def test_same_seed_same_frames_other_seed_other_frames(
    pipe: Any, portrait: Image.Image, frames: list[Image.Image]
) -> None:
    first = pixels(frames)
    assert np.array_equal(first, pixels(run(pipe, portrait)))
    other = pixels(run(pipe, portrait, dataclasses.replace(PARAMS, seed=8)))
    assert not np.array_equal(first, other)


def test_progress_is_reported_after_each_step(pipe: Any, portrait: Image.Image) -> None:
    steps: list[tuple[int, int]] = []
    animate(pipe, portrait, PARAMS, lambda step, total: steps.append((step, total)))
    assert steps == [(i, PARAMS.steps) for i in range(1, PARAMS.steps + 1)]


def test_the_pipeline_gets_a_cover_crop_and_every_setting(pipe: Any, portrait: Image.Image) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return pipe(*args, **kwargs)

    run(recording, portrait)
    (args, kwargs), *_ = calls
    # The 96×128 portrait's middle 96×96, scaled to 64×64: cropped, not squashed.
    still = pixels([args[0]]).astype(int)
    cropped = portrait.crop((0, 16, 96, 112)).resize((64, 64), Image.Resampling.LANCZOS)
    squashed = portrait.resize((64, 64), Image.Resampling.LANCZOS)
    assert np.abs(still - pixels([cropped]).astype(int)).mean() < 2
    assert np.abs(still - pixels([squashed]).astype(int)).mean() > 10
    assert kwargs["output_type"] == "pil"
    assert kwargs["generator"].device.type == "cpu"
    settings = {
        key: kwargs[key]
        for key in (
            "height",
            "width",
            "num_frames",
            "fps",
            "motion_bucket_id",
            "noise_aug_strength",
            "decode_chunk_size",
            "num_inference_steps",
            "min_guidance_scale",
            "max_guidance_scale",
        )
    }
    assert settings == {
        "height": 64,
        "width": 64,
        "num_frames": 4,
        "fps": 7,
        "motion_bucket_id": 127,
        "noise_aug_strength": 0.02,
        "decode_chunk_size": 2,
        "num_inference_steps": 3,
        "min_guidance_scale": 1.0,
        "max_guidance_scale": 3.0,
    }


def test_build_is_deterministic_and_leaves_the_global_rng(saved: Path, tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    again = build_tiny_svd(tmp_path / "again")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert weights_digest(again) == weights_digest(saved)
    assert weights_digest(build_tiny_svd(tmp_path / "other", seed=1)) != weights_digest(saved)
    # Rebuilding over an existing folder replaces it.
    assert weights_digest(build_tiny_svd(again, seed=1)) != weights_digest(saved)


def test_ensure_tiny_svd_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []
    real_build = jobs.animate.build_tiny_svd

    def counting_build(dest: Path, *, seed: int = 0) -> Path:
        built.append(dest)
        return real_build(dest, seed=seed)

    monkeypatch.setattr(jobs.animate, "build_tiny_svd", counting_build)
    first = ensure_tiny_svd(tmp_path)
    assert first == tmp_path / "tiny-svd"
    assert (first / "model_index.json").is_file()
    assert ensure_tiny_svd(tmp_path) == first
    assert built == [first]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tiny-svd") and p.is_dir()] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 100}, "width must be a positive multiple of 64, not 100"),
        ({"height": 0}, "height must be a positive multiple of 64, not 0"),
        ({"frames": 0}, "frames must be 1 or more, not 0"),
        ({"motion": 256}, "motion must be between 1 and 255"),
        ({"noise_aug": -0.1}, "noise_aug must be between 0 and 1"),
        ({"min_cfg": 4.0}, "need 0 < min_cfg <= max_cfg"),
        ({"seed": -1}, "seed must be between 0 and 2\\*\\*64 - 1"),
    ],
)
def test_motion_params_name_the_bad_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PARAMS, **change)
