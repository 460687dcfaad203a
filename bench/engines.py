"""Engine benchmarks: tiled upscaling's memory and time, and animation's time per frame and encoders.

    python bench/engines.py [--quick]

Runs on the CPU with the tiny random-weight engines built on this machine (tiny-upscale: a diffusers
x4 upscaler; tiny-svd: Stable Video Diffusion). Nothing here asserts on time or memory: the script
prints markdown tables and the reader judges.

Upscale. Each measurement runs in a fresh child process, so its peak resident memory (ru_maxrss) is its
own: the child loads the model, warms it up on a 64 px image, notes its peak, then upscales once and
reports the growth of the peak over that warm-up peak. The baseline is the same upscale untiled (one
tile the size of the image), run the same way, for the sizes where that is affordable. "Output" is
the size of the finished RGB image itself, which any upscaler must hold; tiling keeps the rest flat.

Animate. Seconds per frame of the tiny SVD at 64×64 for a few frame counts, and the encode time of the
same frames (the astronaut test image, panned) as H.264 MP4, animated WebP and GIF; the MP4 is the
baseline of the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "editorial portrait of a fisherman"


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine_line() -> str:
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), "
        f"torch {torch.__version__}, diffusers {version('diffusers')}, Pillow {version('pillow')}, "
        f"Python {platform.python_version()}"
    )


# --- one upscale in a child process ----------------------------------------------------------------


def child_upscale(models_dir: Path, side: int, factor: int, tile: int, overlap: int) -> dict[str, float]:
    """Runs in the child: load, warm up, then one upscale of a `side`² image; peak growth and time."""
    import diffusers
    import torch
    from PIL import Image

    from jobs.upscale import UpscaleParams, ensure_tiny_upscaler, upscale

    torch.set_num_threads(1)
    pipeline = diffusers.DiffusionPipeline.from_pretrained(
        str(ensure_tiny_upscaler(models_dir)), local_files_only=True
    )
    pipeline.set_progress_bar_config(disable=True)

    def params(tile_side: int) -> UpscaleParams:
        return UpscaleParams(
            factor=factor,
            tile=tile_side,
            overlap=overlap,
            steps=2,
            cfg=5.0,
            noise_level=20,
            seed=1,
            prompt=PROMPT,
        )

    upscale(pipeline, "sd-upscale", Image.new("RGB", (64, 64), (90, 120, 150)), params(64))
    before = peak_mb()
    image = Image.radial_gradient("L").resize((side, side)).convert("RGB")
    started = time.perf_counter()
    out = upscale(pipeline, "sd-upscale", image, params(tile))
    took = time.perf_counter() - started
    assert out.size == (side * factor, side * factor)
    return {
        "seconds": took,
        "peak_growth_mb": peak_mb() - before,
        "output_mb": side * side * factor * factor * 3 / 2**20,
    }


def run_child(models_dir: Path, side: int, factor: int, tile: int, overlap: int) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from bench.engines import child_upscale; "
        "from pathlib import Path; "
        "print(json.dumps(child_upscale(Path(sys.argv[2]), *map(int, sys.argv[3:]))))"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(ROOT),
            str(models_dir),
            str(side),
            str(factor),
            str(tile),
            str(overlap),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"upscale child failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


TILE, OVERLAP = 64, 16


def upscale_rows(
    models_dir: Path, sides: list[int], untiled_up_to: int, factors: tuple[int, ...] = (2, 4)
) -> list[dict[str, Any]]:
    """Per (factor, input side): the tiled upscale's time and peak growth, and the untiled one's where
    `side <= untiled_up_to` (None otherwise)."""
    rows = []
    for factor in factors:
        for side in sides:
            say(f"upscale {side}² ×{factor}")
            tiled = run_child(models_dir, side, factor, TILE, OVERLAP)
            untiled = run_child(models_dir, side, factor, side, 0) if side <= untiled_up_to else None
            rows.append({"side": side, "factor": factor, "tiled": tiled, "untiled": untiled})
    return rows


def upscale_table(models_dir: Path, sides: list[int], untiled_up_to: int) -> str:
    lines = [
        "| input | factor | output | tiled s | tiled peak growth MB | output image MB | untiled s "
        "| untiled peak growth MB | peak ratio (tiled / untiled) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in upscale_rows(models_dir, sides, untiled_up_to):
        side, factor, tiled, untiled = row["side"], row["factor"], row["tiled"], row["untiled"]
        cells = [
            f"{side}²",
            f"{factor}×",
            f"{side * factor}²",
            f"{tiled['seconds']:.2f}",
            f"{tiled['peak_growth_mb']:.0f}",
            f"{tiled['output_mb']:.0f}",
            f"{untiled['seconds']:.2f}" if untiled else "—",
            f"{untiled['peak_growth_mb']:.0f}" if untiled else "—",
            f"{tiled['peak_growth_mb'] / max(untiled['peak_growth_mb'], 1):.2f}" if untiled else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- animation ----------------------------------------------------------------------------------------


def animate_table(models_dir: Path, frame_counts: list[int], rounds: int) -> tuple[str, str]:
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    from jobs.animate import MotionParams, animate, ensure_tiny_svd
    from jobs.video import encode_mp4, encode_preview

    torch.set_num_threads(1)
    pipeline = diffusers.DiffusionPipeline.from_pretrained(
        str(ensure_tiny_svd(models_dir)), local_files_only=True
    )
    pipeline.set_progress_bar_config(disable=True)
    source = Image.fromarray(data.astronaut()).resize((64, 64))
    rows = ["| frames | steps | seconds | seconds per frame |", "|---|---|---|---|"]
    for frames in frame_counts:
        params = MotionParams(
            width=64, height=64, frames=frames, fps=8, motion=127, noise_aug=0.02, steps=3,
            min_cfg=1.0, max_cfg=3.0, decode_chunk=4, seed=1,
        )  # fmt: skip
        animate(pipeline, source, params, lambda step, total: None)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            animate(pipeline, source, params, lambda step, total: None)
            times.append(time.perf_counter() - started)
        took = statistics.median(times)
        rows.append(f"| {frames} | 3 | {took:.2f} | {took / frames:.3f} |")
        say(f"animate {frames} frames: {took:.2f}s")

    astronaut = np.asarray(Image.fromarray(data.astronaut()).resize((512, 512)))
    panned = [Image.fromarray(np.roll(astronaut, 8 * i, axis=1)) for i in range(25)]
    encoders: dict[str, Any] = {
        "H.264 MP4 (CRF 18)": lambda: encode_mp4(panned, 8),
        "animated WebP": lambda: encode_preview(panned, 8)[0],
    }
    import jobs.video as video

    def gif() -> bytes:
        original = video.can_write_animated_webp
        video.can_write_animated_webp = lambda: False  # type: ignore[assignment]
        try:
            return encode_preview(panned, 8)[0]
        finally:
            video.can_write_animated_webp = original  # type: ignore[assignment]

    encoders["GIF"] = gif
    timings: dict[str, list[float]] = {name: [] for name in encoders}
    sizes: dict[str, int] = {}
    for _ in range(rounds):  # interleaved, so drift hits every encoder alike
        for name, encode in encoders.items():
            started = time.perf_counter()
            sizes[name] = len(encode())
            timings[name].append(time.perf_counter() - started)
    baseline = statistics.median(timings["H.264 MP4 (CRF 18)"])
    enc = ["| format (25 frames of 512×512) | seconds | KiB | time vs MP4 |", "|---|---|---|---|"]
    for name, values in timings.items():
        took = statistics.median(values)
        enc.append(f"| {name} | {took:.2f} | {sizes[name] / 1024:.0f} | {took / baseline:.1f}× |")
    return "\n".join(rows), "\n".join(enc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and rounds (a smoke run)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="likeness-bench-") as scratch:
        models_dir = Path(scratch) / "models"
        sides = [128, 256] if args.quick else [128, 256, 512, 1024]
        up = upscale_table(models_dir, sides, untiled_up_to=256 if args.quick else 512)
        frames, encoders = animate_table(
            models_dir, [4] if args.quick else [4, 8, 16, 25], 1 if args.quick else 3
        )
    print(f"Machine: {machine_line()}\n")
    print("### Tiled upscale (tiny-upscale, tile 64, overlap 16, 2 steps)\n")
    print(up + "\n")
    print("### Animate (tiny-svd, 64×64)\n")
    print(frames + "\n")
    print(encoders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
