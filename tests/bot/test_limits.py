"""Limits through the Studio: quotas and in-flight caps refuse with the reason; the fast lane is rationed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.ledger import Ledger
from bot.limits import LimitReached, until_reset
from bot.server_settings import ServerSettingsStore
from bot.studio import Origin, Studio
from jobs.queue import JobHandle, LocalQueue
from jobs.spec import JobResult, JobSpec
from router.catalog import Catalog

ORIGIN = Origin(platform="discord", server_id="s1", channel_id="c1", user_id="u1")
NEIGHBOUR = Origin(platform="discord", server_id="s1", channel_id="c1", user_id="u2")


class Lanes(LocalQueue):
    """The in-process queue, noting which lane each job took; jobs finish when `release` is set."""

    def __init__(self, *, fail: bool = False) -> None:
        self.lanes: list[bool] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = fail
        super().__init__(self._run)

    async def _run(self, spec: JobSpec, progress: object) -> JobResult:
        await self.release.wait()
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=not self.fail, error="no")

    async def submit(self, spec: JobSpec, queue_name: str, *, fast: bool = False) -> JobHandle:
        self.lanes.append(fast)
        return await super().submit(spec, queue_name, fast=fast)


@pytest.fixture
async def parts(
    tmp_path: Path, tiny_catalog: Catalog
) -> AsyncIterator[tuple[Studio, Lanes, ServerSettingsStore]]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    store = ServerSettingsStore(ledger)
    queue = Lanes()
    studio = Studio(
        ledger=ledger,
        catalog=tiny_catalog,
        queue=queue,
        generations_dir=tmp_path / "g",
        server_settings=store,
    )
    yield studio, queue, store
    queue.release.set()
    await queue.close()


async def done(studio: Studio, origin: Origin = ORIGIN, text: str = "a portrait") -> None:
    await studio.finish(await studio.portrait(origin, text))


async def test_the_daily_limit_per_member_names_itself_and_its_reset(
    parts: tuple[Studio, Lanes, ServerSettingsStore],
) -> None:
    studio, _, store = parts
    await store.update("discord", "s1", user_daily_limit=2)
    await done(studio)
    await done(studio)
    with pytest.raises(
        LimitReached, match=r"you have made 2 requests on this server today.*\(2\); it resets at 00:00 UTC"
    ):
        await studio.portrait(ORIGIN, "a portrait")
    await done(studio, NEIGHBOUR)  # another member still may
    await store.update("discord", "s1", server_daily_limit=3)
    with pytest.raises(LimitReached, match=r"this server has made 3 requests today, its daily limit \(3\)"):
        await studio.portrait(NEIGHBOUR, "a portrait")


async def test_failed_generations_do_not_count(tmp_path: Path, tiny_catalog: Catalog) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    store = ServerSettingsStore(ledger)
    await store.update("discord", "s1", user_daily_limit=1)
    queue = Lanes(fail=True)
    studio = Studio(
        ledger=ledger,
        catalog=tiny_catalog,
        queue=queue,
        generations_dir=tmp_path / "g",
        server_settings=store,
    )
    for _ in range(3):
        submission = await studio.portrait(ORIGIN, "a portrait")
        with pytest.raises(Exception, match="failed"):
            await studio.finish(submission)
    await queue.close()


async def test_requests_in_flight_are_capped(parts: tuple[Studio, Lanes, ServerSettingsStore]) -> None:
    studio, queue, _ = parts
    queue.release.clear()
    first = await studio.portrait(ORIGIN, "a portrait")
    await studio.portrait(ORIGIN, "a portrait")
    with pytest.raises(
        LimitReached, match=r"you have 2 requests in progress, the most this server allows at once \(2\)"
    ):
        await studio.portrait(ORIGIN, "a portrait")
    queue.release.set()
    await studio.finish(first)
    await studio.portrait(ORIGIN, "a portrait")  # one finished: room again


async def test_the_fast_lane_is_rationed_and_can_be_turned_off(
    parts: tuple[Studio, Lanes, ServerSettingsStore],
) -> None:
    studio, queue, store = parts
    await store.update("discord", "s1", fast_daily_limit=1)
    fast = await studio.portrait(ORIGIN, "a portrait --fast")
    assert fast.notices == ()
    await studio.finish(fast)
    second = await studio.portrait(ORIGIN, "a portrait --fast")
    assert any("used today's 1 fast-lane requests" in notice for notice in second.notices)
    await studio.finish(second)
    await store.update("discord", "s1", fast_lane=False)
    off = await studio.portrait(NEIGHBOUR, "a portrait --fast")
    assert any("the fast lane is off on this server" in notice for notice in off.notices)
    assert queue.lanes == [True, False, False]
    recorded = await studio.ledger.get(second.generation_id)
    assert recorded is not None and recorded.route["lane"] == "normal"


async def test_the_server_default_aspect_applies_when_no_ar_is_given(
    parts: tuple[Studio, Lanes, ServerSettingsStore],
) -> None:
    studio, _, store = parts
    await store.update("discord", "s1", default_aspect="2:3")
    plain = await studio.portrait(ORIGIN, "a portrait")
    asked = await studio.portrait(NEIGHBOUR, "a portrait --ar 16:9")
    assert plain.spec.recipe is not None and asked.spec.recipe is not None
    assert plain.spec.recipe.height > plain.spec.recipe.width
    assert asked.spec.recipe.width > asked.spec.recipe.height


def test_the_reset_time_reads_plainly() -> None:
    midnight = 1_700_006_400.0  # a UTC midnight
    assert until_reset(midnight - 3 * 3600 - 12 * 60) == "00:00 UTC, in 3 h 12 min"
    assert until_reset(midnight - 30) == "00:00 UTC, in 1 min"
