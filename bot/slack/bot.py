"""The Slack adapter: `/portrait`, `@likeness …` mentions and the result buttons in, Studio calls out,
messages back.

Each request becomes one Studio call on behalf of an `Origin` (workspace, channel, user). Slack Bolt
verifies every request (the signing secret, and a timestamp within 5 minutes) before a handler sees it.
This module and its helpers are the only ones that import slack_bolt and slack_sdk: bot/slack/blocks.py
(the buttons and the words), bot/slack/forms.py (modals), bot/slack/replies.py (acknowledging, progress,
posting), bot/slack/characters.py (/character, Save as character), bot/slack/workspace.py (/queue,
/settings, /forget-me), bot/slack/members.py (who is an admin), bot/slack/files.py (members' files) and
bot/slack/installs.py (the install flow, for serving several workspaces).

With one bot token, every call goes out with it. With `installs` (several workspaces), Bolt finds the
token of the workspace a request comes from and hands its handlers a client that carries it; work outside
a request (what a restart cut short) finds its workspace's token the same way, by the generation's team.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.attachments import SLACK_FILE_HOSTS
from bot.buttons import Action
from bot.character_commands import character_text
from bot.commands import parse_portrait
from bot.courier import Courier, Outcome, PostFailed
from bot.errors import GenerationRefused, UserError
from bot.handlers import HandlerTasks
from bot.ledger import Generation
from bot.progress import finish_showing_progress
from bot.slack.blocks import (
    ACTION_ID,
    Block,
    chooser_blocks,
    grid_blocks,
    result_text,
    single_blocks,
    status_text,
    variations_on,
)
from bot.slack.characters import SlackCharacters
from bot.slack.files import SlackFiles
from bot.slack.installs import Installs
from bot.slack.members import Members
from bot.slack.replies import NO_ACK, NotInChannel, Reply, click_reply, command_reply, team_of
from bot.slack.workspace import SlackWorkspace
from bot.studio import Finished, Origin, Studio, Submission
from jobs.spec import new_id

log = logging.getLogger(__name__)

PLATFORM = "slack"
# Slack's answers that mean a post will never be taken (the Courier records the generation as failed).
POST_NEVER = frozenset(
    {
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "account_inactive",
        "invalid_auth",
        "token_revoked",
    }
)
SLACK_API_BASE = "https://slack.com/api/"
EVENTS_PATH = "/slack/events"
PROGRESS_EVERY_S = 2.0  # at most one status edit this often: Slack allows about one chat.update a second
RATE_LIMIT_RETRIES = 3
APOLOGY = (
    "Sorry, something went wrong on our side and this request was not done. If it happens again, give the "
    "workspace's admins this error id: {error_id}"
)
# The mentions a message to the bot starts with: `<@U0123ABCD>` or `<@U0123ABCD|likeness>`.
LEADING_MENTIONS = re.compile(r"^(\s*<@[A-Z0-9]+(?:\|[^>]*)?>)+\s*")
NOT_INSTALLED = (
    "Likeness is not installed in this workspace any more: ask a workspace admin to add it again with {link}."
)


class SlackWebClient(AsyncWebClient):
    """slack_sdk's client, except that the app's credentials reach oauth.v2.access (the install flow) in an
    Authorization header encoded here: slack_sdk encodes it with aiohttp's BasicAuth, which aiohttp 3.14
    deprecates and 4.0 removes."""

    async def oauth_v2_access(
        self,
        *,
        client_id: str,
        client_secret: str,
        code: str | None = None,
        redirect_uri: str | None = None,
        grant_type: str | None = None,
        refresh_token: str | None = None,
        **kwargs: Any,
    ) -> AsyncSlackResponse:
        given = {"code": code, "redirect_uri": redirect_uri, "grant_type": grant_type}
        kwargs.update({k: v for k, v in {**given, "refresh_token": refresh_token}.items() if v is not None})
        credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        return await self.api_call(
            "oauth.v2.access", data=kwargs, headers={"Authorization": f"Basic {credentials}"}
        )


def web_client(token: str | None, api_base: str = SLACK_API_BASE) -> AsyncWebClient:
    """A Web API client on `api_base` (slack_sdk needs its trailing slash) that waits out rate limits:
    a 429 is retried after its Retry-After, up to RATE_LIMIT_RETRIES times. Without a token, the client
    Bolt copies for each request of a workspace, with that workspace's token."""
    client = SlackWebClient(token=token, base_url=api_base if api_base.endswith("/") else api_base + "/")
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
    return client


def mention_text(text: str) -> str:
    """The /portrait text of an `@likeness …` message: the message without the mentions it starts with."""
    return LEADING_MENTIONS.sub("", text, count=1).strip()


def retry_number(request: AsyncBoltRequest) -> int:
    """Which retry of an event this is (X-Slack-Retry-Num, also over Socket Mode); 0 for the first try."""
    values: Any = request.headers.get("x-slack-retry-num") or "0"
    value = values if isinstance(values, str) else (list(values) or ["0"])[0]
    return int(value) if str(value).isdigit() else 0


class SlackBot:
    """One Studio behind `/portrait`, app mentions and the result buttons, on a Bolt app.

    `client` carries the bot token of the one workspace served; with `installs`, it carries none (only
    Slack's address and the rate-limit retries), and each workspace's token comes from its install."""

    def __init__(
        self,
        studio: Studio,
        client: AsyncWebClient,
        *,
        signing_secret: str = "",
        installs: Installs | None = None,
        progress_every_s: float = PROGRESS_EVERY_S,
        file_hosts: Collection[str] = SLACK_FILE_HOSTS,
        allow_http_files: bool = False,
    ) -> None:
        self.studio = studio
        self.client = client
        self.installs = installs
        self.progress_every_s = progress_every_s
        self.app = AsyncApp(
            client=client,
            signing_secret=signing_secret,
            # An empty secret serves Socket Mode only, where Slack's own connection replaces signatures.
            request_verification_enabled=bool(signing_secret),
            logger=logging.getLogger("slack_bolt"),
            # Serving several workspaces: Bolt runs the install flow and finds each request's token.
            oauth_settings=installs.oauth_settings() if installs is not None else None,
            installation_store_bot_only=True if installs is not None else None,
            user_facing_authorize_error_message=(
                NOT_INSTALLED.format(link=installs.install_link) if installs is not None else None
            ),
        )
        if installs is not None:
            self.app.event("app_uninstalled")(self.on_uninstalled)
            self.app.event("tokens_revoked")(self.on_tokens_revoked)
        self.app.command("/portrait")(self.on_portrait_command)
        self.app.event("app_mention")(self.on_mention)
        self.app.action(ACTION_ID)(self.on_button)
        self.members = Members()
        # `file_hosts` and `allow_http_files` are for tests, whose fake of Slack serves files on loopback.
        files = SlackFiles(file_hosts, allow_http=allow_http_files)
        self.characters = SlackCharacters(studio, self.members, files, self.guarded)
        self.characters.register(self.app)
        SlackWorkspace(studio, self.members, self.guarded).register(self.app)
        self.handlers = HandlerTasks()  # the handlers running now

    def web_app(self, path: str = EVENTS_PATH, *, events: bool = True) -> web.Application:
        """The HTTP endpoint Slack posts commands, clicks and events to (Request URL in the manifest),
        and, serving several workspaces, the install link and the page Slack sends installers back to.
        `events=False` (Socket Mode) leaves the events out: they come over Slack's connection."""

        async def dispatch(request: web.Request) -> web.Response:
            response = await self.app.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(response)

        async def health(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        application = web.Application()
        if events:
            application.router.add_post(path, dispatch)
        application.router.add_get("/healthz", health)
        flow = self.app.oauth_flow
        if flow is not None:

            async def install(request: web.Request) -> web.Response:
                return await to_aiohttp_response(
                    await flow.handle_installation(await to_bolt_request(request))
                )

            async def installed(request: web.Request) -> web.Response:
                return await to_aiohttp_response(await flow.handle_callback(await to_bolt_request(request)))

            application.router.add_get(flow.install_path, install)
            application.router.add_get(flow.redirect_uri_path, installed)
        return application

    async def close(self) -> None:
        """Stop the handlers still at work (their generations stay in the ledger)."""
        await self.handlers.stop()

    @asynccontextmanager
    async def guarded(self, reply: Reply) -> AsyncIterator[None]:
        """The one place errors meet users: a UserError's own words; anything else, an apology with an id.
        Both are ephemeral: only the requester sees them."""
        with self.handlers.track():
            try:
                yield
            except UserError as exc:
                await reply.done()  # a status message would otherwise stay at its last words
                await reply.tell(str(exc))
            except Exception:
                error_id = new_id("e")
                log.exception("request of %s in %s failed (error id %s)", reply.user, reply.channel, error_id)
                await reply.done()
                await reply.tell(APOLOGY.format(error_id=error_id))

    # --- workspaces coming and going ---------------------------------------------------------------------

    async def client_for(self, team_id: str) -> AsyncWebClient | None:
        """A client with the bot token of workspace `team_id`, for work outside a request; None where
        Likeness is not installed there (any more)."""
        if self.installs is None:
            return self.client
        token = await self.installs.bot_token(team_id)
        if token is None:
            return None
        return web_client(token, self.client.base_url)

    async def on_uninstalled(self, context: AsyncBoltContext) -> None:
        """The workspace removed Likeness: its token is forgotten (what it asked for stays in the ledger
        until /forget-me or the operator removes it; work still open there fails when it is delivered)."""
        await self.app.default_app_uninstalled_event_listener()(context=context)
        log.info("Likeness was removed from Slack workspace %s; its token is deleted", context.team_id)

    async def on_tokens_revoked(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        await self.app.default_tokens_revoked_event_listener()(event=event, context=context)
        log.info("Slack workspace %s revoked Likeness's tokens; they are deleted", context.team_id)

    # --- what users do -----------------------------------------------------------------------------------

    async def on_portrait_command(
        self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient
    ) -> None:
        reply = command_reply(client, ack, command)
        async with self.guarded(reply):
            origin = Origin(PLATFORM, str(command["team_id"]), reply.channel, reply.user)
            await self.portrait(reply, origin, str(command.get("text") or ""))

    async def on_mention(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        event: dict[str, Any],
        request: AsyncBoltRequest,
        client: AsyncWebClient,
    ) -> None:
        if retry_number(request) > 0:
            # Slack sends an event again when its first delivery was not acknowledged in 3 s; that one is
            # already being served (Bolt acknowledges events before running the handler).
            log.info("ignoring Slack's retry of event %s", body.get("event_id"))
            return
        channel, user = str(event["channel"]), str(event["user"])
        reply = Reply(client, ack=ack, channel=channel, user=user, thread_ts=event.get("thread_ts"))
        async with self.guarded(reply):
            team = str(body.get("team_id") or event.get("team") or "")
            text = mention_text(str(event.get("text") or ""))
            # `@likeness character create mara --consent` with a photo attached, and the other subcommands.
            asked = character_text(text)
            if asked is not None:
                files = [f for f in event.get("files") or [] if isinstance(f, Mapping)]
                await self.characters.on_mention(reply, client, team, asked, files)
                return
            origin = Origin(PLATFORM, team, reply.channel, reply.user)
            await self.portrait(reply, origin, text)

    async def portrait(self, reply: Reply, origin: Origin, text: str) -> None:
        # Parsing is pure and takes microseconds: bad flags are answered at once and privately.
        parse_portrait(text)
        await reply.ack()
        # A first status before anything is recorded: a channel the bot cannot post in is said at once.
        await reply.status("working on it…", strict=True)
        await self.deliver(reply, await self.studio.portrait(origin, text))

    async def on_button(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        message: Mapping[str, Any] = body.get("message") or {}
        reply = click_reply(client, ack, body)
        async with self.guarded(reply):
            await reply.ack()
            match = ACTION_ID.fullmatch(str(action.get("action_id", "")))
            if match is None:
                raise GenerationRefused("this button is not one Likeness knows")
            origin = Origin(PLATFORM, team_of(body), reply.channel, reply.user)
            kind = cast(Action, match["action"])
            generation_id, index = match["generation"], int(match["index"])
            if kind == "animate" and index == 0:  # Animate under a grid: which variation?
                offered = variations_on(message.get("blocks") or [], generation_id)
                if len(offered) > 1:
                    await reply.tell("Which one should move?", chooser_blocks(generation_id, offered))
                    return
                index = offered[0] if offered else 1
            if kind == "select":
                await self.select(reply, origin, generation_id, index)
            else:
                await self.deliver(reply, await self.studio.press(origin, kind, generation_id, index))

    async def select(self, reply: Reply, origin: Origin, generation_id: str, index: int) -> None:
        """U k: variation k on its own, with the buttons for one image."""
        path = await self.studio.variation(origin, generation_id, index)
        attachment = await self.studio.upload(path, reply.upload_limit)
        record = await self.studio.ledger.get(generation_id)
        kind = record.kind if record else "txt2img"
        await reply.post_files([attachment], f"<@{reply.user}> variation {index} of `{generation_id}`")
        blocks = single_blocks(generation_id, index, kind)
        if blocks:
            await reply.post(f"What next for `{generation_id}` #{index}?", blocks)

    async def deliver(self, reply: Reply, submission: Submission) -> None:
        """Progress on the status message while the job runs, then the result (the files with their
        caption, then the buttons); delivered once Slack has accepted both."""
        finished = await finish_showing_progress(
            self.studio, submission, reply.status, status_text, self.progress_every_s
        )
        attachments = [await self.studio.upload(path, reply.upload_limit) for path in _shown(finished)]
        await reply.post_files(attachments, result_text(reply.user, finished))
        blocks = _blocks(finished)
        if blocks:
            await reply.post(f"What next for `{finished.generation_id}`?", blocks)
        await self.studio.delivered(finished.generation_id)
        await reply.done()

    async def resume_open(self) -> list[Outcome]:
        """What the ledger holds open for Slack (a restart cut it short): finished with the Courier and
        posted in its channel, mentioning the requester. Call it before taking new requests."""
        left = [g for g in await self.studio.ledger.open_generations() if g.platform == PLATFORM]
        courier = Courier(self.studio, self._post_resumed, self._report_resumed, platform=PLATFORM)
        outcomes = await courier.resume(left)
        for outcome in outcomes:
            log.info("resumed %s: %s %s", outcome.generation_id, outcome.state, outcome.detail)
        return outcomes

    async def _channel_reply(self, generation: Generation) -> Reply:
        """The way to the requester's channel, with the token of the generation's workspace."""
        client = await self.client_for(generation.server_id)
        if client is None:
            assert self.installs is not None
            raise PostFailed(
                f"Likeness is no longer installed in Slack workspace {generation.server_id}: a workspace "
                f"admin can add it again with {self.installs.install_link}, then ask anew",
                permanent=True,
            )
        return Reply(client, ack=NO_ACK, channel=generation.channel_id, user=generation.user_id)

    async def _post_resumed(self, generation: Generation, finished: Finished) -> None:
        reply = await self._channel_reply(generation)
        try:
            attachments = [await self.studio.upload(path, reply.upload_limit) for path in _shown(finished)]
            await reply.post_files(attachments, result_text(generation.user_id, finished))
            blocks = _blocks(finished)
            if blocks:
                await reply.post(f"What next for `{finished.generation_id}`?", blocks)
        except (NotInChannel, SlackApiError) as exc:
            refused = exc if isinstance(exc, SlackApiError) else exc.__cause__
            error = ""
            if isinstance(refused, SlackApiError) and refused.response is not None:
                error = str(refused.response.get("error", ""))
            raise PostFailed(f"Slack answered {error or exc}", permanent=error in POST_NEVER) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}") from exc

    async def _report_resumed(self, generation: Generation, reason: str) -> None:
        try:
            await (await self._channel_reply(generation)).tell(reason)
        except (SlackApiError, aiohttp.ClientError, OSError) as exc:
            raise PostFailed(str(exc)) from exc


def _shown(finished: Finished) -> tuple[Path, ...]:
    """What a result posts: the grid of variations, the one upscaled image, or the video (Slack plays an
    MP4 inline, so its preview stays home)."""
    if finished.kind in ("txt2img", "vary") and finished.grid is not None:
        return (finished.grid,)
    if finished.kind == "animate":
        return finished.files[:1]
    return finished.files


def _blocks(finished: Finished) -> list[Block]:
    if finished.kind in ("txt2img", "vary"):
        return grid_blocks(finished.generation_id, range(1, len(finished.files) + 1))
    return single_blocks(finished.generation_id, 1, finished.kind)
