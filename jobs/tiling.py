"""Tiling for upscalers: overlapping tiles, feather-blended one row at a time.

Memory stays bounded: tiles are blended one row at a time in a float strip, and only the finished uint8
output grows with the image. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image

from router.engines import UPSCALE_FACTORS

# Latent upscalers work on sides that are multiples of 8; inputs are padded to it and outputs cropped.
_SIDE_MULTIPLE = 8

RunTile = Callable[[Image.Image, int], Image.Image]
Box = tuple[int, int, int, int]
FloatArray = npt.NDArray[np.float32]


# --- tiling -------------------------------------------------------------------------------------------


def check_factor(factor: int) -> None:
    if factor not in UPSCALE_FACTORS:
        allowed = ", ".join(map(str, UPSCALE_FACTORS))
        raise ValueError(f"`factor` must be one of {allowed} but is {factor}")


def check_tiling(factor: int, tile: int, overlap: int) -> None:
    """Raise ValueError, naming the field, unless the factor and tile geometry are usable."""
    check_factor(factor)
    if tile <= 0 or tile % _SIDE_MULTIPLE:
        raise ValueError(f"`tile` must be a positive multiple of {_SIDE_MULTIPLE} but is {tile}")
    if overlap < 0 or 2 * overlap >= tile:
        raise ValueError(
            f"`overlap` must be at least 0 and less than half the tile ({tile}) but is {overlap}"
        )


def padded_size(width: int, height: int) -> tuple[int, int]:
    """The size an input is padded to before tiling: each side rounded up to a multiple of 8."""
    return _round_up(width), _round_up(height)


def _round_up(side: int) -> int:
    return -(-side // _SIDE_MULTIPLE) * _SIDE_MULTIPLE


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of each tile along a side of `length` pixels, first to last.

    Tiles step by `tile - overlap`; the last one is shifted back to end exactly at the edge, so every
    tile is full size (it may then overlap its neighbour by more). A side shorter than a tile is one tile.
    """
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    count = -(-(length - tile) // stride) + 1
    starts = [min(i * stride, length - tile) for i in range(count)]
    return [(start, start + tile) for start in starts]


def tile_boxes(width: int, height: int, tile: int, overlap: int) -> list[Box]:
    """(left, top, right, bottom) of every tile of a `width` x `height` image, row by row.

    The position in this list is the tile index passed to `run_tile`.
    """
    columns = tile_spans(width, tile, overlap)
    return [
        (left, top, right, bottom)
        for top, bottom in tile_spans(height, tile, overlap)
        for left, right in columns
    ]


def _ramp(n: int) -> FloatArray:
    """A raised-cosine ramp from near 0 to near 1 over n pixels; it and its reverse sum to 1 everywhere."""
    x = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


def _axis_weights(spans: list[tuple[int, int]], i: int, factor: int) -> FloatArray:
    """Blend weights along one side of tile i, in output pixels: ramps only towards its neighbours."""
    start, end = spans[i]
    weights = np.ones((end - start) * factor, dtype=np.float32)
    if i > 0:
        shared = (spans[i - 1][1] - start) * factor
        if shared > 0:
            weights[:shared] *= _ramp(shared)
    if i + 1 < len(spans):
        shared = (end - spans[i + 1][0]) * factor
        if shared > 0:
            weights[-shared:] *= _ramp(shared)[::-1]
    return weights


def _pad(image: Image.Image) -> Image.Image:
    """`image` with its right and bottom edges replicated up to sides that are multiples of 8."""
    width, height = image.size
    padded_width, padded_height = padded_size(width, height)
    if (padded_width, padded_height) == (width, height):
        return image
    pixels = np.asarray(image)
    pad = ((0, padded_height - height), (0, padded_width - width), (0, 0))
    return Image.fromarray(np.pad(pixels, pad, mode="edge"))


def _tile_pixels(result: Image.Image, size: tuple[int, int], factor: int, model_scale: int) -> FloatArray:
    """A tile's result as float pixels at `factor` times its input `size`."""
    expected = (size[0] * model_scale, size[1] * model_scale)
    if result.size != expected:
        raise ValueError(
            f"a tile of {size[0]}x{size[1]} came back as {result.size[0]}x{result.size[1]}, "
            f"not {expected[0]}x{expected[1]} (model scale {model_scale})"
        )
    result = result.convert("RGB")
    if model_scale != factor:
        result = result.resize((size[0] * factor, size[1] * factor), Image.Resampling.LANCZOS)
    return np.asarray(result, dtype=np.float32)


def tiled_upscale(
    image: Image.Image,
    factor: int,
    run_tile: RunTile,
    *,
    model_scale: int,
    tile: int,
    overlap: int,
    on_tile: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """`image` upscaled `factor` times, tile by tile: an RGB image of exactly factor x its size.

    `run_tile(tile_image, tile_index)` must return the tile scaled by `model_scale`; when that differs
    from `factor` the result is resized (Lanczos) to fit. Overlapping results are blended with raised-
    cosine weights that ramp only towards a neighbour, so image edges keep full weight. Sides that are not
    multiples of 8 are padded by edge replication and the output cropped back. Rows of tiles are
    accumulated one at a time in a float strip; only the uint8 output spans the whole image.
    `on_tile(done, total)` is called after each tile.
    """
    check_tiling(factor, tile, overlap)
    if model_scale < 1:
        raise ValueError(f"`model_scale` must be at least 1 but is {model_scale}")
    source = image.convert("RGB")
    width, height = source.size
    padded = _pad(source)
    columns = tile_spans(padded.width, tile, overlap)
    rows = tile_spans(padded.height, tile, overlap)
    total = len(columns) * len(rows)
    column_weights = [_axis_weights(columns, i, factor) for i in range(len(columns))]
    strip_width = padded.width * factor
    out = np.empty((height * factor, width * factor, 3), dtype=np.uint8)

    # Sums for the output rows that the previous row of tiles shares with the next one.
    carried: tuple[FloatArray, FloatArray] | None = None
    index = 0
    for r, (top, bottom) in enumerate(rows):
        strip_top = top * factor
        strip_rows = (bottom - top) * factor
        values = np.zeros((strip_rows, strip_width, 3), dtype=np.float32)
        weights = np.zeros((strip_rows, strip_width), dtype=np.float32)
        if carried is not None:
            shared = carried[1].shape[0]
            values[:shared] = carried[0]
            weights[:shared] = carried[1]
            carried = None
        row_weights = _axis_weights(rows, r, factor)
        for c, (left, right) in enumerate(columns):
            result = run_tile(padded.crop((left, top, right, bottom)), index)
            pixels = _tile_pixels(result, (right - left, bottom - top), factor, model_scale)
            weight = np.outer(row_weights, column_weights[c])
            pixels *= weight[:, :, None]
            values[:, left * factor : right * factor] += pixels
            weights[:, left * factor : right * factor] += weight
            index += 1
            if on_tile is not None:
                on_tile(index, total)
        # Rows above the next row of tiles are final; the rest carries over.
        finished = rows[r + 1][0] * factor - strip_top if r + 1 < len(rows) else strip_rows
        _write_rows(out, values[:finished], weights[:finished], strip_top)
        if finished < strip_rows:
            carried = (values[finished:].copy(), weights[finished:].copy())
        del values, weights
    return Image.fromarray(out)


def _write_rows(out: npt.NDArray[np.uint8], values: FloatArray, weights: FloatArray, top: int) -> None:
    """Normalise blended rows (in place) and store those inside the cropped output at row `top`."""
    visible = min(values.shape[0], out.shape[0] - top)
    if visible <= 0:
        return
    values = values[:visible, : out.shape[1]]
    np.divide(values, weights[:visible, : out.shape[1], None], out=values)
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    out[top : top + visible] = values
