"""Data rights: forget a user (characters, generations, files), export a server."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from bot.character_desk import Actor, CharacterDesk
from bot.data_rights import ForgetRefused, export_server, forget_user
from bot.ledger import Ledger
from bot.studio import Origin, Studio
from characters.images import ImageStore
from characters.store import CharacterStore
from jobs.queue import LocalQueue
from jobs.spec import JobResult, JobSpec, ResultImage
from router.catalog import Catalog

MARA = Origin(platform="discord", server_id="s1", channel_id="c", user_id="u-mara")
OTHER = Origin(platform="discord", server_id="s1", channel_id="c", user_id="u-other")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


async def one_image(spec: JobSpec, progress: object) -> JobResult:
    image = ResultImage(index=1, seed=1, width=64, height=64, png=png())
    return JobResult(
        job_id=spec.job_id, generation_id=spec.generation_id, ok=True, images=(image,), grid=png()
    )


@pytest.fixture
async def parts(tmp_path: Path, tiny_catalog: Catalog) -> AsyncIterator[tuple[Studio, CharacterDesk]]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    store = CharacterStore(tmp_path / "characters.sqlite3")
    await store.open()
    desk = CharacterDesk(store, ImageStore(tmp_path / "characters"))
    queue = LocalQueue(one_image)
    yield (
        Studio(
            ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g", characters=desk
        ),
        desk,
    )
    await queue.close()


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG")
    return buffer.getvalue()


async def test_forget_me_removes_the_users_characters_generations_and_files(
    parts: tuple[Studio, CharacterDesk],
) -> None:
    studio, desk = parts
    mine = await desk.create(Actor("discord", "s1", "u-mara"), "mara", photo(), consent=True)
    theirs = await desk.create(Actor("discord", "s1", "u-other"), "ines", photo(), consent=True)
    made = await studio.finish(await studio.portrait(MARA, "a portrait --n 1"))
    child = await studio.finish(await studio.vary(OTHER, made.generation_id, 1))
    kept = await studio.finish(await studio.portrait(OTHER, "a portrait --n 1"))
    assert made.files[0].is_file()

    done = await forget_user(studio.ledger, studio.generations_dir, desk, "discord", "u-mara")
    assert (done.characters, done.generations) == (1, 1) and done.files >= 2
    assert not made.files[0].parent.exists()
    assert await studio.ledger.get(made.generation_id) is None
    assert not desk.images.exists(mine.reference_sha) or mine.reference_sha == theirs.reference_sha
    assert [c.name for c in await desk.store.list("discord", "s1")] == ["ines"]
    orphan = await studio.ledger.get(child.generation_id)
    assert orphan is not None and orphan.parent_id is None  # others' work stays, without the link back
    assert await studio.ledger.get(kept.generation_id) is not None


async def test_forget_me_waits_for_work_in_progress(parts: tuple[Studio, CharacterDesk]) -> None:
    studio, desk = parts
    await studio.portrait(MARA, "a portrait --n 1")  # queued, not finished
    with pytest.raises(ForgetRefused, match=r"you have 1 request\(s\) in progress"):
        await forget_user(studio.ledger, studio.generations_dir, desk, "discord", "u-mara")


async def test_a_server_export_holds_its_generations_files_and_characters(
    parts: tuple[Studio, CharacterDesk], tmp_path: Path
) -> None:
    studio, desk = parts
    await desk.create(Actor("discord", "s1", "u-mara"), "mara", photo(), consent=True)
    made = await studio.finish(await studio.portrait(MARA, "a portrait --n 1"))
    await studio.finish(await studio.portrait(Origin("discord", "s2", "c", "u"), "elsewhere --n 1"))
    out = await export_server(studio.ledger, desk, "discord", "s1", tmp_path / "export" / "s1.zip")
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        rows = [json.loads(line) for line in archive.read("generations.jsonl").decode().splitlines()]
        cast = [json.loads(line) for line in archive.read("characters.jsonl").decode().splitlines()]
    assert [row["id"] for row in rows] == [made.generation_id]
    assert f"generations/{made.generation_id}/{made.files[0].name}" in names
    assert [c["name"] for c in cast] == ["mara"]
    assert any(name.startswith("characters/mara/photo") for name in names)
    assert any(name.startswith("characters/mara/face") for name in names)
