"""The engines behind the result buttons: which profile runs an Upscale or an Animate, at what size.

Vary needs no choice: it runs on the variation's own profile (img2img on the same weights). Upscale and
Animate go to the first profile of their kind, in models.toml order, that this deployment can run; an
image made by a tiny (random-weight) profile goes to a tiny engine, a real image never does. Pure
functions of the catalog, like `route()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from router.catalog import BUILTIN_PREFIX, Catalog, Profile
from router.route import RouteError, servable
from router.sizes import RESOLUTION_CLASSES, size_for_area

MAX_EDGE = 4096  # the 4K cap on an upscale's long edge
UPSCALE_FACTORS: tuple[int, ...] = (2, 4)
MOTION_WORDS: dict[str, int] = {"low": 64, "medium": 127, "high": 192}
MIN_FRAMES = 2

ButtonKind = Literal["upscale", "animate"]


@dataclass(frozen=True)
class EngineChoice:
    profile: Profile
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class MotionPlan:
    """An animation's frames, frame rate, motion strength and frame size."""

    frames: int
    fps: int
    motion: int
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def engine_for(kind: ButtonKind, catalog: Catalog, parent_profile: str) -> EngineChoice:
    """The profile that upscales or animates an image made by `parent_profile`, and why."""
    parent = catalog.get(parent_profile)
    tiny_image = parent.is_tiny if parent is not None else catalog.default_profile.is_tiny
    candidates = catalog.of_kind(kind)
    if tiny_image:
        for profile in candidates:
            if profile.is_tiny:
                return EngineChoice(profile, (f"{parent_profile} is a tiny test profile → {profile.name}",))
    for profile in candidates:
        if (
            not profile.is_tiny
            and not profile.checkpoint.startswith(BUILTIN_PREFIX)
            and _runs(profile, catalog)
        ):
            return EngineChoice(
                profile, (f"{kind}: first {kind} profile this deployment runs → {profile.name}",)
            )
    for profile in candidates:
        if profile.checkpoint.startswith(BUILTIN_PREFIX):
            return EngineChoice(
                profile,
                (
                    f"no upscale weights on this deployment → {profile.name}: resampling only, no new detail "
                    "(an operator adds an upscaler to models.toml: README, Models)",
                ),
            )
    verb = "animate" if kind == "animate" else "upscale"
    raise RouteError(
        f"this deployment has no model to {verb} images with; an operator adds a profile of family "
        f"{'svd' if kind == 'animate' else 'sd-upscale or esrgan'} to models.toml (README, Models)"
    )


def _runs(profile: Profile, catalog: Catalog) -> bool:
    """Weights here, or a real default named by the operator (the workers then hold the weights)."""
    return profile.available or servable(profile, catalog)


def upscale_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """The size of an upscale by `factor`; refuses factors other than 2 and 4 and anything past 4096 px."""
    if factor not in UPSCALE_FACTORS:
        raise RouteError(f"upscale by {factor}× is not offered; use 2 or 4")
    longest = max(width, height)
    if longest * factor <= MAX_EDGE:
        return width * factor, height * factor
    allowed = [f for f in UPSCALE_FACTORS if longest * f <= MAX_EDGE]
    if allowed:
        best = max(allowed)
        raise RouteError(
            f"upscaling {width}×{height} by {factor}× would make {width * factor}×{height * factor}, past "
            f"the {MAX_EDGE} px cap; the largest allowed here is {best}× ({width * best}×{height * best})"
        )
    raise RouteError(
        f"this image is already {width}×{height}: even 2× would pass the {MAX_EDGE} px cap, so it cannot "
        "be upscaled further"
    )


def motion_plan(
    profile: Profile,
    image_width: int,
    image_height: int,
    *,
    seconds: float | None = None,
    fps: int | None = None,
    motion: int | str | None = None,
) -> MotionPlan:
    """Frames, rate and motion for an animation on `profile`; refuses what the model cannot make."""
    rate = profile.fps if fps is None else fps
    if not 1 <= rate <= 60:
        raise RouteError(f"--fps {rate} is out of range; use 1 to 60")
    most = profile.frames
    if seconds is None:
        frames = most
    else:
        if seconds <= 0:
            raise RouteError(f"--seconds {seconds:g} must be more than 0")
        frames = round(seconds * rate)
        if frames > most:
            raise RouteError(
                f"--seconds {seconds:g} at {rate} fps needs {frames} frames; {profile.name} makes at most "
                f"{most} ({most / rate:.1f} s at {rate} fps): ask for less, or lower --fps"
            )
        if frames < MIN_FRAMES:
            raise RouteError(
                f"--seconds {seconds:g} at {rate} fps is under {MIN_FRAMES} frames; ask for more"
            )
    strength = _motion(profile, motion)
    area = RESOLUTION_CLASSES.get(profile.resolution, RESOLUTION_CLASSES["svd"])
    width, height = size_for_area(image_width, image_height, area)
    return MotionPlan(frames=frames, fps=rate, motion=strength, width=width, height=height)


def _motion(profile: Profile, motion: int | str | None) -> int:
    if motion is None:
        return profile.motion
    if isinstance(motion, str):
        word = motion.strip().lower()
        if word in MOTION_WORDS:
            return MOTION_WORDS[word]
        if not word.isdigit():
            words = ", ".join(MOTION_WORDS)
            raise RouteError(f"--motion {motion!r} is not a strength; use {words} or a number from 1 to 255")
        motion = int(word)
    if not 1 <= motion <= 255:
        raise RouteError(f"--motion {motion} is out of range; use 1 to 255 (127 is the model's default)")
    return motion


def default_worker_profiles(catalog: Catalog) -> list[str]:
    """What a worker started without a profile list serves: the default profile and its buttons' engines."""
    names = [catalog.default]
    kinds: tuple[ButtonKind, ...] = ("upscale", "animate")
    for kind in kinds:
        try:
            names.append(engine_for(kind, catalog, catalog.default).profile.name)
        except RouteError:
            continue
    return names
