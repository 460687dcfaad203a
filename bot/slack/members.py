"""Who a Slack member is to Likeness: a workspace admin or owner (users.info, scope users:read) may change
the settings, cancel anyone's request, and manage every character; where `character_creators` is
`managers`, only they create characters.
"""

from __future__ import annotations

import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.character_desk import Actor
from bot.errors import UserError
from bot.slack.replies import slack_error
from bot.studio import Studio

PLATFORM = "slack"
ADMIN_TTL_S = (
    60.0  # how long an answer of users.info is trusted: a demoted admin loses their rights within it
)
PLACE, MANAGERS = "workspace", "workspace admins and owners"  # the words of refusals


class Members:
    """Admin checks through users.info, remembered for a minute per member."""

    def __init__(self, ttl_s: float = ADMIN_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._known: dict[tuple[str, str], tuple[bool, float]] = {}

    async def is_admin(self, client: AsyncWebClient, team_id: str, user_id: str) -> bool:
        """Whether the member is an admin or owner of the workspace."""
        key = (team_id, user_id)
        known = self._known.get(key)
        now = time.monotonic()
        if known is not None and known[1] > now:
            return known[0]
        try:
            answer = await client.users_info(user=user_id)
        except SlackApiError as exc:
            error = slack_error(exc)
            raise UserError(
                f"Slack would not say whether you are a workspace admin ({error or exc}); if it says "
                "missing_scope, the app needs the users:read scope: ask an admin to reinstall it"
            ) from exc
        user = answer.get("user") or {}
        admin = bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        self._known[key] = (admin, now + self.ttl_s)
        return admin

    async def actor(
        self, client: AsyncWebClient, team_id: str, user_id: str, *, as_admin: bool = True
    ) -> Actor:
        """The member as the character desk sees them; `as_admin=False` skips asking Slack (for what any
        member may do)."""
        admin = as_admin and await self.is_admin(client, team_id, user_id)
        return Actor(platform=PLATFORM, server_id=team_id, user_id=user_id, is_manager=admin)

    async def check_may_create(
        self, studio: Studio, client: AsyncWebClient, team_id: str, user_id: str
    ) -> None:
        """Refuse unless the workspace's `character_creators` lets this member create characters (asks Slack
        only where it is `managers`)."""
        store = studio.server_settings
        if store is None:
            return
        if (await store.get(PLATFORM, team_id)).character_creators != "managers":
            return
        admin = await self.is_admin(client, team_id, user_id)
        await store.check_may_create(PLATFORM, team_id, is_manager=admin, place=PLACE, managers=MANAGERS)
