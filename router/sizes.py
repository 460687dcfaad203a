"""Aspect ratios and the pixel sizes they map to for each resolution class."""

from __future__ import annotations

import math

# Midjourney-style aspect ratios users may ask for with `--ar W:H`.
ASPECT_RATIOS: tuple[str, ...] = ("1:1", "2:3", "3:2", "4:5", "5:4", "9:16", "16:9", "21:9")

# Target pixel area per resolution class: the area the checkpoint family was trained at.
RESOLUTION_CLASSES: dict[str, int] = {
    "tiny": 256 * 256,
    "sd15": 512 * 512,
    "sdxl": 1024 * 1024,
    "sd3": 1024 * 1024,
    "flux": 1024 * 1024,
    # Video frames: Stable Video Diffusion was trained at 1024×576; the tiny one makes thumbnails.
    "svd": 1024 * 576,
    "tiny-video": 64 * 64,
}

SIZE_MULTIPLE = 64


def parse_ratio(aspect: str) -> tuple[int, int]:
    """`"2:3"` → `(2, 3)`; raises ValueError for anything else."""
    w, _, h = aspect.partition(":")
    if not (w.isdigit() and h.isdigit()) or int(w) == 0 or int(h) == 0:
        raise ValueError(f"aspect ratio must look like W:H, got {aspect!r}")
    return int(w), int(h)


def size_for(aspect: str, resolution_class: str) -> tuple[int, int]:
    """Width and height, multiples of 64, closest to the class's area at the given aspect ratio."""
    if aspect not in ASPECT_RATIOS:
        raise ValueError(f"aspect ratio {aspect} is not supported; use one of {', '.join(ASPECT_RATIOS)}")
    if resolution_class not in RESOLUTION_CLASSES:
        raise ValueError(
            f"resolution class {resolution_class!r} is unknown; use one of {', '.join(RESOLUTION_CLASSES)}"
        )
    rw, rh = parse_ratio(aspect)
    area = RESOLUTION_CLASSES[resolution_class]
    width = math.sqrt(area * rw / rh)
    height = width * rh / rw
    return _snap(width), _snap(height)


def _snap(value: float) -> int:
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def size_for_area(width: int, height: int, area: int) -> tuple[int, int]:
    """The aspect ratio of a `width`×`height` image at about `area` pixels, in multiples of 64."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    scaled = math.sqrt(area * width / height)
    return _snap(scaled), _snap(scaled * height / width)
