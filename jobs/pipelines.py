"""Diffusers pipelines on the worker: loaded once, kept resident under a memory budget, run per recipe.

Everything here is blocking and runs in a worker thread; the event loop never waits on torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jobs.acceleration import FastPath, Step, accelerate, fit_vae
from jobs.fleet import Residency
from jobs.settings import WorkerSettings
from jobs.spec import Recipe
from jobs.tiny import ensure_tiny_pipeline
from router.catalog import TINY_PREFIX

log = logging.getLogger(__name__)

# Loads an identity adapter into a freshly loaded pipeline, saying what it did (jobs/worker.py makes one).
Attach = Callable[[Any], Step]
HOST_SHARE = 0.4  # of the host's RAM parks pipelines moved off the GPU, unless configured
CGROUP_ROOT = Path("/sys/fs/cgroup")  # where a container's memory limit is read (cgroup v2, or v1 below)

# Single-file checkpoints need to be told their architecture; folders and hub ids carry model_index.json.
_SINGLE_FILE_CLASSES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


def quiet_libraries() -> None:
    """No download/loading progress bars from diffusers, transformers or the hub: workers log instead."""
    import diffusers
    import transformers
    from huggingface_hub.utils.tqdm import disable_progress_bars

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    disable_progress_bars()


class CannotRun(RuntimeError):
    """This worker cannot run the job as asked; the message, fit for the user, says why."""


class WeightsMissing(CannotRun):
    """The checkpoint is not on this worker; the message says how to get it there."""


@dataclass(frozen=True)
class Device:
    """Where and in which precision pipelines run."""

    name: str
    dtype: torch.dtype

    @classmethod
    def pick(cls, device: str = "auto", dtype: str = "auto") -> Device:
        if device == "auto":
            if torch.cuda.is_available():
                device = "cuda"
            elif torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        if dtype == "auto":
            if device == "cuda":
                dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
            elif device == "mps":
                dtype = "float16"
            else:
                dtype = "float32"
        return cls(name=device, dtype=getattr(torch, dtype))

    def memory_gb(self) -> float:
        """Memory this device offers to pipelines: a GPU's own, or the host's (within its cgroup)."""
        if self.name == "cuda":
            return float(torch.cuda.get_device_properties(0).total_memory) / 2**30
        return host_memory_gb()


def host_memory_gb(cgroup_root: Path = CGROUP_ROOT) -> float:
    """The host memory this process may use: the machine's RAM, or less where its cgroup (a container's
    memory limit, v2 `memory.max` or v1 `memory/memory.limit_in_bytes`) says so. Past a cgroup's limit the
    kernel kills the worker, however much RAM the machine has."""
    limits = [float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))]
    for path in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:  # no such cgroup version here, or not readable: no limit from it
            continue
        if text.isdigit():  # "max" (v2) is no limit; v1 says none with a huge number, which min() skips
            limits.append(float(text))
    return min(limits) / 2**30


@dataclass
class Resident:
    pipeline: Any
    memory_gb: float
    derived: dict[str, Any] = field(default_factory=dict)
    fast_path: tuple[str, ...] = ()  # the speed-ups applied at load (jobs/acceleration.py)


class PipelineCache:
    """Pipelines by checkpoint: a checkpoint loads once and stays resident while it fits the budget.

    When a new checkpoint does not fit the device's budget, the least recently used ones make room: on
    CUDA they are first parked in host memory (`host_budget_gb`; brought back to the GPU in about a
    second when used again), and only dropped when that is full too. Every move is logged and counted
    (`residency()`, which the heartbeat carries). `host_device` names where parked pipelines go:
    "cpu" on CUDA by default, none elsewhere (a CPU worker has nowhere cheaper to put them); tests name
    it to run the parking on a CPU-only machine.

    Unless configured, the host budget is `HOST_SHARE` of the host memory the worker may use (its
    cgroup's limit, read under `cgroup_root`, where lower than the RAM), less the largest pipeline it
    knows of (resident, parked, or `expect`ed), so that parked pipelines never leave too little memory to
    load the next one through; never below 0.

    The event loop (the heartbeat, the dispatcher) reads what is where while a job thread moves
    pipelines: it reads snapshots, replaced whole under the lock at each change, never the live dicts.
    """

    def __init__(
        self,
        models_dir: Path,
        device: Device,
        budget_gb: float,
        *,
        host_budget_gb: float | None = None,
        host_device: str | None = None,
        fast_path: FastPath | None = None,
        cgroup_root: Path = CGROUP_ROOT,
    ) -> None:
        self.models_dir = models_dir
        self.device = device
        self.budget_gb = budget_gb
        self.host_device = (
            host_device if host_device is not None else ("cpu" if device.name == "cuda" else None)
        )
        self._host_budget_gb = host_budget_gb  # None: from the host memory, less the largest pipeline
        self._host_available_gb = host_memory_gb(cgroup_root) if self.host_device is not None else 0.0
        self._largest_gb = 0.0  # the largest pipeline this cache has held or been told to expect
        self.fast_path = fast_path if fast_path is not None else FastPath.for_device(device.name)
        self.loads: dict[str, int] = {}
        self.offloads = self.restores = self.drops = 0
        self._resident: OrderedDict[str, Resident] = OrderedDict()  # on the device, least recent first
        self._parked: OrderedDict[str, Resident] = OrderedDict()  # in host memory, least recent first
        self._lock = threading.Lock()
        # What other threads read, replaced whole at each change (see the class docstring).
        self._resident_now: tuple[str, ...] = ()
        self._parked_now: tuple[str, ...] = ()
        self._fast_path_now: tuple[str, ...] = ()
        self._loads_now = 0
        self._used_now = 0.0

    @classmethod
    def from_settings(cls, settings: WorkerSettings, device: Device, budget_gb: float) -> PipelineCache:
        return cls(
            settings.models_dir,
            device,
            budget_gb,
            host_budget_gb=settings.host_memory_budget_gb,
            fast_path=FastPath.from_settings(settings, device.name),
        )

    @property
    def host_budget_gb(self) -> float:
        """Host memory for parked pipelines: as configured, or as the class docstring says."""
        if self.host_device is None:
            return 0.0
        if self._host_budget_gb is not None:
            return self._host_budget_gb
        available = self._host_available_gb
        return max(0.0, min(available * HOST_SHARE, available - self._largest_gb))

    def expect(self, memory_gb: float) -> None:
        """A pipeline of `memory_gb` may be loaded here (a profile the worker serves): host memory keeps
        room to load it through."""
        self._largest_gb = max(self._largest_gb, memory_gb)

    @property
    def resident(self) -> list[str]:
        """Checkpoints on the device, least recently used first."""
        return list(self._resident_now)

    @property
    def offloaded(self) -> list[str]:
        """Checkpoints parked in host memory, least recently used first."""
        return list(self._parked_now)

    @property
    def used_gb(self) -> float:
        """The memory the resident pipelines take, as the budget counts it (their fused copies included)."""
        return self._used_now

    def residency(self) -> Residency:
        return Residency(
            offloaded=self._parked_now,
            host_budget_gb=round(self.host_budget_gb, 2),
            loads=self._loads_now,
            offloads=self.offloads,
            restores=self.restores,
            drops=self.drops,
            fast_path=self._fast_path_now,
        )

    def _changed(self) -> None:
        """Take the snapshots other threads read; called under the lock after each change."""
        self._resident_now = tuple(self._resident)
        self._parked_now = tuple(self._parked)
        self._fast_path_now = tuple(sorted({name for r in self._resident.values() for name in r.fast_path}))
        self._loads_now = sum(self.loads.values())
        self._used_now = sum(r.memory_gb for r in self._resident.values())

    def get(
        self, checkpoint: str, family: str, memory_gb: float, *, attach: Attach | None = None
    ) -> tuple[Any, float]:
        """The pipeline of `checkpoint` on the device, and the seconds spent making it ready (0 when warm):
        loading it, or bringing it back from host memory. `attach` runs once, when the pipeline is loaded
        (before it is compiled and warmed up: see `accelerate`)."""
        with self._lock:
            try:
                return self._get(checkpoint, family, memory_gb, attach)
            finally:
                self._changed()

    def _get(
        self, checkpoint: str, family: str, memory_gb: float, attach: Attach | None = None
    ) -> tuple[Any, float]:
        self._largest_gb = max(self._largest_gb, memory_gb)
        if checkpoint in self._resident:
            self._resident.move_to_end(checkpoint)
            return self._resident[checkpoint].pipeline, 0.0
        parked = self._parked.pop(checkpoint, None)
        if parked is not None:
            self._make_room(parked.memory_gb)
            started = time.perf_counter()
            try:
                _move(parked, self.device.name)
            except Exception:
                self.drops += 1
                log.warning("could not bring %s back to %s; dropped it", checkpoint, self.device.name)
                self._free_device_cache()
                raise
            took = time.perf_counter() - started
            self._resident[checkpoint] = parked
            self.restores += 1
            log.info("brought %s back from host memory in %.1fs", checkpoint, took)
            return parked.pipeline, took
        self._make_room(memory_gb)
        started = time.perf_counter()
        pipeline = self._load(checkpoint, family)
        report = None
        if family != "esrgan":
            report = accelerate(pipeline, family, self.fast_path, attach=attach)
        took = time.perf_counter() - started
        # The fast path may add weights (fused QKV projections beside the separate ones): counted.
        memory_gb += (report.added_bytes if report else 0) / 2**30
        self._make_room(memory_gb)
        self._largest_gb = max(self._largest_gb, memory_gb)
        self._resident[checkpoint] = Resident(pipeline, memory_gb, fast_path=report.applied if report else ())
        self.loads[checkpoint] = self.loads.get(checkpoint, 0) + 1
        log.info("loaded %s in %.1fs on %s", checkpoint, took, self.device.name)
        if report is not None:
            log.info("fast path for %s: %s", checkpoint, report.summary())
        return pipeline, took

    def _make_room(self, memory_gb: float) -> None:
        """Park or drop the least recently used pipelines until `memory_gb` more fits the device budget."""
        used = sum(r.memory_gb for r in self._resident.values())
        freed = False
        while self._resident and used + memory_gb > self.budget_gb:
            name, entry = self._resident.popitem(last=False)
            used -= entry.memory_gb
            freed = True
            if self._park(name, entry):
                continue
            self.drops += 1
            log.info("dropped %s to stay within the %.1f GB budget", name, self.budget_gb)
            del entry
        if freed:
            self._changed()
            self._free_device_cache()

    def _park(self, name: str, entry: Resident) -> bool:
        """Move a pipeline to host memory, dropping the least recently parked ones while it does not fit."""
        if self.host_device is None or entry.memory_gb > self.host_budget_gb:
            return False
        used = sum(r.memory_gb for r in self._parked.values())
        while self._parked and used + entry.memory_gb > self.host_budget_gb:
            dropped, old = self._parked.popitem(last=False)
            used -= old.memory_gb
            self.drops += 1
            log.info("dropped %s from host memory to stay within %.1f GB", dropped, self.host_budget_gb)
            del old
        started = time.perf_counter()
        try:
            _move(entry, self.host_device)
        except Exception:  # e.g. out of host memory: the pipeline is dropped instead
            log.warning("could not move %s to host memory; dropping it", name, exc_info=True)
            return False
        self._parked[name] = entry
        self.offloads += 1
        log.info(
            "moved %s to host memory in %.1fs to stay within the %.1f GB budget",
            name,
            time.perf_counter() - started,
            self.budget_gb,
        )
        return True

    def _free_device_cache(self) -> None:
        if self.device.name == "cuda":
            torch.cuda.empty_cache()

    def derived(self, checkpoint: str, name: str, make: Callable[[Any], Any]) -> Any:
        """A pipeline made from a resident one's components (e.g. its img2img twin), kept beside it.

        Made once per resident pipeline, moved and dropped with it; it shares the weights, so it costs
        no memory.
        """
        with self._lock:
            resident = self._resident.get(checkpoint)
            if resident is None:
                raise KeyError(f"{checkpoint} is not resident; get() it first")
            if name not in resident.derived:
                pipeline = make(resident.pipeline)
                pipeline.set_progress_bar_config(disable=True)
                resident.derived[name] = pipeline
            return resident.derived[name]

    def _load(self, checkpoint: str, family: str) -> Any:
        import diffusers

        source = _local_source(checkpoint, self.models_dir)
        path = Path(str(source)).expanduser()
        if family == "esrgan":
            from jobs.esrgan import load_esrgan

            if not path.is_file():
                raise WeightsMissing(
                    f"ESRGAN weights {path} are not on this worker; put the .pth or .safetensors file there "
                    "or fix the profile's checkpoint in models.toml"
                )
            try:
                return load_esrgan(path, self.device.name, self.device.dtype)
            except ValueError as exc:
                raise CannotRun(f"{checkpoint}: {exc}") from exc
        try:
            if path.suffix == ".safetensors":
                if not path.is_file():
                    raise WeightsMissing(f"checkpoint file {path} does not exist on this worker")
                if family not in _SINGLE_FILE_CLASSES:
                    raise CannotRun(f"{checkpoint}: a {family} checkpoint must be a diffusers folder")
                cls = getattr(diffusers, _SINGLE_FILE_CLASSES[family])
                pipeline = cls.from_single_file(str(path), dtype=self.device.dtype)
            else:
                pipeline = diffusers.DiffusionPipeline.from_pretrained(
                    str(source), dtype=self.device.dtype, local_files_only=True
                )
        except (OSError, ValueError) as exc:
            if isinstance(exc, WeightsMissing):
                raise
            raise WeightsMissing(
                f"weights for {checkpoint} are not on this worker ({type(exc).__name__}); "
                f"download them once with `huggingface-cli download {checkpoint}` or point the profile's "
                "checkpoint at a local path in models.toml"
            ) from exc
        pipeline.set_progress_bar_config(disable=True)
        if hasattr(pipeline, "safety_checker") and getattr(pipeline, "safety_checker", None) is not None:
            log.info("%s ships a safety checker; it stays on", checkpoint)
        return pipeline.to(self.device.name)


def _move(entry: Resident, device: str) -> None:
    """Move a resident pipeline and its derived twins (which share most modules) to `device`.

    Module by module rather than `pipeline.to()`, which warns about half precision on a CPU: parked
    pipelines only wait there.
    """
    for pipeline in (entry.pipeline, *entry.derived.values()):
        if isinstance(pipeline, torch.nn.Module):
            pipeline.to(device)
            continue
        for component in getattr(pipeline, "components", {}).values():
            if isinstance(component, torch.nn.Module):
                component.to(device)


def _local_source(checkpoint: str, models_dir: Path) -> str | Path:
    """Where a checkpoint loads from: the tiny models are built under the data dir on first use."""
    if not checkpoint.startswith(TINY_PREFIX):
        return checkpoint
    name = checkpoint[len(TINY_PREFIX) :]
    if name == "sd-upscale":
        from jobs.upscale import ensure_tiny_upscaler

        return ensure_tiny_upscaler(models_dir)
    if name == "esrgan":
        from jobs.esrgan import ensure_tiny_esrgan

        return ensure_tiny_esrgan(models_dir)
    if name == "svd":
        from jobs.animate import ensure_tiny_svd

        return ensure_tiny_svd(models_dir)
    return ensure_tiny_pipeline(name, models_dir)


def set_scheduler(pipeline: Any, name: str) -> None:
    """Swap the pipeline's scheduler for the recipe's (same config, other algorithm)."""
    import diffusers

    if not name or type(pipeline.scheduler).__name__ == name:  # "" keeps the pipeline's own
        return
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(f"scheduler {name!r} is not a diffusers scheduler")
    pipeline.scheduler = cls.from_config(pipeline.scheduler.config)


def txt2img(
    pipeline: Any,
    prompt: str,
    negative: str,
    recipe: Recipe,
    on_step: Callable[[int, int], None],
    extra: Mapping[str, Any] | None = None,
) -> list[Any]:
    """All variations of one request as ONE batched call, one generator per seed.

    `extra` adds pipeline-call arguments (identity conditioning: see jobs/identity.py).

    Generators live on the CPU so a seed gives the same starting noise on any device, and variation k
    can be reproduced alone from seeds[k-1].
    """
    size = {"width": recipe.width, "height": recipe.height}
    return _batched(pipeline, prompt, negative, recipe, on_step, recipe.steps, {**size, **(extra or {})})


def img2img_steps(steps: int, strength: float) -> int:
    """The denoising steps an img2img call really runs: diffusers skips the first (1 - strength)."""
    return min(int(steps * strength), steps)


def img2img(
    pipeline: Any,
    prompt: str,
    negative: str,
    recipe: Recipe,
    image: Any,
    on_step: Callable[[int, int], None],
    extra: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Vary: all variations of `image` as one batched img2img call, `recipe.strength` away from it.

    `pipeline` is an img2img pipeline (see `PipelineCache.derived`); the image is brought to the recipe's
    size first.
    """
    if recipe.strength is None:
        raise ValueError("an img2img recipe sets `strength`")
    total = img2img_steps(recipe.steps, recipe.strength)
    if total < 1:
        raise CannotRun(
            f"{recipe.steps} steps at strength {recipe.strength:g} leave nothing to denoise; use more steps"
        )
    if image.size != (recipe.width, recipe.height):
        from PIL import Image

        image = image.resize((recipe.width, recipe.height), Image.Resampling.LANCZOS)
    call = {"image": image, "strength": recipe.strength, **(extra or {})}
    return _batched(pipeline, prompt, negative, recipe, on_step, total, call)


def _batched(
    pipeline: Any,
    prompt: str,
    negative: str,
    recipe: Recipe,
    on_step: Callable[[int, int], None],
    total: int,
    extra: Mapping[str, Any],
) -> list[Any]:
    set_scheduler(pipeline, recipe.scheduler)
    fit_vae(pipeline, recipe.width, recipe.height, len(recipe.seeds))
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in recipe.seeds]

    def step_end(_pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        on_step(step + 1, total)
        return kwargs

    call: dict[str, Any] = {
        "prompt": prompt,
        "num_inference_steps": recipe.steps,
        "guidance_scale": recipe.cfg,
        "num_images_per_prompt": len(recipe.seeds),
        "generator": generators,
        "callback_on_step_end": step_end,
        "output_type": "pil",
    }
    if negative:
        call["negative_prompt"] = negative
    call.update(extra)
    with torch.inference_mode():
        output = pipeline(**call)
    return list(output.images)
