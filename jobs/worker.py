"""The GPU worker: runs JobSpecs on resident pipelines, off the event loop, reporting progress.

`JobRunner` is the part both queues share: the in-process LocalQueue calls it directly, and
`serve()` wraps it in arq workers (one per profile queue, one job at a time: jobs/dispatch.py) for
`likeness worker`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import io
import logging
import signal
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from arq.constants import in_progress_key_prefix, result_key_prefix
from arq.worker import Retry

from jobs.acceleration import Step
from jobs.dispatch import Dispatcher, GatedWorker, Runner, served_profiles
from jobs.fleet import (
    HEARTBEAT_EVERY_S,
    WorkerBeat,
    forget_beat,
    publish_beat,
    record_duration,
    record_load,
)
from jobs.identity import (
    AdapterSource,
    AdapterWeightsMissing,
    attach_ip_adapter,
    ensure_tiny_ip_adapter,
    identity_kwargs,
    no_identity_kwargs,
    tiny_adapter_source,
)
from jobs.pipelines import (
    Attach,
    CannotRun,
    Device,
    PipelineCache,
    WeightsMissing,
    img2img,
    quiet_libraries,
    txt2img,
)
from jobs.queue import (
    ARQ_FUNCTION,
    CANCEL_KEY,
    EVENTS_TTL_S,
    EventPublisher,
    arq_redis_settings,
    publish_event,
)
from jobs.settings import WorkerSettings
from jobs.spec import (
    FROM_IMAGE_KINDS,
    SPEC_VERSION,
    Adapter,
    JobResult,
    JobSpec,
    ProgressEvent,
    Recipe,
    ResultImage,
    ResultVideo,
    new_id,
    pack,
    unpack,
)
from jobs.timeouts import DEFAULT_PACE, PACE_BY_DEVICE, TRIES, Pace, job_limit_s, timed_out_twice
from router.catalog import TINY_PREFIX, AdapterRef, Catalog, Profile
from router.engines import default_worker_profiles

log = logging.getLogger(__name__)

ProgressSink = Callable[[ProgressEvent], None]

END_EVENT = "likeness_end_event"  # where run_job leaves the last event for announce_end, in arq's ctx
FAILURE_WINDOW_S = 3600.0
LOCK_S = "likeness_lock_s"  # the in-progress lock's length, in arq's ctx (see `_hold_lock`)
PACE = "likeness_pace"  # the worker's Pace, what its jobs' time limits are scaled from, in arq's ctx
LEAVE = "likeness_leave_to_others"  # job id → until when this worker leaves it to others, in arq's ctx
OVERRUNS_KEY = "likeness:overruns:"  # how many times a job ran past its time limit
RETRY_ELSEWHERE_S = 30.0  # how long a worker leaves a job that ran past its limit here to other workers
CANCEL_POLL_S = 0.2  # how often a running job's cancel mark is looked for
OUTER_MARGIN_S = 60.0  # arq's own timeout, the outer bound, is the longest job limit plus this
DEFAULT_MEMORY_GB = 8.0  # for a recipe whose profile this worker's catalog does not list

TINY_NOTICE = (
    "{profile} is a tiny random-weight model: its images are noise. "
    "Configure real checkpoints in models.toml (README, section Models)."
)
LANCZOS_NOTICE = (
    "upscaled with Lanczos resampling: no upscale model is configured here, so no detail was added "
    "(README, section Models)"
)


@dataclass
class JobRun:
    """One run of a job on this runner. A retry of the same job id on the same worker is another run: a
    stop meant for the old one (still ending on the device) never reaches it."""

    spec: JobSpec
    ready: Callable[[], None] = lambda: None  # the pipeline is loaded: the job's time limit starts now
    stop: str | None = None  # why it must end at its next step (cancelled, or past its limit)


class JobStopped(Exception):
    """Raised from a pipeline's step callback to end the job there: it was cancelled, or it ran past its
    time limit. The message is the reason."""


@dataclass
class Made:
    """What the device made for one job, before encoding: images, or the frames of an animation."""

    images: list[Any]
    timings: dict[str, float]
    frames: list[Any] | None = None


class JobRunner:
    """Runs one job at a time per device; pipelines stay loaded between jobs."""

    def __init__(self, settings: WorkerSettings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        quiet_libraries()
        self.device = Device.pick(settings.device, settings.dtype)
        budget = settings.memory_budget_gb or self.device.memory_gb() * (
            0.9 if self.device.name == "cuda" else 0.5
        )
        self.cache = PipelineCache.from_settings(settings, self.device, budget)
        self._device_lock = asyncio.Lock()
        self.current_job: str | None = None  # the job holding the device
        self._failures: collections.deque[float] = collections.deque()
        self._failing: str | None = None  # why this worker stopped taking jobs for good: it keeps failing
        self._running: dict[str, JobRun] = {}  # job id → its latest run here
        self._on_device: JobRun | None = None  # the run holding the device
        self._served: list[str] | None = None  # the profiles `preload` was given; None: the whole catalog

    @property
    def paused(self) -> str | None:
        """Why this worker stopped taking jobs for good (until restarted): it keeps failing. The fleet
        routes around a paused worker."""
        return self._failing

    @property
    def holding(self) -> str:
        """Why this worker takes no job for now: a job told to stop still holds the device, until its
        pipeline reaches its next step (under a second after a cancel) or its thread ends (minutes, for a
        stuck one); "" when the device is free of such a job. Unlike `paused`, the worker still serves its
        profiles: routing keeps sending it work, which waits in its queue meanwhile."""
        run = self._on_device
        if run is not None and run.stop is not None:
            return f"waiting for job {run.spec.job_id} to let go of the device ({run.stop})"
        return ""

    def stop(self, job_id: str, reason: str) -> None:
        """End job `job_id` at its next denoising step (or tile), with `reason`: it was cancelled, or it
        ran past its time limit. Does nothing for a job not running here; of a job run here twice (a retry
        while the old run still ends), stops the latest run."""
        run = self._running.get(job_id)
        if run is not None:
            run.stop = reason

    def _check_stop(self, run: JobRun) -> None:
        if run.stop is not None:
            raise JobStopped(run.stop)

    async def preload(self, profile_names: list[str]) -> None:
        """Load these profiles' pipelines now, in order while they fit the memory budget, so the first
        user does not wait for them; the rest load on first use."""
        self._served = list(profile_names)
        used = 0.0
        for name in profile_names:
            profile = self.catalog.get(name)
            if profile is not None and profile.family != "lanczos":
                self.cache.expect(profile.memory_gb)  # host memory keeps room to load any of them
        loaded: set[str] = set()
        for name in profile_names:
            profile = self.catalog.get(name)
            if profile is None or profile.family == "lanczos" or profile.checkpoint in loaded:
                continue  # profiles on one checkpoint share its pipeline: counted and loaded once
            attach = self._attach_at_load(profile.checkpoint)
            memory = self._load_memory(profile.checkpoint, profile.memory_gb, attach)
            if used + memory > self.cache.budget_gb:
                log.info("not preloading %s: it would not fit the %.1f GB budget", name, self.cache.budget_gb)
                continue
            used += memory
            loaded.add(profile.checkpoint)
            await asyncio.to_thread(self.cache.get, profile.checkpoint, profile.family, memory, attach=attach)

    async def run(
        self, spec: JobSpec, progress: ProgressSink, *, ready: Callable[[], None] | None = None
    ) -> JobResult:
        """Run `spec`; failures come back as a JobResult with a reason, never as an exception.

        `ready` is called (on the event loop) once the job's pipeline is loaded and warmed up, before its
        first step: where its time limit starts (see `_run_within_limit`).
        """
        if spec.kind == "noop":
            return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=True, worker=self.name)
        if spec.recipe is None:
            return self._failed(spec, f"job {spec.job_id} ({spec.kind}) has no recipe")
        loop = asyncio.get_running_loop()

        def from_thread(event: ProgressEvent) -> None:
            loop.call_soon_threadsafe(progress, event)

        def ready_from_thread() -> None:
            if ready is not None:
                loop.call_soon_threadsafe(ready)

        run = JobRun(spec, ready=ready_from_thread)
        self._running[spec.job_id] = run
        try:
            # The device is held for loading and denoising only; encoding runs beside the next job.
            async with self._device_lock:
                self.current_job = spec.job_id
                self._on_device = run
                try:
                    progress(ProgressEvent(job_id=spec.job_id, state="started"))
                    made = await asyncio.to_thread(self._make, run, spec.recipe, from_thread)
                finally:
                    self.current_job = None
                    self._on_device = None
            self._check_stop(run)  # a stop that came during the last step: nothing is encoded
            progress(ProgressEvent(job_id=spec.job_id, state="encoding"))
            return await asyncio.to_thread(self._encode, spec, made)
        except JobStopped as exc:  # cancelled, or past its limit: neither is this worker's fault
            log.info("job %s stopped: %s", spec.job_id, exc)
            return self._failed(spec, str(exc))
        except CannotRun as exc:
            if isinstance(exc, WeightsMissing):  # the worker's fault, not the job's
                self._count_failure(str(exc))
            return self._failed(spec, str(exc))
        except Exception:
            error_id = new_id("e")
            log.exception("job %s failed (error id %s)", spec.job_id, error_id)
            self._count_failure(f"internal error {error_id}")
            return self._failed(spec, f"the worker hit an internal error (error id {error_id})")
        finally:
            if self._running.get(spec.job_id) is run:  # a later run of the same job is not this one's
                del self._running[spec.job_id]

    def _count_failure(self, reason: str) -> None:
        """A worker that keeps failing stops taking jobs (it would fail them all) and says why."""
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and self._failures[0] < now - FAILURE_WINDOW_S:
            self._failures.popleft()
        limit = self.settings.max_failures_per_hour
        if limit and len(self._failures) >= limit and self._failing is None:
            self._failing = (
                f"stopped taking jobs after {len(self._failures)} failures within an hour "
                f"(the last: {reason}); fix the cause and restart the worker"
            )
            log.error("worker %s %s", self.name, self._failing)

    @property
    def name(self) -> str:
        return self.settings.worker_name

    def _failed(self, spec: JobSpec, reason: str) -> JobResult:
        return JobResult(
            job_id=spec.job_id, generation_id=spec.generation_id, ok=False, error=reason, worker=self.name
        )

    def _pipeline(self, spec: JobSpec, recipe: Recipe, progress: ProgressSink) -> tuple[Any, float]:
        profile = self.catalog.get(recipe.profile)
        memory = profile.memory_gb if profile else DEFAULT_MEMORY_GB
        if recipe.checkpoint not in self.cache.resident:
            progress(ProgressEvent(job_id=spec.job_id, state="loading", message=recipe.checkpoint))
        attach = self._attach_at_load(recipe.checkpoint)
        memory = self._load_memory(recipe.checkpoint, memory, attach)
        return self.cache.get(recipe.checkpoint, recipe.family, memory, attach=attach)

    def _served_on(self, checkpoint: str) -> list[Profile]:
        """The profiles this worker serves (`preload`'s, else the whole catalog) on `checkpoint`."""
        names = self._served if self._served is not None else [p.name for p in self.catalog]
        found = (self.catalog.get(name) for name in names)
        return [profile for profile in found if profile is not None and profile.checkpoint == checkpoint]

    def _load_memory(self, checkpoint: str, memory_gb: float, attach: Attach | None) -> float:
        """The memory a pipeline is counted for: with the identity adapter loaded with it, that of the
        largest profile served on its checkpoint (identity-xl declares the adapter and its encoder)."""
        if attach is None:
            return memory_gb
        return max([memory_gb, *(profile.memory_gb for profile in self._served_on(checkpoint))])

    def _attach_at_load(self, checkpoint: str) -> Attach | None:
        """Where a profile this worker serves draws characters from `checkpoint`, its identity adapter is
        loaded with the pipeline, before compiling: a resident pipeline serves jobs with and without faces
        (sdxl-base and identity-xl share one), and loading the adapter later would change the compiled
        blocks under a user's job and compile them again there. A missing adapter does not stop the load:
        the faceless profiles still work, and an identity job fails with what to install."""
        source_ref = next(
            (
                profile.ip_adapter
                for profile in self._served_on(checkpoint)
                if profile.ip_adapter is not None and profile.available  # its adapter's weights are here
            ),
            None,
        )
        if source_ref is None:
            return None

        def attach(pipeline: Any) -> Step:
            try:
                source = self._adapter_source(source_ref)
                attach_ip_adapter(pipeline, source)
            except (AdapterWeightsMissing, ValueError) as exc:
                log.warning("no identity adapter with %s, identity jobs will fail: %s", checkpoint, exc)
                return Step("identity_adapter", False, f"not loaded: {exc}")
            return Step("identity_adapter", True, f"{source.repo} {source.weight_name}, with the pipeline")

        return attach

    def _adapter_source(self, ref: AdapterRef | Adapter) -> AdapterSource:
        """Where the adapter a profile (`AdapterRef`) or a job's recipe (`Adapter`) names is loaded from."""
        if ref.source.startswith(TINY_PREFIX):
            return tiny_adapter_source(ensure_tiny_ip_adapter(self.settings.models_dir))
        return AdapterSource(
            repo=ref.source,
            subfolder=ref.subfolder,
            weight_name=ref.weight_name,
            image_encoder_folder=ref.image_encoder_folder,
        )

    def _make(self, run: JobRun, recipe: Recipe, progress: ProgressSink) -> Made:
        """Run the job's model on the device: txt2img and vary give images, upscale one, animate frames."""
        spec = run.spec
        timings: dict[str, float] = {"load": 0.0}

        def on_step(step: int, total: int) -> None:
            # Called after each denoising step (each tile of an upscale): where a stop takes effect.
            self._check_stop(run)
            progress(ProgressEvent(job_id=spec.job_id, state="step", step=step, total=total))

        self._check_stop(run)
        pipeline = None
        if recipe.family != "lanczos":
            restores = self.cache.restores
            pipeline, took = self._pipeline(spec, recipe, progress)
            # Bringing a parked pipeline back is not a load: placement's load times stay those of loads.
            timings["restore" if self.cache.restores > restores else "load"] = took
        run.ready()  # loaded (and compiled, and warmed up): the job's own time starts
        self._check_stop(run)
        source = _decode_image(spec.source().data) if spec.kind in FROM_IMAGE_KINDS else None
        started = time.perf_counter()
        made = Made(images=[], timings=timings)
        if spec.kind == "upscale":
            made.images = [self._upscale(pipeline, spec, recipe, source, on_step)]
        elif spec.kind == "animate":
            made.frames = self._animate(pipeline, recipe, source, on_step)
        else:
            extra = self._identity(pipeline, spec, recipe)
            if spec.kind == "vary":
                from diffusers import AutoPipelineForImage2Image

                twin = self.cache.derived(recipe.checkpoint, "img2img", AutoPipelineForImage2Image.from_pipe)
                made.images = img2img(twin, spec.prompt, spec.negative, recipe, source, on_step, extra)
            else:
                made.images = txt2img(pipeline, spec.prompt, spec.negative, recipe, on_step, extra)
        timings["run"] = time.perf_counter() - started
        return made

    def _upscale(
        self, engine: Any, spec: JobSpec, recipe: Recipe, source: Any, on_step: Callable[[int, int], None]
    ) -> Any:
        from jobs.upscale import UpscaleParams, upscale

        if recipe.upscale is None:
            raise CannotRun(f"upscale job {spec.job_id} has no upscale settings")
        params = UpscaleParams(
            factor=recipe.upscale.factor,
            tile=recipe.upscale.tile,
            overlap=recipe.upscale.overlap,
            steps=recipe.steps,
            cfg=recipe.cfg,
            noise_level=recipe.upscale.noise_level,
            seed=recipe.seeds[0],
            prompt=spec.prompt,
            negative=spec.negative,
        )
        image = upscale(engine, recipe.family, source, params, on_step)
        if image.size != (recipe.width, recipe.height):
            raise CannotRun(
                f"the upscale came out {image.width}×{image.height}, not {recipe.width}×{recipe.height}"
            )
        return image

    def _animate(
        self, pipeline: Any, recipe: Recipe, source: Any, on_step: Callable[[int, int], None]
    ) -> Any:
        from jobs.animate import MotionParams, animate

        motion = recipe.motion
        if motion is None:
            raise CannotRun("this animate job has no motion settings")
        params = MotionParams(
            width=recipe.width,
            height=recipe.height,
            frames=motion.frames,
            fps=motion.fps,
            motion=motion.motion,
            noise_aug=motion.noise_aug,
            steps=recipe.steps,
            min_cfg=motion.min_cfg,
            max_cfg=recipe.cfg,
            decode_chunk=motion.decode_chunk,
            seed=recipe.seeds[0],
        )
        return animate(pipeline, source, params, on_step)

    def _identity(self, pipeline: Any, spec: JobSpec, recipe: Recipe) -> dict[str, Any]:
        """Pipeline-call arguments for the job's reference faces, or for none.

        A resident pipeline serves jobs with and without faces: once an adapter is attached, a job
        without faces passes zero embeddings at scale 0, which gives exactly the pixels of a pipeline
        that never had the adapter.
        """
        faces = [_decode_image(item.data) for item in spec.inputs if item.role == "face"]
        batch = len(recipe.seeds)
        if not faces:
            return no_identity_kwargs(pipeline, batch)
        if recipe.adapter is None:
            raise CannotRun(f"{recipe.profile} has no identity adapter, so it cannot draw characters")
        adapter = recipe.adapter
        try:
            source = self._adapter_source(adapter)
            attach_ip_adapter(pipeline, source)  # a no-op where it was loaded with the pipeline
        except AdapterWeightsMissing as exc:
            raise WeightsMissing(str(exc)) from exc
        except ValueError as exc:
            raise CannotRun(f"{recipe.profile}: {exc}") from exc
        return identity_kwargs(pipeline, faces, adapter.scale, batch)

    def _encode(self, spec: JobSpec, made: Made) -> JobResult:
        from jobs.media import contact_grid, encode_png, png_bytes

        started = time.perf_counter()
        timings = made.timings
        recipe = spec.recipe
        video = None
        results: tuple[ResultImage, ...] = ()
        grid = None
        if made.frames is not None:
            video = self._encode_video(spec, made.frames)
        else:
            kept = [(index, made.images[index - 1]) for index in spec.kept]
            # zlib releases the GIL: the PNGs encode in parallel.
            with ThreadPoolExecutor(max_workers=len(kept) + 1, thread_name_prefix="likeness-png") as pool:
                sheet = (
                    pool.submit(lambda: png_bytes(contact_grid([image for _, image in kept])))
                    if len(kept) > 1 or spec.kind in ("txt2img", "vary")
                    else None
                )
                pngs = list(pool.map(lambda item: encode_png(item[1], spec, item[0]), kept))
                grid = sheet.result() if sheet is not None else None
            results = tuple(
                ResultImage(
                    index=index, seed=spec.seed_of(index), width=image.width, height=image.height, png=png
                )
                for (index, image), png in zip(kept, pngs, strict=True)
            )
        timings["encode"] = time.perf_counter() - started
        timings["total"] = sum(timings.values())
        notices: tuple[str, ...] = ()
        if recipe is not None and recipe.checkpoint.startswith(TINY_PREFIX):
            notices = (TINY_NOTICE.format(profile=recipe.profile),)
        elif recipe is not None and recipe.family == "lanczos":
            notices = (LANCZOS_NOTICE,)
        return JobResult(
            job_id=spec.job_id,
            generation_id=spec.generation_id,
            ok=True,
            images=results,
            grid=grid,
            video=video,
            worker=self.name,
            timings=timings,
            notices=notices,
        )

    def _encode_video(self, spec: JobSpec, frames: list[Any]) -> ResultVideo:
        """The MP4 (its recipe in the `comment` tag) and the inline preview, each within the upload budget."""
        from jobs.video import fit_preview, fit_video

        recipe = spec.recipe
        if recipe is None or recipe.motion is None:
            raise CannotRun(f"animate job {spec.job_id} has no motion settings")
        motion = recipe.motion
        comment = spec.without_input_bytes().model_dump_json()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="likeness-video") as pool:
            mp4 = pool.submit(fit_video, frames, motion.fps, motion.max_bytes, comment=comment)
            preview = pool.submit(fit_preview, frames, motion.fps, motion.max_bytes)
            preview_data, preview_type = preview.result()
            return ResultVideo(
                seed=recipe.seeds[0],
                width=frames[0].width,
                height=frames[0].height,
                frames=len(frames),
                fps=motion.fps,
                mp4=mp4.result(),
                preview=preview_data,
                preview_type=preview_type,
            )


def _decode_image(data: bytes) -> Any:
    """An input image (face crop or source variation) as RGB; refuses files too large to be ours."""
    from PIL import Image

    from jobs.media import MAX_PIXELS

    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > MAX_PIXELS:
            raise CannotRun(
                f"an input image is {image.width}×{image.height}, too large to be a Likeness image"
            )
        return image.convert("RGB")


async def run_job(ctx: dict[str, Any], spec_data: dict[str, Any]) -> dict[str, Any]:
    """The arq job function: one JobSpec in, one JobResult out, progress to the job's event stream."""
    runner: SupportsRun = ctx["runner"]
    version = spec_data.get("version") if isinstance(spec_data, dict) else None
    if version != SPEC_VERSION:
        reason = f"job spec version {version!r} is not {SPEC_VERSION}; upgrade the worker or the bot"
        generation_id = str(spec_data.get("generation_id", "")) if isinstance(spec_data, dict) else ""
        result = JobResult(
            job_id=str(ctx.get("job_id", "")), generation_id=generation_id, ok=False, error=reason
        )
    else:
        spec = JobSpec.model_validate(spec_data)
        result = await _run_within_limit(ctx, runner, spec)
        if result.ok and spec.recipe is not None and "total" in result.timings:
            await record_duration(ctx["redis"], spec.recipe.profile, result.timings["total"])
        if result.ok and spec.recipe is not None and result.timings.get("load", 0.0) > 0:
            await record_load(ctx["redis"], spec.recipe.profile, result.timings["load"])
    state: Literal["finished", "failed"] = "finished" if result.ok else "failed"
    ctx[END_EVENT] = ProgressEvent(job_id=result.job_id, state=state, message=result.error)
    return result.model_dump()


async def _run_within_limit(ctx: dict[str, Any], runner: SupportsRun, spec: JobSpec) -> JobResult:
    """Run `spec` within its time limit (jobs/timeouts.py), and end it early if it is cancelled.

    The limit covers the run alone: its clock starts when the runner says the pipeline is ready (loaded,
    compiled and warmed up; a runner that cannot say starts it at once). Loading has its own, generous
    bound (`Pace.load_s`): a cold load on a slow disk is no sign of a stuck job, and a retry would only
    load again.

    The pipeline runs in a thread that cannot be cancelled. Past its limit the job is told to stop at
    its next step and left to end on its own: the runner keeps its device, and this worker takes no new
    job, until it has. Meanwhile the job is tried again, by another worker if there is one (arq's Retry
    keeps its id, so whoever waits on it keeps waiting); past its limit a second time it fails with the
    reason.
    """
    redis = ctx["redis"]
    job_id = str(ctx.get("job_id", spec.job_id))
    pace: Pace = ctx.get(PACE) or Pace()
    limit_s = job_limit_s(spec, pace)
    publisher = EventPublisher(redis)
    live = True  # once the job is given up on here, what its thread still reports is dropped

    def emit(event: ProgressEvent) -> None:
        if live:
            publisher.emit(event)

    ready = asyncio.Event()
    locking = asyncio.create_task(_hold_lock(redis, job_id, float(ctx.get(LOCK_S, 30.0))))
    watching = asyncio.create_task(_watch_cancel(redis, job_id, runner))
    if _says_when_ready(runner):
        running = asyncio.ensure_future(runner.run(spec, emit, ready=ready.set))  # type: ignore[call-arg]
    else:
        ready.set()
        running = asyncio.ensure_future(runner.run(spec, emit))
    bound_s = pace.load_s  # until the pipeline is ready; then the job's own limit
    try:
        waiting = asyncio.ensure_future(ready.wait())
        try:
            done, _ = await asyncio.wait({running, waiting}, timeout=bound_s, return_when=FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not done:
            raise TimeoutError
        bound_s = limit_s
        return await asyncio.wait_for(asyncio.shield(running), limit_s)
    except TimeoutError:
        live = False
        return await _overran(ctx, runner, spec, job_id, bound_s, running)
    except asyncio.CancelledError:  # arq gave up on it (shutdown, or its own timeout): it runs again later
        live = False
        _stop(runner, job_id, "the worker stopped before the job ended")
        given_up = time.monotonic()
        running.add_done_callback(lambda task: _let_go(task, job_id, given_up))
        raise
    finally:
        locking.cancel()
        watching.cancel()
        await publisher.close()


def _says_when_ready(runner: SupportsRun) -> bool:
    """Whether the runner's `run` takes `ready`, to say when its pipeline is loaded (a JobRunner does)."""
    run = runner.run
    try:
        return _takes_ready(getattr(run, "__func__", run))
    except TypeError:  # an unhashable callable: look without the cache
        return _takes_ready.__wrapped__(run)


@functools.lru_cache(maxsize=64)
def _takes_ready(run: Callable[..., Any]) -> bool:
    # Asked once per job: reading a signature costs more than the rest of a no-op job's bookkeeping.
    try:
        return "ready" in inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False


async def _overran(
    ctx: dict[str, Any],
    runner: SupportsRun,
    spec: JobSpec,
    job_id: str,
    limit_s: float,
    running: asyncio.Future[JobResult],
) -> JobResult:
    """The job ran past its limit here: stop it, then try it once more (elsewhere), or fail it."""
    name = str(getattr(runner, "name", "") or "this worker")
    log.warning("job %s ran past its %.0f s limit on %s; stopping it", job_id, limit_s, name)
    _stop(runner, job_id, f"it ran past its {limit_s:.0f} s limit")
    given_up = time.monotonic()
    running.add_done_callback(lambda task: _let_go(task, job_id, given_up))
    redis = ctx["redis"]
    # Counted apart from arq's job_try: a try that ended because a worker died is no timeout.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(OVERRUNS_KEY + job_id)
        pipe.expire(OVERRUNS_KEY + job_id, EVENTS_TTL_S)
        overruns, _ = await pipe.execute()
    if int(overruns) >= TRIES:
        return JobResult(
            job_id=spec.job_id,
            generation_id=spec.generation_id,
            ok=False,
            error=timed_out_twice(spec, limit_s),
            worker=name,
        )
    leave: dict[str, float] | None = ctx.get(LEAVE)
    if leave is not None:
        leave[job_id] = time.monotonic() + RETRY_ELSEWHERE_S
    again = f"it took longer than {limit_s:.0f} s on {name}; trying again on another worker"
    await publish_event(redis, ProgressEvent(job_id=job_id, state="queued", message=again))
    raise Retry()  # back on its queue under the same id, at its old place


def _stop(runner: SupportsRun, job_id: str, reason: str) -> None:
    stop = getattr(runner, "stop", None)
    if stop is not None:
        stop(job_id, reason)


def _let_go(task: asyncio.Future[JobResult], job_id: str, since: float) -> None:
    """A job given up on has ended on the device: the worker takes jobs again."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("job %s, given up on, ended with %r", job_id, task.exception())
    log.info("job %s let go of the device %.1f s after it was given up on", job_id, time.monotonic() - since)


async def _watch_cancel(redis: Any, job_id: str, runner: SupportsRun) -> None:
    """Look for the job's cancel mark (set by `ArqQueue.cancel`) while it runs; once set, tell the runner
    to end the job at its next step."""
    if getattr(runner, "stop", None) is None:
        return
    key = CANCEL_KEY + job_id
    failing = False
    while True:
        try:
            # Shielded: this watch is cancelled when the job ends, often while a look is in flight, and a
            # read cancelled midway makes the Redis client close its connection (a reconnect per job).
            reason = await asyncio.shield(redis.get(key))
        except Exception:  # a missed look is made good by the next one
            if not failing:
                log.warning("could not look for a cancel of job %s", job_id, exc_info=True)
            failing = True
        else:
            failing = False
            if reason is not None:
                _stop(runner, job_id, reason.decode() if isinstance(reason, bytes) else str(reason))
                return
        await asyncio.sleep(CANCEL_POLL_S)


async def _hold_lock(redis: Any, job_id: str, lock_s: float) -> None:
    """Keep arq's in-progress lock of a running job alive while this worker lives.

    The lock is short (`job_lock_s`, 30 s by default) and renewed every third of it: when a worker dies
    mid-job, the lock lapses within that time and another worker runs the job again, instead of waiting
    out arq's default of the longest job timeout plus 10 s.
    """
    key = in_progress_key_prefix + job_id
    while True:
        await asyncio.sleep(lock_s / 3)
        try:
            await asyncio.shield(redis.pexpire(key, int(lock_s * 1000)))  # as in _watch_cancel
        except Exception:  # a missed renewal is made good by the next one
            log.warning("could not renew the lock of job %s", job_id, exc_info=True)


async def announce_end(ctx: dict[str, Any]) -> None:
    """arq's `after_job_end`: runs once the result is stored, so a client this event wakes finds it."""
    event: ProgressEvent | None = ctx.get(END_EVENT)
    if event is None:
        # The job raised or was cancelled. Without a stored result arq will run it again: say nothing yet.
        if not await ctx["redis"].exists(result_key_prefix + ctx["job_id"]):
            return
        event = ProgressEvent(
            job_id=ctx["job_id"], state="failed", message="the job raised; see the worker log"
        )
    await publish_event(ctx["redis"], event)


async def _heartbeat(
    runner: Runner, profiles: list[str], queues: list[str], dispatcher: Dispatcher, redis: Any
) -> None:
    """Tell the fleet what this worker serves, holds and runs: every few seconds, and at once when it turns
    busy or idle or what it holds changes (placement on other workers reads it). Its key expires with it."""
    residency = getattr(runner.cache, "residency", None)  # a PipelineCache says what it parked and moved
    while True:
        dispatcher.changed.clear()
        try:
            beat = WorkerBeat(
                worker=runner.name,
                queues=tuple(queues),
                profiles=tuple(profiles),
                loaded=tuple(runner.cache.resident),
                device=runner.device.name,
                memory_budget_gb=runner.cache.budget_gb,
                current_job=runner.current_job,
                holds=dispatcher.holds(),
                capacity=dispatcher.capacity(),
                busy=dispatcher.busy,
                paused=getattr(runner, "paused", None) or "",
                holding=getattr(runner, "holding", None) or "",
                **({"residency": residency()} if callable(residency) else {}),
            )
            await publish_beat(redis, beat)
        except Exception:  # a missed beat only makes the worker look idle or gone for a moment
            log.warning("heartbeat failed", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dispatcher.changed.wait(), HEARTBEAT_EVERY_S)


class SupportsRun(Protocol):
    """What a worker needs of a runner. One that also has `stop(job_id, reason)`, as JobRunner does, can
    be told to end a job at its next step (a cancel, or its time limit); another runs each job to its end.
    """

    async def run(self, spec: JobSpec, progress: ProgressSink) -> JobResult: ...


def arq_worker(
    runner: SupportsRun,
    queue_name: str,
    redis_url: str,
    *,
    burst: bool = False,
    poll_delay_s: float = 0.05,
    job_timeout_s: float = 900,
    job_lock_s: float = 30.0,
    pace: Pace | None = None,
) -> GatedWorker:
    """An arq Worker that feeds one queue to `runner`, one job at a time. Build it inside the running
    event loop. It takes jobs while its `allow_pick_jobs` is on (`serve()`'s Dispatcher sets it) and the
    runner's device is free.

    Each job's time limit comes from `pace` (jobs/timeouts.py; default: a mid GPU, at most
    `job_timeout_s`); arq's own timeout, a little longer, is only the outer bound.
    """
    from arq import func

    leave: dict[str, float] = {}
    outer_s = job_timeout_s + OUTER_MARGIN_S
    worker = GatedWorker(
        functions=[func(run_job, name=ARQ_FUNCTION, timeout=outer_s)],
        queue_name=queue_name,
        redis_settings=arq_redis_settings(redis_url),
        ctx={
            "runner": runner,
            LOCK_S: job_lock_s,
            PACE: pace or Pace(ceiling_s=job_timeout_s),
            LEAVE: leave,
        },
        burst=burst,
        poll_delay=poll_delay_s,
        max_jobs=1,
        handle_signals=False,
        job_serializer=pack,
        job_deserializer=unpack,
        keep_result=24 * 3600,
        job_completion_wait=int(outer_s),
        log_results=False,  # arq would repr() every result, images included, on the event loop
        after_job_end=announce_end,
    )
    worker.leave_to_others = leave
    worker.may_take = lambda: _device_free(runner)
    # A short in-progress lock, renewed while the job runs (see `_hold_lock`).
    worker.in_progress_timeout_s = job_lock_s
    return worker


def _device_free(runner: SupportsRun) -> bool:
    """No job holds the runner's device (one given up on may, until its thread ends: `holding`), and it
    is not paused."""
    return (
        getattr(runner, "current_job", None) is None
        and not getattr(runner, "paused", None)
        and not getattr(runner, "holding", None)
    )


def pace_of(settings: WorkerSettings, device: str) -> Pace:
    """The worker's pace from its settings; its speed, when not set, from its kind of device."""
    return Pace(
        seconds_per_megapixel_step=settings.seconds_per_megapixel_step
        or PACE_BY_DEVICE.get(device, DEFAULT_PACE),
        safety=settings.job_timeout_safety,
        # Loading is bounded on its own clock, at least as generously as the longest job.
        load_s=max(float(settings.job_timeout_s), settings.job_load_allowance_s),
        floor_s=settings.job_timeout_floor_s,
        ceiling_s=settings.job_timeout_s,
    )


async def serve(
    settings: WorkerSettings, catalog: Catalog, *, burst: bool = False, runner: Runner | None = None
) -> None:
    """Run arq workers for the configured profiles until SIGINT/SIGTERM (or, with `burst`, until idle).

    One arq Worker per queue, and a `Dispatcher` (jobs/dispatch.py) that lets one of them at a time take
    a job, from the queue placement chooses. `runner` replaces the JobRunner (tests). The arq Workers must
    be built inside the running event loop: built outside, they hang silently.
    """
    from arq import create_pool

    if not settings.redis_url:
        raise ValueError(
            "a worker needs a Redis URL: set LIKENESS_REDIS_URL or pass --redis redis://host:6379"
        )
    names = settings.profiles or default_worker_profiles(catalog)
    unknown = [n for n in names if catalog.get(n) is None]
    if unknown:
        raise ValueError(
            f"unknown profile(s) {', '.join(unknown)}; use names from `likeness models list`: "
            + ", ".join(p.name for p in catalog)
        )
    if runner is None:
        runner = JobRunner(settings, catalog)
    await runner.preload(names)
    profiles = served_profiles(catalog, names)
    queues = sorted({p.queue for p in profiles})
    pace = pace_of(settings, runner.device.name)
    redis = await create_pool(
        arq_redis_settings(settings.redis_url), job_serializer=pack, job_deserializer=unpack
    )
    workers = {
        queue: arq_worker(
            runner,
            queue,
            settings.redis_url,
            burst=burst,
            poll_delay_s=settings.poll_delay_s,
            job_timeout_s=settings.job_timeout_s,
            job_lock_s=settings.job_lock_s,
            pace=pace,
        )
        for queue in queues
    }
    dispatcher = Dispatcher(workers, profiles, redis, runner, burst=burst, poll_delay_s=settings.poll_delay_s)
    for worker in workers.values():
        worker.when_job_ends = dispatcher.wake
    helpers = [
        asyncio.create_task(dispatcher.run(), name="likeness-dispatch"),
        asyncio.create_task(_heartbeat(runner, names, queues, dispatcher, redis), name="likeness-heartbeat"),
    ]

    def stop(signum: int) -> None:
        # Stop the dispatcher first, so no queue opens again; let the job under way finish (up to the job
        # timeout), then exit.
        dispatcher.stop()
        for one in workers.values():
            one.handle_sig_wait_for_completion(signal.Signals(signum))

    async def work(queue: str, worker: GatedWorker) -> None:
        try:
            await worker.async_run()
        finally:
            dispatcher.retire(queue)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    log.info(
        "worker %s serving %s on %s (%s)", runner.name, ", ".join(names), ", ".join(queues), runner.device
    )
    runs = [asyncio.create_task(work(queue, worker)) for queue, worker in workers.items()]
    try:
        # Wait for every Worker: on a signal the idle ones end at once, the busy one once its job is done
        # (closing it earlier would cancel that job). A Worker ends by being cancelled, or fails.
        pending: set[asyncio.Task[None]] = set(runs)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        dispatcher.stop()
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await forget_beat(redis, runner.name)
        await asyncio.gather(*(w.close() for w in workers.values()))
        await asyncio.gather(*runs, return_exceptions=True)
        await redis.aclose()
