"""Characters on Slack: `/character SUBCOMMAND …` (one slash command, text subcommands read by
bot/character_commands.py), `@likeness character …` messages with a photo or a card attached, the
/character create form, and Save as character under results.

Answers are ephemeral (only the member sees them). Files meant for the member alone (a card, a face
crop) go to their direct message with Likeness, since Slack has no ephemeral files. Every form's
submission is checked again as if it were new: its metadata comes back through the member's client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.character_commands import CharacterCommand, help_text, parse_character_command
from bot.character_desk import Actor, CharacterDesk, CharacterRefused, variation_photo
from bot.errors import UserError
from bot.slack.blocks import SAVE_ID, escape, save_chooser_blocks, variations_on
from bot.slack.files import SlackFiles, send_privately
from bot.slack.forms import (
    CONSENT_BLOCK,
    CREATE_FORM,
    DESCRIPTION_BLOCK,
    NAME_BLOCK,
    PHOTO_BLOCK,
    SAVE_FORM,
    Submitted,
    create_form,
    name_error,
    save_form,
)
from bot.slack.members import PLATFORM, Members
from bot.slack.replies import NO_ACK, Reply, click_reply, command_reply, open_form, team_of
from bot.studio import Origin, Studio
from characters.reference import MAX_BYTES
from characters.store import Character

log = logging.getLogger(__name__)

CARD_MAX_BYTES = 10 * 1024 * 1024
MAX_LISTED = 25  # characters listed by /character browse
SLASH = "/character"
MENTION = "@likeness character"
ATTACHING = (
    "\nIn a channel, a photo or a card can also come attached to a message: "
    f"`{MENTION} create NAME [description] --consent` with the photo, or `{MENTION} import [name]` with "
    "the card."
)
Guard = Callable[[Reply], AbstractAsyncContextManager[None]]


def line(character: Character, *, code: bool = False) -> str:
    """One character in mrkdwn: its name, description, and where it is shared or comes from."""
    parts = [f"*@{escape(character.name)}*"]
    if character.description:
        parts.append(escape(character.description))
    if code:
        parts.append(f"code `{character.id}`")
    elif character.visibility == "shared":
        parts.append(f"shared as `{character.id}`")
    if character.origin_label:
        label = escape(character.origin_label)
        parts.append(label if label.startswith("card from") else f"from {label}")
    return " · ".join(parts)


def card_name(name: str) -> str:
    return f"{name}.likeness.png"


class SlackCharacters:
    """`/character`, its form, `@likeness character …` and Save as character, for one Studio."""

    def __init__(self, studio: Studio, members: Members, files: SlackFiles, guarded: Guard) -> None:
        self.studio = studio
        self.members = members
        self.files = files
        self.guarded = guarded

    def register(self, app: AsyncApp) -> None:
        app.command(SLASH)(self.on_command)
        app.view(CREATE_FORM)(self.on_create_form)
        app.action(SAVE_ID)(self.on_save)
        app.view(SAVE_FORM)(self.on_save_form)

    def desk(self) -> CharacterDesk:
        if self.studio.characters is None:
            raise UserError("characters are not set up on this Likeness; ask its operator")
        return self.studio.characters

    # --- /character and @likeness character ---------------------------------------------------------------

    async def on_command(self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        reply = command_reply(client, ack, command)
        async with self.guarded(reply):
            # Parsing is pure: a mistyped subcommand is answered in the acknowledgement.
            parsed = parse_character_command(str(command.get("text") or ""), SLASH)
            trigger = str(command.get("trigger_id") or "")
            await self.run(reply, client, str(command["team_id"]), parsed, trigger_id=trigger)

    async def on_mention(
        self, reply: Reply, client: AsyncWebClient, team: str, text: str, files: Sequence[Mapping[str, Any]]
    ) -> None:
        """`@likeness character …`: the same subcommands; a photo or a card comes attached to the message."""
        parsed = parse_character_command(text, MENTION)
        await self.run(reply, client, team, parsed, files=files)

    async def run(
        self,
        reply: Reply,
        client: AsyncWebClient,
        team: str,
        command: CharacterCommand,
        *,
        trigger_id: str = "",
        files: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """One subcommand. From a slash command (`trigger_id`, which opens forms) or a message (`files`)."""
        await reply.ack()
        said = SLASH if trigger_id else MENTION
        verb = command.verb
        if verb == "help":
            await reply.tell(help_text(said) + ATTACHING)
            return
        desk = self.desk()
        member = await self.members.actor(client, team, reply.user, as_admin=False)
        if verb == "create":
            await self.members.check_may_create(self.studio, client, team, reply.user)
            if trigger_id:
                form = create_form(command.name, command.description, reply.channel)
                await open_form(client, trigger_id, form)
            else:
                await self._create_from_message(reply, client, desk, member, command, files)
        elif verb == "list":
            characters = await desk.list(member)
            if not characters:
                await reply.tell(
                    f"This workspace has no characters yet: make one with `{SLASH} create NAME`."
                )
            else:
                listed = "\n".join(line(c) for c in characters)
                await reply.tell(f"{len(characters)} character(s):\n{listed}")
        elif verb == "show":
            character, crop = await desk.show(member, command.name)
            details = (
                f"{line(character)}\nowner <@{character.owner_id}> · weight {character.weight} · used "
                f"{character.uses} time(s)"
            )
            await send_privately(client, reply.user, details, f"{character.name}.jpg", crop)
            await reply.tell(f"{details}\nIts face crop is in your direct messages with Likeness.")
        elif verb == "rename":
            admin = await self.members.actor(client, team, reply.user)
            renamed = await desk.rename(admin, command.name, command.new_name)
            await reply.tell(f"Renamed: it is now `@{renamed.name}`.")
        elif verb == "delete":
            admin = await self.members.actor(client, team, reply.user)
            await desk.delete(admin, command.name)
            await reply.tell(
                f"Deleted `@{command.name}` and its photos (unless another character uses them)."
            )
        elif verb == "share":
            admin = await self.members.actor(client, team, reply.user)
            shared = await desk.share(admin, command.name, not command.withdraw)
            if command.withdraw:
                await reply.tell(f"`@{shared.name}` is private again; copies already imported stay.")
            else:
                await reply.tell(
                    f"`@{shared.name}` is in the community catalog: any workspace or server imports it with "
                    f"`{SLASH} import {shared.id}`"
                )
        elif verb == "browse":
            await self._browse(reply, desk, command.query)
        elif verb == "import":
            await self._import(reply, client, desk, member, command, files, said)
        else:  # export
            character, _ = await desk.show(member, command.name)
            card = await desk.export_card(member, character.name)
            text = f"The card of `@{character.name}`: import it on any Likeness, on Slack or Discord."
            await send_privately(client, reply.user, text, card_name(character.name), card)
            await reply.tell(
                f"The card of `@{character.name}` is in your direct messages with Likeness "
                "(a PNG: keep it as a file)."
            )

    async def _create_from_message(
        self,
        reply: Reply,
        client: AsyncWebClient,
        desk: CharacterDesk,
        member: Actor,
        command: CharacterCommand,
        files: Sequence[Mapping[str, Any]],
    ) -> None:
        usage = f"`{MENTION} create NAME [description] --consent`"
        if len(files) != 1:
            raise CharacterRefused(
                f"attach one photo (JPEG, PNG or WebP, one face) to the message: {usage}; or use "
                f"`{SLASH} create NAME` for a form"
            )
        if not command.consent:
            raise CharacterRefused(
                f"confirm that you may use this person's likeness: add --consent, as in {usage}"
            )
        photo = await self.files.fetch(client, files[0], MAX_BYTES)
        character = await desk.create(
            member, command.name, photo, description=command.description, consent=True
        )
        await reply.tell(f"{line(character)} is ready: write `@{character.name}` in a /portrait prompt.")

    async def _browse(self, reply: Reply, desk: CharacterDesk, query: str) -> None:
        found = await desk.browse(query)
        if not found:
            await reply.tell("No shared character matches." if query else "No character is shared yet.")
            return
        lines = [line(c, code=True) for c in found[:MAX_LISTED]]
        more = f"\n…and {len(found) - MAX_LISTED} more: narrow the words." if len(found) > MAX_LISTED else ""
        await reply.tell(f"Import one with `{SLASH} import CODE`:\n" + "\n".join(lines) + more)

    async def _import(
        self,
        reply: Reply,
        client: AsyncWebClient,
        desk: CharacterDesk,
        member: Actor,
        command: CharacterCommand,
        files: Sequence[Mapping[str, Any]],
        said: str,
    ) -> None:
        name = command.name or None
        if command.code and files:
            raise CharacterRefused("give either a code (c_…) or a card (a PNG), not both")
        if command.code:
            character = await desk.import_shared(member, command.code, name)
        elif len(files) == 1:
            card = await self.files.fetch(client, files[0], CARD_MAX_BYTES)
            character = await desk.import_card(member, card, name)
        elif files:
            raise CharacterRefused("attach one card (a PNG) to the message, not several")
        else:
            raise CharacterRefused(
                f"give the code of a shared character (`{said} import c_…`, see `{said} browse`), or attach "
                f"a card (PNG) to a message in a channel: `{MENTION} import [name]`"
            )
        await reply.tell(f"Imported {line(character)}: write `@{character.name}` in a /portrait prompt.")

    # --- the /character create form ----------------------------------------------------------------------

    async def on_create_form(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        submitted = Submitted.of(view)
        errors: dict[str, str] = {}
        name = submitted.text(NAME_BLOCK)
        if (wrong := name_error(name)) is not None:
            errors[NAME_BLOCK] = wrong
        photos = submitted.files(PHOTO_BLOCK)
        if len(photos) != 1:
            errors[PHOTO_BLOCK] = "Add one photo: a JPEG, PNG or WebP showing one face."
        if not submitted.ticked(CONSENT_BLOCK):
            errors[CONSENT_BLOCK] = "Tick the box: only people whose likeness you may use become characters."
        if errors:  # shown in the form, beside the fields; the form stays open
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        reply = self._form_reply(client, body, submitted)
        async with self.guarded(reply):
            team = team_of(body)
            await self.members.check_may_create(self.studio, client, team, reply.user)
            desk = self.desk()
            photo = await self.files.fetch(client, photos[0], MAX_BYTES)
            member = await self.members.actor(client, team, reply.user, as_admin=False)
            description = " ".join(submitted.text(DESCRIPTION_BLOCK).split())
            character = await desk.create(
                member, name.strip().removeprefix("@"), photo, description=description, consent=True
            )
            await reply.tell(f"{line(character)} is ready: write `@{character.name}` in a /portrait prompt.")

    def _form_reply(self, client: AsyncWebClient, body: Mapping[str, Any], submitted: Submitted) -> Reply:
        """A form's answer goes to the member in the channel it was opened from (or, failing that, in a
        direct message: the channel comes from the metadata, which the member's client sent back)."""
        return Reply(
            client,
            ack=NO_ACK,
            channel=submitted.channel(),
            user=str(body["user"]["id"]),
            direct_fallback=True,
        )

    # --- Save as character -------------------------------------------------------------------------------

    async def on_save(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        """Save as character: which image (under a grid), then the form asking for a name."""
        reply = click_reply(client, ack, body)
        async with self.guarded(reply):
            await reply.ack()
            match = SAVE_ID.fullmatch(str(action.get("action_id", "")))
            if match is None:
                raise UserError("this button is not one Likeness knows")
            generation_id, index = match["generation"], int(match["index"])
            team = team_of(body)
            if index == 0:  # under a grid: which variation?
                offered = variations_on((body.get("message") or {}).get("blocks") or [], generation_id)
                if len(offered) > 1:
                    await reply.tell(
                        "Which one becomes the character?", save_chooser_blocks(generation_id, offered)
                    )
                    return
                index = offered[0] if offered else 1
            origin = Origin(PLATFORM, team, reply.channel, reply.user)
            await self._savable(client, origin, generation_id, index)
            form = save_form(generation_id, index, reply.channel)
            await open_form(client, str(body.get("trigger_id") or ""), form)

    async def on_save_form(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        """A character from the variation the form was opened for, checked again from scratch."""
        submitted = Submitted.of(view)
        name = submitted.text(NAME_BLOCK)
        if (wrong := name_error(name)) is not None:
            await ack(response_action="errors", errors={NAME_BLOCK: wrong})
            return
        await ack()
        reply = self._form_reply(client, body, submitted)
        async with self.guarded(reply):
            generation_id, index = submitted.variation()
            team = team_of(body)
            origin = Origin(PLATFORM, team, reply.channel, reply.user)
            path = await self._savable(client, origin, generation_id, index)
            photo = await asyncio.to_thread(variation_photo, path)
            member = await self.members.actor(client, team, reply.user, as_admin=False)
            description = " ".join(submitted.text(DESCRIPTION_BLOCK).split())
            # Consent: the image was made here, at this workspace's request.
            character = await self.desk().create(
                member, name.strip().removeprefix("@"), photo, description=description, consent=True
            )
            await reply.tell(
                f"Saved as *@{escape(character.name)}*; use it with `/portrait @{character.name} …`."
            )

    async def _savable(self, client: AsyncWebClient, origin: Origin, generation_id: str, index: int) -> Path:
        """The file of the variation to save, once the member may create characters here and the generation
        is this workspace's."""
        self.desk()
        await self.members.check_may_create(self.studio, client, origin.server_id, origin.user_id)
        return await self.studio.variation(origin, generation_id, index)
