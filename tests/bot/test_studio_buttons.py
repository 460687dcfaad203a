"""The result buttons through the Studio on the embedded default: U k, Vary, Upscale, Animate."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.buttons import find_source, upscale_spec
from bot.errors import BadFlag, GenerationRefused
from bot.ledger import Ledger
from bot.studio import Finished, Origin, Studio
from jobs.media import read_parameters, read_recipe
from jobs.queue import LocalQueue
from jobs.settings import WorkerSettings
from jobs.spec import JobSpec
from jobs.video import probe_video, read_mp4_comment
from jobs.worker import JobRunner
from router.catalog import Catalog

ORIGIN = Origin(platform="discord", server_id="s1", channel_id="c1", user_id="u1")
OTHER_SERVER = Origin(platform="discord", server_id="s2", channel_id="c9", user_id="u9")


@pytest.fixture
async def studio(tmp_path: Path, shared_data_dir: Path, tiny_catalog: Catalog) -> AsyncIterator[Studio]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    runner = JobRunner(WorkerSettings(data_dir=shared_data_dir, device="cpu"), tiny_catalog)
    queue = LocalQueue(runner.run)
    seeds = iter(range(500, 10_000))
    yield Studio(
        ledger=ledger,
        catalog=tiny_catalog,
        queue=queue,
        generations_dir=tmp_path / "generations",
        seed_source=lambda: next(seeds),
    )
    await queue.close()


async def portrait(studio: Studio, text: str = "portrait of a fisherman --ar 2:3 --seed 7 --n 2") -> Finished:
    return await studio.finish(await studio.portrait(ORIGIN, text))


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


async def test_u_k_is_the_variation_at_full_resolution(studio: Studio) -> None:
    made = await portrait(studio)
    assert await studio.variation(ORIGIN, made.generation_id, 2) == made.files[1]
    with pytest.raises(GenerationRefused, match="has variations 1 to 2; there is no #3"):
        await studio.variation(ORIGIN, made.generation_id, 3)
    with pytest.raises(GenerationRefused, match="was made in another server"):
        await studio.variation(OTHER_SERVER, made.generation_id, 1)


async def test_vary_is_recorded_with_its_parent_and_traces_back(studio: Studio) -> None:
    made = await portrait(studio)
    submission = await studio.vary(ORIGIN, made.generation_id, 2, strong=True)
    assert f"vary (strong) of {made.generation_id} #2" in submission.caption
    varied = await studio.finish(submission)
    assert len(varied.files) == 4 and varied.grid is not None and varied.kind == "vary"
    record = await studio.ledger.get(varied.generation_id)
    assert record is not None
    assert (record.kind, record.parent_id, record.parent_index) == ("vary", made.generation_id, 2)
    # The ledger keeps the hash of the source, not its bytes: the parent's file is on disk.
    source = JobSpec.model_validate(record.spec).source()
    assert source.data == b"" and len(source.sha256) == 64
    chain = await studio.ledger.lineage(varied.generation_id)
    assert [g.id for g in chain] == [varied.generation_id, made.generation_id]
    parameters = read_parameters(varied.files[0].read_bytes())
    assert parameters is not None and f"Likeness parent: {made.generation_id} #2 (vary)" in parameters


async def test_a_varied_image_is_made_again_bit_for_bit(studio: Studio) -> None:
    made = await portrait(studio)
    varied = await studio.finish(await studio.vary(ORIGIN, made.generation_id, 1))
    again = await studio.finish(await studio.rerun(ORIGIN, read_recipe(varied.files[2])))
    assert np.array_equal(pixels(varied.files[2]), pixels(again.files[0]))


async def test_a_remix_changes_the_words_and_keeps_the_image(studio: Studio) -> None:
    made = await portrait(studio)
    submission = await studio.vary(
        ORIGIN, made.generation_id, 1, remix="a lighthouse keeper --no beard --seed 3"
    )
    assert submission.spec.prompt == "a lighthouse keeper" and submission.spec.negative == "beard"
    assert submission.spec.recipe is not None and submission.spec.recipe.seeds[0] == 3
    assert "remix" in submission.caption
    await studio.finish(submission)


async def test_buttons_refuse_what_they_cannot_start_from(studio: Studio) -> None:
    made = await portrait(studio)
    with pytest.raises(GenerationRefused, match="there is no generation g_zzzzzzzzzzzz"):
        await studio.vary(ORIGIN, "g_zzzzzzzzzzzz", 1)
    with pytest.raises(GenerationRefused, match="you can upscale only this server's images"):
        await studio.upscale(OTHER_SERVER, made.generation_id, 1)
    with pytest.raises(BadFlag, match="upscale by 3× is not offered"):
        await studio.upscale(ORIGIN, made.generation_id, 1, factor=3)
    with pytest.raises(BadFlag, match="tiny-svd makes at most 8"):
        await studio.animate(ORIGIN, made.generation_id, 1, seconds=30)
    assert [g.id for g in await studio.ledger.open_generations()] == [made.generation_id]  # nothing new


async def test_animate_keeps_the_video_and_its_preview(studio: Studio) -> None:
    made = await portrait(studio)
    submission = await studio.animate(ORIGIN, made.generation_id, 1, seconds=0.5, motion="high")
    assert "4 frames at 8 fps" in submission.caption
    video = await studio.finish(submission)
    assert video.kind == "animate" and video.grid is None
    mp4, preview = video.files
    assert mp4.suffix == ".mp4" and preview.name.startswith(f"{video.generation_id}_preview.")
    info = probe_video(mp4.read_bytes())
    assert (info.codec, info.frames) == ("h264", 4)
    embedded = JobSpec.model_validate_json(read_mp4_comment(mp4.read_bytes()))
    assert embedded.parent is not None and embedded.parent.generation_id == made.generation_id
    with pytest.raises(GenerationRefused, match="is an animate: it cannot be upscaled"):
        await studio.upscale(ORIGIN, video.generation_id, 1)
    attachment = await studio.upload(mp4, 10 * 2**20)
    assert attachment.media_type == "video/mp4" and attachment.data == mp4.read_bytes()


async def test_uploads_fit_the_platform_limit_and_keep_the_full_file(studio: Studio) -> None:
    made = await portrait(studio)
    full = made.files[0].read_bytes()
    as_is = await studio.upload(made.files[0], 10 * 2**20)
    assert (as_is.name, as_is.media_type, as_is.data) == (made.files[0].name, "image/png", full)
    squeezed = await studio.upload(made.files[0], 20 * 1024)
    assert squeezed.media_type == "image/jpeg" and squeezed.name.endswith(".jpg")
    assert len(squeezed.data) <= 20 * 1024
    with Image.open(io.BytesIO(squeezed.data)) as image:
        assert image.format == "JPEG"
    assert made.files[0].read_bytes() == full


async def test_upscale_traces_back_to_the_request_and_is_made_again_bit_for_bit(studio: Studio) -> None:
    made = await portrait(studio)
    varied = await studio.finish(await studio.vary(ORIGIN, made.generation_id, 2))
    submission = await studio.upscale(ORIGIN, varied.generation_id, 3, factor=2)
    assert f"upscaled 2× from {varied.generation_id} #3" in submission.caption
    assert submission.profile == "tiny-upscale"
    big = await studio.finish(submission)
    assert big.kind == "upscale" and big.grid is None and len(big.files) == 1
    with Image.open(big.files[0]) as image:
        assert image.size == (192 * 2, 320 * 2)
    chain = await studio.ledger.lineage(big.generation_id)
    assert [g.id for g in chain] == [big.generation_id, varied.generation_id, made.generation_id]
    assert [g.kind for g in chain] == ["upscale", "vary", "txt2img"]
    again = await studio.finish(await studio.rerun(ORIGIN, read_recipe(big.files[0])))
    assert np.array_equal(pixels(big.files[0]), pixels(again.files[0]))
    # An upscale of the upscale is still matched to the tiny engines (its parent's portrait profile).
    source = await find_source(studio.ledger, "discord", "s1", big.generation_id, 1, "upscale")
    spec, choice = upscale_spec(source, studio.catalog, factor=4, seed=1)
    assert choice.profile.name == "tiny-upscale" and spec.recipe is not None
    assert (spec.recipe.width, spec.recipe.height) == (192 * 8, 320 * 8)
    with pytest.raises(
        GenerationRefused, match=f"vary the variation it was made from: {varied.generation_id} #3"
    ):
        await studio.vary(ORIGIN, big.generation_id, 1)


async def test_a_rerun_whose_source_is_gone_says_so(studio: Studio) -> None:
    made = await portrait(studio)
    big = await studio.finish(await studio.upscale(ORIGIN, made.generation_id, 1))
    made.files[0].unlink()
    with pytest.raises(BadFlag, match="made from a source image that is no longer on this deployment"):
        await studio.rerun(ORIGIN, read_recipe(big.files[0]))


async def test_reroll_makes_the_same_request_again_with_a_new_seed(studio: Studio) -> None:
    made = await portrait(studio, "portrait of a fisherman --ar 2:3 --seed 7 --n 2 --no hat --steps 3")
    again = await studio.reroll(ORIGIN, made.generation_id)
    assert again.spec.prompt == "portrait of a fisherman" and again.spec.negative == "hat"
    assert again.spec.recipe is not None and again.spec.recipe.steps == 3
    assert len(again.spec.recipe.seeds) == 2 and again.spec.recipe.seeds[0] != 7
    await studio.finish(again)
    varied = await studio.finish(await studio.vary(ORIGIN, made.generation_id, 1, strong=True))
    revary = await studio.reroll(ORIGIN, varied.generation_id)
    assert revary.spec.kind == "vary" and revary.spec.parent is not None
    assert revary.spec.parent.describe() == f"{made.generation_id} #1"
    assert revary.spec.recipe is not None and revary.spec.recipe.strength == 0.7
    await studio.finish(revary)
    with pytest.raises(GenerationRefused, match="was made in another server"):
        await studio.reroll(OTHER_SERVER, made.generation_id)
