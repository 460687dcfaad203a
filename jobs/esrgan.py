"""ESRGAN-class upscaling: the RRDBNet of Real-ESRGAN (x4plus, x2plus), its weights, and a tiny one.

torch is imported inside the functions that need it: importing this module is cheap.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from jobs.tiling import RunTile
from jobs.tiny import build_once, scratch_dir

if TYPE_CHECKING:
    import torch


def esrgan_tile_runner(model: Any) -> RunTile:
    """A `run_tile` for an RRDBNet: the tile as 0..1 floats in, the clamped result back as an image."""
    import torch

    parameter = next(model.parameters())

    def run(tile_image: Image.Image, index: int) -> Image.Image:
        pixels = np.asarray(tile_image.convert("RGB"), dtype=np.float32) / 255.0
        batch = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
        with torch.inference_mode():
            result = model(batch.to(device=parameter.device, dtype=parameter.dtype))
            result = result[0].float().clamp_(0, 1).mul_(255).round_().byte().permute(1, 2, 0).cpu()
        return Image.fromarray(result.numpy())

    return run


# Input channels of conv_first → the network's scale: x2 models pixel-unshuffle the input by 2 first.
_ESRGAN_SCALES = {3: 4, 12: 2}
_ESRGAN_KEYS = (
    "conv_first.weight",
    "body.0.rdb1.conv1.weight",
    "conv_body.weight",
    "conv_up1.weight",
    "conv_up2.weight",
    "conv_hr.weight",
    "conv_last.weight",
)


@functools.cache
def _rrdbnet_class() -> Any:
    """RRDBNet, the generator of ESRGAN and Real-ESRGAN, defined on first use so torch loads lazily."""
    import torch
    from torch import nn
    from torch.nn import functional

    class ResidualDenseBlock(nn.Module):  # type: ignore[misc]
        """Five 3x3 convs, each fed every earlier output; the result is added back scaled by 0.2."""

        def __init__(self, num_feat: int, num_grow_ch: int) -> None:
            super().__init__()
            grow = num_grow_ch
            self.conv1 = nn.Conv2d(num_feat, grow, 3, 1, 1)
            self.conv2 = nn.Conv2d(num_feat + grow, grow, 3, 1, 1)
            self.conv3 = nn.Conv2d(num_feat + 2 * grow, grow, 3, 1, 1)
            self.conv4 = nn.Conv2d(num_feat + 3 * grow, grow, 3, 1, 1)
            self.conv5 = nn.Conv2d(num_feat + 4 * grow, num_feat, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        def forward(self, x: Any) -> Any:
            features = [x]
            for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
                features.append(self.lrelu(conv(torch.cat(features, 1))))
            return self.conv5(torch.cat(features, 1)) * 0.2 + x

    class RRDB(nn.Module):  # type: ignore[misc]
        """Three residual dense blocks in a row, with a residual connection scaled by 0.2 around them."""

        def __init__(self, num_feat: int, num_grow_ch: int) -> None:
            super().__init__()
            self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
            self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
            self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

        def forward(self, x: Any) -> Any:
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class RRDBNet(nn.Module):  # type: ignore[misc]
        """Features, a trunk of RRDBs, two nearest-neighbour x2 upsamplings, then back to RGB."""

        def __init__(self, *, scale: int, num_feat: int, num_block: int, num_grow_ch: int) -> None:
            super().__init__()
            self.scale = scale
            # Every variant upsamples x4 inside; an x2 model packs 2x2 pixels into channels first.
            self.unshuffle = 4 // scale
            self.conv_first = nn.Conv2d(3 * self.unshuffle**2, num_feat, 3, 1, 1)
            self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
            self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        def forward(self, x: Any) -> Any:
            if self.unshuffle > 1:
                x = functional.pixel_unshuffle(x, self.unshuffle)
            features = self.conv_first(x)
            features = features + self.conv_body(self.body(features))
            for conv in (self.conv_up1, self.conv_up2):
                features = self.lrelu(conv(functional.interpolate(features, scale_factor=2, mode="nearest")))
            return self.conv_last(self.lrelu(self.conv_hr(features)))

    return RRDBNet


def _esrgan_shape(state: dict[str, Any], name: str) -> dict[str, int]:
    """scale, num_feat, num_block and num_grow_ch of the RRDBNet whose state dict this is."""
    missing = [key for key in _ESRGAN_KEYS if key not in state]
    if missing:
        raise ValueError(
            f"{name} is not an RRDBNet (Real-ESRGAN) state dict: it lacks {', '.join(missing)}; "
            "use an ESRGAN-class x4 or x2 model such as RealESRGAN_x4plus.pth"
        )
    in_channels = int(state["conv_first.weight"].shape[1])
    if in_channels not in _ESRGAN_SCALES:
        raise ValueError(
            f"{name}: conv_first takes {in_channels} channels; only x4 (3 channels) and x2 (12) RRDBNets "
            "are supported"
        )
    blocks = {int(key.split(".")[1]) for key in state if key.startswith("body.")}
    return {
        "scale": _ESRGAN_SCALES[in_channels],
        "num_feat": int(state["conv_first.weight"].shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]),
    }


def load_esrgan(path: Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The RRDBNet saved in `path` (.pth or .safetensors), in eval mode on `device` in `dtype`.

    Reads Real-ESRGAN's "params_ema" / "params" wrappers; the shape (width, depth, growth, x2 or x4) comes
    from the weights. Its `scale` attribute says how much it upscales. Raises ValueError for anything
    that is not an RRDBNet state dict.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        loaded: Any = load_file(str(path))
    else:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(loaded, dict):
        for wrapper in ("params_ema", "params"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict):
        raise ValueError(f"{path.name} holds a {type(loaded).__name__}, not a state dict of an RRDBNet")
    shape = _esrgan_shape(loaded, path.name)
    model = _rrdbnet_class()(**shape)
    try:
        model.load_state_dict(loaded, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path.name} does not fit an RRDBNet of {shape}: {exc}") from exc
    return model.requires_grad_(False).eval().to(device=device, dtype=dtype)


def build_tiny_esrgan(dest_file: Path, *, scale: int = 4, seed: int = 0) -> Path:
    """Write a tiny random-weight RRDBNet (x4 or x2) state dict to `dest_file` (.safetensors).

    Deterministic; leaves the global torch RNG alone; the file appears by an atomic rename.
    """
    if scale not in _ESRGAN_SCALES.values():
        raise ValueError(f"`scale` must be 4 or 2 but is {scale}")
    import torch
    from safetensors.torch import save_file

    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _rrdbnet_class()(scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    with scratch_dir(dest_file) as tmp:
        save_file(state, str(tmp / dest_file.name))
        os.replace(tmp / dest_file.name, dest_file)
    return dest_file


def ensure_tiny_esrgan(models_dir: Path, *, scale: int = 4) -> Path:
    """The tiny RRDBNet file under `models_dir` (`tiny-esrgan-x<scale>.safetensors`), built if missing."""
    dest = Path(models_dir) / f"tiny-esrgan-x{scale}.safetensors"
    return build_once(dest, lambda path: path.is_file(), lambda: build_tiny_esrgan(dest, scale=scale))
