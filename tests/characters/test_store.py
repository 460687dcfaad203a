"""The character store: names, consent, server isolation, permissions, file references, sharing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from characters.store import (
    BadName,
    Character,
    CharacterError,
    CharacterNotFound,
    CharacterStore,
    NameTaken,
    NotAllowed,
)

A = ("discord", "100")  # server A
B = ("discord", "200")  # server B, same platform
SLACK_A = ("slack", "100")  # same server id as A, another platform


@pytest.fixture
async def store(tmp_path: Path) -> CharacterStore:
    store = CharacterStore(tmp_path / "data" / "characters.sqlite3")
    await store.open()
    return store


async def make(
    store: CharacterStore,
    name: str = "mara",
    server: tuple[str, str] = A,
    *,
    owner_id: str = "u1",
    sha: str = "ref1",
    **extra: Any,
) -> Character:
    return await store.create(
        platform=server[0],
        server_id=server[1],
        name=name,
        owner_id=owner_id,
        reference_sha=sha,
        crop_sha=f"crop-{sha}",
        consent=True,
        **extra,
    )


async def test_create_get_list(store: CharacterStore) -> None:
    mara = await make(store, "mara", description="a woman with red curly hair", weight=80)
    await make(store, "Bob", sha="ref2")
    await make(store, "alice", sha="ref3")

    assert mara.id.startswith("c_")
    assert len(mara.id) == 14
    assert mara.id[2:].isalnum()
    assert mara.id[2:] == mara.id[2:].lower()
    assert (mara.visibility, mara.origin_id, mara.origin_label, mara.uses) == ("private", None, "", 0)
    assert mara.consent is True
    assert await store.get(*A, "mara") == mara
    assert await store.get(*A, "MARA") == mara  # lookups are case-insensitive
    assert await store.get(*A, "@mara") == mara  # people type the @
    assert [c.name for c in await store.list(*A)] == ["alice", "Bob", "mara"]


async def test_open_is_idempotent_and_keeps_data(store: CharacterStore) -> None:
    await make(store)
    await store.open()
    again = CharacterStore(store.path)
    await again.open()
    assert [c.name for c in await again.list(*A)] == ["mara"]


async def test_open_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "characters.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="Upgrade"):
        await CharacterStore(path).open()


async def test_names_are_unique_case_insensitively(store: CharacterStore) -> None:
    await make(store, "Mara")
    with pytest.raises(NameTaken, match=r"@mara already exists here; pick another name"):
        await make(store, "mara", sha="ref2")
    # The same name is free in another server and on another platform.
    await make(store, "mara", B)
    await make(store, "mara", SLACK_A)


async def test_get_unknown_suggests_the_closest_name(store: CharacterStore) -> None:
    with pytest.raises(CharacterNotFound, match="no characters yet; create one with /character create"):
        await store.get(*A, "mara")
    await make(store, "mara")
    await make(store, "zed", sha="ref2")
    with pytest.raises(CharacterNotFound, match=r"no character @mra here — did you mean @mara\?"):
        await store.get(*A, "mra")
    with pytest.raises(CharacterNotFound, match=r"this server has @mara, @zed"):
        await store.get(*A, "qqqqqq")


@pytest.mark.parametrize(
    "name",
    ["", "@", "mara smith", "a" * 33, "mara!", "émile", "mara.jpg", "ma\nra", "<@123>"],
)
async def test_bad_names_are_refused(store: CharacterStore, name: str) -> None:
    with pytest.raises(BadName, match="not a valid character name: use 1–32 letters, digits, _ or -"):
        await make(store, name)


async def test_bad_name_message_names_the_value_and_a_fix(store: CharacterStore) -> None:
    with pytest.raises(BadName) as caught:
        await make(store, "mara smith")
    assert "'mara smith'" in str(caught.value)
    assert "e.g. mara_smith" in str(caught.value)


async def test_valid_edge_names(store: CharacterStore) -> None:
    for index, name in enumerate(["a", "x" * 32, "mara_2", "-dash-", "UPPER"]):
        await make(store, name, sha=f"ref{index}")
    assert len(await store.list(*A)) == 5


async def test_consent_is_required(store: CharacterStore) -> None:
    with pytest.raises(CharacterError, match="right to use this person's likeness"):
        await store.create(
            platform="discord",
            server_id="100",
            name="mara",
            owner_id="u1",
            reference_sha="r",
            crop_sha="c",
            consent=False,
        )
    assert await store.list(*A) == []


@pytest.mark.parametrize("weight", [-1, 101, True])
async def test_weight_must_be_0_to_100(store: CharacterStore, weight: int) -> None:
    with pytest.raises(CharacterError, match="outside 0–100"):
        await make(store, weight=weight)


async def test_description_rules(store: CharacterStore) -> None:
    with pytest.raises(CharacterError, match="the limit is 300"):
        await make(store, description="x" * 301)
    with pytest.raises(CharacterError, match="cannot contain @"):
        await make(store, description="looks like @zed")
    kept = await make(store, description="  a woman\n with  red hair ")
    assert kept.description == "a woman with red hair"
    assert (await make(store, "full", sha="r2", description="y" * 300)).description == "y" * 300


async def test_servers_and_platforms_are_isolated(store: CharacterStore) -> None:
    mara = await make(store, "mara", A)
    for other in (B, SLACK_A):
        assert await store.list(*other) == []
        with pytest.raises(CharacterNotFound):
            await store.get(*other, "mara")
        # Even a manager of another server cannot reach it.
        with pytest.raises(CharacterNotFound):
            await store.rename(*other, "mara", "x", actor_id="u1", actor_is_manager=True)
        with pytest.raises(CharacterNotFound):
            await store.replace_reference(
                *other, "mara", reference_sha="r9", crop_sha="c9", actor_id="u1", actor_is_manager=True
            )
        with pytest.raises(CharacterNotFound):
            await store.set_visibility(*other, "mara", "shared", actor_id="u1", actor_is_manager=True)
        with pytest.raises(CharacterNotFound):
            await store.delete(*other, "mara", actor_id="u1", actor_is_manager=True)
    assert await store.get(*A, "mara") == mara


async def test_only_owner_or_manager_may_change(store: CharacterStore) -> None:
    await make(store, "mara", owner_id="owner")
    with pytest.raises(NotAllowed, match=r"only the owner of @mara \(user owner\) or a server manager"):
        await store.rename(*A, "mara", "mara2", actor_id="stranger", actor_is_manager=False)
    with pytest.raises(NotAllowed):
        await store.replace_reference(
            *A, "mara", reference_sha="r2", crop_sha="c2", actor_id="stranger", actor_is_manager=False
        )
    with pytest.raises(NotAllowed):
        await store.set_visibility(*A, "mara", "shared", actor_id="stranger", actor_is_manager=False)
    with pytest.raises(NotAllowed):
        await store.delete(*A, "mara", actor_id="stranger", actor_is_manager=False)
    assert (await store.get(*A, "mara")).reference_sha == "ref1"

    renamed = await store.rename(*A, "mara", "Mara2", actor_id="owner", actor_is_manager=False)
    assert renamed.name == "Mara2"
    assert await store.get(*A, "mara2") == renamed
    managed = await store.rename(*A, "mara2", "mara3", actor_id="mod", actor_is_manager=True)
    assert managed.name == "mara3"
    assert managed.owner_id == "owner"
    assert await store.delete(*A, "mara3", actor_id="mod", actor_is_manager=True) == ["ref1", "crop-ref1"]


async def test_rename_rules(store: CharacterStore) -> None:
    await make(store, "mara")
    await make(store, "zed", sha="ref2")
    with pytest.raises(NameTaken, match="@ZED already exists here"):
        await store.rename(*A, "mara", "ZED", actor_id="u1", actor_is_manager=False)
    with pytest.raises(BadName):
        await store.rename(*A, "mara", "no spaces", actor_id="u1", actor_is_manager=False)
    # Changing only the case is a rename of the same row, not a clash with itself.
    assert (await store.rename(*A, "mara", "MARA", actor_id="u1", actor_is_manager=False)).name == "MARA"
    assert [c.name for c in await store.list(*A)] == ["MARA", "zed"]


async def test_delete_returns_only_unreferenced_shas(store: CharacterStore) -> None:
    await make(store, "mara", sha="shared-photo")
    await make(store, "mara_twin", sha="shared-photo")  # same upload, another character
    await make(store, "zed", B, sha="zed-photo")

    assert await store.delete(*A, "mara", actor_id="u1", actor_is_manager=False) == []
    assert await store.referenced("shared-photo")
    assert await store.delete(*A, "mara_twin", actor_id="u1", actor_is_manager=False) == [
        "shared-photo",
        "crop-shared-photo",
    ]
    assert not await store.referenced("shared-photo")
    assert not await store.referenced("crop-shared-photo")
    assert await store.referenced("zed-photo")
    with pytest.raises(CharacterNotFound):
        await store.get(*A, "mara")


async def test_delete_keeps_files_an_imported_copy_uses(store: CharacterStore) -> None:
    mara = await make(store, "mara")
    await store.set_visibility(*A, "mara", "shared", actor_id="u1", actor_is_manager=False)
    await store.import_shared(mara.id, platform="slack", server_id="T1", owner_id="s1")
    assert await store.delete(*A, "mara", actor_id="u1", actor_is_manager=False) == []
    assert await store.delete("slack", "T1", "mara", actor_id="s1", actor_is_manager=False) == [
        "ref1",
        "crop-ref1",
    ]


async def test_replace_reference_returns_the_old_unreferenced_shas(store: CharacterStore) -> None:
    await make(store, "mara", sha="old")
    await make(store, "other", sha="kept")
    updated, orphans = await store.replace_reference(
        *A, "mara", reference_sha="new", crop_sha="crop-new", actor_id="u1", actor_is_manager=False
    )
    assert orphans == ["old", "crop-old"]
    assert (updated.reference_sha, updated.crop_sha) == ("new", "crop-new")
    assert await store.get(*A, "mara") == updated
    # Switching to a photo another character uses orphans nothing of that one.
    _, orphans = await store.replace_reference(
        *A, "mara", reference_sha="kept", crop_sha="crop-kept", actor_id="u1", actor_is_manager=False
    )
    assert orphans == ["new", "crop-new"]
    # Re-uploading the same photo orphans nothing.
    _, orphans = await store.replace_reference(
        *A, "mara", reference_sha="kept", crop_sha="crop-kept", actor_id="u1", actor_is_manager=False
    )
    assert orphans == []


@pytest.mark.parametrize("contenders", [2, 5])
async def test_concurrent_creates_of_one_name_one_wins(store: CharacterStore, contenders: int) -> None:
    spellings = ["mara", "MARA", "Mara", "maRa", "mara"][:contenders]
    results = await asyncio.gather(
        *(make(store, name, owner_id=f"u{i}", sha=f"r{i}") for i, name in enumerate(spellings)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Character)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == contenders - 1
    assert all(isinstance(loser, NameTaken) for loser in losers)
    assert await store.list(*A) == winners


async def test_share_browse_import_unshare(store: CharacterStore) -> None:
    mara = await make(store, "mara", owner_id="mara-owner", description="a woman with red curly hair")
    await make(store, "secret", sha="ref2", description="red hat")
    assert await store.browse() == []

    shared = await store.set_visibility(*A, "mara", "shared", actor_id="mara-owner", actor_is_manager=False)
    assert shared.visibility == "shared"
    assert [c.id for c in await store.browse()] == [mara.id]
    assert [c.id for c in await store.browse("CURLY")] == [mara.id]  # description, any case
    assert [c.id for c in await store.browse("MAR")] == [mara.id]  # name
    assert await store.browse("red hat") == []  # private characters never show

    copy = await store.import_shared(mara.id, platform="slack", server_id="T1", owner_id="s1")
    assert copy.id != mara.id
    assert (copy.platform, copy.server_id, copy.name, copy.owner_id) == ("slack", "T1", "mara", "s1")
    assert (copy.origin_id, copy.origin_label) == (mara.id, "discord server 100 (@mara)")
    assert (copy.visibility, copy.consent, copy.uses) == ("private", True, 0)
    assert (copy.description, copy.weight, copy.reference_sha, copy.crop_sha) == (
        mara.description,
        mara.weight,
        mara.reference_sha,
        mara.crop_sha,
    )
    assert await store.get("slack", "T1", "mara") == copy

    # Unsharing hides it and stops new imports; the copy already imported stays.
    await store.set_visibility(*A, "mara", "private", actor_id="mod", actor_is_manager=True)
    assert await store.browse() == []
    with pytest.raises(CharacterNotFound, match="unshared or deleted"):
        await store.import_shared(mara.id, platform="discord", server_id="200", owner_id="u9")
    assert await store.get("slack", "T1", "mara") == copy


async def test_import_name_clash_suggests_name_option(store: CharacterStore) -> None:
    mara = await make(store, "mara")
    await store.set_visibility(*A, "mara", "shared", actor_id="u1", actor_is_manager=False)
    await make(store, "Mara", B, sha="theirs")
    with pytest.raises(NameTaken, match="name:"):
        await store.import_shared(mara.id, platform="discord", server_id="200", owner_id="u2")
    copy = await store.import_shared(
        mara.id, platform="discord", server_id="200", owner_id="u2", name="mara_a"
    )
    assert copy.name == "mara_a"
    with pytest.raises(BadName):
        await store.import_shared(mara.id, platform="discord", server_id="200", owner_id="u2", name="a b")


async def test_import_unknown_or_private_is_not_found(store: CharacterStore) -> None:
    private = await make(store, "mara")
    for character_id in ("c_doesnotexist", private.id):
        with pytest.raises(CharacterNotFound):
            await store.import_shared(character_id, platform="discord", server_id="200", owner_id="u2")


async def test_an_imported_copy_cannot_be_reshared(store: CharacterStore) -> None:
    mara = await make(store, "mara")
    await store.set_visibility(*A, "mara", "shared", actor_id="u1", actor_is_manager=False)
    await store.import_shared(mara.id, platform="discord", server_id="200", owner_id="u2")
    with pytest.raises(CharacterError, match="only the original can be shared"):
        await store.set_visibility("discord", "200", "mara", "shared", actor_id="u2", actor_is_manager=True)


async def test_bad_visibility_is_refused(store: CharacterStore) -> None:
    await make(store)
    with pytest.raises(CharacterError, match="visibility"):
        await store.set_visibility(*A, "mara", "public", actor_id="u1", actor_is_manager=False)  # type: ignore[arg-type]


async def test_browse_orders_by_uses_and_limits(store: CharacterStore) -> None:
    ids = {}
    for index, name in enumerate(["ann", "bea", "cy"]):
        ids[name] = (await make(store, name, sha=f"r{index}")).id
        await store.set_visibility(*A, name, "shared", actor_id="u1", actor_is_manager=False)
    await store.record_use([ids["cy"]])
    await store.record_use([ids["cy"]])
    await store.record_use([ids["bea"]])
    assert [c.name for c in await store.browse()] == ["cy", "bea", "ann"]
    assert [c.name for c in await store.browse(limit=2)] == ["cy", "bea"]
    with pytest.raises(ValueError, match="limit"):
        await store.browse(limit=0)


async def test_record_use_counts_copies_and_their_origin(store: CharacterStore) -> None:
    mara = await make(store, "mara")
    zed = await make(store, "zed", sha="r2")
    await store.set_visibility(*A, "mara", "shared", actor_id="u1", actor_is_manager=False)
    copy = await store.import_shared(mara.id, platform="discord", server_id="200", owner_id="u2")

    await store.record_use([])
    await store.record_use([mara.id, zed.id, mara.id])  # one prompt mentioning mara twice counts once
    await store.record_use([copy.id])
    assert (await store.get(*A, "mara")).uses == 2
    assert (await store.get(*A, "zed")).uses == 1
    assert (await store.get("discord", "200", "mara")).uses == 1
