"""What the chat benchmarks share: a percentile, the table of p50 / p99 / max by request, and waiting for
every result of a round to be posted before the next."""

from __future__ import annotations

import asyncio
import statistics

from bot.ledger import Ledger

POLL_S = 0.05


def percentile(values: list[float], q: float) -> float:
    """The value at fraction `q` of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_table(results: dict[str, list[float]], first_column: str) -> str:
    """One line a request kind: how many, p50, p99 and max, in ms."""
    lines = [f"{first_column:<16}{'n':>5}{'p50':>9}{'p99':>9}{'max':>9}"]
    for name, values in results.items():
        lines.append(
            f"{name:<16}{len(values):>5}{statistics.median(values):>9.1f}"
            f"{percentile(values, 0.99):>9.1f}{max(values):>9.1f}"
        )
    return "\n".join(lines)


async def until_delivered(ledger: Ledger, timeout_s: float = 120.0) -> None:
    """Wait (at most `timeout_s`) until the ledger has no generation left open: every result posted."""
    for _ in range(round(timeout_s / POLL_S)):  # the ledger is polled: nothing announces a delivery here
        if not await ledger.open_generations():
            return
        await asyncio.sleep(POLL_S)
