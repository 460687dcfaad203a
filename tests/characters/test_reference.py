"""Reference-photo intake on real photos (skimage.data), hostile files, and the content-addressed store."""

from __future__ import annotations

import functools
import io
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data as samples

from characters.images import ImageStore
from characters.reference import (
    CROP_SIZE,
    MAX_BYTES,
    MAX_PIXELS,
    PreparedReference,
    ReferenceRejected,
    prepare_reference,
)

Pixels = npt.NDArray[np.uint8]

DAMAGED = "damaged or not a complete image"


@functools.cache
def astronaut() -> Pixels:
    return np.asarray(samples.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]


def encode(image: Pixels | Image.Image, fmt: str, **options: Any) -> bytes:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    out = io.BytesIO()
    pil.save(out, fmt, **options)
    return out.getvalue()


def decoded(jpeg: bytes) -> Pixels:
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def assert_good_crop(ref: PreparedReference) -> None:
    with Image.open(io.BytesIO(ref.crop_jpeg)) as crop:
        assert (crop.format, crop.mode, crop.size) == ("JPEG", "RGB", (CROP_SIZE, CROP_SIZE))
    # The crop is itself a usable reference: one upright face, large in the frame.
    again = prepare_reference(ref.crop_jpeg)
    assert again.face_box[2] > CROP_SIZE // 3


def rejected(data: bytes) -> str:
    with pytest.raises(ReferenceRejected) as caught:
        prepare_reference(data)
    return str(caught.value)


# --- accepted photos -------------------------------------------------------------------------------


def test_astronaut_is_accepted_with_a_plausible_face_box() -> None:
    upload = encode(astronaut(), "JPEG", quality=95)
    ref = prepare_reference(upload)
    assert ref.original == upload
    assert (ref.original_format, ref.width, ref.height) == ("jpeg", 512, 512)
    x, y, w, h = ref.face_box  # the face is at about (177, 66, 95, 95)
    assert 160 <= x <= 195 and 50 <= y <= 85 and 80 <= w <= 115 and 80 <= h <= 115
    assert_good_crop(ref)
    assert "crop_jpeg" not in repr(ref) and "original=" not in repr(ref)


@pytest.mark.parametrize(
    ("fmt", "options", "sniffed"),
    [("PNG", {}, "png"), ("WEBP", {"quality": 90}, "webp"), ("WEBP", {"lossless": True}, "webp")],
)
def test_png_and_webp_are_accepted(fmt: str, options: dict[str, Any], sniffed: str) -> None:
    ref = prepare_reference(encode(astronaut(), fmt, **options))
    assert ref.original_format == sniffed
    assert 160 <= ref.face_box[0] <= 195


@pytest.mark.parametrize(("orientation", "turns"), [(6, 1), (8, -1)])
def test_exif_orientation_is_applied_before_looking_for_the_face(orientation: int, turns: int) -> None:
    portrait = astronaut()[:, :448]  # 448 wide, 512 tall, so the transposition shows in the size
    stored = np.ascontiguousarray(np.rot90(portrait, turns))
    assert "couldn't find a face" in rejected(encode(stored, "JPEG", quality=95))  # sideways: no face
    exif = Image.Exif()
    exif[0x0112] = orientation
    ref = prepare_reference(encode(stored, "JPEG", quality=95, exif=exif))
    assert (ref.width, ref.height) == (448, 512)
    assert 160 <= ref.face_box[0] <= 195 and 50 <= ref.face_box[1] <= 85
    assert_good_crop(ref)  # Haar only finds upright faces, so the crop is upright


def test_cmyk_jpeg_is_accepted_with_its_colours() -> None:
    rgb = prepare_reference(encode(astronaut(), "JPEG", quality=95))
    cmyk_upload = encode(Image.fromarray(astronaut()).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(cmyk_upload)) as probe:
        assert probe.mode == "CMYK"
    cmyk = prepare_reference(cmyk_upload)
    colour_gap = np.abs(decoded(rgb.crop_jpeg).mean(axis=(0, 1)) - decoded(cmyk.crop_jpeg).mean(axis=(0, 1)))
    assert colour_gap.max() < 12  # not inverted, not a grey cast


def test_sixteen_bit_pngs_are_scaled_not_clipped() -> None:
    grey16 = np.asarray(Image.fromarray(astronaut()).convert("L"), dtype=np.uint16) * 257
    grey_upload = encode(Image.fromarray(grey16), "PNG")
    with Image.open(io.BytesIO(grey_upload)) as probe:
        assert probe.mode.startswith("I")
    grey_ref = prepare_reference(grey_upload)
    assert 60 < decoded(grey_ref.crop_jpeg).mean() < 200  # clipping would make it all white

    ok, rgb16 = cv2.imencode(".png", astronaut()[..., ::-1].astype(np.uint16) * 257)
    assert ok
    assert struct.unpack(">B", rgb16.tobytes()[24:25])[0] == 16  # IHDR bit depth
    assert prepare_reference(rgb16.tobytes()).original_format == "png"


def test_transparency_is_composited_on_white() -> None:
    rgba = np.dstack([astronaut(), np.full((512, 512), 255, np.uint8)])
    rgba[:40] = 0  # transparent black above the hair
    ref = prepare_reference(encode(rgba, "PNG"))
    top_rows = decoded(ref.crop_jpeg)[5:20]
    assert top_rows.mean() > 235

    palette = Image.fromarray(astronaut()).quantize(255)
    palette.info["transparency"] = 0
    assert prepare_reference(encode(palette, "PNG", transparency=0)).original_format == "png"


def test_greyscale_and_mpo_jpegs_are_accepted() -> None:
    grey = Image.fromarray(astronaut()).convert("L")
    assert prepare_reference(encode(grey, "JPEG")).width == 512
    # A phone's multi-picture JPEG (photo + depth map or preview) is not an animation.
    mpo = encode(Image.fromarray(astronaut()), "MPO", save_all=True, append_images=[grey.convert("RGB")])
    with Image.open(io.BytesIO(mpo)) as probe:
        assert getattr(probe, "n_frames", 1) == 2
    assert prepare_reference(mpo).original_format == "jpeg"


# --- photos without exactly one usable face ----------------------------------------------------------


def test_a_cat_has_no_face() -> None:
    cat = samples.chelsea()  # type: ignore[no-untyped-call]
    message = rejected(encode(cat, "JPEG"))
    assert message == "I couldn't find a face in that image. Use a clear, front-facing photo of one person."


def test_several_faces_are_refused() -> None:
    tiled = np.tile(astronaut(), (2, 2, 1))
    assert rejected(encode(tiled, "JPEG", quality=90)) == "I found 4 faces; crop the photo to one person."


def test_one_large_face_dominates_a_smaller_one() -> None:
    canvas = np.full((1024, 1024, 3), 235, np.uint8)
    canvas[:512, :512] = astronaut()
    small = np.asarray(Image.fromarray(astronaut()).resize((256, 256), Image.Resampling.LANCZOS))
    canvas[700:956, 700:956] = small  # a face of about 47 px against one of 95 px: 4× smaller in area
    ref = prepare_reference(encode(canvas, "PNG"))
    assert 160 <= ref.face_box[0] <= 195 and ref.face_box[1] < 100


@pytest.mark.parametrize("width", [96, 256])
def test_a_small_face_is_too_small(width: int) -> None:
    tiny = Image.fromarray(astronaut()).resize((width, width), Image.Resampling.LANCZOS)
    message = rejected(encode(tiny, "PNG"))
    assert "too small" in message and "larger photo" in message
    side = int(message.split("(")[1].split(" px")[0])
    assert side == pytest.approx(width * 95 / 512, abs=4)


# --- files that are not acceptable images ------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of all-zero rows: megabytes of pixels in kilobytes of file."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("width", "height", "outer_filter"),
    [
        (20000, 20000, "error"),  # past Pillow's DecompressionBombError threshold
        (10000, 10000, "error"),  # Pillow's DecompressionBombWarning band...
        (10000, 10000, "ignore"),  # ...even where the caller ignores warnings
        (8000, 6000, "error"),  # under Pillow's limits, over ours
    ],
)
def test_decompression_bombs_are_refused(width: int, height: int, outer_filter: str) -> None:
    bomb = png_bomb(width, height)
    assert len(bomb) < 100_000
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter(outer_filter)  # type: ignore[arg-type]
        message = rejected(bomb)
    assert "too large" in message or "megapixels" in message
    assert f"{MAX_PIXELS // 1_000_000} megapixels" in message
    assert limit_before == Image.MAX_IMAGE_PIXELS


def test_our_pixel_limit_holds_when_pillows_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert "8000×6000" in rejected(png_bomb(8000, 6000))


def test_oversized_uploads_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an oversized upload")

    monkeypatch.setattr(Image, "open", no_decoding)
    message = rejected(b"\xff\xd8\xff\xe0" + bytes(MAX_BYTES))
    assert "10.0 MB, over the 10 MB limit" in message


def test_a_gif_is_refused_as_the_wrong_kind() -> None:
    frames = [Image.fromarray(astronaut()), Image.fromarray(astronaut()[::-1].copy())]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    message = rejected(gif)
    assert "GIF" in message and "JPEG, PNG or WebP" in message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animations_are_refused(fmt: str) -> None:
    frames = [Image.fromarray(astronaut()), Image.fromarray(astronaut()[::-1].copy())]
    animation = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(animation)) as probe:
        assert getattr(probe, "n_frames", 1) == 2
    assert "animated" in rejected(animation)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"just some text someone named portrait.png\n",
        bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)),
        b"\x00\x00\x00\x18ftypheic" + bytes(64),
    ],
)
def test_non_images_are_refused_whatever_their_name(data: bytes) -> None:
    assert "JPEG, PNG or WebP" in rejected(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_damaged(fmt: str) -> None:
    whole = encode(astronaut(), fmt)
    assert DAMAGED in rejected(whole[: len(whole) // 2])


@functools.cache
def small_uploads() -> tuple[bytes, ...]:
    face = Image.fromarray(astronaut()).resize((64, 64))
    return tuple(encode(face, fmt) for fmt in ("JPEG", "PNG", "WEBP"))


@st.composite
def mangled_uploads(draw: st.DrawFn) -> bytes:
    upload = bytearray(draw(st.sampled_from(small_uploads())))
    for _ in range(draw(st.integers(1, 6))):
        upload[draw(st.integers(0, len(upload) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        upload = upload[: draw(st.integers(0, len(upload)))]
    return bytes(upload)


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"GIF89a"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.tuples(st.sampled_from(MAGICS), st.binary(max_size=2048)).map(b"".join),
        mangled_uploads(),
    )
)
def test_arbitrary_bytes_raise_nothing_but_reference_rejected(data: bytes) -> None:
    outcome: PreparedReference | ReferenceRejected
    try:
        outcome = prepare_reference(data)
    except ReferenceRejected as error:
        outcome = error
    if isinstance(outcome, ReferenceRejected):
        assert str(outcome)  # a message for the user, never an empty one
    else:
        assert outcome.original == data


# --- the image store ---------------------------------------------------------------------------------


def test_store_put_get_and_layout(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    sha = store.put(b"reference bytes", ".JPG")
    assert len(sha) == 64
    assert store.path(sha) == tmp_path / sha[:2] / f"{sha}.jpg"
    assert store.get(sha) == b"reference bytes"
    assert store.exists(sha)
    assert [p.name for p in (tmp_path / sha[:2]).iterdir()] == [f"{sha}.jpg"]  # no temp files left


def test_store_duplicate_put_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageStore(tmp_path)
    sha = store.put(b"same", "png")

    def no_writes(*args: object, **kwargs: object) -> None:
        raise AssertionError("wrote a duplicate")

    monkeypatch.setattr(tempfile, "mkstemp", no_writes)
    assert store.put(b"same", "png") == sha
    assert store.put(b"same", "webp") == sha  # the bytes decide identity, not the extension
    assert store.path(sha).suffix == ".png"


def test_store_delete_and_missing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    sha = store.put(b"gone soon", "webp")
    assert store.delete(sha)
    assert not store.delete(sha)
    assert not store.exists(sha)
    with pytest.raises(KeyError):
        store.path(sha)
    with pytest.raises(KeyError):
        store.get(sha)


@pytest.mark.parametrize(
    "sha", ["../../etc/passwd", "ab/../../" + "0" * 55, "0" * 63, "A" * 64, "0" * 63 + "*", "0" * 64 + "/"]
)
def test_store_refuses_malformed_shas(tmp_path: Path, sha: str) -> None:
    store = ImageStore(tmp_path)
    for operation in (store.path, store.get, store.delete, store.exists):
        with pytest.raises(ValueError, match="not a sha256"):
            operation(sha)


@pytest.mark.parametrize("ext", ["", "../png", "p/ng", "png\x00", "a" * 11])
def test_store_refuses_odd_extensions(tmp_path: Path, ext: str) -> None:
    with pytest.raises(ValueError, match="not a file extension"):
        ImageStore(tmp_path).put(b"x", ext)
