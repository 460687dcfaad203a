"""Latency figures the chat benchmarks share: a percentile, and the table of p50 / p99 / max by request."""

from __future__ import annotations

import statistics


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
