"""The Discord bot over time and under load: what a stopped bot left open is delivered by the next one, once;
a burst of /portrait from many members is acknowledged in time, limited per member, delivered once each.
The worker is a fake runner (tests/bot/discord/test_commands.py): no model runs.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import pytest

from bot.discord.bot import discord_endpoints
from bot.studio import Origin
from router.catalog import Catalog
from tests.bot.discord.test_commands import FakeRunner, answer_of, make_studio, start, stop
from tests.discord_fake import EPHEMERAL, FakeDiscord, custom_ids, snowflake, user_payload

ALICE = user_payload(4_001, "alice")


def posts_of(fake: FakeDiscord, generation_id: str) -> list[dict[str, object]]:
    """Every live message that carries this generation's result (files and its buttons)."""
    return [
        m
        for m in fake.messages.values()
        if m["attachments"] and any(generation_id in custom_id for custom_id in custom_ids(m))
    ]


async def test_a_generation_left_open_by_a_stopped_bot_is_delivered_once_by_the_next(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    fake = await FakeDiscord().start()
    guild, channel = fake.guild_ids[0], fake.guilds[fake.guild_ids[0]]
    try:
        with discord_endpoints(fake.api_base, fake.gateway_url):
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
            runner = FakeRunner()
            second = await start(
                fake, await make_studio(tmp_path, tiny_catalog, runner), runner, courier_backoff_s=0.05
            )
            try:
                assert second.bot.resumed is not None
                outcomes = await asyncio.wait_for(second.bot.resumed, timeout=60)
            finally:
                await stop(second)
    finally:
        await fake.close()
    states = {o.generation_id: o.state for o in outcomes}
    assert states == {open_one.id: "delivered", gone.generation_id: "failed"}
    assert sorted(runner.runs) == sorted([open_one.id, gone.generation_id])
    (posted,) = posts_of(fake, open_one.id)
    assert int(posted["channel_id"]) == channel and posted.get("interaction_metadata") is None
    assert str(posted["content"]).startswith(f"<@{ALICE['id']}> a ferryman")
    assert len(custom_ids(posted)) == 7  # U1, U2, Reroll, V1, V2, Animate, Save as character
    failed_posts = [c for c in fake.calls if c.path == f"/channels/{channel}/messages" and c.method == "POST"]
    assert [c.status for c in failed_posts] == [503, 200]  # the passing failure was tried again
    delivered = await second.studio.ledger.get(open_one.id)
    lost = await second.studio.ledger.get(gone.generation_id)
    assert delivered is not None and delivered.status == "delivered"
    assert lost is not None and lost.status == "failed" and "could not be delivered" in lost.error
    assert "10003" in lost.error


USERS = [user_payload(5_000 + k, f"member{k}") for k in range(10)]
PER_USER = 5
IN_FLIGHT = 2  # the default user_in_flight_limit


@pytest.mark.timeout(120)
async def test_fifty_concurrent_portraits_from_ten_members(tmp_path: Path, tiny_catalog: Catalog) -> None:
    fake = await FakeDiscord().start()
    guild = fake.guild_ids[0]
    try:
        with discord_endpoints(fake.api_base, fake.gateway_url):
            runner = FakeRunner()
            runner.gate.clear()  # nothing finishes until every request is answered: the limit is exact
            bot = await start(fake, await make_studio(tmp_path, tiny_catalog, runner), runner)
            try:
                typed = await asyncio.gather(
                    *(
                        fake.slash("portrait", guild_id=guild, user=user, prompt=f"a portrait {n}", count=1)
                        for n in range(PER_USER)
                        for user in USERS
                    )
                )
                ledger = bot.studio.ledger

                async def settled() -> tuple[int, int] | None:
                    refused = sum(1 for t in typed if answer_of(fake, t) is not None)
                    accepted = len(await ledger.open_generations())
                    return (accepted, refused) if accepted + refused == len(typed) else None

                deadline = time.monotonic() + 60
                while (counts := await settled()) is None:
                    assert time.monotonic() < deadline, "not every request was answered"
                    await asyncio.sleep(0.05)
                runner.gate.set()
                accepted_ids = [g.id for g in await ledger.open_generations()]
                await fake.wait_for(lambda: all(posts_of(fake, g) for g in accepted_ids) or None, timeout=60)
                await asyncio.sleep(0.3)  # a second post would show by now
                records = [await ledger.get(g) for g in accepted_ids]
            finally:
                await stop(bot)
    finally:
        await fake.close()

    lateness = [t.acked_at - t.created for t in typed if t.acked_at is not None]
    assert len(lateness) == len(typed) and max(lateness) < 3.0, max(lateness)
    assert counts == (len(USERS) * IN_FLIGHT, len(USERS) * (PER_USER - IN_FLIGHT))
    refusals = [answer_of(fake, t) for t in typed]
    for refusal in filter(None, refusals):
        assert refusal["flags"] & EPHEMERAL
        assert "the most this server allows at once (2)" in str(refusal["content"])
    per_user = collections.Counter(r.user_id for r in records if r is not None)
    assert per_user == {u["id"]: IN_FLIGHT for u in USERS}
    assert all(r is not None and r.status == "delivered" for r in records)
    assert all(len(posts_of(fake, g)) == 1 for g in accepted_ids)
    assert sorted(runner.runs) == sorted(accepted_ids)
