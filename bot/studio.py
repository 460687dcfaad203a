"""The Studio: the conversation brain shared by every adapter (console, Discord, Slack). No platform imports.

A request becomes a generation in four moves: parse, route, record in the ledger, enqueue. Its result
is written under the data dir and the generation marked finished; the adapter marks it delivered once
the platform accepted the post.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.character_desk import CharacterDesk, CharacterRefused
from bot.commands import PortraitRequest, parse_portrait
from bot.errors import BadFlag, BadPrompt, JobFailed, JobTimedOut, UnknownProfile
from bot.ledger import Ledger
from characters.mentions import resolve_mentions
from characters.store import Character, CharacterError
from jobs.queue import JobHandle, Queue
from jobs.spec import Adapter, InputImage, JobResult, JobSpec, Recipe, new_id
from router.catalog import QUEUE_PREFIX, Catalog
from router.craft import realism_tips
from router.route import Route, RouteError, route

log = logging.getLogger(__name__)

SEED_LIMIT = 2**32


@dataclass(frozen=True)
class Origin:
    """Who asked, and where: the platform-free address of a request."""

    platform: str
    server_id: str
    channel_id: str
    user_id: str


@dataclass(frozen=True)
class Submission:
    """A recorded, enqueued generation."""

    generation_id: str
    spec: JobSpec
    handle: JobHandle
    caption: str
    queue: str
    reasons: str = ""
    notices: tuple[str, ...] = ()  # shown at once: the queue's state (who serves it, how long)
    tips: tuple[str, ...] = ()  # shown under the result: prompt-craft advice, never blocking

    @property
    def profile(self) -> str:
        return self.spec.recipe.profile if self.spec.recipe else ""


@dataclass(frozen=True)
class Finished:
    """A generation's files on disk and the words that go with them."""

    generation_id: str
    files: tuple[Path, ...]
    grid: Path | None
    seeds: tuple[int, ...]
    caption: str
    notices: tuple[str, ...]


def plan_portrait(
    text: str, catalog: Catalog, characters: Sequence[str] | None = None
) -> tuple[PortraitRequest, Route]:
    """Parse and route without side effects (what `/route` shows). Raises UserError for bad input.

    `characters` are the resolved @names; None takes every @name in the text as a known character.
    """
    request = parse_portrait(text)
    return request, _route(request, catalog, request.mentions if characters is None else characters)


def _route(request: PortraitRequest, catalog: Catalog, characters: Sequence[str]) -> Route:
    try:
        return route(request, catalog, characters=characters)
    except RouteError as exc:
        error = UnknownProfile if request.engine and catalog.get(request.engine) is None else BadFlag
        raise error(str(exc)) from exc


def _adapter(chosen: Route, request: PortraitRequest, cast: Sequence[Character]) -> Adapter | None:
    """The identity adapter for a request with characters: --cw, else the weakest character default."""
    reference = chosen.profile.ip_adapter
    if not cast or reference is None:
        return None
    weight = request.character_weight if request.character_weight is not None else min(c.weight for c in cast)
    return Adapter(
        source=reference.source,
        subfolder=reference.subfolder,
        weight_name=reference.weight_name,
        image_encoder_folder=reference.image_encoder_folder,
        scale=weight / 100,
    )


def random_seed() -> int:
    return secrets.randbelow(SEED_LIMIT)


class Studio:
    def __init__(
        self,
        *,
        ledger: Ledger,
        catalog: Catalog,
        queue: Queue,
        generations_dir: Path,
        job_wait_s: float = 1800,
        seed_source: Callable[[], int] = random_seed,
        characters: CharacterDesk | None = None,
    ) -> None:
        self.characters = characters
        self.ledger = ledger
        self.catalog = catalog
        self.queue = queue
        self.generations_dir = generations_dir
        self.job_wait_s = job_wait_s
        self._seed_source = seed_source

    async def portrait(self, origin: Origin, text: str) -> Submission:
        """Record a /portrait request in the ledger, then enqueue it. Raises UserError for bad input."""
        request = parse_portrait(text)
        prompt, cast = await self._cast(origin, request)
        chosen = _route(request, self.catalog, [c.name for c in cast])
        generation_id = new_id("g")
        seed = request.seed if request.seed is not None else self._seed_source()
        params = chosen.params
        recipe = Recipe(
            profile=chosen.profile.name,
            family=chosen.profile.family,
            checkpoint=chosen.profile.checkpoint,
            scheduler=params.scheduler,
            steps=params.steps,
            cfg=params.cfg,
            width=params.width,
            height=params.height,
            seeds=tuple((seed + i) % SEED_LIMIT for i in range(request.count)),
            adapter=_adapter(chosen, request, cast),
        )
        faces = await self.characters.faces(cast) if self.characters and cast else []
        spec = JobSpec(
            generation_id=generation_id,
            prompt=prompt,
            negative=request.negative,
            recipe=recipe,
            inputs=tuple(
                InputImage(role="face", media_type="image/jpeg", data=data, sha256=sha) for sha, data in faces
            ),
        )
        reasons = "; ".join(chosen.reasons)
        text_caption = f"{request.prompt} · seed {seed} · {chosen.profile.name} ({reasons})"
        submission = await self._submit(
            origin,
            spec,
            dataclasses.asdict(request),
            route_record(chosen),
            chosen.queue,
            text_caption,
            reasons,
            fast=request.fast,
        )
        if self.characters and cast:
            await self.characters.store.record_use([c.id for c in cast])
        return dataclasses.replace(submission, tips=realism_tips(request.prompt))

    def _refill(self, inputs: tuple[InputImage, ...]) -> tuple[InputImage, ...]:
        """Inputs that travelled as hashes get their bytes back from the character image store."""
        filled = []
        for item in inputs:
            if not item.data:
                try:
                    if self.characters is None:
                        raise KeyError(item.sha256)
                    item = item.model_copy(update={"data": self.characters.images.get(item.sha256)})
                except (KeyError, ValueError):
                    raise BadFlag(
                        "this image was made with a character photo that is no longer on this deployment, "
                        "so it cannot be made again"
                    ) from None
            filled.append(item)
        return tuple(filled)

    async def _cast(self, origin: Origin, request: PortraitRequest) -> tuple[str, tuple[Character, ...]]:
        """The prompt with its @mentions resolved to this server's characters, and those characters."""
        if not request.mentions:
            return request.prompt, ()
        if self.characters is None:
            raise BadPrompt("characters are not set up on this deployment; remove the @names from the prompt")
        available = await self.characters.store.list(origin.platform, origin.server_id)
        try:
            resolved = resolve_mentions(request.prompt, available)
        except CharacterError as exc:
            raise CharacterRefused(str(exc)) from exc
        return resolved.prompt, resolved.characters

    async def rerun(self, origin: Origin, old: JobSpec) -> Submission:
        """A new generation from a recorded spec (e.g. the recipe embedded in a PNG): same pixels."""
        if old.recipe is None:
            raise BadFlag("this recipe has no image settings to re-run")
        profile = self.catalog.get(old.recipe.profile)
        queue = profile.queue_name if profile else QUEUE_PREFIX + old.recipe.profile
        spec = old.model_copy(
            update={"generation_id": new_id("g"), "job_id": new_id("j"), "inputs": self._refill(old.inputs)}
        )
        reasons = [f"re-run of {old.generation_id}"]
        seeds = ", ".join(str(spec.seed_of(index)) for index in spec.kept)
        text_caption = f"{spec.prompt} · seed {seeds} · {old.recipe.profile} ({reasons[0]})"
        route_info = {"profile": old.recipe.profile, "queue": queue, "reasons": reasons}
        return await self._submit(
            origin, spec, {"rerun_of": old.generation_id}, route_info, queue, text_caption, reasons[0]
        )

    async def _submit(
        self,
        origin: Origin,
        spec: JobSpec,
        request: dict[str, Any],
        route_info: dict[str, Any],
        queue: str,
        text_caption: str,
        reasons: str,
        *,
        fast: bool = False,
    ) -> Submission:
        # The ledger first: if enqueueing fails or the process dies, the generation is still on record.
        await self.ledger.record(
            generation_id=spec.generation_id,
            platform=origin.platform,
            server_id=origin.server_id,
            channel_id=origin.channel_id,
            user_id=origin.user_id,
            request=request,
            route=route_info,
            spec=spec.model_dump(mode="json"),
            job_id=spec.job_id,
            queue=queue,
        )
        handle = await self.queue.submit(spec, queue, fast=fast)
        await self.ledger.set_status(spec.generation_id, "queued")
        return Submission(
            spec.generation_id,
            spec,
            handle,
            text_caption,
            queue,
            reasons,
            await self._queue_notice(spec, queue),
        )

    async def _queue_notice(self, spec: JobSpec, queue: str) -> tuple[str, ...]:
        """Never a silent wait: say when no worker serves the queue, or how long it should take."""
        profile = spec.recipe.profile if spec.recipe else queue
        status = await self.queue.status(queue, profile)
        if status.workers == 0:
            return (
                f"no worker serves {profile} right now; your request is queued until one connects "
                f"(`likeness worker --profiles {profile}`)",
            )
        if status.eta_s is not None and status.waiting:
            return (f"{status.waiting} ahead of you in {profile}; about {status.eta_s:.0f} s",)
        return ()

    async def finish(self, submission: Submission) -> Finished:
        """Wait for the job, keep its files under the data dir, and mark the generation finished."""
        generation_id = submission.generation_id
        try:
            result = await submission.handle.result(timeout=self.job_wait_s)
        except TimeoutError:
            raise JobTimedOut(
                f"generation {generation_id} got no result in {self.job_wait_s:g} s. Is a worker serving "
                f"{submission.queue}? Start one with `likeness worker --profiles {submission.profile}`; "
                "the request stays recorded."
            ) from None
        if not result.ok:
            await self.ledger.set_status(generation_id, "failed", error=result.error)
            raise JobFailed(f"generation {generation_id} failed: {result.error}")
        files, grid = self._keep(generation_id, result)
        await self.ledger.set_status(
            generation_id,
            "finished",
            result={
                "files": [str(f) for f in files],
                "grid": str(grid) if grid else None,
                "worker": result.worker,
                "timings": result.timings,
            },
        )
        return Finished(
            generation_id=generation_id,
            files=files,
            grid=grid,
            seeds=tuple(image.seed for image in result.images),
            caption=submission.caption,
            notices=(*result.notices, *submission.tips),
        )

    async def delivered(self, generation_id: str) -> None:
        await self.ledger.set_status(generation_id, "delivered")

    def _keep(self, generation_id: str, result: JobResult) -> tuple[tuple[Path, ...], Path | None]:
        folder = self.generations_dir / generation_id
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for image in result.images:
            path = folder / f"{generation_id}_{image.index}.png"
            _write_atomically(path, image.png)
            files.append(path)
        grid = None
        if result.grid is not None:
            grid = folder / f"{generation_id}_grid.png"
            _write_atomically(grid, result.grid)
        return tuple(files), grid


def route_record(chosen: Route) -> dict[str, Any]:
    return {
        "intent": chosen.intent,
        "profile": chosen.profile.name,
        "params": dataclasses.asdict(chosen.params),
        "queue": chosen.queue,
        "reasons": list(chosen.reasons),
    }


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".part")
    temporary.write_bytes(data)
    temporary.replace(path)
