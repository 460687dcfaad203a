"""The Discord bot under load: 500 /portrait from 50 members in bursts (tests/faults/discord_load.py) are each
acknowledged within Discord's deadline, limited per member, and every accepted one is delivered once.
bench/discord_load.py runs the same scenario and prints its numbers.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from router.catalog import Catalog
from tests.faults.discord_load import (
    BURSTS,
    DAILY_LIMIT,
    DAILY_WORDS,
    IN_FLIGHT,
    IN_FLIGHT_WORDS,
    MEMBERS,
    run_load,
)


@pytest.mark.timeout(180)
async def test_five_hundred_portraits_from_fifty_members_in_bursts(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    report = await run_load(tmp_path, tiny_catalog)
    asked = MEMBERS * sum(BURSTS)
    assert len(report.typed) == asked == 500

    # Discord's contract: acknowledged within 3 s, or answered 10062 (the fake keeps the deadline).
    assert report.late == 0 and report.unacknowledged == 0

    # Per member: the in-flight cap refuses the third of each burst, the daily limit what is past it.
    assert report.accepted == MEMBERS * DAILY_LIMIT
    assert report.refused == asked - report.accepted  # each told why, privately
    in_flight_refusals = MEMBERS * (len(BURSTS) - 2) * (BURSTS[0] - IN_FLIGHT)
    assert report.refused_for(IN_FLIGHT_WORDS) == in_flight_refusals
    assert report.refused_for(DAILY_WORDS) == report.refused - in_flight_refusals
    per_member = collections.Counter(member for member, _ in report.generations.values())
    assert set(per_member.values()) == {DAILY_LIMIT} and len(per_member) == MEMBERS

    # Every accepted one delivered once: one result message each, the ledger says delivered, ran once.
    assert report.lost == 0 and report.duplicates == 0
    assert report.delivered == report.accepted
    assert set(report.results.values()) == {1}
    assert sorted(report.runs) == sorted(report.generations)
