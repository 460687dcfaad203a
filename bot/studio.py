"""The Studio: the conversation brain shared by every adapter (console, Discord, Slack). No platform imports.

A request becomes a generation in four moves: parse, route, record in the ledger, enqueue. Its result
is written under the data dir and the generation marked finished; the adapter marks it delivered once
the platform accepted the post.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.buttons import Action, Source, animate_spec, find_source, indexed_files, upscale_spec, vary_spec
from bot.character_desk import CharacterDesk, CharacterRefused
from bot.commands import PortraitRequest, parse_portrait, request_text
from bot.errors import BadFlag, BadPrompt, GenerationRefused, JobFailed, JobTimedOut, UnknownProfile
from bot.ledger import Generation, Ledger, Status
from bot.limits import check, fast_lane, usage
from bot.server_settings import ServerSettingsStore
from characters.mentions import resolve_mentions
from characters.store import Character, CharacterError
from jobs.media import DISCORD_FILE_LIMIT, fit_to_budget, png_to_image
from jobs.queue import JobHandle, Queue
from jobs.spec import Adapter, InputImage, JobResult, JobSpec, Recipe, new_id
from router.catalog import QUEUE_PREFIX, Catalog, Profile
from router.craft import realism_tips
from router.route import Route, RouteError, route

log = logging.getLogger(__name__)

SEED_LIMIT = 2**32


CANCELLED_BY = "cancelled by "  # how a cancel is recorded: the reason names who cancelled


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
    files: tuple[Path, ...]  # the variations (PNG), the upscale (PNG), or the animation (MP4, then preview)
    grid: Path | None
    seeds: tuple[int, ...]
    caption: str
    notices: tuple[str, ...]
    kind: str = "txt2img"


@dataclass(frozen=True)
class Attachment:
    """A file as a platform receives it: within its upload limit."""

    name: str
    data: bytes
    media_type: str


def plan_portrait(
    text: str, catalog: Catalog, characters: Sequence[str] | None = None
) -> tuple[PortraitRequest, Route]:
    """Parse and route without side effects (what `/route` shows). Raises UserError for bad input.

    `characters` are the resolved @names; None takes every @name in the text as a known character.
    """
    request = parse_portrait(text)
    return request, _route(request, catalog, request.mentions if characters is None else characters)


def _route(
    request: PortraitRequest,
    catalog: Catalog,
    characters: Sequence[str],
    live: frozenset[str] | None = None,
) -> Route:
    try:
        return route(request, catalog, characters=characters, live=live)
    except RouteError as exc:
        error = UnknownProfile if request.engine and catalog.get(request.engine) is None else BadFlag
        raise error(str(exc)) from exc


def _adapter(profile: Profile, request: PortraitRequest, cast: Sequence[Character]) -> Adapter | None:
    """The identity adapter for a request with characters: --cw, else the weakest character default."""
    reference = profile.ip_adapter
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
        job_wait_s: float = 2400,
        seed_source: Callable[[], int] = random_seed,
        characters: CharacterDesk | None = None,
        upload_bytes: int = DISCORD_FILE_LIMIT,
        server_settings: ServerSettingsStore | None = None,
    ) -> None:
        self.characters = characters
        # Chat adapters pass the store: its limits and the fast-lane allowance then apply. The command
        # line runs for its own user and leaves it out.
        self.server_settings = server_settings
        # One lock per member while they have a request being checked and recorded (see `_submit`).
        # Generations on their way onto the queue (recorded, submit under way): a cancel waits for it to land.
        self._landing: dict[str, asyncio.Event] = {}
        self._member_locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.upload_bytes = upload_bytes
        self.ledger = ledger
        self.catalog = catalog
        self.queue = queue
        self.generations_dir = generations_dir
        self.job_wait_s = job_wait_s
        self._seed_source = seed_source

    async def portrait(self, origin: Origin, text: str) -> Submission:
        """Record a /portrait request in the ledger, then enqueue it. Raises UserError for bad input."""
        request = parse_portrait(text)
        if not request.aspect_given and self.server_settings is not None:
            settings = await self.server_settings.get(origin.platform, origin.server_id)
            request = dataclasses.replace(request, aspect=settings.default_aspect)
        prompt, cast = await self._cast(origin, request)
        live = await self.queue.live_profiles()
        chosen = _route(request, self.catalog, [c.name for c in cast], live)
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
            adapter=_adapter(chosen.profile, request, cast),
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

    def _refill(self, spec: JobSpec) -> tuple[InputImage, ...]:
        """Inputs that travelled as hashes get their bytes back: faces from the character image store, a
        source image from the generation it came from (checked against its hash)."""
        filled = []
        for item in spec.inputs:
            if not item.data:
                data = self._source_bytes(spec) if item.role == "source" else self._face_bytes(item.sha256)
                if data is None or hashlib.sha256(data).hexdigest() != item.sha256:
                    what = "source image" if item.role == "source" else "character photo"
                    raise BadFlag(
                        f"this image was made from a {what} that is no longer on this deployment, "
                        "so it cannot be made again"
                    )
                item = item.model_copy(update={"data": data})
            filled.append(item)
        return tuple(filled)

    def _face_bytes(self, sha256: str) -> bytes | None:
        if self.characters is None:
            return None
        try:
            return self.characters.images.get(sha256)
        except (KeyError, ValueError):
            return None

    def _source_bytes(self, spec: JobSpec) -> bytes | None:
        if spec.parent is None:
            return None
        parent = spec.parent.generation_id
        path = self.generations_dir / parent / f"{parent}_{spec.parent.index}.png"
        try:
            return path.read_bytes()
        except OSError:
            return None

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
        queue = self._queue_of(old.recipe.profile)
        spec = old.model_copy(
            update={"generation_id": new_id("g"), "job_id": new_id("j"), "inputs": self._refill(old)}
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
        # One member's requests are checked and recorded one at a time, so two at once cannot both pass
        # a limit that only one of them fits under (within this process).
        async with self._member_lock(origin):
            notices: list[str] = []
            if self.server_settings is not None:
                settings = await self.server_settings.get(origin.platform, origin.server_id)
                now = time.time()
                counts = await usage(
                    self.ledger,
                    origin.platform,
                    origin.server_id,
                    origin.user_id,
                    now=now,
                    in_flight_s=self.job_wait_s,
                )
                check(settings, counts, now)
                if fast:
                    fast, why = fast_lane(settings, counts, now)
                    notices += [why] if why else []
            # What a restarted bot needs to finish and deliver it: the lane, and the words shown with it.
            route_info = {**route_info, "lane": "fast" if fast else "normal", "caption": text_caption}
            # The ledger first: if enqueueing fails or the process dies, the generation is still on record.
            await self.ledger.record(
                generation_id=spec.generation_id,
                platform=origin.platform,
                server_id=origin.server_id,
                channel_id=origin.channel_id,
                user_id=origin.user_id,
                request=request,
                route=route_info,
                spec=_for_ledger(spec).model_dump(mode="json"),
                job_id=spec.job_id,
                queue=queue,
                kind=spec.kind,
                parent_id=spec.parent.generation_id if spec.parent else None,
                parent_index=spec.parent.index if spec.parent else None,
            )
        async with self._landed(spec.generation_id):
            handle = await self.queue.submit(spec, queue, fast=fast)
            await self._mark_queued(spec.generation_id, spec.job_id, queue)
        return Submission(
            spec.generation_id,
            spec,
            handle,
            text_caption,
            queue,
            reasons,
            (*notices, *await self._queue_notice(spec, queue)),
        )

    @contextlib.asynccontextmanager
    async def _landed(self, generation_id: str) -> AsyncIterator[None]:
        """While a generation's job is being put on the queue: a cancel in this process waits until it is
        there (and recorded as queued), then takes it off or stops it like any other."""
        landing = self._landing.setdefault(generation_id, asyncio.Event())
        try:
            yield
        finally:
            landing.set()
            if self._landing.get(generation_id) is landing:
                del self._landing[generation_id]

    async def _mark_queued(self, generation_id: str, job_id: str, queue: str) -> None:
        """Record a submitted generation as queued, unless it was cancelled while it was being submitted:
        then its job is taken off the queue (or stopped) too, and whoever waits on it gets the cancel."""
        if await self.ledger.set_status(generation_id, "queued", only_from=("recorded",)):
            return
        record = await self._record(generation_id)
        if record.status == "failed" and record.error.startswith(CANCELLED_BY):
            await self.queue.cancel(job_id, queue, record.error)

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
            result = await submission.handle.result(
                timeout=self.job_wait_s, on_start=lambda: self._running(generation_id)
            )
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
        seeds = tuple(image.seed for image in result.images) or ((result.video.seed,) if result.video else ())
        await self.ledger.set_status(
            generation_id,
            "finished",
            result={
                "files": [str(f) for f in files],
                "grid": str(grid) if grid else None,
                "worker": result.worker,
                "timings": result.timings,
                "seeds": list(seeds),
                "notices": [*result.notices, *submission.tips],
            },
        )
        return Finished(
            generation_id=generation_id,
            files=files,
            grid=grid,
            seeds=seeds,
            caption=submission.caption,
            notices=(*result.notices, *submission.tips),
            kind=submission.spec.kind,
        )

    async def _running(self, generation_id: str) -> None:
        """A worker has started the generation's job (its first progress event came): /queue says so. A
        bot restarted meanwhile sees the same events again (the job's stream outlives it)."""
        try:
            await self.ledger.set_status(generation_id, "running", only_from=("recorded", "queued"))
        except Exception:  # the status line is a courtesy; the result is what counts
            log.warning("could not record %s as running", generation_id, exc_info=True)

    async def reattach(self, generation: Generation) -> Submission:
        """A recorded generation back on the queue after a restart, under its own job id: if its job is
        still queued, running or done, this joins it (arq runs a job id once); if the queue lost it (Redis
        restarted empty, or the in-process queue died with the bot), it runs again."""
        if generation.status in ("queued", "running") and generation.error.startswith(CANCELLED_BY):
            # Cancelled while it ran, and the bot stopped before the worker's answer: it stays cancelled.
            await self.ledger.set_status(generation.id, "failed", error=generation.error)
            raise JobFailed(f"generation {generation.id} was {generation.error}")
        spec = JobSpec.model_validate(generation.spec)
        spec = spec.model_copy(update={"inputs": self._refill(spec)})
        fast = generation.route.get("lane") == "fast"
        async with self._landed(generation.id):
            handle = await self.queue.submit(spec, generation.queue, fast=fast)
            if generation.status == "recorded":
                await self._mark_queued(generation.id, spec.job_id, generation.queue)
        caption = str(generation.route.get("caption", spec.prompt))
        reasons = "; ".join(str(r) for r in generation.route.get("reasons", []))
        return Submission(generation.id, spec, handle, caption, generation.queue, reasons)

    def finished_of(self, generation: Generation) -> Finished:
        """The Finished of a generation the ledger has as finished (its files are under the data dir)."""
        result = generation.result
        grid = result.get("grid")
        return Finished(
            generation_id=generation.id,
            files=tuple(Path(name) for name in result.get("files", [])),
            grid=Path(grid) if grid else None,
            seeds=tuple(int(seed) for seed in result.get("seeds", [])),
            caption=str(generation.route.get("caption", "")),
            notices=tuple(str(n) for n in result.get("notices", [])),
            kind=generation.kind,
        )

    async def upload(self, path: Path, max_bytes: int) -> Attachment:
        """`path` fitted to a platform's upload limit: a PNG as it is when it fits (its recipe kept),
        else a high-quality JPEG; videos and previews as the worker made them (already within budget).
        The full-quality file stays under the data dir."""
        data = await asyncio.to_thread(path.read_bytes)
        if path.suffix != ".png":
            media_type = {".mp4": "video/mp4", ".webp": "image/webp", ".gif": "image/gif"}.get(
                path.suffix, ""
            )
            return Attachment(path.name, data, media_type or "application/octet-stream")
        fitted, media_type = await asyncio.to_thread(
            lambda: fit_to_budget(png_to_image(data), max_bytes, metadata_png=data)
        )
        name = path.name if media_type == "image/png" else path.with_suffix(".jpg").name
        return Attachment(name, fitted, media_type)

    # --- the result buttons: U k, Vary, Upscale, Animate ------------------------------------------------

    async def _source(self, origin: Origin, generation_id: str, index: int, action: str) -> Source:
        return await find_source(self.ledger, origin.platform, origin.server_id, generation_id, index, action)

    async def variation(self, origin: Origin, generation_id: str, index: int) -> Path:
        """U k: variation `index` of a generation, at full resolution (the file to post on its own)."""
        return (await self._source(origin, generation_id, index, "select")).path

    async def vary(
        self,
        origin: Origin,
        generation_id: str,
        index: int,
        *,
        strong: bool = False,
        remix: str | None = None,
    ) -> Submission:
        """V k: new variations of variation `index`, subtle or strong; `remix` edits the prompt.

        A remix reads the prompt, its @characters, --no and --seed of `remix`. With no @names the parent's
        characters stay.
        """
        source = await self._source(origin, generation_id, index, "vary")
        assert source.spec.recipe is not None
        seed = self._seed_source()
        prompt = negative = None
        faces: tuple[InputImage, ...] | None = None
        adapter = None
        cast: tuple[Character, ...] = ()
        if remix is not None:
            request = parse_portrait(remix)
            prompt, cast = await self._cast(origin, request)
            negative = request.negative or None
            seed = request.seed if request.seed is not None else seed
            if cast:
                profile = self.catalog.get(source.spec.recipe.profile)
                if profile is None or profile.ip_adapter is None:
                    names = ", ".join("@" + c.name for c in cast)
                    raise BadPrompt(
                        f"the remix names {names}, but {source.spec.recipe.profile} cannot keep a face; "
                        "make a new /portrait with them instead"
                    )
                faces = tuple(
                    InputImage(role="face", media_type="image/jpeg", data=data, sha256=sha)
                    for sha, data in await self.characters.faces(cast)  # type: ignore[union-attr]
                )
                adapter = _adapter(profile, request, cast)
        spec = vary_spec(
            source,
            strong=strong,
            seed=seed,
            prompt=prompt,
            negative=negative,
            faces=faces,
            adapter=adapter,
        )
        how = "strong" if strong else "subtle"
        reason = f"vary ({how}{', remix' if remix is not None else ''}) of {source.label}"
        recipe = spec.recipe
        assert recipe is not None
        queue = self._queue_of(recipe.profile)
        text = f"{spec.prompt} · seed {seed} · {recipe.profile} ({reason})"
        route_info = {"profile": recipe.profile, "queue": queue, "reasons": [reason]}
        request_info = {"vary": {"strong": strong, "remix": remix}, "parent": source.label}
        submission = await self._submit(origin, spec, request_info, route_info, queue, text, reason)
        if self.characters and cast:
            await self.characters.store.record_use([c.id for c in cast])
        return submission

    async def press(self, origin: Origin, action: Action, generation_id: str, index: int) -> Submission:
        """A result button that makes something (every one but U k, which `variation` answers)."""
        if action in ("vary", "strong"):
            return await self.vary(origin, generation_id, index, strong=action == "strong")
        if action in ("up2", "up4"):
            return await self.upscale(origin, generation_id, index, factor=2 if action == "up2" else 4)
        if action == "animate":
            return await self.animate(origin, generation_id, index)
        if action == "reroll":
            return await self.reroll(origin, generation_id)
        raise GenerationRefused(f"this button ({action}) makes nothing new; it shows variation {index}")

    async def reroll(self, origin: Origin, generation_id: str) -> Submission:
        """The same request again with a new seed: a portrait's text, or a vary of the same variation."""
        record = await self._record(generation_id)
        files = indexed_files(record)
        # Exists, belongs to this server, finished: the checks every button makes.
        await self._source(origin, generation_id, min(files) if files else 1, "select")
        if record.kind == "vary" and record.parent_id and record.parent_index:
            asked = record.request.get("vary") or {}
            return await self.vary(
                origin,
                record.parent_id,
                record.parent_index,
                strong=bool(asked.get("strong")),
                remix=asked.get("remix"),
            )
        if record.kind == "txt2img" and "subject" in record.request:
            try:
                text = request_text(record.request)
            except ValueError as exc:
                raise GenerationRefused(f"generation {generation_id}: {exc}") from None
            return await self.portrait(origin, text)
        raise GenerationRefused(
            f"generation {generation_id} is a {record.kind}; Reroll makes portraits and variations again"
        )

    async def cancel(self, origin: Origin, generation_id: str, *, is_manager: bool = False) -> str:
        """Cancel a request, by its requester or a server manager: one still waiting is taken off the
        queue and recorded as failed ("cancelled by …") at once; a running one is stopped by its worker at
        the next step, and its result, failed with that reason, is recorded by whoever waits on it. Says
        what happened; refuses, saying why, when there is nothing left to cancel."""
        record = await self._record(generation_id)
        if (record.platform, record.server_id) != (origin.platform, origin.server_id):
            raise GenerationRefused(f"generation {generation_id} was made in another server")
        if record.user_id != origin.user_id and not is_manager:
            raise GenerationRefused(
                f"only the requester of {generation_id} or a server manager can cancel it"
            )
        landing = self._landing.get(generation_id)
        if landing is not None:  # on its way onto the queue: cancelled once it is there
            await landing.wait()
            record = await self._record(generation_id)
        if record.status not in ("recorded", "queued", "running"):
            raise GenerationRefused(
                f"generation {generation_id} is {record.status}; there is nothing left to cancel"
            )
        reason = f"{CANCELLED_BY}{origin.user_id}"
        # A generation still `recorded` may be on its way onto the queue: asked there too (the submitter
        # sees the cancel in the ledger and takes its job off if it lands after this).
        outcome = await self.queue.cancel(record.job_id, record.queue, reason)
        if outcome == "stopping":
            # Kept on record, so a restart before the worker's answer does not run it again.
            await self.ledger.set_status(
                generation_id, "running", error=reason, only_from=("recorded", "queued", "running")
            )
            return f"stopping `{generation_id}`: its worker ends it after the step under way"
        if outcome == "running":
            raise GenerationRefused(
                f"generation {generation_id} is already running where it cannot be stopped; it will finish"
            )
        if outcome == "finished":
            raise GenerationRefused(
                f"generation {generation_id} ended before the cancel reached it; nothing was cancelled"
            )
        # Off the queue (whoever waits on it may record the same), or unknown to it (Redis lost it): on
        # record as cancelled, so nothing resumes it; unless it ended meanwhile.
        open_statuses: tuple[Status, ...] = ("recorded", "queued", "running")
        only_from = None if outcome == "removed" else open_statuses
        if not await self.ledger.set_status(generation_id, "failed", error=reason, only_from=only_from):
            # Whoever waited on the job may have recorded this very cancel first: then it was cancelled.
            now = await self._record(generation_id)
            if (now.status, now.error) != ("failed", reason):
                raise GenerationRefused(
                    f"generation {generation_id} ended before the cancel reached it; nothing was cancelled"
                )
        return f"cancelled `{generation_id}`"

    async def _record(self, generation_id: str) -> Generation:
        record = await self.ledger.get(generation_id)
        if record is None:
            raise GenerationRefused(f"there is no generation {generation_id} on this deployment")
        return record

    async def upscale(self, origin: Origin, generation_id: str, index: int, *, factor: int = 2) -> Submission:
        """Upscale 2× or 4× of variation `index`, up to a 4096 px long edge."""
        source = await self._source(origin, generation_id, index, "upscale")
        spec, choice = upscale_spec(source, self.catalog, factor=factor, seed=self._seed_source())
        recipe = spec.recipe
        assert recipe is not None
        reasons = [f"upscaled {factor}× from {source.label}", *choice.reasons]
        return await self._button_submit(
            origin, source, spec, choice.profile.queue_name, reasons, {"factor": factor}
        )

    async def animate(
        self,
        origin: Origin,
        generation_id: str,
        index: int,
        *,
        seconds: float | None = None,
        fps: int | None = None,
        motion: int | str | None = None,
    ) -> Submission:
        """Animate variation `index`: an MP4 and an inline preview, each within the upload budget."""
        source = await self._source(origin, generation_id, index, "animate")
        spec, choice, plan = animate_spec(
            source,
            self.catalog,
            seed=self._seed_source(),
            max_bytes=self.upload_bytes,
            seconds=seconds,
            fps=fps,
            motion=motion,
        )
        reasons = [
            f"animated from {source.label}: {plan.frames} frames at {plan.fps} fps ({plan.seconds:.1f} s), "
            f"motion {plan.motion}",
            *choice.reasons,
        ]
        asked = {"seconds": seconds, "fps": fps, "motion": motion}
        return await self._button_submit(origin, source, spec, choice.profile.queue_name, reasons, asked)

    async def _button_submit(
        self,
        origin: Origin,
        source: Source,
        spec: JobSpec,
        queue: str,
        reasons: list[str],
        asked: dict[str, Any],
    ) -> Submission:
        recipe = spec.recipe
        assert recipe is not None
        # The portrait profile at the root of the chain: what an upscale of this upscale is matched to.
        origin_profile = source.generation.route.get("origin_profile") or source.spec.recipe.profile  # type: ignore[union-attr]
        route_info = {
            "profile": recipe.profile,
            "queue": queue,
            "reasons": reasons,
            "origin_profile": origin_profile,
        }
        text = f"{spec.prompt} · seed {recipe.seeds[0]} · {recipe.profile} ({'; '.join(reasons)})"
        request_info = {spec.kind: asked, "parent": source.label}
        return await self._submit(origin, spec, request_info, route_info, queue, text, "; ".join(reasons))

    def _member_lock(self, origin: Origin) -> asyncio.Lock:
        key = (origin.platform, origin.server_id, origin.user_id)
        lock = self._member_locks.get(key)
        if lock is None:
            lock = self._member_locks[key] = asyncio.Lock()
        return lock

    def _queue_of(self, profile_name: str) -> str:
        profile = self.catalog.get(profile_name)
        return profile.queue_name if profile else QUEUE_PREFIX + profile_name

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
        if result.video is not None:
            video = folder / f"{generation_id}.mp4"
            _write_atomically(video, result.video.mp4)
            extension = "gif" if result.video.preview_type == "image/gif" else "webp"
            preview = folder / f"{generation_id}_preview.{extension}"
            _write_atomically(preview, result.video.preview)
            files += [video, preview]
        grid = None
        if result.grid is not None:
            grid = folder / f"{generation_id}_grid.png"
            _write_atomically(grid, result.grid)
        return tuple(files), grid


def _for_ledger(spec: JobSpec) -> JobSpec:
    """What the ledger keeps of a spec: a source image is already on disk (its parent's file), so only its
    hash is recorded; face crops are small and kept, since a character may be deleted later."""
    inputs = tuple(
        item.model_copy(update={"data": b""}) if item.role == "source" else item for item in spec.inputs
    )
    return spec.model_copy(update={"inputs": inputs})


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
