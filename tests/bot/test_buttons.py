"""The result buttons' jobs: which generations they may start from, and the specs they build."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.buttons import (
    ACTIONS,
    STARTS_FROM,
    VARY_STRONG,
    VARY_SUBTLE,
    Action,
    animate_spec,
    button_id,
    find_source,
    parse_button_id,
    upscale_spec,
    vary_spec,
)
from bot.errors import BadFlag, GenerationRefused
from bot.ledger import Ledger, Status
from jobs.spec import Adapter, InputImage, JobSpec, Recipe
from router.catalog import Catalog

FACE = InputImage(role="face", media_type="image/jpeg", data=b"face-bytes", sha256="f" * 64)


def portrait_spec(generation_id: str, *, seeds: tuple[int, ...] = (7, 8, 9, 10), steps: int = 4) -> JobSpec:
    recipe = Recipe(
        profile="tiny-identity-xl",
        family="sdxl",
        checkpoint="tiny:sdxl",
        scheduler="EulerDiscreteScheduler",
        steps=steps,
        cfg=5.0,
        width=192,
        height=320,
        seeds=seeds,
        adapter=Adapter(source="tiny:ip-adapter", scale=0.8),
    )
    return JobSpec(
        generation_id=generation_id, prompt="mara at the beach", negative="hat", recipe=recipe, inputs=(FACE,)
    )


async def add(
    ledger: Ledger,
    folder: Path,
    generation_id: str,
    *,
    status: Status = "finished",
    server: str = "s1",
    indices: tuple[int, ...] = (1, 2, 3, 4),
    size: tuple[int, int] = (192, 320),
    kind: str = "txt2img",
    parent: tuple[str, int] | None = None,
    spec: JobSpec | None = None,
) -> list[Path]:
    files = []
    for index in indices:
        path = folder / generation_id / f"{generation_id}_{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10 * index, 20, 30)).save(path)
        files.append(path)
    await ledger.record(
        generation_id=generation_id,
        platform="discord",
        server_id=server,
        channel_id="c",
        user_id="u",
        request={},
        route={},
        spec=(spec or portrait_spec(generation_id)).model_dump(mode="json"),
        job_id="j_x",
        queue="q",
        kind=kind,
        parent_id=parent[0] if parent else None,
        parent_index=parent[1] if parent else None,
    )
    await ledger.set_status(generation_id, status, result={"files": [str(f) for f in files]}, error="oom")
    return files


@pytest.fixture
async def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    return ledger


GEN = "g_aaaaaaaaaaaa"


async def test_the_source_is_the_variation_of_this_server(ledger: Ledger, tmp_path: Path) -> None:
    files = await add(ledger, tmp_path, GEN)
    source = await find_source(ledger, "discord", "s1", GEN, 3, "vary")
    assert source.path == files[2]
    assert (source.width, source.height) == (192, 320)
    assert source.png == files[2].read_bytes()
    assert source.label == f"{GEN} #3"
    assert source.as_input().sha256 == hashlib.sha256(source.png).hexdigest()


@pytest.mark.parametrize(
    ("setup", "asked", "words"),
    [
        ({}, ("not-an-id", 1), "'not-an-id' is not a generation id; ids look like g_"),
        ({}, ("g_bbbbbbbbbbbb", 1), "there is no generation g_bbbbbbbbbbbb"),
        ({"server": "s2"}, (GEN, 1), "was made in another server; you can vary only this server's images"),
        ({"status": "failed"}, (GEN, 1), r"failed \(oom\), so it has no images"),
        ({"status": "queued"}, (GEN, 1), r"is not finished yet \(queued\)"),
        ({}, (GEN, 5), "has variations 1 to 4; there is no #5"),
        ({"indices": (3,)}, (GEN, 1), "has variation 3; there is no #1"),
        ({"kind": "animate"}, (GEN, 1), "is an animate: it cannot be varied"),
    ],
)
async def test_refusals_say_why(
    ledger: Ledger, tmp_path: Path, setup: dict[str, object], asked: tuple[str, int], words: str
) -> None:
    await add(ledger, tmp_path, GEN, **setup)  # type: ignore[arg-type]
    with pytest.raises(GenerationRefused, match=words):
        await find_source(ledger, "discord", "s1", asked[0], asked[1], "vary")


async def test_an_upscale_is_varied_through_its_own_parent(ledger: Ledger, tmp_path: Path) -> None:
    await add(ledger, tmp_path, GEN)
    await add(ledger, tmp_path, "g_cccccccccccc", indices=(1,), kind="upscale", parent=(GEN, 2))
    with pytest.raises(GenerationRefused, match=f"vary the variation it was made from: {GEN} #2"):
        await find_source(ledger, "discord", "s1", "g_cccccccccccc", 1, "vary")
    assert (await find_source(ledger, "discord", "s1", "g_cccccccccccc", 1, "upscale")).index == 1


async def test_a_removed_file_is_named(ledger: Ledger, tmp_path: Path) -> None:
    files = await add(ledger, tmp_path, GEN)
    files[0].unlink()
    with pytest.raises(GenerationRefused, match=f"the image {GEN} #1 is no longer on this deployment"):
        await find_source(ledger, "discord", "s1", GEN, 1, "upscale")


async def test_vary_keeps_words_profile_and_faces_with_new_seeds(ledger: Ledger, tmp_path: Path) -> None:
    await add(ledger, tmp_path, GEN)
    source = await find_source(ledger, "discord", "s1", GEN, 2, "vary")
    subtle = vary_spec(source, strong=False, seed=100)
    assert subtle.kind == "vary" and subtle.generation_id != GEN
    assert subtle.prompt == "mara at the beach" and subtle.negative == "hat"
    recipe = subtle.recipe
    assert recipe is not None
    assert recipe.profile == "tiny-identity-xl" and recipe.adapter is not None and recipe.adapter.scale == 0.8
    assert recipe.seeds == (100, 101, 102, 103)
    assert recipe.strength == VARY_SUBTLE
    assert (recipe.width, recipe.height) == (192, 320)
    assert [item.role for item in subtle.inputs] == ["face", "source"]
    assert subtle.parent is not None and subtle.parent.describe() == f"{GEN} #2"
    strong = vary_spec(source, strong=True, seed=5)
    assert strong.recipe is not None and strong.recipe.strength == VARY_STRONG


async def test_vary_keeps_at_least_one_step_to_run(ledger: Ledger, tmp_path: Path) -> None:
    await add(ledger, tmp_path, GEN, spec=portrait_spec(GEN, steps=1))
    source = await find_source(ledger, "discord", "s1", GEN, 1, "vary")
    recipe = vary_spec(source, strong=False, seed=1).recipe
    assert recipe is not None
    assert int(recipe.steps * VARY_SUBTLE) >= 1


async def test_a_remix_replaces_the_words_and_may_drop_the_faces(ledger: Ledger, tmp_path: Path) -> None:
    await add(ledger, tmp_path, GEN)
    source = await find_source(ledger, "discord", "s1", GEN, 1, "vary")
    remix = vary_spec(
        source, strong=False, seed=1, prompt="a lighthouse keeper", negative="", faces=(), adapter=None
    )
    assert remix.prompt == "a lighthouse keeper" and remix.negative == ""
    assert [item.role for item in remix.inputs] == ["source"]
    assert remix.recipe is not None and remix.recipe.adapter is None


async def test_upscale_spec_uses_the_engine_tiles_and_refuses_past_the_cap(
    ledger: Ledger, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    await add(ledger, tmp_path, GEN)
    source = await find_source(ledger, "discord", "s1", GEN, 1, "upscale")
    spec, choice = upscale_spec(source, tiny_catalog, factor=4, seed=9)
    assert choice.profile.name == "tiny-upscale"
    recipe = spec.recipe
    assert recipe is not None and recipe.upscale is not None
    assert (recipe.width, recipe.height) == (768, 1280)
    assert (recipe.upscale.factor, recipe.upscale.tile, recipe.upscale.overlap) == (4, 64, 16)
    assert spec.source().data == source.png
    await add(ledger, tmp_path, "g_dddddddddddd", size=(1216, 832), indices=(1,))
    big = await find_source(ledger, "discord", "s1", "g_dddddddddddd", 1, "upscale")
    with pytest.raises(BadFlag, match="largest allowed here is 2×"):
        upscale_spec(big, tiny_catalog, factor=4, seed=9)


async def test_animate_spec_carries_motion_and_the_upload_budget(
    ledger: Ledger, tmp_path: Path, tiny_catalog: Catalog
) -> None:
    await add(ledger, tmp_path, GEN)
    source = await find_source(ledger, "discord", "s1", GEN, 1, "animate")
    spec, choice, plan = animate_spec(
        source, tiny_catalog, seed=3, max_bytes=8 * 2**20, seconds=0.5, motion="low"
    )
    assert choice.profile.name == "tiny-svd"
    recipe = spec.recipe
    assert recipe is not None and recipe.motion is not None
    assert (recipe.motion.frames, recipe.motion.fps, recipe.motion.motion) == (4, 8, 64)
    assert recipe.motion.max_bytes == 8 * 2**20
    assert (recipe.width, recipe.height) == (plan.width, plan.height)
    with pytest.raises(BadFlag, match="tiny-svd makes at most 8"):
        animate_spec(source, tiny_catalog, seed=3, max_bytes=2**20, seconds=5)


# --- untrusted ids (property-based) ----------------------------------------------------------------------

ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=120)
NEAR_IDS = st.builds(
    lambda action, generation, index: f"likeness:{action}:{generation}:{index}",
    st.sampled_from([*ACTIONS, "delete", ""]),
    st.from_regex(r"g_[0-9a-z]{10,13}", fullmatch=True) | ANY_TEXT,
    st.integers(-3, 12).map(str) | ANY_TEXT,
)


@settings(max_examples=300, deadline=None)
@given(NEAR_IDS | ANY_TEXT)
def test_any_button_id_parses_or_is_refused_with_a_user_error(text: str) -> None:
    try:
        action, generation_id, index = parse_button_id(text)
    except GenerationRefused:
        return
    assert button_id(action, generation_id, index) == text  # only what we could have made parses


@pytest.mark.parametrize("action", ACTIONS)
def test_every_button_we_make_parses_back(action: Action) -> None:
    assert parse_button_id(button_id(action, GEN, 3)) == (action, GEN, 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    generation_id=st.sampled_from([GEN, "g_bbbbbbbbbbbb"]) | ANY_TEXT,
    index=st.integers(-2, 6) | st.integers(-(2**31), 2**31),
    action=st.sampled_from(sorted(STARTS_FROM)),
    server=st.sampled_from(["s1", "s2", ""]),
)
async def test_a_forged_press_is_refused_with_a_user_error(
    ledger: Ledger, tmp_path: Path, generation_id: str, index: int, action: str, server: str
) -> None:
    if await ledger.get(GEN) is None:
        await add(ledger, tmp_path, GEN)
    try:
        source = await find_source(ledger, "discord", server, generation_id, index, action)
    except GenerationRefused:
        return
    assert (server, source.generation.id, source.index) == ("s1", GEN, index)  # only s1's own, existing
