"""`likeness serve discord|slack`: run Likeness in a chat platform, on the embedded default or a Redis fleet.

Each adapter's command lives in its package (bot/discord/cli.py, bot/slack/cli.py) and imports its
platform library only when it runs, so `likeness --help` stays quick.
"""

from __future__ import annotations

import typer

from bot.discord.cli import discord_command
from bot.slack.cli import slack_command

serve_app = typer.Typer(help="Run Likeness in a chat platform.", no_args_is_help=True)


@serve_app.callback()
def serve() -> None:
    """Run Likeness in a chat platform."""


serve_app.command("discord")(discord_command)
serve_app.command("slack")(slack_command)
