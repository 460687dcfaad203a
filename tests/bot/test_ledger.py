"""The ledger on real SQLite: schema, status transitions, what a restart must pick up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest

from bot.ledger import Ledger


async def record(ledger: Ledger, generation_id: str) -> None:
    await ledger.record(
        generation_id=generation_id,
        platform="cli",
        server_id="s",
        channel_id="c",
        user_id="u",
        request={"subject": "x"},
        route={"profile": "tiny-xl"},
        spec={"prompt": "x"},
        job_id="j_" + generation_id,
        queue="likeness:profile:tiny-xl",
    )


async def test_a_generation_follows_its_job(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    await record(ledger, "g_1")
    stored = await ledger.get("g_1")
    assert stored is not None
    assert stored.status == "recorded"
    assert stored.request == {"subject": "x"}
    await ledger.set_status("g_1", "queued")
    await ledger.set_status("g_1", "finished", result={"files": ["a.png"]})
    await ledger.set_status("g_1", "delivered")
    stored = await ledger.get("g_1")
    assert stored is not None
    assert (stored.status, stored.result) == ("delivered", {"files": ["a.png"]})
    assert stored.updated_at >= stored.created_at


async def test_a_status_set_only_from_some_statuses_leaves_the_others(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    await record(ledger, "g_1")
    await ledger.set_status("g_1", "queued")
    assert await ledger.set_status("g_1", "running", only_from=("recorded", "queued"))
    await ledger.set_status("g_1", "failed", error="cancelled by u")
    # A late "running" (the job's first event read after it ended) does not reopen it.
    assert not await ledger.set_status("g_1", "running", only_from=("recorded", "queued"))
    stored = await ledger.get("g_1")
    assert stored is not None and (stored.status, stored.error) == ("failed", "cancelled by u")
    assert not await ledger.set_status("g_missing", "running", only_from=("queued",))
    with pytest.raises(KeyError, match="no generation g_missing"):
        await ledger.set_status("g_missing", "running")


async def test_open_generations_are_what_is_not_yet_done(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    for name in ("g_a", "g_b", "g_c"):
        await record(ledger, name)
    await ledger.set_status("g_b", "delivered")
    await ledger.set_status("g_c", "failed", error="no weights")
    assert [g.id for g in await ledger.open_generations()] == ["g_a"]


async def test_reopening_keeps_data_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = Ledger(path)
    await first.open()
    await record(first, "g_1")
    second = Ledger(path)
    await second.open()
    assert (await second.get("g_1")) is not None
    async with aiosqlite.connect(path) as db, db.execute("PRAGMA journal_mode") as cursor:
        assert (await cursor.fetchone()) == ("wal",)


async def test_concurrent_writers_do_not_collide(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    await asyncio.gather(*(record(ledger, f"g_{i}") for i in range(40)))
    assert len(await ledger.open_generations()) == 40


async def test_unknown_generation_and_status_are_refused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    with pytest.raises(KeyError, match="g_missing"):
        await ledger.set_status("g_missing", "queued")
    await record(ledger, "g_1")
    with pytest.raises(ValueError, match="status"):
        await ledger.set_status("g_1", "lost")  # type: ignore[arg-type]
