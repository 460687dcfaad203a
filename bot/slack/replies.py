"""How one Slack request is answered: acknowledge in time, show progress, post the result, or say what
went wrong to the requester alone.

Slack wants an acknowledgement within 3 seconds of a slash command, a click or an event; everything after
goes through the Web API with the bot token: a status message (chat.postMessage, then chat.update), the
files (files_upload_v2: files.getUploadURLExternal, the upload, files.completeUploadExternal), the
buttons, and ephemeral messages (chat.postEphemeral, or the request's response_url where the bot cannot
post in the channel).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, cast

from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.errors import UserError
from bot.slack.blocks import Block, fit
from bot.studio import Attachment

log = logging.getLogger(__name__)

# Slack takes files up to 1 GB; a PNG over this goes as a high-quality JPEG (the PNG stays on disk).
UPLOAD_LIMIT = 50 * 1024 * 1024
# What Slack answers when the bot may not post in the channel.
NOT_IN_CHANNEL = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})


class NotInChannel(UserError):
    """The bot may not post in this channel: it has to be invited first."""


def not_in_channel() -> NotInChannel:
    return NotInChannel(
        "Likeness cannot post in this channel: invite it first (`/invite @likeness`), then ask again."
    )


def slack_error(exc: SlackApiError) -> str:
    """Slack's error code (`not_in_channel`…), or "" where the answer was not Slack's JSON."""
    data = exc.response.data if exc.response is not None else None
    return str(data.get("error", "")) if isinstance(data, dict) else ""


# Slack's answers to views.open that a member can do something about, in words.
FORM_REFUSALS = {
    "expired_trigger_id": "the form could not open in time (Slack allows 3 seconds); run the command again",
    "exchanged_trigger_id": "this request already opened a form; run the command again for another",
}


async def open_form(client: AsyncWebClient, trigger_id: str, form: Mapping[str, Any]) -> None:
    """Open a form (modal) for whoever typed or clicked; a late or used trigger is told how to retry."""
    try:
        await client.views_open(trigger_id=trigger_id, view=dict(form))
    except SlackApiError as exc:
        said = FORM_REFUSALS.get(slack_error(exc))
        if said is None:
            raise
        raise UserError(said) from exc


def _refused(exc: SlackApiError) -> NoReturn:
    """Slack refused a post: NotInChannel where the bot may not post there, else the error as it is."""
    if slack_error(exc) in NOT_IN_CHANNEL:
        raise not_in_channel() from exc
    raise exc


class Reply:
    """The way back to whoever typed, clicked or mentioned: their channel (and thread), and them alone."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ack: AsyncAck,
        channel: str,
        user: str,
        thread_ts: str | None = None,
        response_url: str | None = None,
        answers_in_ack: bool = False,
        upload_limit: int = UPLOAD_LIMIT,
        direct_fallback: bool = False,
    ) -> None:
        self.client = client
        self._ack = ack
        self.channel = channel
        self.user = user
        self.thread_ts = thread_ts
        self.response_url = response_url
        # A slash command's acknowledgement may carry an ephemeral answer; a click's or an event's not.
        self.answers_in_ack = answers_in_ack
        self.upload_limit = upload_limit
        # Where an ephemeral message cannot go and there is no response_url (a form's answer), a direct
        # message instead, so the answer is not lost.
        self.direct_fallback = direct_fallback
        self._acked = False
        self._status_ts: str | None = None  # the message that shows progress, once posted

    async def ack(self, text: str = "") -> None:
        """Acknowledge (once). Must come within 3 s of the request."""
        if self._acked:
            return
        self._acked = True
        if text and self.answers_in_ack:
            await self._ack(text=text, response_type="ephemeral")
        else:
            await self._ack()

    def _where(self) -> dict[str, Any]:
        return {"channel": self.channel, **({"thread_ts": self.thread_ts} if self.thread_ts else {})}

    async def status(self, text: str, *, strict: bool = False) -> None:
        """Show progress. Best effort unless `strict`: a status that cannot be shown is logged, and the work
        goes on; a strict one that Slack refuses raises (NotInChannel where the bot may not post)."""
        try:
            if self._status_ts is None:
                posted = await self.client.chat_postMessage(text=fit(text), **self._where())
                self._status_ts = str(posted["ts"])
            else:
                await self.client.chat_update(channel=self.channel, ts=self._status_ts, text=fit(text))
        except SlackApiError as exc:
            if strict:
                _refused(exc)
            log.warning("could not show progress in %s", self.channel, exc_info=True)

    async def post_files(self, attachments: Sequence[Attachment], text: str) -> None:
        """Upload files into the channel (or thread) with `text` as their message; returns once Slack has
        accepted them."""
        uploads = [{"content": a.data, "filename": a.name, "title": a.name} for a in attachments]
        try:
            await self.client.files_upload_v2(
                file_uploads=uploads,
                channel=self.channel,
                initial_comment=fit(text),
                thread_ts=self.thread_ts,
            )
        except SlackApiError as exc:
            _refused(exc)

    async def post(self, text: str, blocks: Sequence[Block] = ()) -> str:
        """A message in the channel (or thread); its ts once Slack has accepted it."""
        try:
            posted = await self.client.chat_postMessage(
                text=fit(text), blocks=list(blocks) or None, **self._where()
            )
        except SlackApiError as exc:
            _refused(exc)
        return str(posted["ts"])

    async def done(self) -> None:
        """The result is posted: remove the status message."""
        if self._status_ts is None:
            return
        try:
            await self.client.chat_delete(channel=self.channel, ts=self._status_ts)
        except SlackApiError:
            log.warning("could not remove the status message %s", self._status_ts, exc_info=True)
        self._status_ts = None

    async def tell(self, text: str, blocks: Sequence[Block] = ()) -> None:
        """A message for the requester alone: in the acknowledgement where it can still carry one, else
        chat.postEphemeral, else the request's response_url. Failing all, logged."""
        text = fit(text)
        if not self._acked and self.answers_in_ack and not blocks:
            await self.ack(text)
            return
        await self.ack()
        try:
            await self.client.chat_postEphemeral(
                user=self.user, text=text, blocks=list(blocks) or None, **self._where()
            )
            return
        except SlackApiError:
            if self.response_url is None and self.direct_fallback:
                await self._tell_directly(text, blocks)
                return
            if self.response_url is None:
                log.warning("could not tell %s: %s", self.user, text, exc_info=True)
                return
        try:
            webhook = AsyncWebhookClient(self.response_url)
            response = await webhook.send(
                text=text, blocks=list(blocks) or None, response_type="ephemeral", replace_original=False
            )
            if response.status_code != 200:
                log.warning("could not tell %s (%s): %s", self.user, response.status_code, text)
        except Exception:
            log.warning("could not tell %s: %s", self.user, text, exc_info=True)

    async def _tell_directly(self, text: str, blocks: Sequence[Block]) -> None:
        try:
            opened = await self.client.conversations_open(users=self.user)
            channel = str((opened.get("channel") or {}).get("id") or "")
            await self.client.chat_postMessage(channel=channel, text=text, blocks=list(blocks) or None)
        except SlackApiError:
            log.warning("could not tell %s, not even directly: %s", self.user, text, exc_info=True)


async def _no_ack(**_: Any) -> None:
    return None


NO_ACK = cast(AsyncAck, _no_ack)  # for replies to requests already acknowledged (a form's submission)


def team_of(body: Mapping[str, Any]) -> str:
    """The workspace a click, a form or an event comes from, as Slack signed it."""
    team = body.get("team")
    user = body.get("user")
    view = body.get("view")
    found = (
        (team.get("id") if isinstance(team, Mapping) else None)
        or body.get("team_id")
        or (user.get("team_id") if isinstance(user, Mapping) else None)
        or (view.get("team_id") if isinstance(view, Mapping) else None)
    )
    return str(found or "")


def command_reply(client: AsyncWebClient, ack: AsyncAck, command: Mapping[str, Any]) -> Reply:
    """The way back to whoever typed a slash command: their channel, ephemeral to them; the acknowledgement
    may carry the answer."""
    return Reply(
        client,
        ack=ack,
        channel=str(command["channel_id"]),
        user=str(command["user_id"]),
        response_url=command.get("response_url"),
        answers_in_ack=True,
    )


def click_reply(client: AsyncWebClient, ack: AsyncAck, body: Mapping[str, Any]) -> Reply:
    """The way back to whoever clicked a button: their channel (and thread), ephemeral to them."""
    message: Mapping[str, Any] = body.get("message") or {}
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    return Reply(
        client,
        ack=ack,
        channel=str(channel or ""),
        user=str(body["user"]["id"]),
        thread_ts=message.get("thread_ts"),
        response_url=body.get("response_url"),
    )
