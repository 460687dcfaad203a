"""The identity adapter's strength held as a tensor, so one compiled graph serves every strength.

diffusers' IP-Adapter attention processor keeps its scale as a Python float on the module and skips the
image branch when it is 0. torch.compile guards on such a float: each new `--cw`, and each switch between
a job with faces and one without, recompiles the attention blocks (seconds to minutes on a GPU, inside a
user's job), and past dynamo's recompile limit the blocks silently run uncompiled from then on.

Here the processor's own scale stays 1 and the strength multiplies the output of the image branch's
value projections instead. Attention is linear in its values, so softmax(qKᵀ)(sV) = s·softmax(qKᵀ)V: the
same conditioning, one graph whatever the strength. At strength 0 the values are zeros, the image branch
adds exact zeros, and the pixels are those of a pipeline that never had an adapter (the tests check it).
The price is the image branch's small attention (a few tokens per layer) also for jobs without faces.

torch is imported here: jobs/identity.py imports this module inside its functions only.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["StrengthScaled", "hold_strength_in_tensors", "holds_strength", "set_strength"]


class StrengthScaled(torch.nn.Module):  # type: ignore[misc]  # torch is untyped here (pyproject)
    """A value projection whose output is multiplied by the adapter's strength (a 0-dim buffer)."""

    def __init__(self, projection: torch.nn.Module) -> None:
        super().__init__()
        self.projection = projection
        weight = next(projection.parameters())
        # Not persistent: the adapter's weights, as saved, stay those of the original layout.
        strength = torch.ones((), dtype=weight.dtype, device=weight.device)
        self.register_buffer("strength", strength, persistent=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.projection(hidden_states) * self.strength
        return out


def _image_branch_processors(unet: Any) -> list[Any]:
    """The UNet's IP-Adapter processors: those with image-branch projections and a list of scales."""
    processors = getattr(unet, "attn_processors", {}) or {}
    return [
        processor
        for processor in processors.values()
        if isinstance(getattr(processor, "to_v_ip", None), torch.nn.ModuleList)
        and isinstance(getattr(processor, "scale", None), list)
    ]


def hold_strength_in_tensors(unet: Any) -> None:
    """Move the strength of every IP-Adapter processor of `unet` into its value projections (again: a
    no-op; no adapter: nothing to do)."""
    for processor in _image_branch_processors(unet):
        for index, projection in enumerate(processor.to_v_ip):
            if not isinstance(projection, StrengthScaled):
                processor.to_v_ip[index] = StrengthScaled(projection)
        processor.scale = [1.0] * len(processor.scale)


def holds_strength(unet: Any) -> bool:
    """Whether the UNet's adapter strength is held by `StrengthScaled` projections."""
    processors = _image_branch_processors(unet)
    return bool(processors) and all(
        isinstance(p, StrengthScaled) for processor in processors for p in processor.to_v_ip
    )


def set_strength(unet: Any, strength: float) -> None:
    """Set the adapter's strength for the next calls: a tensor write, never a recompile."""
    for module in unet.modules():
        if isinstance(module, StrengthScaled):
            module.strength.fill_(float(strength))
