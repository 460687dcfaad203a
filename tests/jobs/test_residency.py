"""Residency under a memory budget: the least recently used pipelines are parked in host memory, brought
back when used again, and dropped only when host memory is full too.

There is no GPU here: the cache's device is the CPU and its host is named explicitly (the CPU again, or
the meta device where a test needs to see that a move happened). The accounting is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from redis.asyncio import Redis

from jobs.acceleration import FastPath
from jobs.fleet import Residency, WorkerBeat, live_workers
from jobs.pipelines import HOST_SHARE, Device, PipelineCache, host_memory_gb, txt2img
from jobs.spec import Recipe
from jobs.tiny import ensure_tiny_pipeline
from jobs.worker import _heartbeat

CPU = Device("cpu", torch.float32)
XL, SD15 = "tiny:sdxl", "tiny:sd15"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def cache(models_dir: Path, budget_gb: float, host_gb: float, host: str = "cpu") -> PipelineCache:
    return PipelineCache(models_dir, CPU, budget_gb, host_budget_gb=host_gb, host_device=host)


def image(pipeline: Any, family: str = "sdxl") -> np.ndarray:
    recipe = Recipe(
        profile=f"tiny-{family}",
        family=family,
        checkpoint=f"tiny:{family}",
        scheduler="EulerDiscreteScheduler",
        steps=2,
        cfg=5.0,
        width=128,
        height=128,
        seeds=(4,),
    )
    (result,) = txt2img(pipeline, "a lighthouse keeper", "", recipe, lambda step, total: None)
    return np.asarray(result)


def test_the_least_recently_used_is_parked_and_brought_back_not_loaded(models_dir: Path) -> None:
    pipelines = cache(models_dir, budget_gb=0.15, host_gb=0.15)  # one tiny pipeline (0.1 GB) on each side
    xl, took = pipelines.get(XL, "sdxl", 0.1)
    assert took > 0
    before = image(xl)
    pipelines.get(SD15, "sd15", 0.1)
    assert (pipelines.resident, pipelines.offloaded) == ([SD15], [XL])
    back, took = pipelines.get(XL, "sdxl", 0.1)
    assert back is xl and took >= 0
    assert (pipelines.resident, pipelines.offloaded) == ([XL], [SD15])
    assert pipelines.loads == {XL: 1, SD15: 1}
    assert (pipelines.offloads, pipelines.restores, pipelines.drops) == (2, 1, 0)
    assert np.array_equal(image(back), before)
    assert pipelines.get(XL, "sdxl", 0.1) == (xl, 0.0)  # warm: no move at all
    assert pipelines.restores == 1


def test_parking_really_moves_the_weights(models_dir: Path) -> None:
    # With the meta device as "host memory" a parked pipeline's weights visibly leave the device; meta
    # tensors hold no data, so bringing them back fails, and the pipeline is dropped and loaded anew.
    pipelines = cache(models_dir, budget_gb=0.15, host_gb=1.0, host="meta")
    xl, _ = pipelines.get(XL, "sdxl", 0.1)
    pipelines.get(SD15, "sd15", 0.1)
    assert xl.unet.device.type == "meta" and xl.vae.device.type == "meta"
    assert xl.text_encoder_2.device.type == "meta"
    with pytest.raises(NotImplementedError):
        pipelines.get(XL, "sdxl", 0.1)
    assert (pipelines.offloads, pipelines.restores, pipelines.drops) == (2, 0, 1)
    assert pipelines.offloaded == [SD15] and XL not in pipelines.resident
    fresh, took = pipelines.get(XL, "sdxl", 0.1)
    assert fresh is not xl and took > 0 and pipelines.loads[XL] == 2
    assert fresh.unet.device.type == "cpu"


def test_full_host_memory_drops_the_least_recently_parked(models_dir: Path) -> None:
    # A third checkpoint: the tiny SDXL again, named by its folder as a local checkpoint would be.
    third = str(ensure_tiny_pipeline("sdxl", models_dir))
    pipelines = cache(models_dir, budget_gb=0.1, host_gb=0.1)
    pipelines.get(XL, "sdxl", 0.1)
    pipelines.get(SD15, "sd15", 0.1)  # parks XL
    pipelines.get(third, "sdxl", 0.1)  # parks SD15: host memory is full, so XL is dropped
    assert (pipelines.resident, pipelines.offloaded) == ([third], [SD15])
    assert (pipelines.offloads, pipelines.drops) == (2, 1)
    pipelines.get(XL, "sdxl", 0.1)  # dropped: loaded again
    assert pipelines.loads[XL] == 2


def test_a_pipeline_larger_than_host_memory_is_dropped(models_dir: Path) -> None:
    pipelines = cache(models_dir, budget_gb=0.15, host_gb=0.05)
    pipelines.get(XL, "sdxl", 0.1)
    pipelines.get(SD15, "sd15", 0.1)
    assert (pipelines.offloaded, pipelines.offloads, pipelines.drops) == ([], 0, 1)


def test_a_cpu_worker_has_nowhere_to_park_and_drops(models_dir: Path) -> None:
    pipelines = PipelineCache(models_dir, CPU, 0.15)
    assert (pipelines.host_device, pipelines.host_budget_gb) == (None, 0.0)
    assert pipelines.fast_path == FastPath.off()
    pipelines.get(XL, "sdxl", 0.1)
    pipelines.get(SD15, "sd15", 0.1)
    assert (pipelines.resident, pipelines.offloaded, pipelines.drops) == ([SD15], [], 1)


def test_a_cuda_worker_parks_in_host_memory_by_default(models_dir: Path) -> None:
    # Nothing is loaded, so no GPU is needed to see the defaults.
    pipelines = PipelineCache(models_dir, Device("cuda", torch.bfloat16), 20.0)
    assert pipelines.host_device == "cpu"
    assert 0 < pipelines.host_budget_gb < CPU.memory_gb()
    assert pipelines.fast_path == FastPath()
    assert (
        PipelineCache(models_dir, Device("cuda", torch.bfloat16), 20.0, host_budget_gb=0).host_budget_gb == 0
    )


def test_a_derived_twin_moves_with_its_pipeline(models_dir: Path) -> None:
    from diffusers import AutoPipelineForImage2Image

    pipelines = cache(models_dir, budget_gb=0.15, host_gb=1.0, host="meta")
    pipelines.get(XL, "sdxl", 0.1)
    twin = pipelines.derived(XL, "img2img", AutoPipelineForImage2Image.from_pipe)
    assert pipelines.derived(XL, "img2img", AutoPipelineForImage2Image.from_pipe) is twin
    pipelines.get(SD15, "sd15", 0.1)
    assert twin.unet.device.type == "meta"
    with pytest.raises(KeyError, match="not resident"):
        pipelines.derived(XL, "img2img", AutoPipelineForImage2Image.from_pipe)


def test_residency_is_reported(models_dir: Path) -> None:
    pipelines = cache(models_dir, budget_gb=0.15, host_gb=0.5)
    assert pipelines.residency() == Residency(host_budget_gb=0.5)
    pipelines.get(XL, "sdxl", 0.1)
    pipelines.get(SD15, "sd15", 0.1)
    pipelines.get(XL, "sdxl", 0.1)
    assert pipelines.residency() == Residency(
        offloaded=(SD15,), host_budget_gb=0.5, loads=2, offloads=2, restores=1, drops=0, fast_path=("sdpa",)
    )


class FakeDispatcher:
    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.busy = False

    def holds(self) -> tuple[str, ...]:
        return ("tiny-xl",)

    def capacity(self) -> int:
        return 1


class FakeRunner:
    def __init__(self, pipelines: PipelineCache) -> None:
        self.name = "gpu-park"
        self.cache = pipelines
        self.device = CPU
        self.current_job: str | None = None


async def test_the_heartbeat_carries_residency(models_dir: Path, redis_url: str) -> None:
    pipelines = cache(models_dir, budget_gb=0.15, host_gb=0.5)
    pipelines.get(XL, "sdxl", 0.1)
    pipelines.get(SD15, "sd15", 0.1)
    redis = Redis.from_url(redis_url)
    beating = asyncio.create_task(
        _heartbeat(FakeRunner(pipelines), ["tiny-xl"], ["q"], FakeDispatcher(), redis)  # type: ignore[arg-type]
    )
    try:
        beats: list[WorkerBeat] = []
        for _ in range(200):
            beats = await live_workers(redis)
            if beats:
                break
            await asyncio.sleep(0.01)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        await redis.aclose()
    (beat,) = beats
    assert beat.loaded == (SD15,)
    assert beat.residency.offloaded == (XL,)
    assert (beat.residency.loads, beat.residency.offloads, beat.residency.host_budget_gb) == (2, 1, 0.5)


def test_an_older_beat_without_residency_still_reads() -> None:
    beat = WorkerBeat.model_validate({"worker": "old", "queues": ["q"], "profiles": ["p"]})
    assert beat.residency == Residency()


def test_host_memory_is_bounded_by_the_cgroup_limit(models_dir: Path, tmp_path: Path) -> None:
    # A container limited to 2 GB on a host with more RAM: the budget follows the limit, not the RAM.
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{2 * 2**30}\n")
    assert host_memory_gb(v2) == pytest.approx(2.0)
    pipelines = PipelineCache(models_dir, CPU, 0.15, host_device="cpu", cgroup_root=v2)
    assert pipelines.host_budget_gb == pytest.approx(2.0 * HOST_SHARE)
    # Room is kept to load the largest pipeline it knows of through host memory.
    pipelines.expect(1.5)
    assert pipelines.host_budget_gb == pytest.approx(0.5)
    pipelines.expect(3.0)
    assert pipelines.host_budget_gb == 0.0
    # A configured budget is the operator's.
    configured = PipelineCache(models_dir, CPU, 0.15, host_budget_gb=0.3, host_device="cpu", cgroup_root=v2)
    configured.expect(3.0)
    assert configured.host_budget_gb == 0.3

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    assert host_memory_gb(v1) == pytest.approx(1.0)
    # No limit: "max" in cgroup v2, a huge number in v1, or no cgroup files at all.
    (v2 / "memory.max").write_text("max\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    ram = host_memory_gb(tmp_path / "none")
    assert ram > 1.0 and host_memory_gb(v2) == ram and host_memory_gb(v1) == ram


def _fused_bytes(pipeline: Any) -> int:
    return sum(
        p.numel() * p.element_size()
        for model in (pipeline.unet, pipeline.vae)
        for module in model.modules()
        for name in ("to_qkv", "to_kv")
        if hasattr(module, name)
        for p in getattr(module, name).parameters()
    )


def test_fused_qkv_copies_count_in_the_memory_budget(models_dir: Path) -> None:
    fused = FastPath(
        channels_last=False, fuse_qkv=True, compile=False, vae_tile_above_px=0, vae_slice_above_px=0
    )
    pipelines = PipelineCache(models_dir, CPU, 1.0, fast_path=fused)
    pipeline, _ = pipelines.get(XL, "sdxl", 0.1)
    added = _fused_bytes(pipeline)
    assert added > 0
    assert pipelines.used_gb == pytest.approx(0.1 + added / 2**30, rel=1e-9)
