"""Portable character cards: a PNG of the face crop that carries the character's data in a text chunk.

A card moves a character between servers, platforms and deployments. Format (version 1): a PNG whose
pixels are the square face crop, with one `likeness-character` text chunk holding JSON:

    {"format": "likeness-character", "version": 1, "name": "mara", "description": "…",
     "weight": 100, "consent": true, "creator": "discord server 123",
     "image_sha256": "<sha256 of the crop's RGB pixels, row by row>", "width": 512, "height": 512}

`image_sha256` ties the data to the picture: a card whose pixels were edited (or swapped) is refused.
It is a checksum, not a signature: it catches damage and careless edits, not a determined forger.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

CARD_KEY = "likeness-character"
CARD_FORMAT = "likeness-character"
CARD_VERSION = 1
MAX_CARD_BYTES = 10 * 1024 * 1024
MAX_PAYLOAD_CHARS = 16 * 1024
MAX_SIDE = 2048
NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class CardError(ValueError):
    """The file is not a usable character card; the message says why and what to do."""


@dataclass(frozen=True)
class Card:
    name: str
    description: str
    weight: int
    consent: bool
    creator: str
    crop_jpeg: bytes  # the face crop, as the store keeps it


def write_card(card: Card) -> bytes:
    """The card PNG for `card` (its crop's pixels, plus the JSON chunk)."""
    with Image.open(io.BytesIO(card.crop_jpeg)) as crop:
        image = crop.convert("RGB")
    payload = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "name": card.name,
        "description": card.description,
        "weight": card.weight,
        "consent": card.consent,
        "creator": card.creator,
        "image_sha256": _pixels_sha256(image),
        "width": image.width,
        "height": image.height,
    }
    info = PngImagePlugin.PngInfo()
    info.add_text(CARD_KEY, json.dumps(payload, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=6)
    return buffer.getvalue()


def read_card(data: bytes) -> Card:
    """Read a card back; every problem is a CardError naming it."""
    if len(data) > MAX_CARD_BYTES:
        raise CardError(f"that card is {len(data) / 2**20:.1f} MB; a character card is at most 10 MB")
    if not data.startswith(_PNG_MAGIC):
        raise CardError("that is not a character card: cards are PNG files exported by Likeness")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.width > MAX_SIDE or opened.height > MAX_SIDE:
                    raise CardError(
                        f"that card is {opened.width}×{opened.height} px; cards are at most {MAX_SIDE} px"
                    )
                text = opened.text.get(CARD_KEY) if hasattr(opened, "text") else None
                image = opened.convert("RGB")
    except CardError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # fmt: skip
        raise CardError(f"that card is damaged and cannot be read ({type(exc).__name__})") from exc
    if text is None:
        raise CardError("that PNG carries no character data; export a card with /character export")
    if len(text) > MAX_PAYLOAD_CHARS:
        raise CardError("that card's data is too large to be a character card")
    payload = _payload(text)
    if payload["image_sha256"] != _pixels_sha256(image) or (image.width, image.height) != (
        payload["width"],
        payload["height"],
    ):
        raise CardError(
            "that card's picture does not match its data: it was edited or damaged; export it again"
        )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return Card(
        name=payload["name"],
        description=payload["description"],
        weight=payload["weight"],
        consent=payload["consent"],
        creator=payload["creator"],
        crop_jpeg=buffer.getvalue(),
    )


def _payload(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError("that card's data is not valid JSON: it was edited or damaged") from exc
    if not isinstance(payload, dict) or payload.get("format") != CARD_FORMAT:
        raise CardError("that PNG's data is not a Likeness character card")
    version = payload.get("version")
    if version != CARD_VERSION:
        raise CardError(
            f"this card has format version {version!r}; this Likeness reads version {CARD_VERSION}. "
            "Upgrade Likeness, or export the card again from a matching version"
        )
    expected: dict[str, type | tuple[type, ...]] = {
        "name": str, "description": str, "weight": int, "consent": bool, "creator": str,
        "image_sha256": str, "width": int, "height": int,
    }  # fmt: skip
    missing = [key for key in expected if key not in payload]
    if missing:
        raise CardError(f"that card is missing {', '.join(missing)}; export it again")
    for key, kind in expected.items():
        value = payload[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CardError(f"that card's `{key}` has the wrong type ({type(value).__name__})")
    if not NAME.match(payload["name"]):
        raise CardError(f"that card's name {payload['name'][:40]!r} is not a valid character name")
    if not 0 <= payload["weight"] <= 100:
        raise CardError(f"that card's weight {payload['weight']} is outside 0–100")
    if len(payload["description"]) > 300:
        raise CardError("that card's description is longer than 300 characters")
    if not payload["consent"]:
        raise CardError("that card has no likeness consent from its creator; it cannot be imported")
    return payload


def _pixels_sha256(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()
