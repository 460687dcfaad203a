"""Tests for jobs.media: recipe round trips through PNG chunks, contact sheets and upload budgets."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from jobs import media
from jobs.spec import InputImage, JobSpec, Recipe

# A1111's infotext parser (modules/infotext_utils.py): the last line holds `key: value` pairs, values
# with commas or colons are JSON-quoted.
_A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 `parameters` text into (prompt, negative, settings) the way A1111-style readers do."""
    *lines, last = text.split("\n")
    settings: dict[str, str] = {}
    for key, value in _A1111_PARAM.findall(last):
        settings[key] = json.loads(value) if value.startswith('"') else value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), settings


def make_recipe(**changes: object) -> Recipe:
    fields: dict[str, object] = {
        "profile": "tiny-xl",
        "family": "sdxl",
        "checkpoint": "tiny:sdxl",
        "scheduler": "EulerDiscreteScheduler",
        "steps": 4,
        "cfg": 5.0,
        "width": 192,
        "height": 320,
        "seeds": (7, 8, 9, 10),
    }
    fields.update(changes)
    return Recipe.model_validate(fields)


@pytest.fixture
def spec() -> JobSpec:
    return JobSpec(
        generation_id="g_test",
        prompt="a portrait of a lighthouse keeper, golden hour",
        negative="blurry, lowres",
        recipe=make_recipe(),
    )


def gradient_image(width: int = 192, height: int = 320, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    pixels = pixels + rng.integers(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png_without_recipe(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# --- the recipe -------------------------------------------------------------------------------------


def test_recipe_round_trip_gives_the_single_variation(spec: JobSpec) -> None:
    png = media.encode_png(gradient_image(), spec, 2)
    back = media.read_recipe(png)
    assert back.recipe is not None
    assert back.kept == (2,)
    assert back.seed_of(2) == 8
    assert back.recipe == make_recipe()
    assert (back.prompt, back.negative, back.generation_id, back.kind) == (
        spec.prompt,
        spec.negative,
        "g_test",
        "txt2img",
    )
    assert back.model_dump(exclude={"job_id"}) == spec.single_variation(2).model_dump(exclude={"job_id"})


def test_recipe_round_trip_keeps_inputs_and_unicode() -> None:
    spec = JobSpec(
        generation_id="g_test",
        prompt="portrait of Zoë in 東京, 🌸",
        recipe=make_recipe(),
        inputs=(InputImage(role="face", data=b"\x00\xffnot really a png", sha256="ab" * 32),),
    )
    png = media.encode_png(gradient_image(), spec, 4)
    back = media.read_recipe(png)
    assert back.prompt == spec.prompt
    # A reference photo never travels inside the images made from it: only its hash does.
    assert back.inputs == (InputImage(role="face", sha256="ab" * 32),)
    assert back.recipe is not None
    assert back.seed_of(back.kept[0]) == 10
    parameters = media.read_parameters(png)
    assert parameters is not None
    assert parameters.startswith("portrait of Zoë in 東京, 🌸\nSteps: 4,")


def test_parameters_text_is_a1111_format(spec: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "LIKENESS_VERSION", "9.8.7")
    png = media.encode_png(gradient_image(), spec, 2)
    expected = (
        "a portrait of a lighthouse keeper, golden hour\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 4, Sampler: Euler, Schedule type: Automatic, CFG scale: 5, Seed: 8, Size: 192x320, "
        "Model: tiny-xl, Version: likeness 9.8.7"
    )
    assert media.a1111_parameters(spec, 2) == expected
    assert media.read_parameters(png) == expected
    prompt, negative, settings = parse_a1111(expected)
    assert prompt == spec.prompt
    assert negative == spec.negative
    assert settings == {
        "Steps": "4",
        "Sampler": "Euler",
        "Schedule type": "Automatic",
        "CFG scale": "5",
        "Seed": "8",
        "Size": "192x320",
        "Model": "tiny-xl",
        "Version": "likeness 9.8.7",
    }


def test_parameters_without_negative_and_other_samplers() -> None:
    spec = JobSpec(
        generation_id="g_test",
        prompt="a quiet harbour",
        recipe=make_recipe(
            scheduler="DPMSolverMultistepScheduler",
            cfg=7.5,
            checkpoint="/models/sdxl/juggernautXL_v9.safetensors",
        ),
    )
    text = media.a1111_parameters(spec, 1)
    assert "Negative prompt" not in text
    prompt, negative, settings = parse_a1111(text)
    assert (prompt, negative) == ("a quiet harbour", "")
    assert settings["Sampler"] == "DPM++ 2M"
    assert settings["CFG scale"] == "7.5"
    assert settings["Seed"] == "7"
    assert settings["Model"] == "juggernautXL_v9"


@pytest.mark.parametrize(
    ("scheduler", "sampler"),
    [
        ("EulerAncestralDiscreteScheduler", "Euler a"),
        ("DDIMScheduler", "DDIM"),
        ("PNDMScheduler", "PLMS"),
        ("LMSDiscreteScheduler", "LMS"),
        ("UniPCMultistepScheduler", "UniPC"),
        ("HeunDiscreteScheduler", "Heun"),
        ("FlowMatchEulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler"),
    ],
)
def test_sampler_names(scheduler: str, sampler: str) -> None:
    spec = JobSpec(generation_id="g_test", prompt="p", recipe=make_recipe(scheduler=scheduler))
    assert parse_a1111(media.a1111_parameters(spec, 1))[2]["Sampler"] == sampler


def test_model_name_from_hub_id_and_awkward_names() -> None:
    hub = make_recipe(checkpoint="stabilityai/stable-diffusion-xl-base-1.0")
    spec = JobSpec(generation_id="g_test", prompt="p", recipe=hub)
    assert parse_a1111(media.a1111_parameters(spec, 1))[2]["Model"] == "stable-diffusion-xl-base-1.0"
    comma = make_recipe(checkpoint="/models/portrait, v2.safetensors")
    spec = JobSpec(generation_id="g_test", prompt="p", recipe=comma)
    assert 'Model: "portrait, v2"' in media.a1111_parameters(spec, 1)
    assert parse_a1111(media.a1111_parameters(spec, 1))[2]["Model"] == "portrait, v2"


def test_pixels_survive_the_png_round_trip(spec: JobSpec) -> None:
    image = gradient_image()
    png = media.encode_png(image, spec, 1)
    decoded = media.png_to_image(png)
    assert decoded.mode == "RGB"
    assert decoded.size == (192, 320)
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.parametrize("index", [0, 5, -1])
def test_encode_png_refuses_missing_variations(spec: JobSpec, index: int) -> None:
    with pytest.raises(ValueError, match=f"variation {index} does not exist"):
        media.encode_png(gradient_image(), spec, index)


def test_encode_png_needs_a_recipe() -> None:
    noop = JobSpec(generation_id="g_test", kind="noop")
    with pytest.raises(ValueError, match="no recipe"):
        media.encode_png(gradient_image(), noop, 1)


def test_read_recipe_from_a_path_ignores_the_name(spec: JobSpec, tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    path.write_bytes(media.encode_png(gradient_image(), spec, 3))
    back = media.read_recipe(path)
    assert back.recipe is not None
    assert back.seed_of(back.kept[0]) == 9


def test_read_recipe_without_the_chunk() -> None:
    png = png_without_recipe(gradient_image())
    with pytest.raises(ValueError, match="this PNG carries no Likeness recipe; only images made by Likeness"):
        media.read_recipe(png)
    assert media.read_parameters(png) is None


@pytest.mark.parametrize(
    "data", [b"", b"garbage bytes, not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"\xff\xd8\xff\xe0"]
)
def test_read_recipe_on_garbage(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="this PNG carries no Likeness recipe"):
        media.read_recipe(data)
    path = tmp_path / "portrait.png"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="this PNG carries no Likeness recipe"):
        media.read_recipe(path)


def test_read_recipe_refuses_a_jpeg_even_if_valid(spec: JobSpec) -> None:
    buffer = io.BytesIO()
    gradient_image().save(buffer, format="JPEG")
    with pytest.raises(ValueError, match="not a readable PNG"):
        media.read_recipe(buffer.getvalue())


def test_read_recipe_with_a_damaged_recipe(spec: JobSpec) -> None:
    from PIL import PngImagePlugin

    for text in ("{not json", json.dumps({"generation_id": "g", "unexpected": 1})):
        info = PngImagePlugin.PngInfo()
        info.add_text("likeness", text)
        buffer = io.BytesIO()
        gradient_image().save(buffer, format="PNG", pnginfo=info)
        with pytest.raises(ValueError, match=r"carries no Likeness recipe.*damaged"):
            media.read_recipe(buffer.getvalue())


def test_read_recipe_from_a_newer_likeness(spec: JobSpec) -> None:
    from PIL import PngImagePlugin

    data = spec.single_variation(1).model_dump(mode="json")
    data["version"] = 99
    info = PngImagePlugin.PngInfo()
    info.add_text("likeness", json.dumps(data))
    buffer = io.BytesIO()
    gradient_image().save(buffer, format="PNG", pnginfo=info)
    with pytest.raises(ValueError, match="newer Likeness"):
        media.read_recipe(buffer.getvalue())


def test_oversized_png_is_refused_before_decoding() -> None:
    # A header claiming 20000×20000 pixels with no pixel data: the guard must not need the pixels.
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")
    for reader in (media.read_recipe, media.read_parameters, media.png_to_image):
        with pytest.raises(ValueError, match="over the 72,000,000-pixel limit"):
            reader(bomb)


def test_png_to_image_on_a_truncated_file(spec: JobSpec) -> None:
    png = media.encode_png(gradient_image(), spec, 1)
    with pytest.raises(ValueError, match="not a readable PNG"):
        media.png_to_image(png[: len(png) // 2])


def test_media_does_not_import_torch() -> None:
    code = "import sys, jobs.media; assert 'torch' not in sys.modules, 'jobs.media imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# --- contact sheets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "size"),
    [(1, (192, 320)), (2, (192 * 2 + 8, 320)), (3, (192 * 2 + 8, 320 * 2 + 8)), (4, (392, 648))],
)
def test_contact_grid_sizes(count: int, size: tuple[int, int]) -> None:
    images = [gradient_image(seed=k) for k in range(count)]
    sheet = media.contact_grid(images)
    assert sheet.size == size
    assert sheet.mode == "RGB"


def test_contact_grid_of_one_is_the_image() -> None:
    image = gradient_image()
    sheet = media.contact_grid([image])
    assert np.array_equal(np.asarray(sheet), np.asarray(image))
    assert sheet is not image


def test_contact_grid_centers_mixed_sizes_and_fills_empty_cells() -> None:
    red = Image.new("RGB", (100, 200), (255, 0, 0))
    blue = Image.new("RGB", (60, 100), (0, 0, 255))
    green = Image.new("RGBA", (100, 200), (0, 255, 0, 255))
    sheet = media.contact_grid([red, blue, green], gap=4, background=(1, 2, 3))
    assert sheet.size == (204, 404)
    pixels = np.asarray(sheet)
    # blue is centered in the top-right cell: 20 px of background either side, 50 above and below.
    assert tuple(pixels[100, 104 + 50]) == (0, 0, 255)
    assert tuple(pixels[10, 104 + 50]) == (1, 2, 3)
    assert tuple(pixels[100, 104 + 5]) == (1, 2, 3)
    assert tuple(pixels[300, 50]) == (0, 255, 0)
    assert tuple(pixels[300, 150]) == (1, 2, 3)  # the empty fourth cell
    assert tuple(pixels[100, 102]) == (1, 2, 3)  # the gap


def test_contact_grid_beyond_four() -> None:
    images = [gradient_image(64, 64, seed=k) for k in range(8)]
    assert media.contact_grid(images, gap=0).size == (192, 192)
    assert media.contact_grid(images[:5], gap=0).size == (192, 128)


def test_contact_grid_needs_images() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        media.contact_grid([])


# --- fitting a budget -------------------------------------------------------------------------------


def test_small_image_returns_the_metadata_png_unchanged(spec: JobSpec) -> None:
    image = gradient_image()
    png = media.encode_png(image, spec, 2)
    data, media_type = media.fit_to_budget(image, media.DISCORD_FILE_LIMIT, metadata_png=png)
    assert media_type == "image/png"
    assert data == png
    assert media.read_recipe(data).keep == (2,)


def test_small_image_without_metadata_is_a_png() -> None:
    image = gradient_image()
    data, media_type = media.fit_to_budget(image, 1024 * 1024)
    assert media_type == "image/png"
    assert np.array_equal(np.asarray(media.png_to_image(data)), np.asarray(image))


def test_large_noisy_image_fits_a_small_budget(spec: JobSpec) -> None:
    image = noise_image(2048, 2048)
    png = media.encode_png(image, spec, 2)
    budget = 1024 * 1024
    assert len(png) > budget
    data, media_type = media.fit_to_budget(image, budget, metadata_png=png)
    assert media_type in ("image/jpeg", "image/webp")
    assert len(data) <= budget
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    assert decoded.format == "JPEG"
    assert decoded.mode == "RGB"
    assert decoded.width == decoded.height
    assert decoded.width <= 2048
    exif = decoded.getexif()
    comment = exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
    assert comment.startswith(b"UNICODE\0")
    assert comment[8:].decode("utf-16-be") == media.a1111_parameters(spec, 2)
    description = exif[ExifTags.Base.ImageDescription]
    assert description.encode("latin-1").decode("utf-8") == media.a1111_parameters(spec, 2)


def test_lossy_without_downscaling_keeps_the_size() -> None:
    image = gradient_image(512, 512)
    png_size = len(png_without_recipe(image))
    data, media_type = media.fit_to_budget(image, png_size // 2)
    assert media_type == "image/jpeg"
    assert len(data) <= png_size // 2
    assert Image.open(io.BytesIO(data)).size == (512, 512)


def test_rgba_is_flattened_for_jpeg() -> None:
    rgba = noise_image(512, 512).convert("RGBA")
    rgba.putalpha(0)
    data, media_type = media.fit_to_budget(rgba, 16 * 1024)
    assert media_type == "image/jpeg"
    assert len(data) <= 16 * 1024
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "RGB"
    # fully transparent pixels flatten onto white
    assert np.asarray(decoded).mean() > 250


@pytest.mark.parametrize("budget", [0, 1000, 16 * 1024 - 1])
def test_tiny_budget_is_refused(budget: int) -> None:
    with pytest.raises(ValueError, match=f"max_bytes={budget}"):
        media.fit_to_budget(gradient_image(), budget)
