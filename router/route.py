"""Routing: a pure function from (request, catalog, characters) to the Route a generation takes, and why.

The prompt's intent (router/intent.py) picks a capability; the catalog — the operator's models.toml,
not this code — says which profile has it. `--engine` always wins; characters always go to identity.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from router.catalog import Catalog, Profile
from router.intent import classify
from router.sizes import size_for


class RouteError(ValueError):
    """The request cannot be routed; the message is fit to show to the user."""


class RouteRequest(Protocol):
    """What routing reads from a request (the bot's PortraitRequest satisfies it)."""

    @property
    def prompt(self) -> str: ...
    @property
    def engine(self) -> str | None: ...
    @property
    def aspect(self) -> str: ...
    @property
    def steps(self) -> int | None: ...
    @property
    def cfg(self) -> float | None: ...
    @property
    def fast(self) -> bool: ...


@dataclass(frozen=True)
class RouteParams:
    width: int
    height: int
    steps: int
    cfg: float
    scheduler: str


@dataclass(frozen=True)
class Route:
    """The profile and parameters chosen for one generation, the queue it goes to, and why."""

    profile: Profile
    params: RouteParams
    queue: str
    reasons: tuple[str, ...]
    intent: str = "photoreal"


FAST_STEP_FACTOR = 0.5

# Which capabilities serve an intent, best first; and where an intent with no profile falls back to.
SERVES: dict[str, tuple[str, ...]] = {
    "photoreal": ("photoreal",),
    "literal": ("literal", "text"),
    "stylized": ("stylized",),
    "identity": ("identity",),
}
NEAREST: dict[str, str] = {"literal": "photoreal", "stylized": "photoreal", "identity": "photoreal"}


def servable(profile: Profile, catalog: Catalog) -> bool:
    """Can this host's deployment run it? Weights present here; or, when the operator named a real
    default (a bot host without GPUs), any real profile: the workers hold the weights."""
    if profile.available and (profile.is_tiny == catalog.default_profile.is_tiny):
        return True
    return (
        catalog.default_reason == "set as the default"
        and not catalog.default_profile.is_tiny
        and not profile.is_tiny
    )


def _candidates(intent: str, catalog: Catalog) -> tuple[list[Profile], str]:
    """The profiles that can serve an intent, best first (the default first among equals), and a note
    when they serve only the nearest intent. Then the nearest intent's profiles, as a live fallback."""
    default = catalog.default_profile
    ordered: list[Profile] = []
    note = ""
    wanted = intent
    while True:
        capable = [p for p in catalog if servable(p, catalog) and set(SERVES[wanted]) & set(p.capabilities)]
        capable.sort(key=lambda p: p is not default)  # stable: the default first, then catalog order
        if capable and not ordered and wanted != intent:
            note = f"no {intent} profile here; nearest: {wanted}"
        ordered += [p for p in capable if p not in ordered]
        if wanted not in NEAREST:
            return ordered, note
        wanted = NEAREST[wanted]


def _profile_for(intent: str, catalog: Catalog, live: Collection[str] | None) -> tuple[Profile, list[str]]:
    """The profile for an intent and the notes that explain it. With `live` (the profiles some worker
    serves right now), a profile nobody serves gives way to the next one that is served."""
    ordered, note = _candidates(intent, catalog)
    if not ordered:
        return catalog.default_profile, [f"no {intent} profile here; using the default"]
    best = ordered[0]
    if live is not None and best.name not in live:
        for profile in ordered[1:]:
            if profile.name in live:
                return profile, [f"no worker serves {best.name} right now; using {profile.name} instead"]
    return best, [note] if note else []


def _identity_profile(
    catalog: Catalog, names: str, live: Collection[str] | None
) -> tuple[Profile, list[str]]:
    """The identity profile: the first whose weights are here, else a tiny one, else the first listed;
    with `live`, one that some worker serves right now is preferred, and the reason says so."""
    best = _first_identity(catalog, names)
    if live is not None and best.name not in live:
        for profile in catalog:
            if "identity" in profile.capabilities and profile.name in live and servable(profile, catalog):
                return profile, [f"no worker serves {best.name} right now; using {profile.name} instead"]
    return best, []


def _first_identity(catalog: Catalog, names: str) -> Profile:
    identity = [p for p in catalog if "identity" in p.capabilities]
    if not identity:
        raise RouteError(
            f"{names}: this deployment has no identity profile, so characters cannot be drawn; "
            "an operator adds one to models.toml (see README, Models)"
        )
    # What this deployment runs (real weights here, or on the workers of a named real default) first;
    # otherwise a tiny one runs anywhere.
    for profile in identity:
        if servable(profile, catalog):
            return profile
    return next((p for p in identity if p.available), identity[0])


def route(
    request: RouteRequest,
    catalog: Catalog,
    characters: Sequence[str] = (),
    live: Collection[str] | None = None,
) -> Route:
    """Choose the profile and parameters for `request`; `characters` are the @names it uses.

    `live` names the profiles some worker serves right now (None: unknown, or every profile is served,
    as in the embedded default). `--engine` is never second-guessed.
    """
    reasons: list[str] = []
    names = ", ".join("@" + name for name in characters)
    guess = classify(request.prompt, has_characters=bool(characters))
    if request.engine:
        profile = catalog.get(request.engine)
        if profile is None:
            listed = ", ".join(p.name for p in catalog.of_kind("txt2img"))
            raise RouteError(f"--engine {request.engine} is not a profile here; use one of {listed}")
        if profile.kind != "txt2img":
            portraits = ", ".join(p.name for p in catalog.of_kind("txt2img"))
            raise RouteError(
                f"--engine {profile.name} is an {profile.kind} engine (it runs behind the result buttons); "
                f"for a portrait use one of {portraits}"
            )
        if characters and "identity" not in profile.capabilities:
            identity = ", ".join(p.name for p in catalog if "identity" in p.capabilities) or "none configured"
            raise RouteError(
                f"--engine {profile.name} cannot keep a character's face ({names}); drop --engine or use an "
                f"identity profile: {identity}"
            )
        reasons.append(f"--engine {profile.name} was asked for")
    elif characters:
        profile, notes = _identity_profile(catalog, names, live)
        verb = "is a character" if len(characters) == 1 else "are characters"
        reasons += [f"identity: {names} {verb} → {profile.name}", *notes]
    else:
        profile, notes = _profile_for(guess.intent, catalog, live)
        reasons += [f"{guess.reason} → {profile.name}", *notes]
        if profile.is_tiny and catalog.default_reason:
            reasons.append(catalog.default_reason)
    if not profile.available:
        reasons.append(f"note: {profile.checkpoint} is not present on this host; a worker must have it")

    steps = profile.steps
    if request.steps is not None:
        if not 1 <= request.steps <= profile.max_steps:
            raise RouteError(
                f"--steps {request.steps} is out of range for {profile.name}; use 1 to {profile.max_steps}"
            )
        steps = request.steps
    elif request.fast:
        steps = max(1, round(profile.steps * FAST_STEP_FACTOR))
        reasons.append(f"--fast: {steps} steps instead of {profile.steps}")

    cfg = profile.cfg
    if request.cfg is not None:
        if not profile.cfg_min <= request.cfg <= profile.cfg_max:
            raise RouteError(
                f"--cfg {request.cfg:g} is out of range for {profile.name}; "
                f"use {profile.cfg_min:g} to {profile.cfg_max:g}"
            )
        cfg = request.cfg

    width, height = size_for(request.aspect, profile.resolution)
    params = RouteParams(width=width, height=height, steps=steps, cfg=cfg, scheduler=profile.scheduler)
    return Route(
        profile=profile, params=params, queue=profile.queue_name, reasons=tuple(reasons), intent=guess.intent
    )
