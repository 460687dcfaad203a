"""Discord under load: 500 /portrait from 50 members in bursts, acknowledged, limited, delivered once each.

The scenario of tests/faults/test_discord_load.py (tests/faults/discord_load.py): a real discord.py client
against the local fake of Discord (tests/discord_fake.py), the real Studio and ledger on an in-process queue,
a worker that makes no images (no model runs). Each burst has every member ask a few portraits at once while
the worker holds back; the server's daily limit per member is 5 and the in-flight limit 2. Discord wants an
acknowledgement within 3 s (the fake answers a later one 10062).

Run: python bench/discord_load.py [--members N]  (prints a table; no assertions).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.latency import percentile  # noqa: E402
from router.catalog import load_catalog  # noqa: E402
from tests.faults.discord_load import BURSTS, DAILY_WORDS, IN_FLIGHT_WORDS, run_load  # noqa: E402


async def main(members: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    catalog = load_catalog(probe=lambda checkpoint: checkpoint.startswith("tiny:"))
    with tempfile.TemporaryDirectory() as folder:
        report = await run_load(Path(folder), catalog, members=members)
    ack = report.ack_ms
    rows = [
        ("/portrait sent", f"{len(report.typed)}"),
        ("acknowledged late (10062)", f"{report.late + report.unacknowledged}"),
        ("ack latency p50", f"{statistics.median(ack):.0f} ms"),
        ("ack latency p99", f"{percentile(ack, 0.99):.0f} ms"),
        ("ack latency max", f"{max(ack):.0f} ms"),
        ("accepted", f"{report.accepted}"),
        ("refused: in flight", f"{report.refused_for(IN_FLIGHT_WORDS)}"),
        ("refused: daily limit", f"{report.refused_for(DAILY_WORDS)}"),
        ("delivered", f"{report.delivered}"),
        ("duplicates", f"{report.duplicates}"),
        ("lost", f"{report.lost}"),
        ("wall time", f"{report.wall_s:.1f} s"),
    ]
    print(f"{members} members, {'/'.join(map(str, BURSTS))} /portrait each per burst")
    print(f"{'measure':<28}{'value':>10}")
    for name, value in rows:
        print(f"{name:<28}{value:>10}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.members))
