"""Upscale: ×2 or ×4 an image in overlapping, feather-blended tiles (jobs/tiling.py), with a diffusion
x4 upscaler, an ESRGAN-class network (jobs/esrgan.py) or plain Lanczos; and the tiny x4 upscaler.

Blocking; runs in a worker thread. torch, diffusers and transformers are imported inside the functions
that need them: importing this module is cheap.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from jobs.esrgan import esrgan_tile_runner
from jobs.tiling import RunTile, check_factor, check_tiling, padded_size, tile_boxes, tiled_upscale
from jobs.tiny import build_once, replace_dir, scratch_dir, write_clip_tokenizer
from router.catalog import UPSCALE_FAMILIES

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class UpscaleParams:
    """How to upscale one image. Sizes are in input pixels."""

    factor: int  # 2 or 4
    tile: int  # input pixels per tile side, a multiple of 8
    overlap: int  # input pixels shared by neighbouring tiles, less than half a tile
    steps: int
    cfg: float
    noise_level: int
    seed: int
    prompt: str = ""
    negative: str = ""


def lanczos_upscale(image: Image.Image, factor: int) -> Image.Image:
    """The no-model fallback: a Pillow Lanczos resize (the caller labels it as such)."""
    check_factor(factor)
    source = image.convert("RGB")
    return source.resize((source.width * factor, source.height * factor), Image.Resampling.LANCZOS)


def diffusion_tile_runner(
    pipeline: Any,
    *,
    prompt: str,
    negative: str,
    seed: int,
    steps: int,
    cfg: float,
    noise_level: int,
    image_size: tuple[int, int],
    tile: int,
    overlap: int,
) -> RunTile:
    """A `run_tile` for a StableDiffusionUpscalePipeline, for an input of `image_size` tiled as given.

    The prompt is encoded once. The starting latents are drawn once, on the CPU from `seed`, for the
    whole (padded) input — this pipeline's latents have the input's resolution — and each tile takes its
    slice, so a position sees the same noise whatever the tiling. The noise the pipeline adds to the
    low-resolution tile comes from a CPU generator seeded with seed + tile index.
    """
    import torch

    width, height = padded_size(*image_size)
    boxes = tile_boxes(width, height, tile, overlap)
    device = pipeline._execution_device
    guided = cfg > 1.0
    with torch.inference_mode():
        embeds, negative_embeds = pipeline.encode_prompt(
            prompt, device, 1, guided, negative_prompt=negative or None
        )
    channels = pipeline.vae.config.latent_channels
    noise = torch.randn(
        (1, channels, height, width), generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32
    )
    # Progress is reported per tile by the caller; a bar per tile would only clutter the worker's log.
    pipeline.set_progress_bar_config(disable=True)

    def run(tile_image: Image.Image, index: int) -> Image.Image:
        left, top, right, bottom = boxes[index]
        if tile_image.size != (right - left, bottom - top):
            raise ValueError(f"tile {index} is {tile_image.size}, expected the box {boxes[index]}")
        latents = noise[:, :, top:bottom, left:right].to(device=device, dtype=embeds.dtype)
        generator = torch.Generator("cpu").manual_seed((seed + index) % 2**64)
        with torch.inference_mode():
            output = pipeline(
                image=tile_image,
                prompt_embeds=embeds,
                negative_prompt_embeds=negative_embeds,
                num_inference_steps=steps,
                guidance_scale=cfg,
                noise_level=noise_level,
                generator=generator,
                latents=latents,
                output_type="pil",
            )
        result: Image.Image = output.images[0]
        return result

    return run


def upscale(
    engine: Any,
    family: str,
    image: Image.Image,
    params: UpscaleParams,
    on_tile: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """`image` upscaled `params.factor` times by the engine of `family`.

    `engine` is the loaded StableDiffusionUpscalePipeline for "sd-upscale", the RRDBNet module for
    "esrgan", and None for "lanczos".
    """
    if family not in UPSCALE_FAMILIES:
        raise ValueError(f"unknown upscale family {family!r}; families: {', '.join(UPSCALE_FAMILIES)}")
    if family == "lanczos":
        result = lanczos_upscale(image, params.factor)
        if on_tile is not None:
            on_tile(1, 1)
        return result
    check_tiling(params.factor, params.tile, params.overlap)
    if family == "sd-upscale":
        run_tile = diffusion_tile_runner(
            engine,
            prompt=params.prompt,
            negative=params.negative,
            seed=params.seed,
            steps=params.steps,
            cfg=params.cfg,
            noise_level=params.noise_level,
            image_size=image.size,
            tile=params.tile,
            overlap=params.overlap,
        )
        # The VAE decodes each latent pixel into vae_scale_factor pixels a side: 4 for the x4 upscaler.
        model_scale = int(engine.vae_scale_factor)
    else:
        run_tile = esrgan_tile_runner(engine)
        model_scale = int(engine.scale)
    return tiled_upscale(
        image,
        params.factor,
        run_tile,
        model_scale=model_scale,
        tile=params.tile,
        overlap=params.overlap,
        on_tile=on_tile,
    )


# --- tiny offline models ------------------------------------------------------------------------------

_TINY_UPSCALER = "tiny-sd-upscale"
_TEXT_HIDDEN = 32
_MAX_NOISE_LEVEL = 350


def _tiny_upscale_pipeline(tokenizer_dir: Path, seed: int) -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_TEXT_HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(seed)
    # As in diffusers' fast test of this pipeline: 4 latent channels + the 3 of the low-res image in,
    # the noise level as a class label. Cross-attention only and no attention in the middle block, so
    # no layer looks across the whole image and tiling changes only what the convolutions see.
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D",
        block_out_channels=(16, 16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=_TEXT_HIDDEN,
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=True,
        num_class_embeds=_MAX_NOISE_LEVEL + 1,
    ).eval()
    torch.manual_seed(seed)
    # Three blocks, two upsamplings: the VAE decodes x4, as the real x4 upscaler's does.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        mid_block_add_attention=False,
        scaling_factor=0.08333,
    ).eval()
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        max_noise_level=_MAX_NOISE_LEVEL,
    )


def build_tiny_upscaler(dest: Path, *, seed: int = 0) -> Path:
    """Build a tiny random-weight StableDiffusionUpscalePipeline (x4) and save it in `dest`.

    Deterministic; leaves the global torch RNG alone; written in a scratch folder and renamed into
    place. Loads with `DiffusionPipeline.from_pretrained(dest)` like the real x4 upscaler. Returns `dest`.
    """
    import torch

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(dest) as tmp:
        tokenizer_dir = tmp / "_tokenizer"
        write_clip_tokenizer(tokenizer_dir)
        with torch.random.fork_rng(devices=[]):
            pipe = _tiny_upscale_pipeline(tokenizer_dir, seed)
        model_dir = tmp / "model"
        pipe.save_pretrained(str(model_dir), safe_serialization=True)
        # As in jobs.tiny: keep the folder loadable by transformers 4's slow CLIPTokenizer too.
        for file in ("vocab.json", "merges.txt"):
            if not (model_dir / "tokenizer" / file).exists():
                shutil.copyfile(tokenizer_dir / file, model_dir / "tokenizer" / file)
        replace_dir(model_dir, dest)
    return dest


def ensure_tiny_upscaler(models_dir: Path) -> Path:
    """The saved tiny upscaler under `models_dir` (`models_dir/tiny-sd-upscale`), built if missing."""
    dest = Path(models_dir) / _TINY_UPSCALER
    return build_once(
        dest, lambda path: (path / "model_index.json").is_file(), lambda: build_tiny_upscaler(dest)
    )
