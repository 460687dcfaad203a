"""`likeness serve discord`: run the Discord bot, on the embedded default or a Redis fleet.

discord.py is imported only when the command runs, so `likeness --help` stays quick.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from bot.cli_common import chat_studio, fail, load_settings, log_to_stderr, run
from bot.settings import BotSettings

NO_TOKEN = (
    "no Discord bot token: set LIKENESS_DISCORD_TOKEN (or DISCORD_TOKEN) to the token from "
    "https://discord.com/developers/applications → your application → Bot → Reset Token"
)


def discord_command() -> None:
    """Run the Discord bot: /portrait and its buttons (settings: LIKENESS_DISCORD_*)."""
    settings = load_settings(BotSettings)
    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        fail(NO_TOKEN)
    log_to_stderr(logging.INFO)
    import discord

    try:
        run(serve_discord(settings))
    except discord.LoginFailure:
        fail("Discord refused the bot token (401); reset it in the developer portal and set it again")
    except discord.PrivilegedIntentsRequired:  # Likeness asks for none; a changed build might
        fail("Discord refused the gateway intents; Likeness needs no privileged intent")


async def serve_discord(settings: BotSettings) -> None:
    """Run until SIGTERM or Ctrl-C; the ledger keeps what was asked, whatever happens."""
    from bot.discord.bot import LikenessBot, discord_endpoints

    assert settings.discord_token is not None
    async with AsyncExitStack() as stack:
        bot = LikenessBot(await chat_studio(stack, settings), sync_commands=settings.discord_sync_commands)
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []
        loop.add_signal_handler(signal.SIGTERM, lambda: closing.append(loop.create_task(bot.close())))
        stack.callback(loop.remove_signal_handler, signal.SIGTERM)
        stack.push_async_callback(bot.close)
        with discord_endpoints(settings.discord_api_base, settings.discord_gateway_url):
            await bot.start(settings.discord_token.get_secret_value().strip())
