"""`likeness serve slack`: run the Slack app, over HTTP (the Events API, signed requests) or Socket Mode,
for one workspace (its bot token) or for every workspace that installs it (the OAuth client id and
secret: the install link and Slack's redirect are served over HTTP, also in Socket Mode).

slack_bolt and slack_sdk are imported only when the command runs, so `likeness --help` stays quick.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import signal
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, Field, SecretStr

from bot.cli_common import chat_studio, fail, load_settings, log_to_stderr, run
from bot.settings import BotSettings

if TYPE_CHECKING:
    from bot.slack.bot import SlackBot

log = logging.getLogger(__name__)

NO_TOKEN = (
    "no Slack bot token: set LIKENESS_SLACK_BOT_TOKEN (or SLACK_BOT_TOKEN) to the Bot User OAuth Token "
    "(xoxb-…) from https://api.slack.com/apps → your app → OAuth & Permissions; or, to serve several "
    "workspaces, LIKENESS_SLACK_CLIENT_ID and LIKENESS_SLACK_CLIENT_SECRET (Basic Information → App "
    "Credentials)"
)
BOTH_MODES = (
    "LIKENESS_SLACK_BOT_TOKEN is set together with LIKENESS_SLACK_CLIENT_ID and "
    "LIKENESS_SLACK_CLIENT_SECRET: a bot token serves its one workspace, the client id and secret every "
    "workspace that installs the app. "
    "Remove LIKENESS_SLACK_BOT_TOKEN (and SLACK_BOT_TOKEN) to serve several workspaces, or the client id "
    "and secret to serve one"
)
HALF_CLIENT = (
    "{have} is set but {missing} is not: serving several workspaces takes both (https://api.slack.com/apps "
    "→ your app → Basic Information → App Credentials)"
)
NO_SECRET = (
    "no way for Slack to reach Likeness: set LIKENESS_SLACK_SIGNING_SECRET (Basic Information → Signing "
    "Secret) to serve HTTP, or LIKENESS_SLACK_APP_TOKEN (an xapp-… token with connections:write) for Socket "
    "Mode"
)


class SlackSettings(BotSettings):
    """The bot's settings (LIKENESS_SLACK_BOT_TOKEN and the others) and those of serving several
    workspaces through Slack's install flow."""

    slack_client_id: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        validation_alias=AliasChoices("LIKENESS_SLACK_CLIENT_ID", "SLACK_CLIENT_ID", "slack_client_id"),
        description="The app's Client ID (Basic Information → App Credentials): with the client secret, "
        "Likeness serves every workspace that installs it, each with its own bot token.",
    )
    slack_client_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "LIKENESS_SLACK_CLIENT_SECRET", "SLACK_CLIENT_SECRET", "slack_client_secret"
        ),
        description="The app's Client Secret (Basic Information → App Credentials), for the install flow.",
    )
    slack_state_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "LIKENESS_SLACK_STATE_SECRET", "SLACK_STATE_SECRET", "slack_state_secret"
        ),
        description="A long random string that signs the state of each install link (e.g. `openssl rand "
        "-hex 32`); unset, a key derived from the client secret does.",
    )
    slack_public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Where Slack and browsers reach Likeness, e.g. https://likeness.example.com: the "
        "redirect URL is this plus /slack/oauth_redirect, the install link this plus /slack/install. "
        "Unset, Slack uses the one Redirect URL of the app's OAuth & Permissions page.",
    )

    @property
    def serves_several(self) -> bool:
        """Whether the install flow is set up (a client id and secret)."""
        return bool(self.slack_client_id and _secret(self.slack_client_secret))

    def slack_problem(self) -> str | None:
        """What keeps `likeness serve slack` from starting, in words, or None."""
        client_id, client_secret = bool(self.slack_client_id), bool(_secret(self.slack_client_secret))
        if client_id != client_secret:
            names = ("LIKENESS_SLACK_CLIENT_ID", "LIKENESS_SLACK_CLIENT_SECRET")
            have, missing = names if client_id else names[::-1]
            return HALF_CLIENT.format(have=have, missing=missing)
        if self.serves_several and _secret(self.slack_bot_token):
            return BOTH_MODES
        if not self.serves_several and not _secret(self.slack_bot_token):
            return NO_TOKEN
        if not _secret(self.slack_signing_secret) and not _secret(self.slack_app_token):
            return NO_SECRET
        return None

    def state_secret(self) -> str:
        """The key that signs install states: LIKENESS_SLACK_STATE_SECRET, else one derived from the client
        secret (stable across restarts, so a link handed out before one still works)."""
        given = _secret(self.slack_state_secret)
        if given:
            return given
        client_secret = _secret(self.slack_client_secret).encode()
        return hmac.new(client_secret, b"likeness install state", hashlib.sha256).hexdigest()


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


def slack_command() -> None:
    """Run the Slack app: /portrait, /character, /queue, /settings, /forget-me, @mentions and the buttons
    (settings: LIKENESS_SLACK_*)."""
    settings = load_settings(SlackSettings)
    problem = settings.slack_problem()
    if problem is not None:
        fail(problem)
    log_to_stderr(logging.INFO)
    from slack_sdk.errors import SlackApiError

    try:
        run(serve_slack(settings))
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else exc
        fail(f"Slack refused the bot token ({error}); reinstall the app and copy its token again")


async def serve_slack(settings: SlackSettings) -> None:
    """Run until SIGTERM or Ctrl-C; the ledger keeps what was asked, whatever happens.

    With an app token, Socket Mode; else HTTP on `slack_port`, path /slack/events. Serving several
    workspaces, the install link and Slack's redirect are on that port too.
    """
    from bot.slack.bot import SlackBot, web_client
    from bot.slack.installs import Installs

    installs = None
    if settings.serves_several:
        client = web_client(None, settings.slack_api_base)  # each workspace's token comes with its request
        installs = Installs(
            settings.data_dir,
            client_id=str(settings.slack_client_id),
            client_secret=_secret(settings.slack_client_secret),
            state_secret=settings.state_secret(),
            public_url=settings.slack_public_url,
            api_base=settings.slack_api_base,
        )
        log.info("serving every Slack workspace that installs Likeness: %s", installs.install_link)
    else:
        client = web_client(_secret(settings.slack_bot_token), settings.slack_api_base)
        identity = await client.auth_test()  # a bad token fails here, in one line
        log.info("connected to Slack as %s in %s", identity.get("user"), identity.get("team"))
    async with AsyncExitStack() as stack:
        studio = await chat_studio(stack, settings)
        bot = SlackBot(
            studio, client, signing_secret=_secret(settings.slack_signing_secret), installs=installs
        )
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
    HTTP endpoint; serving several workspaces, the install pages over HTTP either way. Returns where it
    listens, in words."""
    from aiohttp import web

    from bot.slack.bot import EVENTS_PATH
    from bot.slack.installs import INSTALL_PATH

    app_token = _secret(settings.slack_app_token)
    several = bot.app.oauth_flow is not None
    where = []
    if app_token:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(bot.app, app_token, web_client=bot.client)
        await handler.connect_async()  # type: ignore[no-untyped-call]
        stack.push_async_callback(handler.close_async)
        where.append("over Socket Mode")
        if not several:
            return where[0]
    # In Socket Mode, HTTP serves the install pages only: events there would go unverified.
    runner = web.AppRunner(bot.web_app(EVENTS_PATH, events=not app_token))
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, settings.slack_host, settings.slack_port).start()
    address = f"http://{settings.slack_host}:{settings.slack_port}"
    if not app_token:
        where.append(f"on {address}{EVENTS_PATH}")
    if several:
        where.append(f"with the install link on {address}{INSTALL_PATH}")
    return "; ".join(where)
