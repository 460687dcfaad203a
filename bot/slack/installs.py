"""Serving several Slack workspaces: Slack's install flow (OAuth v2, through Bolt) and the bot token each
workspace that installed Likeness gave it, kept under the data dir.

The tokens live in files only the service user can read (a 0700 folder, 0600 files) and are blotted out
of every log line once read. The `state` of an install link is signed with the state secret and used
once: a state Likeness did not make is refused before any file is looked at, an expired or used one by
its file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import html
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store import Bot, FileInstallationStore, Installation
from slack_sdk.oauth.state_store import FileOAuthStateStore

from bot.redaction import SECRETS

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_EXPIRATION_S = 600
# What the app asks a workspace for: the bot scopes of the manifest in the README.
BOT_SCOPES = (
    "app_mentions:read",
    "chat:write",
    "commands",
    "files:read",
    "files:write",
    "im:write",
    "users:read",
)
STATE = re.compile(r"(?P<nonce>[0-9a-f]{32})\.(?P<mac>[0-9a-f]{64})")
# Why an install did not complete, in words for whoever clicked the link (Bolt's reason codes).
FAILURES = {
    "access_denied": "The install was cancelled in Slack.",
    "invalid_browser": "This install was finished in another browser than the one that started it (or "
    "the browser keeps no cookies).",
    "invalid_state": "This install link has expired (a link lasts {minutes} minutes) or was already used.",
    "missing_code": "Slack did not confirm the install.",
    "invalid_code": "Slack did not confirm the install: its code had expired or was already used.",
    "storage_error": "Likeness could not save the install. Tell the operator of this Likeness: its log says "
    "why (is the data dir writable?).",
}


def authorization_url(api_base: str) -> str:
    """Slack's approval page beside its Web API (https://slack.com/api/ → …/oauth/v2/authorize)."""
    return re.sub(r"api/?$", "", api_base) + "oauth/v2/authorize"


def _private(path: Path) -> None:
    """`path` and everything under it readable by the service user only."""
    path.chmod(0o700)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            Path(folder, name).chmod(0o700)
        for name in files:
            Path(folder, name).chmod(0o600)


class TokenFiles(FileInstallationStore):
    """Bolt's file store of installations, private to the service user; only the latest install of each
    workspace is kept (no history of old tokens), and every token read or written is kept out of logs."""

    def __init__(self, folder: Path, client_id: str) -> None:
        super().__init__(base_dir=str(folder), client_id=client_id, historical_data_enabled=False)
        Path(self.base_dir).mkdir(parents=True, exist_ok=True)
        _private(folder)

    def save(self, installation: Installation) -> None:
        SECRETS.add(t for t in (installation.bot_token, installation.user_token) if t)
        super().save(installation)
        _private(Path(self.base_dir))

    def save_bot(self, bot: Bot) -> None:
        SECRETS.add([bot.bot_token] if bot.bot_token else [])
        super().save_bot(bot)
        _private(Path(self.base_dir))

    def find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False
    ) -> Bot | None:
        bot = super().find_bot(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=is_enterprise_install
        )
        if bot is not None and bot.bot_token:
            SECRETS.add([bot.bot_token])
        return bot


class SignedStates(FileOAuthStateStore):
    """One-time install states, each an HMAC of a random nonce under the state secret; a file per state
    records when it was issued."""

    def __init__(self, folder: Path, secret: str, expiration_s: int = STATE_EXPIRATION_S) -> None:
        super().__init__(expiration_seconds=expiration_s, base_dir=str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        _private(folder)
        self._key = secret.encode()

    def _mac(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self, *args: Any, **kwargs: Any) -> str:
        self._sweep()
        nonce = secrets.token_hex(16)
        # FileOAuthStateStore's own format: the file holds when the state was issued.
        Path(self.base_dir, nonce).write_text(str(time.time()), encoding="utf-8")
        return f"{nonce}.{self._mac(nonce)}"

    def _sweep(self) -> None:
        """Remove states past their expiry, so install links nobody finished do not pile up on disk."""
        oldest = time.time() - self.expiration_seconds
        for path in Path(self.base_dir).iterdir():
            with contextlib.suppress(OSError, ValueError):
                if float(path.read_text(encoding="utf-8")) < oldest:
                    path.unlink()

    def consume(self, state: str) -> bool:
        match = STATE.fullmatch(state or "")
        if match is None or not hmac.compare_digest(match["mac"], self._mac(match["nonce"])):
            log.warning("refused an install state Likeness did not issue")
            return False
        return bool(super().consume(match["nonce"]))


class Installs:
    """The install flow's settings and the bot token of each workspace that installed Likeness.
    `public_url` is where Slack and browsers reach Likeness (https://likeness.example.com)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        client_id: str,
        client_secret: str,
        state_secret: str,
        public_url: str | None = None,
        api_base: str = "https://slack.com/api/",
        scopes: Sequence[str] = BOT_SCOPES,
        state_expiration_s: int = STATE_EXPIRATION_S,
    ) -> None:
        folder = data_dir / "slack"
        self.store = TokenFiles(folder / "installations", client_id)
        self.states = SignedStates(folder / "install-states", state_secret, state_expiration_s)
        self.client_id = client_id
        self.client_secret = client_secret
        base = public_url.rstrip("/") if public_url else None
        # Without a public URL, Slack sends installers to the one Redirect URL of the app's settings.
        self.redirect_uri = base + REDIRECT_PATH if base else None
        self.install_link = base + INSTALL_PATH if base else f"the install link (path {INSTALL_PATH})"
        self.authorization_url = authorization_url(api_base)
        self.scopes = tuple(scopes)
        self.state_expiration_s = state_expiration_s

    def oauth_settings(self) -> AsyncOAuthSettings:
        """For Bolt: /slack/install redirects to Slack's approval page with a fresh state (and a cookie
        holding it); /slack/oauth_redirect checks the state, exchanges the code at oauth.v2.access and
        keeps the workspace's bot token."""
        return AsyncOAuthSettings(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scopes=list(self.scopes),
            user_scopes=[],
            redirect_uri=self.redirect_uri,
            install_path=INSTALL_PATH,
            install_page_rendering_enabled=False,  # straight on to Slack's own "Add to Slack" page
            redirect_uri_path=REDIRECT_PATH,
            callback_options=AsyncCallbackOptions(success=self._installed, failure=self._refused),
            authorization_url=self.authorization_url,
            installation_store=self.store,
            installation_store_bot_only=True,
            state_store=self.states,
            state_expiration_seconds=self.state_expiration_s,
            logger=logging.getLogger("slack_bolt.oauth"),
        )

    async def bot_token(self, team_id: str) -> str | None:
        """The bot token of workspace `team_id`; None where it never installed Likeness or removed it."""
        bot = await self.store.async_find_bot(enterprise_id=None, team_id=team_id)
        return bot.bot_token if bot is not None and bot.bot_token else None

    async def _installed(self, args: AsyncSuccessArgs) -> BoltResponse:
        installation = args.installation
        log.info(
            "installed in Slack workspace %s (%s) by %s",
            installation.team_id,
            installation.team_name,
            installation.user_id,
        )
        return await args.default.success(args)

    async def _refused(self, args: AsyncFailureArgs) -> BoltResponse:
        """A page that says why the install did not complete, and how to start again."""
        # `reason` may come from the query string (Slack's `error`): shown escaped and short, never formatted.
        reason = str(args.reason or "")[:64]
        log.warning("an install did not complete: %r", reason)
        known = FAILURES.get(reason)
        if known is not None:
            said = html.escape(known.format(minutes=max(1, self.state_expiration_s // 60)))
        else:
            said = html.escape(f"The install did not complete ({reason}).")
        if args.reason != "storage_error":
            said += f' Start again from the install link: <a href="{INSTALL_PATH}">add Likeness to Slack</a>.'
        body = (
            "<html><head><title>Likeness was not installed</title></head><body>"
            f"<h2>Likeness was not installed</h2><p>{said}</p></body></html>"
        )
        # The state cookie has done its work either way.
        headers: dict[str, str | Sequence[str]] = {
            "Content-Type": "text/html; charset=utf-8",
            "Set-Cookie": args.settings.state_utils.build_set_cookie_for_deletion(),
        }
        return BoltResponse(status=args.suggested_status_code, body=body, headers=headers)
