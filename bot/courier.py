"""The Courier: every generation the ledger holds gets delivered once, also after a crash or a restart.

On start, `resume()` walks the ledger's open generations (recorded, queued, finished but not delivered):
a recorded or queued one goes back on the queue under its own job id (joining its job if the queue still
has it, running it again if the queue lost it), a finished one is delivered from its files. A generation
is marked delivered only after the platform accepted the post; a post that fails for good (channel gone,
bot removed) is recorded as failed with the reason and not retried; a passing failure is retried with
backoff. Platform-free: each chat adapter passes its own `deliver` and `report` functions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.errors import JobFailed, JobTimedOut, UserError
from bot.ledger import Generation
from bot.studio import Finished, Studio

log = logging.getLogger(__name__)

Deliver = Callable[[Generation, Finished], Awaitable[None]]
Report = Callable[[Generation, str], Awaitable[None]]


class PostFailed(Exception):
    """The platform did not take a post. `permanent`: it never will (channel deleted, bot removed)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True)
class Outcome:
    generation_id: str
    state: str  # delivered, failed, or pending (left for the next start)
    detail: str = ""


class Courier:
    def __init__(
        self,
        studio: Studio,
        deliver: Deliver,
        report: Report,
        *,
        platform: str | None = None,
        attempts: int = 4,
        backoff_s: float = 1.0,
        concurrency: int = 4,
    ) -> None:
        self.studio = studio
        self._deliver = deliver
        self._report = report
        self.platform = platform
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._slots = asyncio.Semaphore(concurrency)

    async def resume(self, generations: list[Generation] | None = None) -> list[Outcome]:
        """Finish and deliver `generations`, or every open generation of this courier's platform."""
        if generations is None:
            generations = await self.studio.ledger.open_generations()
        pending = [g for g in generations if self.platform is None or g.platform == self.platform]
        if pending:
            log.info("resuming %d generation(s) left open", len(pending))
        return list(await asyncio.gather(*(self._resume_one(g) for g in pending)))

    async def _resume_one(self, generation: Generation) -> Outcome:
        async with self._slots:
            try:
                if generation.status == "finished":
                    finished = self.studio.finished_of(generation)
                else:
                    finished = await self.studio.finish(await self.studio.reattach(generation))
            except JobTimedOut as exc:
                return Outcome(generation.id, "pending", str(exc))  # still recorded: the next start tries
            except (JobFailed, UserError) as exc:
                if not isinstance(exc, JobFailed):
                    await self.studio.ledger.set_status(generation.id, "failed", error=str(exc))
                await self._tell(generation, str(exc))
                return Outcome(generation.id, "failed", str(exc))
            return await self.deliver(generation, finished)

    async def deliver(self, generation: Generation, finished: Finished) -> Outcome:
        """Post `finished`, retrying passing failures with backoff; delivered only once the post is taken."""
        current = await self.studio.ledger.get(generation.id)
        if current is not None and current.status == "delivered":
            return Outcome(generation.id, "delivered", "already delivered")
        for attempt in range(1, self.attempts + 1):
            try:
                await self._deliver(generation, finished)
            except PostFailed as exc:
                if exc.permanent or attempt == self.attempts:
                    state = "failed" if exc.permanent else "pending"
                    if exc.permanent:
                        await self.studio.ledger.set_status(
                            generation.id, "failed", error=f"could not be delivered: {exc}"
                        )
                    log.warning("delivery of %s %s: %s", generation.id, state, exc)
                    return Outcome(generation.id, state, str(exc))
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                continue
            await self.studio.delivered(generation.id)
            return Outcome(generation.id, "delivered")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _tell(self, generation: Generation, reason: str) -> None:
        try:
            await self._report(generation, reason)
        except PostFailed as exc:
            log.warning("could not tell the requester of %s why it failed: %s", generation.id, exc)
