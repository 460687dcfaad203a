"""What a status message says while a job runs, and how often it changes: the same on every platform."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.studio import Finished, Studio, Submission
from jobs.spec import ProgressEvent

log = logging.getLogger(__name__)

Render = Callable[[Submission, str], str]  # (submission, progress words) → the platform's status text


def progress_text(event: ProgressEvent) -> str | None:
    """One event as a few words for the status message; None for the events a result replaces."""
    if event.state == "queued":
        if event.message:  # queued again, e.g. after running past its time limit on a worker
            return f"queued again: {event.message}"
        ahead = event.position or 0
        return "queued: next up" if ahead == 0 else f"queued: {ahead} ahead of you"
    if event.state == "step":
        return f"step {event.step} of {event.total}"
    return {"started": "starting", "loading": "loading the model", "encoding": "finishing the files"}.get(
        event.state
    )


async def follow(
    submission: Submission, show: Callable[[str], Awaitable[None]], render: Render, every_s: float
) -> None:
    """The job's progress on a status message: its first state (the queue) at once, then the latest at
    most once every `every_s`. `render` turns the words into the platform's status text. Runs until
    cancelled."""
    latest = ""
    changed, first_shown = asyncio.Event(), asyncio.Event()

    async def read() -> None:
        nonlocal latest
        async for event in submission.handle.events():
            if (progress := progress_text(event)) is not None:
                latest = render(submission, progress)
                changed.set()
                await first_shown.wait()

    reader = asyncio.create_task(read())
    try:
        shown = ""
        while True:
            await changed.wait()
            changed.clear()
            if latest != shown:
                shown = latest
                await show(shown)
                first_shown.set()
                await asyncio.sleep(every_s)
    finally:
        reader.cancel()
        await asyncio.wait([reader])
        if not reader.cancelled() and (error := reader.exception()) is not None:
            log.warning("progress of %s stopped: %r", submission.generation_id, error)


async def finish_showing_progress(
    studio: Studio,
    submission: Submission,
    show: Callable[[str], Awaitable[None]],
    render: Render,
    every_s: float,
) -> Finished:
    """`studio.finish(submission)`, with its progress shown (see `follow`) while it runs."""
    following = asyncio.create_task(follow(submission, show, render, every_s))
    try:
        return await studio.finish(submission)
    finally:
        following.cancel()
        await asyncio.wait([following])
        if not following.cancelled() and (error := following.exception()) is not None:
            log.warning("progress of %s failed: %r", submission.generation_id, error)
