"""Settings of a bot process (`likeness generate`, `likeness serve`): environment first, then `.env`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/likeness`, else `~/.local/share/likeness` (the same place a worker uses)."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "likeness"


class BotSettings(BaseSettings):
    """Read from `LIKENESS_*` environment variables and an optional `.env` file."""

    model_config = SettingsConfigDict(env_prefix="LIKENESS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the ledger and finished images live. Default: $XDG_DATA_HOME/likeness.",
    )
    models_file: Path | None = Field(
        default=None, description="A models.toml of your own; default: the catalog shipped with Likeness."
    )
    default_profile: str = Field(
        default="auto",
        description="Profile used when a request names no --engine; `auto` = first with weights.",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db of the job queue; unset = the in-process worker."
    )
    job_wait_s: float = Field(
        default=1800, ge=1, le=86_400, description="How long the bot waits for a job before calling it lost."
    )

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    @property
    def generations_dir(self) -> Path:
        return self.data_dir / "generations"
