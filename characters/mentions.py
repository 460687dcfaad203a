"""`@name` mentions in prompts: find them, resolve them to a server's characters, rewrite the prompt.

Pure functions, no I/O: the caller passes the characters the server can use (its own and imported
copies). The rewritten prompt never contains `@name`: the text encoder would read it as noise (or as
a social-media handle). Each mention becomes the character's description, or a neutral subject word
when it has none; the likeness itself comes from the reference image, not from the words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from characters.store import Character, CharacterError, character_not_found

MAX_CHARACTERS_PER_PROMPT = 2
NEUTRAL_SUBJECT = "a person"

# Not preceded by a word character, so `mara@example.com` is an email, not a mention; nor by `@`
# (`@@mara`) or `<` (`<@123>` is how Discord and Slack encode user mentions). Not followed by a
# name character either: `@` plus 33 name characters is no character's name, not a truncated one.
MENTION = re.compile(r"(?<![\w@<])@([A-Za-z0-9_-]{1,32})(?![A-Za-z0-9_-])")


@dataclass(frozen=True)
class Resolved:
    prompt: str  # the prompt with every mention replaced, whitespace normalized
    characters: tuple[Character, ...]  # in order of first mention, each once


def find_mentions(text: str) -> list[str]:
    """The mentioned names in order of first appearance, deduplicated case-insensitively."""
    seen: dict[str, str] = {}
    for match in MENTION.finditer(text):
        seen.setdefault(match.group(1).lower(), match.group(1))
    return list(seen.values())


def resolve_mentions(text: str, available: Sequence[Character]) -> Resolved:
    """Resolve each `@name` against `available` (case-insensitively) and rewrite the prompt.

    Raises CharacterError when the prompt names more than MAX_CHARACTERS_PER_PROMPT characters, and
    CharacterNotFound (with the closest names) for a name that is not among `available`.
    """
    names = find_mentions(text)
    if len(names) > MAX_CHARACTERS_PER_PROMPT:
        found = ", ".join(f"@{name}" for name in names)
        raise CharacterError(
            f"a prompt can use at most {MAX_CHARACTERS_PER_PROMPT} characters; found {found}. "
            "Remove some and try again"
        )
    by_name: dict[str, Character] = {}
    for character in available:
        by_name.setdefault(character.name.lower(), character)
    characters: list[Character] = []
    for name in names:
        known_character = by_name.get(name.lower())
        if known_character is None:
            raise character_not_found(name, (known.name for known in available))
        characters.append(known_character)

    def substitute(match: re.Match[str]) -> str:
        description = by_name[match.group(1).lower()].description
        return description or NEUTRAL_SUBJECT

    # One pass: a substituted description is never scanned again for mentions.
    prompt = " ".join(MENTION.sub(substitute, text).split())
    return Resolved(prompt=prompt, characters=tuple(characters))
