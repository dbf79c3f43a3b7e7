"""SR-STE fine-tuning: the gradient it computes, the masks it keeps, and the digits example."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import graphprune as gp
from graphprune.train import nm_mask, sr_ste

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def test_nm_mask_groups_input_channels():
    torch.manual_seed(0)
    w = torch.randn(8, 16, 3, 3)
    mask = nm_mask(w, 2, 4)
    groups = mask.permute(0, 2, 3, 1).reshape(-1, 4)  # 4 consecutive input channels at (o, kh, kw)
    assert torch.all(groups.sum(1) == 2)
    a = w.abs().permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.allclose((a * groups).sum(1), a.topk(2, dim=1).values.sum(1))


def test_sr_ste_gradient_is_straight_through_plus_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    handle = sr_ste(model, "2:4", decay=0.1)
    assert list(handle.modules) == ["0", "2"]
    x = torch.randn(5, 8)
    dense = model[0].parametrizations.weight.original
    mask = nm_mask(dense, 2, 4)
    model(x).square().sum().backward()
    # the reference: the same loss with the masked weight as a leaf
    masked = (dense.detach() * mask).requires_grad_(True)
    h = torch.relu(x @ masked.T + model[0].bias.detach())
    (model[2](h)).square().sum().backward()
    expected = masked.grad + 0.1 * (~mask) * dense.detach()
    assert torch.allclose(dense.grad, expected, atol=1e-6)
    assert torch.any(dense.grad[~mask] != 0)  # dropped weights still learn (straight through)


def test_finalize_leaves_exact_patterns_and_lists_skips():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.Linear(8, 6))
    handle = sr_ste(model, "1:4")
    assert dict(handle.skipped) == {"0": "3 input channels per group are not a multiple of 4"}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 3, 5, 5)).sum().backward()
        opt.step()
    masks = handle.masks()
    handle.finalize()
    for name in ("1", "3"):
        w = dict(model.named_modules())[name].weight.detach()
        assert torch.equal(w != 0, masks[name] & (w != 0))
        moved = w.movedim(1, -1) if w.dim() > 2 else w
        assert torch.all((moved.reshape(-1, 4) != 0).sum(1) <= 1)
    # graphprune reads the finalized model: 1:4 again changes none of the weights SR-STE left 1:4
    graph = gp.trace(model.double(), (torch.randn(1, 3, 5, 5, dtype=torch.float64),))
    sparse = gp.sparsify(graph, "1:4", permute=False, last=True)
    recs = [c for c in sparse.constants if c.sparsity is not None]
    assert len(recs) == 2
    for c in recs:
        assert np.array_equal(np.asarray(c.data), np.asarray(graph.value(c.name).data))


def test_digits_sr_ste_recovers_dense_accuracy():
    import sparse_digits

    res = sparse_digits.run(epochs=6, finetune_epochs=2, seed=0)
    assert res["layers"] == 3  # conv 2 and 3 and the first linear; the stem and classifier stay dense
    assert res["2:4 + SR-STE"] >= 0.99 * res["dense"], res
