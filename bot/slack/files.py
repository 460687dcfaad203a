"""Files between members and Likeness on Slack: fetching what a member uploaded (a character's photo, a
card) and handing a file to one member alone (a card, a face crop) in a direct message.

Slack serves an uploaded file at its `url_private_download`, on files.slack.com, to requests with a bot
token in the Authorization header. The size Slack declares is checked before any byte is read, and the
body is counted while it streams (bot/attachments.py). Slack has no ephemeral files, so a file meant for
one member goes to a direct message with them (conversations.open, scope im:write).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.attachments import SLACK_FILE_HOSTS, AttachmentRefused, fetch_attachment
from bot.errors import UserError
from bot.slack.blocks import fit
from bot.slack.replies import slack_error

FILE_ID = re.compile(r"F[A-Z0-9]{2,30}")


class SlackFiles:
    """Fetches members' files from Slack's file hosts only (`hosts`; tests point them at a local fake)."""

    def __init__(self, hosts: Collection[str] = SLACK_FILE_HOSTS, *, allow_http: bool = False) -> None:
        self.hosts = frozenset(hosts)
        self.allow_http = allow_http

    async def fetch(self, client: AsyncWebClient, file: Mapping[str, Any], max_bytes: int) -> bytes:
        """The bytes of a file a member uploaded. An event may carry only the file's id (files shared from
        another workspace say `file_access: check_file_info`): its details then come from files.info."""
        if not (file.get("url_private_download") and isinstance(file.get("size"), int)):
            file = await self._info(client, str(file.get("id") or ""))
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        if not url:
            raise AttachmentRefused("Slack gave no download link for the file; upload it again")
        size = file.get("size")
        return await fetch_attachment(
            url,
            allowed_hosts=self.hosts,
            max_bytes=max_bytes,
            declared_size=size if isinstance(size, int) else None,
            headers={"Authorization": f"Bearer {client.token}"},
            allow_http=self.allow_http,
        )

    async def _info(self, client: AsyncWebClient, file_id: str) -> Mapping[str, Any]:
        if not FILE_ID.fullmatch(file_id):
            raise AttachmentRefused(f"{file_id!r} is not a Slack file; upload the file to Slack again")
        try:
            answer = await client.files_info(file=file_id)
        except SlackApiError as exc:
            error = slack_error(exc)
            raise AttachmentRefused(
                f"Slack would not hand Likeness the file {file_id} ({error or exc}); upload it again in a "
                "channel Likeness is in"
            ) from exc
        found = answer.get("file")
        if not isinstance(found, Mapping):
            raise AttachmentRefused(f"Slack had no details of the file {file_id}; upload it again")
        return found


async def send_privately(client: AsyncWebClient, user_id: str, text: str, filename: str, data: bytes) -> None:
    """A file for one member alone, with `text`, in the direct message between them and Likeness."""
    try:
        opened = await client.conversations_open(users=user_id)
        channel = str((opened.get("channel") or {}).get("id") or "")
        await client.files_upload_v2(
            file_uploads=[{"content": data, "filename": filename, "title": filename}],
            channel=channel,
            initial_comment=fit(text),
        )
    except SlackApiError as exc:
        error = slack_error(exc)
        if error in ("missing_scope", "not_allowed_token_type", "restricted_action"):
            raise UserError(
                f"Likeness could not send you a direct message (Slack said {error}): ask a workspace admin "
                "to reinstall the app, so it has the im:write and files:write scopes"
            ) from exc
        if error in ("cannot_dm_bot", "user_disabled", "user_not_found"):
            raise UserError(
                f"Likeness cannot send a direct message to this member (Slack said {error})"
            ) from exc
        raise
