"""Messages that mention the bot work like /portrait: a real discord.py client against the local fake of
Discord (tests/discord_fake.py), with the fake runner of tests/bot/discord/test_commands.py (no model runs).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from bot.character_desk import Actor
from bot.discord.bot import intents, mentioned_prompt
from bot.ledger import Generation
from bot.studio import Studio
from router.catalog import Catalog
from tests.bot.discord.support import serving
from tests.bot.discord.test_commands import ASTRONAUT, Bot, FakeRunner, make_studio, start, stop
from tests.discord_fake import (
    BOT_USER_ID,
    GUILD_MESSAGES_INTENT,
    MESSAGE_CONTENT_INTENT,
    FakeDiscord,
    custom_ids,
    user_payload,
)

in_module_loop = pytest.mark.asyncio(loop_scope="module")

ALICE = user_payload(6_001, "alice")
BOB = user_payload(6_002, "bob")
HELPER_BOT = user_payload(6_003, "helper", bot=True)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serving(guilds=1) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(
    fake: FakeDiscord, tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Catalog
) -> AsyncIterator[Bot]:
    runner = FakeRunner()
    studio = await make_studio(tmp_path_factory.mktemp("discord-mentions"), tiny_catalog, runner)
    assert studio.characters is not None
    actor = Actor("discord", str(fake.guild_ids[0]), ALICE["id"])
    await studio.characters.create(actor, "mara", ASTRONAUT, description="a woman astronaut", consent=True)
    bot = await start(fake, studio, runner)
    yield bot
    await stop(bot)


def reply_to(fake: FakeDiscord, message: dict[str, Any], *, files: bool) -> dict[str, Any] | None:
    """The bot's live reply to a user's message: the one with files (a result), or the one without."""
    for reply in fake.replies_to(int(message["id"])):
        if bool(reply["attachments"]) == files and reply["author"]["id"] == str(BOT_USER_ID):
            return reply
    return None


async def generations(studio: Studio) -> list[Generation]:
    async with studio.ledger.connect() as db, db.execute("SELECT id FROM generations") as cursor:
        ids = [row[0] for row in await cursor.fetchall()]
    found = [await studio.ledger.get(i) for i in ids]
    return [g for g in found if g is not None]


async def delivered(studio: Studio, generation_id: str) -> Generation:
    """The record once marked delivered (just after Discord accepted the post)."""
    deadline = time.monotonic() + 30
    while (record := await studio.ledger.get(generation_id)) is None or record.status != "delivered":
        assert time.monotonic() < deadline, f"{generation_id} is {record.status if record else 'unknown'}"
        await asyncio.sleep(0.02)
    return record


def test_the_bot_mention_is_taken_out_and_so_are_other_mentions() -> None:
    bot = BOT_USER_ID
    typed = f"<@{bot}> portrait of @mara at golden hour <@123> <@!456> <@&789> --ar 2:3"
    assert mentioned_prompt(typed, bot) == "portrait of @mara at golden hour --ar 2:3"
    assert mentioned_prompt(f"a lighthouse <@!{bot}>", bot) == "a lighthouse"
    assert mentioned_prompt("portrait of @mara <@123>", bot) is None
    assert mentioned_prompt(f"portrait of <@&{bot}>", bot) is None  # a role with the same id is not the bot


def test_the_bot_asks_for_guild_messages_and_not_for_message_content() -> None:
    asked = intents()
    assert asked.guilds and asked.guild_messages and not asked.message_content
    assert not asked.members and not asked.presences


@in_module_loop
async def test_the_intents_sent_to_discord_include_guild_messages_not_message_content(running: Bot) -> None:
    sent = running.fake.intents
    assert sent is not None and sent & GUILD_MESSAGES_INTENT and not sent & MESSAGE_CONTENT_INTENT


@in_module_loop
async def test_a_mention_makes_a_portrait_delivered_once_as_a_reply_with_ten_buttons(running: Bot) -> None:
    fake = running.fake
    running.runner.gate.clear()  # held until the status reply shows
    try:
        typed = await fake.say(
            f"{fake.mention()} portrait of @mara at golden hour {fake.mention(BOB)} --ar 2:3", user=ALICE
        )
        status = await fake.wait_for(lambda: reply_to(fake, typed, files=False))
    finally:
        running.runner.gate.set()
    assert "queued" in status["content"]
    result = await fake.wait_for(lambda: reply_to(fake, typed, files=True), timeout=60)
    assert len(custom_ids(result)) == 11  # U1–U4, Reroll, V1–V4, Animate, Save as character
    assert result["content"].startswith(f"<@{ALICE['id']}> ")
    (record,) = [g for g in await generations(running.studio) if g.id in result["content"]]
    assert (record.platform, record.server_id, record.channel_id, record.user_id) == (
        "discord",
        str(running.guild),
        str(fake.guilds[running.guild]),
        ALICE["id"],
    )
    assert record.request["mentions"] == ["mara"] and record.request["aspect"] == "2:3"
    assert BOB["id"] not in record.request["subject"] and str(BOT_USER_ID) not in record.request["subject"]
    assert (await delivered(running.studio, record.id)).status == "delivered"
    assert running.runner.runs.count(record.id) == 1
    # Only the author is pinged by the result; the status reply pinged no one and is gone.
    (post,) = [
        c for c in fake.calls if c.method == "POST" and c.json and c.json.get("content") == result["content"]
    ]
    assert post.json["allowed_mentions"] == {"parse": [], "users": [int(ALICE["id"])], "replied_user": True}
    (shown,) = [c for c in fake.calls if c.method == "POST" and c.content == status["content"]]
    assert shown.json["allowed_mentions"] == {"parse": []}
    assert str(shown.json["message_reference"]["message_id"]) == typed["id"]
    assert int(status["id"]) in fake.deleted
    assert [r["id"] for r in fake.replies_to(int(typed["id"]))] == [result["id"]]


@in_module_loop
async def test_a_bad_flag_gets_a_reply_naming_it(running: Bot) -> None:
    fake = running.fake
    before = len(await generations(running.studio))
    typed = await fake.say(f"{fake.mention()} a fisherman --sharp 3 @everyone", user=ALICE)
    refusal = await fake.wait_for(lambda: reply_to(fake, typed, files=False))
    assert (
        refusal["content"].startswith(f"<@{ALICE['id']}> ") and "unknown flag --sharp" in refusal["content"]
    )
    (post,) = [c for c in fake.calls if c.method == "POST" and c.content == refusal["content"]]
    assert post.json["allowed_mentions"] == {"parse": [], "users": [int(ALICE["id"])], "replied_user": True}
    assert len(await generations(running.studio)) == before


@in_module_loop
async def test_an_unexpected_error_gets_a_reply_with_an_error_id(
    running: Bot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(running.studio, "portrait", broken)
    fake = running.fake
    with caplog.at_level(logging.ERROR, logger="bot.discord.bot"):
        typed = await fake.say(f"{fake.mention()} a lighthouse keeper", user=ALICE)
        apology = await fake.wait_for(lambda: reply_to(fake, typed, files=False))
    match = re.search(r"error id: (e_[0-9a-z]{12})$", apology["content"])
    assert match is not None and "Sorry" in apology["content"] and "fire" not in apology["content"]
    (record,) = [r for r in caplog.records if match[1] in r.getMessage()]
    assert record.exc_info is not None and "the disk caught fire" in str(record.exc_info[1])


@in_module_loop
async def test_messages_without_the_mention_or_from_bots_are_ignored(running: Bot) -> None:
    fake = running.fake
    before = len(await generations(running.studio))
    ignored = [
        await fake.say("a lighthouse keeper --ar 2:3", user=ALICE),
        await fake.say(f"{fake.mention(BOB)} a lighthouse keeper", user=ALICE),
        await fake.say(f"{fake.mention()} a lighthouse keeper --sharp 3", user=HELPER_BOT),
        # A reply that pings the bot lists it among the mentions, without its mention in the text.
        await fake.say("a lighthouse keeper --sharp 3", user=ALICE, mentions=[fake.bot_user]),
    ]
    # A message after them is answered: by then the bot has seen them all.
    last = await fake.say(f"{fake.mention()} a fisherman --sharp 3", user=ALICE)
    await fake.wait_for(lambda: reply_to(fake, last, files=False))
    assert all(fake.replies_to(int(message["id"])) == [] for message in ignored)
    assert len(await generations(running.studio)) == before
