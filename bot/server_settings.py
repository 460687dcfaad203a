"""Per-server settings: what a server's managers decide for their community, kept in the ledger database.

Every field has a default, so a server that never changed anything gets sensible limits. Chat adapters
check who may change them (managers); this module only validates and stores.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from bot.errors import NotAManager, UserError
from bot.ledger import Ledger
from router.sizes import ASPECT_RATIOS

CharacterCreators = Literal["everyone", "managers"]


class BadSetting(UserError):
    """A settings change names an unknown setting or a value out of bounds."""


@dataclass(frozen=True)
class ServerSettings:
    """One server's settings. Limits of 0 mean no limit."""

    default_aspect: str = "1:1"  # used when a request has no --ar
    character_creators: CharacterCreators = "everyone"  # who may create characters
    user_daily_limit: int = 100  # generations per member per UTC day
    server_daily_limit: int = 0  # generations per server per UTC day
    user_in_flight_limit: int = 2  # a member's requests queued or running at once
    fast_lane: bool = True  # whether --fast may take the priority lane
    fast_daily_limit: int = 10  # --fast requests per member per UTC day in the priority lane


# (smallest, largest) for the whole-number settings.
_BOUNDS: dict[str, tuple[int, int]] = {
    "user_daily_limit": (0, 100_000),
    "server_daily_limit": (0, 1_000_000),
    "user_in_flight_limit": (0, 100),
    "fast_daily_limit": (0, 100_000),
}
SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ServerSettings))
_ON = ("on", "true", "yes", "1")
_OFF = ("off", "false", "no", "0")
_WHOLE = re.compile(r"[+-]?\d{1,9}")


def setting_value(name: str, text: str) -> Any:
    """A typed value from what a manager typed in chat; what cannot be read is passed on as typed, for
    `validated` to name in its BadSetting."""
    typed = text.strip()
    if name == "fast_lane":
        if typed.casefold() in _ON:
            return True
        if typed.casefold() in _OFF:
            return False
        return typed
    if name == "character_creators":
        return typed.casefold()
    if name == "default_aspect":
        return typed
    return int(typed) if _WHOLE.fullmatch(typed) else typed


def settings_text(settings: ServerSettings, title: str) -> str:
    """The settings as chat text (Discord markdown and Slack mrkdwn read it alike): one `name`: value
    per line under `title`."""
    values = asdict(settings)

    def shown(value: Any) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    return title + "\n" + "\n".join(f"`{name}`: {shown(values[name])}" for name in SETTING_NAMES)


def validated(settings: ServerSettings, changes: dict[str, Any]) -> ServerSettings:
    """`settings` with `changes` applied; BadSetting names the setting, the value and what is allowed."""
    for name, value in changes.items():
        if name not in SETTING_NAMES:
            raise BadSetting(f"there is no setting {name!r}; settings: {', '.join(SETTING_NAMES)}")
        if name in _BOUNDS:
            low, high = _BOUNDS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise BadSetting(
                    f"{name} must be a whole number from {low} to {high} (0 = no limit), got {value!r}"
                )
        elif name == "default_aspect" and value not in ASPECT_RATIOS:
            raise BadSetting(
                f"default_aspect {value!r} is not supported; use one of {', '.join(ASPECT_RATIOS)}"
            )
        elif name == "character_creators" and value not in ("everyone", "managers"):
            raise BadSetting(f"character_creators must be everyone or managers, got {value!r}")
        elif name == "fast_lane" and not isinstance(value, bool):
            raise BadSetting(f"fast_lane must be on or off, got {value!r}")
    return replace(settings, **changes)


class ServerSettingsStore:
    """Server settings in the ledger's database (one row per server, the changed fields as JSON)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def get(self, platform: str, server_id: str) -> ServerSettings:
        async with (
            self.ledger.connect() as db,
            db.execute(
                "SELECT settings FROM server_settings WHERE platform = ? AND server_id = ?",
                (platform, server_id),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        if row is None:
            return ServerSettings()
        stored = json.loads(row[0])
        # A setting a newer version wrote and this one does not know is ignored, not fatal.
        return replace(ServerSettings(), **{k: v for k, v in stored.items() if k in SETTING_NAMES})

    async def update(self, platform: str, server_id: str, /, **changes: Any) -> ServerSettings:
        """Apply `changes` (validated: a name that is no setting, even `platform`, is a BadSetting) and
        return the server's settings after them."""
        settings = validated(await self.get(platform, server_id), changes)
        async with self.ledger.connect() as db:
            await db.execute(
                "INSERT INTO server_settings (platform, server_id, settings, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT (platform, server_id) DO UPDATE SET settings = excluded.settings, "
                "updated_at = excluded.updated_at",
                (platform, server_id, json.dumps(asdict(settings)), time.time()),
            )
        return settings

    async def check_may_create(
        self, platform: str, server_id: str, *, is_manager: bool, place: str, managers: str
    ) -> None:
        """Refuse unless the server's `character_creators` lets this member create characters. `place`
        and `managers` word the refusal for the platform ("server", "Manage Server")."""
        if is_manager:
            return
        if (await self.get(platform, server_id)).character_creators == "managers":
            raise NotAManager(
                f"on this {place} only its managers ({managers}) create characters; ask one of them"
            )
