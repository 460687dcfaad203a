"""Reference-photo intake: safely decode an upload, find exactly one face, and cut a square face crop.

Everything a user can get wrong ends in `ReferenceRejected`, a message that says what to fix.
"""

from __future__ import annotations

import functools
import io
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

__all__ = [
    "CROP_SIZE",
    "MAX_BYTES",
    "MAX_PIXELS",
    "MIN_FACE_PX",
    "PreparedReference",
    "ReferenceRejected",
    "prepare_reference",
]

MAX_BYTES: Final = 10 * 1024 * 1024
MAX_PIXELS: Final = 40_000_000
MIN_FACE_PX: Final = 64
CROP_SIZE: Final = 512

# Face detection. The cascade runs on a grayscale copy whose long edge is brought into
# [_DETECT_MIN_EDGE, _DETECT_MAX_EDGE]: down for speed, up so that a face too small to pass
# MIN_FACE_PX is still found and the user hears "too small" rather than "no face".
# Tuned on skimage.data: astronaut → one face, chelsea (a cat) → none, a 2×2 astronaut tiling → four,
# astronaut at 96 px → one (about 18 px), astronaut rotated 90° → none. A lower minNeighbors (3–4) or a
# finer scaleFactor (1.05) start finding "faces" in the astronaut's flag and suit; histogram
# equalisation made a large false positive appear on an upscaled astronaut, so it is not used.
_CASCADE_FILE: Final = "haarcascade_frontalface_default.xml"
_SCALE_FACTOR: Final = 1.1
_MIN_NEIGHBORS: Final = 5
_MIN_DETECT_PX: Final = 24  # the cascade's own window size
_DETECT_MIN_EDGE: Final = 512
_DETECT_MAX_EDGE: Final = 1024
# The largest face is "dominant" (a lone subject with a stray detection or a distant passer-by)
# when its area is at least this multiple of the next largest; otherwise the photo has several people.
_DOMINANCE_AREA_RATIO: Final = 2.5

# The crop: a square of this multiple of the face box side, its centre moved up by this fraction of
# the box height, because a Haar box spans brows to chin and a portrait reference wants hair and neck too.
_CROP_SCALE: Final = 1.8
_CROP_SHIFT_UP: Final = 0.15
_CROP_JPEG_QUALITY: Final = 92

_FORMATS: Final = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}

# Decoding runs under one process-wide lock because `warnings.catch_warnings()` swaps the global
# filter list and is not thread-safe on Python < 3.14: two overlapping blocks could leave the other's
# filters installed. Uploads are rare and a decode takes well under a second, so serialising is cheap.
# `Image.MAX_IMAGE_PIXELS` is deliberately left alone: our own header check (MAX_PIXELS, lower than
# Pillow's default) rejects large images first, and Pillow's check stays in place as a second guard.
_DECODE_LOCK: Final = threading.Lock()
# One shared CascadeClassifier; OpenCV does not promise that detectMultiScale is re-entrant.
_DETECT_LOCK: Final = threading.Lock()

_DAMAGED: Final = (
    "That file is damaged or not a complete image. Save or export the photo again and re-send it."
)
_WRONG_KIND: Final = "Send the photo as a JPEG, PNG or WebP image."


class ReferenceRejected(ValueError):
    """The image cannot be a character reference.

    str(error) is a message fit to show the user: what was wrong and how to fix it.
    """


@dataclass(frozen=True)
class PreparedReference:
    """An accepted reference photo: the upload as sent, and a square crop of its one face."""

    original: bytes = field(repr=False)  # the upload, byte for byte (metadata such as EXIF/GPS included)
    original_format: str  # "jpeg" | "png" | "webp", sniffed from the bytes
    width: int  # of the upright image (after EXIF orientation)
    height: int
    face_box: tuple[int, int, int, int]  # x, y, w, h in the upright image
    crop_jpeg: bytes = field(repr=False)  # CROP_SIZE × CROP_SIZE RGB JPEG, no metadata


def prepare_reference(data: bytes) -> PreparedReference:
    """Validate an uploaded photo and cut its face crop; ReferenceRejected carries a user-facing reason."""
    if len(data) > MAX_BYTES:
        size_mb, limit_mb = len(data) / (1024 * 1024), MAX_BYTES // (1024 * 1024)
        raise ReferenceRejected(
            f"That file is {size_mb:.1f} MB, over the {limit_mb} MB limit. "
            "Send a smaller or more compressed photo."
        )
    fmt = _sniff(data)
    image = _decode(data, fmt)
    width, height = image.size
    box = _find_face(image)
    return PreparedReference(
        original=data,
        original_format=fmt,
        width=width,
        height=height,
        face_box=box,
        crop_jpeg=_crop_jpeg(image, box),
    )


def _sniff(data: bytes) -> str:
    """The format from the magic bytes (never the file name), or a rejection that names what it is."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    other = _other_format(data)
    if other is not None:
        raise ReferenceRejected(f"That's a {other} file, which I can't use as a reference. {_WRONG_KIND}")
    raise ReferenceRejected(f"That file isn't an image I can read. {_WRONG_KIND}")


def _other_format(data: bytes) -> str | None:
    """Name a few common formats we refuse, so the message can tell the user what they sent."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC"
        if brand in (b"avif", b"avis"):
            return "AVIF"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    return None


def _decode(data: bytes, fmt: str) -> Image.Image:
    """Header checks, then a full decode to an upright RGB image; every failure is a ReferenceRejected."""
    with _DECODE_LOCK, warnings.catch_warnings():
        # Pillow's UserWarnings ("Corrupt EXIF data", "malformed MPO", …) are about files we either
        # decode or reject here, so they are noise; deprecations still surface.
        warnings.simplefilter("ignore", UserWarning)
        # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that; make it an error here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[_FORMATS[fmt]]) as opened:
                _check_header(opened, fmt)
                opened.load()
                upright = _upright(opened)
                return _to_rgb(upright)
        except ReferenceRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ReferenceRejected(_too_many_pixels(None)) from None
        except Exception:
            # Pillow signals a bad file with many exception types (OSError, SyntaxError, ValueError,
            # struct.error, EOFError, …); to the user they all mean the same thing.
            raise ReferenceRejected(_DAMAGED) from None


def _check_header(image: Image.Image, fmt: str) -> None:
    """Size and animation checks on the header alone, before any pixel is decoded."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ReferenceRejected(_DAMAGED)
    if width * height > MAX_PIXELS:
        raise ReferenceRejected(_too_many_pixels((width, height)))
    # A JPEG with several frames is an MPO (a phone photo with a depth map or preview); its first
    # frame is the photo, so only PNG (APNG) and WebP are checked for animation.
    if fmt != "jpeg" and (getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1):
        raise ReferenceRejected("That image is animated. Send a still photo (JPEG, PNG or WebP) instead.")


def _too_many_pixels(size: tuple[int, int] | None) -> str:
    limit = f"the limit is {MAX_PIXELS // 1_000_000} megapixels"
    if size is None:
        return f"That image is far too large; {limit}. Resize it and send it again."
    width, height = size
    megapixels = width * height / 1e6
    return (
        f"That image is {width}×{height} ({megapixels:.0f} megapixels); {limit}. Resize it and send it again."
    )


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation so that the pixels are the way the photo is meant to be seen."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Unreadable EXIF does not make the pixels unusable: keep the photo as stored.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode Pillow gives JPEG/PNG/WebP: alpha is composited on white, 16-bit rescaled."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit greyscale PNGs arrive as I;16 or I; Pillow's own conversion to L clips at 255
        # instead of scaling, which would turn most photos white.
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image.copy()
    # L, 1, P, CMYK (Pillow undoes Adobe's inverted CMYK when decoding), YCbCr, …
    return image.convert("RGB")


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
    """The frontal-face Haar cascade bundled with opencv-python, loaded on first use."""
    path = cv2.data.haarcascades + _CASCADE_FILE  # type: ignore[attr-defined]  # cv2.data has no stubs
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        # A deployment problem (e.g. OpenCV 5, which ships no cascades), not the user's photo.
        raise RuntimeError(f"could not load the face detector from {path}")
    return cascade


def _find_face(image: Image.Image) -> tuple[int, int, int, int]:
    """The one dominant face as (x, y, w, h) in `image`'s pixels; ReferenceRejected unless there is one."""
    faces = _detect_faces(image)
    if not faces:
        raise ReferenceRejected(
            "I couldn't find a face in that image. Use a clear, front-facing photo of one person."
        )
    faces.sort(key=lambda b: b[2] * b[3], reverse=True)
    largest = faces[0][2] * faces[0][3]
    comparable = [b for b in faces if b[2] * b[3] * _DOMINANCE_AREA_RATIO > largest]
    if len(comparable) > 1:
        raise ReferenceRejected(f"I found {len(comparable)} faces; crop the photo to one person.")
    box = faces[0]
    side = min(box[2], box[3])
    if side < MIN_FACE_PX:
        raise ReferenceRejected(
            f"The face in that photo is too small ({side} px across; I need at least {MIN_FACE_PX} px). "
            "Use a larger photo, or one taken closer to the person."
        )
    return box


def _detect_faces(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """All cascade detections, mapped back to `image`'s pixels."""
    width, height = image.size
    long_edge = max(width, height)
    scale = 1.0
    if long_edge > _DETECT_MAX_EDGE:
        scale = _DETECT_MAX_EDGE / long_edge
    elif long_edge < _DETECT_MIN_EDGE:
        scale = _DETECT_MIN_EDGE / long_edge
    grey: npt.NDArray[np.uint8] = np.asarray(image.convert("L"), dtype=np.uint8)
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
        grey = cv2.resize(grey, size, interpolation=interpolation)  # type: ignore[assignment]
    with _DETECT_LOCK:
        found = _cascade().detectMultiScale(
            grey,
            scaleFactor=_SCALE_FACTOR,
            minNeighbors=_MIN_NEIGHBORS,
            minSize=(_MIN_DETECT_PX, _MIN_DETECT_PX),
        )
    boxes: list[tuple[int, int, int, int]] = []
    for x, y, w, h in found:
        left = max(0, math.floor(int(x) / scale))
        top = max(0, math.floor(int(y) / scale))
        right = min(width, math.ceil((int(x) + int(w)) / scale))
        bottom = min(height, math.ceil((int(y) + int(h)) / scale))
        if right > left and bottom > top:
            boxes.append((left, top, right - left, bottom - top))
    return boxes


def _crop_jpeg(image: Image.Image, box: tuple[int, int, int, int]) -> bytes:
    """A padded square around the face, edge-replicated where it runs off the photo, as a CROP_SIZE² JPEG."""
    x, y, w, h = box
    side = max(1, round(_CROP_SCALE * max(w, h)))
    centre_x = x + w / 2
    centre_y = y + h / 2 - _CROP_SHIFT_UP * h
    left = round(centre_x - side / 2)
    top = round(centre_y - side / 2)
    right, bottom = left + side, top + side
    width, height = image.size
    inner = (max(0, left), max(0, top), min(width, right), min(height, bottom))
    pixels: npt.NDArray[np.uint8] = np.asarray(image.crop(inner), dtype=np.uint8)
    pads = (inner[1] - top, bottom - inner[3], inner[0] - left, right - inner[2])
    if any(pads):
        # Replicate the edge rather than reflect it: a mirrored half-face could look like a second face
        # to whatever consumes the crop later.
        pixels = cv2.copyMakeBorder(pixels, *pads, borderType=cv2.BORDER_REPLICATE)  # type: ignore[assignment]
    crop = Image.fromarray(pixels).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=_CROP_JPEG_QUALITY)
    return out.getvalue()
