"""Nothing lost, nothing doubled on Discord across a restart: what a stopped bot left open is delivered by the
next one, once, also when the first bot died after Discord took the result but before the ledger said
`delivered`.

A real discord.py client against the local fake of Discord (tests/discord_fake.py); the worker is a fake
runner (no model runs). "The bot dies" is the fake holding back its answer to the result's post (Discord made
the message; the bot never hears so) and the bot being stopped while it waits: the ledger is left as a
SIGKILL at that moment leaves it, `finished`, not `delivered`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.courier import Outcome
from bot.discord.bot import LOOK_BACK
from bot.discord.replies import nonce_of
from bot.studio import Origin
from router.catalog import Catalog
from tests.bot.discord.support import result_messages, serving
from tests.bot.discord.test_commands import FakeRunner, make_studio, start, stop
from tests.discord_fake import APP_ID, Call, FakeDiscord, custom_ids, snowflake, user_payload

ALICE = user_payload(4_001, "alice")


def with_files(call: Call) -> bool:
    return bool(call.files)


async def resumed(fake: FakeDiscord, data_dir: Path, catalog: Catalog) -> tuple[list[Outcome], FakeRunner]:
    """Start a bot on `data_dir`'s ledger, let its Courier finish what the ledger holds open, stop it."""
    runner = FakeRunner()
    bot = await start(fake, await make_studio(data_dir, catalog, runner), runner, courier_backoff_s=0.05)
    try:
        assert bot.bot.resumed is not None
        outcomes = await asyncio.wait_for(bot.bot.resumed, timeout=60)
    finally:
        await stop(bot)
    return outcomes, runner


async def posted_then_died(fake: FakeDiscord, data_dir: Path, catalog: Catalog, how: str) -> str:
    """A bot asked for a portrait (`how`: by /portrait, whose result is an interaction follow-up, or by a
    message that mentions it, whose result is a channel reply) dies once Discord has made the result's
    message and before the ledger says `delivered`. Returns the generation id."""
    guild = fake.guild_ids[0]
    channel = fake.guilds[guild]
    runner = FakeRunner()
    first = await start(fake, await make_studio(data_dir, catalog, runner), runner)
    try:
        if how == "follow-up":
            fake.hold("POST", f"/webhooks/{APP_ID}/", when=with_files)
            await fake.slash("portrait", guild_id=guild, user=ALICE, prompt="a ferryman", count=1)
        else:
            fake.hold("POST", f"/channels/{channel}/messages", when=with_files)
            await fake.say(f"{fake.mention()} a ferryman --n 1", guild_id=guild, user=ALICE)
        made = await fake.wait_for(lambda: next((c for c in fake.calls if c.created and c.files), None))
        (generation,) = await first.studio.ledger.open_generations()
        assert result_messages(fake, generation.id) == {made.created}
        assert generation.status == "finished"  # Discord has it; the ledger does not know
    finally:
        await stop(first)
    return generation.id


def result_posts(fake: FakeDiscord, generation_id: str, since: int) -> list[Call]:
    """The posts of this generation's result after the first `since` calls."""
    return [c for c in fake.calls[since:] if c.method == "POST" and generation_id in c.content]


def histories(fake: FakeDiscord, since: int) -> list[Call]:
    return [c for c in fake.calls[since:] if c.method == "GET" and c.path.endswith("/messages")]


async def test_a_result_discord_took_before_the_bot_died_is_not_posted_again_within_the_nonce_window(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    """Without the channel's history to look in, the nonce alone keeps the second post from being made."""
    async with serving(guilds=1) as fake:
        generation_id = await posted_then_died(fake, tmp_path, tiny_catalog, "channel reply")
        fake.no_history.add(fake.guilds[fake.guild_ids[0]])  # the bot lacks Read Message History
        since = len(fake.calls)
        outcomes, runner = await resumed(fake, tmp_path, tiny_catalog)
    assert [(o.generation_id, o.state) for o in outcomes] == [(generation_id, "delivered")]
    assert runner.runs == []  # delivered from its files, not run again
    assert len(result_messages(fake, generation_id)) == 1
    (again,) = result_posts(fake, generation_id, since)
    assert again.json["nonce"] == nonce_of(generation_id) and again.json["enforce_nonce"] is True
    assert again.status == 200 and again.created is None  # Discord answered with the message it had


@pytest.mark.parametrize("how", ["follow-up", "channel reply"])
async def test_past_the_nonce_window_the_result_is_found_in_the_channel_and_not_posted_again(
    tmp_path: Path, tiny_catalog: Catalog, how: str
) -> None:
    async with serving(guilds=1, nonce_window_s=0.0) as fake:
        generation_id = await posted_then_died(fake, tmp_path, tiny_catalog, how)
        since = len(fake.calls)
        outcomes, _ = await resumed(fake, tmp_path, tiny_catalog)
    assert [(o.generation_id, o.state) for o in outcomes] == [(generation_id, "delivered")]
    assert len(result_messages(fake, generation_id)) == 1
    assert result_posts(fake, generation_id, since) == []
    (looked,) = histories(fake, since)
    assert looked.query == {"limit": str(LOOK_BACK)}


async def test_past_the_nonce_window_and_without_the_history_the_result_shows_twice(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    """The case neither defence covers (and the check that these tests can see a second post): a bot that
    may not read the channel's history, restarted minutes after it died."""
    async with serving(guilds=1, nonce_window_s=0.0) as fake:
        generation_id = await posted_then_died(fake, tmp_path, tiny_catalog, "channel reply")
        fake.no_history.add(fake.guilds[fake.guild_ids[0]])
        outcomes, _ = await resumed(fake, tmp_path, tiny_catalog)
    assert [o.state for o in outcomes] == ["delivered"]
    assert len(result_messages(fake, generation_id)) == 2


def forbid(fake: FakeDiscord, channel: int) -> None:
    fake.fail("GET", f"/channels/{channel}/messages", status=403, code=50001)


def no_history(fake: FakeDiscord, channel: int) -> None:
    fake.no_history.add(channel)


@pytest.mark.parametrize("unreadable", [forbid, no_history], ids=["403", "no-read-message-history"])
async def test_a_history_the_bot_may_not_read_does_not_keep_the_result_from_being_posted(
    tmp_path: Path, tiny_catalog: Catalog, unreadable: Callable[[FakeDiscord, int], None]
) -> None:
    async with serving(guilds=1) as fake:
        guild = fake.guild_ids[0]
        channel = fake.guilds[guild]
        # The first bot finished the job and died before posting anything.
        runner = FakeRunner()
        studio = await make_studio(tmp_path, tiny_catalog, runner)
        origin = Origin("discord", str(guild), str(channel), ALICE["id"])
        finished = await studio.finish(await studio.portrait(origin, "a ferryman --n 1"))
        await studio.queue.close()
        unreadable(fake, channel)
        since = len(fake.calls)
        outcomes, again = await resumed(fake, tmp_path, tiny_catalog)
    generation_id = finished.generation_id
    assert [(o.generation_id, o.state) for o in outcomes] == [(generation_id, "delivered")]
    assert again.runs == []
    (looked,) = histories(fake, since)
    assert looked.status in (200, 403)
    (posted,) = result_posts(fake, generation_id, since)
    assert posted.status == 200 and posted.json["nonce"] == nonce_of(generation_id)
    assert len(result_messages(fake, generation_id)) == 1


async def test_a_generation_left_open_by_a_stopped_bot_is_delivered_once_by_the_next(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    async with serving(guilds=1) as fake:
        guild, channel = fake.guild_ids[0], fake.guilds[fake.guild_ids[0]]
        held = FakeRunner()
        held.gate.clear()  # the first bot's worker never gets to it
        first = await start(fake, await make_studio(tmp_path, tiny_catalog, held), held)
        try:
            typed = await fake.slash("portrait", guild_id=guild, user=ALICE, prompt="a ferryman", count=2)
            await fake.wait_for(lambda: any(c.method == "PATCH" for c in fake.calls_of(typed)) or None)
            (open_one,) = await first.studio.ledger.open_generations()
            # One more whose channel is gone by the time it is delivered, and one whose first post meets
            # a server error.
            gone = await first.studio.portrait(
                Origin("discord", str(guild), str(snowflake()), ALICE["id"]), "a lost letter --n 1"
            )
        finally:
            await stop(first)
        assert held.runs == []
        assert {g.status for g in await first.studio.ledger.open_generations()} == {"queued"}

        fake.fail("POST", f"/channels/{channel}/messages", status=503)
        since = len(fake.calls)
        outcomes, runner = await resumed(fake, tmp_path, tiny_catalog)
    states = {o.generation_id: o.state for o in outcomes}
    assert states == {open_one.id: "delivered", gone.generation_id: "failed"}
    assert sorted(runner.runs) == sorted([open_one.id, gone.generation_id])
    (message_id,) = result_messages(fake, open_one.id)
    posted: dict[str, Any] = fake.messages[message_id]
    assert int(posted["channel_id"]) == channel and posted.get("interaction_metadata") is None
    assert str(posted["content"]).startswith(f"<@{ALICE['id']}> a ferryman")
    assert len(custom_ids(posted)) == 7  # U1, U2, Reroll, V1, V2, Animate, Save as character
    tries = result_posts(fake, open_one.id, since)
    assert [c.status for c in tries] == [503, 200]  # the passing failure was tried again…
    assert {c.json["nonce"] for c in tries} == {nonce_of(open_one.id)}  # …under the same nonce
    studio = await make_studio(tmp_path, tiny_catalog, FakeRunner())
    delivered = await studio.ledger.get(open_one.id)
    lost = await studio.ledger.get(gone.generation_id)
    await studio.queue.close()
    assert delivered is not None and delivered.status == "delivered"
    assert lost is not None and lost.status == "failed" and "could not be delivered" in lost.error
    assert "10003" in lost.error
