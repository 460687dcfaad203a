"""SDXL on a GPU: seconds per image with each fast-path switch on and off, against the FLOP floor.

    python bench/gpu_sdxl.py [--device auto] [--size 1024] [--steps 30] [--repeats 3] [--out gpu.json]
                             [--budget-s SECONDS]
    python bench/gpu_sdxl.py --tiny --device cpu --size 64 --steps 2 --repeats 1   # the CPU smoke run
    python bench/gpu_sdxl.py --table-from gpu.json    # the table of a JSON file, partial ones too

The pipeline has SDXL's real architecture (the configs below are those of stable-diffusion-xl-base-1.0:
a 2.57 B-parameter UNet, CLIP ViT-L and OpenCLIP bigG text encoders, the SDXL VAE) with random weights,
built on the device in its half precision: nothing is downloaded, and the speed is that of the real
model (random weights do the same arithmetic). `--tiny` builds the tiny SDXL of jobs/tiny.py instead.

Measured, at `--size`² with `--steps` Euler steps and classifier-free guidance: text encoding, the
denoising loop and the VAE decode, each timed apart (median of `--repeats`, after a warm-up), at one
image and at four variations in one call, for each configuration of jobs/acceleration.py's switches.
Also: the VAE decode tiled against untiled and sliced against batched, loading the pipeline from
safetensors on local disk (saved once to a scratch folder, so read back from the page cache), and
parking it in host memory and bringing it back (jobs/pipelines.py's residency).

The floor: FLOPs per image ÷ the dense matmul rate this device reaches in its dtype, measured in the
same run. FLOPs are counted with torch.utils.flop_counter on the meta device, at the full size: one UNet
forward at batch 2 (guidance), times the steps, plus both text encoders and one VAE decode. On meta the
attention is counted as its two matmuls (as a fused kernel computes them). Nothing here asserts on time:
the script prints a markdown table and writes everything to `--out` as JSON.

`--budget-s` bounds the whole run (a GPU lease is short): before each measurement the script estimates
its cost from what it has measured so far and skips what would not fit before the deadline, saying so in
the table; a measurement that overruns stops repeating once it has one sample. The JSON is written
before and after every measurement (`complete` false until the end, `stage` naming the measurement
under way), so a run that is killed still leaves its figures, and `--table-from` prints their table.
A measurement that fails (a compiler error, memory) is recorded as `failed: …` and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from jobs import acceleration  # noqa: E402
from jobs.acceleration import VaeLimits  # noqa: E402
from jobs.pipelines import Device, quiet_libraries  # noqa: E402
from jobs.tiny import write_clip_tokenizer  # noqa: E402

PROMPT = "editorial portrait of a fisherman in his 70s, weathered skin, overcast harbor light, 85mm"
NEGATIVE = "blurry, lowres"
CFG = 5.0
VARIATIONS = 4


@dataclass(frozen=True)
class Architecture:
    """The configs of an SDXL-architecture pipeline's models (diffusers / transformers keyword arguments)."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]  # CLIPTextModel
    text_2: dict[str, Any]  # CLIPTextModelWithProjection


# stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder/, text_encoder_2/ config.json.
SDXL = Architecture(
    name="sdxl",
    unet={
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "norm_num_groups": 32,
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    },
    vae={
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 1024,
        "scaling_factor": 0.13025,
        "force_upcast": True,
    },
    text={
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": 768,
    },
    text_2={
        "vocab_size": 49408,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "projection_dim": 1280,
    },
)

# The tiny SDXL of jobs/tiny.py: the same classes and layout, about a thousandth of the weights.
TINY = Architecture(
    name="tiny-sdxl",
    unet={
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "norm_num_groups": 8,
        "attention_head_dim": (2, 4),
        "transformer_layers_per_block": (1, 2),
        "use_linear_projection": True,
        "cross_attention_dim": 64,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,
    },
    vae={
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (8, 8, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "latent_channels": 4,
        "sample_size": 256,
        "scaling_factor": 0.13025,
    },
    text={
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 5,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": 32,
    },
    text_2={
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 5,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "projection_dim": 32,
    },
)


def say(message: str) -> None:
    print(f"[gpu_sdxl] {message}", file=sys.stderr, flush=True)


# --- building ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def building_on(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Modules made inside are created on `device` in `dtype` (no copy from host memory)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_unet(arch: Architecture, device: str = "meta", dtype: torch.dtype = torch.float32) -> Any:
    from diffusers import UNet2DConditionModel

    with building_on(device, dtype):
        return UNet2DConditionModel(**arch.unet).eval()


def build_pipeline(arch: Architecture, device: str, dtype: torch.dtype, scratch: Path, seed: int = 0) -> Any:
    """An SDXL pipeline of `arch` with random weights, made on `device` in `dtype`."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    write_clip_tokenizer(scratch / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(scratch / "tokenizer"))
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    with building_on(device, dtype):
        text = CLIPTextModel(CLIPTextConfig(**{"vocab_size": len(tokenizer), **arch.text, **ids})).eval()
        text_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**{"vocab_size": len(tokenizer), **arch.text_2, **ids})
        ).eval()
        vae = AutoencoderKL(**arch.vae).eval()
    unet = build_unet(arch, device, dtype)
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text,
        text_encoder_2=text_2,
        tokenizer=tokenizer,
        tokenizer_2=CLIPTokenizer.from_pretrained(str(scratch / "tokenizer")),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device=device, dtype=dtype)


def parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# --- counting ------------------------------------------------------------------------------------------


def count_flops(arch: Architecture, size: int) -> dict[str, int]:
    """FLOPs of one guided UNet forward (batch 2), the two text encoders (batch 2) and one VAE decode, at
    `size`², counted on the meta device: no memory, no time, exact shapes."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    latent = size // 8
    unet = build_unet(arch, "meta")
    embed = int(arch.unet["cross_attention_dim"])
    pooled = int(arch.text_2["projection_dim"])
    with torch.device("meta"):
        text = CLIPTextModel(CLIPTextConfig(**arch.text))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**arch.text_2))
        vae = AutoencoderKL(**arch.vae)
        tokens = torch.zeros(2, 77, dtype=torch.long)
        sample = torch.zeros(2, 4, latent, latent)
        conditions = {
            "timestep": torch.zeros(2),
            "encoder_hidden_states": torch.zeros(2, 77, embed),
            "added_cond_kwargs": {"text_embeds": torch.zeros(2, pooled), "time_ids": torch.zeros(2, 6)},
        }
        counts = {}
        with FlopCounterMode(display=False) as counter:
            unet(sample, **conditions)
        counts["unet_forward"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            text(tokens)
            text_2(tokens)
        counts["text_encoders"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            vae.decode(torch.zeros(1, 4, latent, latent))
        counts["vae_decode"] = counter.get_total_flops()
    return counts


def matmul_rate(device: str, dtype: torch.dtype) -> float:
    """Dense matmul FLOP/s this device reaches in `dtype`: the best of a few square products."""
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(12 if device == "cuda" else 4):
        sync(device)
        started = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - started) / 4)
    return 2 * n**3 / best


# --- timing --------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, action: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    out = action()
    sync(device)
    return time.perf_counter() - started, out


@dataclass
class Phases:
    text_s: list[float] = field(default_factory=list)
    unet_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)

    def medians(self) -> dict[str, float]:
        text, unet, decode = (statistics.median(v) for v in (self.text_s, self.unet_s, self.decode_s))
        return {"text_s": text, "unet_s": unet, "decode_s": decode, "total_s": text + unet + decode}


def generate_once(pipeline: Any, device: str, size: int, steps: int, images: int, phases: Phases) -> None:
    """One guided generation of `images` variations, its three phases timed apart."""
    with torch.inference_mode():
        took, embeds = timed(
            device,
            lambda: pipeline.encode_prompt(
                PROMPT,
                device=torch.device(device),
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=NEGATIVE,
            ),
        )
        phases.text_s.append(took)
        positive, negative, pooled, negative_pooled = embeds
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in range(images)]
        took, latents = timed(
            device,
            lambda: (
                pipeline(
                    prompt_embeds=positive,
                    negative_prompt_embeds=negative,
                    pooled_prompt_embeds=pooled,
                    negative_pooled_prompt_embeds=negative_pooled,
                    num_inference_steps=steps,
                    guidance_scale=CFG,
                    width=size,
                    height=size,
                    num_images_per_prompt=images,
                    generator=generators,
                    output_type="latent",
                ).images
            ),
        )
        phases.unet_s.append(took)
        acceleration.fit_vae(pipeline, size, size, images)
        scale = pipeline.vae.config.scaling_factor
        took, _ = timed(device, lambda: pipeline.vae.decode(latents / scale, return_dict=False)[0])
        phases.decode_s.append(took)


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


@dataclass(frozen=True)
class Config:
    name: str
    apply: Callable[[Any], list[acceleration.Step]]
    # When time is short, lower first: what the worker runs (all on) against the baseline, then what
    # explains the difference, then what SDPA saves.
    priority: int
    cuda_only: bool = False
    compiles: bool = False  # its first calls compile: the budget keeps time for that


def _classic_attention(pipeline: Any) -> list[acceleration.Step]:
    from diffusers.models.attention_processor import AttnProcessor

    pipeline.unet.set_attn_processor(AttnProcessor())
    pipeline.vae.set_attn_processor(AttnProcessor())
    return [acceleration.Step("sdpa", False, "classic attention processor")]


def configurations() -> list[Config]:
    """Applied in this order, each from the state the previous left: compile cannot be undone, so last."""
    return [
        Config("baseline: SDPA, nothing else", lambda p: [acceleration.ensure_sdpa(p)], 0),
        Config("SDPA off (classic attention)", _classic_attention, 6),
        Config(
            "channels_last",
            lambda p: [acceleration.ensure_sdpa(p), acceleration.use_channels_last(p)],
            4,
        ),
        Config(
            "fused QKV",
            lambda p: [acceleration.use_channels_last(p, on=False), acceleration.fuse_qkv(p)],
            4,
        ),
        Config("channels_last + fused QKV", lambda p: [acceleration.use_channels_last(p)], 2),
        Config(
            "all on: + torch.compile (regional)",
            lambda p: [acceleration.compile_denoiser(p)],
            1,
            cuda_only=True,
            compiles=True,
        ),
    ]


# --- the time budget and the partial results ------------------------------------------------------------

# What the budget reckons for compiling (inductor, on CUDA) at the compiled configuration's first call,
# and for compiling again (shape-generic) at its second batch size until the first has been measured.
COMPILE_ALLOWANCE_S = 90.0
RECOMPILE_ALLOWANCE_S = 60.0
# What saving, loading, parking and restoring the weights are reckoned to cost per GB.
LOAD_S_PER_GB = 4.0
LOAD_PRIORITY = 3  # the priorities of the load figures and the VAE alone among the configurations'
VAE_PRIORITY = 5

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Budget:
    """A deadline for the whole run (`seconds` None: none); work that would not fit before it is skipped."""

    seconds: float | None = None
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.perf_counter() - self.started)

    def over(self) -> bool:
        return self.left() <= 0

    def refuses(self, needs_s: float, kept_s: float = 0.0) -> str | None:
        """Why work reckoned at `needs_s` seconds does not fit, when `kept_s` more are kept for work
        that matters more and comes later; None when it fits."""
        left = self.left()
        if left > 0 and needs_s + kept_s <= left:
            return None
        kept = f" (+{kept_s:.0f} s kept for what matters more)" if kept_s else ""
        return f"over the time budget: needs ~{needs_s:.0f} s{kept}, {max(left, 0.0):.0f} s left"


@dataclass(frozen=True)
class Task:
    """One step of a run. `priority` None: always done (applying a configuration); else done only if it
    fits the budget together with the later tasks of lower priority numbers (what matters more)."""

    name: str
    priority: int | None
    estimate: Callable[[], float]
    action: Callable[[], None]
    skip: Callable[[str], None]

    def run(self, budget: Budget, later: list[Task]) -> None:
        if self.priority is None:
            self.action()
            return
        kept = sum(t.estimate() for t in later if t.priority is not None and t.priority < self.priority)
        refused = budget.refuses(self.estimate(), kept)
        if refused:
            say(f"{self.name}: skipped, {refused}")
            self.skip(refused)
            return
        self.action()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` through a rename, so a reader (or a kill) never finds half a file."""
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(scratch, path)


def read_json(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """A results file for `--table-from`; what is wrong with it ends the command with a usage error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        parser.error(f"--table-from {path}: cannot read it ({exc.strerror or exc})")
    except json.JSONDecodeError as exc:
        parser.error(f"--table-from {path}: not JSON ({exc}); give the file --out wrote")
    if not isinstance(data, dict):
        parser.error(f"--table-from {path}: not a results file; give the file --out wrote")
    return data


def failed(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"failed: {type(exc).__name__}: {first[:200]}".rstrip(": ")


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Run:
    """One run: the result as it grows (written out after every change), the budget, and the durations
    measured so far, from which the next measurement's cost is reckoned."""

    pipeline: Any
    device: str
    size: int
    steps: int
    repeats: int
    floor_s: float
    budget: Budget
    result: dict[str, Any]
    progress: Progress
    baseline: dict[int, float] = field(default_factory=dict)  # s per image, by images per call
    call_s: dict[int, float] = field(default_factory=dict)  # the last measured call, by images per call
    decode_s: float | None = None  # the last measured decode of one image
    compile_warm_up_s: float | None = None
    failed_configs: set[str] = field(default_factory=set)  # failed at 1 image: not tried again at 4

    def stage(self, what: str) -> None:
        self.result["stage"] = what
        self.progress(self.result)

    def add_row(self, row: dict[str, Any]) -> None:
        self.result["configs"].append(row)
        self.progress(self.result)

    def estimate(self, config: Config, images: int) -> float:
        """Seconds a measurement of `config` at `images` per call should take: its repeats and its warm-up
        (2 steps) at the last measured call's duration, plus compiling where it compiles."""
        call = self.call_s.get(images)
        if call is None and 1 in self.call_s:
            call = images * self.call_s[1]
        seconds = (self.repeats + 0.5) * (call or 0.0)
        if config.compiles and images == 1:
            seconds += COMPILE_ALLOWANCE_S
        elif config.compiles:
            seconds += RECOMPILE_ALLOWANCE_S if self.compile_warm_up_s is None else self.compile_warm_up_s
        return seconds

    def config_tasks(self, config: Config) -> list[Task]:
        """Apply `config` (always, since later configurations build on it), then measure it at 1 image
        and at VARIATIONS per call (when they fit)."""
        if config.cuda_only and self.device != "cuda":
            row = {"config": config.name, "skipped": "compiling is for CUDA (slow on a CPU)"}
            return [Task(config.name, None, lambda: 0.0, functools.partial(self.add_row, row), _ignore)]
        applied: list[tuple[float, list[acceleration.Step]]] = []

        def apply() -> None:
            say(f"{config.name}: applying")
            try:
                applied.append(timed(self.device, functools.partial(config.apply, self.pipeline)))
            except Exception as exc:  # recorded; the next configurations still run
                self.add_row({"config": config.name, "skipped": failed(exc)})
                say(f"{config.name}: {failed(exc)}")

        tasks = [Task(f"{config.name}: applying", None, lambda: 0.0, apply, _ignore)]
        for images in (1, VARIATIONS):

            def act(images: int = images) -> None:
                if not applied:  # applying failed: its row says so
                    return
                if config.name in self.failed_configs:
                    why = "not tried: it failed at 1 image"
                    self.add_row({"config": config.name, "images": images, "skipped": why})
                    return
                self.add_row(measure_config(self, config, images, *applied[0]))

            def skip(why: str, images: int = images) -> None:
                self.add_row({"config": config.name, "images": images, "skipped": why})

            tasks.append(
                Task(
                    f"{config.name}, {images} image(s)",
                    config.priority,
                    functools.partial(self.estimate, config, images),
                    act,
                    skip,
                )
            )
        return tasks


def _ignore(_why: str) -> None:
    """Tasks that always run are never skipped."""


def measure_config(
    run: Run, config: Config, images: int, apply_s: float, steps_done: list[acceleration.Step]
) -> dict[str, Any]:
    run.stage(f"{config.name}, {images} image(s)")
    phases = Phases()
    try:
        # The warm-up pays for kernel selection and, with compile, for compiling this shape.
        started = time.perf_counter()
        generate_once(run.pipeline, run.device, run.size, 2, images, Phases())
        warm_s = time.perf_counter() - started
        reset_peak(run.device)
        for done in range(run.repeats):
            if done and run.budget.over():  # overran its estimate: keep what it has
                break
            generate_once(run.pipeline, run.device, run.size, run.steps, images, phases)
    except Exception as exc:  # a compiler error, memory: recorded, and the run goes on
        run.failed_configs.add(config.name)
        free_memory(run.device)
        say(f"{config.name}, {images} image(s): {failed(exc)}")
        return {"config": config.name, "images": images, "skipped": failed(exc)}
    figures = phases.medians()
    per_image = figures["total_s"] / images
    run.call_s[images] = figures["total_s"]
    if images == 1:
        run.decode_s = figures["decode_s"]
        if config.compiles:
            run.compile_warm_up_s = warm_s
    if config.name.startswith("baseline"):
        run.baseline[images] = per_image
    say(f"{config.name}, {images} image(s): {per_image:.3f} s per image")
    return {
        "config": config.name,
        "images": images,
        **figures,
        "per_image_s": per_image,
        "vs_baseline": per_image / run.baseline[images] if images in run.baseline else None,
        "vs_floor": per_image / run.floor_s,
        "peak_gb": peak_gb(run.device),
        "apply_s": apply_s,
        "warm_up_s": warm_s,
        "repeats": len(phases.text_s),
        "compiled": config.compiles,
        "steps": [f"{s.name} {'on' if s.on else 'off'}: {s.detail}" for s in steps_done],
    }


def _tiled_side(vae: Any, size: int) -> int:
    """A side at which the VAE decodes in tiles: twice the image, and at least 1.5 tiles."""
    return max(2 * size, (int(vae.tile_sample_min_size) * 3 // 2) // 64 * 64)


def vae_estimate(run: Run) -> float:
    """Seconds for `vae_figures`: each of its four decodes warmed up and repeated, reckoned from the last
    measured decode of one image, scaled by pixels."""
    if run.decode_s is None:
        return 0.0
    tiled = (_tiled_side(run.pipeline.vae, run.size) / run.size) ** 2
    return 2 * (run.repeats + 1) * (tiled + VARIATIONS) * run.decode_s


def vae_figures(pipeline: Any, device: str, size: int, repeats: int) -> list[dict[str, Any]]:
    """Decode alone: tiled vs untiled at a size that tiles, sliced vs batched for four variations."""
    vae = pipeline.vae
    scale = vae.config.scaling_factor
    large = _tiled_side(vae, size)
    dtype = vae.dtype

    def decode(side: int, images: int, limits: VaeLimits) -> tuple[float, float | None]:
        latents = torch.randn(images, 4, side // 8, side // 8, device=device, dtype=dtype)
        acceleration.set_vae_limits(pipeline, limits)
        acceleration.fit_vae(pipeline, side, side, images)
        with torch.inference_mode():
            timed(device, lambda: vae.decode(latents / scale, return_dict=False)[0])  # warm-up
            reset_peak(device)
            times = [
                timed(device, lambda: vae.decode(latents / scale, return_dict=False)[0])[0]
                for _ in range(repeats)
            ]
        return statistics.median(times), peak_gb(device)

    rows = []
    plain = VaeLimits(0, 0)
    for name, side, images, on, off in (
        (f"decode 1 × {large}² tiled vs untiled", large, 1, VaeLimits(1, 0), plain),
        (f"decode {VARIATIONS} × {size}² sliced vs batched", size, VARIATIONS, VaeLimits(0, 1), plain),
    ):
        with_s, with_gb = decode(side, images, on)
        without_s, without_gb = decode(side, images, off)
        rows.append(
            {
                "measurement": name,
                "on_s": with_s,
                "off_s": without_s,
                "ratio": with_s / without_s,
                "on_peak_gb": with_gb,
                "off_peak_gb": without_gb,
            }
        )
    acceleration.set_vae_limits(pipeline, VaeLimits(0, 0))
    return rows


def load_figures(pipeline: Any, device: str, dtype: torch.dtype, scratch: Path) -> dict[str, float]:
    """Save once as safetensors, then time what a worker does: load to the device, park, bring back."""
    from diffusers import DiffusionPipeline

    from jobs.pipelines import Resident, _move

    folder = scratch / "pipeline"
    say(f"saving the pipeline to {folder}")
    save_s, _ = timed(device, lambda: pipeline.save_pretrained(str(folder), safe_serialization=True))
    size_gb = sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 2**30
    say("loading it back")
    load_s, loaded = timed(
        device,
        lambda: DiffusionPipeline.from_pretrained(str(folder), dtype=dtype, local_files_only=True).to(device),
    )
    entry = Resident(loaded, 0.0)
    park_s, _ = timed(device, lambda: _move(entry, "cpu"))
    restore_s, _ = timed(device, lambda: _move(entry, device))
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "weights_gb": size_gb,
        "save_s": save_s,
        "load_s": load_s,
        "park_s": park_s,
        "restore_s": restore_s,
    }


def weights_gb(pipeline: Any) -> float:
    models = (getattr(pipeline, name) for name in ("unet", "text_encoder", "text_encoder_2", "vae"))
    return float(sum(p.numel() * p.element_size() for model in models for p in model.parameters())) / 2**30


# --- the whole run -------------------------------------------------------------------------------------


def machine(device: str) -> str:
    import diffusers

    if device == "cuda":
        where = f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
    else:
        where = platform.processor() or platform.machine()
    versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}"
    return f"{where}; {versions}, Python {platform.python_version()}"


def measure(
    *,
    device: str = "auto",
    size: int = 1024,
    steps: int = 30,
    repeats: int = 3,
    tiny: bool = False,
    load: bool = True,
    budget_s: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Everything the script reports, as one JSON-ready dict; `progress` gets it after every change.

    In order: the load figures (on the fresh pipeline), the eager configurations, the VAE alone, and
    compiling last. With `budget_s`, a measurement runs only if it fits together with the later ones
    that matter more (`Config.priority`, `LOAD_PRIORITY`, `VAE_PRIORITY`), each reckoned from what was
    measured so far; the others are skipped, and their rows say so.
    """
    if size % 64:
        raise ValueError(f"--size must be a multiple of 64, not {size}")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, not {repeats}")
    budget = Budget(budget_s)
    report = progress or (lambda _result: None)
    picked = Device.pick(device)
    arch = TINY if tiny else SDXL
    result: dict[str, Any] = {
        "machine": machine(picked.name),
        "device": picked.name,
        "dtype": str(picked.dtype).removeprefix("torch."),
        "architecture": arch.name,
        "size": size,
        "steps": steps,
        "repeats": repeats,
        "cfg": CFG,
        "budget_s": budget_s,
        "complete": False,
        "stage": "counting FLOPs",
        "parameters": {},
        "configs": [],
        "vae": [],
        "load": {},
        "skipped": {},
    }
    report(result)
    say(f"{arch.name} on {picked.name} in {result['dtype']}, {size}², {steps} steps")
    flops = count_flops(arch, size)
    per_image = steps * flops["unet_forward"] + flops["text_encoders"] + flops["vae_decode"]
    result["flops"] = {**flops, "per_image": per_image, "counted_on": "meta device, full size"}
    result["stage"] = "measuring the matmul rate"
    report(result)
    rate = matmul_rate(picked.name, picked.dtype)
    result["matmul_flops_per_s"] = rate
    result["floor_s_per_image"] = per_image / rate
    say(f"{flop_text(per_image)} per image; matmul {flop_text(rate)}/s")
    result["stage"] = "building the pipeline"
    report(result)
    with tempfile.TemporaryDirectory(prefix="likeness-gpu-bench-") as folder:
        scratch = Path(folder)
        build_s, pipeline = timed(
            picked.name, lambda: build_pipeline(arch, picked.name, picked.dtype, scratch)
        )
        result["build_s"] = build_s
        models = ("unet", "text_encoder", "text_encoder_2", "vae")
        result["parameters"] = {name: parameters(getattr(pipeline, name)) for name in models}
        run = Run(pipeline, picked.name, size, steps, repeats, per_image / rate, budget, result, report)
        tasks: list[Task] = []

        def skipping(what: str) -> Callable[[str], None]:
            def skip(why: str) -> None:
                result["skipped"][what] = why
                report(result)

            return skip

        if load:
            gb = weights_gb(pipeline)

            def load_action() -> None:
                run.stage("saving, loading, parking and restoring the weights")
                try:
                    result["load"] = load_figures(pipeline, picked.name, picked.dtype, scratch)
                except Exception as exc:  # recorded; the configurations still run
                    result["skipped"]["load"] = failed(exc)
                    say(f"load figures: {failed(exc)}")
                free_memory(picked.name)
                report(result)

            tasks.append(
                Task("load figures", LOAD_PRIORITY, lambda: LOAD_S_PER_GB * gb, load_action, skipping("load"))
            )

        def vae_action() -> None:
            run.stage("the VAE alone")
            try:
                result["vae"] = vae_figures(pipeline, picked.name, size, repeats)
            except Exception as exc:  # recorded; compiling still runs
                result["skipped"]["vae"] = failed(exc)
                acceleration.set_vae_limits(pipeline, VaeLimits(0, 0))
                free_memory(picked.name)
                say(f"VAE figures: {failed(exc)}")
            report(result)

        every = configurations()
        for config in every:
            if not config.compiles:
                tasks += run.config_tasks(config)
        tasks.append(
            Task("VAE figures", VAE_PRIORITY, lambda: vae_estimate(run), vae_action, skipping("vae"))
        )
        for config in every:
            if config.compiles:
                tasks += run.config_tasks(config)

        for index, task in enumerate(tasks):
            task.run(budget, tasks[index + 1 :])
    result["complete"] = True
    result["stage"] = "done"
    report(result)
    return result


def flop_text(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops / 1e6:.1f} MFLOP"


def table(result: dict[str, Any]) -> str:
    """The markdown table of a result, also of a partial one (a run killed or stopped early)."""
    floor = result.get("floor_s_per_image")
    repeats = result["repeats"]
    head = (
        f"{result['architecture']} on {result['machine']} ({result['dtype']}), {result['size']}², "
        f"{result['steps']} steps, CFG {result['cfg']:g}, median of {repeats}"
    )
    if result.get("budget_s") is not None:
        head += f", budget {result['budget_s']:.0f} s"
    lines = [head]
    if not result.get("complete", True):
        lines.append(f"INCOMPLETE: the run stopped while {result.get('stage', 'starting')}")
    if floor is not None and result.get("parameters"):
        lines.append(
            f"UNet {result['parameters']['unet'] / 1e9:.3f} B parameters; "
            f"{flop_text(result['flops']['per_image'])} per image; matmul "
            f"{flop_text(result['matmul_flops_per_s'])}/s; floor {floor:.3f} s per image"
        )
    lines += [
        "",
        "| configuration | images | text s | UNet s | decode s | s per image | vs baseline | vs floor "
        "| peak GB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["configs"]:
        if "skipped" in row:
            images = row.get("images", "—")
            why = f"skipped: {row['skipped']}"
            lines.append(f"| {row['config']} | {images} | — | — | — | {why} | — | — | — |")
            continue
        name = row["config"]
        if row.get("repeats", repeats) < repeats:
            name += f" (n={row['repeats']})"
        ratio = f"{row['vs_baseline']:.2f}" if row["vs_baseline"] is not None else "—"
        peak = f"{row['peak_gb']:.1f}" if row["peak_gb"] is not None else "—"
        lines.append(
            f"| {name} | {row['images']} | {row['text_s']:.3f} | {row['unet_s']:.3f} | "
            f"{row['decode_s']:.3f} | {row['per_image_s']:.3f} | {ratio} | {row['vs_floor']:.1f} | {peak} |"
        )
    compiled = [row for row in result["configs"] if row.get("compiled") and "skipped" not in row]
    if compiled:
        firsts = ", ".join(f"{row['warm_up_s']:.1f} s at {row['images']} image(s)" for row in compiled)
        lines += ["", f"torch.compile: the first call of each batch size (compiling it) took {firsts}"]
    skipped = result.get("skipped", {})
    if result["vae"]:
        lines += ["", "| VAE | on s | off s | ratio | peak GB on / off |"]
        lines.append("| --- | ---: | ---: | ---: | --- |")
        for row in result["vae"]:
            peaks = (
                f"{row['on_peak_gb']:.1f} / {row['off_peak_gb']:.1f}"
                if row["on_peak_gb"] is not None
                else "—"
            )
            times = f"{row['on_s']:.3f} | {row['off_s']:.3f} | {row['ratio']:.2f}"
            lines.append(f"| {row['measurement']} | {times} | {peaks} |")
    elif "vae" in skipped:
        lines += ["", f"VAE alone: skipped: {skipped['vae']}"]
    if result["load"]:
        load = result["load"]
        lines += [
            "",
            f"Weights {load['weights_gb']:.2f} GB: load from safetensors to the device "
            f"{load['load_s']:.2f} s; "
            f"park in host memory {load['park_s']:.2f} s, bring back {load['restore_s']:.2f} s "
            f"({load['restore_s'] / load['load_s']:.2f} of a load)",
        ]
    elif "load" in skipped:
        lines += ["", f"Load, park and restore: skipped: {skipped['load']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "mps"))
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the tiny SDXL: the whole path in seconds")
    parser.add_argument("--no-load", action="store_true", help="skip saving and loading the weights")
    parser.add_argument(
        "--budget-s", type=float, help="seconds for the whole run: what would not fit is skipped"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here (after every measurement)")
    parser.add_argument(
        "--table-from", type=Path, help="print the table of this JSON file (a partial one too) and stop"
    )
    args = parser.parse_args(argv)
    if args.table_from is not None:
        print(table(read_json(args.table_from, parser)))
        return 0
    warnings.filterwarnings("ignore")
    quiet_libraries()
    out: Path | None = args.out

    def progress(result: dict[str, Any]) -> None:
        if out is not None:
            write_json(out, result)

    result = measure(
        device=args.device,
        size=args.size,
        steps=args.steps,
        repeats=args.repeats,
        tiny=args.tiny,
        load=not args.no_load,
        budget_s=args.budget_s,
        progress=progress,
    )
    if out is not None:
        say(f"wrote {out}")
    print(table(result), flush=True)  # the last thing printed
    return 0


if __name__ == "__main__":
    sys.exit(main())
