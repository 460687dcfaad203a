"""Character commands, platform-free: create from a photo, list, show, rename, delete, share, import, export.

The chat adapters and the CLI call these and only translate. Errors from `characters/` (refused
photos, taken names, permissions, bad cards) come out as UserError with their messages unchanged.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.errors import UserError
from characters.card import Card, CardError, read_card, write_card
from characters.images import ImageStore
from characters.reference import MAX_BYTES, ReferenceRejected, prepare_reference
from characters.store import Character, CharacterError, CharacterStore


class CharacterRefused(UserError):
    """A character operation was refused; the message comes from characters/ and says why."""


def variation_photo(path: Path) -> bytes:
    """A generated variation's file as a character's reference photo (Save as character): the PNG itself,
    or a JPEG of it where the PNG is over the photo limit (a large upscale)."""
    data = path.read_bytes()
    if len(data) <= MAX_BYTES:
        return data
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((4096, 4096))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@dataclass(frozen=True)
class Actor:
    """Who acts, where: the platform, the server (guild / workspace), the user, and whether they manage it."""

    platform: str
    server_id: str
    user_id: str
    is_manager: bool = False


@contextlib.contextmanager
def _as_user_errors() -> Iterator[None]:
    try:
        yield
    except (CharacterError, ReferenceRejected, CardError) as exc:
        raise CharacterRefused(str(exc)) from exc


class CharacterDesk:
    def __init__(self, store: CharacterStore, images: ImageStore) -> None:
        self.store = store
        self.images = images

    async def create(
        self,
        actor: Actor,
        name: str,
        photo: bytes,
        *,
        description: str = "",
        weight: int = 100,
        consent: bool = False,
    ) -> Character:
        """A new character from one reference photo (which must show exactly one face)."""
        with _as_user_errors():
            if not consent:
                raise CharacterError(
                    "confirm that you may use this person's likeness (consent) to create a character"
                )
            prepared = await asyncio.to_thread(prepare_reference, photo)
            reference = self.images.put(prepared.original, prepared.original_format)
            crop = self.images.put(prepared.crop_jpeg, "jpg")
            try:
                return await self.store.create(
                    platform=actor.platform, server_id=actor.server_id, name=name, owner_id=actor.user_id,
                    reference_sha=reference, crop_sha=crop, description=description, weight=weight,
                    consent=consent,
                )  # fmt: skip
            except BaseException:
                await self._forget([reference, crop])
                raise

    async def replace_photo(self, actor: Actor, name: str, photo: bytes) -> Character:
        """Give a character a new reference photo (owner or manager); the old one goes if nothing uses it."""
        with _as_user_errors():
            prepared = await asyncio.to_thread(prepare_reference, photo)
            reference = self.images.put(prepared.original, prepared.original_format)
            crop = self.images.put(prepared.crop_jpeg, "jpg")
            try:
                character, unused = await self.store.replace_reference(
                    actor.platform, actor.server_id, name, reference_sha=reference, crop_sha=crop,
                    actor_id=actor.user_id, actor_is_manager=actor.is_manager,
                )  # fmt: skip
            except BaseException:
                await self._forget([reference, crop])
                raise
        await self._forget(unused)
        return character

    async def list(self, actor: Actor) -> builtins.list[Character]:
        return await self.store.list(actor.platform, actor.server_id)

    async def show(self, actor: Actor, name: str) -> tuple[Character, bytes]:
        """The character and its face crop (JPEG)."""
        with _as_user_errors():
            character = await self.store.get(actor.platform, actor.server_id, name)
        return character, self.images.get(character.crop_sha)

    async def rename(self, actor: Actor, name: str, new_name: str) -> Character:
        with _as_user_errors():
            return await self.store.rename(
                actor.platform, actor.server_id, name, new_name,
                actor_id=actor.user_id, actor_is_manager=actor.is_manager,
            )  # fmt: skip

    async def delete(self, actor: Actor, name: str) -> None:
        """Delete the character, and its image files when no other character uses them."""
        with _as_user_errors():
            unused = await self.store.delete(
                actor.platform,
                actor.server_id,
                name,
                actor_id=actor.user_id,
                actor_is_manager=actor.is_manager,
            )
        await self._forget(unused)

    async def share(self, actor: Actor, name: str, shared: bool = True) -> Character:
        """Publish to (or withdraw from) the deployment's community catalog; copies already imported stay."""
        with _as_user_errors():
            return await self.store.set_visibility(
                actor.platform, actor.server_id, name, "shared" if shared else "private",
                actor_id=actor.user_id, actor_is_manager=actor.is_manager,
            )  # fmt: skip

    async def browse(self, query: str = "") -> builtins.list[Character]:
        return await self.store.browse(query)

    async def import_shared(self, actor: Actor, code: str, name: str | None = None) -> Character:
        """Copy a shared character (its code is its id, `c_…`) into this server."""
        with _as_user_errors():
            return await self.store.import_shared(
                code.strip(),
                platform=actor.platform,
                server_id=actor.server_id,
                owner_id=actor.user_id,
                name=name,
            )

    async def import_card(self, actor: Actor, card_png: bytes, name: str | None = None) -> Character:
        """A character from a portable card, made on any deployment or platform."""
        with _as_user_errors():
            card = read_card(card_png)
            crop = self.images.put(card.crop_jpeg, "jpg")
            try:
                return await self.store.create(
                    platform=actor.platform, server_id=actor.server_id, name=name or card.name,
                    owner_id=actor.user_id, reference_sha=crop, crop_sha=crop, description=card.description,
                    weight=card.weight, consent=card.consent, origin_label=f"card from {card.creator}",
                )  # fmt: skip
            except BaseException:
                await self._forget([crop])
                raise

    async def export_card(self, actor: Actor, name: str) -> bytes:
        """The portable card (PNG) of one of this server's characters."""
        character, crop = await self.show(actor, name)
        creator = character.origin_label or f"{actor.platform} server {actor.server_id}"
        card = Card(
            name=character.name, description=character.description, weight=character.weight,
            consent=character.consent, creator=creator, crop_jpeg=crop,
        )  # fmt: skip
        return write_card(card)

    async def faces(self, characters: tuple[Character, ...]) -> builtins.list[tuple[str, bytes]]:
        """(sha, JPEG) of each character's face crop, in order."""
        return [(c.crop_sha, self.images.get(c.crop_sha)) for c in characters]

    async def _forget(self, shas: builtins.list[str]) -> None:
        # Re-check just before unlinking: another character may have taken the same photo meanwhile.
        for sha in dict.fromkeys(shas):
            if not await self.store.referenced(sha):
                self.images.delete(sha)
