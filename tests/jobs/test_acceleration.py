"""The fast path keeps the pixels: each switch on a tiny SD/SDXL pipeline against the same seed without it.

The switches are meant for CUDA; on the CPU they run the same code (compile with dynamo's eager backend,
which traces the blocks as inductor would but compiles nothing), so what is checked here is that they
apply cleanly and leave the images as they were.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, FusedAttnProcessor2_0
from PIL import Image

from jobs import acceleration
from jobs.acceleration import FastPath, VaeLimits, VaeMode, accelerate, fit_vae
from jobs.settings import WorkerSettings
from jobs.tiny import TINY_FAMILIES, ensure_tiny_pipeline

PROMPT = "a portrait photo of a smiling woman with red hair"
# Same seed, same weights: only the order of floating-point sums may change.
ATOL = 1e-4


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def load(models_dir: Path, family: str) -> Any:
    """A fresh pipeline: the switches change it in place."""
    pipeline = DiffusionPipeline.from_pretrained(str(ensure_tiny_pipeline(family, models_dir)))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(pipeline: Any, seeds: tuple[int, ...] = (1, 2), *, size: int = 128, **extra: Any) -> np.ndarray:
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    with torch.inference_mode():
        images = pipeline(
            PROMPT,
            num_images_per_prompt=len(seeds),
            generator=generators,
            num_inference_steps=3,
            guidance_scale=5.0,
            width=size,
            height=size,
            output_type="np",
            **extra,
        ).images
    return np.asarray(images)


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("switch", ["channels_last", "fused_qkv"])
def test_a_switch_leaves_the_images_as_they_were(models_dir: Path, family: str, switch: str) -> None:
    pipeline = load(models_dir, family)
    before = generate(pipeline)
    if switch == "channels_last":
        step = acceleration.use_channels_last(pipeline)
        assert pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    else:
        step = acceleration.fuse_qkv(pipeline)
        processors = set(map(type, pipeline.unet.attn_processors.values()))
        assert processors == {FusedAttnProcessor2_0}
    assert step.on, step.detail
    np.testing.assert_allclose(generate(pipeline), before, atol=ATOL)


def test_fused_qkv_is_undone_cleanly(models_dir: Path) -> None:
    pipeline = load(models_dir, "sdxl")
    before = generate(pipeline)
    parameters = sum(p.numel() for p in pipeline.unet.parameters())
    fused = acceleration.fuse_qkv(pipeline)
    assert "+0.2M parameters" in fused.detail  # the fused copies, beside the separate projections
    assert not acceleration.unfuse_qkv(pipeline).on
    assert sum(p.numel() for p in pipeline.unet.parameters()) == parameters
    assert set(map(type, pipeline.unet.attn_processors.values())) == {AttnProcessor2_0}
    assert np.array_equal(generate(pipeline), before)


def test_classic_attention_is_switched_back_to_sdpa(models_dir: Path) -> None:
    pipeline = load(models_dir, "sdxl")
    before = generate(pipeline)
    pipeline.unet.set_attn_processor(AttnProcessor())
    step = acceleration.ensure_sdpa(pipeline)
    assert step.on
    assert "switched back" in step.detail
    assert set(map(type, pipeline.unet.attn_processors.values())) == {AttnProcessor2_0}
    np.testing.assert_allclose(generate(pipeline), before, atol=ATOL)
    assert "switched back" not in acceleration.ensure_sdpa(pipeline).detail


def test_vae_slices_a_large_batch_only_and_the_pixels_stay(models_dir: Path) -> None:
    pipeline = load(models_dir, "sdxl")
    before = generate(pipeline)
    acceleration.set_vae_limits(pipeline, VaeLimits(tile_above_px=0, slice_above_px=2 * 128 * 128 - 1))
    assert fit_vae(pipeline, 128, 128, 1) == VaeMode(tiled=False, sliced=False)
    assert fit_vae(pipeline, 128, 128, 2) == VaeMode(tiled=False, sliced=True)
    assert pipeline.vae.use_slicing
    np.testing.assert_allclose(generate(pipeline), before, atol=ATOL)


def test_vae_tiles_large_images_only(models_dir: Path) -> None:
    pipeline = load(models_dir, "sdxl")
    small = generate(pipeline, (3,), size=256)
    large = generate(pipeline, (3,), size=384)
    # The tiny VAE's tiles are 256 px (its sample size): a 384 px image decodes in overlapping tiles.
    acceleration.set_vae_limits(pipeline, VaeLimits(tile_above_px=256 * 256, slice_above_px=0))
    assert fit_vae(pipeline, 256, 256, 1) == VaeMode(tiled=False, sliced=False)
    assert np.array_equal(generate(pipeline, (3,), size=256), small)  # below the limit: untouched
    assert fit_vae(pipeline, 384, 384, 1) == VaeMode(tiled=True, sliced=False)
    tiled = generate(pipeline, (3,), size=384)
    assert tiled.shape == large.shape
    # Tiles are decoded apart and blended, so seams differ a little; the image as a whole does not.
    difference = np.abs(tiled - large)
    assert difference.mean() < 0.02, difference.mean()
    assert not np.array_equal(tiled, large)


def test_a_pipeline_without_limits_decodes_as_it_was_set_up(models_dir: Path) -> None:
    pipeline = load(models_dir, "sd15")
    pipeline.vae.enable_slicing()
    assert fit_vae(pipeline, 4096, 4096, 4) == VaeMode(tiled=False, sliced=True)
    assert pipeline.vae.use_slicing and not pipeline.vae.use_tiling


def test_the_fast_path_is_on_for_cuda_only() -> None:
    settings = WorkerSettings(device="cpu", torch_compile=False, vae_tile_above_px=0)
    assert FastPath.for_device("cpu") == FastPath.off() == FastPath.from_settings(settings, "cpu")
    assert FastPath.for_device("mps") == FastPath.off()
    cuda = FastPath.for_device("cuda")
    assert cuda.channels_last and cuda.fuse_qkv and cuda.compile
    assert (cuda.vae_tile_above_px, cuda.vae_slice_above_px) == (1536 * 1536, 4 * 1024 * 1024)
    configured = FastPath.from_settings(settings, "cuda")
    assert (configured.compile, configured.vae_tile_above_px, configured.channels_last) == (False, 0, True)


def test_the_whole_fast_path_without_compile_keeps_the_images(models_dir: Path) -> None:
    pipeline = load(models_dir, "sdxl")
    before = generate(pipeline)
    report = accelerate(pipeline, "sdxl", FastPath(compile=False))
    assert report.applied == ("sdpa", "channels_last", "fused_qkv", "vae_limits")
    assert "fused_qkv on" in report.summary()
    fit_vae(pipeline, 128, 128, 2)
    np.testing.assert_allclose(generate(pipeline), before, atol=ATOL)


def test_off_the_cuda_path_only_sdpa_is_checked(models_dir: Path) -> None:
    pipeline = load(models_dir, "sd15")
    report = accelerate(pipeline, "sd15", FastPath.off())
    assert report.applied == ("sdpa",)
    assert not pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    other = accelerate(pipeline, "sd-upscale", FastPath())
    assert other.applied == ("sdpa",)
    assert "not applied to sd-upscale" in other.summary()


def face() -> Image.Image:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()[0:256, 96:352]).resize((128, 128)).save(buffer, format="JPEG")
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_an_identity_adapter_attaches_to_a_fused_pipeline(models_dir: Path) -> None:
    from jobs.identity import attach_ip_adapter, ensure_tiny_ip_adapter, identity_kwargs, tiny_adapter_source

    source = tiny_adapter_source(ensure_tiny_ip_adapter(models_dir))
    plain, fused = load(models_dir, "sdxl"), load(models_dir, "sdxl")
    assert acceleration.fuse_qkv(fused).on
    images = []
    for pipeline in (plain, fused):
        attach_ip_adapter(pipeline, source)
        images.append(generate(pipeline, (5,), **identity_kwargs(pipeline, [face()], 1.0, 1)))
    np.testing.assert_allclose(images[1], images[0], atol=ATOL)


def tiny_adapter(models_dir: Path) -> Callable[[Any], acceleration.Step]:
    """What the worker passes as `attach`: the tiny identity adapter, loaded into the pipeline."""
    from jobs.identity import attach_ip_adapter, ensure_tiny_ip_adapter, tiny_adapter_source

    source = tiny_adapter_source(ensure_tiny_ip_adapter(models_dir))

    def attach(pipeline: Any) -> acceleration.Step:
        attach_ip_adapter(pipeline, source)
        return acceleration.Step("identity_adapter", True, "tiny")

    return attach


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far: a compile after the warm-up adds one."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


COMPILE_EAGER = FastPath(
    channels_last=False,
    fuse_qkv=True,
    compile=True,
    vae_tile_above_px=0,
    vae_slice_above_px=0,
    compile_options=(("backend", "eager"),),
)
WARM_UP = [(128, 128, 1), (128, 192, 2)]


def test_an_adapter_loaded_with_the_pipeline_serves_every_job_without_compiling_again(
    models_dir: Path,
) -> None:
    """Faces or none, any strength, any number of faces and images: the warm-up's graphs serve them all.

    The negative control first loads the adapter after compiling, as the worker used to on the first
    identity job: the next job compiles again, so the count does see a recompile when there is one.
    Compiled graphs are kept per function, for every pipeline of the process: each part starts afresh.
    """
    from jobs.identity import identity_kwargs, no_identity_kwargs

    torch._dynamo.reset()
    late = load(models_dir, "sdxl")
    accelerate(late, "sdxl", COMPILE_EAGER, WARM_UP)
    before = compiled_graphs()
    tiny_adapter(models_dir)(late)
    generate(late, (1,), **identity_kwargs(late, [face()], 0.7, 1))
    assert compiled_graphs() > before

    torch._dynamo.reset()
    pipeline = load(models_dir, "sdxl")
    report = accelerate(pipeline, "sdxl", COMPILE_EAGER, WARM_UP, attach=tiny_adapter(models_dir))
    assert report.applied == ("sdpa", "fused_qkv", "identity_adapter", "compile", "warm_up"), report.summary()
    assert "2×128×192 (2 faces)" in report.summary()
    warm = compiled_graphs()
    jobs: list[tuple[tuple[int, ...], int, dict[str, Any]]] = [
        ((1,), 128, no_identity_kwargs(pipeline, 1)),
        ((2, 3), 128, identity_kwargs(pipeline, [face()], 0.7, 2)),
        ((4,), 192, identity_kwargs(pipeline, [face()], 0.35, 1)),
        ((5, 6, 7), 128, identity_kwargs(pipeline, [face(), face()], 1.0, 3)),
        ((8, 9, 10, 11), 192, no_identity_kwargs(pipeline, 4)),
    ]
    for seeds, size, extra in jobs:
        generate(pipeline, seeds, size=size, **extra)
    assert compiled_graphs() == warm


def test_the_fused_copies_an_adapter_does_not_use_are_freed_and_the_pixels_stay(models_dir: Path) -> None:
    from diffusers.models.attention_processor import Attention

    from jobs.identity import identity_kwargs, no_identity_kwargs

    fuse_only = replace(COMPILE_EAGER, compile=False)
    never_adapted = load(models_dir, "sdxl")
    without = accelerate(never_adapted, "sdxl", fuse_only)
    adapted = load(models_dir, "sdxl")
    report = accelerate(adapted, "sdxl", fuse_only, attach=tiny_adapter(models_dir))
    assert 0 < report.added_bytes < without.added_bytes
    layers = {name: m for name, m in adapted.unet.named_modules() if isinstance(m, Attention)}
    self_attention = [m for name, m in layers.items() if name.endswith(".attn1")]
    cross_attention = [m for name, m in layers.items() if name.endswith(".attn2")]
    assert self_attention and all(hasattr(m, "to_qkv") for m in self_attention)
    assert cross_attention and not any(hasattr(m, "to_kv") for m in cross_attention)
    # Without faces: the pixels of the pipeline that never had an adapter.
    np.testing.assert_allclose(
        generate(adapted, **no_identity_kwargs(adapted, 2)), generate(never_adapted), atol=ATOL
    )
    # With a face: the pixels of the same adapter on a pipeline with no fast path at all.
    plain = load(models_dir, "sdxl")
    tiny_adapter(models_dir)(plain)
    np.testing.assert_allclose(
        generate(adapted, (5,), **identity_kwargs(adapted, [face()], 0.6, 1)),
        generate(plain, (5,), **identity_kwargs(plain, [face()], 0.6, 1)),
        atol=ATOL,
    )


def test_compiled_blocks_warm_up_and_keep_the_images(models_dir: Path) -> None:
    """Regional compilation with fullgraph=True: a graph break in a block would fail the warm-up."""
    pipeline = load(models_dir, "sdxl")
    before = generate(pipeline, (1,))
    compiled = acceleration.compile_denoiser(pipeline, backend="eager")
    assert compiled.on
    assert compiled.detail == "regional: 12 × BasicTransformerBlock"
    warmed = acceleration.warm_up(pipeline, [(128, 128, 1)])
    assert warmed.on, warmed.detail
    np.testing.assert_allclose(generate(pipeline, (1,)), before, atol=ATOL)


def _failing_backend(graph: Any, example_inputs: Any) -> Any:
    raise RuntimeError("no compiler here")


def test_a_compile_that_fails_its_warm_up_is_undone(models_dir: Path) -> None:
    pipeline = load(models_dir, "sd15")
    before = generate(pipeline, (1,))
    fast = replace(COMPILE_EAGER, fuse_qkv=False, compile_options=(("backend", _failing_backend),))
    report = accelerate(pipeline, "sd15", fast, warm_up_sizes=[(128, 128, 1)])
    assert [(s.name, s.on) for s in report.steps] == [("sdpa", True), ("warm_up", False), ("compile", False)]
    assert "no compiler here" in report.steps[1].detail
    assert np.array_equal(generate(pipeline, (1,)), before)
