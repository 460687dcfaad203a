"""`/character` as one line of text (`create mara a woman in her 30s`, `rename mara maya`, `share mara
withdraw`…), for chat surfaces whose commands take free text (Slack's slash commands, `@likeness`
mentions). Pure: no I/O; anything it cannot read is a UserError that names the problem and the fix.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal, get_args

from bot.errors import UserError

Verb = Literal["create", "list", "show", "rename", "delete", "share", "browse", "import", "export", "help"]
VERBS: tuple[Verb, ...] = get_args(Verb)
MAX_TEXT_CHARS = 1500
# A shared character's code, as `/character browse` shows it (c_ and 12 letters or digits); any word
# that starts with c_ is taken for one, so a mistyped code is answered as an unknown code.
CODE = re.compile(r"c_\S*", re.IGNORECASE)
CONSENT_FLAGS = ("--consent", "—consent")  # phones type an em dash for --
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# What each subcommand takes, in the words of the help.
USAGE: dict[Verb, str] = {
    "create": "create NAME [description] [--consent]",
    "list": "list",
    "show": "show NAME",
    "rename": "rename NAME NEW_NAME",
    "delete": "delete NAME",
    "share": "share NAME [withdraw]",
    "browse": "browse [words]",
    "import": "import CODE [name]  (or a card PNG attached, with an optional name)",
    "export": "export NAME",
    "help": "help",
}
SAYS: dict[Verb, str] = {
    "create": "a character from one photo with exactly one face",
    "list": "this workspace's characters",
    "show": "a character's details and face crop",
    "rename": "rename a character (its owner or an admin)",
    "delete": "delete a character and its photos (its owner or an admin)",
    "share": "publish a character to the community catalog, or withdraw it",
    "browse": "the community catalog of shared characters",
    "import": "a character from the catalog (by its code c_…) or from a card",
    "export": "a portable card (PNG) to take to another server or platform",
    "help": "this list",
}


class BadCharacterCommand(UserError):
    """A `/character` text that names no subcommand, or gives it the wrong words."""


@dataclass(frozen=True)
class CharacterCommand:
    """One `/character` subcommand and its words; fields a subcommand does not take stay empty."""

    verb: Verb
    name: str = ""  # the character (create, show, rename, delete, share, export; import's new name)
    new_name: str = ""  # rename
    description: str = ""  # create
    code: str = ""  # import from the catalog
    query: str = ""  # browse
    withdraw: bool = False  # share … withdraw
    consent: bool = False  # create … --consent: the creator may use this person's likeness


def help_text(command: str = "/character") -> str:
    """The subcommands, one a line, as `command SUBCOMMAND args — what it does`."""
    lines = [f"`{command} {USAGE[verb]}` — {SAYS[verb]}" for verb in VERBS]
    return "Characters are named faces for prompts (`@name`):\n" + "\n".join(lines)


def _usage(verb: Verb, command: str) -> str:
    return f"`{command} {USAGE[verb]}`"


def _name(word: str) -> str:
    """A name as typed: `@mara` and `mara` are the same character."""
    return word.removeprefix("@")


def parse_character_command(text: str, command: str = "/character") -> CharacterCommand:
    """The subcommand in `text` (what follows `/character`); BadCharacterCommand says what is wrong.

    `command` is how the user typed the command, for the messages (`/character`, `@likeness character`).
    """
    cleaned = _CONTROL.sub(" ", text).strip()
    if len(cleaned) > MAX_TEXT_CHARS:
        raise BadCharacterCommand(
            f"the command is {len(cleaned)} characters long; the limit is {MAX_TEXT_CHARS}. Shorten it."
        )
    if not cleaned:
        return CharacterCommand("help")
    head, rest = [*cleaned.split(maxsplit=1), "", ""][:2]
    typed = head.casefold()
    if typed not in VERBS:
        close = difflib.get_close_matches(typed, VERBS, n=1)
        hint = f" Did you mean `{command} {close[0]}`?" if close else ""
        raise BadCharacterCommand(
            f"{head!r} is not a {command} subcommand; use one of {', '.join(VERBS)}.{hint} "
            f"`{command} help` explains them."
        )
    verb: Verb = typed  # checked against VERBS just above
    rest = rest.strip()
    words = rest.split()

    def exactly(count: int) -> list[str]:
        if len(words) != count:
            raise BadCharacterCommand(f"{command} {verb} takes {_words(count)}: {_usage(verb, command)}")
        return words

    if verb in ("list", "help"):
        exactly(0)
        return CharacterCommand(verb)
    if verb in ("show", "delete", "export"):
        (name,) = exactly(1)
        return CharacterCommand(verb, name=_name(name))
    if verb == "rename":
        name, new_name = exactly(2)
        return CharacterCommand(verb, name=_name(name), new_name=_name(new_name))
    if verb == "share":
        if len(words) == 2 and words[1].casefold() == "withdraw":
            return CharacterCommand(verb, name=_name(words[0]), withdraw=True)
        if len(words) != 1:
            raise BadCharacterCommand(
                f"{command} share takes a character's name, and `withdraw` to take it back: "
                f"{_usage(verb, command)}"
            )
        return CharacterCommand(verb, name=_name(words[0]))
    if verb == "browse":
        return CharacterCommand(verb, query=" ".join(words))
    if verb == "create":
        if not words:
            raise BadCharacterCommand(
                f"{command} create needs the character's name first: {_usage(verb, command)}, "
                f"e.g. `{command} create mara a woman in her 30s`"
            )
        said = words[1:]
        kept = [word for word in said if word.casefold() not in CONSENT_FLAGS]
        return CharacterCommand(
            verb, name=_name(words[0]), description=" ".join(kept), consent=len(kept) < len(said)
        )
    # import: a code and an optional name, or only a name (the card comes attached)
    if len(words) > 2:
        raise BadCharacterCommand(
            f"{command} import takes a code and an optional name: {_usage(verb, command)}"
        )
    if words and CODE.fullmatch(words[0]):
        return CharacterCommand(
            verb, code=words[0].casefold(), name=_name(words[1]) if len(words) == 2 else ""
        )
    if len(words) == 2:
        raise BadCharacterCommand(
            f"{words[0]!r} is not a character code; codes look like c_3k9x2c7q1m4z and are listed by "
            f"`{command} browse`"
        )
    return CharacterCommand(verb, name=_name(words[0]) if words else "")


def character_text(text: str) -> str | None:
    """The `/character` text of a message to the bot that reads `character SUBCOMMAND …` (`character` alone
    asks for the help); None for anything else, which is a portrait prompt ("character study of a
    sailor" stays a portrait)."""
    head, rest = [*text.split(maxsplit=1), "", ""][:2]
    if head.casefold() != "character":
        return None
    if not rest.strip():
        return ""
    return rest if rest.split()[0].casefold() in VERBS else None


def _words(count: int) -> str:
    return {0: "no other words", 1: "one name", 2: "two names"}[count]
