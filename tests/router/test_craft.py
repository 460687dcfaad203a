"""realism_tips(): names the realism-hurting word, suggests what works, stays short, never blocks."""

from __future__ import annotations

import itertools

import pytest

from router.craft import MAX_TIP_CHARS, realism_tips

CUES = (
    "flawless",
    "perfect skin",
    "porcelain skin",
    "airbrushed",
    "8k",
    "ultra-detailed",
    "ultra detailed",
    "hyper-realistic",
    "hyperrealistic",
    "masterpiece",
    "best quality",
)


@pytest.mark.parametrize("cue", CUES)
def test_fires_on_each_cue_and_names_it(cue: str) -> None:
    tips = realism_tips(f"portrait of a violinist, {cue}, backstage")
    assert 1 <= len(tips) <= 2
    assert any(f"'{cue}'" in tip for tip in tips), tips


def test_photorealistic_only_when_it_stands_in_for_light_and_lens() -> None:
    tips = realism_tips("photorealistic portrait of a grandmother knitting")
    assert len(tips) == 1
    assert "'photorealistic'" in tips[0]
    assert "overcast daylight" in tips[0] or "soft window light" in tips[0]
    # The prompt already names its light or lens: nothing to add.
    assert realism_tips("photorealistic portrait of a grandmother, soft window light") == ()
    assert realism_tips("photo-realistic portrait, 85mm f/1.8") == ()


def test_tips_suggest_the_phrases_that_work() -> None:
    skin, tags = realism_tips("flawless skin, 8k")
    assert "'flawless'" in skin
    assert "natural skin texture, visible pores" in skin
    assert "'8k'" in tags
    assert "soft window light" in tags
    assert "sharp catchlights, symmetric gaze, detailed iris" in tags


def test_words_are_named_as_typed_and_the_verb_agrees() -> None:
    (tip,) = realism_tips("MASTERPIECE, 8K, a sailor")
    assert tip.startswith("'MASTERPIECE' and '8K' add ")
    (tip,) = realism_tips("a sailor, 8K")
    assert tip.startswith("'8K' adds ")


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "editorial portrait of a fisherman, overcast harbor light, 85mm",
        "a woman laughing in the rain, natural skin texture, visible pores",
        "skin that is not flawless, freckles and all",
        "no airbrushed look, real skin",
        "avoid an airbrushed finish, soft window light",
        "un-airbrushed, honest portrait",
        "she plays flawlessly, concert hall",  # inside a longer word
        "a baker lifting a 48kg sack of flour",
        "a gallery of masterpieces behind a guard",
        "a perfectionist chef, skin glowing from the oven",
    ],
)
def test_silent_on_clean_prompts(prompt: str) -> None:
    assert realism_tips(prompt) == ()


def test_never_more_than_two_tips_and_each_is_short() -> None:
    everything = ", ".join((*CUES, "photorealistic"))
    tips = realism_tips(everything)
    assert len(tips) == 2
    assert all(len(tip) <= MAX_TIP_CHARS for tip in tips)
    for pair in itertools.combinations((*CUES, "photorealistic", "AIR-BRUSHED", "Perfect   -  -  Skin"), 2):
        for tip in realism_tips(" ".join(pair)):
            assert 0 < len(tip) <= MAX_TIP_CHARS, tip


def test_is_pure() -> None:
    prompt = "flawless porcelain skin, 8k, best quality"
    assert realism_tips(prompt) == realism_tips(prompt)
    assert isinstance(realism_tips(prompt), tuple)
