"""Sizes: an image's aspect ratio at a model's pixel area, in multiples of 64."""

from __future__ import annotations

import pytest

from router.sizes import RESOLUTION_CLASSES, size_for_area

SVD_XT_AREA = RESOLUTION_CLASSES["svd"]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1920, 1080), (1024, 576)),
        ((1024, 576), (1024, 576)),
        ((1080, 1920), (576, 1024)),
        ((1024, 1024), (768, 768)),
        ((832, 1216), (640, 960)),
        ((21, 9), (1152, 512)),
    ],
)
def test_size_for_area_keeps_the_aspect_at_svd_xt_area(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert size_for_area(*size, SVD_XT_AREA) == expected


@pytest.mark.parametrize("size", [(1, 1), (333, 777), (1216, 832), (4000, 3000), (700, 400)])
def test_size_for_area_is_in_multiples_near_the_area(size: tuple[int, int]) -> None:
    width, height = size_for_area(*size, SVD_XT_AREA)
    assert width % 64 == 0
    assert height % 64 == 0
    assert abs(width * height - SVD_XT_AREA) / SVD_XT_AREA < 0.2
    assert abs(width / height - size[0] / size[1]) / (size[0] / size[1]) < 0.1


def test_size_for_area_refuses_an_empty_image() -> None:
    with pytest.raises(ValueError, match=r"image size must be positive, got 0x10"):
        size_for_area(0, 10, SVD_XT_AREA)
