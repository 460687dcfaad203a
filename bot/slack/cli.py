"""`likeness serve slack`: run the Slack app, over HTTP (the Events API, signed requests) or Socket Mode.

slack_bolt and slack_sdk are imported only when the command runs, so `likeness --help` stays quick.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from bot.cli_common import chat_studio, fail, load_settings, log_to_stderr, run
from bot.settings import BotSettings

if TYPE_CHECKING:
    from bot.slack.bot import SlackBot

log = logging.getLogger(__name__)

NO_TOKEN = (
    "no Slack bot token: set LIKENESS_SLACK_BOT_TOKEN (or SLACK_BOT_TOKEN) to the Bot User OAuth Token "
    "(xoxb-…) from https://api.slack.com/apps → your app → OAuth & Permissions"
)
NO_SECRET = (
    "no way for Slack to reach Likeness: set LIKENESS_SLACK_SIGNING_SECRET (Basic Information → Signing "
    "Secret) to serve HTTP, or LIKENESS_SLACK_APP_TOKEN (an xapp-… token with connections:write) for Socket "
    "Mode"
)


SlackSettings = BotSettings  # Slack's settings live with the bot's (LIKENESS_SLACK_*)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


def slack_command() -> None:
    """Run the Slack app: /portrait, /character, /queue, /settings, /forget-me, @mentions and the buttons
    (settings: LIKENESS_SLACK_*)."""
    settings = load_settings(SlackSettings)
    if not _secret(settings.slack_bot_token):
        fail(NO_TOKEN)
    if not _secret(settings.slack_signing_secret) and not _secret(settings.slack_app_token):
        fail(NO_SECRET)
    log_to_stderr(logging.INFO)
    from slack_sdk.errors import SlackApiError

    try:
        run(serve_slack(settings))
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else exc
        fail(f"Slack refused the bot token ({error}); reinstall the app and copy its token again")


async def serve_slack(settings: SlackSettings) -> None:
    """Run until SIGTERM or Ctrl-C; the ledger keeps what was asked, whatever happens.

    With an app token, Socket Mode; else HTTP on `slack_port`, path /slack/events.
    """
    from bot.slack.bot import SlackBot, web_client

    client = web_client(_secret(settings.slack_bot_token), settings.slack_api_base)
    identity = await client.auth_test()  # a bad token fails here, in one line
    log.info("connected to Slack as %s in %s", identity.get("user"), identity.get("team"))
    async with AsyncExitStack() as stack:
        studio = await chat_studio(stack, settings)
        bot = SlackBot(studio, client, signing_secret=_secret(settings.slack_signing_secret))
        stack.push_async_callback(bot.close)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        stack.callback(loop.remove_signal_handler, signal.SIGTERM)
        # What a restart cut short first, in the background; new requests are not held up by it.
        resumed = asyncio.ensure_future(bot.resume_open())
        stack.push_async_callback(_settle, resumed)
        log.info("listening for Slack %s", await listen(bot, settings, stack))
        await stopping.wait()


async def _settle(task: asyncio.Future[Any]) -> None:
    """Stop the resumption if it is still at work (what is left stays open in the ledger)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def listen(bot: SlackBot, settings: SlackSettings, stack: AsyncExitStack) -> str:
    """Open the way in for Slack's requests until `stack` closes: Socket Mode with an app token, else the
    HTTP endpoint. Returns where it listens, in words."""
    from aiohttp import web

    from bot.slack.bot import EVENTS_PATH

    app_token = _secret(settings.slack_app_token)
    if app_token:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(bot.app, app_token, web_client=bot.client)
        await handler.connect_async()  # type: ignore[no-untyped-call]
        stack.push_async_callback(handler.close_async)
        return "over Socket Mode"
    runner = web.AppRunner(bot.web_app(EVENTS_PATH))
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, settings.slack_host, settings.slack_port).start()
    return f"on http://{settings.slack_host}:{settings.slack_port}{EVENTS_PATH}"
