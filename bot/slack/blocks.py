"""The buttons under Slack results (Block Kit) and the words of Slack messages. No network here.

A button's `action_id` and `value` both read `likeness:ACTION:GENERATION_ID:INDEX`: the action, the
generation it acts on and the variation (1–4; 0 where the button is about the whole grid). Nothing in it
is secret or trusted: every click is checked again by the Studio (the generation must belong to the
clicker's workspace).

Besides the result buttons: Save as character (`likeness:save:GENERATION_ID:INDEX`, which opens a form),
Cancel under /queue (`likeness:cancel:GENERATION_ID:0`) and the /forget-me confirmation
(`likeness:forget-me:confirm`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bot.buttons import BUTTON_ID, SINGLE_IMAGE_BUTTONS, STARTS_FROM, Action, button_id
from bot.studio import Finished, Submission

ACTION_ID = BUTTON_ID  # a Slack button's action_id (and value)
SAVE_ID = re.compile(r"likeness:save:(?P<generation>g_[0-9a-z]{12}):(?P<index>[0-9])")
CANCEL_ID = re.compile(r"likeness:cancel:(?P<generation>g_[0-9a-z]{12}):0")
FORGET_ME_ID = "likeness:forget-me:confirm"
MESSAGE_LIMIT = 4000  # characters of a message's text (Slack truncates longer ones)
MAX_BUTTONS = 25  # elements of one actions block
Block = dict[str, Any]


def button(action: Action, generation_id: str, index: int, label: str, *, primary: bool = False) -> Block:
    return _button(button_id(action, generation_id, index), label, "primary" if primary else "")


def _button(action_id: str, label: str, style: str = "") -> Block:
    made: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "action_id": action_id,
        "value": action_id,
    }
    if style:
        made["style"] = style
    return made


def save_button(generation_id: str, index: int, label: str = "Save as character") -> Block:
    return _button(f"likeness:save:{generation_id}:{index}", label)


def _actions(generation_id: str, row: str, elements: list[Block]) -> Block:
    return {"type": "actions", "block_id": f"likeness:{row}:{generation_id}", "elements": elements}


def grid_blocks(generation_id: str, indexes: Iterable[int]) -> list[Block]:
    """Under a grid: U k and Reroll in one row; V k, Animate and Save as character in the next."""
    indexes = list(indexes)
    upper = [button("select", generation_id, k, f"U{k}") for k in indexes]
    upper.append(button("reroll", generation_id, 0, "Reroll 🔄"))
    lower = [button("vary", generation_id, k, f"V{k}") for k in indexes]
    lower.append(button("animate", generation_id, 0, "Animate"))
    lower.append(save_button(generation_id, 0))
    return [_actions(generation_id, "u", upper), _actions(generation_id, "v", lower)]


def single_blocks(generation_id: str, index: int, kind: str) -> list[Block]:
    """Under one image: the buttons that may start from a generation of this kind, and Save as character
    (none for a video)."""
    elements = [
        button(action, generation_id, index, label)
        for action, label, needs in SINGLE_IMAGE_BUTTONS
        if kind in STARTS_FROM[needs]
    ]
    if kind in STARTS_FROM["select"]:
        elements.append(save_button(generation_id, index))
    return [_actions(generation_id, f"one{index}", elements)] if elements else []


def chooser_blocks(generation_id: str, indexes: Iterable[int], action: Action = "animate") -> list[Block]:
    """Which variation? One button per variation (e.g. Animate on a grid)."""
    elements = [button(action, generation_id, k, f"{action.capitalize()} {k}", primary=True) for k in indexes]
    return [_actions(generation_id, f"choose-{action}", elements)]


def save_chooser_blocks(generation_id: str, indexes: Iterable[int]) -> list[Block]:
    """Save as character under a grid: which variation? One button per variation."""
    elements = [save_button(generation_id, k, f"Save {k}") for k in indexes]
    return [_actions(generation_id, "choose-save", elements)]


def cancel_blocks(generation_ids: Iterable[str]) -> list[Block]:
    """A Cancel button for each of these requests (the first 25); none for none."""
    elements = [_button(f"likeness:cancel:{g}:0", f"Cancel {g}", "danger") for g in generation_ids]
    if not elements:
        return []
    return [{"type": "actions", "block_id": "likeness:queue", "elements": elements[:MAX_BUTTONS]}]


def forget_me_blocks(text: str) -> list[Block]:
    """The question /forget-me asks, with the one button that goes ahead."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "block_id": "likeness:forget-me",
            "elements": [_button(FORGET_ME_ID, "Forget me", "danger")],
        },
    ]


def action_ids(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        str(element.get("action_id", ""))
        for block in blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


def variations_on(blocks: Sequence[Mapping[str, Any]], generation_id: str) -> list[int]:
    """The variation numbers a grid message offers (its U buttons)."""
    found = set()
    for name in action_ids(blocks):
        match = ACTION_ID.fullmatch(name)
        if match and match["action"] == "select" and match["generation"] == generation_id:
            found.add(int(match["index"]))
    return sorted(found)


def escape(text: str) -> str:
    """Text shown as is in Slack's mrkdwn: the three characters Slack reads as markup escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_text(submission: Submission, progress: str) -> str:
    lines = [f"`{submission.generation_id}` · {submission.profile}: {progress}"]
    lines += [f"> {escape(notice)}" for notice in submission.notices]
    return fit("\n".join(lines))


def result_text(user_id: str, finished: Finished) -> str:
    """The requester, the caption (prompt, seed, engine and why), the generation id, then the notices."""
    tail = "\n".join(
        [f"`{finished.generation_id}`"] + [f"> note: {escape(notice)}" for notice in finished.notices]
    )
    head = f"<@{user_id}> {escape(finished.caption)}"
    return fit(head, max(40, MESSAGE_LIMIT - len(tail) - 1)) + "\n" + tail
