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

JobKind = Literal["txt2img", "noop"]


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


class InputImage(_Plain):
    """An image a job needs (a character's face crop, a parent variation), carried by value.

    Recipes embedded in posted images keep only `sha256`, never the bytes: a reference photo must not
    travel inside every picture made from it.
    """

    role: str = Field(description="what the image is for: `face` (identity reference)")
    media_type: str = "image/png"
    data: bytes = b""
    sha256: str = Field(default="", description="content hash of `data`; how a re-run finds it again")


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

    @model_validator(mode="after")
    def _keep_names_variations(self) -> JobSpec:
        count = len(self.recipe.seeds) if self.recipe else 0
        for index in self.keep:
            if not 1 <= index <= count:
                raise ValueError(f"keep names variation {index}, but the recipe makes {count}")
        return self

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


class JobResult(_Plain):
    version: int = SPEC_VERSION
    job_id: str
    generation_id: str
    ok: bool
    error: str = Field(default="", description="why the job failed, fit to show a user")
    images: tuple[ResultImage, ...] = ()
    grid: bytes | None = Field(default=None, description="contact sheet of the variations (PNG)")
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
