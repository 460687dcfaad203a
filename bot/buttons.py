"""The result buttons' jobs: pick variation k (U k), Vary it, Upscale it, Animate it.

Each starts from one variation of a finished generation of the same server. `find_source` checks that
and reads the image; the `*_spec` functions build the job that makes the new generation, with the
variation as its `source` input and as its `parent`, so every result traces back to its request.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

from PIL import Image
from pydantic import ValidationError

from bot.errors import BadFlag, GenerationRefused
from bot.ledger import Generation, Ledger
from jobs.spec import (
    Adapter,
    InputImage,
    JobKind,
    JobSpec,
    MotionRecipe,
    Parent,
    Recipe,
    UpscaleRecipe,
    new_id,
)
from router.catalog import Catalog, Profile
from router.engines import EngineChoice, MotionPlan, engine_for, motion_plan, upscale_size
from router.route import RouteError

# The result buttons every platform shows, by what they do. A button carries
# `likeness:ACTION:GENERATION_ID:INDEX` (index 0: the whole grid) and nothing secret: every press is
# checked again by the Studio.
Action = Literal["select", "vary", "strong", "up2", "up4", "animate", "reroll"]
ACTIONS: tuple[Action, ...] = get_args(Action)
BUTTON_ID = re.compile(
    rf"likeness:(?P<action>{'|'.join(ACTIONS)}):(?P<generation>g_[0-9a-z]{{12}}):(?P<index>[0-9])"
)
# The buttons under one image (a U k post, an upscale), in the order shown, each with what it needs to
# start from in the words of STARTS_FROM.
SINGLE_IMAGE_BUTTONS: tuple[tuple[Action, str, str], ...] = (
    ("up2", "Upscale 2×", "upscale"),
    ("up4", "Upscale 4×", "upscale"),
    ("vary", "Vary (subtle)", "vary"),
    ("strong", "Vary (strong)", "vary"),
    ("animate", "Animate", "animate"),
)


def button_id(action: Action, generation_id: str, index: int) -> str:
    return f"likeness:{action}:{generation_id}:{index}"


def parse_button_id(text: str) -> tuple[Action, str, int]:
    """(action, generation id, index) of a button's id; GenerationRefused for anything else. The id comes
    from the user's side: parsing it proves only its shape, never that the clicker may act on it."""
    match = BUTTON_ID.fullmatch(text)
    if match is None:
        raise GenerationRefused(
            "this button is not one Likeness knows; use the buttons under a recent result"
        )
    return cast(Action, match["action"]), match["generation"], int(match["index"])


VARY_SUBTLE = 0.35
VARY_STRONG = 0.7
VARY_COUNT = 4
GENERATION_ID = re.compile(r"^g_[0-9a-z]{12}$")
_INDEXED_FILE = re.compile(r"_(\d+)\.png$")

# What each button may start from: vary works on variations (an upscale is varied through the variation
# it was made from); an animation is a video, not a picture, so nothing starts from it.
STARTS_FROM: dict[str, tuple[str, ...]] = {
    "select": ("txt2img", "vary", "upscale"),
    "vary": ("txt2img", "vary"),
    "upscale": ("txt2img", "vary", "upscale"),
    "animate": ("txt2img", "vary", "upscale"),
}


@dataclass(frozen=True)
class Source:
    """Variation `index` of a finished generation: its record, recipe, file and pixels' size."""

    generation: Generation
    spec: JobSpec
    index: int
    path: Path
    png: bytes
    width: int
    height: int

    @property
    def parent(self) -> Parent:
        return Parent(generation_id=self.generation.id, index=self.index, kind=self.spec.kind)

    def as_input(self) -> InputImage:
        return InputImage(
            role="source", media_type="image/png", data=self.png, sha256=hashlib.sha256(self.png).hexdigest()
        )

    @property
    def label(self) -> str:
        return self.parent.describe()


def indexed_files(generation: Generation) -> dict[int, Path]:
    """A generation's images by variation number (a re-run of one variation keeps its number)."""
    found: dict[int, Path] = {}
    for path in generation.files():
        match = _INDEXED_FILE.search(path.name)
        if match and path.name.startswith(generation.id):
            found[int(match.group(1))] = path
    return found


async def find_source(
    ledger: Ledger, platform: str, server_id: str, generation_id: str, index: int, action: str
) -> Source:
    """Variation `index` of `generation_id`, if this server may `action` it; else GenerationRefused."""
    generation_id = generation_id.strip()
    if not GENERATION_ID.match(generation_id):
        raise GenerationRefused(
            f"{generation_id!r} is not a generation id; ids look like g_3k9x2c7q1m4z and are shown under "
            "each result"
        )
    generation = await ledger.get(generation_id)
    if generation is None:
        raise GenerationRefused(f"there is no generation {generation_id} on this deployment")
    if (generation.platform, generation.server_id) != (platform, server_id):
        raise GenerationRefused(
            f"generation {generation_id} was made in another server; you can {action} only this "
            "server's images"
        )
    if generation.status == "failed":
        raise GenerationRefused(
            f"generation {generation_id} failed ({generation.error or 'no reason recorded'}), so it has no "
            "images; make it again with /portrait"
        )
    if generation.status not in ("finished", "delivered"):
        raise GenerationRefused(
            f"generation {generation_id} is not finished yet ({generation.status}); wait for its result"
        )
    allowed = STARTS_FROM[action]
    if generation.kind not in allowed:
        if generation.kind == "upscale" and generation.parent_id:
            made_from = f"{generation.parent_id} #{generation.parent_index}"
            hint = f"; {action} the variation it was made from: {made_from}"
        else:
            hint = ""
        raise GenerationRefused(
            f"generation {generation_id} is an {generation.kind}: it cannot be {_done(action)}{hint}"
        )
    files = indexed_files(generation)
    if index not in files:
        numbers = sorted(files)
        have = (
            (
                f"variations {numbers[0]} to {numbers[-1]}"
                if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1
                else "variation " + ", ".join(str(n) for n in numbers)
            )
            if numbers
            else "no images"
        )
        raise GenerationRefused(f"generation {generation_id} has {have}; there is no #{index}")
    path = files[index]
    try:
        png = path.read_bytes()
        with Image.open(path) as image:
            width, height = image.size
    except OSError as exc:
        raise GenerationRefused(
            f"the image {generation_id} #{index} is no longer on this deployment ({exc.strerror or exc})"
        ) from None
    try:
        spec = JobSpec.model_validate(generation.spec)
    except ValidationError as exc:
        raise GenerationRefused(f"generation {generation_id} has a damaged recipe; make it again") from exc
    if spec.recipe is None:
        raise GenerationRefused(f"generation {generation_id} has no image settings to start from")
    return Source(generation, spec, index, path, png, width, height)


def _done(action: str) -> str:
    return {"select": "selected", "vary": "varied", "upscale": "upscaled", "animate": "animated"}[action]


def vary_spec(
    source: Source,
    *,
    strong: bool,
    seed: int,
    prompt: str | None = None,
    negative: str | None = None,
    faces: Sequence[InputImage] | None = None,
    adapter: Adapter | None = None,
    count: int = VARY_COUNT,
) -> JobSpec:
    """Vary: `count` new variations of the source, img2img on its own profile with new seeds.

    A remix passes a new `prompt` (and `negative`, `faces`, `adapter` when it names characters); otherwise
    the parent's words and characters are kept.
    """
    parent = source.spec
    assert parent.recipe is not None  # find_source checked
    strength = VARY_STRONG if strong else VARY_SUBTLE
    # img2img skips the first (1 - strength) of the steps: keep at least one to run.
    steps = max(parent.recipe.steps, math.ceil(1 / strength))
    kept_faces = (
        tuple(item for item in parent.inputs if item.role == "face") if faces is None else tuple(faces)
    )
    recipe = parent.recipe.model_copy(
        update={
            "steps": steps,
            "strength": strength,
            "seeds": tuple((seed + i) % 2**32 for i in range(count)),
            "width": source.width,
            "height": source.height,
            "adapter": parent.recipe.adapter if faces is None else adapter,
        }
    )
    return JobSpec(
        generation_id=new_id("g"),
        kind="vary",
        prompt=parent.prompt if prompt is None else prompt,
        negative=parent.negative if negative is None else negative,
        recipe=Recipe.model_validate(recipe.model_dump()),
        inputs=(*kept_faces, source.as_input()),
        parent=source.parent,
    )


def upscale_spec(source: Source, catalog: Catalog, *, factor: int, seed: int) -> tuple[JobSpec, EngineChoice]:
    """Upscale: the source enlarged `factor` times by the deployment's upscale engine."""
    try:
        width, height = upscale_size(source.width, source.height, factor)
        choice = engine_for("upscale", catalog, _profile_of(source))
    except RouteError as exc:
        raise BadFlag(str(exc)) from None
    profile = choice.profile
    tiles = UpscaleRecipe(
        factor=2 if factor == 2 else 4,
        tile=profile.tile,
        overlap=profile.tile_overlap,
        noise_level=profile.noise_level,
    )
    spec = _job(source, "upscale", _recipe(profile, width, height, seed, upscale=tiles))
    return spec, choice


def animate_spec(
    source: Source,
    catalog: Catalog,
    *,
    seed: int,
    max_bytes: int,
    seconds: float | None = None,
    fps: int | None = None,
    motion: int | str | None = None,
) -> tuple[JobSpec, EngineChoice, MotionPlan]:
    """Animate: a few seconds of video from the source, by the deployment's video model."""
    try:
        choice = engine_for("animate", catalog, _profile_of(source))
        plan = motion_plan(
            choice.profile, source.width, source.height, seconds=seconds, fps=fps, motion=motion
        )
    except RouteError as exc:
        raise BadFlag(str(exc)) from None
    profile: Profile = choice.profile
    motion_recipe = MotionRecipe(
        frames=plan.frames,
        fps=plan.fps,
        motion=plan.motion,
        min_cfg=min(1.0, profile.cfg),  # guidance ramps from 1 at the first frame to cfg at the last
        decode_chunk=profile.decode_chunk,
        max_bytes=max_bytes,
    )
    spec = _job(source, "animate", _recipe(profile, plan.width, plan.height, seed, motion=motion_recipe))
    return spec, choice, plan


def _recipe(profile: Profile, width: int, height: int, seed: int, **kind: object) -> Recipe:
    """The recipe of an upscale or animate job on `profile`: its own steps, guidance and scheduler."""
    return Recipe.model_validate(
        {
            "profile": profile.name,
            "family": profile.family,
            "checkpoint": profile.checkpoint,
            "scheduler": profile.scheduler,
            "steps": profile.steps,
            "cfg": profile.cfg,
            "width": width,
            "height": height,
            "seeds": (seed,),
            **kind,
        }
    )


def _job(source: Source, kind: JobKind, recipe: Recipe) -> JobSpec:
    """A job that starts from `source`, with its words, carrying its image and naming it as parent."""
    return JobSpec(
        generation_id=new_id("g"),
        kind=kind,
        prompt=source.spec.prompt,
        negative=source.spec.negative,
        recipe=recipe,
        inputs=(source.as_input(),),
        parent=source.parent,
    )


def _profile_of(source: Source) -> str:
    """The portrait profile behind a source: an upscale's recipe names its upscaler, so look at its parent."""
    recipe = source.spec.recipe
    assert recipe is not None
    return (
        recipe.profile
        if source.spec.kind in ("txt2img", "vary")
        else str(source.generation.route.get("origin_profile", recipe.profile))
    )
