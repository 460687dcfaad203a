"""Characters through the Studio: made from a real photo, used as @name, shared, carried by cards."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from bot.character_desk import Actor, CharacterDesk, CharacterRefused
from bot.ledger import Ledger
from bot.studio import Origin, Studio
from characters.images import ImageStore
from characters.store import CharacterStore
from jobs.queue import LocalQueue
from jobs.spec import JobResult, JobSpec, ProgressEvent
from router.catalog import Catalog

ALICE = Actor(platform="discord", server_id="s1", user_id="alice")
BOB = Actor(platform="discord", server_id="s1", user_id="bob")
MANAGER = Actor(platform="discord", server_id="s1", user_id="mod", is_manager=True)
ELSEWHERE = Actor(platform="slack", server_id="T9", user_id="carol")


def jpeg(array: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=92)  # type: ignore[arg-type]
    return buffer.getvalue()


ASTRONAUT = jpeg(data.astronaut())
CAT = jpeg(data.chelsea())


async def make_desk(root: Path) -> CharacterDesk:
    store = CharacterStore(root / "characters.sqlite3")
    await store.open()
    return CharacterDesk(store, ImageStore(root / "images"))


@pytest.fixture
async def desk(tmp_path: Path) -> CharacterDesk:
    return await make_desk(tmp_path)


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "images").rglob("*") if p.is_file())


async def test_create_from_one_photo_and_manage(desk: CharacterDesk, tmp_path: Path) -> None:
    mara = await desk.create(ALICE, "mara", ASTRONAUT, description="a woman astronaut", consent=True)
    assert [c.name for c in await desk.list(ALICE)] == ["mara"]
    character, crop = await desk.show(ALICE, "MARA")
    assert character.id == mara.id
    with Image.open(io.BytesIO(crop)) as image:
        assert image.size == (512, 512)
    assert len(stored_files(tmp_path)) == 2  # the original and the crop
    with pytest.raises(CharacterRefused, match="alice"):
        await desk.rename(BOB, "mara", "maria")
    assert (await desk.rename(MANAGER, "mara", "maria")).name == "maria"
    await desk.delete(ALICE, "maria")
    assert await desk.list(ALICE) == []
    assert stored_files(tmp_path) == []


async def test_refusals_are_user_errors_and_leave_nothing_behind(desk: CharacterDesk, tmp_path: Path) -> None:
    with pytest.raises(CharacterRefused, match="couldn't find a face"):
        await desk.create(ALICE, "tom", CAT, consent=True)
    with pytest.raises(CharacterRefused, match="consent"):
        await desk.create(ALICE, "mara", ASTRONAUT)
    await desk.create(ALICE, "mara", ASTRONAUT, consent=True)
    with pytest.raises(CharacterRefused, match="already exists"):
        await desk.create(ALICE, "Mara", ASTRONAUT, consent=True)
    assert len(stored_files(tmp_path)) == 2  # the refused duplicate shares the files and removes nothing
    with pytest.raises(CharacterRefused, match="no character @mra here — did you mean @mara"):
        await desk.show(ALICE, "mra")
    with pytest.raises(CharacterRefused):
        await desk.show(ELSEWHERE, "mara")


async def test_share_browse_import(desk: CharacterDesk) -> None:
    mara = await desk.create(ALICE, "mara", ASTRONAUT, description="a woman astronaut", consent=True)
    await desk.share(ALICE, "mara")
    assert [c.id for c in await desk.browse("astronaut")] == [mara.id]
    copy = await desk.import_shared(ELSEWHERE, mara.id)
    assert copy.origin_id == mara.id
    assert copy.platform == "slack"
    await desk.share(ALICE, "mara", shared=False)
    assert await desk.browse("astronaut") == []
    assert [c.name for c in await desk.list(ELSEWHERE)] == ["mara"]


async def test_cards_carry_a_character_between_deployments(tmp_path: Path) -> None:
    here = await make_desk(tmp_path / "here")
    there = await make_desk(tmp_path / "there")
    await here.create(ALICE, "mara", ASTRONAUT, description="a woman astronaut", weight=70, consent=True)
    card = await here.export_card(ALICE, "mara")
    imported = await there.import_card(ELSEWHERE, card)
    assert (imported.name, imported.description, imported.weight) == ("mara", "a woman astronaut", 70)
    with pytest.raises(CharacterRefused, match="carries no character data"):
        await there.import_card(ELSEWHERE, _plain_png())


def _plain_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_portrait_with_a_character_carries_its_face_and_routes_to_identity(
    desk: CharacterDesk, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    seen: list[JobSpec] = []

    async def capture(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        seen.append(spec)
        return JobResult(job_id=spec.job_id, generation_id=spec.generation_id, ok=False, error="not run")

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    queue = LocalQueue(capture)
    studio = Studio(
        ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g", characters=desk
    )
    mara = await desk.create(
        ALICE, "mara", ASTRONAUT, description="a woman astronaut", weight=60, consent=True
    )
    origin = Origin(platform="discord", server_id="s1", channel_id="c", user_id="bob")
    submission = await studio.portrait(origin, "@mara in a rain-soaked neon alley --ar 2:3")
    await submission.handle.result(timeout=10)
    (spec,) = seen
    assert spec.prompt == "a woman astronaut in a rain-soaked neon alley"
    assert spec.recipe is not None
    assert spec.recipe.profile == "tiny-identity-xl"
    assert spec.recipe.adapter is not None
    assert spec.recipe.adapter.scale == pytest.approx(0.6)
    (face,) = spec.inputs
    assert (face.role, face.sha256) == ("face", mara.crop_sha)
    assert face.data == (await desk.show(ALICE, "mara"))[1]
    assert (await desk.show(ALICE, "mara"))[0].uses == 1
    again = await studio.portrait(origin, "@mara at golden hour --cw 100")
    await again.handle.result(timeout=10)
    assert seen[1].recipe is not None and seen[1].recipe.adapter is not None
    assert seen[1].recipe.adapter.scale == 1.0
    with pytest.raises(CharacterRefused, match="did you mean @mara"):
        await studio.portrait(origin, "@mra at dusk")
    elsewhere = Origin(platform="slack", server_id="T9", channel_id="c", user_id="carol")
    with pytest.raises(CharacterRefused, match="@mara"):
        await studio.portrait(elsewhere, "@mara at dusk")
    await queue.close()


async def test_replace_the_photo(desk: CharacterDesk, tmp_path: Path) -> None:
    await desk.create(ALICE, "mara", ASTRONAUT, consent=True)
    before = stored_files(tmp_path)
    mirrored = jpeg(data.astronaut()[:, ::-1].copy())
    with pytest.raises(CharacterRefused, match="alice"):
        await desk.replace_photo(BOB, "mara", mirrored)
    assert stored_files(tmp_path) == before  # the refused photo left nothing behind
    character = await desk.replace_photo(ALICE, "mara", mirrored)
    after = stored_files(tmp_path)
    assert len(after) == 2
    assert not set(after) & set(before)  # the old photo and crop are gone
    assert (await desk.show(ALICE, "mara"))[0].crop_sha == character.crop_sha


async def test_an_imported_card_names_where_it_came_from(tmp_path: Path) -> None:
    here = await make_desk(tmp_path / "here")
    there = await make_desk(tmp_path / "there")
    await here.create(ALICE, "mara", ASTRONAUT, consent=True)
    imported = await there.import_card(ELSEWHERE, await here.export_card(ALICE, "mara"))
    assert imported.origin_label == "card from discord server s1"
