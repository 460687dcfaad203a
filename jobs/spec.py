"""What crosses the queue: plain, versioned job specs, progress events and results.

A `JobSpec` is self-contained: a worker runs it with nothing but the spec and its weights. Specs and
results are serialized with msgpack (never pickle: anyone who can write to Redis could otherwise run
code on the workers).
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEC_VERSION = 1

JobKind = Literal["txt2img", "vary", "upscale", "animate", "noop"]
# Kinds that start from an image of an earlier generation (carried as the `source` input).
FROM_IMAGE_KINDS: tuple[str, ...] = ("vary", "upscale", "animate")


def new_id(prefix: str) -> str:
    """A short random id such as `g_3k9x2c7q1m4z`: safe in file names, URLs and button custom ids."""
    alphabet = "0123456789abcdefghijkmnpqrstuvwxyz"
    return prefix + "_" + "".join(secrets.choice(alphabet) for _ in range(12))


class _Plain(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


class Adapter(_Plain):
    """An IP-Adapter to condition on face references, and how strongly."""

    source: str = Field(description="HF repo id, local folder, or `tiny:ip-adapter`")
    subfolder: str = ""
    weight_name: str = ""
    image_encoder_folder: str = ""
    scale: float = Field(default=1.0, ge=0.0, le=2.0, description="adapter scale: --cw / 100")


class UpscaleRecipe(_Plain):
    """How an upscale job enlarges its source image: the factor and the tiling that bounds memory."""

    factor: Literal[2, 4]
    tile: int = Field(ge=32, le=2048, description="input pixels per tile side")
    overlap: int = Field(ge=0, le=512, description="input pixels tiles share, blended across")
    noise_level: int = Field(default=20, ge=0, le=1000, description="noise added to the low-res image")


class MotionRecipe(_Plain):
    """How an animate job moves its source image (Stable Video Diffusion's conditioning)."""

    frames: int = Field(ge=2, le=128)
    fps: int = Field(ge=1, le=60)
    motion: int = Field(ge=1, le=255, description="motion_bucket_id: more is more movement (127 default)")
    noise_aug: float = Field(default=0.02, ge=0.0, le=1.0)
    min_cfg: float = Field(default=1.0, ge=0.0, le=50.0, description="guidance at the first frame")
    decode_chunk: int = Field(default=8, ge=1, le=128, description="frames decoded at once (VAE memory)")
    max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=64 * 1024, description="upload budget for the MP4 and for the preview"
    )


class Recipe(_Plain):
    """How to make the images: everything but the words."""

    profile: str = Field(description="catalog profile that routed this job, e.g. `tiny-xl`")
    family: str = Field(description="pipeline family: sd15, sdxl, sd3, flux")
    checkpoint: str = Field(description="HF id, local path, or `tiny:<family>`")
    scheduler: str = Field(description="diffusers scheduler class name, e.g. EulerDiscreteScheduler")
    steps: int = Field(ge=1, le=200)
    cfg: float = Field(ge=0.0, le=50.0)
    width: int = Field(ge=64, le=4096, multiple_of=8)
    height: int = Field(ge=64, le=4096, multiple_of=8)
    seeds: tuple[int, ...] = Field(
        min_length=1, max_length=8, description="one seed per variation; variation k uses seeds[k-1]"
    )
    adapter: Adapter | None = Field(default=None, description="IP-Adapter for identity jobs; None = plain")
    strength: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="vary: how far from the source image (0.35 subtle, 0.7 strong)",
    )
    upscale: UpscaleRecipe | None = None
    motion: MotionRecipe | None = None


class InputImage(_Plain):
    """An image a job needs (a character's face crop, a parent variation), carried by value.

    Recipes embedded in posted images keep only `sha256`, never the bytes: a reference photo must not
    travel inside every picture made from it.
    """

    role: str = Field(
        description="what the image is for: `face` (identity reference) or `source` (the image a vary, "
        "upscale or animate job starts from)"
    )
    media_type: str = "image/png"
    data: bytes = b""
    sha256: str = Field(default="", description="content hash of `data`; how a re-run finds it again")


class Parent(_Plain):
    """The variation a vary, upscale or animate job starts from: how any result traces back to its request."""

    generation_id: str
    index: int = Field(ge=1)
    kind: JobKind = "txt2img"

    def describe(self) -> str:
        return f"{self.generation_id} #{self.index}"


class JobSpec(_Plain):
    version: int = SPEC_VERSION
    job_id: str = Field(default_factory=lambda: new_id("j"))
    generation_id: str
    kind: JobKind = "txt2img"
    prompt: str = ""
    negative: str = ""
    recipe: Recipe | None = None
    inputs: tuple[InputImage, ...] = ()
    keep: tuple[int, ...] = Field(
        default=(), description="the variations (1-based) to return; empty = all of them"
    )
    parent: Parent | None = Field(default=None, description="the variation this job starts from")

    @model_validator(mode="after")
    def _keep_names_variations(self) -> JobSpec:
        count = len(self.recipe.seeds) if self.recipe else 0
        for index in self.keep:
            if not 1 <= index <= count:
                raise ValueError(f"keep names variation {index}, but the recipe makes {count}")
        return self

    @model_validator(mode="after")
    def _kind_has_what_it_needs(self) -> JobSpec:
        if self.kind not in FROM_IMAGE_KINDS:
            return self
        if self.parent is None:
            raise ValueError(f"a {self.kind} job names the variation it starts from (`parent`)")
        if not any(item.role == "source" for item in self.inputs):
            raise ValueError(f"a {self.kind} job carries its source image as an input with role `source`")
        recipe = self.recipe
        if recipe is not None:
            needs = {"vary": recipe.strength, "upscale": recipe.upscale, "animate": recipe.motion}
            field = {"vary": "strength", "upscale": "upscale", "animate": "motion"}[self.kind]
            if needs[self.kind] is None:
                raise ValueError(f"a {self.kind} job's recipe sets `{field}`")
        return self

    def source(self) -> InputImage:
        """The image a vary, upscale or animate job starts from."""
        for item in self.inputs:
            if item.role == "source":
                return item
        raise ValueError(f"job {self.job_id} ({self.kind}) has no source image")

    @property
    def kept(self) -> tuple[int, ...]:
        """The variations this job returns, 1-based."""
        count = len(self.recipe.seeds) if self.recipe else 0
        return self.keep or tuple(range(1, count + 1))

    def seed_of(self, index: int) -> int:
        """The seed of variation `index` (1-based)."""
        if self.recipe is None or not 1 <= index <= len(self.recipe.seeds):
            count = len(self.recipe.seeds) if self.recipe else 0
            raise ValueError(f"variation {index} does not exist; this job has 1 to {count}")
        return self.recipe.seeds[index - 1]

    def without_input_bytes(self) -> JobSpec:
        """The spec with its inputs reduced to their hashes (what an image may carry about its sources)."""
        inputs = tuple(item.model_copy(update={"data": b""}) for item in self.inputs)
        return self.model_copy(update={"inputs": inputs})

    def single_variation(self, index: int) -> JobSpec:
        """The spec that makes variation `index` (1-based) again, pixel for pixel.

        It keeps the whole batch of seeds and returns only that variation: float kernels (oneDNN, MKL,
        cuBLAS) pick batch-size-dependent paths, so the same seed run alone can differ by one level in
        a few pixels. Running the original batch again is bit-identical.
        """
        self.seed_of(index)
        return self.model_copy(update={"keep": (index,), "job_id": new_id("j")})


class ProgressEvent(_Plain):
    """What a job is doing now. `step`/`total` are set while the pipeline denoises."""

    job_id: str
    state: Literal["queued", "started", "loading", "step", "encoding", "finished", "failed"]
    step: int = 0
    total: int = 0
    position: int | None = Field(default=None, description="place in the queue while `queued` (0 = next)")
    message: str = ""


class ResultImage(_Plain):
    index: int = Field(ge=1, description="variation number, 1-based")
    seed: int
    width: int
    height: int
    png: bytes = Field(description="PNG with the recipe embedded (A1111 `parameters` + `likeness` JSON)")


class ResultVideo(_Plain):
    """An animation: the H.264 MP4 and a preview (animated WebP, or GIF) for inline display."""

    seed: int
    width: int
    height: int
    frames: int
    fps: int
    mp4: bytes
    preview: bytes
    preview_type: str = Field(description="media type of the preview: image/webp or image/gif")


class JobResult(_Plain):
    version: int = SPEC_VERSION
    job_id: str
    generation_id: str
    ok: bool
    error: str = Field(default="", description="why the job failed, fit to show a user")
    images: tuple[ResultImage, ...] = ()
    grid: bytes | None = Field(default=None, description="contact sheet of the variations (PNG)")
    video: ResultVideo | None = Field(default=None, description="the animation of an animate job")
    worker: str = ""
    timings: dict[str, float] = Field(
        default_factory=dict, description="seconds per phase: load, run, encode"
    )
    notices: tuple[str, ...] = Field(
        default=(), description="things the user should know, e.g. noise weights"
    )


def _default(obj: Any) -> Any:
    # arq puts exceptions and datetimes in its own records; keep them readable, never executable.
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"cannot serialize {type(obj).__name__} onto the queue")


def pack(obj: Any) -> bytes:
    """msgpack for the queue (arq's `job_serializer`)."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    """The inverse of `pack` (arq's `job_deserializer`)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
