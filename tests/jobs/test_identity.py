"""Identity conditioning: the tiny IP-Adapter loads offline through diffusers' real loader, and a resident
pipeline serves jobs with and without reference faces, the latter pixel-identical to a plain pipeline."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from PIL import Image
from safetensors.torch import load_file
from skimage import data
from transformers import CLIPVisionModelWithProjection

from jobs.adapter_strength import holds_strength
from jobs.identity import (
    MAX_REFERENCE_FACES,
    PLUS_FACE_SDXL,
    TINY_MANIFEST,
    TINY_WEIGHT,
    AdapterSource,
    AdapterWeightsMissing,
    attach_ip_adapter,
    attached_source,
    build_tiny_ip_adapter,
    ensure_tiny_ip_adapter,
    has_ip_adapter,
    identity_kwargs,
    no_identity_kwargs,
    plus_projection_to_original_layout,
    tiny_adapter_source,
)

PROMPT = "a portrait photo of a smiling woman with red hair"
SIZE = 192  # 24 x 24 latents: small, but every UNet level still sees more than one pixel
STEPS = 2


def offline(mp: pytest.MonkeyPatch) -> None:
    """No hub, and no network at all: any socket connection fails the test."""
    import huggingface_hub.constants

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    # The hub reads HF_HUB_OFFLINE when it is imported; set the constant it already holds as well.
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(_sock: socket.socket, address: Any) -> None:
        raise AssertionError(f"network access to {address} during an offline load")

    mp.setattr(socket.socket, "connect", refuse)


def face(kind: str) -> Image.Image:
    """The astronaut's centre, or the cameraman (grayscale), as a small reference image."""
    loader: Any = data.astronaut if kind == "astronaut" else data.camera  # skimage is untyped
    array = loader()
    image = Image.fromarray(array)
    side = min(image.size) // 2
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((64, 64), Image.Resampling.BICUBIC)


def load_tiny(path: Path) -> Any:
    pipeline = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(pipe: Any, extra: dict[str, Any], *, seeds: tuple[int, ...] = (7,), cfg: float = 5.0) -> Any:
    """One batched call, one CPU generator per seed, as the worker makes it; float pixels in [0, 1]."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    with torch.inference_mode():
        return pipe(
            PROMPT,
            num_images_per_prompt=len(seeds),
            generator=generators,
            num_inference_steps=STEPS,
            guidance_scale=cfg,
            width=SIZE,
            height=SIZE,
            output_type="np",
            **extra,
        ).images


def to_uint8(images: Any) -> Any:
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models gain nothing from threads, and with one thread the timing stays steady when other
    processes share the CPU (idle OpenMP workers spin, which makes oversubscription very slow)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity-models")


@pytest.fixture(scope="module")
def adapter_dir(models_dir: Path) -> Path:
    return ensure_tiny_ip_adapter(models_dir)


@pytest.fixture(scope="module")
def plain(models_dir: Path, adapter_dir: Path) -> Any:
    """A tiny SDXL pipeline that never sees an adapter."""
    with pytest.MonkeyPatch.context() as mp:
        offline(mp)
        return load_tiny(models_dir / "tiny-sdxl")


@pytest.fixture(scope="module")
def adapted(models_dir: Path, adapter_dir: Path) -> Any:
    """The same pipeline with the tiny adapter attached: the resident pipeline of a worker."""
    with pytest.MonkeyPatch.context() as mp:
        offline(mp)
        pipeline = load_tiny(models_dir / "tiny-sdxl")
        attach_ip_adapter(pipeline, tiny_adapter_source(adapter_dir))
        return pipeline


def test_tiny_adapter_has_the_real_repositorys_layout(adapter_dir: Path, models_dir: Path) -> None:
    assert (adapter_dir / "sdxl_models" / TINY_WEIGHT).is_file()
    encoder = adapter_dir / "models" / "image_encoder"
    assert {p.name for p in encoder.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    }
    manifest = json.loads((adapter_dir / TINY_MANIFEST).read_text())
    assert manifest["cross_attention_processors"] == 12  # the tiny SDXL UNet's attn2 layers
    tensors = load_file(str(adapter_dir / "sdxl_models" / TINY_WEIGHT))
    # The original IP-Adapter key names (diffusers converts them on load), as in the real file.
    assert {k.split(".")[0] for k in tensors} == {"image_proj", "ip_adapter"}
    assert tensors["image_proj.latents"].shape == (1, 4, 32)
    assert tensors["image_proj.layers.0.0.to_kv.weight"].shape == (128, 32)
    assert tensors["image_proj.proj_out.weight"].shape == (64, 32)  # to the UNet's cross_attention_dim
    ip_ids = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("ip_adapter.")})
    assert ip_ids == list(range(1, 24, 2))
    assert tensors["ip_adapter.1.to_k_ip.weight"].shape == (64, 64)
    # Built once: a second call finds it and leaves it alone; no scratch folders are left behind.
    before = (adapter_dir / TINY_MANIFEST).stat().st_mtime_ns
    assert ensure_tiny_ip_adapter(models_dir) == adapter_dir
    assert (adapter_dir / TINY_MANIFEST).stat().st_mtime_ns == before
    assert not [p for p in models_dir.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_build_is_deterministic_per_seed(adapter_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    unet = models_dir / "tiny-sdxl"
    rng_before = torch.random.get_rng_state()
    again = build_tiny_ip_adapter(tmp_path / "again", unet, seed=0)
    other = build_tiny_ip_adapter(tmp_path / "other", unet / "unet" / "config.json", seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)

    def weights(root: Path) -> dict[str, bytes]:
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*.safetensors"))}

    assert weights(again) == weights(adapter_dir)
    assert all(a != b for a, b in zip(weights(other).values(), weights(adapter_dir).values(), strict=True))
    # Rebuilding over an existing folder replaces it whole.
    assert build_tiny_ip_adapter(again, unet, seed=1) == again
    assert weights(again) == weights(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_load_ip_adapter_works_offline(
    models_dir: Path, adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline(monkeypatch)
    pipeline = load_tiny(models_dir / "tiny-sdxl")
    assert not has_ip_adapter(pipeline)
    source = tiny_adapter_source(adapter_dir)
    attach_ip_adapter(pipeline, source)

    assert has_ip_adapter(pipeline) and attached_source(pipeline) == source
    assert isinstance(pipeline.image_encoder, CLIPVisionModelWithProjection)
    assert pipeline.feature_extractor.crop_size["height"] == 32
    (projection,) = pipeline.unet.encoder_hid_proj.image_projection_layers
    assert isinstance(projection, IPAdapterPlusImageProjection)
    cross = {n: p for n, p in pipeline.unet.attn_processors.items() if n.endswith("attn2.processor")}
    assert len(cross) == 12
    assert all(isinstance(p, IPAdapterAttnProcessor2_0) and p.num_tokens == [4] for p in cross.values())
    # What diffusers loaded is what was saved, key for key: the renaming round-trips.
    saved = load_file(str(adapter_dir / "sdxl_models" / TINY_WEIGHT))
    loaded = plus_projection_to_original_layout(projection.state_dict())
    assert sorted(loaded) == sorted(
        k.removeprefix("image_proj.") for k in saved if k.startswith("image_proj.")
    )
    assert all(torch.equal(loaded[k], saved[f"image_proj.{k}"]) for k in loaded)
    first = next(iter(cross.values()))
    assert torch.equal(first.to_k_ip[0].weight, saved["ip_adapter.1.to_k_ip.weight"])


def test_attach_is_idempotent_and_refuses_a_second_adapter(adapted: Any, adapter_dir: Path) -> None:
    processors = dict(adapted.unet.attn_processors)
    encoder = adapted.image_encoder
    attach_ip_adapter(adapted, tiny_adapter_source(adapter_dir))
    assert adapted.image_encoder is encoder
    assert all(adapted.unet.attn_processors[n] is p for n, p in processors.items())
    with pytest.raises(ValueError, match="already has an IP-Adapter"):
        attach_ip_adapter(adapted, PLUS_FACE_SDXL)


def test_a_missing_adapter_says_how_to_get_it(
    models_dir: Path, adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline(monkeypatch)
    pipeline = load_tiny(models_dir / "tiny-sdxl")
    with pytest.raises(AdapterWeightsMissing, match="put the adapter's files there"):
        attach_ip_adapter(pipeline, AdapterSource(repo=str(models_dir / "nowhere")))
    # A hub id not in the (empty) cache: the message is the download command.
    monkeypatch.setenv("HF_HOME", str(models_dir / "empty-hf-home"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(models_dir / "empty-hf-home" / "hub"))
    with pytest.raises(AdapterWeightsMissing, match="huggingface-cli download h94/IP-Adapter --include"):
        attach_ip_adapter(pipeline, PLUS_FACE_SDXL)
    assert attached_source(pipeline) is None
    assert not has_ip_adapter(pipeline)


def test_kwargs_validate_their_input(adapted: Any, plain: Any) -> None:
    one = [face("astronaut")]
    with pytest.raises(ValueError, match="at least one reference"):
        identity_kwargs(adapted, [], 1.0, 1)
    with pytest.raises(ValueError, match=f"at most {MAX_REFERENCE_FACES}"):
        identity_kwargs(adapted, one * (MAX_REFERENCE_FACES + 1), 1.0, 1)
    for scale in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            identity_kwargs(adapted, one, scale, 1)
    with pytest.raises(ValueError, match="at least one image"):
        no_identity_kwargs(adapted, 0)
    with pytest.raises(ValueError, match="attach_ip_adapter first"):
        identity_kwargs(plain, one, 1.0, 1)
    # A pipeline without an adapter needs nothing extra for a job without faces.
    assert no_identity_kwargs(plain, 1) == {}
    with pytest.raises(ValueError, match="repo"):
        AdapterSource(repo=" ")


def test_a_reference_face_changes_the_image(adapted: Any) -> None:
    with_face = generate(adapted, identity_kwargs(adapted, [face("astronaut")], 1.0, 1))
    without = generate(adapted, no_identity_kwargs(adapted, 1))
    assert np.abs(with_face - without).mean() > 0.005


def test_same_seed_and_reference_give_the_same_pixels(adapted: Any) -> None:
    first = generate(adapted, identity_kwargs(adapted, [face("astronaut")], 0.8, 1))
    second = generate(adapted, identity_kwargs(adapted, [face("astronaut")], 0.8, 1))
    assert np.array_equal(first, second)


def test_scale_zero_with_a_reference_equals_no_reference(adapted: Any) -> None:
    # At strength 0 the image branch's values are zeros and it adds exact zeros: exactly equal.
    zero = generate(adapted, identity_kwargs(adapted, [face("astronaut")], 0.0, 1))
    without = generate(adapted, no_identity_kwargs(adapted, 1))
    assert np.array_equal(zero, without)


@pytest.mark.parametrize("strength", [0.35, 1.0, 1.6])
def test_the_strength_held_in_tensors_conditions_as_diffusers_own_scale_does(
    adapted: Any, models_dir: Path, adapter_dir: Path, strength: float
) -> None:
    """Scaling the image branch's values is scaling its output (attention is linear in its values):
    the pixels of diffusers' own processor scale, to within the rounding of the changed order."""
    assert holds_strength(adapted.unet)
    processors = [
        p for p in adapted.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)
    ]
    assert processors and all(p.scale == [1.0] for p in processors)
    source = tiny_adapter_source(adapter_dir)
    with pytest.MonkeyPatch.context() as mp:
        offline(mp)
        native = load_tiny(models_dir / "tiny-sdxl")
        native.load_ip_adapter(
            source.repo,
            subfolder=source.subfolder,
            weight_name=source.weight_name,
            image_encoder_folder=source.image_encoder_folder,
            local_files_only=True,
        )
    assert not holds_strength(native.unet)  # identity_kwargs falls back to diffusers' scale here
    reference = [face("astronaut")]
    ours = generate(adapted, identity_kwargs(adapted, reference, strength, 1))
    theirs = generate(native, identity_kwargs(native, reference, strength, 1))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    without = generate(adapted, no_identity_kwargs(adapted, 1))
    assert np.abs(ours - without).max() > 100 * 1e-5  # the strength did change the image


@pytest.mark.parametrize("cfg", [5.0, 1.0], ids=["cfg", "no-cfg"])
def test_a_resident_pipeline_serves_mixed_jobs(adapted: Any, plain: Any, cfg: float) -> None:
    """With, without, with a reference on one pipeline; the job without one is the plain pipeline's."""
    seeds = (11, 12)
    reference = [face("astronaut")]
    first = generate(adapted, identity_kwargs(adapted, reference, 1.0, 2), seeds=seeds, cfg=cfg)
    without = generate(adapted, no_identity_kwargs(adapted, 2), seeds=seeds, cfg=cfg)
    again = generate(adapted, identity_kwargs(adapted, reference, 1.0, 2), seeds=seeds, cfg=cfg)
    never = generate(plain, no_identity_kwargs(plain, 2), seeds=seeds, cfg=cfg)

    assert np.array_equal(without, never)  # bit for bit, not just the same uint8 pixels
    assert np.array_equal(first, again)
    assert not np.array_equal(to_uint8(first), to_uint8(without))


def test_two_references_in_one_call(adapted: Any) -> None:
    both = generate(adapted, identity_kwargs(adapted, [face("astronaut"), face("camera")], 1.0, 1))
    astronaut = generate(adapted, identity_kwargs(adapted, [face("astronaut")], 1.0, 1))
    camera = generate(adapted, identity_kwargs(adapted, [face("camera")], 1.0, 1))
    assert both.shape == astronaut.shape == (1, SIZE, SIZE, 3)
    assert not np.array_equal(to_uint8(both), to_uint8(astronaut))
    assert not np.array_equal(to_uint8(both), to_uint8(camera))
    # The same two faces again: the same pixels.
    repeat = generate(adapted, identity_kwargs(adapted, [face("astronaut"), face("camera")], 1.0, 1))
    assert np.array_equal(both, repeat)
