"""A member's and a workspace's own business on Slack: `/queue` (your open requests, with Cancel),
`/settings` (workspace admins and owners) and `/forget-me`.

Answers are ephemeral. Cancel and the /forget-me button carry nothing trusted: the Studio checks the
workspace, the requester (or an admin) and the state again on every click.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.character_desk import Actor
from bot.data_rights import forget_user
from bot.errors import NotAManager, UserError
from bot.open_requests import queue_answer
from bot.server_settings import SETTING_NAMES, BadSetting, setting_value, settings_text
from bot.slack.blocks import CANCEL_ID, FORGET_ME_ID, cancel_blocks, forget_me_blocks
from bot.slack.members import PLATFORM, Members
from bot.slack.replies import Reply, click_reply, command_reply, team_of
from bot.studio import Origin, Studio

log = logging.getLogger(__name__)

Guard = Callable[[Reply], AbstractAsyncContextManager[None]]
FORGET_ME_QUESTION = (
    "This removes every character (photos included) and every generation (files included) of yours on "
    "this Likeness, in every workspace, for good. Press *Forget me*, or type `/forget-me confirm`."
)


class SlackWorkspace:
    """/queue with its Cancel buttons, /settings and /forget-me, for one Studio."""

    def __init__(self, studio: Studio, members: Members, guarded: Guard) -> None:
        self.studio = studio
        self.members = members
        self.guarded = guarded

    def register(self, app: AsyncApp) -> None:
        app.command("/queue")(self.on_queue)
        app.action(CANCEL_ID)(self.on_cancel)
        app.command("/settings")(self.on_settings)
        app.command("/forget-me")(self.on_forget_me)
        app.action(FORGET_ME_ID)(self.on_forget_me_confirmed)

    # --- /queue ------------------------------------------------------------------------------------------

    async def on_queue(self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        reply = command_reply(client, ack, command)
        async with self.guarded(reply):
            await reply.ack()
            actor = Actor(platform=PLATFORM, server_id=str(command["team_id"]), user_id=reply.user)
            said = await queue_answer(self.studio, actor, time.time(), "workspace")
            await reply.tell(said.text, cancel_blocks(said.cancellable))

    async def on_cancel(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        """Cancel under /queue: the request taken off the queue, or stopped by its worker at the next
        step. The Studio checks the workspace, the requester (or an admin) and the state, and says what
        happened."""
        reply = click_reply(client, ack, body)
        async with self.guarded(reply):
            await reply.ack()
            match = CANCEL_ID.fullmatch(str(action.get("action_id", "")))
            if match is None:
                raise UserError("this button is not one Likeness knows")
            generation_id, team = match["generation"], team_of(body)
            origin = Origin(PLATFORM, team, reply.channel, reply.user)
            admin = await self.members.is_admin(client, team, reply.user)
            said = await self.studio.cancel(origin, generation_id, is_manager=admin)
            log.info("workspace %s: %s cancelled %s (%s)", team, reply.user, generation_id, said)
            await reply.tell(said[:1].upper() + said[1:])

    # --- /settings ---------------------------------------------------------------------------------------

    async def on_settings(self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        reply = command_reply(client, ack, command)
        async with self.guarded(reply):
            await reply.ack()
            team = str(command["team_id"])
            if not await self.members.is_admin(client, team, reply.user):
                raise NotAManager(
                    "only this workspace's admins and owners see and change its Likeness settings; ask one "
                    "of them"
                )
            store = self.studio.server_settings
            if store is None:
                raise UserError("workspace settings are not set up on this Likeness; ask its operator")
            words = str(command.get("text") or "").split()
            if not words:
                current = await store.get(PLATFORM, team)
                await reply.tell(settings_text(current, "This workspace's settings:"))
                return
            if len(words) != 2:
                raise BadSetting(
                    "give a setting and its value, e.g. `/settings user_daily_limit 50`, or nothing to see "
                    f"them all; settings: {', '.join(SETTING_NAMES)}"
                )
            name, value = words[0].casefold(), words[1]
            changed = await store.update(PLATFORM, team, **{name: setting_value(name, value)})
            log.info("workspace %s: %s set %s to %r", team, reply.user, name, value)
            await reply.tell(settings_text(changed, f"Changed `{name}`. This workspace's settings:"))

    # --- /forget-me --------------------------------------------------------------------------------------

    async def on_forget_me(self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        reply = command_reply(client, ack, command)
        async with self.guarded(reply):
            text = str(command.get("text") or "").strip().casefold()
            if text == "confirm":
                await reply.ack()
                await self.forget(reply)
            elif not text:
                await reply.ack()
                await reply.tell(FORGET_ME_QUESTION, forget_me_blocks(FORGET_ME_QUESTION))
            else:
                raise UserError(
                    f"/forget-me takes no other words than `confirm`, not {text!r}: type `/forget-me` to see "
                    "what it removes, or `/forget-me confirm` to go ahead"
                )

    async def on_forget_me_confirmed(
        self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient
    ) -> None:
        reply = click_reply(client, ack, body)
        async with self.guarded(reply):
            await reply.ack()
            await self.forget(reply)

    async def forget(self, reply: Reply) -> None:
        """Everything of this member on Slack, in every workspace this Likeness serves."""
        studio = self.studio
        forgotten = await forget_user(
            studio.ledger, studio.generations_dir, studio.characters, PLATFORM, reply.user
        )
        log.info("forgot Slack user %s: %s", reply.user, forgotten)
        await reply.tell(forgotten.text())
