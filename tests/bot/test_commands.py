"""`/portrait` parsing: flags, quoting, mentions, and the messages users see for bad input."""

from __future__ import annotations

import dataclasses
import random
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import MAX_PROMPT_CHARS, MAX_VARIATIONS, PortraitRequest, parse_portrait
from bot.errors import BadFlag, BadPrompt, UserError
from router.sizes import ASPECT_RATIOS

# --- happy paths -----------------------------------------------------------------------------------------


def test_the_readme_example() -> None:
    request = parse_portrait("editorial portrait of a fisherman, weathered skin --ar 2:3 --seed 7")
    assert request == PortraitRequest(
        subject="editorial portrait of a fisherman, weathered skin",
        aspect="2:3",
        aspect_given=True,
        seed=7,
    )
    assert request.prompt == "editorial portrait of a fisherman, weathered skin"


def test_defaults() -> None:
    request = parse_portrait("a fisherman")
    assert request.aspect == "1:1"
    assert not request.aspect_given
    assert request.seed is None
    assert request.count == MAX_VARIATIONS == 4
    assert request.steps is None
    assert request.cfg is None
    assert request.engine is None
    assert not request.fast
    assert request.negative == ""
    assert request.mentions == ()


def test_request_is_frozen() -> None:
    request = parse_portrait("a fisherman")
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.subject = "someone else"  # type: ignore[misc]


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_every_aspect_ratio(ratio: str) -> None:
    request = parse_portrait(f"a fisherman --ar {ratio}")
    assert (request.aspect, request.aspect_given) == (ratio, True)


def test_aspect_alias_and_explicit_square() -> None:
    assert parse_portrait("a fisherman --aspect 16:9").aspect == "16:9"
    request = parse_portrait("a fisherman --ar 1:1")
    assert (request.aspect, request.aspect_given) == ("1:1", True)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("x --seed 0", "seed", 0),
        ("x --seed 4294967295", "seed", 2**32 - 1),
        ("x --seed 007", "seed", 7),
        ("x --n 1", "count", 1),
        ("x --n 4", "count", 4),
        ("x --steps 1", "steps", 1),
        ("x --steps 150", "steps", 150),
        ("x --cfg 0", "cfg", 0.0),
        ("x --cfg 6.5", "cfg", 6.5),
        ("x --cfg .5", "cfg", 0.5),
        ("x --cfg 30", "cfg", 30.0),
        ("x --engine photoreal-xl", "engine", "photoreal-xl"),
        ("x --engine SDXL_base.v1", "engine", "sdxl_base.v1"),
        ("x --fast", "fast", True),
        ("x --no blurry, text, watermark", "negative", "blurry, text, watermark"),
        ("x --clothing charcoal wool coat", "clothing", "charcoal wool coat"),
        ("x --environment rain-soaked neon alley", "environment", "rain-soaked neon alley"),
        ("x --lighting soft window light", "lighting", "soft window light"),
        ("x --camera 85mm, f/1.8", "camera", "85mm, f/1.8"),
        ("x --skin visible pores, light freckles", "skin", "visible pores, light freckles"),
    ],
)
def test_each_flag(text: str, field: str, value: object) -> None:
    request = parse_portrait(text)
    assert getattr(request, field) == value
    assert request.subject == "x"


def test_all_flags_together_in_any_order() -> None:
    request = parse_portrait(
        "@mara laughing --skin freckles --n 2 --lighting golden hour --ar 4:5 --camera 50mm "
        "--no blur --environment a pier --seed 12 --clothing yellow raincoat --steps 40 --cfg 5 "
        "--engine sdxl-base --fast"
    )
    assert request == PortraitRequest(
        subject="@mara laughing",
        clothing="yellow raincoat",
        environment="a pier",
        lighting="golden hour",
        camera="50mm",
        skin="freckles",
        negative="blur",
        aspect="4:5",
        aspect_given=True,
        seed=12,
        count=2,
        steps=40,
        cfg=5.0,
        engine="sdxl-base",
        fast=True,
        mentions=("mara",),
    )
    # The framework order, not the order the flags were typed in; the negative is not in the prompt.
    assert request.prompt == "@mara laughing, yellow raincoat, a pier, golden hour, 50mm, freckles"


def test_prompt_skips_empty_parts() -> None:
    assert parse_portrait("--lighting rim light --clothing a coat").prompt == "a coat, rim light"
    assert parse_portrait("a fisherman --camera 35mm").prompt == "a fisherman, 35mm"


def test_subject_may_be_empty_when_a_framework_field_describes_the_portrait() -> None:
    request = parse_portrait("--clothing a red scarf --ar 2:3")
    assert request.subject == ""
    assert request.prompt == "a red scarf"


def test_whitespace_is_normalized() -> None:
    request = parse_portrait("  a   fisherman\n\tat dawn   --lighting   low \n sun  ")
    assert request.subject == "a fisherman at dawn"
    assert request.lighting == "low sun"


def test_commas_before_a_flag_do_not_double_up() -> None:
    request = parse_portrait("a fisherman, --lighting dawn, --camera 35mm")
    assert request.prompt == "a fisherman, dawn, 35mm"


@pytest.mark.parametrize(
    "quoted",
    [
        '"soft window light"',
        "'soft window light'",
        "“soft window light”",
        "‘soft window light’",
        "«soft window light»",
        "„soft window light“",
    ],
)
def test_quoted_values(quoted: str) -> None:
    request = parse_portrait(f"a fisherman --lighting {quoted} --ar 2:3")
    assert request.lighting == "soft window light"
    assert request.aspect == "2:3"


def test_a_quoted_value_may_contain_flags_and_apostrophes() -> None:
    request = parse_portrait("a fisherman --no \"text --watermark\" --clothing 'his father's coat'")
    assert request.negative == "text --watermark"
    assert request.clothing == "his father's coat"


def test_text_after_a_closing_quote_is_free_text_again() -> None:
    request = parse_portrait('--lighting "rim light" portrait of a fisherman --seed "7"')
    assert request.lighting == "rim light"
    assert request.subject == "portrait of a fisherman"
    assert request.seed == 7


def test_an_unclosed_quote_is_taken_literally() -> None:
    assert parse_portrait("x --clothing '90s denim jacket").clothing == "'90s denim jacket"


@pytest.mark.parametrize("dash", ["--", "—"])
@pytest.mark.parametrize("name", ["ar", "AR", "Ar", "aSpEcT"])
def test_flag_names_are_case_insensitive_and_em_dash_works(dash: str, name: str) -> None:
    request = parse_portrait(f"a fisherman {dash}{name} 2:3 {dash}SEED 5")
    assert (request.aspect, request.seed) == ("2:3", 5)


def test_an_em_dash_before_an_unknown_word_is_punctuation() -> None:
    assert parse_portrait("a fisherman —weathered and old").subject == "a fisherman —weathered and old"


@pytest.mark.parametrize("text", ["well--known fisherman", "a -- b", "a --- b", "x --42", "x (--ar 2:3)"])
def test_dashes_without_a_flag_name_stay_free_text(text: str) -> None:
    request = parse_portrait(text)
    assert request.subject == text
    assert not request.aspect_given


def test_mentions_in_order_deduplicated_case_insensitively() -> None:
    request = parse_portrait(
        "@Mara and @bob_2 with @mara, @BOB_2 and @zoë-k --clothing @kit's coat --no @ghost"
    )
    assert request.mentions == ("Mara", "bob_2", "zoë-k", "kit")
    assert request.subject.startswith("@Mara and @bob_2")


def test_emails_and_lone_at_signs_are_not_mentions() -> None:
    assert parse_portrait("mara@example.com @ @@x at 5pm").mentions == ()


def test_a_leading_slash_command_is_dropped() -> None:
    assert parse_portrait("/portrait @mara in a neon alley").subject == "@mara in a neon alley"


def test_control_characters_are_stripped() -> None:
    request = parse_portrait("a\x00 fish\u200berman\u202e\x1b --lighting dim\x07\u2028light")
    assert request.subject == "a fisherman"
    assert request.lighting == "dim light"


def test_the_limit_is_exact() -> None:
    text = "x" * MAX_PROMPT_CHARS
    assert parse_portrait(text).subject == text
    # Stripped characters and extra whitespace do not count.
    assert parse_portrait("  " + text + "\x00\u200b \n").subject == text


# --- errors: each names the flag, the value and what is allowed ---------------------------------------


def _error(text: str, kind: type[UserError] = BadFlag) -> str:
    with pytest.raises(kind) as caught:
        parse_portrait(text)
    return str(caught.value)


def test_unsupported_aspect_ratio() -> None:
    assert _error("x --ar 7:3") == (
        "--ar 7:3 is not supported; use one of 1:1, 2:3, 3:2, 4:5, 5:4, 9:16, 16:9, 21:9."
    )
    assert _error("x --aspect 4:6").startswith("--aspect 4:6 is not supported; use one of 1:1,")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --n 9", "--n 9 is out of range; use 1 to 4."),
        ("x --n 0", "--n 0 is out of range; use 1 to 4."),
        ("x --seed abc", "--seed needs a whole number from 0 to 4294967295, got 'abc'."),
        ("x --seed -1", "--seed needs a whole number from 0 to 4294967295, got '-1'."),
        ("x --seed 4294967296", "--seed 4294967296 is out of range; use 0 to 4294967295."),
        ("x --steps 0", "--steps 0 is out of range; use 1 to 150."),
        ("x --steps 151", "--steps 151 is out of range; use 1 to 150."),
        ("x --steps 2.5", "--steps needs a whole number from 1 to 150, got '2.5'."),
        ("x --cfg 30.5", "--cfg 30.5 is out of range; use 0 to 30."),
        ("x --cfg nan", "--cfg needs a number from 0 to 30, got 'nan'."),
        ("x --cfg inf", "--cfg needs a number from 0 to 30, got 'inf'."),
        ("x --cfg 1e1", "--cfg needs a number from 0 to 30, got '1e1'."),
        ("x --cfg -1", "--cfg needs a number from 0 to 30, got '-1'."),
    ],
)
def test_numbers_out_of_bounds(text: str, message: str) -> None:
    assert _error(text) == message


def test_huge_numbers_are_out_of_range_not_a_crash() -> None:
    assert "is out of range; use 0 to 4294967295." in _error("x --seed " + "9" * 1400)
    assert "is out of range; use 0 to 30." in _error("x --cfg " + "9" * 1000)


@pytest.mark.parametrize("value", ["../etc", "-x", "x" * 65, "sdxl!", "émile"])
def test_bad_engine_names(value: str) -> None:
    message = _error(f"x --engine {value}")
    assert message.startswith(f"--engine {value[:20]}")
    assert message.endswith(
        "is not a valid engine name; use up to 64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, e.g. --engine photoreal-xl."
    )


def test_unknown_flag_lists_the_known_ones() -> None:
    assert _error("x --foo bar") == (
        "unknown flag --foo; known flags: --ar, --seed, --no, --n, --steps, --cfg, --engine, --cw, --fast, "
        "--clothing, --environment, --lighting, --camera, --skin."
    )


def test_character_weight() -> None:
    assert parse_portrait("@mara at dusk --cw 40").character_weight == 40
    assert parse_portrait("@mara at dusk").character_weight is None
    assert _error("@mara --cw 101") == "--cw 101 is out of range; use 0 to 100."


def test_unknown_flag_suggests_a_close_one() -> None:
    assert _error("x --seeds 4").startswith("unknown flag --seeds (did you mean --seed?); known flags: --ar,")
    assert _error("x --lightning dim").startswith("unknown flag --lightning (did you mean --lighting?)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --seed 1 --seed 2", "--seed was given twice; give it once."),
        ("x --SEED 1 —seed 2", "--seed was given twice; give it once."),
        ("x --ar 2:3 --aspect 1:1", "--aspect was given twice (also as --ar); give it once."),
        ("x --fast --fast", "--fast was given twice; give it once."),
        ("x --no a --no b", "--no was given twice; give it once."),
    ],
)
def test_repeated_flags(text: str, message: str) -> None:
    assert _error(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --ar", "--ar needs a value, e.g. --ar 2:3."),
        ("x --seed --ar 2:3", "--seed needs a value, e.g. --seed 7."),
        ("x --n", "--n needs a value, e.g. --n 2."),
        ("x --cfg", "--cfg needs a value, e.g. --cfg 6.5."),
        ("x --engine", "--engine needs a value, e.g. --engine photoreal-xl."),
        ("x --no", "--no needs a value, e.g. --no blurry, text."),
        ('x --lighting ""', '--lighting needs a value, e.g. --lighting "soft window light".'),
        ("x --clothing ,", "--clothing needs a value, e.g. --clothing charcoal wool coat."),
    ],
)
def test_missing_values(text: str, message: str) -> None:
    assert _error(text) == message


def test_fast_takes_no_value() -> None:
    message = _error("x --fast please --ar 2:3")
    assert message.startswith("--fast takes no value, got 'please'")


def test_a_one_word_flag_followed_by_more_words() -> None:
    message = _error("--ar 2:3 a fisherman")
    assert message.startswith("--ar takes one value, got '2:3 a fisherman'; put the description before")


@pytest.mark.parametrize(
    "text", ["", "   ", "\x00\u200b", "--ar 2:3 --seed 7", "/portrait", "--no hats", ", ;"]
)
def test_empty_prompt(text: str) -> None:
    assert _error(text, BadPrompt) == (
        "the prompt is empty; describe the portrait, e.g. "
        "/portrait editorial portrait of a fisherman --ar 2:3"
    )


def test_too_long() -> None:
    assert _error("x" * 1734, BadPrompt) == "the prompt is 1,734 characters; the limit is 1,500. Shorten it."
    # The limit covers the whole text, flags included.
    assert "1,501 characters" in _error("x" * 1492 + " --ar 2:3", BadPrompt)


def test_mention_too_long() -> None:
    message = _error("@" + "a" * 33 + " at sea", BadPrompt)
    assert message.startswith("@aaaa")
    assert "1 to 32 letters, digits, _ or -" in message


def test_long_values_are_cut_short_in_messages() -> None:
    message = _error("x --ar " + "9" * 500)
    assert len(message) < 200
    assert "…" in message


def test_all_errors_are_user_errors() -> None:
    assert issubclass(BadFlag, UserError)
    assert issubclass(BadPrompt, UserError)


# --- properties ------------------------------------------------------------------------------------------

_FRAGMENTS = [
    "--ar",
    "—ar",
    "--aspect",
    "--AR",
    "--seed",
    "--no",
    "--n",
    "--steps",
    "--cfg",
    "--engine",
    "--fast",
    "--clothing",
    "--environment",
    "--lighting",
    "--camera",
    "--skin",
    "--foo",
    "--",
    "—",
    "-",
    "---",
    '"',
    "'",
    "“",
    "”",
    "‘",
    "’",
    "«",
    "»",
    "2:3",
    "7:3",
    "1:1",
    ":",
    "0",
    "7",
    "4",
    "150",
    "6.5",
    "-1",
    "4294967296",
    "nan",
    "inf",
    "1e3",
    ".",
    "@mara",
    "@MARA",
    "@",
    "@" + "x" * 40,
    "sdxl",
    "../x",
    "a fisherman",
    ",",
    "/portrait",
    "\x00",
    "\u200b",
    "\u202e",
    "\t",
    "\n",
    " ",
    "\u00a0",
    "e\u0301",
]

_BROAD_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)
_FLAG_HEAVY = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=6)), max_size=25).flatmap(
    lambda parts: st.sampled_from([" ", "", "  "]).map(lambda sep: sep.join(parts))
)


def _assert_well_formed(request: PortraitRequest) -> None:
    for text in (request.prompt, request.negative, *request.mentions):
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in text)
    assert len(request.prompt) <= MAX_PROMPT_CHARS
    assert request.prompt
    assert request.aspect in ASPECT_RATIOS
    assert 1 <= request.count <= MAX_VARIATIONS
    assert request.seed is None or 0 <= request.seed < 2**32
    assert request.steps is None or 1 <= request.steps <= 150
    assert request.cfg is None or 0 <= request.cfg <= 30
    assert request.engine is None or re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", request.engine)
    assert all(1 <= len(name) <= 32 and "@" not in name for name in request.mentions)
    assert len({name.casefold() for name in request.mentions}) == len(request.mentions)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_BROAD_TEXT, _FLAG_HEAVY))
def test_any_text_parses_or_raises_a_user_error(text: str) -> None:
    try:
        request = parse_portrait(text)
    except UserError as error:
        message = str(error)
    else:
        _assert_well_formed(request)
        return
    assert message


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1400, max_size=1600))
def test_long_text_respects_the_limit(text: str) -> None:
    try:
        request = parse_portrait(text)
    except UserError:
        return
    _assert_well_formed(request)


_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_PHRASE = st.lists(_WORDS, min_size=1, max_size=4).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(
    subject=_PHRASE,
    lighting=st.one_of(st.none(), _PHRASE),
    skin=st.one_of(st.none(), _PHRASE),
    aspect=st.one_of(st.none(), st.sampled_from(ASPECT_RATIOS)),
    seed=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    count=st.one_of(st.none(), st.integers(1, 4)),
    dash=st.sampled_from(["--", "—"]),
    quote=st.sampled_from(["", '"', "“"]),
    shuffle=st.randoms(use_true_random=False),
)
def test_valid_commands_round_trip(
    subject: str,
    lighting: str | None,
    skin: str | None,
    aspect: str | None,
    seed: int | None,
    count: int | None,
    dash: str,
    quote: str,
    shuffle: random.Random,
) -> None:
    closing = {"“": "”"}.get(quote, quote)
    flags = [
        f"{dash}{name} {value}"
        for name, value in [
            ("lighting", None if lighting is None else f"{quote}{lighting}{closing}"),
            ("skin", skin),
            ("ar", aspect),
            ("seed", seed),
            ("n", count),
        ]
        if value is not None
    ]
    shuffle.shuffle(flags)
    request = parse_portrait(" ".join([subject, *flags]))
    assert request.subject == subject
    assert request.lighting == (lighting or "")
    assert request.skin == (skin or "")
    assert (request.aspect, request.aspect_given) == (aspect or "1:1", aspect is not None)
    assert request.seed == seed
    assert request.count == (count or 4)
