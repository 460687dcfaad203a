"""Routing speed: how long `route()` takes per prompt, against reading the prompt once with one regex.

Run: python bench/routing.py  (prints a table; no assertions). The target is "well under a millisecond".
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.catalog import load_catalog  # noqa: E402
from router.intent import classify  # noqa: E402
from router.route import route  # noqa: E402

EVAL_SET = ROOT.parent / "shared" / "eval" / "routing.jsonl"
FALLBACK = [
    "editorial portrait of a fisherman in his 70s, weathered skin, overcast harbor light, 85mm",
    "a barista wearing a name tag that reads 'JO', centered, plain grey backdrop",
    "watercolor portrait of a violinist in a rainy street, loose brushwork",
    "@mara on a rooftop at night, neon reflections",
]


@dataclass(frozen=True)
class Request:
    prompt: str
    engine: str | None = None
    aspect: str = "2:3"
    steps: int | None = None
    cfg: float | None = None
    fast: bool = False


def per_call_us(
    action: Callable[[str], object], prompts: list[str], rounds: int = 7, repeat: int = 200
) -> float:
    """Median over rounds of the mean time per prompt, in microseconds."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeat):
            for prompt in prompts:
                action(prompt)
        samples.append((time.perf_counter() - started) / (repeat * len(prompts)) * 1e6)
    return statistics.median(samples)


def prompts() -> list[str]:
    if EVAL_SET.is_file():
        return [json.loads(line)["prompt"] for line in EVAL_SET.read_text().splitlines() if line.strip()]
    return FALLBACK


def measure(rounds: int = 7, repeat: int = 200) -> list[tuple[str, float]]:
    """(measurement, median µs per prompt) for the baseline, classify() and route(), in that order."""
    texts = prompts()
    catalog = load_catalog(probe=lambda checkpoint: True, adapter_probe=lambda adapter: True)
    one_regex = re.compile(r"\b(?:portrait|photo|painting)\b")

    def baseline(prompt: str) -> object:
        return one_regex.search(prompt.lower())

    def routed(prompt: str) -> object:
        names = tuple(re.findall(r"@([A-Za-z0-9_-]{1,32})", prompt))
        return route(Request(prompt), catalog, characters=names)

    return [
        ("baseline: lowercase + one regex search", per_call_us(baseline, texts, rounds, repeat)),
        ("classify(prompt)", per_call_us(classify, texts, rounds, repeat)),
        ("route(request, catalog, characters)", per_call_us(routed, texts, rounds, repeat)),
    ]


def main() -> int:
    rows = measure()
    texts = prompts()
    base = rows[0][1]
    mean_chars = statistics.mean(len(p) for p in texts)
    print(f"{len(texts)} prompts (mean {mean_chars:.0f} chars), Python {sys.version.split()[0]}")
    print()
    print("| measurement | median µs per prompt | ratio to baseline | target |")
    print("| --- | ---: | ---: | --- |")
    for name, value in rows:
        target = "< 1000 µs" if name.startswith("route") else "—"
        print(f"| {name} | {value:.1f} | {value / base:.1f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
