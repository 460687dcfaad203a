"""What a status message says while a job runs: the same words on every platform."""

from __future__ import annotations

from jobs.spec import ProgressEvent


def progress_text(event: ProgressEvent) -> str | None:
    """One event as a few words for the status message; None for the events a result replaces."""
    if event.state == "queued":
        ahead = event.position or 0
        return "queued: next up" if ahead == 0 else f"queued: {ahead} ahead of you"
    if event.state == "step":
        return f"step {event.step} of {event.total}"
    return {"started": "starting", "loading": "loading the model", "encoding": "finishing the files"}.get(
        event.state
    )
