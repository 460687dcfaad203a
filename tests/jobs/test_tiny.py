"""The tiny random-weight pipelines: built offline, saved and loaded like any checkpoint, reproducible."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from transformers import CLIPTokenizer

import jobs.tiny
from jobs.tiny import TINY_FAMILIES, build_tiny_pipeline, ensure_tiny_pipeline, write_clip_tokenizer

PROMPT = "a portrait photo of a smiling woman with red hair"
PIPELINE_CLASSES = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Each family built and saved once for the module."""
    family: str = request.param
    return family, build_tiny_pipeline(family, tmp_path_factory.mktemp(family) / f"tiny-{family}")


@pytest.fixture(scope="module")
def pipe(saved: tuple[str, Path]) -> Any:
    """The saved pipeline, loaded back as a checkpoint would be."""
    pipeline = DiffusionPipeline.from_pretrained(str(saved[1]))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(pipe: Any, seeds: list[int], *, width: int = 256, height: int = 256, steps: int = 4) -> Any:
    """One image per seed in ONE batched call, one generator per seed, as the worker does."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return pipe(
        PROMPT,
        num_images_per_prompt=len(seeds),
        generator=generators if len(seeds) > 1 else generators[0],
        num_inference_steps=steps,
        guidance_scale=5.0,
        width=width,
        height=height,
        output_type="np",
    ).images


def to_uint8(images: Any) -> Any:
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def safetensors_bytes(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*.safetensors"))}


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'flux'.*sd15, sdxl"):
        build_tiny_pipeline("flux", tmp_path / "tiny-flux")
    with pytest.raises(ValueError, match=r"'sd3'.*sd15, sdxl"):
        ensure_tiny_pipeline("sd3", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_saved_pipeline_loads_as_a_checkpoint_of_its_family(saved: tuple[str, Path], pipe: Any) -> None:
    family, path = saved
    assert (path / "model_index.json").is_file()
    assert type(pipe) is PIPELINE_CLASSES[family]
    # The build happened in a scratch folder beside the model; nothing of it is left.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # Latents are 1/8 of the image on each side, as in the real checkpoints; the default size is 256².
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 256
    if family == "sdxl":
        encoders = (pipe.text_encoder, pipe.text_encoder_2)
        assert pipe.unet.config.cross_attention_dim == sum(e.config.hidden_size for e in encoders)
        assert pipe.unet.config.addition_embed_type == "text_time"
        assert pipe.unet.config.projection_class_embeddings_input_dim == (
            6 * pipe.unet.config.addition_time_embed_dim + pipe.text_encoder_2.config.projection_dim
        )
    else:
        assert pipe.safety_checker is None and pipe.feature_extractor is None
        assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size


def test_scheduler_config_round_trips(saved: tuple[str, Path], pipe: Any, tmp_path: Path) -> None:
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    config = dict(pipe.scheduler.config)
    assert {k: config[k] for k in ("beta_schedule", "beta_start", "beta_end", "prediction_type")} == {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "prediction_type": "epsilon",
    }
    pipe.scheduler.save_pretrained(str(tmp_path))
    again = EulerDiscreteScheduler.from_pretrained(str(tmp_path))
    assert dict(again.config) == config
    written = json.loads((saved[1] / "scheduler" / "scheduler_config.json").read_text())
    assert written["_class_name"] == "EulerDiscreteScheduler"
    assert {k: v for k, v in written.items() if not k.startswith("_")} == {
        k: v for k, v in config.items() if not k.startswith("_")
    }
    # The worker swaps schedulers by name, from this config.
    swapped = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    assert swapped.config.beta_schedule == "scaled_linear"
    other = type(pipe)(**{**pipe.components, "scheduler": swapped})
    other.set_progress_bar_config(disable=True)
    assert np.isfinite(generate(other, [3], steps=2)).all()


@pytest.mark.parametrize(("width", "height"), [(192, 256), (192, 320), (384, 192)])
def test_generates_finite_images_of_the_requested_size(pipe: Any, width: int, height: int) -> None:
    images = generate(pipe, [1], width=width, height=height, steps=2)
    assert images.shape == (1, height, width, 3)
    assert np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_same_seed_same_pixels_other_seed_other_pixels(pipe: Any) -> None:
    first = generate(pipe, [7], width=192, height=256, steps=2)
    second = generate(pipe, [7], width=192, height=256, steps=2)
    other = generate(pipe, [8], width=192, height=256, steps=2)
    assert np.array_equal(first, second)
    assert np.abs(first - other).max() > 0.01


def test_each_variation_of_a_batch_is_reproducible_alone(pipe: Any) -> None:
    """Variation k of a batch vs. its seed alone: equal up to float32 rounding, at most 1 level in uint8.

    Not bit-identical on the CPU: the batch runs the UNet on 8 rows (4 images, with and without the
    prompt) and the VAE on 4, a single image on 2 and 1, and oneDNN convolutions and MKL matmuls with few
    rows (the timestep embeddings) pick batch-size-dependent kernels, so sums are rounded in another order.
    Measured: max |difference| ≈ 4e-6 to 1e-5 in [0, 1] floats, which flips a few dozen of 196,608 uint8
    values by exactly 1. The same call with the same seeds is bit-identical.
    """
    seeds = [100, 101, 102, 103]
    batch = generate(pipe, seeds)
    assert batch.shape == (4, 256, 256, 3)
    for k, seed in enumerate(seeds):
        alone = generate(pipe, [seed])[0]
        float_diff = float(np.abs(batch[k].astype(np.float64) - alone).max())
        uint8_diff = int(np.abs(to_uint8(batch[k]).astype(int) - to_uint8(alone).astype(int)).max())
        assert float_diff < 1e-4, f"variation {k + 1}: float difference {float_diff:.2e}"
        assert uint8_diff <= 1, f"variation {k + 1}: uint8 difference {uint8_diff}"
    # Distinct seeds give distinct images within the batch.
    assert np.abs(batch[0] - batch[1]).max() > 0.01


def test_tokenizer_files_load_and_tokenize_prompts(tmp_path: Path) -> None:
    write_clip_tokenizer(tmp_path)
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77)
    pretrained = CLIPTokenizer.from_pretrained(str(tmp_path))

    ids = tokenizer(PROMPT).input_ids
    assert pretrained(PROMPT).input_ids == ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == PROMPT
    # Common words are single tokens; anything else still tokenizes, byte by byte at worst.
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert {"portrait</w>", "woman</w>", "red</w>", "hair</w>"} <= set(pieces)
    assert tokenizer.decode(tokenizer("Zürich 😀 42").input_ids, skip_special_tokens=True) == "zürich 😀 4 2"

    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert len(tokenizer) == len(vocab) <= 1000
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (len(vocab) - 2, len(vocab) - 1)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id

    padded = tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77 and padded[: len(ids)] == ids
    assert set(padded[len(ids) :]) == {tokenizer.pad_token_id}
    long = tokenizer("portrait " * 200, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(long) == 77 and long[0] == tokenizer.bos_token_id and long[-1] == tokenizer.eos_token_id


def test_special_ids_match_the_text_encoders(saved: tuple[str, Path], pipe: Any) -> None:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if saved[0] == "sdxl":
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    for tokenizer, encoder in pairs:
        config = encoder.config
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )
        assert config.eos_token_id != 2  # no legacy "highest id is EOS" pooling
        assert len(tokenizer) <= config.vocab_size
        assert tokenizer.model_max_length == config.max_position_embeddings == 77
    # The saved tokenizer folders also carry CLIP's vocab.json and merges.txt.
    assert (saved[1] / "tokenizer" / "vocab.json").is_file()
    assert (saved[1] / "tokenizer" / "merges.txt").is_file()


def test_build_is_deterministic_and_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    first = build_tiny_pipeline("sd15", tmp_path / "a")
    assert torch.equal(torch.rand(4), expected)
    second = build_tiny_pipeline("sd15", tmp_path / "b")
    other = build_tiny_pipeline("sd15", tmp_path / "c", seed=1)
    assert safetensors_bytes(first) == safetensors_bytes(second)
    assert safetensors_bytes(first).keys() == safetensors_bytes(other).keys()
    assert all(safetensors_bytes(first)[k] != v for k, v in safetensors_bytes(other).items())


def test_a_failed_build_leaves_nothing_and_a_rebuild_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "tiny-sd15"

    def crash(self: Any, save_directory: str, **kwargs: Any) -> None:
        Path(save_directory).mkdir(parents=True)
        (Path(save_directory) / "model_index.json").write_text("{}")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(StableDiffusionPipeline, "save_pretrained", crash)
        with pytest.raises(OSError, match="disk full"):
            build_tiny_pipeline("sd15", dest)
    assert list(tmp_path.iterdir()) == []

    build_tiny_pipeline("sd15", dest)
    (dest / "stale").write_text("from the previous build")
    build_tiny_pipeline("sd15", dest)
    assert not (dest / "stale").exists() and (dest / "model_index.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-sd15"]


def test_ensure_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ensure_tiny_pipeline("sd15", tmp_path / "models")
    assert path == tmp_path / "models" / "tiny-sd15"
    built_at = (path / "model_index.json").stat().st_mtime_ns

    def must_not_build(family: str, dest: Path, *, seed: int = 0) -> Path:
        raise AssertionError("rebuilt a model that was already there")

    monkeypatch.setattr(jobs.tiny, "build_tiny_pipeline", must_not_build)
    assert ensure_tiny_pipeline("sd15", tmp_path / "models") == path
    assert (path / "model_index.json").stat().st_mtime_ns == built_at
    assert type(DiffusionPipeline.from_pretrained(str(path))) is StableDiffusionPipeline


def test_ensure_is_safe_when_callers_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = jobs.tiny.build_tiny_pipeline
    builds: list[Path] = []

    def counting_build(family: str, dest: Path, *, seed: int = 0) -> Path:
        builds.append(dest)
        return real_build(family, dest, seed=seed)

    monkeypatch.setattr(jobs.tiny, "build_tiny_pipeline", counting_build)
    models = tmp_path / "models"
    # A builder killed mid-way left its scratch folder behind: it is cleared, not mistaken for a model.
    models.mkdir()
    (models / ".tiny-sd15.dead.tmp" / "model").mkdir(parents=True)
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_tiny_pipeline("sd15", models))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert results == [models / "tiny-sd15"] * 3
    assert builds == [models / "tiny-sd15"]
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["tiny-sd15"]
