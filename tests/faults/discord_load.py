"""The Discord load scenario: 500 /portrait from 50 members, in bursts, through a real discord.py client and
the local fake of Discord (tests/discord_fake.py), with the real Studio on an in-process queue and a worker
that makes no images. tests/faults/test_discord_load.py asserts on what it reports; bench/discord_load.py
prints it.

Each burst has every member ask a few portraits at once while the worker holds back, so the in-flight cap
refuses exactly the ones past it; then the worker lets go and every accepted one is delivered before the
next burst. The server's daily limit per member (5) refuses the rest. Per member: 5 accepted, 2 refused by
the in-flight cap (2), 3 by the daily limit. The fake keeps Discord's 3 s deadline: a late acknowledgement
is answered 10062 Unknown interaction.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.discord.bot import discord_endpoints
from bot.ledger import Ledger
from bot.server_settings import ServerSettingsStore
from router.catalog import Catalog
from tests.bot.discord.support import result_messages
from tests.bot.discord.test_commands import FakeRunner, make_studio, start, stop
from tests.discord_fake import EPHEMERAL, FakeDiscord, Interaction, user_payload

MEMBERS = 50
BURSTS = (3, 3, 3, 1)  # what each member asks at once, burst after burst: 10 each, 500 in all
DAILY_LIMIT = 5  # the server's daily limit per member, set for the scenario
IN_FLIGHT = 2  # the default limit of one member's requests in progress
IN_FLIGHT_WORDS = f"the most this server allows at once ({IN_FLIGHT})"
DAILY_WORDS = f"its daily limit per member ({DAILY_LIMIT})"


@dataclass
class LoadReport:
    """What the scenario saw: the interactions, Discord's answers to their acknowledgements, the ledger's
    generations, and the result messages Discord made for each."""

    typed: list[Interaction] = field(default_factory=list)
    late: int = 0  # acknowledgements Discord refused as past the deadline (10062)
    refusals: dict[int, str] = field(default_factory=dict)  # interaction id → its private answer
    generations: dict[str, tuple[str, str]] = field(default_factory=dict)  # id → (member, ledger status)
    results: dict[str, int] = field(default_factory=dict)  # generation id → result messages made
    runs: list[str] = field(default_factory=list)  # generation ids the worker ran
    wall_s: float = 0.0

    @property
    def ack_ms(self) -> list[float]:
        return [1000 * (t.acked_at - t.created) for t in self.typed if t.acked_at is not None]

    @property
    def unacknowledged(self) -> int:
        return sum(1 for t in self.typed if not t.acked)

    @property
    def accepted(self) -> int:
        return len(self.generations)

    @property
    def refused(self) -> int:
        return len(self.refusals)

    def refused_for(self, words: str) -> int:
        return sum(1 for text in self.refusals.values() if words in text)

    @property
    def delivered(self) -> int:
        return sum(1 for _, status in self.generations.values() if status == "delivered")

    @property
    def duplicates(self) -> int:
        return sum(max(0, n - 1) for n in self.results.values())

    @property
    def lost(self) -> int:
        """Accepted, and no result message made (or the ledger never got to `delivered`)."""
        return sum(
            1
            for g, (_, status) in self.generations.items()
            if self.results.get(g, 0) == 0 or status != "delivered"
        )


def _answers(fake: FakeDiscord) -> dict[int, dict[str, Any]]:
    """Each interaction's private answer, by interaction id (one pass over the messages)."""
    found: dict[int, dict[str, Any]] = {}
    for message in list(fake.messages.values()):
        metadata = message.get("interaction_metadata") or {}
        if metadata and message["flags"] & EPHEMERAL and message["content"]:
            found[int(metadata["id"])] = message
    return found


async def _statuses(ledger: Ledger, guild: int) -> collections.Counter[str]:
    """The server's generations in the ledger, counted by status."""
    async with (
        ledger.connect() as db,
        db.execute(
            "SELECT status, COUNT(*) FROM generations WHERE platform = 'discord' AND server_id = ? "
            "GROUP BY status",
            (str(guild),),
        ) as cursor,
    ):
        return collections.Counter({str(status): int(n) for status, n in await cursor.fetchall()})


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:g} s")
        await asyncio.sleep(0.25)


async def _burst(
    fake: FakeDiscord,
    ledger: Ledger,
    runner: FakeRunner,
    guild: int,
    users: list[dict[str, Any]],
    per_member: int,
    report: LoadReport,
    settle_s: float,
) -> None:
    """Every member asks `per_member` portraits at once while the worker holds back; once each is accepted
    or refused, the worker lets go, and the burst ends when every accepted one is delivered."""
    runner.gate.clear()
    before = (await _statuses(ledger, guild)).total()
    wave: list[Interaction] = list(
        await asyncio.gather(
            *(
                fake.slash(
                    "portrait", guild_id=guild, user=user, prompt=f"portrait {k} of member {user['id']}"
                )
                for k in range(per_member)
                for user in users
            )
        )
    )
    report.typed += wave

    async def answered() -> bool:
        accepted = (await _statuses(ledger, guild)).total() - before
        answers = _answers(fake)
        return accepted + sum(1 for t in wave if t.id in answers) >= len(wave)

    await _until(answered, settle_s, "not every request of the burst was accepted or refused")
    runner.gate.set()

    async def delivered() -> bool:
        statuses = await _statuses(ledger, guild)
        return statuses.total() == statuses["delivered"] + statuses["failed"]

    await _until(delivered, settle_s, "not every accepted request of the burst was delivered")


async def run_load(
    data_dir: Path,
    catalog: Catalog,
    *,
    members: int = MEMBERS,
    bursts: tuple[int, ...] = BURSTS,
    settle_s: float = 60.0,
) -> LoadReport:
    """Run the scenario against a fresh fake of Discord and a fresh ledger under `data_dir`."""
    report = LoadReport()
    users = [user_payload(6_000 + k, f"member{k}") for k in range(members)]
    fake = await FakeDiscord().start()
    guild = fake.guild_ids[0]
    try:
        with discord_endpoints(fake.api_base, fake.gateway_url):
            runner = FakeRunner()
            studio = await make_studio(data_dir, catalog, runner)
            await ServerSettingsStore(studio.ledger).update(
                "discord", str(guild), user_daily_limit=DAILY_LIMIT
            )
            bot = await start(fake, studio, runner)
            try:
                started = time.monotonic()
                for per_member in bursts:
                    await _burst(fake, studio.ledger, runner, guild, users, per_member, report, settle_s)
                report.wall_s = time.monotonic() - started
                await asyncio.sleep(0.3)  # a second post of any result would show by now
            finally:
                await stop(bot)
            report.runs = list(runner.runs)
            async with (
                studio.ledger.connect() as db,
                db.execute(
                    "SELECT id, user_id, status FROM generations"
                    " WHERE platform = 'discord' AND server_id = ?",
                    (str(guild),),
                ) as cursor,
            ):
                rows = await cursor.fetchall()
            report.generations = {str(g): (str(user), str(status)) for g, user, status in rows}
    finally:
        await fake.close()
    # Discord's answer to an acknowledgement past its deadline.
    report.late = sum(1 for c in fake.calls if c.path.endswith("/callback") and c.status == 404)
    answers = _answers(fake)
    for typed in report.typed:
        if (answer := answers.get(typed.id)) is not None:
            report.refusals[typed.id] = str(answer["content"])
    report.results = {g: len(result_messages(fake, g)) for g in report.generations}
    return report
