"""Settings of a bot process (`likeness generate`, `likeness serve`): environment first, then `.env`."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator

from jobs.settings import SharedSettings
from jobs.timeouts import TRIES

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"


class BotSettings(SharedSettings):
    """The shared settings (data dir, models file, default profile, Redis URL) plus the bot's own."""

    job_timeout_s: int = Field(
        default=900,
        ge=10,
        le=86_400,
        description="The workers' longest job limit (their LIKENESS_JOB_TIMEOUT_S): a job that runs past "
        "its limit is tried once more, so the bot waits at least twice this.",
    )
    job_wait_s: float = Field(
        default=2400,
        ge=1,
        le=86_400,
        description="How long the bot waits for a job before calling it lost: two tries of the longest "
        "job (2 × job_timeout_s) and the time it may wait in its queue.",
    )
    discord_token: SecretStr | None = Field(
        default=None,
        # DISCORD_TOKEN too: the name most hosting guides and secret stores already use.
        validation_alias=AliasChoices("LIKENESS_DISCORD_TOKEN", "DISCORD_TOKEN", "discord_token"),
        description="The bot token from the Discord developer portal (Bot → Reset Token).",
    )
    discord_api_base: str = Field(
        default=DISCORD_API_BASE,
        pattern=r"^https?://\S+$",
        description="Discord's REST API base, with the version; another for a proxy or a test.",
    )
    discord_gateway_url: str = Field(
        default=DISCORD_GATEWAY_URL,
        pattern=r"^wss?://\S+$",
        description="Discord's gateway (WebSocket) URL; another for a gateway proxy or a test.",
    )
    discord_sync_commands: bool = Field(
        default=True,
        description="Register the slash commands with Discord at start (a bulk overwrite; idempotent).",
    )
    slack_bot_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LIKENESS_SLACK_BOT_TOKEN", "SLACK_BOT_TOKEN", "slack_bot_token"),
        description="The Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page.",
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "LIKENESS_SLACK_SIGNING_SECRET", "SLACK_SIGNING_SECRET", "slack_signing_secret"
        ),
        description="The app's Signing Secret (Basic Information): HTTP mode verifies every request with it.",
    )
    slack_app_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LIKENESS_SLACK_APP_TOKEN", "SLACK_APP_TOKEN", "slack_app_token"),
        description="An app-level token (xapp-…, scope connections:write): Socket Mode instead of HTTP.",
    )
    slack_api_base: str = Field(
        default="https://slack.com/api/",
        pattern=r"^https?://\S+/$",
        description="Slack's Web API base, ending in a slash; another for a proxy or a test.",
    )
    slack_port: int = Field(
        default=3000, ge=1, le=65_535, description="The port of the HTTP endpoint (path /slack/events)."
    )
    slack_host: str = Field(default="0.0.0.0", description="The address the HTTP endpoint listens on.")

    @field_validator("job_wait_s")
    @classmethod
    def _wait_for_every_try(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("job_timeout_s")
        if timeout is not None and value < TRIES * timeout:
            raise ValueError(
                f"{value:g} s is shorter than {TRIES} tries of the longest job ({TRIES} × job_timeout_s "
                f"{timeout} s = {TRIES * timeout} s): a job tried again after running past its limit would "
                f"be called lost while it runs; set LIKENESS_JOB_WAIT_S to at least {TRIES * timeout}, plus "
                "the time jobs wait in their queue"
            )
        return value

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
