"""Every benchmark in one run: one table, each figure beside its baseline or limit, and one JSON file.

    bench/run [--quick] [--out bench-results.json] [--skip SECTION ...]
    python -m bench.run [--quick] ...

Sections (each reuses its own script's code; docs/benchmarks.md explains every figure):

- chat: acknowledgement latency of the Discord and Slack adapters (bench/discord_ack.py,
  bench/slack_ack.py) and, where it is present, Discord under load (bench/discord_load.py);
- queue: what the queue and the worker add to a bare pipeline call, batching, residency, and the queue's
  throughput and latency against raw arq (bench/foundation.py; needs a redis-server binary);
- residency: loads per N alternating jobs with and without parking in host memory (jobs/pipelines.py);
- routing: the routing decision's time per prompt (bench/routing.py);
- fleet: the placement policy against FIFO in the fleet simulation (bench/fleet_sim.py);
- upscale: tiled upscaling's peak memory against untiled, by output size (bench/engines.py);
- gpu: SDXL on CUDA with each fast-path switch, against the FLOP floor (bench/gpu_sdxl.py); skipped
  without CUDA.

`--quick` runs fewer rounds and sizes: a few minutes on a 2-core CPU. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.latency import percentile  # noqa: E402

SECTIONS = ("chat", "queue", "residency", "routing", "fleet", "upscale", "gpu")
CONCURRENT_COMMANDS = 50
ACK_LIMIT_MS = 3000.0  # Discord drops an interaction, Slack a command, not acknowledged within 3 s


@dataclass(frozen=True)
class Figure:
    """One line of the table: a measurement, its baseline or limit, and the ratio between them."""

    section: str
    measurement: str
    value: str
    baseline: str
    ratio: str
    target: str = "—"
    numbers: dict[str, Any] = field(default_factory=dict)  # the raw values, for the JSON


def say(message: str) -> None:
    print(f"[bench/run] {message}", file=sys.stderr, flush=True)


def skipped(section: str, why: str) -> list[Figure]:
    return [Figure(section, f"skipped: {why}", "—", "—", "—")]


def ratio_text(value: float, base: float, digits: int = 2) -> str:
    return f"{value / base:.{digits}f}" if base else "—"


# --- chat ----------------------------------------------------------------------------------------------


def chat(quick: bool) -> list[Figure]:
    from bench import discord_ack, slack_ack

    rounds = 1 if quick else 3
    figures: list[Figure] = []
    for adapter, measure in (("Discord", discord_ack.measure), ("Slack", slack_ack.measure)):
        latencies = asyncio.run(measure(rounds, CONCURRENT_COMMANDS))
        figures += ack_figures(adapter, rounds, latencies["no-op (floor)"], latencies["/portrait"])
    return figures + chat_load(quick)


def ack_figures(adapter: str, rounds: int, floor: list[float], portrait: list[float]) -> list[Figure]:
    """p50 and p99 of /portrait's acknowledgement against the adapter's no-op floor, and p99 against the
    platform's 3 s limit (Discord's and Slack's are the same)."""
    numbers = {
        "p50_ms": statistics.median(portrait),
        "p99_ms": percentile(portrait, 0.99),
        "floor_p50_ms": statistics.median(floor),
        "floor_p99_ms": percentile(floor, 0.99),
    }
    source = f"{adapter.lower()}_ack"
    at_once = f"{len(portrait) // rounds} at once × {rounds}"
    figures = [
        Figure(
            "chat",
            f"{adapter} /portrait acknowledgement {q}, {at_once} ({source})",
            f"{numbers[f'{q}_ms']:.1f} ms",
            f"{numbers[f'floor_{q}_ms']:.1f} ms (no-op floor)",
            ratio_text(numbers[f"{q}_ms"], numbers[f"floor_{q}_ms"]),
            "< 100 ms" if q == "p99" else "—",
            numbers if q == "p99" else {},
        )
        for q in ("p50", "p99")
    ]
    figures.append(
        Figure(
            "chat",
            f"{adapter}: the same p99 against the platform's limit",
            f"{numbers['p99_ms']:.1f} ms",
            f"{ACK_LIMIT_MS:.0f} ms (limit)",
            ratio_text(numbers["p99_ms"], ACK_LIMIT_MS, 3),
            "≪ 1",
        )
    )
    return figures


def chat_load(quick: bool) -> list[Figure]:
    """Discord under load (bench/discord_load.py), where that script is present."""
    if importlib.util.find_spec("bench.discord_load") is None:
        return skipped("chat", "bench/discord_load.py is not present")
    try:
        from bench import discord_load
        from router.catalog import load_catalog

        members = 20 if quick else 50
        catalog = load_catalog(probe=lambda checkpoint: checkpoint.startswith("tiny:"))
        with tempfile.TemporaryDirectory() as folder:
            report = asyncio.run(discord_load.run_load(Path(folder), catalog, members=members))
    except ImportError as exc:  # its scenario lives in tests/faults/, which may not be there
        return skipped("chat", f"bench/discord_load.py cannot run here ({exc})")
    ack = list(report.ack_ms)
    p99 = percentile(ack, 0.99)
    lost = report.lost + report.duplicates
    return [
        Figure(
            "chat",
            f"/portrait acknowledgement p99 under load, {members} members in bursts "
            f"({len(report.typed)} sent)",
            f"{p99:.0f} ms",
            f"{ACK_LIMIT_MS:.0f} ms (limit)",
            ratio_text(p99, ACK_LIMIT_MS, 3),
            "≪ 1, none late",
            {"p99_ms": p99, "late": report.late + report.unacknowledged, "sent": len(report.typed)},
        ),
        Figure(
            "chat",
            "results lost or delivered twice under load",
            str(lost),
            f"{report.delivered} delivered",
            ratio_text(lost, report.delivered) if report.delivered else "—",
            "0",
            {"lost": report.lost, "duplicates": report.duplicates, "delivered": report.delivered},
        ),
    ]


# --- queue, worker, batching, residency (bench/foundation.py) -----------------------------------------


def queue(quick: bool) -> list[Figure]:
    import shutil

    from bench import foundation

    if shutil.which("redis-server") is None:
        return skipped("queue", "no redis-server binary (apt-get install -y redis-server)")
    plan = foundation.QUICK if quick else foundation.FULL
    with tempfile.TemporaryDirectory(prefix="likeness-bench-") as folder:
        scratch = Path(folder)
        (scratch / "redis").mkdir()
        with foundation.redis_server(scratch / "redis") as server:
            rows = asyncio.run(foundation.run_all(plan, scratch / "data", server.url))
    return [Figure("queue", row.measurement, row.median, row.baseline, row.ratio, row.target) for row in rows]


def residency(quick: bool) -> list[Figure]:
    """N jobs alternating between two tiny profiles on a device budget for one: loads with parking in
    host memory against loads without (the CPU stands in for the GPU; counts are exact, times are not)."""
    import torch

    from jobs.pipelines import Device, PipelineCache

    jobs = 10 if quick else 20
    order = [("tiny:sdxl", "sdxl"), ("tiny:sd15", "sd15")] * (jobs // 2)
    results = {}
    with tempfile.TemporaryDirectory(prefix="likeness-bench-") as folder:
        models = Path(folder)
        for host in (None, "cpu"):
            cache = PipelineCache(
                models,
                Device("cpu", torch.float32),
                0.15,
                host_budget_gb=0.15 if host else 0.0,
                host_device=host,
            )
            ready = [cache.get(checkpoint, family, 0.1)[1] for checkpoint, family in order]
            results[host] = (cache.residency(), ready)
    (plain, plain_s), (parked, parked_s) = results[None], results["cpu"]
    restore_s = parked_s[2:]  # the first two jobs load; the rest bring a parked pipeline back
    return [
        Figure(
            "residency",
            f"loads over {jobs} jobs alternating 2 profiles, device budget for 1, parking in host memory",
            f"{parked.loads} loads + {parked.restores} restores",
            f"{plain.loads} loads (drop, no parking)",
            ratio_text(parked.loads, plain.loads),
            "2 loads",
            {"parked": parked.model_dump(), "dropped": plain.model_dump()},
        ),
        Figure(
            "residency",
            "making a profile ready: restore from host memory vs load from disk (CPU: a no-op move)",
            f"{statistics.median(restore_s):.3f} s",
            f"{statistics.median(plain_s):.3f} s",
            ratio_text(statistics.median(restore_s), statistics.median(plain_s)),
            "≪ 1 on CUDA (bench/gpu_sdxl.py)",
        ),
    ]


# --- routing, fleet ------------------------------------------------------------------------------------


def routing(quick: bool) -> list[Figure]:
    from bench import routing as routing_bench

    rows = routing_bench.measure(rounds=3 if quick else 7, repeat=50 if quick else 200)
    base = rows[0][1]
    return [
        Figure(
            "routing",
            f"{name}, per prompt",
            f"{value:.1f} µs",
            f"{base:.1f} µs (one regex)",
            ratio_text(value, base, 1),
            "< 1000 µs" if name.startswith("route") else "—",
            {"us": value},
        )
        for name, value in rows[1:]
    ]


def fleet(quick: bool) -> list[Figure]:
    from bench import fleet_sim

    seeds = list(range(1, 3 if quick else 6))
    per_seed = fleet_sim.run_policies(seeds)

    def med(policy: str, attr: str) -> float:
        return statistics.median(float(getattr(s, attr)) for s in per_seed[policy])

    where = f"8 workers, 2000 jobs, 80 % load, median of {len(seeds)} seeds"
    return [
        Figure(
            "fleet",
            f"wait p95, placement vs FIFO ({where})",
            f"{med('ours', 'p95'):.1f} s",
            f"{med('fifo', 'p95'):.1f} s (FIFO)",
            ratio_text(med("ours", "p95"), med("fifo", "p95"), 3),
            "≤ 0.50",
        ),
        Figure(
            "fleet",
            "swaps, placement vs FIFO",
            f"{med('ours', 'swaps'):.0f}",
            f"{med('fifo', 'swaps'):.0f} (FIFO)",
            ratio_text(med("ours", "swaps"), med("fifo", "swaps"), 3),
            "—",
        ),
        Figure(
            "fleet",
            f"worst wait of the rarest profile ({fleet_sim.RAREST}), placement vs FIFO",
            f"{med('ours', 'rare_worst'):.1f} s",
            f"{med('fifo', 'rare_worst'):.1f} s (FIFO)",
            ratio_text(med("ours", "rare_worst"), med("fifo", "rare_worst"), 3),
            "bounded",
        ),
        Figure(
            "fleet",
            "wait p95, placement vs every profile resident everywhere (no loads)",
            f"{med('ours', 'p95'):.1f} s",
            f"{med('reference', 'p95'):.1f} s (reference)",
            ratio_text(med("ours", "p95"), med("reference", "p95")),
            "≈ 1",
        ),
    ]


# --- upscale, gpu --------------------------------------------------------------------------------------


def upscale(quick: bool) -> list[Figure]:
    """Tiled upscaling's peak memory growth by output size, against the same upscale untiled where that
    is affordable, else against the output image itself (which any upscaler must hold)."""
    from bench import engines

    sides, factors, untiled_up_to = ([256, 512], (4,), 256) if quick else ([128, 256, 512], (2, 4), 512)
    with tempfile.TemporaryDirectory(prefix="likeness-bench-") as folder:
        rows = engines.upscale_rows(Path(folder) / "models", sides, untiled_up_to, factors)
    figures = []
    for row in rows:
        tiled, untiled = row["tiled"], row["untiled"]
        out = row["side"] * row["factor"]
        if untiled is not None:
            base, against = untiled["peak_growth_mb"], f"{untiled['peak_growth_mb']:.0f} MB (untiled)"
        else:
            base, against = tiled["output_mb"], f"{tiled['output_mb']:.0f} MB (the output image)"
        figures.append(
            Figure(
                "upscale",
                f"peak memory growth, {row['side']}² ×{row['factor']} → {out}², tiled (64 px tiles)",
                f"{tiled['peak_growth_mb']:.0f} MB",
                against,
                ratio_text(tiled["peak_growth_mb"], max(base, 1.0)),
                "flat in output size",
                {"tiled": tiled, "untiled": untiled},
            )
        )
    return figures


def gpu(quick: bool) -> list[Figure]:
    import torch

    if not torch.cuda.is_available():
        return skipped("gpu", "no CUDA device (bench/gpu_sdxl.py --tiny --device cpu runs its CPU path)")
    from bench import gpu_sdxl

    result = gpu_sdxl.measure(steps=10 if quick else 30, repeats=1 if quick else 3, load=not quick)
    floor = result["floor_s_per_image"]
    where = f"SDXL {result['size']}², {result['steps']} steps, {result['dtype']}"
    figures = []
    for row in result["configs"]:
        if "skipped" in row:
            continue
        figures.append(
            Figure(
                "gpu",
                f"{where}: {row['config']}, {row['images']} image(s), s per image",
                f"{row['per_image_s']:.3f} s",
                f"{floor:.3f} s (FLOP floor)",
                f"{row['vs_floor']:.2f}",
                f"vs baseline {row['vs_baseline']:.2f}" if row["vs_baseline"] is not None else "—",
                row,
            )
        )
    for row in result["vae"]:
        figures.append(
            Figure(
                "gpu",
                row["measurement"],
                f"{row['on_s']:.3f} s",
                f"{row['off_s']:.3f} s",
                f"{row['ratio']:.2f}",
            )
        )
    if result["load"]:
        load = result["load"]
        figures.append(
            Figure(
                "gpu",
                "bring a parked pipeline back vs load it from safetensors",
                f"{load['restore_s']:.2f} s",
                f"{load['load_s']:.2f} s (load)",
                ratio_text(load["restore_s"], load["load_s"]),
                "≪ 1",
                load,
            )
        )
    return figures


RUNNERS: dict[str, Callable[[bool], list[Figure]]] = {
    "chat": chat,
    "queue": queue,
    "residency": residency,
    "routing": routing,
    "fleet": fleet,
    "upscale": upscale,
    "gpu": gpu,
}


def table(figures: list[Figure]) -> str:
    lines = [
        "| section | measurement | value | baseline / limit | ratio | target |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for f in figures:
        lines.append(f"| {f.section} | {f.measurement} | {f.value} | {f.baseline} | {f.ratio} | {f.target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and sizes: a few minutes on 2 cores"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="the JSON file")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from bench.foundation import machine_line

    started = time.perf_counter()
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    for section in SECTIONS:
        if section in args.skip:
            continue
        say(f"{section} …")
        begun = time.perf_counter()
        try:
            figures += RUNNERS[section](args.quick)
        except Exception as exc:  # one broken section must not cost the others' figures
            logging.getLogger(__name__).exception("section %s failed", section)
            figures += skipped(section, f"failed: {type(exc).__name__}: {exc}")
        timings[section] = time.perf_counter() - begun
        say(f"{section} done in {timings[section]:.0f} s")
    took = time.perf_counter() - started
    header = f"Machine: {machine_line()}\nMode: {'quick' if args.quick else 'full'}; whole run {took:.0f} s"
    print(header)
    print()
    print(table(figures))
    document = {
        "machine": machine_line(),
        "mode": "quick" if args.quick else "full",
        "seconds": took,
        "section_seconds": timings,
        "figures": [asdict(f) for f in figures],
    }
    with contextlib.suppress(OSError):
        os.makedirs(args.out.parent, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
