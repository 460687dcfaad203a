"""Does the CUDA fast path keep the images? Each switch against the plain pipeline, same dtype, same seeds.

    python bench/gpu_fastpath_check.py [--device auto] [--family sdxl] [--size 256] [--steps 4] [--out F]
    python bench/gpu_fastpath_check.py --device cpu --compile-backend eager   # the CPU run (tested)
    python bench/gpu_fastpath_check.py --table-from fastpath.json             # a run's table again

A tiny pipeline of jobs/tiny.py (built into a temporary models folder, loaded back with from_pretrained
as a worker loads a checkpoint) generates the same guided call, same prompt and seeds, once per case,
each case on a freshly loaded pipeline:

| case | what is switched on (jobs/acceleration.py) |
| --- | --- |
| plain | SDPA attention, nothing else: the reference |
| plain, again | nothing more: the run-to-run noise of the reference itself |
| channels_last | `use_channels_last` |
| fused QKV | `fuse_qkv` |
| compile | `compile_denoiser` with `--compile-backend` (inductor on CUDA; eager, no compiler, elsewhere) |
| worker fast path | `accelerate` with every switch on, as `PipelineCache` applies it on CUDA, warm-ups too |
| parked and restored | that pipeline moved to host memory and back (`jobs.pipelines._move`), as parking |
| identity adapter | the worker fast path with the tiny identity adapter loaded before compiling; then jobs |
| | with one and two faces at several strengths, which must compile nothing more (sdxl only) |

Each case reports the largest absolute difference from the reference, in the latents and in the decoded
image (values in [-1, 1]), and whether everything is finite. In half precision the reference is also run
in float32: how far that moves the output is the rounding noise of the dtype, and a switch passes when it
moves the output by no more than `NOISE_FACTOR` times that (or `RELATIVE_TOLERANCE` of the output's
scale, whichever is larger). A NaN or infinity, an exception, or a larger difference fails the case and
the exit status. The JSON (`--out`) is written after every case, so a run that is killed keeps its cases.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.gpu_sdxl import read_json, write_json  # noqa: E402
from jobs import acceleration  # noqa: E402
from jobs.pipelines import Device, Resident, _move, quiet_libraries  # noqa: E402
from jobs.tiny import TINY_FAMILIES, ensure_tiny_pipeline  # noqa: E402

PROMPT = "editorial portrait of a fisherman in his 70s, weathered skin, overcast harbor light, 85mm"
NEGATIVE = "blurry, lowres"
CFG = 5.0
SEEDS = (7, 8)  # two variations in one call, as a request makes them
Limit = tuple[float, ...]  # the largest difference allowed in the latents, and in the image

# A switch may move the output by this many times what computing in the dtype instead of float32 does.
NOISE_FACTOR = 2.0
# ... or by this share of the output's scale (float32: the kernels' own rounding).
RELATIVE_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def say(message: str) -> None:
    print(f"[fastpath] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Output:
    latents: torch.Tensor  # float32, on the CPU
    image: torch.Tensor  # float32, on the CPU, values in [-1, 1]

    def finite(self) -> bool:
        return bool(torch.isfinite(self.latents).all()) and bool(torch.isfinite(self.image).all())

    def scale(self) -> tuple[float, float]:
        """The largest magnitude in the latents and in the image."""
        return float(self.latents.abs().max()), float(self.image.abs().max())

    def differences(self, other: Output) -> tuple[float, float]:
        """The largest absolute difference from `other` in the latents and in the image."""
        latents = float((self.latents - other.latents).abs().max())
        image = float((self.image - other.image).abs().max())
        return latents, image


def load(path: Path, device: Device) -> Any:
    """The saved tiny pipeline on the device, as `PipelineCache` loads a checkpoint."""
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(str(path), dtype=device.dtype, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device.name)


def generate(
    pipeline: Any, device: str, size: int, steps: int, extra: dict[str, Any] | None = None
) -> Output:
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in SEEDS]
    acceleration.fit_vae(pipeline, size, size, len(SEEDS))
    with torch.inference_mode():
        latents = pipeline(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            guidance_scale=CFG,
            width=size,
            height=size,
            num_images_per_prompt=len(SEEDS),
            generator=generators,
            output_type="latent",
            **(extra or {}),
        ).images
        vae = pipeline.vae
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    if device == "cuda":
        torch.cuda.synchronize()
    return Output(latents.float().cpu(), image.float().cpu())


def _steps(steps: list[acceleration.Step]) -> list[str]:
    return [f"{s.name} {'on' if s.on else 'off'}: {s.detail}" for s in steps]


def _worker_fast_path(family: str, backend: str | None) -> Callable[[Any], list[str]]:
    def apply(pipeline: Any) -> list[str]:
        fast = acceleration.FastPath(
            compile=backend is not None,
            compile_options=(("backend", backend),) if backend else (),
        )
        report = acceleration.accelerate(pipeline, family, fast)
        return _steps(report.steps)

    return apply


def cases(family: str, backend: str | None) -> list[tuple[str, Callable[[Any], list[str]]]]:
    """(name, switch): each switch is applied to a freshly loaded pipeline and says what it did."""
    found: list[tuple[str, Callable[[Any], list[str]]]] = [
        ("plain, again", lambda p: _steps([acceleration.ensure_sdpa(p)])),
        ("channels_last", lambda p: _steps([acceleration.use_channels_last(p)])),
        ("fused QKV", lambda p: _steps([acceleration.fuse_qkv(p)])),
    ]
    if backend is not None:
        compile_it = functools.partial(acceleration.compile_denoiser, backend=backend)
        found.append(("compile", lambda p: _steps([compile_it(p)])))
    found.append(("worker fast path", _worker_fast_path(family, backend)))
    return found


def check(
    *,
    device: str = "auto",
    dtype: str = "auto",
    family: str = "sdxl",
    size: int = 256,
    steps: int = 4,
    compile_backend: str = "auto",
    models_dir: Path | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every case; the result (JSON-ready) goes to `progress` after each one."""
    import diffusers

    if family not in TINY_FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(TINY_FAMILIES)}, not {family}")
    if size % 64:
        raise ValueError(f"--size must be a multiple of 64, not {size}")
    picked = Device.pick(device, dtype)
    backend: str | None = compile_backend
    if compile_backend == "auto":
        backend = "inductor" if picked.name == "cuda" else "eager"
    elif compile_backend == "none":
        backend = None
    report = progress or (lambda _result: None)
    where = torch.cuda.get_device_name(0) if picked.name == "cuda" else platform.machine()
    result: dict[str, Any] = {
        "machine": f"{where}; torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"Python {platform.python_version()}",
        "device": picked.name,
        "dtype": str(picked.dtype).removeprefix("torch."),
        "family": family,
        "size": size,
        "steps": steps,
        "images": len(SEEDS),
        "compile_backend": backend,
        "complete": False,
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="likeness-fastpath-") as scratch:
        path = ensure_tiny_pipeline(family, Path(models_dir or scratch))
        what = f"{result['dtype']}, {size}², {steps} steps, {len(SEEDS)} images"
        say(f"tiny {family} on {picked.name} in {what}")
        reference = generate(_plain(load(path, picked)), picked.name, size, steps)
        noise = (0.0, 0.0)
        if picked.dtype != torch.float32:
            full = Device(picked.name, torch.float32)
            noise = reference.differences(generate(_plain(load(path, full)), picked.name, size, steps))
        tolerance = RELATIVE_TOLERANCE.get(picked.dtype, 2e-2)
        limit = tuple(
            max(tolerance * scale, NOISE_FACTOR * moved)
            for scale, moved in zip(reference.scale(), noise, strict=True)
        )
        result.update(
            reference_finite=reference.finite(),
            reference_scale=dict(zip(("latents", "image"), reference.scale(), strict=True)),
            dtype_noise=dict(zip(("latents", "image"), noise, strict=True)),
            limit=dict(zip(("latents", "image"), limit, strict=True)),
        )
        report(result)
        say(f"reference: {_pair(reference.scale())} at most; float32 vs {result['dtype']}: {_pair(noise)}")
        parked: Resident | None = None
        for name, switch in cases(family, backend):
            row, pipeline = _case(name, switch, path, picked, size, steps, reference, limit)
            result["cases"].append(row)
            report(result)
            if name == "worker fast path" and pipeline is not None:
                parked = Resident(pipeline, 0.0)
        if parked is not None:
            result["cases"].append(_parked(parked, picked, size, steps, reference, limit))
            report(result)
        if family == "sdxl":
            models = Path(models_dir or scratch)
            result["cases"].append(_identity(path, models, picked, backend, size, steps, reference, limit))
            report(result)
    result["passed"] = bool(reference.finite()) and all(row["status"] == "ok" for row in result["cases"])
    result["complete"] = True
    report(result)
    return result


def _pair(values: tuple[float, ...]) -> str:
    return f"latents {values[0]:.3g}, image {values[1]:.3g}"


def _plain(pipeline: Any) -> Any:
    acceleration.ensure_sdpa(pipeline)
    return pipeline


def _row(
    name: str, output: Output, reference: Output, limit: Limit, took: float, steps: list[str]
) -> dict[str, Any]:
    latents, image = output.differences(reference)
    finite = output.finite()
    within = latents <= limit[0] and image <= limit[1]
    status = "ok" if finite and within else ("NaN or inf" if not finite else "differs")
    say(f"{name}: {status}, max |Δ| {_pair((latents, image))} (limits {_pair(limit)})")
    return {
        "case": name,
        "status": status,
        "finite": finite,
        "image_max_abs_diff": image,
        "latents_max_abs_diff": latents,
        "seconds": took,
        "steps": steps,
    }


def _case(
    name: str,
    switch: Callable[[Any], list[str]],
    path: Path,
    device: Device,
    size: int,
    steps: int,
    reference: Output,
    limit: Limit,
) -> tuple[dict[str, Any], Any]:
    say(f"{name}: running")
    started = time.perf_counter()
    try:
        pipeline = load(path, device)
        done = switch(pipeline)
        output = generate(pipeline, device.name, size, steps)
    except Exception as exc:  # recorded as this case's failure; the other cases still run
        say(f"{name}: failed: {type(exc).__name__}: {exc}")
        return _failed(name, exc, time.perf_counter() - started), None
    return _row(name, output, reference, limit, time.perf_counter() - started, done), pipeline


def _parked(
    entry: Resident, device: Device, size: int, steps: int, reference: Output, limit: Limit
) -> dict[str, Any]:
    name = "parked and restored"
    started = time.perf_counter()
    try:
        _move(entry, "cpu")
        _move(entry, device.name)
        output = generate(entry.pipeline, device.name, size, steps)
    except Exception as exc:  # recorded as this case's failure
        return _failed(name, exc, time.perf_counter() - started)
    took = time.perf_counter() - started
    return _row(name, output, reference, limit, took, [f"worker fast path, to cpu and back to {device.name}"])


def _identity(
    path: Path,
    models_dir: Path,
    device: Device,
    backend: str | None,
    size: int,
    steps: int,
    reference: Output,
    limit: Limit,
) -> dict[str, Any]:
    """The worker fast path with the tiny identity adapter loaded with the pipeline (as a worker serving
    an identity profile loads it): a job without faces must give the reference's images, and jobs with
    one or two faces at several strengths must compile nothing after the warm-up."""
    from PIL import Image
    from torch._dynamo.utils import counters

    from jobs.identity import (
        attach_ip_adapter,
        ensure_tiny_ip_adapter,
        identity_kwargs,
        no_identity_kwargs,
        tiny_adapter_source,
    )

    name = "identity adapter"
    say(f"{name}: running")
    started = time.perf_counter()
    try:
        source = tiny_adapter_source(ensure_tiny_ip_adapter(models_dir))

        def attach(pipeline: Any) -> acceleration.Step:
            attach_ip_adapter(pipeline, source)
            return acceleration.Step("identity_adapter", True, "tiny")

        fast = acceleration.FastPath(
            compile=backend is not None, compile_options=(("backend", backend),) if backend else ()
        )
        pipeline = load(path, device)
        report = acceleration.accelerate(pipeline, "sdxl", fast, attach=attach)
        output = generate(pipeline, device.name, size, steps, no_identity_kwargs(pipeline, len(SEEDS)))
        gradient = torch.linspace(0, 255, 64).to(torch.uint8).repeat(64, 1)
        face = Image.fromarray(torch.stack([gradient, gradient.T, 255 - gradient], -1).numpy())
        compiled = int(counters["stats"]["unique_graphs"])
        for strength, faces in ((0.7, 1), (0.35, 1), (1.0, 2), (0.0, 1)):
            extra = identity_kwargs(pipeline, [face] * faces, strength, len(SEEDS))
            generate(pipeline, device.name, size, steps, extra)
        recompiles = int(counters["stats"]["unique_graphs"]) - compiled
    except Exception as exc:  # recorded as this case's failure
        say(f"{name}: failed: {type(exc).__name__}: {exc}")
        return _failed(name, exc, time.perf_counter() - started)
    row = _row(name, output, reference, limit, time.perf_counter() - started, _steps(report.steps))
    row["recompiles"] = recompiles
    if recompiles and row["status"] == "ok":
        row["status"] = f"compiled {recompiles} more graph(s) after the warm-up"
    say(f"{name}: {recompiles} graph(s) compiled by the identity jobs after the warm-up")
    return row


def _failed(name: str, exc: BaseException, took: float) -> dict[str, Any]:
    return {
        "case": name,
        "status": f"failed: {type(exc).__name__}: {str(exc)[:300]}",
        "finite": None,
        "image_max_abs_diff": None,
        "latents_max_abs_diff": None,
        "seconds": took,
        "steps": [],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"fast-path check: tiny {result['family']} on {result['machine']} ({result['dtype']}), "
        f"{result['size']}², {result['steps']} steps, {result['images']} images, compile backend "
        f"{result['compile_backend'] or 'none'}",
    ]
    if "limit" in result:
        scale, noise, limit = (
            (result[key]["latents"], result[key]["image"])
            for key in ("reference_scale", "dtype_noise", "limit")
        )
        finite = "finite" if result["reference_finite"] else "NOT FINITE"
        lines.append(
            f"reference ({finite}): {_pair(scale)} at most; float32 instead: {_pair(noise)}; "
            f"limits {_pair(limit)}"
        )
    if not result.get("complete", True):
        lines.append("INCOMPLETE: the run stopped before every case ran")
    lines += [
        "",
        "| case | status | image max abs diff | latents max abs diff | s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in result["cases"]:
        image, latents = row["image_max_abs_diff"], row["latents_max_abs_diff"]
        figures = "— | —" if image is None else f"{image:.3g} | {latents:.3g}"
        lines.append(f"| {row['case']} | {row['status']} | {figures} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "mps"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--family", default="sdxl", choices=TINY_FAMILIES)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--compile-backend",
        default="auto",
        help="torch.compile backend: auto (inductor on CUDA, eager elsewhere), inductor, eager, … or none",
    )
    parser.add_argument("--models-dir", type=Path, help="where the tiny model is built (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (after every case)")
    parser.add_argument(
        "--table-from", type=Path, help="print the table of this JSON file (a partial one too) and stop"
    )
    args = parser.parse_args(argv)
    if args.table_from is not None:
        result = read_json(args.table_from, parser)
        print(table(result))
        return 0 if result.get("passed") else 1
    warnings.filterwarnings("ignore")
    quiet_libraries()
    out: Path | None = args.out

    def progress(result: dict[str, Any]) -> None:
        if out is not None:
            write_json(out, result)

    result = check(
        device=args.device,
        dtype=args.dtype,
        family=args.family,
        size=args.size,
        steps=args.steps,
        compile_backend=args.compile_backend,
        models_dir=args.models_dir,
        progress=progress,
    )
    print(table(result), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
