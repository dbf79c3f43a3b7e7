"""2:4 sparsity on a small CNN, with and without SR-STE fine-tuning (scikit-learn's digits: 1,797
8x8 images of handwritten digits, bundled with scikit-learn, no download).

    python examples/sparse_digits.py            # needs scikit-learn: pip install -e '.[examples]'

1. Train a small CNN (dense) and measure its test accuracy.
2. 2:4 without fine-tuning: trace it into graphprune, `gp.sparsify(graph, "2:4", permute=True)`, and
   measure the sparse graph on the test set with the reference interpreter.
3. SR-STE: fine-tune the dense model with `graphprune.train.sr_ste` (masks recomputed from the dense
   weights every step, straight-through gradient, sparse-refined decay), bake the masks in, and
   measure again. The same layers take the pattern in 2 and 3: every conv and linear that fits 2:4
   (the first conv has one input channel and stays dense) except the classifier, as the SR-STE and
   ASP recipes leave it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

import graphprune as gp
from graphprune.train import sr_ste

CLASSIFIER = "head.2"


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train / test split (80 / 20, stratified by a seeded shuffle) of the digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
          batch: int = 64) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def graph_accuracy(graph: gp.Graph, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = graph.run(x.numpy())[0]
    return float((np.argmax(logits, 1) == y.numpy()).mean())


def run(epochs: int = 30, finetune_epochs: int = 10, seed: int = 0, batch: int = 64) -> dict[str, float]:
    """Accuracies on the test split: dense, 2:4 one-shot, 2:4 after SR-STE (fixed seeds)."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = digits(seed)
    model = Net()
    train(model, xtr, ytr, epochs, 3e-3, seed, batch)
    dense = accuracy(model, xte, yte)

    # 2:4 with graphprune, no fine-tuning (the classifier stays dense: last=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = gp.trace(model, (xte[:2],), dynamic_batch=True)
    sparse_graph, report = gp.sparsify_with_report(graph, "2:4", permute=True)
    one_shot = graph_accuracy(sparse_graph, xte, yte)

    # SR-STE fine-tuning of the dense model, then the masks baked into the weights
    handle = sr_ste(model, "2:4", exclude=CLASSIFIER)
    train(model, xtr, ytr, finetune_epochs, 1e-3, seed + 1, batch)
    handle.finalize()
    finetuned = accuracy(model, xte, yte)
    return {"dense": dense, "2:4": one_shot, "2:4 + SR-STE": finetuned, "layers": float(len(report.layers))}


def main() -> None:
    res = run()
    print(f"dense accuracy:                 {res['dense'] * 100:.2f}%")
    print(f"2:4, no fine-tuning:            {res['2:4'] * 100:.2f}%  ({int(res['layers'])} layers sparse)")
    print(f"2:4 after SR-STE fine-tuning:   {res['2:4 + SR-STE'] * 100:.2f}%  "
          f"({res['2:4 + SR-STE'] / res['dense'] * 100:.1f}% of dense)")


if __name__ == "__main__":
    main()
