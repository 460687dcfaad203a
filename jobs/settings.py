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
    worker_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    job_timeout_s: int = Field(default=900, ge=10, le=86_400, description="Longest a job may run.")
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
