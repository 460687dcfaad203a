"""Cancel a running job, with a real worker process on a real redis-server: it stops within a few steps,
is recorded as cancelled, and the worker takes the next job."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.errors import GenerationRefused, JobFailed
from bot.studio import Origin
from jobs.queue import ArqQueue
from router.catalog import Catalog
from tests.faults.test_job_timeouts import start_worker, studio_on, until_live, with_tiny_sdxl, workers

ORIGIN = Origin(platform="cli", server_id="s1", channel_id="c1", user_id="u1")


@pytest.fixture
def data_dir(shared_data_dir: Path) -> Path:
    return with_tiny_sdxl(shared_data_dir)


@pytest.mark.timeout(120)
async def test_a_running_job_cancelled_mid_steps_stops_and_the_worker_takes_the_next(
    data_dir: Path, redis_url: str, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    async with studio_on(redis_url, tmp_path, tiny_catalog) as studio:
        assert isinstance(studio.queue, ArqQueue)
        with workers() as started:
            started.append(start_worker("gpu-a", data_dir, redis_url, tmp_path))
            await until_live(studio.queue, "gpu-a")
            running = await studio.portrait(ORIGIN, "a portrait --n 4 --steps 50")
            following = await studio.portrait(ORIGIN, "a portrait --n 1 --steps 2")
            finishing = asyncio.create_task(studio.finish(running))
            steps: list[int] = []
            async with asyncio.timeout(60):
                async for event in running.handle.events():
                    if event.state == "step":
                        steps.append(event.step)
                        if event.step >= 2:
                            break
            record = await studio.ledger.get(running.generation_id)
            assert record is not None and record.status == "running"  # from its first progress event

            said = await studio.cancel(ORIGIN, running.generation_id)
            assert said == f"stopping `{running.generation_id}`: its worker ends it after the step under way"
            cancelled_at = steps[-1]
            async with asyncio.timeout(60):
                async for event in running.handle.events():
                    steps.append(event.step)
            with pytest.raises(
                JobFailed, match=f"generation {running.generation_id} failed: cancelled by u1"
            ):
                await finishing
            # The mark is read five times a second; a step of four tiny images takes longer than that.
            assert max(steps) <= cancelled_at + 5, (cancelled_at, steps)
            record = await studio.ledger.get(running.generation_id)
            assert record is not None and (record.status, record.error) == ("failed", "cancelled by u1")

            # The worker goes on with the next job.
            finished = await asyncio.wait_for(studio.finish(following), timeout=60)
            assert len(finished.files) == 1
            record = await studio.ledger.get(following.generation_id)
            assert record is not None and record.status == "finished"
            assert record.result["worker"] == "gpu-a"

        # A cancel that comes after the end changes nothing, and says so.
        with pytest.raises(GenerationRefused, match="is failed; there is nothing left to cancel"):
            await studio.cancel(ORIGIN, running.generation_id)
        with pytest.raises(GenerationRefused, match="is finished; there is nothing left to cancel"):
            await studio.cancel(ORIGIN, following.generation_id)
        outcome = await studio.queue.cancel(following.spec.job_id, following.queue, "cancelled by u1")
        assert outcome == "finished"  # the queue, asked directly, knows it ended
        assert (await studio.queue.finished_result(following.spec.job_id)) is not None
