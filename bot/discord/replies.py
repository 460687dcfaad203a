"""How one Discord interaction is answered: acknowledge in time, show progress, post the result, or say
what went wrong, and keep doing so after the interaction's token has run out.

Discord wants an acknowledgement within 3 seconds and accepts the interaction's token for 15 minutes after
it. An acknowledgement that comes too late (10062 Unknown interaction) or work that outlives the token
goes on as ordinary channel messages that reply to the status message, or to the message clicked.

A message that mentions the bot has no token and no private answers: `MessageExchange` replies to it.

A result posted as a channel message carries a nonce made from its generation id (`nonce_of`), sent with
`enforce_nonce`: should the same result be posted again within a few minutes (a retry after Discord took the
post but its answer was lost, or a restart), Discord answers with the message it already made instead of
making a second. Interaction follow-ups take no nonce; the Courier looks for those in the channel's history.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import discord

from bot.studio import Attachment

MISSING: Any = discord.utils.MISSING

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60.0
# Stop using the token this long before Discord does: a slow upload must not straddle the end.
TOKEN_MARGIN_S = 60.0
MESSAGE_LIMIT = 2000  # characters in one Discord message
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes per upload outside boosted servers
APOLOGY = (
    "Sorry, something went wrong on our side and this request was not done. If it happens again, give the "
    "server's admins this error id: {error_id}"
)

MAX_NONCE_CHARS = 25  # Discord refuses a longer message nonce

UNKNOWN_INTERACTION = 10062
# The interaction's webhook is gone: unknown webhook, invalid webhook token.
TOKEN_GONE = frozenset({10015, 50027})


def files_of(attachments: Sequence[Attachment]) -> list[discord.File]:
    """Fresh discord.File objects: a file is read as it is sent, so each attempt needs its own."""
    return [discord.File(io.BytesIO(a.data), filename=a.name) for a in attachments]


def fit(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def with_nonce(nonce: str | None) -> dict[str, Any]:
    """`send()`'s nonce option: ours, or none (discord.py then makes a random one)."""
    return {"nonce": nonce} if nonce is not None else {}


def nonce_of(generation_id: str, part: str = "result") -> str:
    """The message nonce of one part of a generation's delivery (`result`, `failure`): the same every time
    it is posted, by whichever path and process, so Discord makes it once (`g_3k9x2c7q1m4z/result`)."""
    nonce = f"{generation_id}/{part}"
    if len(nonce) > MAX_NONCE_CHARS:
        raise ValueError(
            f"the nonce {nonce!r} is {len(nonce)} characters, over Discord's {MAX_NONCE_CHARS}; use a "
            "shorter part name"
        )
    return nonce


Original = Literal["none", "thinking", "status", "result", "gone"]


class Reply(Protocol):
    """The way back to a requester that a portrait's delivery needs: an interaction's `Exchange`, or a
    `MessageExchange` for a message that mentions the bot."""

    user_id: int
    upload_limit: int

    @property
    def label(self) -> str: ...

    async def status(self, text: str) -> None: ...

    async def post(
        self,
        content: str,
        attachments: Sequence[Attachment] = (),
        view: discord.ui.View | None = None,
        *,
        nonce: str | None = None,
    ) -> discord.Message: ...

    async def done(self, text: str) -> None: ...

    async def tell(self, text: str, view: discord.ui.View | None = None) -> None: ...


class Exchange:
    """The way back to whoever typed or clicked: the interaction while its token lives, then the channel."""

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        *,
        lifetime_s: float = TOKEN_LIFETIME_S,
        margin_s: float = TOKEN_MARGIN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interaction = interaction
        self.user_id = interaction.user.id
        self.upload_limit = interaction.filesize_limit
        self._clock = clock
        self._deadline = clock() + max(0.0, lifetime_s - margin_s)
        self._acked = False  # the interaction was acknowledged
        self._lost = False  # its token cannot be used (acknowledged too late, or gone)
        # The interaction's own response: "thinking…" after the acknowledgement, then progress, or the result
        # when a first follow-up takes its place.
        self._original: Original = "none"
        self._status_id: int | None = None  # the message that shows progress, once known
        channel_id = interaction.channel_id or 0
        self.channel = interaction.client.get_partial_messageable(channel_id, guild_id=interaction.guild_id)
        self._clicked = interaction.message.id if interaction.message else None

    @property
    def label(self) -> str:
        """What the logs call it."""
        return f"interaction {self.interaction.id}"

    @property
    def live(self) -> bool:
        """Whether the interaction's token may still be used."""
        return self._acked and not self._lost and self._clock() < self._deadline

    def _mentions(self) -> discord.AllowedMentions:
        # Only the requester is ever pinged, whatever the prompt says (@everyone, roles, other users).
        return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(self.user_id)])

    def _reply_to(self) -> discord.MessageReference | None:
        target = self._status_id or self._clicked
        if target is None:
            return None
        return discord.MessageReference(
            message_id=target,
            channel_id=self.channel.id,
            guild_id=self.interaction.guild_id,
            fail_if_not_exists=False,
        )

    def _gone(self, exc: discord.HTTPException) -> bool:
        """Mark the token lost when Discord says it is; True when it did."""
        if exc.code == UNKNOWN_INTERACTION or exc.code in TOKEN_GONE:
            log.warning(
                "interaction %s: token unusable (%s); going on in the channel", self.interaction.id, exc
            )
            self._lost = True
        return self._lost

    async def ack(self) -> None:
        """Acknowledge with Discord's "thinking…" state. Must come within 3 s of the interaction."""
        try:
            callback = await self.interaction.response.defer(thinking=True)
        except discord.NotFound as exc:
            if not self._gone(exc):
                raise
            return
        self._acked = True
        self._original = "thinking"
        if callback is not None and callback.message_id is not None:
            self._status_id = callback.message_id

    async def status(self, text: str) -> None:
        """Show progress. Best effort: a status that cannot be shown is logged, and the work goes on."""
        try:
            if self.live and self._original in ("thinking", "status"):
                try:
                    message = await self.interaction.edit_original_response(content=text)
                except discord.HTTPException as exc:
                    if not self._gone(exc):
                        raise
                else:
                    self._status_id, self._original = message.id, "status"
                    return
            if self._status_id is not None:
                await self.channel.get_partial_message(self._status_id).edit(content=text)
            else:
                message = await self.channel.send(
                    text,
                    reference=self._reply_to() or MISSING,
                    allowed_mentions=discord.AllowedMentions.none(),
                )
                self._status_id = message.id
        except discord.HTTPException:
            log.warning("interaction %s: could not show progress", self.interaction.id, exc_info=True)

    async def post(
        self,
        content: str,
        attachments: Sequence[Attachment] = (),
        view: discord.ui.View | None = None,
        *,
        nonce: str | None = None,
    ) -> discord.Message:
        """Post a result (pinging the requester); returns it once Discord has accepted it. `nonce`: sent
        with the channel message (`nonce_of`); a follow-up takes none."""
        content = fit(content)
        if self.live:
            try:
                message = await self.interaction.followup.send(
                    content,
                    files=files_of(attachments),
                    view=view if view is not None else MISSING,
                    allowed_mentions=self._mentions(),
                    wait=True,
                )
            except discord.HTTPException as exc:
                if not self._gone(exc):
                    raise
            else:
                if self._original == "thinking":  # a first follow-up takes the place of "thinking…"
                    self._original, self._status_id = "result", None
                return message
        posted: discord.Message = await self.channel.send(
            content,
            files=files_of(attachments),
            view=view if view is not None else MISSING,
            reference=self._reply_to() or MISSING,
            allowed_mentions=self._mentions(),
            **with_nonce(nonce),
        )
        return posted

    async def done(self, text: str) -> None:
        """The result is posted: remove the status, or where a reply points at it, say so there instead."""
        try:
            if self.live and self._original in ("thinking", "status"):
                await self.interaction.delete_original_response()
                self._original = "gone"
            elif self._status_id is not None:
                await self.channel.get_partial_message(self._status_id).edit(content=text)
        except discord.HTTPException:
            log.warning("interaction %s: could not tidy the status", self.interaction.id, exc_info=True)
        self._status_id = None

    async def tell(self, text: str, view: discord.ui.View | None = None) -> None:
        """A message for the requester alone (ephemeral); in the channel, mentioning them, once the token is
        gone."""
        text = fit(text)
        if not self._acked and not self._lost:
            try:
                await self.interaction.response.send_message(
                    text, ephemeral=True, view=view if view is not None else MISSING
                )
            except discord.NotFound as exc:
                if not self._gone(exc):
                    raise
            else:
                self._acked = True
                return
        if self.live:
            try:
                if self._original in ("thinking", "status"):
                    # The public "thinking…" or progress would stay, or swallow this message: Discord turns a
                    # first follow-up into the deferred response, ephemeral or not.
                    await self.interaction.delete_original_response()
                    self._original, self._status_id = "gone", None
                await self.interaction.followup.send(
                    text, ephemeral=True, view=view if view is not None else MISSING, wait=True
                )
            except discord.HTTPException as exc:
                if not self._gone(exc):
                    raise
            else:
                return
        await self.channel.send(
            fit(f"<@{self.user_id}> {text}"),
            view=view if view is not None else MISSING,
            reference=self._reply_to() or MISSING,
            allowed_mentions=self._mentions(),
        )


class MessageExchange:
    """The way back to a message that mentions the bot: replies to it in its channel. Progress shows on a
    status reply, edited as it changes and removed once the result (a reply of its own) is posted. Only the
    author is ever pinged."""

    def __init__(self, message: discord.Message) -> None:
        self.message = message
        self.user_id = message.author.id
        self.upload_limit = message.guild.filesize_limit if message.guild else DEFAULT_UPLOAD_LIMIT
        self._status: discord.Message | None = None

    @property
    def label(self) -> str:
        return f"message {self.message.id}"

    def _mentions(self) -> discord.AllowedMentions:
        return discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(self.user_id)], replied_user=True
        )

    def _reference(self) -> discord.MessageReference:
        return self.message.to_reference(fail_if_not_exists=False)

    async def status(self, text: str) -> None:
        """Show progress. Best effort: a status that cannot be shown is logged, and the work goes on."""
        try:
            if self._status is not None:
                self._status = await self._status.edit(content=text)
            else:
                self._status = await self.message.channel.send(
                    text, reference=self._reference(), allowed_mentions=discord.AllowedMentions.none()
                )
        except discord.HTTPException:
            log.warning("%s: could not show progress", self.label, exc_info=True)

    async def post(
        self,
        content: str,
        attachments: Sequence[Attachment] = (),
        view: discord.ui.View | None = None,
        *,
        nonce: str | None = None,
    ) -> discord.Message:
        """Post a result as a reply (pinging the author); returns it once Discord has accepted it. `nonce`:
        see `nonce_of`."""
        return await self.message.channel.send(
            fit(content),
            files=files_of(attachments),
            view=view if view is not None else MISSING,
            reference=self._reference(),
            allowed_mentions=self._mentions(),
            **with_nonce(nonce),
        )

    async def done(self, text: str) -> None:
        """The result is posted: the status reply goes."""
        await self._drop_status()

    async def tell(self, text: str, view: discord.ui.View | None = None) -> None:
        """A reply that names the problem; there is no private answer to a message."""
        await self._drop_status()
        await self.message.channel.send(
            fit(f"<@{self.user_id}> {text}"),
            view=view if view is not None else MISSING,
            reference=self._reference(),
            allowed_mentions=self._mentions(),
        )

    async def _drop_status(self) -> None:
        status, self._status = self._status, None
        if status is None:
            return
        try:
            await status.delete()
        except discord.HTTPException:
            log.warning("%s: could not remove the status", self.label, exc_info=True)
