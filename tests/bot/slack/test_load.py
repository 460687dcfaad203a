"""50 members ask for a portrait at the same moment: every slash command is acknowledged within Slack's 3
seconds, and every result is posted exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from router.catalog import Catalog
from tests.bot.slack.support import CHANNEL, Painter, delivered, running_bot
from tests.slack_fake import TEAMS

MEMBERS = 50


async def test_fifty_portraits_at_once_are_acked_in_time_and_posted_once(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    async with running_bot(tmp_path, tiny_catalog, Painter(step_s=0.0)) as running:
        fake = running.fake
        users = [f"U0LOAD{k:05d}" for k in range(MEMBERS)]
        sent = await asyncio.gather(
            *(
                fake.slash(
                    running.url, f"portrait {k} --n 1 --steps 1", team=TEAMS[0], channel=CHANNEL, user=u
                )
                for k, u in enumerate(users)
            )
        )
        assert [s.status for s in sent] == [200] * MEMBERS
        slowest = max(s.answered_at - s.sent_at for s in sent)
        assert slowest < 3.0, f"the slowest acknowledgement took {slowest:.2f} s"

        def all_recorded() -> bool | None:
            return len(fake.called("files.completeUploadExternal")) >= MEMBERS or None

        await fake.wait_for(all_recorded, timeout=100)
        uploaded = Counter(
            f["name"].removesuffix("_grid.png") for f in fake.files.values() if f.get("data") is not None
        )
        assert len(uploaded) == MEMBERS and set(uploaded.values()) == {1}, uploaded
        records = [await delivered(running.studio, generation_id) for generation_id in uploaded]
        assert {record.user_id for record in records} == set(users)
        await asyncio.sleep(0.5)
        assert len(fake.called("files.completeUploadExternal")) == MEMBERS  # and nothing posted twice
