"""Job specs are plain versioned data: msgpack and JSON round trips, never pickle."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from jobs.spec import SPEC_VERSION, InputImage, JobResult, JobSpec, Recipe, new_id, pack, unpack


def recipe(**overrides: object) -> Recipe:
    values: dict[str, object] = dict(
        profile="tiny-xl",
        family="sdxl",
        checkpoint="tiny:sdxl",
        scheduler="EulerDiscreteScheduler",
        steps=4,
        cfg=5.0,
        width=192,
        height=320,
        seeds=(7, 8, 9, 10),
    )
    values.update(overrides)
    return Recipe(**values)  # type: ignore[arg-type]


def test_msgpack_and_json_round_trip() -> None:
    spec = JobSpec(
        generation_id="g_x", prompt="p", recipe=recipe(), inputs=(InputImage(role="ref", data=b"\x00\xff"),)
    )
    assert JobSpec.model_validate(unpack(pack(spec.model_dump()))) == spec
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.version == SPEC_VERSION


def test_pack_refuses_live_objects() -> None:
    with pytest.raises(TypeError, match="cannot serialize"):
        pack({"x": object()})
    # A pickle payload is just bytes to msgpack: it is never unpickled.
    assert unpack(pack({"blob": pickle.dumps({"a": 1})}))["blob"].startswith(b"\x80")


def test_single_variation_keeps_the_batch_and_returns_one() -> None:
    spec = JobSpec(generation_id="g_x", prompt="p", recipe=recipe())
    assert spec.kept == (1, 2, 3, 4)
    one = spec.single_variation(3)
    assert one.kept == (3,)
    assert one.seed_of(3) == 9
    assert one.recipe == spec.recipe
    assert one.job_id != spec.job_id
    with pytest.raises(ValueError, match="variation 5 does not exist; this job has 1 to 4"):
        spec.single_variation(5)
    with pytest.raises(ValidationError, match="keep names variation 0"):
        JobSpec(generation_id="g_x", recipe=recipe(), keep=(0,))


@pytest.mark.parametrize(
    ("field", "value"),
    [("width", 100), ("steps", 0), ("seeds", ()), ("cfg", -1.0), ("height", 8192)],
)
def test_recipe_bounds(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        recipe(**{field: value})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"generation_id": "g", "__class__": "os.system"})


def test_result_carries_errors_as_text() -> None:
    result = JobResult(job_id="j", generation_id="g", ok=False, error="no weights")
    assert JobResult.model_validate(unpack(pack(result.model_dump()))) == result


def test_ids_are_short_and_prefixed() -> None:
    ids = {new_id("g") for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("g_") and len(i) == 14 for i in ids)
