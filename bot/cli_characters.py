"""`likeness characters …`: the character commands of the chat adapters, for the embedded default.

Each command acts on one server's characters (`--server`, default `local`) as its manager.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from bot.character_desk import Actor, CharacterDesk
from bot.cli_common import LOCAL_SERVER, character_desk, console, fail, load_settings, run, write_file
from bot.settings import BotSettings
from characters.store import Character

characters_app = typer.Typer(
    help="Characters: named faces from one reference photo, used as @name in prompts.", no_args_is_help=True
)

Server = Annotated[str, typer.Option(help="The server whose characters these are.")]
T = TypeVar("T")


def _with_desk(action: Callable[[CharacterDesk, Actor], Awaitable[T]], server: str) -> T:
    settings = load_settings(BotSettings)
    actor = Actor(platform="cli", server_id=server, user_id="local", is_manager=True)

    async def go() -> T:
        return await action(await character_desk(settings), actor)

    return run(go())


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        fail(f"{path} is not a file; pass the path of {what}")
    return path.read_bytes()


def _describe(character: Character) -> str:
    parts = [f"@{character.name}", f"weight {character.weight}", character.visibility]
    if character.origin_label:
        parts.append(f"from {character.origin_label}")
    parts.append(f"used {character.uses}×")
    return " · ".join(parts) + (f"\n  {character.description}" if character.description else "")


@characters_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="1–32 letters, digits, _ or -")],
    image: Annotated[Path, typer.Argument(help="A JPEG, PNG or WebP photo with exactly one face.")],
    server: Server = LOCAL_SERVER,
    description: Annotated[str, typer.Option(help="Words that replace @name in prompts.")] = "",
    weight: Annotated[int, typer.Option(min=0, max=100, help="Default character weight (--cw).")] = 100,
    consent: Annotated[bool, typer.Option(help="You confirm you may use this person's likeness.")] = False,
) -> None:
    """Create a character from one reference photo."""
    photo = _read(image, "a JPEG, PNG or WebP photo")
    character = _with_desk(
        lambda desk, actor: desk.create(
            actor, name, photo, description=description, weight=weight, consent=consent
        ),
        server,
    )
    console.print(f"created {_describe(character)}  (id {character.id})")


@characters_app.command("list")
def list_characters(server: Server = LOCAL_SERVER) -> None:
    """The server's characters, its own and imported ones."""
    characters = _with_desk(lambda desk, actor: desk.list(actor), server)
    if not characters:
        console.print(f"server {server} has no characters yet; create one with `likeness characters create`")
        return
    table = Table(title=f"characters of {server}")
    for column in ("name", "id", "weight", "visibility", "uses", "origin", "description"):
        table.add_column(column)
    for c in characters:
        table.add_row(
            "@" + c.name, c.id, str(c.weight), c.visibility, str(c.uses), c.origin_label, c.description
        )
    console.print(table)


@characters_app.command("show")
def show(
    name: str,
    server: Server = LOCAL_SERVER,
    crop: Annotated[Path | None, typer.Option(help="Also write the face crop (JPEG) here.")] = None,
) -> None:
    """One character, and optionally its face crop."""
    character, face = _with_desk(lambda desk, actor: desk.show(actor, name), server)
    console.print(f"{_describe(character)}\n  id {character.id}, owner {character.owner_id}")
    if crop is not None:
        write_file(crop, face)
        console.print(f"face crop: {crop}")


@characters_app.command("rename")
def rename(name: str, new_name: str, server: Server = LOCAL_SERVER) -> None:
    """Give a character a new name."""
    character = _with_desk(lambda desk, actor: desk.rename(actor, name, new_name), server)
    console.print(f"renamed @{name} to @{character.name}")


@characters_app.command("replace")
def replace(
    name: str,
    image: Annotated[Path, typer.Argument(help="The new photo (JPEG, PNG or WebP, one face).")],
    server: Server = LOCAL_SERVER,
) -> None:
    """Give a character a new reference photo."""
    photo = _read(image, "a JPEG, PNG or WebP photo")
    character = _with_desk(lambda desk, actor: desk.replace_photo(actor, name, photo), server)
    console.print(f"@{character.name} has a new reference photo")


@characters_app.command("delete")
def delete(name: str, server: Server = LOCAL_SERVER) -> None:
    """Delete a character and the photos nothing else uses."""
    _with_desk(lambda desk, actor: desk.delete(actor, name), server)
    console.print(f"deleted @{name}")


@characters_app.command("share")
def share(
    name: str,
    server: Server = LOCAL_SERVER,
    withdraw: Annotated[bool, typer.Option("--unshare", help="Withdraw it from the catalog.")] = False,
) -> None:
    """Publish a character to the community catalog (or withdraw it; imported copies stay)."""
    character = _with_desk(lambda desk, actor: desk.share(actor, name, shared=not withdraw), server)
    state = "withdrawn from" if withdraw else "published to"
    console.print(f"@{character.name} {state} the community catalog; its code is {character.id}")


@characters_app.command("browse")
def browse(
    query: Annotated[str, typer.Argument(help="Words to look for in names and descriptions.")] = "",
) -> None:
    """The community catalog: characters other servers have shared."""
    found = _with_desk(lambda desk, actor: desk.browse(query), LOCAL_SERVER)
    if not found:
        console.print("no shared characters match" + (f" {query!r}" if query else ""))
        return
    for character in found:
        console.print(
            f"{character.id}  {_describe(character)}  (from {character.platform} {character.server_id})"
        )


@characters_app.command("import")
def import_character(
    source: Annotated[str, typer.Argument(help="A shared character's code (c_…) or a card PNG file.")],
    server: Server = LOCAL_SERVER,
    name: Annotated[str | None, typer.Option(help="A different name here.")] = None,
) -> None:
    """Import a shared character by its code, or a character card from any deployment."""
    path = Path(source)
    if path.suffix.lower() == ".png" or path.is_file():
        card = _read(path, "a character card (PNG)")
        character = _with_desk(lambda desk, actor: desk.import_card(actor, card, name), server)
    else:
        character = _with_desk(lambda desk, actor: desk.import_shared(actor, source, name), server)
    console.print(f"imported {_describe(character)}")


@characters_app.command("export")
def export(name: str, out: Path, server: Server = LOCAL_SERVER) -> None:
    """Write a character's portable card (PNG) to OUT."""
    card = _with_desk(lambda desk, actor: desk.export_card(actor, name), server)
    write_file(out, card)
    console.print(f"wrote the card of @{name} to {out}")
