"""Settings: what every Likeness process shares, and what a worker adds.

Torch-free, so the bot's settings (bot/settings.py) build on `SharedSettings` too.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/likeness`, else `~/.local/share/likeness`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "likeness"


class SharedSettings(BaseSettings):
    """Settings every process kind reads, from `LIKENESS_*` environment variables and an optional `.env`."""

    model_config = SettingsConfigDict(env_prefix="LIKENESS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the ledger, results and tiny models live. Default: $XDG_DATA_HOME/likeness.",
    )
    models_file: Path | None = Field(
        default=None, description="A models.toml of your own; default: the catalog shipped with Likeness."
    )
    default_profile: str = Field(
        default="auto",
        description="Profile used when a request names no --engine; `auto` = first with weights.",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db of the job queue; unset = the in-process queue."
    )


class WorkerSettings(SharedSettings):
    """A worker process: `likeness worker`, or the worker inside the embedded default."""

    profiles: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated profiles this worker serves and preloads; empty = the default profile.",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="Torch device; `auto` = CUDA, then MPS, then CPU."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weights dtype; `auto` = bfloat16 on CUDA (float16 before Ampere), float32 on CPU.",
    )
    memory_budget_gb: float | None = Field(
        default=None,
        gt=0,
        le=4096,
        description="Memory for resident pipelines; unset = 90% of GPU memory (or 50% of RAM on CPU).",
    )
    # The fast path on CUDA (jobs/acceleration.py). Each switch is on by default and does nothing on a CPU
    # or MPS device, where it is slower or unsupported.
    host_memory_budget_gb: float | None = Field(
        default=None,
        ge=0,
        le=4096,
        description="CUDA only: host memory for pipelines moved off the GPU to make room (brought back in "
        "about a second instead of loaded again); unset = 40% of RAM, 0 = drop them instead.",
    )
    channels_last: bool = Field(
        default=True, description="CUDA only: keep UNet and VAE weights channels-last (faster convolutions)."
    )
    fuse_qkv: bool = Field(
        default=True,
        description="CUDA only: fuse attention query/key/value projections into one matmul where the "
        "pipeline supports it (costs a copy of those weights).",
    )
    torch_compile: bool = Field(
        default=True,
        description="CUDA only: torch.compile the denoiser's repeated blocks at load, with warm-up calls, "
        "so the first job does not pay for compiling (adds tens of seconds to each load).",
    )
    vae_tile_above_px: int = Field(
        default=1536 * 1536,
        ge=0,
        description="CUDA only: decode images of more pixels than this in tiles (bounded memory; seams are "
        "blended); 0 = never tile.",
    )
    vae_slice_above_px: int = Field(
        default=4 * 1024 * 1024,
        ge=0,
        description="CUDA only: decode a batch one image at a time when images × pixels exceed this; "
        "0 = never slice.",
    )
    worker_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    job_timeout_s: int = Field(default=900, ge=10, le=86_400, description="Longest a job may run.")
    seconds_per_megapixel_step: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="This worker's pace: seconds per megapixel per denoising step of an SDXL-class model; "
        "each job's time limit is scaled from it (jobs/timeouts.py). Unset = 0.5 on CUDA (a mid GPU), "
        "3 on MPS, 20 on CPU.",
    )
    job_timeout_safety: float = Field(
        default=3.0, ge=1.0, le=100.0, description="How many times its expected time a job may take."
    )
    job_load_allowance_s: float = Field(
        default=120.0,
        ge=0.0,
        le=3600.0,
        description="Loading a pipeline (with its compile and warm-up) has a bound of its own, apart from "
        "the job's limit: the larger of this and job_timeout_s.",
    )
    job_timeout_floor_s: float = Field(
        default=60.0,
        ge=1.0,
        le=86_400.0,
        description="The shortest time limit any job gets (at most job_timeout_s).",
    )
    max_failures_per_hour: int = Field(
        default=5,
        ge=0,
        le=10_000,
        description="A worker with this many failures (internal errors, missing weights) within an hour "
        "stops taking jobs and says why in its heartbeat; 0 = never.",
    )
    job_lock_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="How soon another worker takes over the job of a worker that died (its lock lapses).",
    )
    poll_delay_s: float = Field(
        default=0.05, ge=0.001, le=5.0, description="How often an idle worker polls Redis for work."
    )

    @field_validator("profiles", mode="before")
    @classmethod
    def _split_profiles(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
