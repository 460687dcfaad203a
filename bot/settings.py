"""Settings of a bot process (`likeness generate`, `likeness serve`): environment first, then `.env`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from jobs.settings import SharedSettings


class BotSettings(SharedSettings):
    """The shared settings (data dir, models file, default profile, Redis URL) plus the bot's own."""

    job_wait_s: float = Field(
        default=1800, ge=1, le=86_400, description="How long the bot waits for a job before calling it lost."
    )

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite3"

    @property
    def generations_dir(self) -> Path:
        return self.data_dir / "generations"

    @property
    def characters_path(self) -> Path:
        return self.data_dir / "characters.sqlite3"

    @property
    def character_images_dir(self) -> Path:
        return self.data_dir / "characters"
