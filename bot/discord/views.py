"""The buttons under Discord results. Their whole state is the custom id, so they work on old messages
and after a restart.

A custom id reads `likeness:ACTION:GENERATION_ID:INDEX`: the action, the generation it acts on and the
variation (1–4; 0 where the button is about the whole grid). Nothing in it is secret or trusted: every
click is checked again by the Studio (the generation must belong to the clicker's server).

Save as character (`likeness:save:GENERATION_ID:INDEX`) answers with a form (a modal) whose custom id,
`likeness:save-form:GENERATION_ID:INDEX`, carries the same two; its submission is matched by that id in
LikenessBot.on_interaction (discord.py keeps modals in memory only), so it too survives restarts.

Cancel (`likeness:cancel:GENERATION_ID:0`) sits under the private /queue list, one per request still waiting;
it too is checked again by the Studio (the clicker's server, the requester or a manager, still queued).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Protocol, cast

import discord

from bot.buttons import BUTTON_ID, SINGLE_IMAGE_BUTTONS, STARTS_FROM, Action, button_id

CUSTOM_ID = BUTTON_ID  # a Discord button's custom_id


SAVE_ID = re.compile(r"likeness:save:(?P<generation>g_[0-9a-z]{12}):(?P<index>[0-9])")
CANCEL_ID = re.compile(r"likeness:cancel:(?P<generation>g_[0-9a-z]{12}):0")
SAVE_FORM_ID = re.compile(r"likeness:save-form:(?P<generation>g_[0-9a-z]{12}):(?P<index>[0-9])")
NAME_FIELD, DESCRIPTION_FIELD = "name", "description"  # the custom ids of the form's text inputs
MAX_NAME, MAX_DESCRIPTION = 33, 300  # as /character create takes them (a name may start with @)


class ButtonHandler(Protocol):
    """The client that runs a click (bot.discord.bot.LikenessBot)."""

    async def on_button(
        self, interaction: discord.Interaction[Any], action: Action, generation_id: str, index: int
    ) -> None: ...


class ResultButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    """One result button; rebuilt from its custom id on every click."""

    def __init__(
        self,
        action: Action,
        generation_id: str,
        index: int,
        *,
        label: str,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, style=style, custom_id=button_id(action, generation_id, index)
        )
        super().__init__(button, row=row)
        self.action = action
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ResultButton:
        button = cast("discord.ui.Button[Any]", item)
        return cls(
            cast(Action, match["action"]),
            match["generation"],
            int(match["index"]),
            label=button.label or "",
            style=button.style,
        )

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler = cast(ButtonHandler, interaction.client)
        await handler.on_button(interaction, self.action, self.generation_id, self.index)


class SaveHandler(Protocol):
    """The client that answers Save as character (bot.discord.bot.LikenessBot)."""

    async def on_save(
        self, interaction: discord.Interaction[Any], generation_id: str, index: int
    ) -> None: ...


class SaveButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=SAVE_ID):
    """Save as character under one image; rebuilt from its custom id on every click."""

    def __init__(
        self, generation_id: str, index: int, *, row: int | None = None, label: str = "Save as character"
    ) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, custom_id=f"likeness:save:{generation_id}:{index}"
        )
        super().__init__(button, row=row)
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> SaveButton:
        return cls(match["generation"], int(match["index"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler = cast(SaveHandler, interaction.client)
        await handler.on_save(interaction, self.generation_id, self.index)


class CancelHandler(Protocol):
    """The client that cancels a waiting request (bot.discord.bot.LikenessBot)."""

    async def on_cancel(self, interaction: discord.Interaction[Any], generation_id: str) -> None: ...


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CANCEL_ID):
    """Cancel one waiting request, under the /queue list; rebuilt from its custom id on every click."""

    def __init__(self, generation_id: str, *, row: int | None = None) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=f"Cancel {generation_id}",
            style=discord.ButtonStyle.danger,
            custom_id=f"likeness:cancel:{generation_id}:0",
        )
        super().__init__(button, row=row)
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> CancelButton:
        return cls(match["generation"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler = cast(CancelHandler, interaction.client)
        await handler.on_cancel(interaction, self.generation_id)


MAX_BUTTONS = 25  # five rows of five: the most one message carries


def cancel_view(generation_ids: Iterable[str]) -> discord.ui.View | None:
    """A Cancel button for each of these requests (the first 25); None for none."""
    view = discord.ui.View(timeout=None)
    for generation_id in list(generation_ids)[:MAX_BUTTONS]:
        view.add_item(CancelButton(generation_id))
    return view if view.children else None


def save_form(generation_id: str, index: int) -> discord.ui.Modal:
    """The form Save as character opens: the character's name and an optional description."""
    form = discord.ui.Modal(
        title="Save as character", custom_id=f"likeness:save-form:{generation_id}:{index}", timeout=None
    )
    name: discord.ui.TextInput[Any] = discord.ui.TextInput(
        custom_id=NAME_FIELD, min_length=1, max_length=MAX_NAME, placeholder="mara"
    )
    description: discord.ui.TextInput[Any] = discord.ui.TextInput(
        custom_id=DESCRIPTION_FIELD,
        required=False,
        max_length=MAX_DESCRIPTION,
        placeholder="a woman in her 30s with red hair",
    )
    form.add_item(discord.ui.Label(text="Name", description="Used as @name in prompts.", component=name))
    form.add_item(
        discord.ui.Label(
            text="Description (optional)",
            description="Words added to prompts that use it.",
            component=description,
        )
    )
    # Not kept in memory: the submission is answered by its custom id (LikenessBot.on_interaction).
    form.stop()
    return form


def form_values(components: Any) -> dict[str, str]:
    """The text inputs' values of a submitted form, by custom id, however they are nested (labels, rows)."""
    values: dict[str, str] = {}
    if isinstance(components, dict):
        if isinstance(components.get("custom_id"), str) and isinstance(components.get("value"), str):
            values[components["custom_id"]] = components["value"]
        for key in ("component", "components"):
            values.update(form_values(components.get(key)))
    elif isinstance(components, list):
        for component in components:
            values.update(form_values(component))
    return values


def grid_view(generation_id: str, indexes: Iterable[int]) -> discord.ui.View:
    """Under a grid: U k and V k for each variation, then Reroll and Animate, then Save as character."""
    view = discord.ui.View(timeout=None)
    indexes = list(indexes)
    for k in indexes:
        view.add_item(ResultButton("select", generation_id, k, label=f"U{k}", row=0))
    view.add_item(ResultButton("reroll", generation_id, 0, label="Reroll 🔄", row=0))
    for k in indexes:
        view.add_item(ResultButton("vary", generation_id, k, label=f"V{k}", row=1))
    view.add_item(ResultButton("animate", generation_id, 0, label="Animate", row=1))
    view.add_item(SaveButton(generation_id, 0, row=2))
    return view


def save_chooser_view(generation_id: str, indexes: Iterable[int]) -> discord.ui.View:
    """Save as character under a grid: which variation? One button per variation."""
    view = discord.ui.View(timeout=None)
    for k in indexes:
        view.add_item(SaveButton(generation_id, k, label=f"Save {k}"))
    return view


def single_view(generation_id: str, index: int, kind: str) -> discord.ui.View | None:
    """Under one image: the buttons that may start from a generation of this kind, and Save as character
    (none for a video)."""
    view = discord.ui.View(timeout=None)
    for action, label, needs in SINGLE_IMAGE_BUTTONS:
        if kind in STARTS_FROM[needs]:
            view.add_item(ResultButton(action, generation_id, index, label=label))
    if kind in STARTS_FROM["select"]:
        view.add_item(SaveButton(generation_id, index))
    return view if view.children else None


def chooser_view(generation_id: str, indexes: Iterable[int], action: Action = "animate") -> discord.ui.View:
    """Which variation? One button per variation (e.g. Animate on a grid)."""
    view = discord.ui.View(timeout=None)
    for k in indexes:
        label = f"{action.capitalize()} {k}"
        view.add_item(ResultButton(action, generation_id, k, label=label, style=discord.ButtonStyle.primary))
    return view


def variations_on(message: discord.Message | None, generation_id: str) -> list[int]:
    """The variation numbers a grid message offers (its U buttons)."""
    found: set[int] = set()
    for row in message.components if message else []:
        for component in getattr(row, "children", []):
            match = CUSTOM_ID.fullmatch(getattr(component, "custom_id", None) or "")
            if match and match["action"] == "select" and match["generation"] == generation_id:
                found.add(int(match["index"]))
    return sorted(found)
