"""Image files in and out: PNGs with their recipe embedded, contact sheets, and encodings that fit a chat
upload limit. PIL only, no torch: the bot host imports this.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, PngImagePlugin
from pydantic import ValidationError

from jobs.spec import SPEC_VERSION, JobSpec, Recipe


def _likeness_version() -> str:
    try:
        return version("likeness")
    except PackageNotFoundError:
        return "0.1.0"


LIKENESS_VERSION = _likeness_version()

DISCORD_FILE_LIMIT = 10 * 1024 * 1024
"""Discord's default per-file upload limit (servers without boosts)."""

MIN_BUDGET = 16 * 1024
"""Smallest byte budget `fit_to_budget` accepts; below this no portrait is worth posting."""

# A 2×2 contact sheet of the largest recipe size (4096²) is ~67 MP and must still open; anything much
# bigger is a decompression bomb, not something Likeness made. PIL's own warning starts at ~89 MP.
MAX_PIXELS = 72_000_000

NO_RECIPE = "this PNG carries no Likeness recipe; only images made by Likeness can be re-run"

PARAMETERS_KEY = "parameters"
RECIPE_KEY = "likeness"

SAMPLER_NAMES: dict[str, str] = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "UniPCMultistepScheduler": "UniPC",
    "HeunDiscreteScheduler": "Heun",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib level 3 encodes a 1024² portrait about 3x faster than PIL's default 6, for files about 8% larger.
PNG_COMPRESS_LEVEL = 3
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
_JPEG_QUALITIES = (95, 90, 85, 80, 75, 70)
_FLOOR_QUALITY = _JPEG_QUALITIES[-1]
_DOWNSCALE = 0.85
_EXIF_IFD = 0x8769
_IMAGE_DESCRIPTION = 0x010E
_USER_COMMENT = 0x9286


# --- the recipe in PNG text chunks ------------------------------------------------------------------


def a1111_parameters(spec: JobSpec, index: int) -> str:
    """The A1111 `parameters` text for variation `index` (1-based), as Civitai, A1111 and ComfyUI read it.

    `<prompt>\\nNegative prompt: <negative>\\nSteps: …, Sampler: …, …, Version: likeness <version>`; the
    negative line is left out when there is no negative prompt.
    """
    recipe = _recipe(spec)
    seed = spec.seed_of(index)
    fields = [
        ("Steps", str(recipe.steps)),
        ("Sampler", SAMPLER_NAMES.get(recipe.scheduler, recipe.scheduler)),
        ("Schedule type", "Automatic"),
        ("CFG scale", _number(recipe.cfg)),
        ("Seed", str(seed)),
        ("Size", f"{recipe.width}x{recipe.height}"),
        ("Model", _model_name(recipe)),
    ]
    if recipe.strength is not None:
        fields.append(("Denoising strength", _number(recipe.strength)))
    if recipe.upscale is not None:
        fields += [
            ("Postprocess upscale by", str(recipe.upscale.factor)),
            ("Postprocess upscaler", recipe.profile),
        ]
    if spec.parent is not None:
        fields.append(("Likeness parent", f"{spec.parent.describe()} ({spec.kind})"))
    fields.append(("Version", f"likeness {LIKENESS_VERSION}"))
    settings = ", ".join(f"{key}: {_quote(value)}" for key, value in fields)
    negative = f"\nNegative prompt: {spec.negative}" if spec.negative else ""
    return f"{spec.prompt}{negative}\n{settings}"


def png_bytes(image: Image.Image) -> bytes:
    """A plain PNG (e.g. the contact grid), at the same speed-minded compression as the variations."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_png(image: Image.Image, spec: JobSpec, index: int) -> bytes:
    """PNG of variation `index` (1-based) carrying its recipe twice: the A1111 `parameters` text, and a
    `likeness` chunk with the JSON of the single-variation spec, which `read_recipe` turns back into a job.
    """
    _recipe(spec)
    single = spec.single_variation(index)
    info = PngImagePlugin.PngInfo()
    # add_text writes tEXt when the text is Latin-1 and iTXt (UTF-8) otherwise, as A1111 does; uncompressed,
    # because PIL refuses compressed text chunks over 1 MiB on read and inputs may make the JSON large.
    info.add_text(PARAMETERS_KEY, a1111_parameters(spec, index))
    info.add_text(RECIPE_KEY, single.without_input_bytes().model_dump_json())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def read_recipe(png: bytes | Path) -> JobSpec:
    """The spec embedded by `encode_png`, validated. Raises ValueError when the file is not a PNG, is too
    large, or carries no (valid) Likeness recipe.
    """
    try:
        with _open_png(png) as image:
            raw = image.info.get(RECIPE_KEY)
    except _NotPNG as error:
        raise ValueError(f"{NO_RECIPE} (the file is not a readable PNG: {error})") from error
    if not isinstance(raw, str):
        raise ValueError(NO_RECIPE)
    try:
        spec = JobSpec.model_validate_json(raw)
    except ValidationError as error:
        raise ValueError(f"{NO_RECIPE} (its recipe is damaged or from an incompatible version)") from error
    if spec.version > SPEC_VERSION:
        raise ValueError(
            f"this PNG was made by a newer Likeness (recipe version {spec.version}; this one reads up to "
            f"{SPEC_VERSION}); upgrade to re-run it"
        )
    if spec.recipe is None:
        raise ValueError(f"{NO_RECIPE} (its recipe has no generation settings)")
    return spec


def read_parameters(png: bytes | Path) -> str | None:
    """The A1111 `parameters` text of a PNG, or None when it has none."""
    try:
        with _open_png(png) as image:
            raw = image.info.get(PARAMETERS_KEY)
    except _NotPNG as error:
        raise ValueError(f"not a readable PNG: {error}") from error
    return str(raw) if isinstance(raw, str) else None


def png_to_image(png: bytes) -> Image.Image:
    """Decode a PNG, refusing files too large to be a Likeness image."""
    try:
        with _open_png(png) as image:
            image.load()
            return image
    except (_NotPNG, OSError) as error:  # OSError: truncated or corrupt pixel data
        raise ValueError(f"not a readable PNG: {error}") from error


class _NotPNG(Exception):
    pass


@contextmanager
def _open_png(source: bytes | Path) -> Iterator[ImageFile.ImageFile]:
    # The size is read from IHDR before PIL sees the file: that keeps the guard independent of PIL's
    # process-wide MAX_IMAGE_PIXELS and its warnings, and the content, not the name, decides what it is.
    if isinstance(source, Path):
        with source.open("rb") as handle, _open_png_stream(handle) as image:
            yield image
    else:
        with _open_png_stream(io.BytesIO(source)) as image:
            yield image


@contextmanager
def _open_png_stream(stream: BinaryIO) -> Iterator[ImageFile.ImageFile]:
    head = stream.read(24)
    stream.seek(0)
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise _NotPNG("no PNG signature")
    width, height = struct.unpack(">II", head[16:24])
    _check_pixels(width, height)
    try:
        image = Image.open(stream, formats=["PNG"])
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as error:
        raise _NotPNG(str(error) or type(error).__name__) from error
    with image:
        _check_pixels(*image.size)
        yield image


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"image is {width}×{height} = {width * height:,} pixels, over the {MAX_PIXELS:,}-pixel limit; "
            "refusing to open it"
        )


def _recipe(spec: JobSpec) -> Recipe:
    if spec.recipe is None:
        raise ValueError(f"job {spec.job_id} has no recipe to embed")
    return spec.recipe


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _model_name(recipe: Recipe) -> str:
    name = re.split(r"[\\/]", recipe.checkpoint.rstrip("\\/"))[-1]
    for suffix in _WEIGHT_SUFFIXES:
        name = name.removesuffix(suffix)
    # `tiny:<family>` and other pseudo-checkpoints name no file; the profile says more.
    if not name or ":" in name:
        return recipe.profile
    return name


def _quote(value: str) -> str:
    # A1111's rule (infotext_utils.quote), plus a leading quote: values that would break the `key: value, …`
    # line go in JSON.
    if "," in value or "\n" in value or ":" in value or value.startswith('"'):
        return json.dumps(value, ensure_ascii=False)
    return value


# --- contact sheets ---------------------------------------------------------------------------------


def contact_grid(
    images: Sequence[Image.Image], *, gap: int = 8, background: tuple[int, int, int] = (16, 16, 16)
) -> Image.Image:
    """A contact sheet: 1 image → itself (a copy); 2 → side by side; 3 or 4 → 2×2; beyond, the smallest
    square-ish grid (⌈√n⌉ columns). Cells take the largest width and height; images are centered and empty
    cells keep the background. `gap` separates cells; there is no outer border.
    """
    if not images:
        raise ValueError("contact_grid needs at least one image")
    if gap < 0:
        raise ValueError(f"gap must be 0 or more, not {gap}")
    if len(images) == 1:
        return images[0].copy()
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    sheet = Image.new(
        "RGB", (columns * cell_w + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), background
    )
    for position, image in enumerate(images):
        row, column = divmod(position, columns)
        x = column * (cell_w + gap) + (cell_w - image.width) // 2
        y = row * (cell_h + gap) + (cell_h - image.height) // 2
        if _has_alpha(image):
            rgba = image.convert("RGBA")
            sheet.paste(rgba, (x, y), rgba)
        else:
            sheet.paste(image.convert("RGB"), (x, y))
    return sheet


# --- fitting an upload limit ------------------------------------------------------------------------


def fit_to_budget(
    image: Image.Image, max_bytes: int, *, metadata_png: bytes | None = None
) -> tuple[bytes, str]:
    """Encode `image` in at most `max_bytes`; returns (data, media type).

    PNG when it fits (`metadata_png`, the `encode_png` output, is returned unchanged so the recipe survives);
    otherwise JPEG from quality 95 (4:4:4) down to 70 (4:2:0), then downscaled by 0.85 steps at quality 70.
    A JPEG carries the A1111 parameters of `metadata_png` in EXIF UserComment and ImageDescription (but not
    the `likeness` recipe: `read_recipe` reads PNGs only). Raises ValueError for a budget under `MIN_BUDGET`.
    CPU-bound (up to seconds for large images): call it from a thread in async code.
    """
    if max_bytes < MIN_BUDGET:
        raise ValueError(f"max_bytes={max_bytes} is too small for an image; the minimum is {MIN_BUDGET}")
    parameters: str | None = None
    if metadata_png is not None:
        if len(metadata_png) <= max_bytes:
            return metadata_png, "image/png"
        parameters = read_parameters(metadata_png)
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue(), "image/png"

    exif = _exif(parameters) if parameters else b""
    if len(exif) > max_bytes // 4:
        exif = b""  # a very long prompt must not crowd out the picture
    flat = _flatten(image)
    for quality in _JPEG_QUALITIES:
        data = _jpeg(flat, quality, exif)
        if len(data) <= max_bytes:
            return data, "image/jpeg"

    scale = 1.0
    while True:
        scale *= _DOWNSCALE
        size = (max(1, round(flat.width * scale)), max(1, round(flat.height * scale)))
        # Always resample from the original so the blur of successive steps does not compound.
        data = _jpeg(flat.resize(size, Image.Resampling.LANCZOS), _FLOOR_QUALITY, exif)
        if len(data) <= max_bytes:
            return data, "image/jpeg"
        if size == (1, 1):
            raise ValueError(f"could not fit the image in {max_bytes} bytes")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _flatten(image: Image.Image) -> Image.Image:
    """An RGB or L image JPEG can hold; transparency is composited onto white, as image editors flatten."""
    if image.mode in ("RGB", "L"):
        return image
    if _has_alpha(image):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _jpeg(image: Image.Image, quality: int, exif: bytes) -> bytes:
    buffer = io.BytesIO()
    # No optimize=True: PIL then sizes libjpeg's one-shot buffer at ~1 byte a pixel, and detailed images at
    # high quality overflow it ("Suspension not allowed here"); Huffman optimisation saves only a few %.
    image.save(
        buffer, format="JPEG", quality=quality, subsampling="4:4:4" if quality >= 90 else "4:2:0", exif=exif
    )
    return buffer.getvalue()


def _exif(parameters: str) -> bytes:
    exif = Image.Exif()
    # UserComment as A1111 writes it (piexif's "unicode" encoding: UTF-16 in the TIFF header's byte order,
    # big-endian for a fresh Exif); this is what Civitai and A1111's PNG Info read from JPEGs.
    encoding = "utf-16-le" if exif.endian == "<" else "utf-16-be"
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\0" + parameters.encode(encoding)
    # ImageDescription is typed ASCII; UTF-8 is what exiftool and desktop viewers assume for it.
    exif[_IMAGE_DESCRIPTION] = parameters.encode("utf-8")
    return exif.tobytes()
