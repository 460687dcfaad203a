"""Video files out: H.264 MP4 with the recipe in its metadata, animated WebP/GIF previews, and encodings
that fit a chat upload limit.

The MP4s are made by the ffmpeg binary that the imageio-ffmpeg wheel carries, fed raw RGB frames on
its standard input. Blocking and CPU-bound: call these from a thread in async code.
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, features

MIN_VIDEO_BUDGET = 16 * 1024
"""Smallest byte budget `fit_video` and `fit_preview` accept; below it no clip is worth posting."""

MIN_VIDEO_SIDE = 64
"""`fit_video` and `fit_preview` give up rather than shrink a clip's shorter side below this."""

# CRF 18 looks like the source; each +6 roughly halves the file. 30 is as far as a portrait clip goes
# before the face turns to blocks; past it, a smaller frame looks better than more artefacts.
_CRF_STEPS = (18, 22, 26, 30)
_WEBP_QUALITIES = (80, 65, 50)
_GIF_COLOURS = (256, 128, 64)
_DOWNSCALE = 0.85
# How much of ffmpeg's stderr an error shows. Its threads report one failure several times over, and
# the first lines usually name the cause.
_STDERR_LINES = 12
_STDERR_FIRST_LINES = 3
# x264's default; "slower" saves ~10% at about twice the time, not worth it for a few seconds of video.
_X264_PRESET = "medium"


@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg says about a file's first video stream."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    fps: float


# --- MP4 ---------------------------------------------------------------------------------------------


def encode_mp4(frames: Sequence[Image.Image], fps: int, *, crf: int = 18, comment: str = "") -> bytes:
    """`frames` as an H.264 MP4 (yuv420p, BT.709, moov first so it plays while downloading).

    An odd width or height is scaled to the even size below it (H.264 4:2:0 needs even sides). `comment`
    is written as the file's comment tag (read it back with `read_mp4_comment`). Raises RuntimeError,
    with ffmpeg's last words, when ffmpeg fails.
    """
    width, height = _common_size(frames)
    return _encode_mp4(frames, fps, crf=crf, comment=comment, size=(_even(width), _even(height)))


def read_mp4_comment(data: bytes) -> str:
    """The comment tag of an MP4 (or any file ffmpeg reads); "" when it has none."""
    with _as_file(data) as path:
        result = _ffmpeg(["-v", "error", "-i", str(path), "-f", "ffmetadata", "-"])
    if result.returncode != 0:
        raise ValueError(f"not a readable video: {_tail(result.stderr)}")
    return _ffmetadata(result.stdout.decode("utf-8", errors="replace")).get("comment", "")


def probe_video(data: bytes) -> VideoInfo:
    """Codec, pixel format, size, frame count and frame rate of the first video stream in `data`."""
    with _as_file(data) as path:
        result = _ffmpeg(["-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"])
    stderr = result.stderr.decode("utf-8", errors="replace")
    stream = re.search(r"Stream #\d+:\d+\S*: Video: (.*)", stderr)
    if result.returncode != 0 or stream is None:
        raise ValueError(f"not a readable video: {_tail(result.stderr)}")
    # "h264 (High) (avc1 / …), yuv420p(tv, bt709, progressive), 512x512 [SAR 1:1 DAR 1:1], 283 kb/s, 8 fps"
    parts = _split_top_level(stream.group(1))
    size = re.search(r"(\d+)x(\d+)", parts[2]) if len(parts) > 2 else None
    fps = re.search(r"([\d.]+) fps", stream.group(1))
    counted = re.findall(r"frame=\s*(\d+)", stderr)
    if size is None or fps is None or not counted:
        raise ValueError(f"ffmpeg's description of the video is not one this reader knows: {stream.group(0)}")
    return VideoInfo(
        codec=parts[0].split()[0],
        pix_fmt=parts[1].split("(")[0].strip(),
        width=int(size.group(1)),
        height=int(size.group(2)),
        frames=int(counted[-1]),
        fps=float(fps.group(1)),
    )


def fit_video(frames: Sequence[Image.Image], fps: int, budget_bytes: int, *, comment: str = "") -> bytes:
    """`encode_mp4` of `frames` in at most `budget_bytes`.

    CRF 18, 22, 26 then 30; then 0.85× smaller frames at CRF 30 until it fits. Raises ValueError for a
    budget under `MIN_VIDEO_BUDGET`, or when even frames with a `MIN_VIDEO_SIDE` shorter side do not fit.
    """
    _check_budget(budget_bytes)
    width, height = _common_size(frames)
    size = (_even(width), _even(height))
    for crf in _CRF_STEPS:
        data = _encode_mp4(frames, fps, crf=crf, comment=comment, size=size)
        if len(data) <= budget_bytes:
            return data
    fitted = _fit_by_scaling(
        _smaller_sizes(width, height),
        (size, len(data)),
        budget_bytes,
        lambda scaled: _encode_mp4(frames, fps, crf=_CRF_STEPS[-1], comment=comment, size=scaled),
    )
    if fitted is not None:
        return fitted
    raise ValueError(f"could not fit {len(frames)} frames of video in budget_bytes={budget_bytes}")


def _encode_mp4(
    frames: Sequence[Image.Image], fps: int, *, crf: int, comment: str, size: tuple[int, int]
) -> bytes:
    width, height = _common_size(frames)
    if fps < 1:
        raise ValueError(f"fps must be 1 or more, not {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be between 0 and 51 (18 looks like the source), not {crf}")
    # Tag the colours as well as convert them: players guess BT.601 or BT.709 for untagged video, and
    # the two guesses differ visibly on skin. setparams writes the tags into the stream.
    video_filter = (
        f"scale={size[0]}:{size[1]}:flags=lanczos+accurate_rnd+full_chroma_int"
        ":out_color_matrix=bt709:out_range=tv,format=yuv420p"
        ",setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709"
    )
    with tempfile.TemporaryDirectory(prefix="likeness-video-") as tmp:
        # The MP4 muxer seeks back to write its index (and +faststart moves it to the front): it cannot
        # write to a pipe, so the output goes through a file.
        out = Path(tmp) / "video.mp4"
        log = Path(tmp) / "ffmpeg.log"
        args = [
            *("-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"),
            *("-framerate", str(fps), "-i", "pipe:0", "-an", "-vf", video_filter),
            *("-c:v", "libx264", "-preset", _X264_PRESET, "-crf", str(crf), "-pix_fmt", "yuv420p"),
            *("-movflags", "+faststart", "-metadata", f"comment={comment}", "-y", str(out)),
        ]
        with log.open("wb") as stderr:
            # stderr to a file, not a pipe: ffmpeg could fill a pipe and block while we write frames.
            process = subprocess.Popen(
                [_ffmpeg_exe(), "-hide_banner", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            assert process.stdin is not None
            try:
                try:
                    for frame in frames:
                        process.stdin.write(frame.convert("RGB").tobytes())
                except BrokenPipeError:
                    pass  # ffmpeg stopped reading: it has failed, and says why below
                finally:
                    with suppress(BrokenPipeError):
                        process.stdin.close()
                returncode = process.wait()
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"ffmpeg could not encode the video (exit {returncode}): {_tail(log.read_bytes())}"
            )
        return out.read_bytes()


# --- animated previews -------------------------------------------------------------------------------


def encode_preview(frames: Sequence[Image.Image], fps: int) -> tuple[bytes, str]:
    """An endlessly looping animation of `frames` to show inline; returns (data, media type).

    Animated WebP where this Pillow can write it, else GIF with an adaptive palette per frame.
    """
    return _encode_preview(frames, fps, level=0)


def fit_preview(frames: Sequence[Image.Image], fps: int, budget_bytes: int) -> tuple[bytes, str]:
    """`encode_preview` of `frames` in at most `budget_bytes`; returns (data, media type).

    Lower quality step by step (WebP quality 80, 65, 50; GIF 256, 128, 64 colours), then 0.85× smaller
    frames at the lowest quality. Raises ValueError like `fit_video`.
    """
    _check_budget(budget_bytes)
    width, height = _common_size(frames)
    webp = can_write_animated_webp()
    media_type = "image/webp" if webp else "image/gif"
    levels = len(_WEBP_QUALITIES) if webp else len(_GIF_COLOURS)
    for level in range(levels):
        data, _ = _encode_preview(frames, fps, level=level)
        if len(data) <= budget_bytes:
            return data, media_type

    def encode_smaller(scaled: tuple[int, int]) -> bytes:
        smaller = [frame.resize(scaled, Image.Resampling.LANCZOS) for frame in frames]
        return _encode_preview(smaller, fps, level=levels - 1)[0]

    fitted = _fit_by_scaling(
        _smaller_sizes(width, height, even=False), ((width, height), len(data)), budget_bytes, encode_smaller
    )
    if fitted is not None:
        return fitted, media_type
    raise ValueError(f"could not fit a {len(frames)}-frame preview in budget_bytes={budget_bytes}")


def can_write_animated_webp() -> bool:
    """Whether this Pillow was built with libwebp's animation support."""
    Image.init()
    return bool(features.check_module("webp")) and "WEBP" in Image.SAVE_ALL


def _encode_preview(frames: Sequence[Image.Image], fps: int, *, level: int) -> tuple[bytes, str]:
    _common_size(frames)
    if fps < 1:
        raise ValueError(f"fps must be 1 or more, not {fps}")
    duration = round(1000 / fps)
    buffer = io.BytesIO()
    if can_write_animated_webp():
        rgb = [frame.convert("RGB") for frame in frames]
        rgb[0].save(
            buffer,
            format="WEBP",
            save_all=True,
            append_images=rgb[1:],
            duration=duration,
            loop=0,
            quality=_WEBP_QUALITIES[min(level, len(_WEBP_QUALITIES) - 1)],
            method=4,
        )
        return buffer.getvalue(), "image/webp"
    colours = _GIF_COLOURS[min(level, len(_GIF_COLOURS) - 1)]
    paletted = [
        frame.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=colours) for frame in frames
    ]
    # GIF counts time in hundredths of a second; Pillow rounds the milliseconds.
    paletted[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=paletted[1:],
        duration=duration,
        loop=0,
        optimize=False,
    )
    return buffer.getvalue(), "image/gif"


# --- helpers -----------------------------------------------------------------------------------------


def _common_size(frames: Sequence[Image.Image]) -> tuple[int, int]:
    if not frames:
        raise ValueError("need at least one frame")
    size = frames[0].size
    for index, frame in enumerate(frames):
        if frame.size != size:
            raise ValueError(f"frame {index} is {frame.width}x{frame.height}; frame 0 is {size[0]}x{size[1]}")
    return size


def _even(side: int) -> int:
    return max(2, side - side % 2)


def _smaller_sizes(width: int, height: int, *, even: bool = True) -> list[tuple[int, int]]:
    """0.85× steps down from `width`×`height` until the shorter side would go under MIN_VIDEO_SIDE."""
    sizes: list[tuple[int, int]] = []
    scale = 1.0
    while True:
        scale *= _DOWNSCALE
        size = (round(width * scale), round(height * scale))
        if even:
            size = (_even(size[0]), _even(size[1]))
        if min(size) < MIN_VIDEO_SIDE:
            return sizes
        sizes.append(size)


def _fit_by_scaling(
    sizes: Sequence[tuple[int, int]],
    measured: tuple[tuple[int, int], int],
    budget_bytes: int,
    encode: Callable[[tuple[int, int]], bytes],
) -> bytes | None:
    """The encoding at the first of `sizes` that fits in `budget_bytes`; None when none does.

    `measured` is a size already tried and its bytes. At a fixed quality a file shrinks more slowly
    than its pixel count (each pixel of a smaller frame carries more detail), so a size whose share of
    the last file is still over budget cannot fit and is skipped; the smallest size is always tried.
    """
    (width, height), size_bytes = measured
    pixels = width * height
    for index, size in enumerate(sizes):
        area = size[0] * size[1]
        if index < len(sizes) - 1 and size_bytes * area / pixels > budget_bytes:
            continue
        data = encode(size)
        if len(data) <= budget_bytes:
            return data
        pixels, size_bytes = area, len(data)
    return None


def _check_budget(budget_bytes: int) -> None:
    if budget_bytes < MIN_VIDEO_BUDGET:
        raise ValueError(
            f"budget_bytes={budget_bytes} is too small for a video; the minimum is {MIN_VIDEO_BUDGET}"
        )


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg  # type: ignore[import-untyped]  # untyped; one function used

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def _ffmpeg(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True, check=False
    )


@contextmanager
def _as_file(data: bytes) -> Iterator[Path]:
    """`data` in a temporary file, for ffmpeg to seek in (an MP4's index may be at its end)."""
    with tempfile.TemporaryDirectory(prefix="likeness-video-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        yield path


def _tail(stderr: bytes) -> str:
    """ffmpeg's complaint on one line: its last lines, and its first ones, where the cause usually is."""
    lines = [line for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if len(lines) > _STDERR_LINES:
        lines = [*lines[:_STDERR_FIRST_LINES], "…", *lines[-(_STDERR_LINES - _STDERR_FIRST_LINES) :]]
    return " | ".join(lines) or "(ffmpeg said nothing)"


def _split_top_level(text: str) -> list[str]:
    """`text` split at the commas that are not inside parentheses or brackets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _ffmetadata(text: str) -> dict[str, str]:
    """The global tags of ffmpeg's ffmetadata format (`key=value` lines, `\\` escapes `=;#\\` and newline)."""
    tags: dict[str, str] = {}
    entries: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append("\\" + next(chars, ""))
        elif char == "\n":
            entries.append("".join(current))
            current = []
        else:
            current.append(char)
    entries.append("".join(current))
    for entry in entries:
        if entry.startswith("["):
            break  # stream and chapter sections follow the global ones
        if not entry or entry.startswith((";", "#")):
            continue
        key, value = _split_unescaped(entry)
        if key is not None:
            tags[key.lower()] = value
    return tags


def _split_unescaped(entry: str) -> tuple[str | None, str]:
    """`key=value` with escapes removed from both; (None, "") when the entry has no unescaped `=`."""
    key: list[str] = []
    value: list[str] = []
    target = key
    found = False
    i = 0
    while i < len(entry):
        char = entry[i]
        if char == "\\" and i + 1 < len(entry):
            target.append(entry[i + 1])
            i += 2
            continue
        if char == "=" and not found:
            found = True
            target = value
        else:
            target.append(char)
        i += 1
    return ("".join(key), "".join(value)) if found else (None, "")
