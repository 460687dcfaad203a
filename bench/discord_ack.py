"""Discord acknowledgement latency: how long from an interaction dispatched on the gateway until the bot's
callback reaches Discord, for 50 /portrait at once, against a no-op command the bot acknowledges at once.

Both run a real discord.py client against the local fake of Discord (tests/discord_fake.py), on this
machine, with a worker that makes no images (no model runs). The no-op is the floor: the fake's gateway,
discord.py's dispatch and one REST round trip. Discord wants an acknowledgement within 3 s; the target
here is a p99 under 100 ms.

Run: python bench/discord_ack.py [--rounds N] [--concurrent N]  (prints a table; no assertions).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import discord  # noqa: E402
from discord import app_commands  # noqa: E402
from PIL import Image  # noqa: E402

from bench.latency import latency_table, until_delivered  # noqa: E402
from bot.discord.bot import LikenessBot, discord_endpoints  # noqa: E402
from bot.ledger import Ledger  # noqa: E402
from bot.server_settings import ServerSettingsStore  # noqa: E402
from bot.studio import Studio  # noqa: E402
from jobs.queue import LocalQueue  # noqa: E402
from jobs.spec import JobResult, JobSpec, ProgressEvent, ResultImage  # noqa: E402
from router.catalog import load_catalog  # noqa: E402
from tests.discord_fake import TOKEN, FakeDiscord, Interaction, user_payload  # noqa: E402


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


async def no_model(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
    seeds = spec.recipe.seeds if spec.recipe else (1,)
    images = tuple(
        ResultImage(index=k, seed=s, width=64, height=64, png=PNG) for k, s in enumerate(seeds, start=1)
    )
    return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=True, images=images, grid=PNG)


@app_commands.command(name="ping", description="Acknowledge and do nothing (the benchmark's floor).")
async def ping(interaction: discord.Interaction[Any]) -> None:
    await interaction.response.defer(thinking=True)


async def burst(fake: FakeDiscord, name: str, guild: int, concurrent: int, **options: Any) -> list[float]:
    users = [user_payload(10_000 + k, f"member{k}") for k in range(concurrent)]
    typed: list[Interaction] = await asyncio.gather(
        *(fake.slash(name, guild_id=guild, user=user, **options) for user in users)
    )
    await fake.wait_for(lambda: all(t.acked_at is not None for t in typed) or None, timeout=30)
    return [1000 * (t.acked_at - t.created) for t in typed if t.acked_at is not None]


async def measure(rounds: int, concurrent: int) -> dict[str, list[float]]:
    """Acknowledgement latencies in ms, by command: the no-op floor and /portrait."""
    fake = await FakeDiscord().start()
    guild = fake.guild_ids[0]
    with tempfile.TemporaryDirectory() as folder, discord_endpoints(fake.api_base, fake.gateway_url):
        ledger = Ledger(Path(folder) / "ledger.sqlite3")
        await ledger.open()
        queue = LocalQueue(no_model)
        catalog = load_catalog(probe=lambda checkpoint: checkpoint.startswith("tiny:"))
        studio = Studio(
            ledger=ledger,
            catalog=catalog,
            queue=queue,
            generations_dir=Path(folder) / "generations",
            server_settings=ServerSettingsStore(ledger),
        )
        await ServerSettingsStore(ledger).update("discord", str(guild), user_daily_limit=0)
        bot = LikenessBot(studio)
        bot.tree.add_command(ping)
        task = asyncio.create_task(bot.start(TOKEN))
        try:
            await asyncio.wait_for(bot.wait_until_ready(), timeout=30)
            results: dict[str, list[float]] = {"no-op (floor)": [], "/portrait": []}
            for _ in range(rounds):
                results["no-op (floor)"] += await burst(fake, "ping", guild, concurrent)
                results["/portrait"] += await burst(fake, "portrait", guild, concurrent, prompt="a fisherman")
                await until_delivered(ledger)  # before the next round
        finally:
            await bot.close()
            await asyncio.wait([task])
            await queue.close()
    await fake.close()
    return results


async def main(rounds: int, concurrent: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    results = await measure(rounds, concurrent)
    print(f"{concurrent} interactions at once, {rounds} round(s); acknowledgement latency in ms")
    print(latency_table(results, "command"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.concurrent))
