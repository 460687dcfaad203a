"""Which engine runs Upscale and Animate, at what size, and what a worker serves by default."""

from __future__ import annotations

import pytest

from router.catalog import Catalog, load_catalog
from router.engines import (
    MAX_EDGE,
    default_worker_profiles,
    engine_for,
    motion_plan,
    upscale_size,
)
from router.route import RouteError


def with_weights(*checkpoints: str) -> Catalog:
    """The shipped catalog on a host holding these real checkpoints (tiny ones are always there)."""
    return load_catalog(probe=lambda checkpoint: checkpoint.startswith("tiny:") or checkpoint in checkpoints)


def test_a_tiny_image_goes_to_the_tiny_engines(tiny_catalog: Catalog) -> None:
    upscale = engine_for("upscale", tiny_catalog, "tiny-xl")
    assert upscale.profile.name == "tiny-upscale"
    assert "tiny" in upscale.reasons[0]
    assert engine_for("animate", tiny_catalog, "tiny-sd15").profile.name == "tiny-svd"


def test_a_real_image_goes_to_the_first_real_upscaler_with_weights() -> None:
    catalog = with_weights("SG161222/RealVisXL_V5.0", "stabilityai/stable-diffusion-x4-upscaler")
    choice = engine_for("upscale", catalog, "photoreal-xl")
    assert choice.profile.name == "x4-upscaler"
    assert "x4-upscaler" in choice.reasons[0]


def test_a_real_image_never_goes_to_a_tiny_engine_and_falls_back_to_lanczos_with_the_reason() -> None:
    catalog = with_weights("SG161222/RealVisXL_V5.0")
    choice = engine_for("upscale", catalog, "photoreal-xl")
    assert choice.profile.name == "lanczos"
    assert "no upscale weights" in choice.reasons[0] and "no new detail" in choice.reasons[0]


def test_animate_without_a_video_model_is_refused_with_the_fix() -> None:
    catalog = with_weights("SG161222/RealVisXL_V5.0")
    with pytest.raises(RouteError, match=r"no model to animate images with.*family svd"):
        engine_for("animate", catalog, "photoreal-xl")


def test_an_unknown_parent_profile_is_judged_by_the_default(tiny_catalog: Catalog) -> None:
    assert engine_for("upscale", tiny_catalog, "retired-profile").profile.name == "tiny-upscale"


@pytest.mark.parametrize(
    ("size", "factor", "expected"),
    [((832, 1216), 2, (1664, 2432)), ((1024, 1024), 4, (4096, 4096)), ((256, 384), 4, (1024, 1536))],
)
def test_upscale_sizes(size: tuple[int, int], factor: int, expected: tuple[int, int]) -> None:
    assert upscale_size(*size, factor) == expected


def test_upscale_past_the_cap_names_the_largest_allowed_factor() -> None:
    with pytest.raises(RouteError, match=r"832×1216 by 4× would make 3328×4864.*largest allowed here is 2×"):
        upscale_size(832, 1216, 4)


def test_an_image_already_near_the_cap_cannot_be_upscaled() -> None:
    with pytest.raises(RouteError, match="even 2× would pass the 4096 px cap"):
        upscale_size(2432, 1664, 2)
    assert upscale_size(MAX_EDGE // 2, 64, 2) == (MAX_EDGE, 128)


def test_only_two_and_four_are_offered() -> None:
    with pytest.raises(RouteError, match="upscale by 3× is not offered; use 2 or 4"):
        upscale_size(512, 512, 3)


def test_motion_plan_defaults_to_the_profile(tiny_catalog: Catalog) -> None:
    svd = load_catalog().profiles["svd-xt"]
    plan = motion_plan(svd, 832, 1216)
    assert (plan.frames, plan.fps, plan.motion) == (25, 7, 127)
    assert plan.width % 64 == 0 and plan.height % 64 == 0
    assert plan.height > plan.width  # a portrait stays a portrait
    assert abs(plan.width * plan.height - 1024 * 576) < 0.2 * 1024 * 576


def test_motion_plan_reads_seconds_fps_and_motion_words() -> None:
    svd = load_catalog().profiles["svd-xt"]
    plan = motion_plan(svd, 1024, 1024, seconds=2, fps=10, motion="high")
    assert (plan.frames, plan.fps, plan.motion) == (20, 10, 192)
    assert plan.seconds == 2
    assert motion_plan(svd, 1024, 1024, motion="40").motion == 40


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (
            {"seconds": 10},
            r"--seconds 10 at 7 fps needs 70 frames; svd-xt makes at most 25 \(3.6 s at 7 fps\)",
        ),
        ({"seconds": 0}, "--seconds 0 must be more than 0"),
        ({"seconds": 0.1}, "under 2 frames"),
        ({"fps": 0}, "--fps 0 is out of range"),
        ({"motion": 256}, "--motion 256 is out of range; use 1 to 255"),
        ({"motion": "wild"}, "--motion 'wild' is not a strength; use low, medium, high"),
    ],
)
def test_motion_plan_refusals_name_the_limit(options: dict[str, object], words: str) -> None:
    svd = load_catalog().profiles["svd-xt"]
    with pytest.raises(RouteError, match=words):
        motion_plan(svd, 1024, 1024, **options)  # type: ignore[arg-type]


def test_a_default_worker_serves_the_default_profile_and_its_buttons(tiny_catalog: Catalog) -> None:
    assert default_worker_profiles(tiny_catalog) == ["tiny-xl", "tiny-upscale", "tiny-svd"]
    real = with_weights("SG161222/RealVisXL_V5.0")
    assert default_worker_profiles(real) == ["photoreal-xl", "lanczos"]
