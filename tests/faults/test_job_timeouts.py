"""Jobs past their time limit, with real worker processes on a real redis-server: tried once more on
another worker and delivered once; past it twice, failed with a reason the user can read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.errors import JobFailed
from bot.ledger import Ledger
from bot.studio import Origin, Studio
from jobs.fleet import live_workers
from jobs.queue import ArqQueue
from jobs.spec import ProgressEvent
from jobs.tiny import ensure_tiny_pipeline
from jobs.worker import OVERRUNS_KEY
from router.catalog import Catalog

ORIGIN = Origin(platform="cli", server_id="s1", channel_id="c1", user_id="u1")
# Every job's limit is the floor, one second: any tiny job of a few dozen steps runs past it.
IMPATIENT = {
    "LIKENESS_SECONDS_PER_MEGAPIXEL_STEP": "0.0001",
    "LIKENESS_JOB_TIMEOUT_FLOOR_S": "1",
    "LIKENESS_JOB_LOAD_ALLOWANCE_S": "0",
}


def with_tiny_sdxl(data_dir: Path) -> Path:
    """`data_dir` with the tiny SDXL built, so worker processes start by loading it."""
    ensure_tiny_pipeline("sdxl", data_dir / "models")
    return data_dir


@pytest.fixture
def data_dir(shared_data_dir: Path) -> Path:
    return with_tiny_sdxl(shared_data_dir)


@contextlib.contextmanager
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started in the block; each is stopped with a SIGTERM at its end (a SIGKILL
    if it does not stop)."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_worker(
    name: str, data_dir: Path, redis_url: str, log_dir: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """`likeness worker --profiles tiny-xl` in a process of its own, its log under `log_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(
        LIKENESS_DATA_DIR=str(data_dir),
        LIKENESS_REDIS_URL=redis_url,
        LIKENESS_WORKER_NAME=name,
        LIKENESS_DEVICE="cpu",
        LIKENESS_POLL_DELAY_S="0.02",
        **settings,
    )
    with (log_dir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "worker", "--profiles", "tiny-xl"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def until_live(queue: ArqQueue, *names: str, timeout: float = 180) -> None:
    """Wait until each named worker has sent its heartbeat (it has loaded its profiles)."""
    async with asyncio.timeout(timeout):
        while True:
            if set(names) <= {beat.worker for beat in await live_workers(queue.redis)}:
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def studio_on(redis_url: str, tmp_path: Path, catalog: Catalog) -> AsyncIterator[Studio]:
    """A Studio with its ledger, on the arq queue of `redis_url`."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = await ArqQueue.connect(redis_url, poll_delay_s=0.02)
    try:
        yield Studio(ledger=ledger, catalog=catalog, queue=queue, generations_dir=tmp_path / "generations")
    finally:
        await queue.close()


@pytest.mark.timeout(360)
async def test_a_job_past_its_limit_is_tried_again_on_another_worker_and_delivered_once(
    data_dir: Path, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    async with studio_on(redis_url, tmp_path, tiny_catalog) as studio:
        assert isinstance(studio.queue, ArqQueue)
        with workers() as started:
            impatient = start_worker("gpu-a", data_dir, redis_url, tmp_path, **IMPATIENT)
            patient = start_worker("gpu-b", data_dir, redis_url, tmp_path)
            started += [impatient, patient]
            await until_live(studio.queue, "gpu-a", "gpu-b")
            # gpu-b is frozen until gpu-a has the job, which gpu-a gives up after a second.
            patient.send_signal(signal.SIGSTOP)
            try:
                submission = await studio.portrait(ORIGIN, "a portrait --n 1 --steps 40")
                finishing = asyncio.create_task(studio.finish(submission))
                events: list[ProgressEvent] = []
                async with asyncio.timeout(60):
                    async for event in submission.handle.events():
                        events.append(event)
                        if event.state == "started":
                            break
            finally:
                patient.send_signal(signal.SIGCONT)
            async with asyncio.timeout(240):  # generous: two worker processes share a small CI machine
                events += [event async for event in submission.handle.events()]
                finished = await finishing

        again = [e for e in events if e.state == "queued" and e.message]
        assert len(again) == 1, events
        assert "took longer than 1 s on gpu-a; trying again on another worker" in again[0].message
        assert [e.state for e in events if e.state in ("finished", "failed")] == ["finished"]
        assert len(finished.files) == 1 and finished.files[0].is_file()
        record = await studio.ledger.get(submission.generation_id)
        assert record is not None and record.status == "finished"
        assert record.result["worker"] == "gpu-b"
        assert await studio.queue.redis.get(OVERRUNS_KEY + submission.spec.job_id) == b"1"
        # Delivered once: one result, and the job is gone from its queue.
        assert await studio.queue.redis.zcard(submission.queue) == 0


@pytest.mark.timeout(360)
async def test_a_job_past_its_limit_twice_fails_with_the_reason_in_the_ledger(
    data_dir: Path, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    async with studio_on(redis_url, tmp_path, tiny_catalog) as studio:
        assert isinstance(studio.queue, ArqQueue)
        with workers() as started:
            for name in ("gpu-a", "gpu-b"):
                started.append(start_worker(name, data_dir, redis_url, tmp_path, **IMPATIENT))
            await until_live(studio.queue, "gpu-a", "gpu-b")
            submission = await studio.portrait(ORIGIN, "a portrait --n 1 --steps 50")
            with pytest.raises(JobFailed) as failed:
                await studio.finish(submission)
            events = [event async for event in submission.handle.events()]

        reason = (
            "timed out twice: the portrait took longer than 1 s for 256×256 × 50 steps; the workers may be "
            "overloaded — try fewer steps or a smaller size"
        )
        assert str(failed.value) == f"generation {submission.generation_id} failed: {reason}"
        record = await studio.ledger.get(submission.generation_id)
        assert record is not None and (record.status, record.error) == ("failed", reason)
        assert len([e for e in events if e.state == "queued" and e.message]) == 1
        assert [e.state for e in events if e.state in ("finished", "failed")] == ["failed"]
        # Each try was stopped at its limit, not run to its end: neither reached its 50th step.
        steps = [event.step for event in events if event.state == "step"]
        assert steps and max(steps) < 50, steps
