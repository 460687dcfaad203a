"""Video out: H.264 MP4s that carry their recipe, animated previews, and fitting an upload budget."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data

import jobs.video
from jobs.video import (
    MIN_VIDEO_BUDGET,
    can_write_animated_webp,
    encode_mp4,
    encode_preview,
    fit_preview,
    fit_video,
    probe_video,
    read_mp4_comment,
)

FPS = 8
RECIPE = '{"prompt": "a portrait; of @mara = café\\\\noir", "seed": 7}\n#second line\\'


def astronaut_frames(count: int, size: int) -> list[Image.Image]:
    """A real photo panning sideways: content that compresses like a generated clip does."""
    astronaut: Any = data.astronaut  # skimage is untyped
    still = np.asarray(Image.fromarray(astronaut()).resize((size, size), Image.Resampling.LANCZOS))
    return [Image.fromarray(np.roll(still, 3 * i, axis=1)) for i in range(count)]


@pytest.fixture(scope="module")
def frames() -> list[Image.Image]:
    return astronaut_frames(25, 512)


@pytest.fixture(scope="module")
def small_frames() -> list[Image.Image]:
    return astronaut_frames(12, 192)


@pytest.fixture(scope="module")
def mp4(frames: list[Image.Image]) -> bytes:
    return encode_mp4(frames, FPS, comment=RECIPE)


def open_animation(data: bytes) -> Any:
    """The animation in `data`, opened (typed Any: n_frames belongs to the animated formats' classes)."""
    return Image.open(io.BytesIO(data))


# --- MP4 ---------------------------------------------------------------------------------------------


def test_mp4_is_h264_yuv420p_with_every_frame(mp4: bytes) -> None:
    info = probe_video(mp4)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.width, info.height) == (512, 512)
    assert info.frames == 25
    assert info.fps == FPS


def test_mp4_index_comes_first_for_streaming(mp4: bytes) -> None:
    # +faststart: the moov box (the index) precedes mdat (the frames), so players start before the end.
    assert 0 < mp4.find(b"moov") < mp4.find(b"mdat")


def test_comment_round_trips(mp4: bytes) -> None:
    assert read_mp4_comment(mp4) == RECIPE


def test_no_comment_reads_empty(small_frames: list[Image.Image]) -> None:
    assert read_mp4_comment(encode_mp4(small_frames, FPS)) == ""


@pytest.mark.parametrize(("size", "even"), [((101, 77), (100, 76)), ((64, 3), (64, 2)), ((1, 1), (2, 2))])
def test_odd_sizes_become_even(size: tuple[int, int], even: tuple[int, int]) -> None:
    clip = [frame.resize(size) for frame in astronaut_frames(5, 128)]
    info = probe_video(encode_mp4(clip, 12))
    assert (info.width, info.height) == even
    assert (info.frames, info.fps) == (5, 12)


def test_fit_video_returns_the_first_encoding_when_it_fits(mp4: bytes, frames: list[Image.Image]) -> None:
    assert fit_video(frames, FPS, len(mp4), comment=RECIPE) == mp4


def test_fit_video_raises_crf_to_fit(mp4: bytes, frames: list[Image.Image]) -> None:
    budget = len(mp4) * 2 // 3
    fitted = fit_video(frames, FPS, budget, comment=RECIPE)
    assert len(fitted) <= budget
    info = probe_video(fitted)
    assert (info.width, info.height, info.frames) == (512, 512, 25)
    assert read_mp4_comment(fitted) == RECIPE


def test_fit_video_downscales_when_quality_is_not_enough(mp4: bytes, frames: list[Image.Image]) -> None:
    budget = len(mp4) // 4  # CRF 30 alone leaves the clip at about a third
    fitted = fit_video(frames, FPS, budget)
    assert len(fitted) <= budget
    info = probe_video(fitted)
    assert info.width < 512
    assert info.width % 2 == info.height % 2 == 0
    assert info.frames == 25


def test_budget_under_the_minimum_is_refused(small_frames: list[Image.Image]) -> None:
    with pytest.raises(ValueError, match=r"budget_bytes=1000 is too small"):
        fit_video(small_frames, FPS, 1000)
    with pytest.raises(ValueError, match=r"budget_bytes=1000 is too small"):
        fit_preview(small_frames, FPS, 1000)


def test_budget_no_size_can_meet_is_refused() -> None:
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(60)]
    with pytest.raises(ValueError, match=rf"could not fit 60 frames .* budget_bytes={MIN_VIDEO_BUDGET}"):
        fit_video(noise, FPS, MIN_VIDEO_BUDGET)


def test_encoder_failure_names_ffmpegs_complaint(
    small_frames: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs.video, "_X264_PRESET", "warp-speed")
    with pytest.raises(RuntimeError, match=r"ffmpeg could not encode .*invalid preset 'warp-speed'"):
        encode_mp4(small_frames, FPS)


def test_bad_frames_and_settings_are_refused(small_frames: list[Image.Image]) -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        encode_mp4([], FPS)
    with pytest.raises(ValueError, match=r"frame 1 is 10x10; frame 0 is 192x192"):
        encode_mp4([small_frames[0], Image.new("RGB", (10, 10))], FPS)
    with pytest.raises(ValueError, match="fps must be 1 or more, not 0"):
        encode_mp4(small_frames, 0)
    with pytest.raises(ValueError, match="crf must be between 0 and 51"):
        encode_mp4(small_frames, FPS, crf=60)


def test_probe_refuses_what_is_not_a_video() -> None:
    with pytest.raises(ValueError, match="not a readable video"):
        probe_video(b"not a video at all")
    with pytest.raises(ValueError, match="not a readable video"):
        read_mp4_comment(b"not a video at all")


# --- previews ----------------------------------------------------------------------------------------


def test_this_pillow_writes_animated_webp() -> None:
    assert can_write_animated_webp()


def test_webp_preview_loops_every_frame(small_frames: list[Image.Image]) -> None:
    preview, media_type = encode_preview(small_frames, FPS)
    assert media_type == "image/webp"
    with open_animation(preview) as image:
        assert image.format == "WEBP"
        assert image.n_frames == len(small_frames)
        assert image.size == (192, 192)
        assert image.info["loop"] == 0
        image.seek(image.n_frames - 1)
        image.load()  # Pillow reads a WebP frame's timing when it decodes the frame
        assert image.info["duration"] == 1000 // FPS
        assert image.info["timestamp"] == (image.n_frames - 1) * 1000 // FPS


def test_gif_when_pillow_has_no_animated_webp(
    small_frames: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs.video, "can_write_animated_webp", lambda: False)
    preview, media_type = encode_preview(small_frames, FPS)
    assert media_type == "image/gif"
    with open_animation(preview) as image:
        assert image.format == "GIF"
        assert image.n_frames == len(small_frames)
        assert image.info["loop"] == 0
        # GIF keeps hundredths of a second: 125 ms is stored as 12 or 13.
        assert abs(image.info["duration"] - 1000 / FPS) <= 10
        image.seek(3)
        assert len(image.convert("RGB").getcolors(256 * 256) or []) > 64


@pytest.mark.parametrize("webp", [True, False])
def test_fit_preview_shrinks_to_the_budget(
    small_frames: list[Image.Image], webp: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs.video, "can_write_animated_webp", lambda: webp)
    full, media_type = encode_preview(small_frames, FPS)
    assert fit_preview(small_frames, FPS, len(full)) == (full, media_type)
    for budget in (len(full) * 2 // 3, len(full) // 5):
        fitted, fitted_type = fit_preview(small_frames, FPS, budget)
        assert fitted_type == media_type
        assert len(fitted) <= budget
        with open_animation(fitted) as image:
            assert image.n_frames == len(small_frames)
    with open_animation(fitted) as image:
        assert image.width < 192
