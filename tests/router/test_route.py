"""route() is a pure function of (request, catalog) and explains itself."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from router.catalog import Catalog, load_catalog
from router.route import RouteError, route
from router.sizes import ASPECT_RATIOS, size_for


@dataclass(frozen=True)
class Request:
    prompt: str = "editorial portrait of a fisherman, overcast light"
    engine: str | None = None
    aspect: str = "1:1"
    steps: int | None = None
    cfg: float | None = None
    fast: bool = False


def test_default_profile_with_its_reason(tiny_catalog: Catalog) -> None:
    chosen = route(Request(aspect="2:3"), tiny_catalog)
    assert chosen.profile.name == "tiny-xl"
    assert (chosen.params.width, chosen.params.height) == size_for("2:3", "tiny")
    assert chosen.params.steps == chosen.profile.steps
    assert chosen.queue == "likeness:profile:tiny-xl"
    assert any("noise" in reason for reason in chosen.reasons)


def test_engine_wins_and_is_explained(tiny_catalog: Catalog) -> None:
    chosen = route(Request(engine="photoreal-xl", aspect="2:3"), tiny_catalog)
    assert chosen.profile.name == "photoreal-xl"
    assert (chosen.params.width, chosen.params.height) == (832, 1280)
    assert chosen.reasons[0] == "--engine photoreal-xl was asked for"
    assert any("not present on this host" in reason for reason in chosen.reasons)


def test_unknown_engine_lists_the_profiles(tiny_catalog: Catalog) -> None:
    with pytest.raises(RouteError, match="--engine dalle is not a profile here; use one of photoreal-xl"):
        route(Request(engine="dalle"), tiny_catalog)


def test_an_upscale_or_animate_engine_does_not_make_portraits(tiny_catalog: Catalog) -> None:
    with pytest.raises(
        RouteError, match=r"--engine tiny-upscale is an upscale engine.*use one of photoreal-xl"
    ):
        route(Request(engine="tiny-upscale"), tiny_catalog)
    with pytest.raises(RouteError, match="--engine svd-xt is an animate engine"):
        route(Request(engine="svd-xt"), tiny_catalog)


def test_no_prompt_routes_to_a_button_engine(tiny_catalog: Catalog) -> None:
    prompts = ["an upscaled 4k portrait", "animated portrait, video, motion", "a portrait in lanczos style"]
    for prompt in prompts:
        assert route(Request(prompt=prompt), tiny_catalog).profile.kind == "txt2img"


def test_steps_and_cfg_are_bounded_per_profile(tiny_catalog: Catalog) -> None:
    with pytest.raises(RouteError, match="--steps 90 is out of range for photoreal-xl; use 1 to 80"):
        route(Request(engine="photoreal-xl", steps=90), tiny_catalog)
    with pytest.raises(RouteError, match="--cfg 20 is out of range for photoreal-xl; use 1 to 12"):
        route(Request(engine="photoreal-xl", cfg=20), tiny_catalog)
    chosen = route(Request(steps=7, cfg=2.5), tiny_catalog)
    assert (chosen.params.steps, chosen.params.cfg) == (7, 2.5)


def test_fast_halves_the_steps(tiny_catalog: Catalog) -> None:
    chosen = route(Request(engine="photoreal-xl", fast=True), tiny_catalog)
    assert chosen.params.steps == 15
    assert any("--fast" in reason for reason in chosen.reasons)


@pytest.mark.parametrize("aspect", ASPECT_RATIOS)
@pytest.mark.parametrize("resolution", ["tiny", "sd15", "sdxl"])
def test_sizes_are_multiples_of_64_near_the_class_area(aspect: str, resolution: str) -> None:
    width, height = size_for(aspect, resolution)
    assert width % 64 == 0 and height % 64 == 0
    ratio_w, ratio_h = (int(x) for x in aspect.split(":"))
    if resolution != "tiny":
        assert abs(width / height - ratio_w / ratio_h) / (ratio_w / ratio_h) < 0.12
    if resolution == "sdxl":
        assert 0.85e6 < width * height < 1.15e6


def test_unsupported_ratio_is_named() -> None:
    with pytest.raises(ValueError, match="7:3 is not supported; use one of 1:1"):
        size_for("7:3", "sdxl")


def test_characters_go_to_the_identity_workflow(tiny_catalog: Catalog) -> None:
    chosen = route(Request(aspect="2:3"), tiny_catalog, characters=("mara",))
    assert chosen.profile.name == "tiny-identity-xl"
    assert chosen.profile.ip_adapter is not None
    assert chosen.reasons[0] == "identity: @mara is a character → tiny-identity-xl"
    two = route(Request(), tiny_catalog, characters=("mara", "jon"))
    assert two.reasons[0] == "identity: @mara, @jon are characters → tiny-identity-xl"


def test_an_engine_that_cannot_keep_a_face_is_refused_with_the_alternatives(tiny_catalog: Catalog) -> None:
    with pytest.raises(
        RouteError, match=r"--engine tiny-xl cannot keep a character's face .@mara.*identity-xl"
    ):
        route(Request(engine="tiny-xl"), tiny_catalog, characters=("mara",))
    chosen = route(Request(engine="identity-xl"), tiny_catalog, characters=("mara",))
    assert chosen.profile.name == "identity-xl"


def test_real_identity_weights_win_when_the_host_has_them() -> None:
    from router.catalog import load_catalog

    catalog = load_catalog(probe=lambda checkpoint: True, adapter_probe=lambda adapter: True)
    assert route(Request(), catalog, characters=("mara",)).profile.name == "identity-xl"


@pytest.mark.parametrize(
    ("prompt", "intent", "profile"),
    [
        ("editorial portrait of a fisherman, 85mm, overcast light", "photoreal", "photoreal-xl"),
        ("a barista wearing a name tag that reads 'JO'", "literal", "text-sd35"),
        ("watercolor portrait of a violinist", "stylized", "sdxl-base"),
    ],
)
def test_the_intent_picks_a_capable_profile(prompt: str, intent: str, profile: str) -> None:
    from router.catalog import load_catalog

    catalog = load_catalog(probe=lambda checkpoint: True, adapter_probe=lambda adapter: True)
    chosen = route(Request(prompt=prompt), catalog)
    assert (chosen.intent, chosen.profile.name) == (intent, profile)
    assert chosen.reasons[0].startswith(f"{intent}: ")
    assert chosen.reasons[0].endswith(f"→ {profile}")


def test_a_bot_host_with_a_named_default_routes_to_real_profiles_it_cannot_see() -> None:
    from router.catalog import load_catalog

    catalog = load_catalog(default="photoreal-xl", probe=lambda checkpoint: False)
    chosen = route(Request(prompt="a conference badge photo with the name 'ANA' printed on it"), catalog)
    assert (chosen.intent, chosen.profile.name) == ("literal", "text-sd35")


def test_an_intent_without_a_profile_falls_back_to_the_nearest_with_the_reason_shown() -> None:
    from router.catalog import catalog_from_dict

    only_photo = {"profiles": {"photo": {"family": "sdxl", "checkpoint": "x", "capabilities": ["photoreal"]}}}
    catalog = catalog_from_dict(only_photo, probe=lambda checkpoint: True)
    chosen = route(Request(prompt="anime illustration of a samurai"), catalog)
    assert (chosen.intent, chosen.profile.name) == ("stylized", "photo")
    assert "no stylized profile here; nearest: photoreal" in chosen.reasons


def test_the_tiny_host_serves_every_intent_with_tiny_xl(tiny_catalog: Catalog) -> None:
    for prompt in (
        "candid portrait at golden hour",
        "poster titled 'HOME'",
        "pixel art portrait of a cat lady",
    ):
        assert route(Request(prompt=prompt), tiny_catalog).profile.name == "tiny-xl"


def test_live_workers_steer_the_choice_but_never_the_engine() -> None:
    catalog = load_catalog(default="photoreal-xl")  # a bot host: every real profile is servable
    literal = Request(prompt='a barista with a name tag that says "Ruth"')
    assert route(literal, catalog).profile.name == "text-sd35"
    assert route(literal, catalog, live={"text-sd35", "photoreal-xl"}).profile.name == "text-sd35"
    fallback = route(literal, catalog, live={"photoreal-xl"})
    assert fallback.profile.name == "photoreal-xl"
    assert "no worker serves text-sd35 right now; using photoreal-xl instead" in fallback.reasons
    nobody = route(literal, catalog, live=set())
    assert nobody.profile.name == "text-sd35"  # queued until a worker connects; the Studio says so
    forced = route(Request(prompt=literal.prompt, engine="text-sd35"), catalog, live={"photoreal-xl"})
    assert forced.profile.name == "text-sd35"
    identity = route(Request(), catalog, characters=["mara"], live={"tiny-identity-xl"})
    assert identity.profile.name == "identity-xl"  # a real deployment never falls back to a tiny profile
