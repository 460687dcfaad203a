"""Characters on Slack end to end: `/character …` with its form (a modal with a file_input), `@likeness
character …` with a photo or a card attached, Save as character under results, workspace isolation, and
cards that go between Discord and Slack. The real Bolt app and slack_sdk client against the local fake of
Slack (tests/slack_fake.py), which also serves members' files; a real CharacterDesk (the face check runs
on real photos).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.character_desk import Actor, CharacterDesk
from characters.card import read_card
from characters.images import ImageStore
from characters.store import CharacterStore
from router.catalog import Catalog
from tests.bot.slack.support import (
    ALICE,
    ASTRONAUT,
    BOB,
    CAROL,
    CAT,
    CHANNEL,
    FACE_PNG,
    Painter,
    Running,
    answer,
    answers_to,
    buttons_of,
    delivered,
    generation_of,
    grids,
    new_grid,
    portrait,
    running_bot,
)
from tests.slack_fake import TEAMS, FakeSlack, Sent, action_ids

in_module_loop = pytest.mark.asyncio(loop_scope="module")
A, B = TEAMS


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Catalog) -> AsyncIterator[Running]:
    # Every variation is a face, so Save as character has something to save.
    painter = Painter(step_s=0.01, image=FACE_PNG)
    async with running_bot(tmp_path_factory.mktemp("slack"), tiny_catalog, painter, characters=True) as bot:
        yield bot


def desk_of(running: Running) -> CharacterDesk:
    assert running.studio.characters is not None
    return running.studio.characters


async def character(running: Running, text: str, *, user: str = ALICE, team: str = A) -> Sent:
    sent = await running.fake.slash(
        running.url, text, team=team, channel=CHANNEL, user=user, command="/character"
    )
    assert sent.status == 200 and sent.answered_at - sent.sent_at < 3.0
    return sent


async def opened_form(fake: FakeSlack, seen: int) -> dict[str, Any]:
    """The form the bot opened after the first `seen` ones."""
    opened = await fake.wait_for(lambda: fake.views[seen] if len(fake.views) > seen else None)
    view: dict[str, Any] = opened["view"]
    return view


def create_values(name: str, photo: dict[str, Any] | None, *, consent: bool = True) -> dict[str, Any]:
    return {
        "name": {"type": "plain_text_input", "value": name},
        "description": {"type": "plain_text_input", "value": "an astronaut in her 40s"},
        "photo": {"type": "file_input", "files": [photo] if photo else []},
        "consent": {
            "type": "checkboxes",
            "selected_options": [{"value": "consent"}] if consent else [],
        },
    }


async def create_through_the_form(
    running: Running, name: str, photo: bytes, *, user: str = ALICE, team: str = A, **file: Any
) -> tuple[Sent, dict[str, Any]]:
    """/character create NAME, then the form submitted with `photo` uploaded in it."""
    fake, seen = running.fake, len(running.fake.views)
    await character(running, f"create {name}", user=user, team=team)
    form = await opened_form(fake, seen)
    uploaded = fake.user_file(photo, f"{name}.jpg", user=user, team=team, **file)
    sent = await fake.submit(running.url, form, create_values(name, uploaded), team=team, user=user)
    return sent, uploaded


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mara(running: Running) -> str:
    """@mara of workspace A, made through /character create's form by Alice."""
    told = len(answers_to(running.fake, ALICE))
    sent, _ = await create_through_the_form(running, "mara", ASTRONAUT)
    assert sent.status == 200 and sent.text == ""  # the form closes
    await answer(running.fake, ALICE, "*@mara*", "is ready", after=told)
    return "mara"


# --- /character create and its form ---------------------------------------------------------------------


@in_module_loop
async def test_create_opens_a_form_and_the_photo_becomes_a_character_usable_in_portrait(
    running: Running, mara: str
) -> None:
    fake = running.fake
    form = next(v["view"] for v in fake.views if v["view"]["callback_id"] == "likeness:character-create")
    blocks = {b["block_id"]: b for b in form["blocks"]}
    assert blocks["name"]["element"]["initial_value"] == "mara"
    assert blocks["photo"]["element"] == {
        "type": "file_input",
        "action_id": "photo",
        "filetypes": ["jpg", "jpeg", "png", "webp"],
        "max_files": 1,
    }
    assert blocks["consent"]["element"]["type"] == "checkboxes"
    assert json.loads(form["private_metadata"]) == {"channel": CHANNEL}
    # The photo was fetched from its url_private_download with the bot token.
    assert fake.downloads and fake.downloads[0]["auth"] == f"Bearer {fake.token}"
    (made,) = [c for c in await desk_of(running).list(Actor("slack", A, ALICE)) if c.name == "mara"]
    assert (made.owner_id, made.description, made.consent) == (ALICE, "an astronaut in her 40s", True)

    g, _ = await portrait(running, "@mara in a rain-soaked alley --n 1", team=A, user=BOB)
    record = await running.studio.ledger.get(g)
    assert record is not None and record.request["mentions"] == ["mara"]
    assert record.spec["inputs"][0]["role"] == "face"


@in_module_loop
async def test_the_form_asks_again_for_a_missing_photo_consent_or_a_bad_name(running: Running) -> None:
    fake, seen = running.fake, len(running.fake.views)
    await character(running, "create tom")
    form = await opened_form(fake, seen)
    sent = await fake.submit(
        running.url, form, create_values("old tom", None, consent=False), team=A, user=ALICE
    )
    answered = sent.json()
    assert answered["response_action"] == "errors"
    assert set(answered["errors"]) == {"name", "photo", "consent"}
    assert "no spaces" in answered["errors"]["name"] and "Tick the box" in answered["errors"]["consent"]


@in_module_loop
async def test_a_photo_without_a_face_is_refused_with_the_reason(running: Running) -> None:
    told = len(answers_to(running.fake, BOB))
    await create_through_the_form(running, "felix", CAT, user=BOB)
    refusal = await answer(running.fake, BOB, "face", after=told)
    assert "felix" not in {c.name for c in await desk_of(running).list(Actor("slack", A, BOB))}
    assert "error id" not in refusal


@in_module_loop
async def test_a_file_declared_too_large_is_refused_before_any_byte_is_read(running: Running) -> None:
    fake, told = running.fake, len(answers_to(running.fake, BOB))
    _, uploaded = await create_through_the_form(running, "big", ASTRONAUT, user=BOB, size=50 * 2**20)
    refusal = await answer(fake, BOB, "50.0 MiB", "the limit is", after=told)
    assert "smaller" in refusal
    assert uploaded["id"] not in {d["file_id"] for d in fake.downloads}


@in_module_loop
async def test_a_file_on_another_host_than_slacks_is_not_fetched(running: Running) -> None:
    fake, told = running.fake, len(answers_to(running.fake, BOB))
    _, uploaded = await create_through_the_form(running, "elsewhere", ASTRONAUT, user=BOB, host="localhost")
    refusal = await answer(fake, BOB, "file hosts", "'localhost'", after=told)
    assert "upload the file" in refusal
    assert uploaded["id"] not in {d["file_id"] for d in fake.downloads}


@in_module_loop
async def test_a_form_slack_would_not_open_in_time_says_to_run_the_command_again(running: Running) -> None:
    fake = running.fake
    fake.fail("views.open", "expired_trigger_id")
    sent = await character(running, "create late", user=BOB)
    said = await answer(fake, BOB, "could not open in time", sent=sent)
    assert "run the command again" in said


@in_module_loop
async def test_where_only_admins_create_characters_others_are_refused_before_the_form(
    running: Running,
) -> None:
    fake, store = running.fake, running.studio.server_settings
    assert store is not None
    await store.update("slack", A, character_creators="managers")
    fake.admins.add(CAROL)
    try:
        seen = len(fake.views)
        sent = await character(running, "create nope", user=BOB)
        refusal = await answer(fake, BOB, "only its managers", "workspace admins and owners", sent=sent)
        assert "ask one of them" in refusal and len(fake.views) == seen
        await character(running, "create carols", user=CAROL)
        form = await opened_form(fake, seen)
        assert form["callback_id"] == "likeness:character-create"
    finally:
        await store.update("slack", A, character_creators="everyone")


# --- the other subcommands ---------------------------------------------------------------------------------


@in_module_loop
async def test_a_mistyped_subcommand_lists_the_valid_ones_in_the_acknowledgement(running: Running) -> None:
    sent = await character(running, "creat mara")
    told = sent.json()
    assert told["response_type"] == "ephemeral"
    assert "create, list, show, rename, delete, share, browse, import, export, help" in told["text"]
    assert "Did you mean `/character create`?" in told["text"]


@in_module_loop
async def test_list_show_rename_share_browse_import_and_delete(running: Running, mara: str) -> None:
    fake = running.fake
    told = len(answers_to(fake, ALICE))
    await character(running, "list")
    assert "*@mara* · an astronaut in her 40s" in await answer(fake, ALICE, "character(s):", after=told)

    await character(running, "show @mara")
    await answer(fake, ALICE, "owner <@U0ALICE0001>", "direct messages", after=told)
    crop = next(
        m for m in fake.messages.values() if m["channel"] == "D" + ALICE.removeprefix("U") and m["files"]
    )
    assert fake.files[crop["files"][0]]["name"] == "mara.jpg"

    await character(running, "share mara")
    shared = await answer(fake, ALICE, "community catalog", after=told)
    code = shared.split("/character import ")[1].rstrip("`")
    await character(running, "browse astronaut", user=BOB, team=B)
    assert code in await answer(fake, BOB, "Import one with", after=len(answers_to(fake, BOB)) - 1)

    await character(running, f"import {code} maria", user=BOB, team=B)
    await answer(fake, BOB, "Imported *@maria*", after=len(answers_to(fake, BOB)) - 1)
    await character(running, "rename maria mira", user=BOB, team=B)
    await answer(fake, BOB, "it is now `@mira`", after=len(answers_to(fake, BOB)) - 1)
    await character(running, "delete mira", user=BOB, team=B)
    await answer(fake, BOB, "Deleted `@mira`", after=len(answers_to(fake, BOB)) - 1)
    assert await desk_of(running).list(Actor("slack", B, BOB)) == []
    await character(running, "share mara withdraw")
    await answer(fake, ALICE, "private again", after=told)


@in_module_loop
async def test_another_member_may_not_rename_or_delete_but_an_admin_may(running: Running) -> None:
    fake = running.fake
    fake.admins.add(CAROL)
    desk = desk_of(running)
    await desk.create(Actor("slack", A, ALICE), "kit", ASTRONAUT, consent=True)
    told = len(answers_to(fake, BOB))
    await character(running, "delete kit", user=BOB)
    assert "owner" in await answer(fake, BOB, "kit", after=told)
    assert "kit" in {c.name for c in await desk.list(Actor("slack", A, BOB))}
    told = len(answers_to(fake, CAROL))
    await character(running, "delete kit", user=CAROL)
    await answer(fake, CAROL, "Deleted `@kit`", after=told)


# --- @likeness character … with a file attached -------------------------------------------------------------


@in_module_loop
async def test_a_mention_with_a_photo_attached_creates_a_character(running: Running) -> None:
    fake = running.fake
    uploaded = fake.user_file(ASTRONAUT, "tom.jpg", user=BOB, team=A)
    told = len(answers_to(fake, BOB))
    # Without --consent: refused, with how to say it.
    await fake.mention(
        running.url, "character create tom an old sailor", team=A, channel=CHANNEL, user=BOB, files=[uploaded]
    )
    assert "add --consent" in await answer(fake, BOB, "likeness", after=told)
    # Slack may send only the file's id (files shared across workspaces): files.info fills in the rest.
    await fake.mention(
        running.url,
        "character create tom an old sailor --consent",
        team=A,
        channel=CHANNEL,
        user=BOB,
        files=[{"id": uploaded["id"]}],
    )
    await answer(fake, BOB, "*@tom* · an old sailor", "is ready", after=told)
    assert fake.called("files.info")[-1].args["file"] == uploaded["id"]


@in_module_loop
async def test_a_mention_that_is_a_portrait_about_a_character_stays_a_portrait(running: Running) -> None:
    fake, known = running.fake, grids(running.fake)
    await fake.mention(running.url, "character study of a sailor --n 1", team=A, channel=CHANNEL, user=BOB)
    grid = await fake.wait_for(lambda: new_grid(fake, known))
    record = await delivered(running.studio, generation_of(grid))
    assert "character study of a sailor" in record.spec["prompt"]


# --- workspace isolation ------------------------------------------------------------------------------------


@in_module_loop
async def test_another_workspace_can_neither_see_nor_use_the_character(running: Running, mara: str) -> None:
    fake = running.fake
    told = len(answers_to(fake, BOB))
    await character(running, "show mara", user=BOB, team=B)
    assert "mara" in await answer(fake, BOB, "no character", after=told)
    runs = len(running.painter.runs)
    sent = await fake.slash(running.url, "@mara on a beach", team=B, channel=CHANNEL, user=BOB)
    await answer(fake, BOB, "@mara", "no character", sent=sent, after=told)
    assert len(running.painter.runs) == runs
    await character(running, "export mara", user=BOB, team=B)
    await answer(fake, BOB, "no character", after=told + 2)


# --- Save as character ----------------------------------------------------------------------------------


async def save(running: Running, form: dict[str, Any], name: str, *, team: str = A, user: str = ALICE,
               private_metadata: str | None = None) -> Sent:  # fmt: skip
    values = {
        "name": {"type": "plain_text_input", "value": name},
        "description": {"type": "plain_text_input", "value": "a generated astronaut"},
    }
    return await running.fake.submit(
        running.url, form, values, team=team, user=user, private_metadata=private_metadata
    )


@in_module_loop
async def test_save_as_character_from_a_grid_asks_which_image_then_opens_the_form(running: Running) -> None:
    fake = running.fake
    g, grid = await portrait(running, "an astronaut portrait --n 4", team=A, user=ALICE)
    assert f"likeness:save:{g}:0" in action_ids(grid)
    told = len(answers_to(fake, ALICE))
    await fake.click(running.url, grid, f"likeness:save:{g}:0", team=A, user=ALICE)
    chooser = await fake.wait_for(
        lambda: next((e for e in fake.ephemerals if e["text"] == "Which one becomes the character?"), None)
    )
    assert action_ids(chooser) == [f"likeness:save:{g}:{k}" for k in range(1, 5)]
    seen = len(fake.views)
    await fake.click(running.url, chooser, f"likeness:save:{g}:3", team=A, user=ALICE)
    form = await opened_form(fake, seen)
    assert form["callback_id"] == "likeness:character-save"
    assert json.loads(form["private_metadata"]) == {"channel": CHANNEL, "generation": g, "index": 3}
    sent = await save(running, form, "@astro")
    assert sent.status == 200 and sent.text == ""
    await answer(fake, ALICE, "Saved as *@astro*", "/portrait @astro", after=told)
    (saved,) = [c for c in await desk_of(running).list(Actor("slack", A, ALICE)) if c.name == "astro"]
    assert saved.description == "a generated astronaut" and saved.owner_id == ALICE


@in_module_loop
async def test_save_as_character_from_one_image_opens_the_form_at_once(running: Running) -> None:
    fake = running.fake
    g, grid = await portrait(running, "an astronaut portrait --n 2", team=A, user=BOB)
    await fake.click(running.url, grid, f"likeness:select:{g}:2", team=A, user=BOB)
    single = await fake.wait_for(lambda: buttons_of(fake, g, "up2"))
    assert action_ids(single)[-1] == f"likeness:save:{g}:2"
    seen, told = len(fake.views), len(answers_to(fake, BOB))
    await fake.click(running.url, single, f"likeness:save:{g}:2", team=A, user=BOB)
    form = await opened_form(fake, seen)
    assert json.loads(form["private_metadata"])["index"] == 2
    await save(running, form, "astro2", user=BOB)
    await answer(fake, BOB, "Saved as *@astro2*", after=told)


@in_module_loop
async def test_forged_buttons_and_form_metadata_are_checked_again(running: Running) -> None:
    fake = running.fake
    g, grid = await portrait(running, "an astronaut portrait --n 1", team=A, user=ALICE)
    # Another workspace's member presses Save on workspace A's image.
    told = len(answers_to(fake, BOB))
    await fake.click(running.url, grid, f"likeness:save:{g}:0", team=B, user=BOB)
    assert g in await answer(fake, BOB, "another server", after=told)
    # …or submits a form whose metadata names it (opened for a generation of their own).
    seen = len(fake.views)
    g_b, grid_b = await portrait(running, "an astronaut portrait --n 1", team=B, user=BOB)
    await fake.click(running.url, grid_b, f"likeness:save:{g_b}:0", team=B, user=BOB)
    form = await opened_form(fake, seen)
    forged = json.dumps({"channel": CHANNEL, "generation": g, "index": 1})
    await save(running, form, "stolen", team=B, user=BOB, private_metadata=forged)
    assert g in await answer(fake, BOB, "another server", after=told + 1)
    await save(running, form, "garbled", team=B, user=BOB, private_metadata='{"index": "1; DROP"}')
    await answer(fake, BOB, "does not say which image", after=told + 1)
    names = {c.name for c in await desk_of(running).list(Actor("slack", B, BOB))}
    assert not names & {"stolen", "garbled"}


# --- cards between Discord and Slack ---------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def discord_desk(tmp_path_factory: pytest.TempPathFactory) -> CharacterDesk:
    """The character desk of a Likeness that serves Discord: another deployment, its own stores."""
    folder: Path = tmp_path_factory.mktemp("discord")
    store = CharacterStore(folder / "characters.sqlite3")
    await store.open()
    return CharacterDesk(store, ImageStore(folder / "images"))


@in_module_loop
async def test_a_card_exported_on_discord_is_imported_on_slack(
    running: Running, discord_desk: CharacterDesk
) -> None:
    fake = running.fake
    guild = Actor("discord", "111222333", "444555666")
    await discord_desk.create(guild, "nova", ASTRONAUT, description="a pilot", weight=80, consent=True)
    card = await discord_desk.export_card(guild, "nova")
    uploaded = fake.user_file(card, "nova.likeness.png", user=BOB, team=A)
    told = len(answers_to(fake, BOB))
    await fake.mention(running.url, "character import", team=A, channel=CHANNEL, user=BOB, files=[uploaded])
    await answer(fake, BOB, "Imported *@nova* · a pilot", "card from discord server 111222333", after=told)
    (nova,) = [c for c in await desk_of(running).list(Actor("slack", A, BOB)) if c.name == "nova"]
    assert nova.weight == 80 and nova.owner_id == BOB


@in_module_loop
async def test_a_card_exported_on_slack_is_imported_on_discord(
    running: Running, discord_desk: CharacterDesk, mara: str
) -> None:
    fake = running.fake
    told = len(answers_to(fake, ALICE))
    await character(running, "export mara")
    await answer(fake, ALICE, "card of `@mara`", "direct messages", after=told)
    posted = next(
        m
        for m in reversed(fake.messages.values())
        if m["channel"] == "D" + ALICE.removeprefix("U") and m["files"] and "card" in m["text"]
    )
    assert fake.files[posted["files"][0]]["name"] == "mara.likeness.png"
    card = fake.file_data(posted)
    assert read_card(card).name == "mara"
    imported = await discord_desk.import_card(Actor("discord", "999", "888"), card)
    assert (imported.name, imported.description) == ("mara", "an astronaut in her 40s")
    assert imported.origin_label == f"card from slack server {A}"
