"""graphprune.parallel: large weights scored and sliced on worker threads give exactly what one
thread gives, in order, and errors on a worker surface on the caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphprune.passes.analysis.coupling import analyze
from graphprune.passes.analysis.importance import unit_scores
from torch import nn

import graphprune as gp
from graphprune.parallel import LARGE, map_arrays, threads


class Wide(nn.Module):
    """Weights above the pool's threshold (LARGE elements), so both paths run on the workers."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(8, 256, 3, padding=1)
        self.c2 = nn.Conv2d(256, 256, 3, padding=1)  # 589,824 elements
        self.c3 = nn.Conv2d(256, 320, 1)  # 81,920
        self.fc = nn.Linear(320, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def wide() -> gp.Graph:
    torch.manual_seed(0)
    return gp.trace(Wide().eval(), (torch.randn(1, 8, 6, 6),))


def test_threads_give_what_one_thread_gives(wide: gp.Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sum(c.type.numel() >= LARGE for c in wide.constants) >= 2
    outs = {}
    for n in ("1", "2"):
        monkeypatch.setenv("GRAPHPRUNE_THREADS", n)
        assert threads() == int(n)
        coupling = analyze(wide)
        scores = {c: unit_scores(wide, coupling, c) for c in ("l1", "l2", "lamp")}
        outs[n] = scores, gp.prune(wide, 0.5, criterion="l1", verify=True)
    (s1, p1), (s2, p2) = outs["1"], outs["2"]
    for c in s1:
        for gid in s1[c]:
            np.testing.assert_array_equal(s1[c][gid], s2[c][gid])
    assert [c.name for c in p1.constants] == [c.name for c in p2.constants]
    for a, b in zip(p1.constants, p2.constants, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    assert gp.cost(p1).params < 0.5 * gp.cost(wide).params


def test_order_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHPRUNE_THREADS", "2")
    items = [np.full(LARGE if i % 2 else 3, i) for i in range(7)]
    assert map_arrays(lambda a: int(a[0]) * 10, items, len) == [i * 10 for i in range(7)]

    def fails(a: np.ndarray) -> int:
        if a[0] == 5:
            raise ValueError("item 5 is bad")
        return 0

    with pytest.raises(ValueError, match="item 5 is bad"):
        map_arrays(fails, items, len)
    # nested: a worker's own map runs inline instead of waiting on the pool it occupies
    nested = map_arrays(lambda a: sum(map_arrays(lambda b: int(b[0]), items, len)), items, len)
    assert nested == [21] * 7
    monkeypatch.setenv("GRAPHPRUNE_THREADS", "two")
    with pytest.raises(ValueError, match="GRAPHPRUNE_THREADS='two'"):
        threads()
