"""Fine-tuning sparse torch models: N:M masks kept through training with SR-STE.

`sr_ste(model, "2:4")` puts a parametrization on the weight of every conv and linear layer that fits
the pattern (input channels per group a multiple of M): the module keeps its dense weight W as the
trainable parameter, and every forward computes with W * mask(W), the mask recomputed from the
current dense W (the N largest |w| of every M consecutive input channels at each output and kernel
position: the groups graphprune's `sparsify` uses). The backward pass is SR-STE (Zhou et al., ICLR
2021): the gradient reaches every dense weight straight through the mask, plus the sparse-refined
decay `decay * (1 - mask) * W` on the weights the mask drops, which pulls them towards zero so the
mask settles.

`SRSTE.finalize()` removes the parametrizations and leaves each weight as W * mask: a plain module
whose weights follow the pattern exactly, ready for `gp.trace` and `gp.sparsify` (which keeps the
masks it finds: an already sparse weight composes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .ir.sparsity import parse_pattern

__all__ = ["SRSTE", "nm_mask", "sr_ste"]


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean N:M mask of a [out, in, *kernel] weight, groups of m consecutive input channels."""
    w = weight.detach().abs()
    moved = w.movedim(1, -1) if w.dim() > 2 else w  # [out, *kernel, in]
    groups = moved.reshape(-1, m)
    idx = groups.topk(n, dim=1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, idx, True)
    keep = keep.reshape(moved.shape)
    return keep.movedim(-1, 1) if w.dim() > 2 else keep


class _SRSTEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, n: int, m: int, decay: float) -> torch.Tensor:
        mask = nm_mask(weight, n, m)
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        weight, mask = ctx.saved_tensors
        # straight through the mask, plus the sparse-refined decay on the dropped weights
        return grad + ctx.decay * (~mask) * weight, None, None, None


class _NMParametrization(nn.Module):
    def __init__(self, n: int, m: int, decay: float) -> None:
        super().__init__()
        self.n, self.m, self.decay = n, m, decay

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _SRSTEFunction.apply(weight, self.n, self.m, self.decay)


@dataclass
class SRSTE:
    """The handle `sr_ste` returns: which modules train sparse, which were skipped and why."""

    model: nn.Module
    pattern: str
    modules: dict[str, nn.Module] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def masks(self) -> dict[str, torch.Tensor]:
        """The current mask of every sparse module's weight (by module name)."""
        p = parse_pattern(self.pattern)
        return {name: nm_mask(mod.parametrizations.weight.original, p.n, p.m) for name, mod in self.modules.items()}

    def finalize(self) -> nn.Module:
        """Bake W * mask into every weight and remove the parametrizations; returns the model."""
        for mod in self.modules.values():
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
        self.modules = {}
        return self.model


def sr_ste(
    model: nn.Module,
    pattern: str = "2:4",
    *,
    decay: float = 2e-4,
    layers: str | None = None,
    exclude: str | None = None,
) -> SRSTE:
    """Train `model` with N:M weights (SR-STE). `layers` / `exclude`: regexes matched whole against
    module names (default: every conv and linear that fits). Layers that do not fit are listed in
    `.skipped`, never padded."""
    p = parse_pattern(pattern)
    if p.kind != "nm":
        raise ValueError(f"sr_ste trains N:M patterns; got {pattern!r}")
    handle = SRSTE(model, str(p))
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            continue
        if (layers and not re.fullmatch(layers, name)) or (exclude and re.fullmatch(exclude, name)):
            continue
        per_group = mod.weight.shape[1]
        if per_group % p.m:
            handle.skipped.append((name, f"{per_group} input channels per group are not a multiple of {p.m}"))
            continue
        parametrize.register_parametrization(mod, "weight", _NMParametrization(p.n, p.m, decay))
        handle.modules[name] = mod
    return handle
