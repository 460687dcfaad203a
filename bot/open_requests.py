"""A member's open requests in one server, as `/queue` shows them: state, place in line and a rough wait.

Platform-free: the chat adapters show the lines (backticks read as code on Discord and Slack alike) and
offer Cancel for the ones not done yet: a waiting one is taken off the queue, a running one stopped by its
worker at the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.character_desk import Actor
from bot.ledger import Generation
from bot.studio import Studio

STATES = {"recorded": "recorded", "queued": "queued", "running": "running", "finished": "finished, posting"}
QUEUED = ("recorded", "queued")  # no worker has started them: they have a place in line
WAITING = (*QUEUED, "running")  # waiting for a result: what Cancel may still take off the queue or stop


async def open_requests(studio: Studio, actor: Actor, now: float) -> list[tuple[Generation, str]]:
    """The open generations of this member in this server, each with its line: state, position and ETA."""
    everyone = await studio.ledger.open_generations()
    mine = [
        g
        for g in everyone
        if (g.platform, g.server_id, g.user_id) == (actor.platform, actor.server_id, actor.user_id)
    ]
    lines: list[tuple[Generation, str]] = []
    for generation in mine:
        line = f"`{generation.id}` · {generation.kind} · {STATES.get(generation.status, generation.status)}"
        if generation.status == "running":
            line += f" · for {ago(now - generation.updated_at)}"
        if generation.status in QUEUED:
            ahead = _ahead(everyone, generation)
            line += " · next up" if ahead == 0 else f" · {ahead} ahead"
            status = await studio.queue.status(generation.queue, _profile(generation))
            if status.eta_s is not None and status.waiting:
                per_job = status.eta_s / status.waiting
                line += f" · about {per_job * (ahead + 1):.0f} s"
            if status.workers == 0:
                line += f" · no worker serves {_profile(generation)} right now"
        line += f" · asked {ago(now - generation.created_at)} ago"
        lines.append((generation, line))
    return lines


def _ahead(everyone: list[Generation], generation: Generation) -> int:
    """Open, unfinished generations of the same queue recorded before this one (the ledger's order)."""
    return sum(
        1
        for g in everyone
        if g.queue == generation.queue
        and g.status in ("recorded", "queued", "running")
        and g.created_at < generation.created_at
    )


def _profile(generation: Generation) -> str:
    recipe = generation.spec.get("recipe") or {}
    return str(recipe.get("profile") or generation.queue)


def ago(seconds: float) -> str:
    """A duration in words: "40 s", "12 min", "2.5 h"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class QueueAnswer:
    """What /queue says, and the generations it offers a Cancel button for (a waiting one is taken off the
    queue, a running one stopped at its next step)."""

    text: str
    cancellable: list[str]


async def queue_answer(studio: Studio, actor: Actor, now: float, place: str) -> QueueAnswer:
    """/queue's answer for this member in this server (`place`: "server", "workspace")."""
    requests = await open_requests(studio, actor, now)
    if not requests:
        return QueueAnswer(f"Nothing of yours is waiting or running in this {place}.", [])
    lines = [line for _, line in requests]
    cancellable = [generation.id for generation, _ in requests if generation.status in WAITING]
    return QueueAnswer(f"Your {len(lines)} open request(s):\n" + "\n".join(lines), cancellable)
