"""/character, /settings, /queue and autocomplete on Discord: a real discord.py client against the local fake
(tests/discord_fake.py), a Studio whose worker is a fake runner (no model runs; images are not under test
here), and a real CharacterDesk (the face check runs on a real photo).
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image
from skimage import data

from bot.character_desk import Actor, CharacterDesk
from bot.discord.bot import LikenessBot
from bot.ledger import Ledger
from bot.server_settings import ServerSettingsStore
from bot.studio import Studio, plan_portrait
from characters.images import ImageStore
from characters.store import CharacterStore
from jobs.queue import LocalQueue
from jobs.spec import JobResult, JobSpec, ProgressEvent, ResultImage
from router.catalog import Catalog
from tests.bot.discord.support import connect, disconnect, serving
from tests.discord_fake import (
    EPHEMERAL,
    LABEL,
    MODAL,
    FakeDiscord,
    Interaction,
    custom_ids,
    user_payload,
)

in_module_loop = pytest.mark.asyncio(loop_scope="module")

ALICE = user_payload(3_001, "alice")
BOB = user_payload(3_002, "bob")
MOD = user_payload(3_003, "mod")


def jpeg(array: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def png(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (90, 120, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


ASTRONAUT = jpeg(data.astronaut())
CAT = jpeg(data.chelsea())
SMALL_PNG = png()


def face_png(size: int = 384) -> bytes:
    """The astronaut as a generated image would come: a square PNG with one face."""
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


FACE_PNG = face_png()


@dataclass
class FakeRunner:
    """The worker without a model: flat PNGs (or `image`) at once, held while `gate` is clear; counts its
    runs."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    runs: list[str] = field(default_factory=list)
    image: bytes = SMALL_PNG

    def __post_init__(self) -> None:
        self.gate.set()

    async def __call__(self, spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        await self.gate.wait()
        self.runs.append(spec.generation_id)
        seeds = spec.recipe.seeds if spec.recipe else (1,)
        images = tuple(
            ResultImage(index=k, seed=seed, width=64, height=64, png=self.image)
            for k, seed in enumerate(seeds, start=1)
        )
        grid = SMALL_PNG if len(images) > 1 else None
        return JobResult(
            job_id=spec.job_id, generation_id=spec.generation_id, ok=True, images=images, grid=grid
        )


async def make_studio(data_dir: Path, catalog: Catalog, runner: FakeRunner) -> Studio:
    ledger = Ledger(data_dir / "ledger.sqlite3")
    await ledger.open()
    store = CharacterStore(data_dir / "characters.sqlite3")
    await store.open()
    return Studio(
        ledger=ledger,
        catalog=catalog,
        queue=LocalQueue(runner),
        generations_dir=data_dir / "generations",
        server_settings=ServerSettingsStore(ledger),
        characters=CharacterDesk(store, ImageStore(data_dir / "images")),
    )


@dataclass
class Bot:
    fake: FakeDiscord
    bot: LikenessBot
    studio: Studio
    runner: FakeRunner
    task: asyncio.Task[None]

    @property
    def guild(self) -> int:
        return self.fake.guild_ids[0]

    @property
    def other_guild(self) -> int:
        return self.fake.guild_ids[1]

    def actor(self, user: dict[str, Any], guild: int | None = None, manager: bool = False) -> Actor:
        return Actor("discord", str(guild or self.guild), user["id"], is_manager=manager)


async def start(fake: FakeDiscord, studio: Studio, runner: FakeRunner, **options: Any) -> Bot:
    """A bot on `studio`, connected to the fake (its attachments come from the fake's CDN)."""
    bot = LikenessBot(
        studio,
        attachment_hosts=frozenset({f"127.0.0.1:{fake.port}"}),
        allow_http_attachments=True,
        progress_every_s=0.2,
        **options,
    )
    return Bot(fake, bot, studio, runner, await connect(fake, bot, studio))


async def stop(running: Bot) -> None:
    await disconnect(running.bot, running.task, running.studio)


def answer_of(fake: FakeDiscord, interaction: Interaction) -> dict[str, Any] | None:
    """The private answer to an interaction, once it has words."""
    for message in fake.messages.values():
        metadata = message.get("interaction_metadata") or {}
        if metadata.get("id") == str(interaction.id) and message["flags"] & EPHEMERAL and message["content"]:
            return message
    return None


async def answer(fake: FakeDiscord, interaction: Interaction) -> dict[str, Any]:
    return await fake.wait_for(lambda: answer_of(fake, interaction), timeout=60)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serving(guilds=2) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(
    fake: FakeDiscord, tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Catalog
) -> AsyncIterator[Bot]:
    runner = FakeRunner()
    studio = await make_studio(tmp_path_factory.mktemp("discord-commands"), tiny_catalog, runner)
    bot = await start(fake, studio, runner)
    yield bot
    await stop(bot)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mara(running: Bot) -> dict[str, Any]:
    """@mara, created in the first guild by alice with /character create and a real photo."""
    fake = running.fake
    photo = fake.attachment("mara.jpg", ASTRONAUT, "image/jpeg")
    typed = await fake.slash(
        "character",
        subcommand="create",
        guild_id=running.guild,
        user=ALICE,
        name="mara",
        image=photo,
        description="a woman astronaut",
        consent=True,
    )
    return await answer(fake, typed)


# --- /character ------------------------------------------------------------------------------------------


@in_module_loop
async def test_create_fetches_the_photo_from_the_cdn_and_answers_with_the_crop(
    running: Bot, mara: dict[str, Any]
) -> None:
    assert "**@mara**" in mara["content"] and "is ready" in mara["content"]
    (crop,) = mara["attachments"]
    assert crop["filename"] == "mara.jpg"
    with Image.open(io.BytesIO(running.fake.file(crop))) as image:
        assert image.size == (512, 512)
    desk = running.studio.characters
    assert desk is not None
    (character,) = await desk.list(running.actor(ALICE))
    assert (character.name, character.owner_id, character.consent) == ("mara", ALICE["id"], True)
    assert await desk.list(running.actor(ALICE, running.other_guild)) == []


@in_module_loop
async def test_create_refuses_without_consent_or_a_face_privately(running: Bot) -> None:
    fake = running.fake
    photo = fake.attachment("tom.jpg", ASTRONAUT, "image/jpeg")
    typed = await fake.slash(
        "character", subcommand="create", guild_id=running.guild, user=BOB, name="tom", image=photo
    )
    assert "consent: True" in (await answer(fake, typed))["content"]
    cat = fake.attachment("cat.jpg", CAT, "image/jpeg")
    typed = await fake.slash(
        "character",
        subcommand="create",
        guild_id=running.guild,
        user=BOB,
        name="tom",
        image=cat,
        consent=True,
    )
    assert "face" in (await answer(fake, typed))["content"]


@in_module_loop
async def test_only_managers_create_when_the_server_says_so(running: Bot, mara: dict[str, Any]) -> None:
    fake, store = running.fake, running.studio.server_settings
    assert store is not None
    await store.update("discord", str(running.guild), character_creators="managers")
    try:
        photo = fake.attachment("ana.jpg", ASTRONAUT, "image/jpeg")
        options = {"name": "ana", "image": photo, "consent": True}
        typed = await fake.slash(
            "character", subcommand="create", guild_id=running.guild, user=BOB, **options
        )
        assert "only its managers" in (await answer(fake, typed))["content"]
        typed = await fake.slash(
            "character", subcommand="create", guild_id=running.guild, user=MOD, manager=True, **options
        )
        assert "is ready" in (await answer(fake, typed))["content"]
    finally:
        await store.update("discord", str(running.guild), character_creators="everyone")
    typed = await fake.slash("character", subcommand="delete", guild_id=running.guild, user=MOD, name="ana")
    assert "Deleted" in (await answer(fake, typed))["content"]


@in_module_loop
async def test_list_show_rename_share_browse_import_and_export(running: Bot, mara: dict[str, Any]) -> None:
    fake, guild, other = running.fake, running.guild, running.other_guild

    async def run(
        user: dict[str, Any], subcommand: str, where: int = guild, **options: Any
    ) -> dict[str, Any]:
        typed = await fake.slash("character", subcommand=subcommand, guild_id=where, user=user, **options)
        return await answer(fake, typed)

    assert "**@mara** · a woman astronaut" in (await run(BOB, "list"))["content"]
    assert "no characters yet" in (await run(BOB, "list", other))["content"]
    shown = await run(BOB, "show", name="@MARA")
    assert f"owner <@{ALICE['id']}>" in shown["content"] and shown["attachments"][0]["filename"] == "mara.jpg"
    renamed = await run(ALICE, "rename", name="mara", new_name="maria")
    assert "`@maria`" in renamed["content"]

    shared = await run(ALICE, "share", name="maria")
    code = shared["content"].split("code:")[1].strip()
    assert code.startswith("c_")
    assert code in (await run(BOB, "browse", other, query="astronaut"))["content"]
    imported = await run(BOB, "import", other, code=code, name="mara")
    assert "Imported **@mara**" in imported["content"]

    exported = await run(ALICE, "export", name="maria")
    (card,) = exported["attachments"]
    assert card["filename"] == "maria.likeness.png"
    again = fake.attachment(card["filename"], fake.file(card))
    from_card = await run(BOB, "import", other, card=again, name="maria2")
    assert "Imported **@maria2**" in from_card["content"] and "card from" in from_card["content"]
    assert "either a code" in (await run(BOB, "import", other))["content"]

    assert "private again" in (await run(ALICE, "share", name="maria", withdraw=True))["content"]
    assert "Renamed" in (await run(ALICE, "rename", name="maria", new_name="mara"))["content"]
    desk = running.studio.characters
    assert desk is not None
    assert sorted(c.name for c in await desk.list(running.actor(BOB, other))) == ["mara", "maria2"]


@in_module_loop
async def test_renaming_someone_elses_character_is_refused(running: Bot, mara: dict[str, Any]) -> None:
    fake = running.fake
    typed = await fake.slash(
        "character", subcommand="rename", guild_id=running.guild, user=BOB, name="mara", new_name="bea"
    )
    refusal = await answer(fake, typed)
    assert "Renamed" not in refusal["content"] and ALICE["id"] in refusal["content"]


# --- Save as character ----------------------------------------------------------------------------------


async def single_image(
    running: Bot, image: bytes, user: dict[str, Any] = ALICE
) -> tuple[str, dict[str, Any]]:
    """A one-variation /portrait whose image is `image`, then U1: the generation id and the U1 message."""
    fake = running.fake
    running.runner.image = image
    try:
        typed = await fake.slash("portrait", guild_id=running.guild, user=user, prompt="a portrait", count=1)
        grid = await fake.wait_for(lambda: _result(fake, typed))
    finally:
        running.runner.image = SMALL_PNG
    generation_id = re.findall(r"g_[0-9a-z]{12}", grid["content"])[-1]
    click = await fake.click(int(grid["id"]), f"likeness:select:{generation_id}:1", user=user)
    return generation_id, await fake.wait_for(lambda: _result(fake, click))


async def open_form(running: Bot, message: dict[str, Any], generation_id: str) -> Interaction:
    """Save as character under a U message: the form that opens."""
    fake = running.fake
    click = await fake.click(int(message["id"]), f"likeness:save:{generation_id}:1", user=ALICE)
    await fake.wait_for(lambda: click.modal)
    (callback,) = fake.calls_of(click)
    assert callback.json["type"] == MODAL
    return click


@in_module_loop
async def test_save_as_character_asks_a_name_and_makes_the_character_here(running: Bot) -> None:
    fake, desk = running.fake, running.studio.characters
    assert desk is not None
    generation_id, message = await single_image(running, FACE_PNG)
    assert f"likeness:save:{generation_id}:1" in custom_ids(message)
    opened = await open_form(running, message, generation_id)
    form = opened.modal or {}
    assert form["custom_id"] == f"likeness:save-form:{generation_id}:1"
    labels = form["components"]
    assert [c["type"] for c in labels] == [LABEL, LABEL]
    assert [c["component"]["custom_id"] for c in labels] == ["name", "description"]
    assert not labels[1]["component"].get("required", True) and not labels[1]["component"].get("value")
    try:
        saved = await answer(fake, await fake.submit(opened, {"name": "astro"}))
        assert saved["flags"] & EPHEMERAL
        assert "Saved as @astro" in saved["content"] and "/portrait @astro" in saved["content"]
        (astro,) = [c for c in await desk.store.list("discord", str(running.guild)) if c.name == "astro"]
        assert (astro.owner_id, astro.consent, astro.description) == (ALICE["id"], True, "")
        again = await answer(fake, await fake.submit(opened, {"name": "ASTRO", "description": "a pilot"}))
        assert again["flags"] & EPHEMERAL
        assert "already exists" in again["content"] and "@ASTRO" in again["content"], again["content"]
    finally:
        await desk.delete(running.actor(ALICE), "astro")


@in_module_loop
async def test_save_as_character_is_refused_elsewhere_and_for_non_managers(running: Bot) -> None:
    fake, desk, store = running.fake, running.studio.characters, running.studio.server_settings
    assert desk is not None and store is not None
    generation_id, message = await single_image(running, FACE_PNG)
    save = f"likeness:save:{generation_id}:1"
    click = await fake.click(int(message["id"]), save, guild_id=running.other_guild, user=BOB)
    refusal = await answer(fake, click)
    assert "another server" in refusal["content"] and click.modal is None
    opened = await open_form(running, message, generation_id)
    forged = await fake.submit(opened, {"name": "astro"}, guild_id=running.other_guild, user=BOB)
    assert "another server" in (await answer(fake, forged))["content"]
    assert "astro" not in [c.name for c in await desk.store.list("discord", str(running.other_guild))]
    await store.update("discord", str(running.guild), character_creators="managers")
    try:
        click = await fake.click(int(message["id"]), save, user=BOB)
        assert "only its managers" in (await answer(fake, click))["content"] and click.modal is None
        late = await fake.submit(opened, {"name": "astro"}, user=BOB)
        assert "only its managers" in (await answer(fake, late))["content"]
    finally:
        await store.update("discord", str(running.guild), character_creators="everyone")
    assert "astro" not in [c.name for c in await desk.store.list("discord", str(running.guild))]


@in_module_loop
async def test_save_as_character_of_an_image_without_a_face_is_refused(running: Bot) -> None:
    fake, desk = running.fake, running.studio.characters
    assert desk is not None
    generation_id, message = await single_image(running, SMALL_PNG)
    opened = await open_form(running, message, generation_id)
    refusal = await answer(fake, await fake.submit(opened, {"name": "flat"}))
    assert refusal["flags"] & EPHEMERAL and "face" in refusal["content"], refusal["content"]
    assert "flat" not in [c.name for c in await desk.store.list("discord", str(running.guild))]


# --- autocomplete ----------------------------------------------------------------------------------------


@in_module_loop
async def test_character_autocomplete_offers_this_servers_characters_only(
    running: Bot, mara: dict[str, Any]
) -> None:
    fake, desk = running.fake, running.studio.characters
    assert desk is not None
    await desk.create(running.actor(BOB, running.other_guild), "marek", ASTRONAUT, consent=True)
    await desk.create(running.actor(BOB), "bruno", ASTRONAUT, consent=True)
    try:
        typed = await fake.autocomplete(
            "portrait", "character", guild_id=running.guild, user=BOB, prompt="x", character="ma"
        )
        choices = await fake.wait_for(lambda: typed.choices)
        assert [c["value"] for c in choices] == ["mara"]
        assert choices[0]["name"] == "@mara — a woman astronaut"
        everything = await fake.autocomplete(
            "portrait", "character", guild_id=running.guild, prompt="x", character=""
        )
        assert sorted(c["value"] for c in await fake.wait_for(lambda: everything.choices)) == [
            "bruno",
            "mara",
        ]
        elsewhere = await fake.autocomplete(
            "portrait", "character", guild_id=running.other_guild, prompt="x", character="ma"
        )
        assert "marek" in [c["value"] for c in await fake.wait_for(lambda: elsewhere.choices)]
        here = [c.name for c in await desk.list(running.actor(BOB, running.other_guild))]
        assert sorted(c["value"] for c in elsewhere.choices or []) == sorted(n for n in here if "ma" in n)
        no_bruno = await fake.autocomplete(
            "portrait", "character", guild_id=running.other_guild, prompt="x", character="bru"
        )
        assert await fake.wait_for(lambda: no_bruno.choices) == []
        named = await fake.autocomplete(
            "character", "name", subcommand="show", guild_id=running.guild, name="br"
        )
        assert [c["value"] for c in await fake.wait_for(lambda: named.choices)] == ["bruno"]
    finally:
        await desk.delete(running.actor(BOB, running.other_guild), "marek")
        await desk.delete(running.actor(BOB), "bruno")


@in_module_loop
async def test_engine_autocomplete_offers_the_portrait_engines(running: Bot, tiny_catalog: Catalog) -> None:
    fake = running.fake
    typed = await fake.autocomplete("portrait", "engine", guild_id=running.guild, prompt="x", engine="")
    choices = await fake.wait_for(lambda: typed.choices)
    assert [c["value"] for c in choices] == [p.name for p in tiny_catalog.of_kind("txt2img")][:25]
    assert all(tiny_catalog.get(c["value"]).kind == "txt2img" for c in choices)  # type: ignore[union-attr]
    options = {o["name"]: o for o in fake.commands["portrait"]["options"]}
    assert options["engine"].get("autocomplete") and not options["engine"].get("choices")
    assert options["character"].get("autocomplete") and not options["character"].get("choices")


@in_module_loop
async def test_portrait_with_the_character_and_engine_options(running: Bot, mara: dict[str, Any]) -> None:
    fake = running.fake
    engine = next(p.name for p in running.studio.catalog.of_kind("txt2img") if "identity" in p.name)
    typed = await fake.slash(
        "portrait",
        guild_id=running.guild,
        user=ALICE,
        prompt="in a rain-soaked alley",
        character="mara",
        engine=engine,
        count=1,
    )
    posted = await fake.wait_for(lambda: _result(fake, typed))
    (record,) = [g for g in await _all(running.studio) if g.id in posted["content"]]
    assert record.request["mentions"] == ["mara"] and record.request["engine"] == engine
    assert record.spec["inputs"][0]["role"] == "face"


def _result(fake: FakeDiscord, interaction: Interaction) -> dict[str, Any] | None:
    for message in fake.messages.values():
        metadata = message.get("interaction_metadata") or {}
        if metadata.get("id") == str(interaction.id) and message["attachments"]:
            return message
    return None


async def _all(studio: Studio) -> list[Any]:
    async with studio.ledger.connect() as db, db.execute("SELECT id FROM generations") as cursor:
        ids = [row[0] for row in await cursor.fetchall()]
    return [await studio.ledger.get(i) for i in ids]


# --- /settings -------------------------------------------------------------------------------------------


@in_module_loop
async def test_settings_are_for_managers(running: Bot) -> None:
    fake = running.fake
    typed = await fake.slash("settings", guild_id=running.guild, user=BOB)
    assert "only this server's managers" in (await answer(fake, typed))["content"]
    typed = await fake.slash(
        "settings", guild_id=running.guild, user=BOB, setting="user_daily_limit", value="5"
    )
    assert "only this server's managers" in (await answer(fake, typed))["content"]
    assert int(fake.commands["settings"]["default_member_permissions"]) == 1 << 5  # Manage Server


@in_module_loop
async def test_a_manager_shows_and_changes_settings(running: Bot) -> None:
    fake, guild = running.fake, running.guild

    async def settings(**options: Any) -> str:
        typed = await fake.slash("settings", guild_id=guild, user=MOD, manager=True, **options)
        return str((await answer(fake, typed))["content"])

    shown = await settings()
    assert "`default_aspect`: 1:1" in shown and "`fast_lane`: on" in shown
    assert "`user_daily_limit`: 250" in await settings(setting="user_daily_limit", value="250")
    assert "`fast_lane`: off" in await settings(setting="fast_lane", value="off")
    assert "`default_aspect`: 2:3" in await settings(setting="default_aspect", value="2:3")
    assert "from 0 to 100" in await settings(setting="user_in_flight_limit", value="500")
    assert "not supported" in await settings(setting="default_aspect", value="7:3")
    assert "on or off" in await settings(setting="fast_lane", value="maybe")
    assert "give both" in await settings(setting="fast_lane")
    store = running.studio.server_settings
    assert store is not None
    now = await store.get("discord", str(guild))
    assert (now.user_daily_limit, now.fast_lane, now.default_aspect) == (250, False, "2:3")
    await store.update("discord", str(guild), user_daily_limit=100, fast_lane=True, default_aspect="1:1")


# --- /queue ----------------------------------------------------------------------------------------------


@in_module_loop
async def test_queue_lists_your_open_requests_in_this_server(running: Bot) -> None:
    fake = running.fake
    empty = await fake.slash("queue", guild_id=running.guild, user=BOB)
    assert "Nothing of yours" in (await answer(fake, empty))["content"]
    running.runner.gate.clear()
    try:
        first = await fake.slash("portrait", guild_id=running.guild, user=BOB, prompt="a potter", count=1)
        second = await fake.slash("portrait", guild_id=running.guild, user=BOB, prompt="a weaver", count=1)
        elsewhere = await fake.slash("portrait", guild_id=running.other_guild, user=BOB, prompt="a smith")
        for typed in (first, second, elsewhere):
            await fake.wait_for(
                lambda typed=typed: any(c.method == "PATCH" for c in fake.calls_of(typed)) or None
            )
        listed = await fake.slash("queue", guild_id=running.guild, user=BOB)
        content = (await answer(fake, listed))["content"]
    finally:
        running.runner.gate.set()
    lines = content.splitlines()
    assert lines[0] == "Your 2 open request(s):", content
    assert all("txt2img · queued" in line for line in lines[1:]), content
    assert "next up" in lines[1] or "ahead" in lines[1]
    assert "1 ahead" in lines[2] or "2 ahead" in lines[2], content
    for typed in (first, second, elsewhere):
        await fake.wait_for(lambda typed=typed: _result(fake, typed))


@in_module_loop
async def test_cancel_buttons_under_queue_take_waiting_requests_off(running: Bot) -> None:
    fake = running.fake
    running.runner.gate.clear()
    try:
        # The worker holds another member's job; alice's two wait behind it.
        held = await fake.slash("portrait", guild_id=running.guild, user=MOD, prompt="a baker", count=1)
        await fake.wait_for(lambda: any(c.method == "PATCH" for c in fake.calls_of(held)) or None)
        first = await fake.slash("portrait", guild_id=running.guild, user=ALICE, prompt="a potter", count=1)
        second = await fake.slash("portrait", guild_id=running.guild, user=ALICE, prompt="a weaver", count=1)
        for typed in (first, second):
            await fake.wait_for(
                lambda typed=typed: any(c.method == "PATCH" for c in fake.calls_of(typed)) or None
            )
        listed = await answer(fake, await fake.slash("queue", guild_id=running.guild, user=ALICE))
        buttons = [i for i in custom_ids(listed) if i.startswith("likeness:cancel:")]
        waiting = [g.id for g in await running.studio.ledger.open_generations() if g.status == "queued"]
        assert buttons == [f"likeness:cancel:{g}:0" for g in waiting if g in listed["content"]], buttons
        assert len(buttons) == 2
        (gone, other) = [re.fullmatch(r"likeness:cancel:(g_\w+):0", b)[1] for b in buttons]  # type: ignore[index]

        async def click(button: str, user: dict[str, Any], manager: bool = False) -> str:
            clicked = await fake.click(int(listed["id"]), button, user=user, manager=manager)
            return str((await answer(fake, clicked))["content"])

        assert await click(buttons[0], ALICE) == f"cancelled `{gone}`"
        record = await running.studio.ledger.get(gone)
        assert (
            record is not None and record.status == "failed" and record.error == f"cancelled by {ALICE['id']}"
        )
        # Whoever waited on it is told; a second click is refused, as are other members.
        await fake.wait_for(
            lambda: (
                any("cancelled" in c.content for typed in (first, second) for c in fake.calls_of(typed))
                or None
            )
        )
        again = await click(buttons[0], ALICE)
        assert gone in again and not again.startswith("cancelled")
        refused = await click(buttons[1], BOB)
        assert other in refused and not refused.startswith("cancelled")
        elsewhere = await fake.click(int(listed["id"]), buttons[1], user=ALICE, guild_id=running.other_guild)
        assert "another server" in (await answer(fake, elsewhere))["content"]
        # A manager (Manage Server) may cancel a member's request.
        assert await click(buttons[1], MOD, manager=True) == f"cancelled `{other}`"
    finally:
        running.runner.gate.set()
    await fake.wait_for(lambda: _result(fake, held))
    assert set(running.runner.runs).isdisjoint({gone, other})


# --- /route ----------------------------------------------------------------------------------------------


@in_module_loop
async def test_route_answers_privately_where_a_prompt_would_go(running: Bot) -> None:
    fake, studio = running.fake, running.studio
    before = len(await _all(studio))
    prompt = "a fisherman at dawn --ar 2:3 --steps 12"
    typed = await fake.slash("route", guild_id=running.guild, user=ALICE, prompt=prompt)
    shown = await answer(fake, typed)
    _, chosen = plan_portrait(prompt, studio.catalog)
    lines = shown["content"].splitlines()
    assert lines[0] == (
        f"**{chosen.profile.name}** · {chosen.params.width}×{chosen.params.height}, 12 steps, "
        f"cfg {chosen.params.cfg:g}"
    )
    assert len(chosen.reasons) >= 1 and len(lines) == len(chosen.reasons) + 2
    assert shown["flags"] & EPHEMERAL
    bad = await fake.slash("route", guild_id=running.guild, user=ALICE, prompt="a fisherman --ar 7:3")
    assert "--ar 7:3 is not supported" in (await answer(fake, bad))["content"]
    assert len(await _all(studio)) == before  # nothing was recorded, nothing generated


@in_module_loop
async def test_portrait_framework_options_reach_the_request_in_order(running: Bot) -> None:
    fake = running.fake
    typed = await fake.slash(
        "portrait",
        guild_id=running.guild,
        user=ALICE,
        prompt="an old fisherman",
        count=1,
        skin="weathered, freckles",
        camera="85mm lens",
        lighting='"golden" hour --seed 3',
        environment="a harbour at dawn",
        clothing="a yellow oilskin",
    )
    posted = await fake.wait_for(lambda: _result(fake, typed))
    (record,) = [g for g in await _all(running.studio) if g.id in posted["content"]]
    asked = record.request
    assert (asked["clothing"], asked["environment"], asked["lighting"]) == (
        "a yellow oilskin",
        "a harbour at dawn",
        '"golden" hour --seed 3',
    )
    assert (asked["camera"], asked["skin"]) == ("85mm lens", "weathered, freckles") and asked["seed"] != 3
    assert record.spec["prompt"].startswith(
        'an old fisherman, a yellow oilskin, a harbour at dawn, "golden" hour --seed 3, 85mm lens, weathered'
    )


# --- /forget-me ------------------------------------------------------------------------------------------

CARL = user_payload(3_004, "carl")


@in_module_loop
async def test_forget_me_asks_for_confirmation_then_removes_the_members_characters_and_generations(
    running: Bot, mara: dict[str, Any]
) -> None:
    fake, guild, studio = running.fake, running.guild, running.studio
    photo = fake.attachment("carl.jpg", ASTRONAUT, "image/jpeg")
    typed = await fake.slash(
        "character", subcommand="create", guild_id=guild, user=CARL, name="carl", image=photo, consent=True
    )
    assert "is ready" in (await answer(fake, typed))["content"]
    typed = await fake.slash("portrait", guild_id=guild, user=CARL, prompt="a lighthouse keeper", count=1)
    posted = await fake.wait_for(lambda: _result(fake, typed))
    (made,) = [g for g in await _all(studio) if g.id in posted["content"]]
    assert (studio.generations_dir / made.id).is_dir()

    typed = await fake.slash("forget-me", user=CARL, guild_id=guild)
    assert "confirm: True" in (await answer(fake, typed))["content"]
    assert await studio.ledger.get(made.id) is not None  # nothing removed without the confirmation

    typed = await fake.slash("forget-me", user=CARL, guild_id=guild, confirm=True)
    said = (await answer(fake, typed))["content"]
    assert "1 character(s)" in said and "1 generation(s)" in said
    assert await studio.ledger.get(made.id) is None
    assert not (studio.generations_dir / made.id).exists()
    desk = studio.characters
    assert desk is not None
    left = {c.name: c.owner_id for c in await desk.list(running.actor(CARL))}
    assert "carl" not in left and left["mara"] == ALICE["id"]  # others keep theirs
