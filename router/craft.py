"""Prompt craft: short, never-blocking tips when a prompt leans on words that make portraits look fake.

Some prompt words are folklore from early diffusion models. "flawless", "porcelain skin" and "airbrushed"
ask for exactly the waxy, poreless skin that gives a portrait away. "8k", "masterpiece" and "best quality"
add no detail; they drag the model toward glossy digital art. "photorealistic" on its own stands in for
what actually makes a photograph (a light source, a lens). What works is naming those things: real light,
real skin texture, real eyes.

`realism_tips()` is pure and cheap: it returns at most two tips (one for skin words, one for quality tags),
each under 200 characters and naming the word it found, or `()` when the prompt is clean. A negated word
("not flawless", "no airbrushed look") or one inside a longer word ("un-airbrushed", "48k") is left alone.
"""

from __future__ import annotations

import re

MAX_TIP_CHARS = 200

# Words asking for retouched, poreless skin.
_SKIN = re.compile(
    r"(?<![\w-])(?:flawless|perfect[\s-]+skin|porcelain[\s-]+skin|airbrushed|air[\s-]brushed)(?![\w-])",
    re.IGNORECASE,
)
# Quality tags that add no detail. `photorealistic` is handled apart: it only earns a tip when the prompt
# names no light or lens, i.e. when it stands in for them.
_TAGS = re.compile(
    r"(?<![\w-])(?:8k|ultra[\s-]?detailed|hyper[\s-]?realistic|masterpiece|best[\s-]+quality)(?![\w-])",
    re.IGNORECASE,
)
_PHOTOREALISTIC = re.compile(r"(?<![\w-])photo[\s-]?realistic(?![\w-])", re.IGNORECASE)
_LIGHT_OR_LENS = re.compile(
    r"\b(?:light|lighting|lit|sun|sunlight|sunset|sunrise|golden hour|blue hour|daylight|overcast|window|"
    r"candle\w*|lamp|neon|flash|softbox|shadows?|backlit|rim|\d{2,3} ?mm|f/\d|lens|bokeh|depth of field|"
    r"aperture|kodak|portra|fuji\w*|film|35mm)\b",
    re.IGNORECASE,
)
# A negator up to three words before the word, in the same clause: "not flawless", "avoid an airbrushed look".
_NEGATED = re.compile(
    r"\b(?:no|not|without|never|avoid|avoiding|nor|non|less)\s+(?:[\w']+\s+){0,3}$", re.IGNORECASE
)

# Templates: {words} is one or two quoted words; {s} makes the verb agree ("gives" / "give").
_SKIN_TIP = "{words} give{s} plastic, poreless skin; ask for 'natural skin texture, visible pores' instead."
_TAG_TIP = (
    "{words} add{s} no detail and push{es} toward glossy CG; describe light and eyes: "
    "'soft window light', 'sharp catchlights, symmetric gaze, detailed iris'."
)
_PHOTOREAL_TIP = (
    "{words} stand{s} in for light and lens; name them instead: 'overcast daylight' or 'soft window light', "
    "'85mm', 'sharp catchlights, detailed iris'."
)
# Words are shown as typed unless that is long ("perfect  -  skin"): then collapsed, so tips stay short.
_MAX_WORD_CHARS = 16


def _found(pattern: re.Pattern[str], prompt: str) -> list[str]:
    """The un-negated matches, as written, at most two distinct ones."""
    words: list[str] = []
    for match in pattern.finditer(prompt):
        if _NEGATED.search(prompt, max(0, match.start() - 48), match.start()):
            continue
        word = match.group()
        if len(word) > _MAX_WORD_CHARS:
            word = re.sub(r"[\s-]+", " ", word)[:_MAX_WORD_CHARS]
        if word.lower() not in (w.lower() for w in words):
            words.append(word)
    return words[:2]


def _tip(template: str, words: list[str]) -> str:
    one = len(words) == 1
    return template.format(
        words=" and ".join(f"'{w}'" for w in words), s="s" if one else "", es="es" if one else ""
    )


def realism_tips(prompt: str) -> tuple[str, ...]:
    """Up to two short tips (each at most `MAX_TIP_CHARS`) naming realism-hurting words; `()` when clean."""
    tips: list[str] = []
    skin = _found(_SKIN, prompt)
    if skin:
        tips.append(_tip(_SKIN_TIP, skin))
    tags = _found(_TAGS, prompt)
    # "photorealistic" earns a tip only when it stands in for light and lens the prompt never names.
    stand_in = _found(_PHOTOREALISTIC, prompt) if not _LIGHT_OR_LENS.search(prompt) else []
    if tags:
        tips.append(_tip(_TAG_TIP, (tags + stand_in)[:2]))
    elif stand_in:
        tips.append(_tip(_PHOTOREAL_TIP, stand_in[:1]))
    return tuple(tips)
