"""Identity conditioning: an IP-Adapter on a resident SDXL pipeline, fed one or two reference faces.

The adapter is loaded with diffusers' own `load_ip_adapter` (no custom attention code), once per resident
pipeline. The layout we target is IP-Adapter *Plus Face* for SDXL (`h94/IP-Adapter`, `sdxl_models/
ip-adapter-plus-face_sdxl_vit-h.safetensors`, image encoder `models/image_encoder`, a ViT-H): a Resampler
(diffusers' `IPAdapterPlusImageProjection`) turns the image encoder's *penultimate* hidden states into a
few extra tokens, and every cross-attention layer of the UNet gets `to_k_ip` / `to_v_ip` projections that
attend to them, weighted by the adapter scale.

For tests and for hosts without real weights, `build_tiny_ip_adapter` writes a random-weight adapter of
the same layout, shaped for the tiny SDXL UNet of `jobs.tiny`, plus a tiny CLIP vision encoder, in the
folder layout of the real repository, so the real loader runs end to end with no download.

Mixed jobs on one resident pipeline. Once an adapter is loaded, the UNet *requires* image embeddings on
every call (diffusers raises without them). A job without characters therefore passes
`no_identity_kwargs`: zero image embeddings at strength 0. The strength is held in tensors on the value
projections of the image branch (jobs/adapter_strength.py), not in the processors' Python floats, so a
compiled UNet serves every strength and both kinds of job with one graph. At strength 0 the image branch
adds exact zeros and its text branch is the same arithmetic as the plain `AttnProcessor2_0`, so such a
job gives the same pixels, bit for bit, as the same job on a pipeline that never loaded an adapter (the
tests check this).

torch, diffusers and transformers are imported inside the functions that need them: importing this
module is cheap.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.tiny import build_once, ensure_tiny_pipeline, replace_dir, scratch_dir

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "MAX_REFERENCE_FACES",
    "PLUS_FACE_SDXL",
    "TINY_ADAPTER_DIR",
    "AdapterSource",
    "AdapterWeightsMissing",
    "attach_ip_adapter",
    "attached_source",
    "build_tiny_ip_adapter",
    "ensure_tiny_ip_adapter",
    "has_ip_adapter",
    "identity_kwargs",
    "no_identity_kwargs",
    "plus_projection_to_original_layout",
    "tiny_adapter_source",
    "zero_identity_kwargs",
]

# The real repository's layout, which the tiny adapter copies: the weights in `sdxl_models/`, the image
# encoder in `models/image_encoder` (a path with a slash: diffusers then reads it from the repo root,
# not from inside `subfolder`).
SUBFOLDER = "sdxl_models"
IMAGE_ENCODER_FOLDER = "models/image_encoder"
PLUS_FACE_WEIGHT = "ip-adapter-plus-face_sdxl_vit-h.safetensors"
TINY_WEIGHT = "ip-adapter-plus-face_sdxl_tiny.safetensors"
TINY_ADAPTER_DIR = "tiny-ip-adapter"
# Written last into a tiny adapter: its presence means the folder is complete.
TINY_MANIFEST = "likeness-tiny-ip-adapter.json"

# More reference images add tokens to every cross-attention layer; two covers "face + another angle".
MAX_REFERENCE_FACES = 4

# The tiny image encoder: a ViT with the real one's structure (CLS token + patches, pre-LN layers, a
# projection head), 32 x 32 inputs in 4 x 4 patches -> 65 tokens of 32 features. It needs at least two
# layers, since the Plus adapter reads the penultimate hidden states.
_ENCODER_IMAGE_SIZE = 32
_ENCODER_PATCH = 4
_ENCODER_HIDDEN = 32
_ENCODER_LAYERS = 3
_ENCODER_HEADS = 4
_ENCODER_PROJECTION = 32
# The tiny Resampler. diffusers' loader fixes depth (4) and the head size (64) and infers the rest from
# the tensors' shapes: heads = rows of to_q / 64, queries = latents' length, width = latents' features.
_RESAMPLER_DEPTH = 4
_RESAMPLER_DIM_HEAD = 64
_RESAMPLER_HEADS = 1
_RESAMPLER_WIDTH = 32
_RESAMPLER_QUERIES = 4  # the real Plus Face has 16
_RESAMPLER_FFN_RATIO = 4


class AdapterWeightsMissing(RuntimeError):
    """The IP-Adapter or its image encoder is not on this worker; the message says how to get it."""


@dataclass(frozen=True)
class AdapterSource:
    """Where an IP-Adapter comes from, in the terms of diffusers' `load_ip_adapter`.

    `repo` is a Hugging Face repo id (read from the local HF cache only: workers never download on the
    fly) or a local folder with the same layout. `subfolder` / `weight_name` locate the adapter weights;
    `image_encoder_folder` is the CLIP vision encoder: a bare folder name is looked up inside
    `subfolder`, a path with a slash from the root of `repo` (diffusers' rule).
    """

    repo: str
    subfolder: str = SUBFOLDER
    weight_name: str = PLUS_FACE_WEIGHT
    image_encoder_folder: str = IMAGE_ENCODER_FOLDER

    def __post_init__(self) -> None:
        if not self.repo.strip():
            raise ValueError("an IP-Adapter source needs a repo id or a local folder")
        if not self.weight_name.endswith((".safetensors", ".bin")):
            raise ValueError(f"IP-Adapter weights must be .safetensors or .bin, not {self.weight_name!r}")
        if not self.image_encoder_folder.strip():
            raise ValueError("an IP-Adapter source needs its image encoder folder")


# IP-Adapter Plus Face for SDXL, with the ViT-H encoder it was trained with.
PLUS_FACE_SDXL = AdapterSource(repo="h94/IP-Adapter")


# --------------------------------------------------------------------------------------------------
# Loading into a resident pipeline and building the call's keyword arguments
# --------------------------------------------------------------------------------------------------

# Which source each pipeline got, without touching the pipeline object's own attributes (diffusers
# pipelines route attribute writes through their config). Weak keys: a dropped pipeline is forgotten.
_attached: weakref.WeakKeyDictionary[Any, AdapterSource] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def has_ip_adapter(pipeline: Any) -> bool:
    """Whether the pipeline's UNet has an IP-Adapter loaded (by us or by anyone)."""
    unet = getattr(pipeline, "unet", None)
    if unet is None:
        return False
    return (
        getattr(unet, "encoder_hid_proj", None) is not None
        and getattr(unet.config, "encoder_hid_dim_type", None) == "ip_image_proj"
    )


def attached_source(pipeline: Any) -> AdapterSource | None:
    """The source `attach_ip_adapter` loaded into this pipeline, or None."""
    source = _attached.get(pipeline)
    return source if source is not None and has_ip_adapter(pipeline) else None


def attach_ip_adapter(pipeline: Any, source: AdapterSource) -> None:
    """Load the IP-Adapter of `source` (and its image encoder) into a resident pipeline, once.

    A second call with the same source is a no-op. A different source on a pipeline that already has an
    adapter is refused (ValueError): swapping adapters under a resident pipeline is a reload, the
    caller's decision. Only local files are read (the HF cache for a repo id); a missing adapter raises
    AdapterWeightsMissing with the command that fetches it. The image encoder is loaded in the pipeline's
    dtype and moved to its device; attach after `pipeline.to(device)`.
    """
    with _attach_lock:
        current = attached_source(pipeline)
        if current == source:
            return
        if current is not None or has_ip_adapter(pipeline):
            raise ValueError(
                f"this pipeline already has an IP-Adapter ({current or 'loaded elsewhere'}); "
                f"load {source.repo} into a fresh pipeline instead"
            )
        if not hasattr(pipeline, "load_ip_adapter"):
            raise ValueError(f"{type(pipeline).__name__} cannot take an IP-Adapter")
        local = _local_folder(source.repo)
        try:
            pipeline.load_ip_adapter(
                str(local) if local is not None else source.repo,
                subfolder=source.subfolder,
                weight_name=source.weight_name,
                image_encoder_folder=source.image_encoder_folder,
                local_files_only=True,
            )
        except OSError as exc:  # the hub's "not in the cache" errors are OSErrors too
            what = (
                f"IP-Adapter {source.subfolder}/{source.weight_name} or its image encoder "
                f"{source.image_encoder_folder} is not in {source.repo} on this worker ({type(exc).__name__})"
            )
            if local is not None:
                how = "put the adapter's files there, or point the profile at another folder"
            else:
                how = (
                    f"download them once with `huggingface-cli download {source.repo} "
                    f"--include '{source.subfolder}/{source.weight_name}' '{source.image_encoder_folder}/*'`"
                    " or point the profile at a local folder"
                )
            raise AdapterWeightsMissing(f"{what}; {how}") from exc
        from jobs.adapter_strength import hold_strength_in_tensors

        hold_strength_in_tensors(pipeline.unet)
        _attached[pipeline] = source


def identity_kwargs(
    pipeline: Any, faces: Sequence[PIL.Image.Image], scale: float, batch: int
) -> dict[str, Any]:
    """The extra pipeline-call kwargs that condition a job on reference faces.

    Sets the adapter's strength on the pipeline (it is state of the UNet, so it must be set for every
    job) and returns `{"ip_adapter_image": [faces]}`: one entry for the one loaded
    adapter, holding all the faces. Several faces are *several images for a single adapter*: diffusers
    encodes each, projects each to its own tokens, and concatenates the tokens, so every cross-attention
    layer attends over all faces at once (a soft blend weighted by attention, not an average of
    embeddings). The pipeline repeats the conditioning for each of its `num_images_per_prompt` images
    itself; `batch` (the number of variations) is only checked.
    """
    if not faces:
        raise ValueError("identity conditioning needs at least one reference face")
    if len(faces) > MAX_REFERENCE_FACES:
        raise ValueError(f"at most {MAX_REFERENCE_FACES} reference faces per job, got {len(faces)}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"the IP-Adapter scale must be a finite number >= 0, not {scale}")
    _check_batch(batch)
    _require_single_adapter(pipeline)
    _set_strength(pipeline, scale)
    # RGB copies: the caller's images are never touched, and grayscale references work.
    images = [face.convert("RGB") for face in faces]
    return {"ip_adapter_image": [images]}


def no_identity_kwargs(pipeline: Any, batch: int) -> dict[str, Any]:
    """The extra kwargs for a job WITHOUT reference faces; `{}` on a pipeline with no adapter.

    With an adapter loaded the UNet refuses to run without image embeddings, so this passes zero
    embeddings at strength 0, which adds exact zeros to every cross-attention layer: the pixels equal
    those of a pipeline that never loaded the adapter. `batch` is only checked: the pipeline repeats the
    embeddings per image itself.
    """
    _check_batch(batch)
    if not has_ip_adapter(pipeline):
        return {}
    return zero_identity_kwargs(pipeline, references=1, strength=0.0)


def zero_identity_kwargs(pipeline: Any, *, references: int, strength: float) -> dict[str, Any]:
    """Zero image embeddings for `references` reference images, at `strength`: the smallest input the
    projection accepts per image (one token), laid out as [negative, positive] for classifier-free
    guidance; without guidance the pipeline keeps both halves, which is harmless. The compile warm-up
    uses them to run the identity path with one and with two faces before the first user does."""
    if not 1 <= references <= MAX_REFERENCE_FACES:
        raise ValueError(f"between 1 and {MAX_REFERENCE_FACES} reference images, not {references}")
    layers = _require_single_adapter(pipeline)
    _set_strength(pipeline, strength)
    return {"ip_adapter_image_embeds": [_zero_embeds(layer, references) for layer in layers]}


def _set_strength(pipeline: Any, strength: float) -> None:
    from jobs.adapter_strength import holds_strength, set_strength

    if holds_strength(pipeline.unet):
        set_strength(pipeline.unet, strength)
    else:  # an adapter loaded by someone else: diffusers' own scale (a recompile per value if compiled)
        pipeline.set_ip_adapter_scale(float(strength))


def _local_folder(repo: str) -> Path | None:
    """`repo` as a local folder when it names one (a path, not an `owner/name` hub id), else None."""
    path = Path(repo).expanduser()
    if path.is_absolute() or repo.startswith((".", "~")) or path.is_dir():
        return path
    return None


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise ValueError(f"a job makes at least one image, not {batch}")


def _require_single_adapter(pipeline: Any) -> Any:
    if not has_ip_adapter(pipeline):
        raise ValueError("this pipeline has no IP-Adapter: call attach_ip_adapter first")
    layers = pipeline.unet.encoder_hid_proj.image_projection_layers
    if len(layers) != 1:
        raise ValueError(f"expected one IP-Adapter on the pipeline, found {len(layers)}")
    return layers


def _zero_embeds(layer: Any, references: int = 1) -> Any:
    """Zero image embeddings of `references` images that `layer` (one adapter's image projection)
    accepts, CFG layout."""
    import torch
    from diffusers.models.embeddings import (
        ImageProjection,
        IPAdapterFullImageProjection,
        IPAdapterPlusImageProjection,
    )

    weight = next(layer.parameters())  # the embeddings must match the UNet's dtype and device
    if isinstance(layer, IPAdapterPlusImageProjection):
        # [negative+positive, images, tokens, features]: encoder hidden states, here one token.
        shape: tuple[int, ...] = (2, references, 1, layer.proj_in.in_features)
    elif isinstance(layer, IPAdapterFullImageProjection):
        shape = (2, references, 1, layer.ff.net[0].proj.in_features)
    elif isinstance(layer, ImageProjection):
        # Plain IP-Adapter: one pooled image embedding per image.
        shape = (2, references, layer.image_embeds.in_features)
    else:
        raise NotImplementedError(f"no zero embeddings for {type(layer).__name__} (a FaceID adapter?)")
    return torch.zeros(shape, dtype=weight.dtype, device=weight.device)


# --------------------------------------------------------------------------------------------------
# The tiny random-weight adapter
# --------------------------------------------------------------------------------------------------


def tiny_adapter_source(path: Path) -> AdapterSource:
    """The AdapterSource of a tiny adapter built in `path`."""
    return AdapterSource(repo=str(path), weight_name=TINY_WEIGHT)


def build_tiny_ip_adapter(dest: Path, unet_config_source: Path, *, seed: int = 0) -> Path:
    """Build a tiny random-weight IP-Adapter Plus Face and a tiny CLIP vision encoder in `dest`.

    `unet_config_source` is the UNet it is for: a pipeline folder (with `unet/config.json`), a UNet
    folder, or its config.json. The layout copies `h94/IP-Adapter`:

        dest/sdxl_models/ip-adapter-plus-face_sdxl_tiny.safetensors   image_proj.* and ip_adapter.*
        dest/models/image_encoder/                                    CLIPVisionModelWithProjection +
                                                                      preprocessor_config.json
        dest/likeness-tiny-ip-adapter.json                            what was built (written last)

    so `pipeline.load_ip_adapter(str(dest), subfolder="sdxl_models", weight_name=..., image_encoder_folder=
    "models/image_encoder")` loads it (see `tiny_adapter_source`). The adapter tensors use the original
    IP-Adapter key names, which diffusers converts on load, exactly as for the real file.

    Deterministic: the same UNet config and seed give the same bytes. The global torch RNG is left as it
    was. Built in a temporary folder beside `dest` and renamed into place; an existing `dest` is
    replaced. Returns `dest`.
    """
    import torch
    from safetensors.torch import save_file

    dest = Path(dest)
    unet_config = _read_unet_config(Path(unet_config_source))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(dest) as tmp, torch.random.fork_rng(devices=[]):
        root = tmp / "adapter"
        encoder_dir = root / IMAGE_ENCODER_FOLDER
        encoder, processor = _tiny_image_encoder(seed)
        encoder.save_pretrained(str(encoder_dir), safe_serialization=True)
        processor.save_pretrained(str(encoder_dir))

        image_proj = _tiny_resampler(seed, output_dims=int(unet_config["cross_attention_dim"]))
        attn, processors = _tiny_ip_attention(unet_config, seed)
        tensors = {
            **{f"image_proj.{k}": v for k, v in plus_projection_to_original_layout(image_proj).items()},
            **{f"ip_adapter.{k}": v for k, v in attn.items()},
        }
        (root / SUBFOLDER).mkdir(parents=True)
        save_file(
            {k: v.detach().contiguous() for k, v in tensors.items()},
            str(root / SUBFOLDER / TINY_WEIGHT),
            metadata={"format": "pt"},
        )
        manifest = {
            "what": "tiny random-weight IP-Adapter Plus Face (SDXL layout), built by likeness",
            "seed": seed,
            "weight": f"{SUBFOLDER}/{TINY_WEIGHT}",
            "image_encoder": IMAGE_ENCODER_FOLDER,
            "image_size": _ENCODER_IMAGE_SIZE,
            "encoder_hidden_size": _ENCODER_HIDDEN,
            "resampler": {
                "width": _RESAMPLER_WIDTH,
                "heads": _RESAMPLER_HEADS,
                "depth": _RESAMPLER_DEPTH,
                "queries": _RESAMPLER_QUERIES,
                "output_dims": int(unet_config["cross_attention_dim"]),
            },
            "cross_attention_processors": processors,
        }
        (root / TINY_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(root, dest)
    return dest


def ensure_tiny_ip_adapter(models_dir: Path) -> Path:
    """The tiny adapter for the tiny SDXL pipeline, under `models_dir/tiny-ip-adapter`, built if missing.

    Builds the tiny SDXL pipeline first if needed (the adapter is shaped for its UNet). Safe when several
    processes race: builders take a lock file, and the adapter appears by an atomic rename.
    """
    dest = Path(models_dir) / TINY_ADAPTER_DIR
    if _is_built(dest):
        return dest
    pipeline_dir = ensure_tiny_pipeline("sdxl", Path(models_dir))
    return build_once(dest, _is_built, lambda: build_tiny_ip_adapter(dest, pipeline_dir))


def plus_projection_to_original_layout(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers `IPAdapterPlusImageProjection` state dict, renamed to the original Resampler's keys.

    The inverse of what diffusers' loader does on load: `layers.i.ln0/ln1` -> `layers.i.0.norm1/norm2`,
    the attention's `to_q`, `to_k`+`to_v` (concatenated into `to_kv`) and `to_out.0` -> `layers.i.0.*`,
    the feed-forward `ff.0`, `ff.1.net.0.proj`, `ff.1.net.2` -> `layers.i.1.0`, `.1.1`, `.1.3`. Unknown
    keys raise, so a change in diffusers' module shows up here rather than as a silent mismatch.
    """
    import torch

    out: dict[str, Any] = {}
    kv: dict[str, dict[str, Any]] = {}
    # The original feed-forward is Sequential(LayerNorm, Linear, GELU, Linear): indices 0, 1 and 3.
    ff_names = {
        "0.weight": "0.weight",
        "0.bias": "0.bias",
        "1.net.0.proj.weight": "1.weight",
        "1.net.2.weight": "3.weight",
    }
    for name, value in state_dict.items():
        parts = name.split(".")
        if parts[0] != "layers":
            if parts[0] not in ("latents", "proj_in", "proj_out", "norm_out"):
                raise ValueError(f"unexpected key {name!r} in an IPAdapterPlusImageProjection")
            out[name] = value
            continue
        prefix, block, rest = f"layers.{parts[1]}", parts[2], ".".join(parts[3:])
        if block in ("ln0", "ln1"):
            out[f"{prefix}.0.norm{1 if block == 'ln0' else 2}.{rest}"] = value
        elif block == "attn" and rest == "to_q.weight":
            out[f"{prefix}.0.to_q.weight"] = value
        elif block == "attn" and rest in ("to_k.weight", "to_v.weight"):
            kv.setdefault(prefix, {})[rest[3]] = value
        elif block == "attn" and rest == "to_out.0.weight":
            out[f"{prefix}.0.to_out.weight"] = value
        elif block == "ff" and rest in ff_names:
            out[f"{prefix}.1.{ff_names[rest]}"] = value
        else:
            raise ValueError(f"unexpected key {name!r} in an IPAdapterPlusImageProjection")
    for prefix, pair in kv.items():
        # The original Resampler computes keys and values with one Linear: rows [keys; values].
        out[f"{prefix}.0.to_kv.weight"] = torch.cat([pair["k"], pair["v"]], dim=0)
    return out


def _read_unet_config(source: Path) -> dict[str, Any]:
    for candidate in (source / "unet" / "config.json", source / "config.json", source):
        if candidate.is_file():
            config: dict[str, Any] = json.loads(candidate.read_text(encoding="utf-8"))
            if "cross_attention_dim" not in config:
                raise ValueError(f"{candidate} is not a UNet config (no cross_attention_dim)")
            return config
    raise FileNotFoundError(f"no UNet config at {source} (looked for unet/config.json and config.json)")


def _tiny_image_encoder(seed: int) -> tuple[Any, Any]:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=_ENCODER_HIDDEN,
        intermediate_size=37,
        projection_dim=_ENCODER_PROJECTION,
        num_hidden_layers=_ENCODER_LAYERS,
        num_attention_heads=_ENCODER_HEADS,
        num_channels=3,
        image_size=_ENCODER_IMAGE_SIZE,
        patch_size=_ENCODER_PATCH,
        hidden_act="gelu",  # ViT-H (OpenCLIP) uses gelu, not OpenAI CLIP's quick_gelu
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(seed + 1)
    encoder = CLIPVisionModelWithProjection(config).eval()
    # diffusers builds its own processor from the encoder's image_size when the pipeline has none; this
    # one is saved for other readers of the folder (and documents the expected input).
    processor = CLIPImageProcessor(size=_ENCODER_IMAGE_SIZE, crop_size=_ENCODER_IMAGE_SIZE)
    return encoder, processor


def _tiny_resampler(seed: int, *, output_dims: int) -> dict[str, Any]:
    """The state dict of a random diffusers IPAdapterPlusImageProjection with the tiny shapes."""
    import torch
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    torch.manual_seed(seed)
    resampler = IPAdapterPlusImageProjection(
        embed_dims=_ENCODER_HIDDEN,  # the encoder's hidden states, not its projection, feed the Resampler
        output_dims=output_dims,
        hidden_dims=_RESAMPLER_WIDTH,
        depth=_RESAMPLER_DEPTH,
        dim_head=_RESAMPLER_DIM_HEAD,
        heads=_RESAMPLER_HEADS,
        num_queries=_RESAMPLER_QUERIES,
        ffn_ratio=_RESAMPLER_FFN_RATIO,
    )
    # LayerNorms start at weight 1, bias 0: perturb them so a wrong key mapping cannot load unnoticed.
    with torch.no_grad():
        for name, tensor in resampler.named_parameters():
            if "ln" in name or "norm" in name or ".ff.0." in name:
                tensor.add_(0.1 * torch.randn_like(tensor))
    return dict(resampler.state_dict())


def _tiny_ip_attention(unet_config: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], int]:
    """`to_k_ip` / `to_v_ip` for every cross-attention processor of the UNet, in diffusers' key order.

    The original IP-Adapter numbers all attention processors in `unet.attn_processors` order, so the
    cross-attention ones (`attn2`) get the odd ids 1, 3, 5, …; diffusers' loader reads them back in the
    same order. Each projects the image tokens (cross_attention_dim features) to the layer's width.
    """
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(dict(unet_config))
    generator = torch.Generator().manual_seed(seed + 2)
    tensors: dict[str, Any] = {}
    count = 0
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention: no image branch
        attention = unet.get_submodule(name.removesuffix(".processor"))
        width, cross = attention.to_k.out_features, attention.to_k.in_features
        key_id = 2 * count + 1
        bound = 1.0 / math.sqrt(cross)  # nn.Linear's default init range, drawn from our own generator
        for proj in ("to_k_ip", "to_v_ip"):
            weight = torch.empty(width, cross).uniform_(-bound, bound, generator=generator)
            tensors[f"{key_id}.{proj}.weight"] = weight
        count += 1
    if count == 0:
        raise ValueError("this UNet has no cross-attention layers to condition")
    return tensors, count


def _is_built(path: Path) -> bool:
    return (path / TINY_MANIFEST).is_file()
