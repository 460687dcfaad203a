"""Character cards: round trip, and a clear error for everything that is not a good card."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin
from skimage import data

from characters.card import CARD_KEY, Card, CardError, read_card, write_card


def crop_jpeg() -> bytes:
    face = Image.fromarray(data.astronaut()[0:256, 128:384]).resize((128, 128))
    buffer = io.BytesIO()
    face.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def card(**changes: object) -> Card:
    values: dict[str, object] = {
        "name": "mara", "description": "a woman with short silver hair", "weight": 80, "consent": True,
        "creator": "discord server 123", "crop_jpeg": crop_jpeg(),
    }  # fmt: skip
    values.update(changes)
    return Card(**values)  # type: ignore[arg-type]


def with_payload(png: bytes, edit: dict[str, object] | None = None, raw: str | None = None) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        payload = json.loads(image.text[CARD_KEY])
        pixels = image.convert("RGB")
    payload.update(edit or {})
    info = PngImagePlugin.PngInfo()
    info.add_text(CARD_KEY, raw if raw is not None else json.dumps(payload))
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_round_trip() -> None:
    original = card()
    back = read_card(write_card(original))
    assert (back.name, back.description, back.weight, back.consent, back.creator) == (
        "mara", "a woman with short silver hair", 80, True, "discord server 123",
    )  # fmt: skip
    with Image.open(io.BytesIO(back.crop_jpeg)) as a, Image.open(io.BytesIO(original.crop_jpeg)) as b:
        difference = np.abs(np.asarray(a, int) - np.asarray(b, int))
    assert a.size == (128, 128)
    assert difference.mean() < 3  # a second JPEG pass, nothing more


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"hello, not an image", "not a character card"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (11 * 1024 * 1024), "at most 10 MB"),
    ],
)
def test_not_a_card(blob: bytes, message: str) -> None:
    with pytest.raises(CardError, match=message):
        read_card(blob)


def test_a_plain_png_is_not_a_card() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PNG")
    with pytest.raises(CardError, match="carries no character data"):
        read_card(buffer.getvalue())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"version": 9}, "format version 9"),
        ({"format": "other"}, "not a Likeness character card"),
        ({"weight": 300}, "outside 0–100"),
        ({"weight": "high"}, "`weight` has the wrong type"),
        ({"name": "../etc/passwd"}, "not a valid character name"),
        ({"consent": False}, "no likeness consent"),
        ({"image_sha256": "0" * 64}, "does not match its data"),
        ({"description": "x" * 301}, "longer than 300"),
    ],
)
def test_tampered_or_unknown_payloads(edit: dict[str, object], message: str) -> None:
    with pytest.raises(CardError, match=message):
        read_card(with_payload(write_card(card()), edit))


def test_missing_fields_and_bad_json() -> None:
    good = write_card(card())
    with Image.open(io.BytesIO(good)) as image:
        payload = json.loads(image.text[CARD_KEY])
    del payload["creator"]
    with pytest.raises(CardError, match="missing creator"):
        read_card(with_payload(good, raw=json.dumps(payload)))
    with pytest.raises(CardError, match="not valid JSON"):
        read_card(with_payload(good, raw="{not json"))
    with pytest.raises(CardError, match="too large"):
        read_card(with_payload(good, raw="x" * 20_000))


def test_edited_pixels_are_refused() -> None:
    good = write_card(card())
    with Image.open(io.BytesIO(good)) as image:
        text = image.text[CARD_KEY]
        pixels = image.convert("RGB")
    pixels.putpixel((5, 5), (255, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text(CARD_KEY, text)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", pnginfo=info)
    with pytest.raises(CardError, match="does not match"):
        read_card(buffer.getvalue())


_GOOD_CARD = write_card(card())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=len(_GOOD_CARD)),
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(_GOOD_CARD) - 1), st.integers(1, 255)), max_size=6
    ),
)
def test_a_damaged_card_only_ever_gives_a_card_error(cut: int, flips: list[tuple[int, int]]) -> None:
    damaged = bytearray(_GOOD_CARD[:cut] if cut < len(_GOOD_CARD) else _GOOD_CARD)
    for offset, mask in flips:
        if offset < len(damaged):
            damaged[offset] ^= mask
    with contextlib.suppress(CardError):
        read_card(bytes(damaged))


@settings(max_examples=100, deadline=None)
@given(
    payload=st.dictionaries(
        st.text(max_size=12),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40)),
        max_size=8,
    )
)
def test_a_card_with_any_json_payload_only_ever_gives_a_card_error(payload: dict[str, object]) -> None:
    with contextlib.suppress(CardError):
        read_card(with_payload(_GOOD_CARD, raw=json.dumps(payload)))
