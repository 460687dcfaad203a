"""Secrets from files, and kept out of logs: the filter on its own, then the `likeness` command end to end."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

from bot.redaction import (
    SHOWN,
    RedactSecrets,
    SecretFileUnreadable,
    read_secret_files,
    secret_variables,
    secrets_of,
)
from bot.settings import BotSettings

TOKEN = "xoxb-1111-2222-notarealtoken"


def test_a_file_variable_fills_its_secret_setting_unless_the_setting_is_given(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(f"  {TOKEN}\n")
    models = tmp_path / "models.toml"
    models.write_text("[profiles]\n")
    environ = {
        "LIKENESS_SLACK_BOT_TOKEN_FILE": str(token),
        "LIKENESS_REDIS_URL_FILE": str(token),
        "DISCORD_TOKEN_FILE": str(token),
        "DISCORD_TOKEN": "given",
        "LIKENESS_MODELS_FILE": str(models),  # a setting of its own, not a secret's file
        "HOME_FILE": str(token),  # not ours
    }
    assert read_secret_files(BotSettings, environ) == ["LIKENESS_REDIS_URL", "LIKENESS_SLACK_BOT_TOKEN"]
    assert environ["LIKENESS_SLACK_BOT_TOKEN"] == TOKEN and environ["DISCORD_TOKEN"] == "given"
    assert "HOME" not in environ and "LIKENESS_MODELS" not in environ
    secret = secret_variables(BotSettings)
    assert {"LIKENESS_DISCORD_TOKEN", "DISCORD_TOKEN", "SLACK_SIGNING_SECRET"} <= secret
    assert "LIKENESS_MODELS" not in secret


def test_an_unreadable_file_is_named_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SecretFileUnreadable, match=r"LIKENESS_SLACK_APP_TOKEN_FILE names .*nope.* set"):
        read_secret_files(BotSettings, {"LIKENESS_SLACK_APP_TOKEN_FILE": str(missing)})


def test_the_secrets_of_the_settings_are_the_tokens_and_url_passwords() -> None:
    settings = BotSettings(
        slack_bot_token=TOKEN,
        slack_signing_secret="abc",  # too short to blot out
        redis_url="redis://:s3cret-pass@redis.internal:6379/0",
    )
    assert sorted(secrets_of(settings)) == sorted([TOKEN, "s3cret-pass"])
    assert secrets_of(BotSettings(redis_url="redis://redis.internal:6379/0")) == []


def test_the_filter_blots_secrets_out_of_messages_arguments_and_tracebacks() -> None:
    redact = RedactSecrets()
    redact.add([TOKEN, "s3cret-pass"])
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    handler = Keep()
    handler.addFilter(redact)
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s for %s", TOKEN, "redis://:s3cret-pass@host")
        try:
            raise RuntimeError(f"refused {TOKEN}")
        except RuntimeError:
            logger.exception("call failed")
        logger.warning("nothing secret: %d%%", 5)
    finally:
        logger.removeHandler(handler)
    assert seen[0] == f"token {SHOWN} for redis://:{SHOWN}@host"
    assert "call failed" in seen[1] and f"RuntimeError: refused {SHOWN}" in seen[1]
    assert seen[2] == "nothing secret: 5%"
    assert not any(TOKEN in line or "s3cret-pass" in line for line in seen)


async def test_the_command_reads_the_token_file_and_never_prints_the_token(tmp_path: Path) -> None:
    """`likeness serve slack` with its token in a file: the token reaches Slack (the fake below), and when
    Slack's answer carries it back, the user sees [secret] instead."""
    seen_auth: list[str] = []

    async def auth_test(request: web.Request) -> web.Response:
        seen_auth.append(request.headers.get("Authorization", ""))
        return web.json_response({"ok": False, "error": f"invalid_auth for {TOKEN}"})

    app = web.Application()
    app.router.add_post("/api/auth.test", auth_test)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token_file = tmp_path / "slack_bot_token"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_", "SLACK_"))}
    env.update(
        LIKENESS_DATA_DIR=str(tmp_path / "data"),
        LIKENESS_SLACK_BOT_TOKEN_FILE=str(token_file),
        LIKENESS_SLACK_SIGNING_SECRET="signing-secret-value",
        LIKENESS_SLACK_API_BASE=f"http://127.0.0.1:{port}/api/",
        COLUMNS="200",
    )
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "slack", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await runner.cleanup()
    text = output.decode()
    assert seen_auth == [f"Bearer {TOKEN}"]  # read from the file
    assert process.returncode == 2 and f"invalid_auth for {SHOWN}" in text
    assert TOKEN not in text


def test_a_log_call_that_does_not_fit_its_format_does_not_raise_from_the_filter() -> None:
    redact = RedactSecrets()
    redact.add([TOKEN])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s and %s", ("one",), None)
    assert redact.filter(record) is True
