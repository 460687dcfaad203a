"""Identity evaluation: does a generated image show the same person as the reference photo?

The evaluator is dlib's face-recognition ResNet, independent of the generation adapters (IP-Adapter
and its image encoder), so it does not grade the pipeline with the pipeline's own idea of a face.
Each image goes through dlib's CNN face detector (MMOD), the 5-point landmark model, and the ResNet,
which maps an aligned 150×150 face chip to a 128-d descriptor. Two descriptors closer than 0.6
(Euclidean) are the same person by dlib's convention; that model scores 99.38% on LFW at that threshold.

dlib and the model files are an optional extra (`pip install 'likeness[eval]'`: dlib-bin and
face_recognition_models); they are imported only when a descriptor is first needed, so `characters`
imports without them.

Reference points (skimage.data, CPU): the astronaut against her mirror image is about 0.18 apart,
against the cameraman about 0.82; the cat (chelsea) has no face.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

__all__ = [
    "SAME_PERSON_DISTANCE",
    "Comparison",
    "Descriptor",
    "EvalUnavailable",
    "FaceImage",
    "IdentityReport",
    "NoFace",
    "compare",
    "face_descriptor",
    "load_image",
]

SAME_PERSON_DISTANCE: Final = 0.6

Descriptor: TypeAlias = npt.NDArray[np.float64]
# An image in memory (Pillow, or a uint8 array: H×W grey, H×W×3 RGB, H×W×4 RGBA) or a file to read.
FaceImage: TypeAlias = Image.Image | npt.NDArray[Any] | Path

INSTALL_HINT: Final = "pip install 'likeness[eval]'"
_MODELS_PACKAGE: Final = "face_recognition_models"
_DETECTOR_FILE: Final = "mmod_human_face_detector.dat"
_LANDMARKS_FILE: Final = "shape_predictor_5_face_landmarks.dat"
_RESNET_FILE: Final = "dlib_face_recognition_resnet_model_v1.dat"

# The CNN detector finds faces down to about 80 px at its native scale (measured: the astronaut's face
# is found at 96 px, not at 64 px). It runs on a copy whose long edge is brought into this range: up,
# so that a small image's face reaches that size; down, because its cost grows with the pixel count
# (about 1.2 s at 512², 2.9 s at 768², 5 s at 1024² on two CPU cores). At the top of the range a face
# must be about a tenth of the long edge. skimage's 512-px samples run at their own size.
# The landmarks and the descriptor are taken from the full-resolution image, not from this copy.
_DETECT_MIN_EDGE: Final = 512
_DETECT_MAX_EDGE: Final = 768
# Jittering (descriptors of randomly perturbed chips, averaged) buys dlib about 0.1% on LFW for N×
# the cost; 0 also keeps each number a pure function of the pixels.
_JITTERS: Final = 0

# dlib's detector and networks keep scratch state in the objects, so calls on the shared models are
# serialised; an evaluation is a batch job, not a hot path.
_MODELS_LOCK: Final = threading.Lock()


class EvalUnavailable(RuntimeError):
    """dlib or its model files are missing; the message says what to install."""


class NoFace(ValueError):
    """No face was found in an image."""


@dataclass(frozen=True)
class Comparison:
    """One image against the reference; the numbers are None when the image has no detectable face."""

    image: str
    distance: float | None
    cosine: float | None
    same_person: bool | None


@dataclass(frozen=True)
class IdentityReport:
    """Every image against the reference; the means cover only the images in which a face was found."""

    reference: str
    comparisons: tuple[Comparison, ...]
    mean_distance: float | None
    mean_cosine: float | None
    same_person_rate: float | None


@dataclass(frozen=True)
class _Models:
    detector: Any  # dlib.cnn_face_detection_model_v1
    landmarks: Any  # dlib.shape_predictor
    resnet: Any  # dlib.face_recognition_model_v1
    dlib: Any


def face_descriptor(image: FaceImage) -> Descriptor:
    """The 128-d dlib descriptor of the largest face in `image`; NoFace if there is none."""
    models = _models()  # first, so that a missing extra is reported before any decoding work
    pixels = _pixels(image)
    dlib = models.dlib
    height, width = pixels.shape[:2]
    scale = _detect_scale(width, height)
    detect_pixels = pixels if scale == 1.0 else _resized(pixels, scale)
    with _MODELS_LOCK:
        found = models.detector(detect_pixels, 0)
        if not found:
            raise NoFace(f"no face found in {_describe(image)}")
        # Several people, or a stray detection beside the subject: the largest face is the subject.
        box = max((detection.rect for detection in found), key=lambda rect: rect.area())
        if scale != 1.0:
            box = dlib.rectangle(
                round(box.left() / scale),
                round(box.top() / scale),
                round(box.right() / scale),
                round(box.bottom() / scale),
            )
        shape = models.landmarks(pixels, box)
        vector = models.resnet.compute_face_descriptor(pixels, shape, _JITTERS)
    return np.asarray(vector, dtype=np.float64)


def compare(
    reference: tuple[str, FaceImage],
    images: Sequence[tuple[str, FaceImage]],
    *,
    progress: Callable[[Comparison], None] | None = None,
) -> IdentityReport:
    """Each named image against the named reference photo.

    NoFace from the reference propagates (there is nothing to compare with); an image without a face
    becomes a Comparison with no numbers and is left out of the means. Images given as paths are read
    one at a time, so a long list does not sit in memory. `progress` hears each Comparison as it is made.
    """
    reference_name, reference_image = reference
    try:
        anchor = face_descriptor(reference_image)
    except NoFace:
        raise NoFace(
            f"no face found in the reference photo {reference_name}; use a photo in which the face is "
            "clearly visible, roughly frontal and not too small"
        ) from None
    comparisons = []
    for name, image in images:
        try:
            descriptor = face_descriptor(image)
        except NoFace:
            comparison = Comparison(image=name, distance=None, cosine=None, same_person=None)
        else:
            distance = float(np.linalg.norm(anchor - descriptor))
            comparison = Comparison(
                image=name,
                distance=distance,
                cosine=_cosine(anchor, descriptor),
                # dlib's rule is "less than 0.6".
                same_person=distance < SAME_PERSON_DISTANCE,
            )
        comparisons.append(comparison)
        if progress is not None:
            progress(comparison)
    return _report(reference_name, tuple(comparisons))


def load_image(path: Path) -> Image.Image:
    """An image file as upright 8-bit RGB; ValueError naming the file when it cannot be read."""
    try:
        with warnings.catch_warnings():
            # Pillow's UserWarnings ("Corrupt EXIF data", …) concern files it still decodes.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as opened:
                opened.load()
                return _to_rgb(_upright(opened))
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{path} is too large to read ({Image.MAX_IMAGE_PIXELS} pixels at most)") from None
    except Exception as exc:
        # Pillow reports a bad file with many exception types (OSError, SyntaxError, struct.error, …).
        raise ValueError(f"cannot read {path} as an image ({exc})") from None


def _report(reference: str, comparisons: tuple[Comparison, ...]) -> IdentityReport:
    distances = [c.distance for c in comparisons if c.distance is not None]
    cosines = [c.cosine for c in comparisons if c.cosine is not None]
    verdicts = [c.same_person for c in comparisons if c.same_person is not None]
    return IdentityReport(
        reference=reference,
        comparisons=comparisons,
        mean_distance=math.fsum(distances) / len(distances) if distances else None,
        mean_cosine=math.fsum(cosines) / len(cosines) if cosines else None,
        same_person_rate=sum(verdicts) / len(verdicts) if verdicts else None,
    )


def _cosine(a: Descriptor, b: Descriptor) -> float:
    # dlib's descriptors are not unit vectors (their norm is about 1.45), so normalise here.
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _detect_scale(width: int, height: int) -> float:
    long_edge = max(width, height)
    if long_edge < _DETECT_MIN_EDGE:
        return _DETECT_MIN_EDGE / long_edge
    if long_edge > _DETECT_MAX_EDGE:
        return _DETECT_MAX_EDGE / long_edge
    return 1.0


def _resized(pixels: npt.NDArray[np.uint8], scale: float) -> npt.NDArray[np.uint8]:
    height, width = pixels.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(resized, dtype=np.uint8)


def _pixels(image: FaceImage) -> npt.NDArray[np.uint8]:
    """A C-contiguous H×W×3 uint8 RGB array, which is what dlib's Python bindings accept."""
    if isinstance(image, Path):
        rgb = load_image(image)
    elif isinstance(image, Image.Image):
        rgb = _to_rgb(_upright(image))
    else:
        array = np.asarray(image)
        if (
            array.dtype != np.uint8
            or array.ndim not in (2, 3)
            or (array.ndim == 3 and array.shape[2] not in (3, 4))
        ):
            raise TypeError(
                f"expected a uint8 array of shape H×W, H×W×3 or H×W×4, got {array.dtype} {array.shape}"
            )
        rgb = _to_rgb(Image.fromarray(array))
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, so that a phone photo is seen the way it was taken."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Unreadable EXIF does not make the pixels unusable: keep the image as stored.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is composited on white (the way a viewer shows a cut-out portrait)."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _describe(image: FaceImage) -> str:
    if isinstance(image, Path):
        return str(image)
    if isinstance(image, Image.Image):
        width, height = image.size
    else:
        height, width = np.asarray(image).shape[:2]
    return f"the {width}×{height} image"


@functools.cache
def _models() -> _Models:
    """dlib and its three models, loaded once per process (about 0.5 s; the files are about 32 MB)."""
    try:
        # Imported by name: dlib ships no type information, and the extra may be absent.
        dlib: Any = importlib.import_module("dlib")
    except ImportError as exc:
        raise EvalUnavailable(f"identity evaluation needs dlib ({exc}); {INSTALL_HINT}") from None
    directory = _models_directory()
    files = {name: directory / name for name in (_DETECTOR_FILE, _LANDMARKS_FILE, _RESNET_FILE)}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise EvalUnavailable(
            f"dlib's model files {', '.join(missing)} are missing from {directory}; {INSTALL_HINT}"
        )
    try:
        return _Models(
            detector=dlib.cnn_face_detection_model_v1(str(files[_DETECTOR_FILE])),
            landmarks=dlib.shape_predictor(str(files[_LANDMARKS_FILE])),
            resnet=dlib.face_recognition_model_v1(str(files[_RESNET_FILE])),
            dlib=dlib,
        )
    except RuntimeError as exc:  # dlib's "Error deserializing object …" for a damaged file
        raise EvalUnavailable(f"cannot load dlib's models from {directory} ({exc}); {INSTALL_HINT}") from None


def _models_directory() -> Path:
    """The models/ folder of face_recognition_models, found without importing the package.

    Its __init__ imports pkg_resources, which current setuptools no longer provides; the data files
    are all we need, so the package is located by its import spec and read by path.
    """
    spec = importlib.util.find_spec(_MODELS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EvalUnavailable(
            f"identity evaluation needs dlib's face models ({_MODELS_PACKAGE}); {INSTALL_HINT}"
        )
    return Path(locations[0]) / "models"
