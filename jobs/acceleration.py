"""The fast path: what a freshly loaded pipeline is switched to on CUDA, each step saying what it did.

Every switch keeps the images the same (bit for bit, or to within the kernels' rounding): SDPA attention,
channels-last weights, fused QKV projections, regional `torch.compile` warmed up at load, and VAE tiling
or slicing chosen per call for large images only. `FastPath.for_device` turns them all off away from
CUDA, where they are slower or unsupported. Blocking, like the rest of the worker's torch code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from jobs.settings import WorkerSettings
from router.catalog import IMAGE_FAMILIES

log = logging.getLogger(__name__)

# Where the per-call VAE limits live: on the VAE itself, so a derived twin (img2img, sharing the VAE)
# decodes by the same rule.
VAE_LIMITS = "likeness_vae_limits"
WARM_UP_STEPS = 2
WARM_UP_PROMPT = "warm-up"
_DEFAULTS = WorkerSettings.model_fields


@dataclass(frozen=True)
class FastPath:
    """Which speed-ups a pipeline gets. The defaults are CUDA's; `off()` is every other device's."""

    channels_last: bool = True
    fuse_qkv: bool = True
    compile: bool = True
    vae_tile_above_px: int = int(_DEFAULTS["vae_tile_above_px"].default)
    vae_slice_above_px: int = int(_DEFAULTS["vae_slice_above_px"].default)
    compile_options: tuple[tuple[str, Any], ...] = ()  # extra torch.compile arguments (tests: a backend)

    @classmethod
    def off(cls) -> FastPath:
        return cls(
            channels_last=False, fuse_qkv=False, compile=False, vae_tile_above_px=0, vae_slice_above_px=0
        )

    @classmethod
    def for_device(cls, device: str) -> FastPath:
        return cls() if device == "cuda" else cls.off()

    @classmethod
    def from_settings(cls, settings: WorkerSettings, device: str) -> FastPath:
        if device != "cuda":
            return cls.off()
        return cls(
            channels_last=settings.channels_last,
            fuse_qkv=settings.fuse_qkv,
            compile=settings.torch_compile,
            vae_tile_above_px=settings.vae_tile_above_px,
            vae_slice_above_px=settings.vae_slice_above_px,
        )


@dataclass(frozen=True)
class Step:
    """One switch: whether it is now on, and what was done or why not."""

    name: str
    on: bool
    detail: str
    added_bytes: int = 0  # memory the switch adds to the pipeline (the fused copies of QKV projections)


@dataclass
class Report:
    """What the fast path did to one pipeline."""

    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def applied(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps if step.on)

    @property
    def added_bytes(self) -> int:
        """Memory the switches that are on add to the pipeline: the memory budget must count it."""
        return sum(step.added_bytes for step in self.steps if step.on)

    def summary(self) -> str:
        parts = [f"{s.name} {'on' if s.on else 'off'} ({s.detail})" for s in self.steps]
        return "; ".join(parts) + f"; {self.seconds:.1f}s"


@dataclass(frozen=True)
class VaeLimits:
    """Above how many pixels a decode tiles (per image) or slices (images × pixels); 0 = never."""

    tile_above_px: int
    slice_above_px: int


@dataclass(frozen=True)
class VaeMode:
    tiled: bool
    sliced: bool


def accelerate(
    pipeline: Any,
    family: str,
    fast: FastPath,
    warm_up_sizes: Iterable[tuple[int, int, int]] | None = None,
    *,
    attach: Callable[[Any], Step] | None = None,
) -> Report:
    """Apply `fast` to a pipeline already on its device; the report lists every switch.

    SDPA is checked for any pipeline. The rest applies to image families (txt2img and vary), whose call
    the warm-up knows. `warm_up_sizes` are (width, height, images) calls run after compiling; by default
    the pipeline's native size alone and then a 2:3 portrait of two, so the compiled blocks have seen
    two shapes (torch then compiles them shape-generic) before the first user arrives.

    `attach` loads an identity adapter into the pipeline (jobs/worker.py): after the fusing, which would
    replace the adapter's attention processors, and before compiling, so the blocks are compiled and
    warmed up with the adapter in place (with one and with two faces) and the first identity job pays
    for no compile. The fused copies the adapter's processors do not use are freed again.
    """
    started = time.perf_counter()
    report = Report(steps=[ensure_sdpa(pipeline)])
    if family not in IMAGE_FAMILIES:
        report.steps.append(Step("fast path", False, f"not applied to {family} pipelines"))
    else:
        if fast.channels_last:
            report.steps.append(use_channels_last(pipeline))
        if fast.fuse_qkv:
            report.steps.append(fuse_qkv(pipeline))
        if attach is not None:
            attached = attach(pipeline)
            report.steps.append(attached)
            if attached.on and fast.fuse_qkv:
                report.steps = [_without_unused_fusions(pipeline, step) for step in report.steps]
        if fast.vae_tile_above_px or fast.vae_slice_above_px:
            report.steps.append(
                set_vae_limits(pipeline, VaeLimits(fast.vae_tile_above_px, fast.vae_slice_above_px))
            )
        if fast.compile:
            compiled = compile_denoiser(pipeline, **dict(fast.compile_options))
            report.steps.append(compiled)
            if compiled.on:
                sizes = list(warm_up_sizes) if warm_up_sizes is not None else default_warm_up_sizes(pipeline)
                warmed = warm_up(pipeline, sizes)
                report.steps.append(warmed)
                if not warmed.on:  # a compile that fails its warm-up would fail the first job: undo it
                    report.steps.remove(compiled)
                    report.steps.append(uncompile_denoiser(pipeline, "undone: the warm-up failed"))
    report.seconds = time.perf_counter() - started
    return report


# --- attention ---------------------------------------------------------------------------------------


def ensure_sdpa(pipeline: Any) -> Step:
    """Attention through PyTorch's scaled_dot_product_attention (diffusers' default `AttnProcessor2_0`).

    Layers a checkpoint or a caller switched to the classic processor (which materialises the attention
    matrix) are switched back, unless the layer does not scale its queries (`scale_qk=False`, which SDPA
    would); every other processor (IP-Adapter, fused) is left alone.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    total = restored = 0
    for name in ("unet", "transformer", "vae"):
        model = getattr(pipeline, name, None)
        if not isinstance(model, torch.nn.Module):
            continue
        for module in model.modules():
            if not isinstance(module, Attention):
                continue
            total += 1
            if type(module.processor) is AttnProcessor and module.scale_qk:
                module.set_processor(AttnProcessor2_0())
                restored += 1
    if not total:
        return Step("sdpa", False, "no diffusers attention layers")
    detail = f"{total} attention layers"
    if restored:
        detail += f", {restored} switched back from the classic processor"
    return Step("sdpa", True, detail)


def fuse_qkv(pipeline: Any) -> Step:
    """One matmul for query, key and value in self-attention (key and value in cross-attention).

    Keeps the separate projections too (IP-Adapter processors and `unfuse_qkv` use them), so the fused
    copies cost memory (about 1.3 GB for SDXL in half precision): the detail says how many parameters
    they add, and `added_bytes` how many bytes, which the pipeline cache adds to its memory budget.
    """
    from diffusers import AutoencoderKL

    unet = getattr(pipeline, "unet", None)
    if unet is None or not hasattr(pipeline, "fuse_qkv_projections"):
        return Step("fused_qkv", False, f"{type(pipeline).__name__} has no UNet projections to fuse")
    before, before_bytes = _parameters(pipeline), _parameter_bytes(pipeline)
    with_vae = isinstance(getattr(pipeline, "vae", None), AutoencoderKL)
    try:
        pipeline.fuse_qkv_projections(unet=True, vae=with_vae)
    except ValueError as exc:  # e.g. added KV projections
        return Step("fused_qkv", False, str(exc))
    added = _parameters(pipeline) - before
    return Step(
        "fused_qkv",
        True,
        f"UNet{' and VAE' if with_vae else ''}, +{added / 1e6:.1f}M parameters",
        added_bytes=_parameter_bytes(pipeline) - before_bytes,
    )


def _without_unused_fusions(pipeline: Any, step: Step) -> Step:
    """`step` again, less the fused copies no processor uses any more (freed here): after an identity
    adapter is loaded, its processors project key and value of cross-attention separately."""
    if step.name != "fused_qkv" or not step.on:
        return step
    from diffusers.models.attention_processor import Attention

    freed = 0
    for model in (getattr(pipeline, "unet", None), getattr(pipeline, "vae", None)):
        if not isinstance(model, torch.nn.Module):
            continue
        for module in model.modules():
            if not isinstance(module, Attention) or "Fused" in type(module.processor).__name__:
                continue
            for name in ("to_qkv", "to_kv"):
                fused = getattr(module, name, None)
                if isinstance(fused, torch.nn.Module):
                    freed += sum(p.numel() * p.element_size() for p in fused.parameters())
                    delattr(module, name)
            module.fused_projections = False
    if not freed:
        return step
    return Step(
        step.name,
        True,
        f"{step.detail}, {freed / 2**20:.1f} MiB of it freed again (the identity adapter's "
        "cross-attention projects separately)",
        added_bytes=step.added_bytes - freed,
    )


def unfuse_qkv(pipeline: Any) -> Step:
    """Back to separate projections (the fused copies are freed)."""
    unet = getattr(pipeline, "unet", None)
    if unet is None or not getattr(pipeline, "fusing_unet", False):
        return Step("fused_qkv", False, "was not fused")
    with_vae = bool(getattr(pipeline, "fusing_vae", False))
    pipeline.unfuse_qkv_projections(unet=True, vae=with_vae)
    for model in (unet, pipeline.vae if with_vae else None):
        if model is None:
            continue
        for module in model.modules():
            for name in ("to_qkv", "to_kv"):
                if hasattr(module, name):
                    delattr(module, name)
            if hasattr(module, "fused_projections"):
                module.fused_projections = False
    return Step("fused_qkv", False, "unfused")


def _parameters(pipeline: Any) -> int:
    return sum(
        sum(p.numel() for p in model.parameters())
        for model in (getattr(pipeline, "unet", None), getattr(pipeline, "vae", None))
        if isinstance(model, torch.nn.Module)
    )


def _parameter_bytes(pipeline: Any) -> int:
    return sum(
        sum(p.numel() * p.element_size() for p in model.parameters())
        for model in (getattr(pipeline, "unet", None), getattr(pipeline, "vae", None))
        if isinstance(model, torch.nn.Module)
    )


# --- memory format -----------------------------------------------------------------------------------


def use_channels_last(pipeline: Any, on: bool = True) -> Step:
    """UNet and VAE convolution weights in NHWC: cuDNN's fast layout for half-precision convolutions.

    Tensor.to keeps the layout, so it survives moves between host and GPU.
    """
    layout = torch.channels_last if on else torch.contiguous_format
    moved = []
    for name in ("unet", "vae"):
        model = getattr(pipeline, name, None)
        if isinstance(model, torch.nn.Module):
            model.to(memory_format=layout)
            moved.append(name)
    if not moved:
        return Step("channels_last", False, "no UNet or VAE")
    return Step("channels_last", on, " and ".join(moved) if on else "back to contiguous")


# --- the VAE, per call -------------------------------------------------------------------------------


def set_vae_limits(pipeline: Any, limits: VaeLimits) -> Step:
    vae = getattr(pipeline, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling") or not hasattr(vae, "enable_slicing"):
        return Step("vae_limits", False, "the VAE cannot tile or slice")
    setattr(vae, VAE_LIMITS, limits)
    tile = f"tiles above {_megapixels(limits.tile_above_px)}" if limits.tile_above_px else "never tiles"
    slices = (
        f"slices above {_megapixels(limits.slice_above_px)} per batch"
        if limits.slice_above_px
        else "never slices"
    )
    return Step("vae_limits", True, f"{tile}, {slices}")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def fit_vae(pipeline: Any, width: int, height: int, images: int) -> VaeMode:
    """Tile and slice this call's decode only if it is large; a pipeline without limits is left as is.

    Below the limits the decode is the plain one, so ordinary portraits come out bit-identical.
    """
    vae = getattr(pipeline, "vae", None)
    limits: VaeLimits | None = getattr(vae, VAE_LIMITS, None)
    if vae is None or limits is None:
        return VaeMode(
            tiled=bool(getattr(vae, "use_tiling", False)), sliced=bool(getattr(vae, "use_slicing", False))
        )
    pixels = width * height
    mode = VaeMode(
        tiled=bool(limits.tile_above_px) and pixels > limits.tile_above_px,
        sliced=bool(limits.slice_above_px) and images > 1 and images * pixels > limits.slice_above_px,
    )
    vae.enable_tiling() if mode.tiled else vae.disable_tiling()
    vae.enable_slicing() if mode.sliced else vae.disable_slicing()
    return mode


# --- compiling -----------------------------------------------------------------------------------------


def _denoiser(pipeline: Any) -> Any:
    for name in ("unet", "transformer"):
        model = getattr(pipeline, name, None)
        if isinstance(model, torch.nn.Module):
            return model
    return None


def _repeated_blocks(model: Any) -> list[torch.nn.Module]:
    names = getattr(model, "_repeated_blocks", None) or ()
    return [module for module in model.modules() if type(module).__name__ in names]


def compile_denoiser(pipeline: Any, **options: Any) -> Step:
    """torch.compile the denoiser: its repeated blocks alone where diffusers knows them (regional
    compilation: one compiled graph reused by every block, so compiling takes seconds, not minutes),
    else the whole model. Compiling is lazy: the warm-up pays for it."""
    model = _denoiser(pipeline)
    if model is None:
        return Step("compile", False, "no UNet or transformer")
    options = {"fullgraph": True, **options}
    blocks = _repeated_blocks(model)
    if blocks and hasattr(model, "compile_repeated_blocks"):
        model.compile_repeated_blocks(**options)
        kinds = sorted({type(block).__name__ for block in blocks})
        return Step("compile", True, f"regional: {len(blocks)} × {', '.join(kinds)}")
    model.compile(**options)
    return Step("compile", True, f"whole {type(model).__name__}")


def uncompile_denoiser(pipeline: Any, why: str = "undone") -> Step:
    """Undo `compile_denoiser`: modules run eagerly again."""
    model = _denoiser(pipeline)
    if model is None:
        return Step("compile", False, "no UNet or transformer")
    # nn.Module.compile() keeps the compiled call in `_compiled_call_impl`; None is eager again.
    for module in [model, *_repeated_blocks(model)]:
        module._compiled_call_impl = None
    return Step("compile", False, why)


def default_warm_up_sizes(pipeline: Any) -> list[tuple[int, int, int]]:
    side = int(getattr(pipeline, "default_sample_size", 0) or 0) * int(
        getattr(pipeline, "vae_scale_factor", 8)
    )
    side = side or 1024
    portrait = (max(64, side * 5 // 6 // 64 * 64), max(64, side * 5 // 4 // 64 * 64))
    return [(side, side, 1), (*portrait, 2)]


def warm_up(pipeline: Any, sizes: Iterable[tuple[int, int, int]]) -> Step:
    """Run a short generation per size (latents only, no decode) so compiling happens now.

    With an identity adapter loaded, every size is run with one face's zero embeddings, then the last
    size again with two faces: torch specialises a dimension of size 1, so one face (which jobs without
    faces use too) and several faces are separate graphs, each made shape-generic here. The strength is
    a tensor (jobs/adapter_strength.py), so no strength compiles again either.
    """
    from jobs.identity import has_ip_adapter, zero_identity_kwargs

    calls = [(width, height, images, 1) for width, height, images in sizes]
    identity = has_ip_adapter(pipeline)
    if identity and calls:
        calls.append((*calls[-1][:3], 2))
    started = time.perf_counter()
    done = []
    try:
        for width, height, images, faces in calls:
            extra: dict[str, Any] = {}
            if identity:
                extra = zero_identity_kwargs(pipeline, references=faces, strength=0.5)
            with torch.inference_mode():
                pipeline(
                    prompt=WARM_UP_PROMPT,
                    num_inference_steps=WARM_UP_STEPS,
                    width=width,
                    height=height,
                    num_images_per_prompt=images,
                    generator=torch.Generator(device="cpu").manual_seed(0),
                    output_type="latent",
                    **extra,
                )
            with_faces = f" ({faces} face{'s' if faces > 1 else ''})" if identity else ""
            done.append(f"{images}×{width}×{height}{with_faces}")
    except Exception as exc:  # a compiler error must not take the worker down; eager still works
        log.warning("warm-up of the compiled pipeline failed; running it uncompiled", exc_info=True)
        return Step("warm_up", False, f"{type(exc).__name__}: {str(exc)[:200]}")
    return Step("warm_up", True, f"{', '.join(done)} in {time.perf_counter() - started:.1f}s")
