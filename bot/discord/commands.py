"""The Discord commands besides /portrait: `/character …`, `/settings`, `/queue`, `/route`, and the
autocompletes.

Each command is one call to a platform-free piece (CharacterDesk, ServerSettingsStore, the ledger) on behalf
of an Actor: the guild, the user, and whether they may manage the guild (Discord's Manage Server
permission). Answers are private (ephemeral): acknowledged at once, then one follow-up.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any, Protocol, cast

import discord
from discord import app_commands

from bot.attachments import fetch_attachment
from bot.character_desk import Actor, CharacterDesk, CharacterRefused
from bot.commands import MAX_PROMPT_CHARS
from bot.data_rights import forget_user
from bot.discord.replies import APOLOGY, MISSING, fit
from bot.discord.views import cancel_view
from bot.errors import NotAManager, UserError
from bot.open_requests import queue_answer
from bot.server_settings import (
    SETTING_NAMES,
    BadSetting,
    ServerSettingsStore,
    setting_value,
    settings_text,
)
from bot.studio import Studio, plan_portrait
from characters.reference import MAX_BYTES
from characters.store import Character
from jobs.spec import new_id

log = logging.getLogger(__name__)

PLATFORM = "discord"
MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices
CHOICE_NAME = 100  # characters in a choice's label
CARD_MAX_BYTES = 10 * 1024 * 1024


class CommandHost(Protocol):
    """What the commands need of the client (bot.discord.bot.LikenessBot)."""

    studio: Studio
    attachment_hosts: frozenset[str]
    allow_http_attachments: bool


def host_of(interaction: discord.Interaction[Any]) -> CommandHost:
    return cast(CommandHost, interaction.client)


def actor_of(interaction: discord.Interaction[Any]) -> Actor:
    if interaction.guild_id is None:
        raise UserError("Likeness works in servers, not in direct messages: use this command in a server.")
    return Actor(
        platform=PLATFORM,
        server_id=str(interaction.guild_id),
        user_id=str(interaction.user.id),
        is_manager=interaction.permissions.manage_guild,
    )


def desk_of(interaction: discord.Interaction[Any]) -> CharacterDesk:
    desk = host_of(interaction).studio.characters
    if desk is None:
        raise UserError("characters are not set up on this Likeness")
    return desk


def settings_store_of(interaction: discord.Interaction[Any]) -> ServerSettingsStore:
    store = host_of(interaction).studio.server_settings
    if store is None:
        raise UserError("server settings are not set up on this Likeness")
    return store


async def may_create(interaction: discord.Interaction[Any], actor: Actor) -> None:
    """Refuse unless the server's `character_creators` lets this member create characters."""
    store = host_of(interaction).studio.server_settings
    if store is not None:
        await store.check_may_create(
            actor.platform,
            actor.server_id,
            is_manager=actor.is_manager,
            place="server",
            managers="Manage Server",
        )


class Private:
    """A private answer: "thinking…" at once (only the user sees it), then the answer in its place."""

    def __init__(self, interaction: discord.Interaction[Any]) -> None:
        self.interaction = interaction

    async def defer(self) -> None:
        if not self.interaction.response.is_done():
            await self.interaction.response.defer(ephemeral=True, thinking=True)

    async def send(
        self, text: str, file: tuple[str, bytes] | None = None, view: discord.ui.View | None = None
    ) -> None:
        attached = discord.File(io.BytesIO(file[1]), filename=file[0]) if file else MISSING
        buttons = view if view is not None else MISSING
        text = fit(text)
        mentions = discord.AllowedMentions.none()
        if self.interaction.response.is_done():
            await self.interaction.followup.send(
                text, ephemeral=True, file=attached, view=buttons, allowed_mentions=mentions, wait=True
            )
        else:
            await self.interaction.response.send_message(
                text, ephemeral=True, file=attached, view=buttons, allowed_mentions=mentions
            )


@asynccontextmanager
async def answering(interaction: discord.Interaction[Any]) -> AsyncIterator[Private]:
    """Acknowledge at once; a UserError is answered in its own words, anything else with an error id."""
    private = Private(interaction)
    try:
        await private.defer()
        yield private
    except UserError as exc:
        await _say(private, str(exc))
    except Exception:
        error_id = new_id("e")
        log.exception("interaction %s failed (error id %s)", interaction.id, error_id)
        await _say(private, APOLOGY.format(error_id=error_id))


async def _say(private: Private, text: str) -> None:
    try:
        await private.send(text)
    except discord.HTTPException:
        log.warning("could not tell user %s: %s", private.interaction.user.id, text, exc_info=True)


def _line(character: Character, *, code: bool = False) -> str:
    parts = [f"**@{discord.utils.escape_markdown(character.name)}**"]
    if character.description:
        parts.append(discord.utils.escape_markdown(character.description))
    if code:
        parts.append(f"code `{character.id}`")
    elif character.visibility == "shared":
        parts.append(f"shared as `{character.id}`")
    if character.origin_label:
        parts.append(f"from {discord.utils.escape_markdown(character.origin_label)}")
    return " · ".join(parts)


def _card_name(name: str) -> str:
    return f"{name}.likeness.png"


async def _fetch(
    interaction: discord.Interaction[Any], attachment: discord.Attachment, max_bytes: int
) -> bytes:
    host = host_of(interaction)
    return await fetch_attachment(
        attachment.url,
        allowed_hosts=host.attachment_hosts,
        max_bytes=max_bytes,
        declared_size=attachment.size,
        allow_http=host.allow_http_attachments,
    )


# --- autocomplete ----------------------------------------------------------------------------------------


def _matching(current: str, names: Collection[tuple[str, str]]) -> list[app_commands.Choice[str]]:
    """Choices whose value starts with, then contains, what was typed (case-insensitive)."""
    typed = current.strip().lstrip("@").casefold()
    starts = [(v, label) for v, label in names if v.casefold().startswith(typed)]
    within = [(v, label) for v, label in names if typed in v.casefold() and (v, label) not in starts]
    return [
        app_commands.Choice(name=fit(label, CHOICE_NAME), value=value)
        for value, label in (starts + within)[:MAX_CHOICES]
    ]


async def character_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """This server's characters, and only this server's."""
    desk = host_of(interaction).studio.characters
    if desk is None or interaction.guild_id is None:
        return []
    characters = await desk.list(actor_of(interaction))
    labels = [(c.name, f"@{c.name} — {c.description}" if c.description else f"@{c.name}") for c in characters]
    return _matching(current, labels)


async def engine_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """The catalog's portrait engines (txt2img profiles)."""
    profiles = host_of(interaction).studio.catalog.of_kind("txt2img")
    labels = [(p.name, f"{p.name} — {p.description}" if p.description else p.name) for p in profiles]
    return _matching(current, labels)


# --- /character ------------------------------------------------------------------------------------------

character_group = app_commands.Group(
    name="character", description="This server's characters: named faces for /portrait.", guild_only=True
)


@character_group.command(name="create", description="A character from one photo with exactly one face.")
@app_commands.describe(
    name="1–32 letters, digits, _ or -; used as @name in prompts.",
    image="A JPEG, PNG or WebP photo, at most 10 MB, showing one front-facing face.",
    description="Words added to prompts that use it (e.g. 'a woman in her 30s with red hair').",
    consent="I confirm I may use this person's likeness.",
)
async def character_create(
    interaction: discord.Interaction[Any],
    name: app_commands.Range[str, 1, 33],
    image: discord.Attachment,
    description: app_commands.Range[str, 0, 300] | None = None,
    consent: bool = False,
) -> None:
    async with answering(interaction) as answer:
        actor = actor_of(interaction)
        desk = desk_of(interaction)
        await may_create(interaction, actor)
        if not consent:
            raise CharacterRefused(
                "confirm that you may use this person's likeness: run the command again with consent: True"
            )
        photo = await _fetch(interaction, image, MAX_BYTES)
        character = await desk.create(actor, name, photo, description=description or "", consent=True)
        _, crop = await desk.show(actor, character.name)
        await answer.send(
            f"{_line(character)} is ready: write `@{character.name}` in a /portrait prompt, or pick it "
            "in the command's character option.",
            (f"{character.name}.jpg", crop),
        )


@character_group.command(name="list", description="This server's characters.")
async def character_list(interaction: discord.Interaction[Any]) -> None:
    async with answering(interaction) as answer:
        characters = await desk_of(interaction).list(actor_of(interaction))
        if not characters:
            await answer.send("This server has no characters yet: make one with /character create.")
            return
        await answer.send(f"{len(characters)} character(s):\n" + "\n".join(_line(c) for c in characters))


@character_group.command(name="show", description="A character's face crop and details.")
@app_commands.describe(name="The character.")
@app_commands.autocomplete(name=character_choices)
async def character_show(interaction: discord.Interaction[Any], name: str) -> None:
    async with answering(interaction) as answer:
        character, crop = await desk_of(interaction).show(actor_of(interaction), name)
        details = [
            _line(character),
            f"owner <@{character.owner_id}> · weight {character.weight} · used {character.uses} time(s)",
        ]
        await answer.send("\n".join(details), (f"{character.name}.jpg", crop))


@character_group.command(name="rename", description="Rename a character (its owner or a manager).")
@app_commands.describe(name="The character.", new_name="Its new name.")
@app_commands.autocomplete(name=character_choices)
async def character_rename(interaction: discord.Interaction[Any], name: str, new_name: str) -> None:
    async with answering(interaction) as answer:
        character = await desk_of(interaction).rename(actor_of(interaction), name, new_name)
        await answer.send(f"Renamed: it is now `@{character.name}`.")


@character_group.command(name="delete", description="Delete a character (its owner or a manager).")
@app_commands.describe(name="The character.")
@app_commands.autocomplete(name=character_choices)
async def character_delete(interaction: discord.Interaction[Any], name: str) -> None:
    async with answering(interaction) as answer:
        await desk_of(interaction).delete(actor_of(interaction), name)
        await answer.send(f"Deleted `@{name.strip().lstrip('@')}` and its photos (unless another uses them).")


@character_group.command(
    name="share", description="Publish a character to the community catalog, or withdraw it."
)
@app_commands.describe(name="The character.", withdraw="Withdraw it instead (copies already made stay).")
@app_commands.autocomplete(name=character_choices)
async def character_share(interaction: discord.Interaction[Any], name: str, withdraw: bool = False) -> None:
    async with answering(interaction) as answer:
        character = await desk_of(interaction).share(actor_of(interaction), name, not withdraw)
        if withdraw:
            await answer.send(f"`@{character.name}` is private again; copies already imported stay.")
        else:
            await answer.send(
                f"`@{character.name}` is in the community catalog: any server imports it with "
                f"/character import code:{character.id}"
            )


@character_group.command(name="browse", description="The community catalog of shared characters.")
@app_commands.describe(query="Words in the name or description.")
async def character_browse(interaction: discord.Interaction[Any], query: str | None = None) -> None:
    async with answering(interaction) as answer:
        actor_of(interaction)
        found = await desk_of(interaction).browse(query or "")
        if not found:
            await answer.send("No shared character matches." if query else "No character is shared yet.")
            return
        lines = [_line(c, code=True) for c in found[:MAX_CHOICES]]
        more = (
            f"\n…and {len(found) - MAX_CHOICES} more: narrow the query." if len(found) > MAX_CHOICES else ""
        )
        await answer.send(
            "Import one with /character import code:…\n" + "\n".join(lines) + more,
        )


@character_group.command(name="import", description="A character from the catalog (its code) or from a card.")
@app_commands.describe(
    code="The code of a shared character (c_…), from /character browse.",
    card="A character card (PNG), from /character export or `likeness characters export`.",
    name="Another name for it here.",
)
async def character_import(
    interaction: discord.Interaction[Any],
    code: str | None = None,
    card: discord.Attachment | None = None,
    name: str | None = None,
) -> None:
    async with answering(interaction) as answer:
        actor = actor_of(interaction)
        desk = desk_of(interaction)
        if (code is None) == (card is None):
            raise CharacterRefused("give either a code (c_…) or a card (a PNG), not both and not neither")
        if card is not None:
            character = await desk.import_card(actor, await _fetch(interaction, card, CARD_MAX_BYTES), name)
        else:
            assert code is not None
            character = await desk.import_shared(actor, code, name)
        await answer.send(f"Imported {_line(character)}: write `@{character.name}` in a /portrait prompt.")


@character_group.command(name="export", description="A portable character card (PNG) to take elsewhere.")
@app_commands.describe(name="The character.")
@app_commands.autocomplete(name=character_choices)
async def character_export(interaction: discord.Interaction[Any], name: str) -> None:
    async with answering(interaction) as answer:
        actor = actor_of(interaction)
        desk = desk_of(interaction)
        character, _ = await desk.show(actor, name)
        card = await desk.export_card(actor, character.name)
        await answer.send(
            f"The card of `@{character.name}`: import it on any Likeness with /character import card:…",
            (_card_name(character.name), card),
        )


# --- /settings -------------------------------------------------------------------------------------------


@app_commands.command(name="settings", description="Show this server's Likeness settings, or change one.")
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@app_commands.describe(setting="The setting to change.", value="Its new value (0 = no limit; on/off).")
@app_commands.choices(setting=[app_commands.Choice(name=name, value=name) for name in SETTING_NAMES])
async def settings_command(
    interaction: discord.Interaction[Any],
    setting: app_commands.Choice[str] | None = None,
    value: app_commands.Range[str, 1, 20] | None = None,
) -> None:
    async with answering(interaction) as answer:
        actor = actor_of(interaction)
        if not actor.is_manager:
            raise NotAManager(
                "only this server's managers (Manage Server) see and change its Likeness settings"
            )
        store = settings_store_of(interaction)
        if setting is None and value is None:
            current = await store.get(actor.platform, actor.server_id)
            await answer.send(settings_text(current, "This server's settings:"))
            return
        if setting is None or value is None:
            raise BadSetting("give both a setting and its value, or neither to see them all")
        changed = await store.update(
            actor.platform, actor.server_id, **{setting.value: setting_value(setting.value, value)}
        )
        log.info("server %s: %s set %s to %r", actor.server_id, actor.user_id, setting.value, value)
        await answer.send(settings_text(changed, f"Changed `{setting.value}`. This server's settings:"))


# --- /queue ----------------------------------------------------------------------------------------------


@app_commands.command(name="queue", description="Your requests in this server that are not done yet.")
@app_commands.guild_only()
async def queue_command(interaction: discord.Interaction[Any]) -> None:
    async with answering(interaction) as answer:
        said = await queue_answer(host_of(interaction).studio, actor_of(interaction), time.time(), "server")
        await answer.send(said.text, view=cancel_view(said.cancellable))


# --- /route ----------------------------------------------------------------------------------------------


def route_text(text: str, studio: Studio) -> str:
    """Where a /portrait text would go and why (as `likeness route` prints it); raises UserError."""
    _, chosen = plan_portrait(text, studio.catalog)
    params = chosen.params
    size = f"{params.width}×{params.height}"
    lines = [
        f"**{chosen.profile.name}** · {size}, {params.steps} steps, cfg {params.cfg:g}",
        *(f"· {discord.utils.escape_markdown(reason)}" for reason in chosen.reasons),
        "-# Nothing was generated: use /portrait with the same text to make it.",
    ]
    return "\n".join(lines)


@app_commands.command(
    name="route", description="Where a /portrait prompt would go, and why; nothing is made."
)
@app_commands.guild_only()
@app_commands.describe(prompt="The /portrait text, --flags included (e.g. a fisherman --ar 2:3).")
async def route_command(
    interaction: discord.Interaction[Any], prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS]
) -> None:
    async with answering(interaction) as answer:
        actor_of(interaction)
        await answer.send(route_text(prompt, host_of(interaction).studio))


# --- /forget-me ------------------------------------------------------------------------------------------


@app_commands.command(
    name="forget-me",
    description="Remove your characters and generations (files included) from this Likeness, everywhere.",
)
@app_commands.describe(confirm="Yes, remove everything of mine. This cannot be undone.")
async def forget_me_command(interaction: discord.Interaction[Any], confirm: bool = False) -> None:
    async with answering(interaction) as answer:
        if not confirm:
            raise UserError(
                "this removes every character and generation of yours on this Likeness, in every server, "
                "for good: run /forget-me again with confirm: True"
            )
        studio = host_of(interaction).studio
        forgotten = await forget_user(
            studio.ledger, studio.generations_dir, studio.characters, PLATFORM, str(interaction.user.id)
        )
        log.info("forgot user %s: %s", interaction.user.id, forgotten)
        await answer.send(forgotten.text())


COMMANDS: tuple[app_commands.Command[Any, Any, Any] | app_commands.Group, ...] = (
    character_group,
    settings_command,
    queue_command,
    route_command,
    forget_me_command,
)
