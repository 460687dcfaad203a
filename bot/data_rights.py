"""Data rights: a user's "forget me" (their characters and generations, files included), and a server's
export (its generations and characters, as files an operator can hand over).

Platform-free: the chat adapters offer `/forget-me`, the command line offers `likeness data`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.character_desk import Actor, CharacterDesk
from bot.errors import UserError
from bot.ledger import Ledger, Status

IN_FLIGHT: tuple[Status, ...] = ("recorded", "queued", "running")


class ForgetRefused(UserError):
    """Forgetting would break work under way; the message says when to ask again."""


@dataclass(frozen=True)
class Forgotten:
    generations: int
    files: int
    characters: int

    def text(self) -> str:
        """What was removed, in words for the user (the same on every platform)."""
        return (
            f"Done: {self.characters} character(s) with their photos, {self.generations} generation(s) and "
            f"{self.files} file(s) of yours are gone from this Likeness. Images others made from yours stay "
            "theirs."
        )


async def forget_user(
    ledger: Ledger,
    generations_dir: Path,
    characters: CharacterDesk | None,
    platform: str,
    user_id: str,
) -> Forgotten:
    """Remove everything `user_id` made on `platform`, in every server: characters with their photos,
    generations with their files. Generations others made from theirs stay, without the link back."""
    marks = ",".join("?" for _ in IN_FLIGHT)
    async with (
        ledger.connect() as db,
        db.execute(
            f"SELECT COUNT(*) FROM generations WHERE platform = ? AND user_id = ? AND status IN ({marks})",
            (platform, user_id, *IN_FLIGHT),
        ) as cursor,
    ):
        row = await cursor.fetchone()
    if row is not None and row[0]:
        raise ForgetRefused(
            f"you have {row[0]} request(s) in progress; ask again once they have finished, so nothing of "
            "yours is made after it"
        )
    removed_characters = 0
    if characters is not None:
        for character in await characters.store.owned_by(platform, user_id):
            actor = Actor(platform=platform, server_id=character.server_id, user_id=user_id)
            await characters.delete(actor, character.name)
            removed_characters += 1
    async with (
        ledger.connect() as db,
        db.execute(
            "SELECT id FROM generations WHERE platform = ? AND user_id = ?", (platform, user_id)
        ) as cursor,
    ):
        ids = [str(found[0]) for found in await cursor.fetchall()]
    files = 0
    for generation_id in ids:
        folder = generations_dir / generation_id
        if folder.is_dir():
            files += sum(1 for path in folder.iterdir() if path.is_file())
            await asyncio.to_thread(shutil.rmtree, folder, True)
    async with ledger.connect() as db:
        await db.executemany(
            "UPDATE generations SET parent_id = NULL WHERE parent_id = ?", [(i,) for i in ids]
        )
        await db.executemany("DELETE FROM generations WHERE id = ?", [(i,) for i in ids])
    return Forgotten(generations=len(ids), files=files, characters=removed_characters)


async def export_server(
    ledger: Ledger,
    characters: CharacterDesk | None,
    platform: str,
    server_id: str,
    dest: Path,
) -> Path:
    """A zip of a server's data: `generations.jsonl` (the ledger's rows), their files under
    `generations/`, `characters.jsonl` and each character's photo and face crop under `characters/`."""
    async with (
        ledger.connect() as db,
        db.execute(
            "SELECT * FROM generations WHERE platform = ? AND server_id = ? ORDER BY created_at",
            (platform, server_id),
        ) as cursor,
    ):
        rows = [dict(row) for row in await cursor.fetchall()]
    cast = await characters.store.list(platform, server_id) if characters is not None else []

    def write() -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_suffix(dest.suffix + ".part")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("generations.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
            for row in rows:
                result = json.loads(row["result"])
                names = [*result.get("files", []), *([result["grid"]] if result.get("grid") else [])]
                for name in names:
                    path = Path(name)
                    if path.is_file():
                        archive.write(path, f"generations/{row['id']}/{path.name}")
            archive.writestr("characters.jsonl", "".join(json.dumps(asdict(c)) + "\n" for c in cast))
            for character in cast:
                assert characters is not None
                for role, sha in (("photo", character.reference_sha), ("face", character.crop_sha)):
                    if characters.images.exists(sha):
                        path = characters.images.path(sha)
                        archive.write(path, f"characters/{character.name}/{role}{path.suffix}")
        partial.replace(dest)
        return dest

    return await asyncio.to_thread(write)
