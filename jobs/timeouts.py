"""How long one job may run: a pure function of its spec and the worker's pace, scaled by the work asked
for (as AI Horde scales its job timeouts), instead of one limit for every job.

The work is counted in megapixel-steps, what a diffusion model denoises:

    txt2img  width × height / 10⁶ × steps × batch
    vary     width × height / 10⁶ × ⌊steps × strength⌋ × batch   (img2img skips the other steps)
    upscale  tiles × (8 × tile)² / 10⁶ × steps                     (x4 diffusion upscaler)
             output width × height / 10⁶                           (ESRGAN: one pass; Lanczos: none)
    animate  frames × width × height / 10⁶ × steps

An x4 diffusion upscaler denoises at its input's resolution, so a tile of t×t input pixels costs about
what an (8t)×(8t) image costs a txt2img model (whose latents are an eighth of the image a side). Each
family's weight says how heavy its model is beside SDXL (1.0): FLUX costs about four times as much per
megapixel-step. Then

    limit = clamp(work × weight × seconds_per_megapixel_step × safety, floor_s, ceiling_s)

The limit covers the run alone: its clock starts once the job's pipeline is ready. Loading a checkpoint
(with torch.compile and its warm-up, minutes on a slow disk) is bounded apart, by `load_s` (at least
`job_timeout_s`): a load cannot be stopped midway, and a retry would only load again.

Worked example, on a mid GPU (0.5 s per megapixel-step, safety 3): an SDXL portrait of 1024×1024, 30
steps, 4 variations is 1.048576 × 30 × 4 = 125.8 megapixel-steps; 125.8 × 1.0 × 0.5 × 3 = 188.7 s, so its
limit is 189 s from the moment its pipeline is ready, whether it was resident or had to be loaded first.
One variation of 512×512 at 20 steps is 5.2 megapixel-steps, 7.9 s: the floor, 60 s, applies. A job that
would need more than the ceiling (`job_timeout_s`, 900 s) gets the ceiling.

A job that runs past its limit is tried once more, on another worker if there is one (jobs/worker.py);
the bot waits for both tries (`TRIES`). Torch-free: the bot reads this module too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jobs.spec import JobSpec

TRIES = 2  # a job that runs past its limit is tried once more, then fails with the reason

# Seconds per megapixel-step (an SDXL-class model, classifier-free guidance on) when a worker is not told
# its own pace: a mid GPU (RTX 3060–4070 class) does one 1024×1024 step in 0.3–0.6 s.
PACE_BY_DEVICE = {"cuda": 0.5, "mps": 3.0, "cpu": 20.0}
DEFAULT_PACE = PACE_BY_DEVICE["cuda"]

# How heavy each family's model is per megapixel-step, beside SDXL. SD 1.5's UNet is a third of SDXL's;
# SD 3.5 Large and FLUX's transformers are three to five times its size. The upscaler's UNet is small.
FAMILY_WEIGHT = {
    "sd15": 0.5,
    "sdxl": 1.0,
    "sd3": 2.0,
    "flux": 4.0,
    "svd": 1.0,
    "sd-upscale": 0.5,
    "esrgan": 0.2,
    "lanczos": 0.0,
}
UNKNOWN_FAMILY_WEIGHT = 4.0  # a family this table does not know is taken to be as heavy as the heaviest

_MEGA = 1_000_000


@dataclass(frozen=True)
class Pace:
    """A worker's speed and margins: what turns a job's work into its time limit."""

    seconds_per_megapixel_step: float = DEFAULT_PACE
    safety: float = 3.0  # how many times the expected time a job may take before it counts as stuck
    load_s: float = 900.0  # how long loading the job's pipeline may take, on its own clock
    floor_s: float = 60.0  # no job gets less: startup, encoding and a busy machine take seconds
    ceiling_s: float = 900.0  # no job gets more (`job_timeout_s`)


def denoising_steps(steps: int, strength: float) -> int:
    """The steps an img2img call really runs (as jobs/pipelines.py `img2img_steps` counts them)."""
    return min(int(steps * strength), steps)


def megapixel_steps(spec: JobSpec) -> float:
    """The work of a job: the megapixels its model denoises, times the steps it takes (see the module)."""
    recipe = spec.recipe
    if recipe is None:
        return 0.0
    pixels = recipe.width * recipe.height / _MEGA
    batch = len(recipe.seeds)
    if spec.kind == "txt2img":
        return pixels * recipe.steps * batch
    if spec.kind == "vary":
        return pixels * denoising_steps(recipe.steps, recipe.strength or 1.0) * batch
    if spec.kind == "upscale":
        if recipe.family == "lanczos" or recipe.upscale is None:
            return 0.0
        if recipe.family == "esrgan":
            return pixels
        tiles = _tiles(spec)
        tile = recipe.upscale.tile
        return tiles * (8 * tile) ** 2 / _MEGA * recipe.steps
    if spec.kind == "animate":
        frames = recipe.motion.frames if recipe.motion else 1
        return frames * pixels * recipe.steps
    return 0.0


def _tiles(spec: JobSpec) -> int:
    """How many tiles an upscale job runs: its source (the output over the factor), tiled as the recipe
    says (jobs/tiling.py)."""
    from jobs.tiling import padded_size, tile_spans  # numpy: only upscale jobs need it

    recipe = spec.recipe
    assert recipe is not None and recipe.upscale is not None
    factor, tile, overlap = recipe.upscale.factor, recipe.upscale.tile, recipe.upscale.overlap
    width, height = padded_size(math.ceil(recipe.width / factor), math.ceil(recipe.height / factor))
    return len(tile_spans(width, tile, overlap)) * len(tile_spans(height, tile, overlap))


def job_limit_s(spec: JobSpec, pace: Pace) -> float:
    """How long `spec` may run on a worker of this pace, counted from when its pipeline is ready (its
    load is bounded apart, by `pace.load_s`)."""
    recipe = spec.recipe
    weight = FAMILY_WEIGHT.get(recipe.family, UNKNOWN_FAMILY_WEIGHT) if recipe else 0.0
    expected = megapixel_steps(spec) * weight * pace.seconds_per_megapixel_step * pace.safety
    return min(max(expected, pace.floor_s), pace.ceiling_s)


def describe_work(spec: JobSpec) -> str:
    """The work of a job in words a user knows: "1024×1024 × 30 steps", "4 × 512×512 × 20 steps"."""
    recipe = spec.recipe
    if recipe is None:
        return f"a {spec.kind} job"
    size = f"{recipe.width}×{recipe.height}"
    batch = f"{len(recipe.seeds)} × " if len(recipe.seeds) > 1 else ""
    if spec.kind == "vary":
        return f"{batch}{size} × {denoising_steps(recipe.steps, recipe.strength or 1.0)} steps"
    if spec.kind == "upscale":
        if recipe.family in ("lanczos", "esrgan") or recipe.upscale is None:
            return size
        return f"{size} in {_tiles(spec)} tiles × {recipe.steps} steps"
    if spec.kind == "animate":
        frames = recipe.motion.frames if recipe.motion else 1
        return f"{frames} frames of {size} × {recipe.steps} steps"
    return f"{batch}{size} × {recipe.steps} steps"


_NOUNS = {"txt2img": "portrait", "vary": "variation", "upscale": "upscale", "animate": "animation"}


def timed_out_twice(spec: JobSpec, limit_s: float) -> str:
    """Why a job that ran past its limit on both tries failed, fit to show the user."""
    noun = _NOUNS.get(spec.kind, "job")
    return (
        f"timed out twice: the {noun} took longer than {limit_s:.0f} s for {describe_work(spec)}; the "
        "workers may be overloaded — try fewer steps or a smaller size"
    )
