"""Routing: a pure function from (request, catalog) to the Route a generation takes, with its reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from router.catalog import Catalog, Profile
from router.sizes import size_for


class RouteError(ValueError):
    """The request cannot be routed; the message is fit to show to the user."""


class RouteRequest(Protocol):
    """What routing reads from a request (the bot's PortraitRequest satisfies it)."""

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


FAST_STEP_FACTOR = 0.5


def route(request: RouteRequest, catalog: Catalog) -> Route:
    reasons: list[str] = []
    if request.engine:
        profile = catalog.get(request.engine)
        if profile is None:
            names = ", ".join(p.name for p in catalog)
            raise RouteError(f"--engine {request.engine} is not a profile here; use one of {names}")
        reasons.append(f"--engine {profile.name} was asked for")
    else:
        profile = catalog.default_profile
        reasons.append(
            f"{profile.name}: {catalog.default_reason}" if catalog.default_reason else profile.name
        )
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
    return Route(profile=profile, params=params, queue=profile.queue_name, reasons=tuple(reasons))
