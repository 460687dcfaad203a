"""`/character` as one line of text: each subcommand's words, the mistakes users make, and that no text
whatever raises anything but a UserError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.character_commands import (
    VERBS,
    BadCharacterCommand,
    CharacterCommand,
    character_text,
    help_text,
    parse_character_command,
)
from bot.errors import UserError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", CharacterCommand("help")),
        ("help", CharacterCommand("help")),
        ("list", CharacterCommand("list")),
        ("  LIST  ", CharacterCommand("list")),
        ("create mara", CharacterCommand("create", name="mara")),
        (
            "create @mara a woman   in her 30s",
            CharacterCommand("create", name="mara", description="a woman in her 30s"),
        ),
        (
            "create mara a woman --consent in her 30s",
            CharacterCommand("create", name="mara", description="a woman in her 30s", consent=True),
        ),
        ("create\tmara\na woman", CharacterCommand("create", name="mara", description="a woman")),
        ("show @mara", CharacterCommand("show", name="mara")),
        ("rename mara maya", CharacterCommand("rename", name="mara", new_name="maya")),
        ("delete mara", CharacterCommand("delete", name="mara")),
        ("share mara", CharacterCommand("share", name="mara")),
        ("share mara withdraw", CharacterCommand("share", name="mara", withdraw=True)),
        ("browse", CharacterCommand("browse")),
        ("browse red  hair", CharacterCommand("browse", query="red hair")),
        ("import c_3k9x2c7q1m4z", CharacterCommand("import", code="c_3k9x2c7q1m4z")),
        ("import C_3K9X2C7Q1M4Z maya", CharacterCommand("import", code="c_3k9x2c7q1m4z", name="maya")),
        ("import", CharacterCommand("import")),
        ("import maya", CharacterCommand("import", name="maya")),
        ("export mara", CharacterCommand("export", name="mara")),
    ],
)
def test_each_subcommand_reads_its_words(text: str, expected: CharacterCommand) -> None:
    assert parse_character_command(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("creat mara", ["'creat' is not a /character subcommand", "create, list, show",
                        "Did you mean `/character create`?"]),
        ("frobnicate", ["'frobnicate' is not a /character subcommand", "/character help"]),
        ("create", ["needs the character's name first", "/character create mara a woman in her 30s"]),
        ("rename mara", ["rename takes two names", "`/character rename NAME NEW_NAME`"]),
        ("show", ["show takes one name", "`/character show NAME`"]),
        ("delete mara maya", ["delete takes one name"]),
        ("list everything", ["list takes no other words"]),
        ("share mara now", ["`withdraw` to take it back"]),
        ("import mara maya", ["'mara' is not a character code", "/character browse"]),
        ("import c_1 maya extra", ["import takes a code and an optional name"]),
        ("create " + "x" * 1600, ["the limit is 1500"]),
    ],
)  # fmt: skip
def test_mistakes_are_named_with_the_fix(text: str, says: list[str]) -> None:
    with pytest.raises(BadCharacterCommand) as refused:
        parse_character_command(text)
    for words in says:
        assert words in str(refused.value)


def test_messages_use_the_command_as_the_user_typed_it() -> None:
    with pytest.raises(BadCharacterCommand, match="`@likeness character rename NAME NEW_NAME`"):
        parse_character_command("rename mara", "@likeness character")
    assert "`@likeness character share NAME [withdraw]`" in help_text("@likeness character")


def test_help_names_every_subcommand() -> None:
    text = help_text()
    for verb in VERBS:
        assert f"`/character {verb}" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("character create mara --consent", "create mara --consent"),
        ("Character LIST", "LIST"),
        ("character", ""),
        ("character study of an old sailor --ar 2:3", None),
        ("a character in a rain-soaked alley", None),
        ("characters list", None),
        ("", None),
    ],
)
def test_a_message_is_a_character_command_only_when_it_names_a_subcommand(
    text: str, expected: str | None
) -> None:
    assert character_text(text) == expected


@settings(max_examples=400, deadline=None)
@given(
    st.text(max_size=200)
    | st.lists(st.sampled_from([*VERBS, "withdraw", "--consent", "@m", "c_", " ", "\n"])).map(" ".join)
)
def test_any_text_is_read_or_refused_with_a_user_error(text: str) -> None:
    said = ""
    try:
        command = parse_character_command(text)
    except UserError as exc:
        said = str(exc)
        assert said, "a refusal says why"
    else:
        assert command.verb in VERBS
    character_text(text)
