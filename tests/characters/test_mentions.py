"""`@name` mentions: finding them, resolving them, and rewriting the prompt the encoder sees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from characters.mentions import (
    MAX_CHARACTERS_PER_PROMPT,
    MENTION,
    Resolved,
    find_mentions,
    resolve_mentions,
)
from characters.store import Character, CharacterError, CharacterNotFound


def character(name: str, description: str = "") -> Character:
    return Character(
        id=f"c_{name.lower():0<12}"[:14],
        platform="discord",
        server_id="100",
        name=name,
        owner_id="u1",
        created_at=0.0,
        description=description,
        weight=100,
        reference_sha="r",
        crop_sha="c",
        consent=True,
        visibility="private",
        origin_id=None,
        origin_label="",
        uses=0,
    )


MARA = character("mara", "a woman with red curly hair")
ZED = character("Zed")
ANN = character("ann", "an old sailor")


def test_find_mentions_in_order_deduplicated() -> None:
    assert find_mentions("@mara and @Zed, then @MARA again") == ["mara", "Zed"]
    assert find_mentions("no mentions here") == []
    assert find_mentions("(@mara) @zed's hat; @ann.") == ["mara", "zed", "ann"]
    assert find_mentions("@mara-smith @mara_2") == ["mara-smith", "mara_2"]


@pytest.mark.parametrize(
    "text",
    [
        "write to mara@example.com",
        "x@mara",
        "<@123456789> says hi",  # a platform user mention, not a character
        "@@mara",
        "@" + "a" * 33,  # longer than any name can be
        "just an @ sign",
    ],
)
def test_not_mentions(text: str) -> None:
    assert find_mentions(text) == []


def test_resolve_substitutes_descriptions_and_a_neutral_subject() -> None:
    resolved = resolve_mentions("portrait of  @Mara\nwith @zed in the rain", [MARA, ZED, ANN])
    assert resolved == Resolved(
        prompt="portrait of a woman with red curly hair with a person in the rain",
        characters=(MARA, ZED),
    )
    assert "@" not in resolved.prompt


def test_resolve_repeated_mention_is_one_character() -> None:
    resolved = resolve_mentions("@mara smiling, @MARA frowning", [MARA])
    assert resolved.characters == (MARA,)
    assert resolved.prompt == "a woman with red curly hair smiling, a woman with red curly hair frowning"


def test_resolve_without_mentions_only_normalizes_whitespace() -> None:
    assert resolve_mentions("  a  cat\tin a hat ", []) == Resolved(prompt="a cat in a hat", characters=())


def test_resolve_leaves_emails_alone() -> None:
    assert resolve_mentions("mail mara@example.com", [MARA]).prompt == "mail mara@example.com"


def test_unknown_mention_suggests_the_closest_name() -> None:
    with pytest.raises(CharacterNotFound, match=r"no character @mra here — did you mean @mara\?"):
        resolve_mentions("@mra at the beach", [MARA, ZED])


def test_unknown_mention_without_characters_says_how_to_create() -> None:
    with pytest.raises(
        CharacterNotFound, match="this server has no characters yet; create one with /character create"
    ):
        resolve_mentions("@mara at the beach", [])


def test_too_many_characters() -> None:
    assert MAX_CHARACTERS_PER_PROMPT == 2
    with pytest.raises(
        CharacterError, match="a prompt can use at most 2 characters; found @mara, @zed, @ann"
    ):
        resolve_mentions("@mara @zed @ann at dinner", [MARA, ZED, ANN])


def test_a_description_is_not_rescanned() -> None:
    # The store refuses `@` in descriptions; even so, substitution is a single pass.
    tricky = character("tricky", "friend of @mara")
    resolved = resolve_mentions("@tricky", [tricky, MARA])
    assert resolved.characters == (tricky,)


names = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(name=names, prefix=st.text(max_size=20), suffix=st.text(max_size=20))
def test_resolved_prompts_never_contain_a_known_mention(name: str, prefix: str, suffix: str) -> None:
    known = character(name, "")
    text = f"{prefix} @{name} {suffix}"
    try:
        resolved = resolve_mentions(text, [known])
    except CharacterError:
        return  # the random prefix/suffix mentioned something else: refused, never passed through
    assert known in resolved.characters
    assert not any(match.group(1).lower() == name.lower() for match in MENTION.finditer(resolved.prompt))
