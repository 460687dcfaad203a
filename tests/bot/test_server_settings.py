"""Per-server settings: defaults, validation that names the fix, and storage in the ledger database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import NotAManager
from bot.ledger import Ledger
from bot.server_settings import (
    BadSetting,
    ServerSettings,
    ServerSettingsStore,
    setting_value,
    settings_text,
)


@pytest.fixture
async def store(tmp_path: Path) -> ServerSettingsStore:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    return ServerSettingsStore(ledger)


async def test_a_server_that_changed_nothing_gets_the_defaults(store: ServerSettingsStore) -> None:
    assert await store.get("discord", "s1") == ServerSettings()


async def test_changes_are_kept_per_server_and_survive_a_restart(
    store: ServerSettingsStore, tmp_path: Path
) -> None:
    changed = await store.update("discord", "s1", default_aspect="2:3", fast_lane=False, user_daily_limit=5)
    assert (changed.default_aspect, changed.fast_lane, changed.user_daily_limit) == ("2:3", False, 5)
    await store.update("discord", "s1", user_daily_limit=7)
    reopened = Ledger(tmp_path / "ledger.sqlite3")
    await reopened.open()
    again = await ServerSettingsStore(reopened).get("discord", "s1")
    assert (again.default_aspect, again.fast_lane, again.user_daily_limit) == ("2:3", False, 7)
    assert await store.get("slack", "s1") == ServerSettings()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"colour": "red"}, "there is no setting 'colour'; settings: default_aspect"),
        ({"user_daily_limit": -1}, "user_daily_limit must be a whole number from 0 to 100000"),
        ({"user_in_flight_limit": True}, "user_in_flight_limit must be a whole number"),
        ({"default_aspect": "7:3"}, "default_aspect '7:3' is not supported; use one of 1:1"),
        ({"character_creators": "admins"}, "character_creators must be everyone or managers"),
        ({"fast_lane": "yes"}, "fast_lane must be on or off"),
    ],
)
async def test_bad_changes_are_refused_and_change_nothing(
    store: ServerSettingsStore, changes: dict[str, object], words: str
) -> None:
    with pytest.raises(BadSetting, match=words):
        await store.update("discord", "s1", **changes)
    assert await store.get("discord", "s1") == ServerSettings()


async def test_a_setting_from_a_newer_version_is_ignored(store: ServerSettingsStore) -> None:
    async with store.ledger.connect() as db:
        await db.execute(
            "INSERT INTO server_settings VALUES (?, ?, ?, 0)",
            ("discord", "s1", json.dumps({"user_daily_limit": 3, "future_knob": 1})),
        )
    assert (await store.get("discord", "s1")).user_daily_limit == 3


@pytest.mark.parametrize(
    ("name", "typed", "value"),
    [
        ("fast_lane", " ON ", True),
        ("fast_lane", "no", False),
        ("fast_lane", "maybe", "maybe"),
        ("character_creators", "Managers", "managers"),
        ("default_aspect", " 2:3 ", "2:3"),
        ("user_daily_limit", "250", 250),
        ("user_daily_limit", "-3", -3),
        ("user_daily_limit", "lots", "lots"),
    ],
)
def test_typed_values_are_read_and_what_cannot_be_read_is_passed_on(
    name: str, typed: str, value: object
) -> None:
    assert setting_value(name, typed) == value


async def test_a_value_that_cannot_be_read_is_named_by_the_refusal(store: ServerSettingsStore) -> None:
    with pytest.raises(BadSetting, match=r"whole number from 0 to 100000.*'lots'"):
        await store.update("slack", "T1", user_daily_limit=setting_value("user_daily_limit", "lots"))


def test_settings_text_shows_every_setting_once() -> None:
    shown = settings_text(ServerSettings(fast_lane=False), "Settings:")
    lines = shown.splitlines()
    assert lines[0] == "Settings:" and len(lines) == 1 + len(vars(ServerSettings()))
    assert "`fast_lane`: off" in lines and "`default_aspect`: 1:1" in lines


async def test_only_managers_create_characters_where_the_server_says_so(store: ServerSettingsStore) -> None:
    async def member_creates(server: str) -> None:
        await store.check_may_create("slack", server, is_manager=False, place="workspace", managers="admins")

    await member_creates("T1")
    await store.update("slack", "T1", character_creators="managers")
    with pytest.raises(NotAManager, match=r"on this workspace only its managers \(admins\)"):
        await member_creates("T1")
    await store.check_may_create("slack", "T1", is_manager=True, place="workspace", managers="admins")
    await member_creates("T2")


async def test_a_change_named_like_the_stores_arguments_is_a_bad_setting(store: ServerSettingsStore) -> None:
    for name in ("platform", "server_id", "self"):
        with pytest.raises(BadSetting, match=f"there is no setting '{name}'"):
            await store.update("slack", "T1", **{name: "x"})
