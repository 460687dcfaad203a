"""SDXL on a GPU: seconds per image with each fast-path switch on and off, against the FLOP floor.

    python bench/gpu_sdxl.py [--device auto] [--size 1024] [--steps 30] [--repeats 3] [--out gpu.json]
    python bench/gpu_sdxl.py --tiny --device cpu --size 64 --steps 2 --repeats 1   # the CPU smoke run

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
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from jobs.pipelines import Device  # noqa: E402
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
    cuda_only: bool = False


def _classic_attention(pipeline: Any) -> list[acceleration.Step]:
    from diffusers.models.attention_processor import AttnProcessor

    pipeline.unet.set_attn_processor(AttnProcessor())
    pipeline.vae.set_attn_processor(AttnProcessor())
    return [acceleration.Step("sdpa", False, "classic attention processor")]


def configurations() -> list[Config]:
    """Applied in this order, each from the state the previous left: compile cannot be undone, so last."""
    return [
        Config("baseline: SDPA, nothing else", lambda p: [acceleration.ensure_sdpa(p)]),
        Config("SDPA off (classic attention)", _classic_attention),
        Config(
            "channels_last",
            lambda p: [acceleration.ensure_sdpa(p), acceleration.use_channels_last(p)],
        ),
        Config(
            "fused QKV",
            lambda p: [acceleration.use_channels_last(p, on=False), acceleration.fuse_qkv(p)],
        ),
        Config("channels_last + fused QKV", lambda p: [acceleration.use_channels_last(p)]),
        Config(
            "all on: + torch.compile (regional)",
            lambda p: [acceleration.compile_denoiser(p)],
            cuda_only=True,
        ),
    ]


def run_configs(
    pipeline: Any, device: str, size: int, steps: int, repeats: int, flops_per_image: float, rate: float
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    baseline: dict[int, float] = {}
    floor_s = flops_per_image / rate
    for config in configurations():
        if config.cuda_only and device != "cuda":
            results.append({"config": config.name, "skipped": "compiling is for CUDA (slow on a CPU)"})
            say(f"{config.name}: skipped on {device}")
            continue
        say(f"{config.name}: applying")
        started = time.perf_counter()
        steps_done = config.apply(pipeline)
        sync(device)
        took = time.perf_counter() - started
        for images in (1, VARIATIONS):
            # The warm-up pays for kernel selection and, with compile, for compiling this shape.
            started = time.perf_counter()
            generate_once(pipeline, device, size, 2, images, Phases())
            warm_s = time.perf_counter() - started
            reset_peak(device)
            phases = Phases()
            for _ in range(repeats):
                generate_once(pipeline, device, size, steps, images, phases)
            figures = phases.medians()
            per_image = figures["total_s"] / images
            if config.name.startswith("baseline"):
                baseline[images] = per_image
            results.append(
                {
                    "config": config.name,
                    "images": images,
                    **figures,
                    "per_image_s": per_image,
                    "vs_baseline": per_image / baseline[images] if images in baseline else None,
                    "vs_floor": per_image / floor_s,
                    "peak_gb": peak_gb(device),
                    "apply_s": took,
                    "warm_up_s": warm_s,
                    "steps": [f"{s.name} {'on' if s.on else 'off'}: {s.detail}" for s in steps_done],
                }
            )
            say(f"{config.name}, {images} image(s): {per_image:.3f} s per image")
    return results


def vae_figures(pipeline: Any, device: str, size: int, repeats: int) -> list[dict[str, Any]]:
    """Decode alone: tiled vs untiled at a size that tiles, sliced vs batched for four variations."""
    vae = pipeline.vae
    scale = vae.config.scaling_factor
    tile = int(vae.tile_sample_min_size)
    large = max(2 * size, (tile * 3 // 2) // 64 * 64)
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
) -> dict[str, Any]:
    """Everything the script reports, as one JSON-ready dict."""
    if size % 64:
        raise ValueError(f"--size must be a multiple of 64, not {size}")
    picked = Device.pick(device)
    arch = TINY if tiny else SDXL
    say(f"{arch.name} on {picked.name} in {str(picked.dtype).removeprefix('torch.')}, {size}², {steps} steps")
    flops = count_flops(arch, size)
    per_image = steps * flops["unet_forward"] + flops["text_encoders"] + flops["vae_decode"]
    rate = matmul_rate(picked.name, picked.dtype)
    say(f"{flop_text(per_image)} per image; matmul {flop_text(rate)}/s")
    with tempfile.TemporaryDirectory(prefix="likeness-gpu-bench-") as folder:
        scratch = Path(folder)
        build_s, pipeline = timed(
            picked.name, lambda: build_pipeline(arch, picked.name, picked.dtype, scratch)
        )
        models = ("unet", "text_encoder", "text_encoder_2", "vae")
        counts = {name: parameters(getattr(pipeline, name)) for name in models}
        loads = load_figures(pipeline, picked.name, picked.dtype, scratch) if load else {}
        configs = run_configs(pipeline, picked.name, size, steps, repeats, per_image, rate)
        vae = vae_figures(pipeline, picked.name, size, repeats)
    return {
        "machine": machine(picked.name),
        "device": picked.name,
        "dtype": str(picked.dtype).removeprefix("torch."),
        "architecture": arch.name,
        "size": size,
        "steps": steps,
        "repeats": repeats,
        "cfg": CFG,
        "parameters": counts,
        "build_s": build_s,
        "flops": {**flops, "per_image": per_image, "counted_on": "meta device, full size"},
        "matmul_flops_per_s": rate,
        "floor_s_per_image": per_image / rate,
        "configs": configs,
        "vae": vae,
        "load": loads,
    }


def flop_text(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops / 1e6:.1f} MFLOP"


def table(result: dict[str, Any]) -> str:
    floor = result["floor_s_per_image"]
    lines = [
        f"{result['architecture']} on {result['machine']} ({result['dtype']}), {result['size']}², "
        f"{result['steps']} steps, CFG {result['cfg']:g}, median of {result['repeats']}",
        f"UNet {result['parameters']['unet'] / 1e9:.3f} B parameters; "
        f"{flop_text(result['flops']['per_image'])} per image; matmul "
        f"{flop_text(result['matmul_flops_per_s'])}/s; floor {floor:.3f} s per image",
        "",
        "| configuration | images | text s | UNet s | decode s | s per image | vs baseline | vs floor "
        "| peak GB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["configs"]:
        if "skipped" in row:
            lines.append(f"| {row['config']} | — | — | — | — | skipped: {row['skipped']} | — | — | — |")
            continue
        ratio = f"{row['vs_baseline']:.2f}" if row["vs_baseline"] is not None else "—"
        peak = f"{row['peak_gb']:.1f}" if row["peak_gb"] is not None else "—"
        lines.append(
            f"| {row['config']} | {row['images']} | {row['text_s']:.3f} | {row['unet_s']:.3f} | "
            f"{row['decode_s']:.3f} | {row['per_image_s']:.3f} | {ratio} | {row['vs_floor']:.1f} | {peak} |"
        )
    lines += ["", "| VAE | on s | off s | ratio | peak GB on / off |", "| --- | ---: | ---: | ---: | --- |"]
    for row in result["vae"]:
        peaks = (
            f"{row['on_peak_gb']:.1f} / {row['off_peak_gb']:.1f}" if row["on_peak_gb"] is not None else "—"
        )
        times = f"{row['on_s']:.3f} | {row['off_s']:.3f} | {row['ratio']:.2f}"
        lines.append(f"| {row['measurement']} | {times} | {peaks} |")
    if result["load"]:
        load = result["load"]
        lines += [
            "",
            f"Weights {load['weights_gb']:.2f} GB: load from safetensors to the device "
            f"{load['load_s']:.2f} s; "
            f"park in host memory {load['park_s']:.2f} s, bring back {load['restore_s']:.2f} s "
            f"({load['restore_s'] / load['load_s']:.2f} of a load)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "mps"))
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the tiny SDXL: the whole path in seconds")
    parser.add_argument("--no-load", action="store_true", help="skip saving and loading the weights")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    result = measure(
        device=args.device,
        size=args.size,
        steps=args.steps,
        repeats=args.repeats,
        tiny=args.tiny,
        load=not args.no_load,
    )
    print(table(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
