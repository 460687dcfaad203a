"""The forms (Slack modals) Likeness opens, and reading what comes back from them. No network here.

A form is opened with the trigger id of a slash command or a click (valid for 3 seconds) and answered by
a `view_submission` that carries the values and the form's `private_metadata`. Slack signs the
submission, but the metadata is whatever Likeness put there, round-tripped through the user's client:
it is read strictly and everything it names is checked again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import UserError
from bot.slack.blocks import Block
from characters.store import MAX_DESCRIPTION_CHARS, NAME

CREATE_FORM = "likeness:character-create"  # the callback_id of /character create's form
SAVE_FORM = "likeness:character-save"  # the callback_id of Save as character's form
NAME_BLOCK, DESCRIPTION_BLOCK, PHOTO_BLOCK, CONSENT_BLOCK = "name", "description", "photo", "consent"
PHOTO_TYPES = ("jpg", "jpeg", "png", "webp")
_CHANNEL = re.compile(r"[CDG][A-Z0-9]{2,30}")
_GENERATION = re.compile(r"g_[0-9a-z]{12}")


class FormRefused(UserError):
    """A form came back with metadata Likeness did not write."""


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _name_block(name: str) -> Block:
    element: Block = {"type": "plain_text_input", "action_id": NAME_BLOCK, "max_length": 33}
    if name:
        element["initial_value"] = name[:33]
    return {
        "type": "input",
        "block_id": NAME_BLOCK,
        "label": _text("Name"),
        "hint": _text("1–32 letters, digits, _ or -; write it as @name in /portrait prompts."),
        "element": element,
    }


def _description_block(description: str) -> Block:
    element: Block = {
        "type": "plain_text_input",
        "action_id": DESCRIPTION_BLOCK,
        "multiline": True,
        "max_length": MAX_DESCRIPTION_CHARS,
        "placeholder": _text("a woman in her 30s with red hair"),
    }
    if description:
        element["initial_value"] = description[:MAX_DESCRIPTION_CHARS]
    return {
        "type": "input",
        "block_id": DESCRIPTION_BLOCK,
        "optional": True,
        "label": _text("Description"),
        "hint": _text("Words that take the place of @name in prompts."),
        "element": element,
    }


def create_form(name: str, description: str, channel: str) -> Block:
    """/character create: name, description, one photo and the consent box."""
    return {
        "type": "modal",
        "callback_id": CREATE_FORM,
        "title": _text("New character"),
        "submit": _text("Create"),
        "close": _text("Cancel"),
        "private_metadata": json.dumps({"channel": channel}),
        "blocks": [
            _name_block(name),
            _description_block(description),
            {
                "type": "input",
                "block_id": PHOTO_BLOCK,
                "label": _text("Photo"),
                "hint": _text("A JPEG, PNG or WebP photo, at most 10 MB, showing one front-facing face."),
                "element": {
                    "type": "file_input",
                    "action_id": PHOTO_BLOCK,
                    "filetypes": list(PHOTO_TYPES),
                    "max_files": 1,
                },
            },
            {
                "type": "input",
                "block_id": CONSENT_BLOCK,
                "label": _text("Consent"),
                "element": {
                    "type": "checkboxes",
                    "action_id": CONSENT_BLOCK,
                    "options": [
                        {"text": _text("I may use this person's likeness"), "value": "consent"},
                    ],
                },
            },
        ],
    }


def save_form(generation_id: str, index: int, channel: str) -> Block:
    """Save as character: the character's name and an optional description."""
    return {
        "type": "modal",
        "callback_id": SAVE_FORM,
        "title": _text("Save as character"),
        "submit": _text("Save"),
        "close": _text("Cancel"),
        "private_metadata": json.dumps({"channel": channel, "generation": generation_id, "index": index}),
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"Variation {index} of `{generation_id}` as a character."},
            },
            _name_block(""),
            _description_block(""),
        ],
    }


@dataclass(frozen=True)
class Submitted:
    """What a form's submission says, read defensively."""

    values: Mapping[str, Any]
    metadata: Mapping[str, Any]

    @classmethod
    def of(cls, view: Mapping[str, Any]) -> Submitted:
        state = view.get("state") or {}
        values = state.get("values") if isinstance(state, Mapping) else None
        try:
            metadata = json.loads(str(view.get("private_metadata") or "{}"))
        except ValueError:
            metadata = {}
        return cls(
            values if isinstance(values, Mapping) else {}, metadata if isinstance(metadata, dict) else {}
        )

    def _element(self, block: str) -> Mapping[str, Any]:
        actions = self.values.get(block)
        found = actions.get(block) if isinstance(actions, Mapping) else None
        return found if isinstance(found, Mapping) else {}

    def text(self, block: str) -> str:
        value = self._element(block).get("value")
        return value if isinstance(value, str) else ""

    def files(self, block: str) -> list[Mapping[str, Any]]:
        files = self._element(block).get("files")
        return [f for f in files if isinstance(f, Mapping)] if isinstance(files, list) else []

    def ticked(self, block: str) -> bool:
        selected = self._element(block).get("selected_options")
        return isinstance(selected, list) and bool(selected)

    def channel(self) -> str:
        """The channel the form was opened from, where its answer goes; "" if the metadata is not ours."""
        channel = self.metadata.get("channel")
        return channel if isinstance(channel, str) and _CHANNEL.fullmatch(channel) else ""

    def variation(self) -> tuple[str, int]:
        """Save as character: which generation and variation the form was opened for."""
        generation, index = self.metadata.get("generation"), self.metadata.get("index")
        if (
            not isinstance(generation, str)
            or not _GENERATION.fullmatch(generation)
            or not isinstance(index, int)
            or isinstance(index, bool)
            or not 1 <= index <= 9
        ):
            raise FormRefused(
                "this form does not say which image to save; press Save as character under the image again"
            )
        return generation, index


def name_error(name: str) -> str | None:
    """What is wrong with a character's name as typed in a form, in words for the form; None if fine."""
    cleaned = name.strip().removeprefix("@")
    if NAME.fullmatch(cleaned):
        return None
    return "Use 1–32 letters, digits, _ or - (no spaces), e.g. mara or old_tom."
