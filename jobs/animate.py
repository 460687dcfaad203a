"""Animate: one image in, a few seconds of video frames out, with Stable Video Diffusion.

`animate` runs a loaded `StableVideoDiffusionPipeline` (the real one is
`stabilityai/stable-video-diffusion-img2vid-xt`); `build_tiny_svd` makes a random-weight one of the same
architecture that runs on a CPU in about a second, for tests and the tiny profiles. Blocking code for the
worker's thread; torch and diffusers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from jobs.tiny import build_once, replace_dir, scratch_dir

FRAME_MULTIPLE = 64
"""Frame sides are multiples of this: the VAE halves the image 3 times, the UNet the latents 3 more."""

# The tiny pipeline: a VAE with four blocks (latents 1/8 of the image, as in SVD) and a two-block UNet,
# so 64×64 frames are the smallest that work and 4 of them take well under a second on a CPU.
_TINY_LATENT_CHANNELS = 4
_TINY_EMBED = 32  # CLIP image embedding size = the UNet's cross-attention size
_TINY_TIME_EMBED = 32  # per added time id; SVD adds three: fps, motion bucket, noise augmentation
_TINY_ENCODER_IMAGE = 224  # the pipeline resizes a PIL input to 224×224 before the image encoder
_TINY_ENCODER_PATCH = 14  # ViT-H/14, as in SVD's image encoder


@dataclass(frozen=True)
class MotionParams:
    """How to animate one image; the names follow StableVideoDiffusionPipeline's arguments."""

    width: int
    height: int
    frames: int
    fps: int
    motion: int
    noise_aug: float
    steps: int
    min_cfg: float
    max_cfg: float
    decode_chunk: int
    seed: int

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < FRAME_MULTIPLE or value % FRAME_MULTIPLE:
                raise ValueError(f"{name} must be a positive multiple of {FRAME_MULTIPLE}, not {value}")
        for name in ("frames", "fps", "steps", "decode_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, not {getattr(self, name)}")
        if not 1 <= self.motion <= 255:
            raise ValueError(
                f"motion must be between 1 and 255 (127 is the model's default), not {self.motion}"
            )
        if not 0.0 <= self.noise_aug <= 1.0:
            raise ValueError(f"noise_aug must be between 0 and 1 (0.02 is usual), not {self.noise_aug}")
        if not 0.0 < self.min_cfg <= self.max_cfg:
            raise ValueError(
                f"need 0 < min_cfg <= max_cfg, not min_cfg={self.min_cfg} and max_cfg={self.max_cfg}"
            )
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be between 0 and 2**64 - 1, not {self.seed}")


def animate(
    pipeline: Any, image: Image.Image, params: MotionParams, on_step: Callable[[int, int], None]
) -> list[Image.Image]:
    """`params.frames` frames of `params.width`×`params.height` that set `image` in motion.

    The image is scaled to cover the frame and cropped about its centre first, so nothing is stretched.
    `on_step(i, n)` is called after denoising step i of n (1-based). Blocking: run it in a worker thread.
    """
    import torch

    size = (params.width, params.height)
    still = ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)

    def step_end(pipe: Any, i: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        on_step(i + 1, pipe.num_timesteps)
        return callback_kwargs

    # A CPU generator gives the same noise for a seed on any device.
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    with torch.inference_mode():
        result = pipeline(
            still,
            height=params.height,
            width=params.width,
            num_frames=params.frames,
            fps=params.fps,
            motion_bucket_id=params.motion,
            noise_aug_strength=params.noise_aug,
            decode_chunk_size=params.decode_chunk,
            num_inference_steps=params.steps,
            min_guidance_scale=params.min_cfg,
            max_guidance_scale=params.max_cfg,
            generator=generator,
            callback_on_step_end=step_end,
            output_type="pil",
        )
    frames: list[Image.Image] = [frame.convert("RGB") for frame in result.frames[0]]
    return frames


# --- the tiny random-weight SVD ---------------------------------------------------------------------


def _tiny_unet() -> Any:
    from diffusers import UNetSpatioTemporalConditionModel

    # diffusers' fast-test UNet: 8 input channels are the noisy latents and the still image's latents.
    return UNetSpatioTemporalConditionModel(
        sample_size=FRAME_MULTIPLE // 8,
        in_channels=2 * _TINY_LATENT_CHANNELS,
        out_channels=_TINY_LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        layers_per_block=2,
        cross_attention_dim=_TINY_EMBED,
        num_attention_heads=8,
        addition_time_embed_dim=_TINY_TIME_EMBED,
        projection_class_embeddings_input_dim=3 * _TINY_TIME_EMBED,
        num_frames=25,  # SVD-XT's default clip length
    ).eval()


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKLTemporalDecoder

    # Four blocks (three downsamplings) as in SVD; its group norms have 32 groups, so 32 channels at least.
    return AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=_TINY_LATENT_CHANNELS,
        sample_size=FRAME_MULTIPLE,
        scaling_factor=0.18215,
    ).eval()


def _tiny_image_encoder() -> tuple[Any, Any]:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        projection_dim=_TINY_EMBED,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=_TINY_ENCODER_IMAGE,
        patch_size=_TINY_ENCODER_PATCH,
        hidden_act="gelu",  # ViT-H (OpenCLIP), as in SVD
        layer_norm_eps=1e-5,
    )
    processor = CLIPImageProcessor(size=_TINY_ENCODER_IMAGE, crop_size=_TINY_ENCODER_IMAGE)
    return CLIPVisionModelWithProjection(config).eval(), processor


def _tiny_scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    # SVD-XT's scheduler config: v-prediction on continuous (EDM) timesteps, Karras sigmas.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        sigma_min=0.002,
        sigma_max=700.0,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


def _tiny_svd(seed: int) -> Any:
    import torch
    from diffusers import StableVideoDiffusionPipeline

    torch.manual_seed(seed)
    unet = _tiny_unet()
    torch.manual_seed(seed + 1)
    vae = _tiny_vae()
    torch.manual_seed(seed + 2)
    image_encoder, feature_extractor = _tiny_image_encoder()
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=_tiny_scheduler(),
        feature_extractor=feature_extractor,
    )


def build_tiny_svd(dest: Path, *, seed: int = 0) -> Path:
    """Build a tiny random-weight Stable Video Diffusion pipeline and save it (save_pretrained) in `dest`.

    Deterministic (same seed, same weights) and leaves the global torch RNG as it was. Written in a
    temporary folder beside `dest` and renamed into place; an existing `dest` is replaced. Returns `dest`.
    """
    import torch

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(dest) as tmp:
        with torch.random.fork_rng(devices=[]):
            pipe = _tiny_svd(seed)
        model_dir = tmp / "model"
        pipe.save_pretrained(str(model_dir), safe_serialization=True)
        replace_dir(model_dir, dest)
    return dest


def ensure_tiny_svd(models_dir: Path) -> Path:
    """The saved tiny SVD under `models_dir` (`models_dir/tiny-svd`), built if missing; safe in a race."""
    dest = Path(models_dir) / "tiny-svd"
    return build_once(dest, lambda path: (path / "model_index.json").is_file(), lambda: build_tiny_svd(dest))
