"""Slack acknowledgement latency: how long from a slash command's HTTP request until the app's answer,
for 50 /portrait at once, against a request the app answers without a handler of ours.

Both go through the real Bolt app served over HTTP on this machine (bot/slack/bot.py), with request
signing checked, against the local fake of Slack's Web API (tests/slack_fake.py), with a worker that
makes no images (no model runs). The floor is Slack's `url_verification` request, which Bolt answers
itself after checking the signature: the HTTP round trip, the signature and Bolt's dispatch. Slack wants
the answer within 3 s; the target here is a p99 under 100 ms.

Run: python bench/slack_ack.py [--rounds N] [--concurrent N]  (prints a table; no assertions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.latency import latency_table, until_delivered  # noqa: E402
from bot.server_settings import ServerSettingsStore  # noqa: E402
from router.catalog import load_catalog  # noqa: E402
from tests.bot.slack.support import CHANNEL, Painter, Running, running_bot  # noqa: E402
from tests.slack_fake import TEAMS  # noqa: E402


async def floor_burst(running: Running, concurrent: int) -> list[float]:
    body = json.dumps({"token": "legacy", "challenge": "likeness-bench", "type": "url_verification"})
    sent = await asyncio.gather(
        *(running.fake.send(running.url, body, "application/json") for _ in range(concurrent))
    )
    if any(s.status != 200 or "likeness-bench" not in s.text for s in sent):
        raise RuntimeError(f"url_verification was not answered: {[s.status for s in sent]}")
    return [1000 * (s.answered_at - s.sent_at) for s in sent]


async def portrait_burst(running: Running, concurrent: int, round_: int) -> list[float]:
    users = [f"U0ACK{round_:02d}{k:05d}" for k in range(concurrent)]
    sent = await asyncio.gather(
        *(
            running.fake.slash(
                running.url, f"a fisherman {k} --n 1 --steps 1", team=TEAMS[0], channel=CHANNEL, user=user
            )
            for k, user in enumerate(users)
        )
    )
    if any(s.status != 200 for s in sent):
        raise RuntimeError(f"/portrait was refused: {sorted({s.status for s in sent})}")
    return [1000 * (s.answered_at - s.sent_at) for s in sent]


async def measure(rounds: int, concurrent: int) -> dict[str, list[float]]:
    """Acknowledgement latencies in ms, by request: the url_verification floor and /portrait."""
    catalog = load_catalog(probe=lambda checkpoint: checkpoint.startswith("tiny:"))
    results: dict[str, list[float]] = {"no-op (floor)": [], "/portrait": []}
    with tempfile.TemporaryDirectory() as folder:
        async with running_bot(Path(folder), catalog, Painter(step_s=0.0)) as running:
            settings = ServerSettingsStore(running.studio.ledger)
            await settings.update("slack", TEAMS[0], user_daily_limit=0)
            for round_ in range(rounds):
                results["no-op (floor)"] += await floor_burst(running, concurrent)
                results["/portrait"] += await portrait_burst(running, concurrent, round_)
                await until_delivered(running.studio.ledger)  # before the next round
    return results


async def main(rounds: int, concurrent: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    results = await measure(rounds, concurrent)
    print(f"{concurrent} slash commands at once, {rounds} round(s); acknowledgement latency in ms")
    print(latency_table(results, "request"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.concurrent))
