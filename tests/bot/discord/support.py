"""What the Discord tests share: a fake of Discord the bot's endpoints point at, and a bot connected to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot.discord.bot import LikenessBot, carries_result, discord_endpoints
from bot.studio import Studio
from tests.discord_fake import TOKEN, FakeDiscord, snowflake


@asynccontextmanager
async def serving(guilds: int, **options: Any) -> AsyncIterator[FakeDiscord]:
    """A fake of Discord with `guilds` servers (`options`: FakeDiscord's), and discord.py pointed at it while
    the block runs."""
    server = await FakeDiscord(guilds={snowflake(): snowflake() for _ in range(guilds)}, **options).start()
    try:
        with discord_endpoints(server.api_base, server.gateway_url):
            yield server
    finally:
        await server.close()


async def connect(fake: FakeDiscord, bot: LikenessBot, studio: Studio) -> asyncio.Task[None]:
    """Start `bot` against the fake and return its task once the gateway says it is ready."""
    identified = fake.identified
    task = asyncio.create_task(bot.start(TOKEN))
    try:
        await fake.wait_for(lambda: fake.identified > identified or None, timeout=30)
        await asyncio.wait_for(bot.wait_until_ready(), timeout=30)
    except BaseException:
        await disconnect(bot, task, studio)
        raise
    return task


async def disconnect(bot: LikenessBot, task: asyncio.Task[None], studio: Studio) -> None:
    """Close the bot and its Studio's queue; a bot that crashed fails the test."""
    await bot.close()
    await asyncio.wait([task])
    await studio.queue.close()
    task.result()


def result_messages(fake: FakeDiscord, generation_id: str) -> set[int]:
    """Every message Discord made that carries this generation's result: by the recorded calls (a post that
    Discord answered with a message it had made before counts once), and among the live messages."""
    made = {
        call.created
        for call in fake.calls
        if call.created is not None and carries_result(call.content, generation_id)
    }
    live = {int(m["id"]) for m in fake.messages.values() if carries_result(str(m["content"]), generation_id)}
    return made | live
