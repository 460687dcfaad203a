"""Parse the text of `/portrait` into a platform-free `PortraitRequest`.

The grammar is Midjourney-style: free text describing the portrait plus `--flag value` pairs.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from bot.errors import BadFlag, BadPrompt
from router.sizes import ASPECT_RATIOS

MAX_PROMPT_CHARS = 1500
MAX_VARIATIONS = 4
MAX_SEED = 2**32 - 1
MAX_STEPS = 150
MAX_CFG = 30.0
MAX_MENTION_CHARS = 32

EMPTY_PROMPT_MESSAGE = (
    "the prompt is empty; describe the portrait, e.g. /portrait editorial portrait of a fisherman --ar 2:3"
)


@dataclass(frozen=True)
class PortraitRequest:
    """What `/portrait` asked for, validated against the global bounds (profiles bound it further)."""

    subject: str
    clothing: str = ""
    environment: str = ""
    lighting: str = ""
    camera: str = ""
    skin: str = ""
    negative: str = ""
    aspect: str = "1:1"
    aspect_given: bool = False
    seed: int | None = None
    count: int = MAX_VARIATIONS
    steps: int | None = None
    cfg: float | None = None
    engine: str | None = None
    character_weight: int | None = None  # --cw 0..100: how strongly @characters keep their face
    fast: bool = False
    mentions: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        """Subject, clothing, environment, lighting, camera and skin: the non-empty ones, joined by ", "."""
        parts = (self.subject, self.clothing, self.environment, self.lighting, self.camera, self.skin)
        return ", ".join(part for part in parts if part)


# Canonical flag names, in the order error messages list them, each with an example value.
_EXAMPLES: dict[str, str] = {
    "ar": "2:3",
    "seed": "7",
    "no": "blurry, text",
    "n": "2",
    "steps": "30",
    "cfg": "6.5",
    "engine": "photoreal-xl",
    "cw": "80",
    "fast": "",
    "clothing": "charcoal wool coat",
    "environment": "rain-soaked neon alley",
    "lighting": '"soft window light"',
    "camera": "85mm lens, shallow depth of field",
    "skin": "visible pores, light freckles",
}
_ALIASES = {"aspect": "ar"}
_FRAMEWORK_FIELDS = ("clothing", "environment", "lighting", "camera", "skin")
_KNOWN_FLAGS = ", ".join("--" + name for name in _EXAMPLES)

# `--` or the em-dash that phone keyboards turn it into, at the start or after a space, then a letter.
_FLAG = re.compile(r"(?<![^ ])(--|—)([A-Za-z]\S*)")
_PREFIX = re.compile(r"/portrait(?: |$)", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@([\w-]+)")
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# Same rule as catalog profile names (router/catalog.py), checked here so the message names the flag.
_ENGINE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

# An opening quote and the quotes that may close it; chat apps swap in typographic quotes freely.
_DOUBLE = '"“”„‟'
_SINGLE = "'‘’‚‛"
_CLOSERS: dict[str, str] = {
    **dict.fromkeys(_DOUBLE, _DOUBLE),
    **dict.fromkeys(_SINGLE, _SINGLE),
    "«": "»",
    "»": "«",
}


class _Given(NamedTuple):
    name: str  # canonical, e.g. "ar"
    typed: str  # as the user wrote it, for messages: "--aspect", "--ar" (also for "—AR")
    raw: str


def parse_portrait(text: str) -> PortraitRequest:
    """Parse the text after `/portrait` (a leading `/portrait` itself is dropped).

    Control and format characters are stripped, whitespace runs become one space, and the text is
    NFC-normalized; the `MAX_PROMPT_CHARS` limit then applies to that whole text, flags included.
    Raises `BadFlag` for a bad flag and `BadPrompt` for bad prompt text, with a message for the user.
    """
    s = _clean(text)
    if prefix := _PREFIX.match(s):
        s = s[prefix.end() :]
    if len(s) > MAX_PROMPT_CHARS:
        raise BadPrompt(
            f"the prompt is {len(s):,} characters; the limit is {MAX_PROMPT_CHARS:,}. Shorten it."
        )

    free: list[str] = []
    described: list[str] = []  # free text and framework values in text order, searched for @mentions
    given: dict[str, _Given] = {}
    pos = 0
    while (match := _next_flag(s, pos)) is not None:
        free.append(s[pos : match.start()])
        described.append(free[-1])
        typed = "--" + match.group(2).lower()
        name = _canonical(match.group(2))
        if name is None:
            raise BadFlag(_unknown_flag_message(match.group(2)))
        if name in given:
            first = given[name].typed
            also = f" (also as {first})" if first != typed else ""
            raise BadFlag(f"{typed} was given twice{also}; give it once.")
        raw, pos = _read_value(s, match.end(), typed, fast=name == "fast")
        given[name] = _Given(name, typed, raw)
        if name in _FRAMEWORK_FIELDS:
            described.append(raw)
    free.append(s[pos:])
    described.append(free[-1])

    request = PortraitRequest(
        subject=_tidy(" ".join(free)),
        clothing=_text(given.get("clothing")),
        environment=_text(given.get("environment")),
        lighting=_text(given.get("lighting")),
        camera=_text(given.get("camera")),
        skin=_text(given.get("skin")),
        negative=_text(given.get("no")),
        aspect=_aspect(given["ar"]) if "ar" in given else "1:1",
        aspect_given="ar" in given,
        seed=_whole(given["seed"], 0, MAX_SEED) if "seed" in given else None,
        count=_whole(given["n"], 1, MAX_VARIATIONS) if "n" in given else MAX_VARIATIONS,
        steps=_whole(given["steps"], 1, MAX_STEPS) if "steps" in given else None,
        cfg=_decimal(given["cfg"], 0.0, MAX_CFG) if "cfg" in given else None,
        engine=_engine(given["engine"]) if "engine" in given else None,
        character_weight=_whole(given["cw"], 0, 100) if "cw" in given else None,
        fast="fast" in given,
        mentions=_mentions(described),
    )
    if not request.prompt:
        raise BadPrompt(EMPTY_PROMPT_MESSAGE)
    return request


def _clean(text: str) -> str:
    kept: list[str] = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        # Cs: lone surrogates cannot be encoded as UTF-8 further down the line.
        elif unicodedata.category(char) not in ("Cc", "Cf", "Cs"):
            kept.append(char)
    # NFC before measuring: it may lengthen a few characters, and nothing after it does.
    return " ".join(unicodedata.normalize("NFC", "".join(kept)).split())


def _canonical(name: str) -> str | None:
    lowered = name.lower()
    lowered = _ALIASES.get(lowered, lowered)
    return lowered if lowered in _EXAMPLES else None


def _next_flag(s: str, start: int) -> re.Match[str] | None:
    for match in _FLAG.finditer(s, start):
        # An em-dash is also ordinary punctuation ("a fisherman —weathered"), so it starts only known flags.
        if match.group(1) == "--" or _canonical(match.group(2)) is not None:
            return match
    return None


def _read_value(s: str, start: int, typed: str, *, fast: bool) -> tuple[str, int]:
    """The raw value of the flag whose name ends at `start`, and where parsing resumes."""
    if fast:
        end = _flag_start_or_end(s, start)
        extra = s[start:end].strip()
        if extra:
            raise BadFlag(
                f"{typed} takes no value, got {_show(extra)!r}; put the description before the flags, "
                "e.g. /portrait a fisherman in the rain --fast"
            )
        return "", end
    body = start + 1  # the name is followed by one space or the end
    if body < len(s) and s[body] in _CLOSERS:
        close = _closing_quote(s, body + 1, _CLOSERS[s[body]])
        # Text after the closing quote is free text again; with no closing quote the opening one is
        # taken literally ("--clothing '90s denim"), as an unquoted value.
        if close is not None:
            return s[body + 1 : close], close + 1
    end = _flag_start_or_end(s, start)
    return s[start:end], end


def _flag_start_or_end(s: str, start: int) -> int:
    match = _next_flag(s, start)
    return match.start() if match is not None else len(s)


def _closing_quote(s: str, start: int, closers: str) -> int | None:
    for index in range(start, len(s)):
        if s[index] in closers and (index + 1 == len(s) or s[index + 1] == " "):
            return index
    return None


def _tidy(value: str) -> str:
    # Trailing commas are common before a flag ("a fisherman, --ar 2:3") and would double up in the prompt.
    return " ".join(value.split()).strip(" ,;")


def _text(flag: _Given | None) -> str:
    if flag is None:
        return ""
    value = _tidy(flag.raw)
    if not value:
        raise _missing(flag)
    return value


def _scalar(flag: _Given) -> str:
    value = flag.raw.strip()
    if not value:
        raise _missing(flag)
    if " " in value:
        raise BadFlag(
            f"{flag.typed} takes one value, got {_show(value)!r}; put the description before the flags, "
            "e.g. /portrait a fisherman --ar 2:3 --seed 7"
        )
    return value


def _missing(flag: _Given) -> BadFlag:
    return BadFlag(f"{flag.typed} needs a value, e.g. {flag.typed} {_EXAMPLES[flag.name]}.")


def _aspect(flag: _Given) -> str:
    value = _scalar(flag)
    if value not in ASPECT_RATIOS:
        raise BadFlag(f"{flag.typed} {_show(value)} is not supported; use one of {', '.join(ASPECT_RATIOS)}.")
    return value


def _whole(flag: _Given, low: int, high: int) -> int:
    value = _scalar(flag)
    if not _DIGITS.fullmatch(value):
        raise BadFlag(f"{flag.typed} needs a whole number from {low} to {high}, got {_show(value)!r}.")
    # Compare lengths first: int() refuses very long digit strings.
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise BadFlag(f"{flag.typed} {_show(value)} is out of range; use {low} to {high}.")
    return int(digits)


def _decimal(flag: _Given, low: float, high: float) -> float:
    value = _scalar(flag)
    # The pattern admits plain decimals only, so nan, inf and exponents never reach float().
    if not _DECIMAL.fullmatch(value):
        raise BadFlag(f"{flag.typed} needs a number from {low:g} to {high:g}, got {_show(value)!r}.")
    number = float(value)
    if not low <= number <= high:
        raise BadFlag(f"{flag.typed} {_show(value)} is out of range; use {low:g} to {high:g}.")
    return number


def _engine(flag: _Given) -> str:
    value = _scalar(flag).lower()
    if not _ENGINE.fullmatch(value):
        raise BadFlag(
            f"{flag.typed} {_show(value)} is not a valid engine name; use up to 64 letters, digits, '.', "
            f"'_' or '-', starting with a letter or digit, e.g. {flag.typed} {_EXAMPLES['engine']}."
        )
    return value


def _mentions(segments: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    found: list[str] = []
    for segment in segments:
        for match in _MENTION.finditer(segment):
            name = match.group(1)
            if len(name) > MAX_MENTION_CHARS:
                raise BadPrompt(
                    f"@{_show(name)} is too long for a name; names are 1 to {MAX_MENTION_CHARS} "
                    "letters, digits, _ or -."
                )
            if name.casefold() not in seen:
                seen.add(name.casefold())
                found.append(name)
    return tuple(found)


def _unknown_flag_message(name: str) -> str:
    candidates = [*_EXAMPLES, *_ALIASES]
    close = difflib.get_close_matches(name.lower(), candidates, n=1)
    hint = f" (did you mean --{_ALIASES.get(close[0], close[0])}?)" if close else ""
    return f"unknown flag --{_show(name)}{hint}; known flags: {_KNOWN_FLAGS}."


def _show(value: str, limit: int = 40) -> str:
    """A user's value cut short enough to quote back in a message."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


# --- a recorded request back to text (Reroll) -----------------------------------------------------

_FRAMEWORK_FIELDS = ("clothing", "environment", "lighting", "camera", "skin")


def _quoted(value: str) -> str:
    for opening, closing in (('"', '"'), ("'", "'"), ("«", "»")):
        if opening not in value and closing not in value:
            return f"{opening}{value}{closing}"
    return value


def request_text(request: Mapping[str, Any]) -> str:
    """The /portrait text of a recorded request (`dataclasses.asdict` of a PortraitRequest), without its
    seed; ValueError if it cannot be written back exactly."""
    parts = [str(request["subject"])]
    for name in _FRAMEWORK_FIELDS:
        if request.get(name):
            parts.append(f"--{name} {_quoted(str(request[name]))}")
    if request.get("negative"):
        parts.append(f"--no {_quoted(str(request['negative']))}")
    if request.get("aspect_given"):
        parts.append(f"--ar {request['aspect']}")
    flags = {"count": "n", "steps": "steps", "cfg": "cfg", "engine": "engine", "character_weight": "cw"}
    for name, flag in flags.items():
        value = request.get(name)
        if value is not None and not (name == "count" and value == MAX_VARIATIONS):
            parts.append(f"--{flag} {value:g}" if isinstance(value, float) else f"--{flag} {value}")
    if request.get("fast"):
        parts.append("--fast")
    text = " ".join(parts)
    again = json.loads(json.dumps(dataclasses.asdict(parse_portrait(text))))
    ignored = {"seed"} | ({"aspect"} if not request.get("aspect_given") else set())
    if any(again.get(k) != v for k, v in request.items() if k not in ignored):
        raise ValueError("this request cannot be written out again; make it with /portrait")
    return text
