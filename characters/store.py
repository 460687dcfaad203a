"""Per-server characters, kept in their own SQLite file.

A character is a named subject of one server (`@mara`), made from one reference photo. The store
keeps its record: name, owner, description, default weight, and the content hashes of the original
upload and of the face crop. The image files themselves live elsewhere, addressed by those hashes;
several rows may point at one file (an imported copy, or two characters made from the same photo),
so operations that drop a row return the hashes that no row references any more, and only those
files may be deleted.

Scoping: every query is scoped by (platform, server_id), so one server can never see, use or change
another's characters. The exceptions are the deployment-wide community catalog, `browse` and
`import_shared`, which only ever see characters whose owner chose to share them, and `record_use` /
`referenced`, which take ids and hashes that the caller already got through a scoped lookup.

Sharing and unpublishing: the owner (or a server manager) can share a character into the community
catalog; another server can then import a copy of it. The copy is the importing server's own row:
a new id, owned by the importer, private, carrying the creator's likeness consent and its provenance
(`origin_id`, `origin_label`). Unsharing hides the original from `browse` and stops new imports;
copies already imported stay, with their provenance, because they belong to the servers that
imported them. An imported copy cannot itself be shared: that would let an unshared character keep
circulating against its creator's decision.

Storage: aiosqlite in WAL mode with a busy timeout, one connection per unit of work (transactions
on a shared connection would interleave between concurrent tasks). Read-check-write operations run
in `BEGIN IMMEDIATE` transactions so the check and the write see the same rows. Name uniqueness is
enforced by a UNIQUE index on (platform, server_id, name COLLATE NOCASE): of two concurrent creates
of one name, SQLite lets exactly one win.

Caveat for callers deleting files: a hash returned as unreferenced was unreferenced when the
transaction committed; a create of the same photo racing the deletion could reference it again.
Check `referenced(sha)` right before unlinking to keep that window small.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import re
import secrets
import sqlite3
import string
import time
import unicodedata
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import aiosqlite

NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_DESCRIPTION_CHARS = 300
Visibility = Literal["private", "shared"]
VISIBILITIES: tuple[Visibility, ...] = ("private", "shared")

_ID_ALPHABET = string.ascii_lowercase + string.digits
_NAME_RULE = "1–32 letters, digits, _ or - (no spaces)"
_CREATE_HINT = "create one with /character create"

# Each migration is a tuple of single statements, run in one transaction with the version bump
# (executescript would commit on its own and break that atomicity).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE characters (
            id TEXT PRIMARY KEY,
            platform TEXT NOT NULL,
            server_id TEXT NOT NULL,
            name TEXT NOT NULL,
            owner_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            weight INTEGER NOT NULL DEFAULT 100 CHECK (weight BETWEEN 0 AND 100),
            reference_sha TEXT NOT NULL,
            crop_sha TEXT NOT NULL,
            consent INTEGER NOT NULL CHECK (consent = 1),
            visibility TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'shared')),
            origin_id TEXT,
            origin_label TEXT NOT NULL DEFAULT '',
            uses INTEGER NOT NULL DEFAULT 0
        )
        """,
        # Names are ASCII by rule, so NOCASE (ASCII case folding) is exactly case-insensitive here.
        "CREATE UNIQUE INDEX characters_by_name ON characters (platform, server_id, name COLLATE NOCASE)",
        "CREATE INDEX characters_by_visibility ON characters (visibility, uses)",
        "CREATE INDEX characters_by_reference ON characters (reference_sha)",
        "CREATE INDEX characters_by_crop ON characters (crop_sha)",
        "CREATE INDEX characters_by_origin ON characters (origin_id)",
    ),
)


class CharacterError(ValueError):
    """A refused character operation; str() is fit to show the user (what, the value, the fix)."""


class NameTaken(CharacterError):
    """The name is already used by another character of this server (case-insensitively)."""


class CharacterNotFound(CharacterError):
    """No such character here; the message suggests the closest names."""


class NotAllowed(CharacterError):
    """The actor is neither the character's owner nor a server manager."""


class BadName(CharacterError):
    """The name breaks the naming rule."""


@dataclass(frozen=True)
class Character:
    id: str  # "c_" + 12 random lowercase letters/digits
    platform: str
    server_id: str
    name: str  # as typed; unique per (platform, server_id) case-insensitively
    owner_id: str
    created_at: float
    description: str  # appended to prompts that use it (≤ 300 chars)
    weight: int  # default character weight 0..100
    reference_sha: str  # content hash of the original upload
    crop_sha: str  # content hash of the face crop
    consent: bool  # the creator confirmed they may use this likeness
    visibility: Visibility
    origin_id: str | None  # imported copies: the id of the shared character copied
    origin_label: str  # imported copies: e.g. "discord server 123 (@mara)"; "" otherwise
    uses: int


def check_name(name: str) -> str:
    """The name without surrounding spaces or one leading `@` (people type `@mara`), or BadName."""
    cleaned = name.strip()
    if cleaned.startswith("@"):
        cleaned = cleaned[1:]
    if not NAME.match(cleaned):
        shown = cleaned if len(cleaned) <= 40 else cleaned[:40] + "…"
        suggestion = re.sub(r"[^A-Za-z0-9_-]+", "_", cleaned).strip("_")[:32]
        hint = f", e.g. {suggestion}" if suggestion and NAME.match(suggestion) else ""
        raise BadName(f"{shown!r} is not a valid character name: use {_NAME_RULE}{hint}")
    return cleaned


def character_not_found(name: str, known: Iterable[str]) -> CharacterNotFound:
    """The error for an unknown `@name`, suggesting the closest of the `known` names."""
    names = sorted(set(known), key=str.lower)
    if not names:
        return CharacterNotFound(
            f"no character @{name} here: this server has no characters yet; {_CREATE_HINT}"
        )
    by_lower = {known_name.lower(): known_name for known_name in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if close:
        options = " or ".join(f"@{by_lower[match]}" for match in close)
        return CharacterNotFound(f"no character @{name} here — did you mean {options}?")
    shown = ", ".join(f"@{known_name}" for known_name in names[:5])
    more = f" and {len(names) - 5} more (/character list)" if len(names) > 5 else ""
    return CharacterNotFound(f"no character @{name} here; this server has {shown}{more}")


def _check_description(description: str) -> str:
    # Whitespace runs (newlines included) become one space: the text is spliced into prompts.
    cleaned = " ".join(description.split())
    if len(cleaned) > MAX_DESCRIPTION_CHARS:
        raise CharacterError(
            f"the description is {len(cleaned)} characters; the limit is {MAX_DESCRIPTION_CHARS}. Shorten it."
        )
    if any(unicodedata.category(char) == "Cc" for char in cleaned):
        raise CharacterError("the description contains control characters; use plain text")
    # A description replaces `@name` in prompts; an `@` inside it would read as another mention.
    if "@" in cleaned:
        raise CharacterError("a description cannot contain @ (it marks character mentions); remove it")
    return cleaned


def _check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise CharacterError(f"the weight {weight!r} is outside 0–100; pick a whole number from 0 to 100")
    return weight


def _check_sha(label: str, sha: str) -> str:
    if not sha or not isinstance(sha, str):
        raise ValueError(f"{label} must be a non-empty content hash")
    return sha


def _new_id() -> str:
    return "c_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _is_name_clash(error: sqlite3.IntegrityError) -> bool:
    # The UNIQUE index on the name reports its columns; anything else (a CHECK) is a bug, not a clash.
    message = str(error)
    return "UNIQUE" in message and "characters.name" in message


class CharacterStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One connection for one unit of work.

        With `write`, the whole unit is one `BEGIN IMMEDIATE` transaction (takes the write lock up
        front, so a read-check-write cannot be overtaken), committed on success, rolled back on error.
        Without it, statements autocommit: single reads need no transaction.
        """
        async with aiosqlite.connect(self.path, isolation_level=None) as db:
            await db.execute("PRAGMA busy_timeout = 5000")
            db.row_factory = aiosqlite.Row
            if not write:
                yield db
                return
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.rollback()
                raise
            await db.commit()

    async def open(self) -> None:
        """Create or migrate the schema; safe to call on every start, from several processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        async with self._connect() as db:
            await db.execute("PRAGMA journal_mode = WAL")
        while True:
            async with self._connect(write=True) as db:
                # Read the version under the write lock: another process may have just migrated.
                async with db.execute("PRAGMA user_version") as cursor:
                    row = await cursor.fetchone()
                version = int(row[0]) if row else 0
                if version > len(_MIGRATIONS):
                    raise RuntimeError(
                        f"{self.path} has characters schema version {version}; this Likeness knows "
                        f"{len(_MIGRATIONS)}. Upgrade Likeness."
                    )
                if version == len(_MIGRATIONS):
                    return
                for statement in _MIGRATIONS[version]:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version + 1}")

    async def create(
        self,
        *,
        platform: str,
        server_id: str,
        name: str,
        owner_id: str,
        reference_sha: str,
        crop_sha: str,
        description: str = "",
        weight: int = 100,
        consent: bool,
        origin_label: str = "",
    ) -> Character:
        """A new private character; `origin_label` names where an imported card came from."""
        if consent is not True:
            raise CharacterError(
                "to create a character you must confirm you have the right to use this person's "
                "likeness (it is you, or they agreed); confirm consent and try again"
            )
        character = Character(
            id=_new_id(),
            platform=platform,
            server_id=server_id,
            name=check_name(name),
            owner_id=owner_id,
            created_at=time.time(),
            description=_check_description(description),
            weight=_check_weight(weight),
            reference_sha=_check_sha("reference_sha", reference_sha),
            crop_sha=_check_sha("crop_sha", crop_sha),
            consent=True,
            visibility="private",
            origin_id=None,
            origin_label=" ".join(origin_label.split())[:120],
            uses=0,
        )
        async with self._connect(write=True) as db:
            await _insert(db, character)
        return character

    async def get(self, platform: str, server_id: str, name: str) -> Character:
        async with self._connect() as db:
            return await _get(db, platform, server_id, check_name(name))

    async def list(self, platform: str, server_id: str) -> builtins.list[Character]:
        """The server's characters (its own and imported copies), sorted by name case-insensitively."""
        async with (
            self._connect() as db,
            db.execute(
                "SELECT * FROM characters WHERE platform = ? AND server_id = ? ORDER BY name COLLATE NOCASE",
                (platform, server_id),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [_character(row) for row in rows]

    async def owned_by(self, platform: str, owner_id: str) -> builtins.list[Character]:
        """Every character a user owns on a platform, in every server (what `/forget-me` removes)."""
        async with (
            self._connect() as db,
            db.execute(
                "SELECT * FROM characters WHERE platform = ? AND owner_id = ? ORDER BY server_id, name",
                (platform, owner_id),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [_character(row) for row in rows]

    async def rename(
        self,
        platform: str,
        server_id: str,
        name: str,
        new_name: str,
        *,
        actor_id: str,
        actor_is_manager: bool,
    ) -> Character:
        new_name = check_name(new_name)
        async with self._connect(write=True) as db:
            character = await _get(db, platform, server_id, check_name(name))
            _check_allowed(character, "rename", actor_id, actor_is_manager)
            if new_name == character.name:
                return character
            try:
                await db.execute("UPDATE characters SET name = ? WHERE id = ?", (new_name, character.id))
            except sqlite3.IntegrityError as exc:
                if _is_name_clash(exc):
                    raise NameTaken(
                        f"@{new_name} already exists here; pick another name or rename the old one"
                    ) from exc
                raise
        return dataclasses.replace(character, name=new_name)

    async def replace_reference(
        self,
        platform: str,
        server_id: str,
        name: str,
        *,
        reference_sha: str,
        crop_sha: str,
        actor_id: str,
        actor_is_manager: bool,
    ) -> tuple[Character, builtins.list[str]]:
        """Point the character at a new photo; also returns the old hashes no row references now."""
        _check_sha("reference_sha", reference_sha)
        _check_sha("crop_sha", crop_sha)
        async with self._connect(write=True) as db:
            character = await _get(db, platform, server_id, check_name(name))
            _check_allowed(character, "replace the photo of", actor_id, actor_is_manager)
            await db.execute(
                "UPDATE characters SET reference_sha = ?, crop_sha = ? WHERE id = ?",
                (reference_sha, crop_sha, character.id),
            )
            orphans = await _unreferenced(db, (character.reference_sha, character.crop_sha))
        return dataclasses.replace(character, reference_sha=reference_sha, crop_sha=crop_sha), orphans

    async def delete(
        self, platform: str, server_id: str, name: str, *, actor_id: str, actor_is_manager: bool
    ) -> builtins.list[str]:
        """Delete the character; returns its hashes that no remaining row references (files to delete)."""
        async with self._connect(write=True) as db:
            character = await _get(db, platform, server_id, check_name(name))
            _check_allowed(character, "delete", actor_id, actor_is_manager)
            await db.execute("DELETE FROM characters WHERE id = ?", (character.id,))
            return await _unreferenced(db, (character.reference_sha, character.crop_sha))

    async def set_visibility(
        self,
        platform: str,
        server_id: str,
        name: str,
        visibility: Visibility,
        *,
        actor_id: str,
        actor_is_manager: bool,
    ) -> Character:
        """Share a character into the community catalog, or unshare it (see the module docstring)."""
        if visibility not in VISIBILITIES:
            raise CharacterError(f"visibility {visibility!r} is not one of {', '.join(VISIBILITIES)}")
        async with self._connect(write=True) as db:
            character = await _get(db, platform, server_id, check_name(name))
            verb = "share" if visibility == "shared" else "unshare"
            _check_allowed(character, verb, actor_id, actor_is_manager)
            if visibility == "shared" and character.origin_id is not None:
                raise CharacterError(
                    f"@{character.name} is a copy imported from "
                    f"{character.origin_label or 'another server'}; "
                    "only the original can be shared, by its own server"
                )
            if character.visibility == visibility:
                return character
            await db.execute("UPDATE characters SET visibility = ? WHERE id = ?", (visibility, character.id))
        return dataclasses.replace(character, visibility=visibility)

    async def browse(self, query: str = "", *, limit: int = 25) -> builtins.list[Character]:
        """Shared characters whose name or description contains `query` (any case), most used first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        needle = " ".join(query.split()).casefold()
        async with self._connect() as db:
            # SQLite's lower()/LIKE fold ASCII only; descriptions are any text, so fold in Python.
            await db.create_function("casefold", 1, _casefold, deterministic=True)
            async with db.execute(
                "SELECT * FROM characters WHERE visibility = 'shared'"
                " AND (instr(casefold(name), ?) > 0 OR instr(casefold(description), ?) > 0)"
                " ORDER BY uses DESC, name COLLATE NOCASE, id LIMIT ?",
                (needle, needle, limit),
            ) as cursor:
                rows = await cursor.fetchall()
        return [_character(row) for row in rows]

    async def import_shared(
        self,
        character_id: str,
        *,
        platform: str,
        server_id: str,
        owner_id: str,
        name: str | None = None,
    ) -> Character:
        """Copy a shared character into a server: new id, private, consent and provenance carried."""
        async with self._connect(write=True) as db:
            # Read and copy in one transaction, so an unshare cannot slip in between.
            async with db.execute(
                "SELECT * FROM characters WHERE id = ? AND visibility = 'shared'", (character_id,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise CharacterNotFound(
                    f"no shared character {character_id!r}: it may have been unshared or deleted; "
                    "find one with /character browse"
                )
            source = _character(row)
            copy = Character(
                id=_new_id(),
                platform=platform,
                server_id=server_id,
                name=check_name(name) if name is not None else source.name,
                owner_id=owner_id,
                created_at=time.time(),
                description=source.description,
                weight=source.weight,
                reference_sha=source.reference_sha,
                crop_sha=source.crop_sha,
                consent=source.consent,
                visibility="private",
                origin_id=source.id,
                origin_label=f"{source.platform} server {source.server_id} (@{source.name})",
                uses=0,
            )
            try:
                await _insert(db, copy)
            except NameTaken as exc:
                raise NameTaken(
                    f"@{copy.name} already exists here; import it under another name with name:<new name>"
                ) from exc
        return copy

    async def record_use(self, ids: Sequence[str]) -> None:
        """Count one use of each character (once per id), and of the originals of imported copies."""
        unique = sorted(set(ids))
        if not unique:
            return
        marks = ",".join("?" for _ in unique)
        async with self._connect(write=True) as db:
            # A use of an imported copy is also a use of the original: it is what the catalog ranks by.
            await db.execute(
                f"UPDATE characters SET uses = uses + 1 WHERE id IN "
                f"(SELECT origin_id FROM characters WHERE id IN ({marks}) AND origin_id IS NOT NULL)",
                unique,
            )
            await db.execute(f"UPDATE characters SET uses = uses + 1 WHERE id IN ({marks})", unique)

    async def referenced(self, sha: str) -> bool:
        """Whether any character (of any server) still uses this file as its reference or crop."""
        async with (
            self._connect() as db,
            db.execute(
                "SELECT 1 FROM characters WHERE reference_sha = ? OR crop_sha = ? LIMIT 1", (sha, sha)
            ) as cursor,
        ):
            return await cursor.fetchone() is not None


def _casefold(value: object) -> str:
    return value.casefold() if isinstance(value, str) else ""


def _check_allowed(character: Character, verb: str, actor_id: str, actor_is_manager: bool) -> None:
    if actor_is_manager or actor_id == character.owner_id:
        return
    raise NotAllowed(
        f"only the owner of @{character.name} (user {character.owner_id}) or a server manager can {verb} it"
    )


async def _insert(db: aiosqlite.Connection, character: Character) -> None:
    try:
        await db.execute(
            "INSERT INTO characters (id, platform, server_id, name, owner_id, created_at, description,"
            " weight, reference_sha, crop_sha, consent, visibility, origin_id, origin_label, uses)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                character.id,
                character.platform,
                character.server_id,
                character.name,
                character.owner_id,
                character.created_at,
                character.description,
                character.weight,
                character.reference_sha,
                character.crop_sha,
                int(character.consent),
                character.visibility,
                character.origin_id,
                character.origin_label,
                character.uses,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if _is_name_clash(exc):
            raise NameTaken(
                f"@{character.name} already exists here; pick another name or rename the old one"
            ) from exc
        raise


async def _get(db: aiosqlite.Connection, platform: str, server_id: str, name: str) -> Character:
    async with db.execute(
        "SELECT * FROM characters WHERE platform = ? AND server_id = ? AND name = ? COLLATE NOCASE",
        (platform, server_id, name),
    ) as cursor:
        row = await cursor.fetchone()
    if row is not None:
        return _character(row)
    async with db.execute(
        "SELECT name FROM characters WHERE platform = ? AND server_id = ?", (platform, server_id)
    ) as cursor:
        names = [str(found["name"]) for found in await cursor.fetchall()]
    raise character_not_found(name, names)


async def _unreferenced(db: aiosqlite.Connection, shas: Iterable[str]) -> builtins.list[str]:
    """Those of `shas` that no row references, in the order given, without repeats."""
    orphans: builtins.list[str] = []
    for sha in dict.fromkeys(shas):
        async with db.execute(
            "SELECT 1 FROM characters WHERE reference_sha = ? OR crop_sha = ? LIMIT 1", (sha, sha)
        ) as cursor:
            if await cursor.fetchone() is None:
                orphans.append(sha)
    return orphans


def _character(row: aiosqlite.Row) -> Character:
    return Character(
        id=row["id"],
        platform=row["platform"],
        server_id=row["server_id"],
        name=row["name"],
        owner_id=row["owner_id"],
        created_at=row["created_at"],
        description=row["description"],
        weight=row["weight"],
        reference_sha=row["reference_sha"],
        crop_sha=row["crop_sha"],
        consent=bool(row["consent"]),
        visibility=cast(Visibility, row["visibility"]),
        origin_id=row["origin_id"],
        origin_label=row["origin_label"],
        uses=row["uses"],
    )
