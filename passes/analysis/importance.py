"""Unit importance: one score per prunable unit of every coupling group (higher = more important).

A unit of a coupling group (see `coupling.py`) is removed from every tensor and weight it lives in
at once, so a unit's score pools every weight it touches: the *group* criteria of Torch-Pruning
(DepGraph). For each weight member the per-element statistic is reduced over the axes the group does
not prune (a conv's input channels and kernel for an output-channel group) and scatter-added onto the
units with `np.add.at` over `member.units` (-1 marks another group's elements and is skipped).

Criteria (`CRITERIA`):

- ``l1``: sum of |w| over the unit's weight elements.
- ``l2``: sqrt of the sum of w^2 over the unit's weight elements.
- ``bn``: sum of |gamma| of the BatchNorm scales in the group (network slimming). A group without a
  BatchNorm (a transformer's MLP, or any graph after fold-bn) falls back to ``l2``, so the scores of
  different groups may come from different statistics: rank across groups with LAMP (global scope).
- ``taylor``: first-order Taylor, sum of |w * dL/dw|. No labels reach this analysis, so L is an
  *output-energy proxy*: 0.5 * sum over float outputs of mean(out^2), on calibration inputs. It ranks
  units by how much the outputs move when the unit is removed, not by a task loss.
- ``random``: seeded uniform scores (a baseline); independent of group order.
- ``lamp``: ``l2`` scores LAMP-normalised within each group (Lee et al., ICLR 2021), which makes
  groups comparable for global ranking.

Weights are the float constants of a group, except BatchNorm running statistics (inputs 3 and 4 of
batch_norm): they describe the data, not the learned function, and a running variance near 1 would
drown the learned magnitudes of a small group. Biases, norm scales, layer scales and bare parameters
(ViT's class token and position embedding) all count, as they are learned.

Within a group every unit has the same number of elements in every member (units are grouped by that
signature), so plain group sums are not biased by unit size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from graphprune.ir.graph import Graph, Value
from graphprune.ir.ops import Op
from graphprune.parallel import map_arrays

from .coupling import Coupling, CouplingGroup, Member

__all__ = ["CRITERIA", "lamp_normalize", "unit_scores"]

CRITERIA = ("l1", "l2", "bn", "taylor", "random", "lamp")

# batch_norm inputs: (x, scale, bias, mean, var)
_BN_SCALE = 1
_BN_STATS = (3, 4)


def unit_scores(
    graph: Graph,
    coupling: Coupling,
    criterion: str,
    *,
    calib: Sequence[np.ndarray] | None = None,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Scores for every group id (prunable or not): a float64 array of `group.size` scores.

    `calib` (one array per graph input, in order) is needed by ``taylor`` only; `seed` by ``random``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown importance criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")
    groups = coupling.groups
    if criterion == "random":
        # one generator per group, so a group's scores do not depend on how many groups precede it
        return {g.id: np.random.default_rng([seed, g.id]).random(g.size) for g in groups}
    if criterion == "l1":
        l1 = _Pool(coupling, lambda v: np.abs(v.data))
        return {g.id: l1.scores(g) for g in groups}
    if criterion == "taylor":
        grads = _output_energy_grads(graph, calib)
        taylor = _Pool(coupling, lambda v: np.abs(v.data * grads[v.name]))
        return {g.id: taylor.scores(g) for g in groups}
    if criterion == "bn":
        # the l2 fallback is pooled only if some group has no BatchNorm
        square = functools.cache(lambda: _Pool(coupling, lambda v: np.square(v.data)))
        return {g.id: _bn(g, square) for g in groups}
    square_sums = _Pool(coupling, lambda v: np.square(v.data))
    l2 = {g.id: np.sqrt(square_sums.scores(g)) for g in groups}
    return l2 if criterion == "l2" else {gid: lamp_normalize(s) for gid, s in l2.items()}


def lamp_normalize(scores: np.ndarray) -> np.ndarray:
    """LAMP score of each unit: s_u^2 / sum over units v with s_v >= s_u of s_v^2.

    Monotone in s (the order within a group is kept) and scale-free: the largest unit scores 1 in every
    group, and a unit scores low when it is small *relative to the units that would survive it*. That
    is what makes scores of different groups comparable for one global ranking. Ties are symmetric
    (tied units get equal scores). A group whose scores are all zero gets zeros.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    sq = s * s
    if sq.size == 0:
        return sq
    ordered = np.sort(sq)
    # tail[i] = sum of ordered[i:]; the denominator of u sums every v at or above u's value
    tail = np.cumsum(ordered[::-1])[::-1]
    first = np.searchsorted(ordered, sq, side="left")
    denom = tail[first]
    out = np.zeros_like(sq)
    np.divide(sq, denom, out=out, where=denom > 0)
    return out


# ------------------------------------------------------------------------------------------------
# Pooling weights onto units
# ------------------------------------------------------------------------------------------------


def _is_weight(v: Value) -> bool:
    if not v.is_const or not v.type.dtype.is_float:
        return False
    # a constant read only as BatchNorm running statistics is not a learned weight
    return not v.uses or any(n.op is not Op.BATCH_NORM or i not in _BN_STATS for n, i in v.uses)


def _weight_members(group: CouplingGroup) -> list[Member]:
    return [m for m in group.members if _is_weight(m.value)]


def _sum_except(x: np.ndarray, keep: tuple[int, ...]) -> np.ndarray:
    """Sum `x` over every axis not in `keep` (ascending). Adjacent axes of one kind are merged and the
    reductions run outermost first: summing over a leading axis adds whole contiguous rows (vectorised)
    and leaves less to reduce, where summing a conv's 3x3 kernel first would run a short inner loop per
    element (several times slower on ResNet-50)."""
    kept_shape = [x.shape[a] for a in keep]
    shape: list[int] = []
    kinds: list[bool] = []
    for a, n in enumerate(x.shape):
        if kinds and kinds[-1] == (a in keep):
            shape[-1] *= n
        else:
            shape.append(n)
            kinds.append(a in keep)
    x = x.reshape(shape)
    axis = 0
    for kept in kinds:
        if kept:
            axis += 1
        else:
            x = x.sum(axis=axis)
    return x.reshape(kept_shape)


class _Pool:
    """Sums a per-element statistic of the weights onto units. Each weight's statistic is computed
    once and summed over the other axes of each of its memberships (a weight is a member of two
    groups, its outputs and its inputs); only those small sums are kept, so at most one weight-sized
    temporary per thread lives at a time. Weights are summed on several threads (graphprune.parallel).
    Sums stay in the weight's dtype (numpy sums pairwise) until the per-unit scores."""

    def __init__(self, coupling: Coupling, stat: Callable[[Value], np.ndarray]) -> None:
        self.stat = stat
        memberships: dict[int, set[tuple[int, ...]]] = {}  # value -> the axes of each membership
        weights: dict[int, Value] = {}
        for g in coupling.groups:
            for m in _weight_members(g):
                memberships.setdefault(id(m.value), set()).add(m.axes)
                weights[id(m.value)] = m.value
        self.memberships = memberships
        values = list(weights.values())
        sums = map_arrays(self._sums_of, values, lambda v: v.type.numel())
        # (value, membership axes) -> sums over the membership's axes
        self.sums = {(id(v), axes): s for v, by_axes in zip(values, sums, strict=True) for axes, s in by_axes.items()}

    def _sums_of(self, v: Value) -> dict[tuple[int, ...], np.ndarray]:
        stat = self.stat(v)
        return {axes: _sum_except(stat, axes) for axes in self.memberships[id(v)]}

    def add(self, scores: np.ndarray, member: Member) -> None:
        # axes are ascending, so the sums line up with member.units element for element
        reduced = np.broadcast_to(self.sums[(id(member.value), member.axes)], member.units.shape)
        valid = member.units >= 0
        scores += np.bincount(member.units[valid], weights=reduced[valid], minlength=len(scores))

    def scores(self, group: CouplingGroup) -> np.ndarray:
        scores = np.zeros(group.size, dtype=np.float64)
        for m in _weight_members(group):
            self.add(scores, m)
        return scores


def _bn(group: CouplingGroup, square: Callable[[], _Pool]) -> np.ndarray:
    scores = np.zeros(group.size, dtype=np.float64)
    found = False
    for m in group.members:
        if not m.value.is_const or not any(n.op is Op.BATCH_NORM and i == _BN_SCALE for n, i in m.value.uses):
            continue
        found = True
        scores += np.bincount(m.units, weights=np.abs(m.value.data).astype(np.float64), minlength=group.size)
    # no BatchNorm in this channel space: fall back to the group's l2 magnitude (documented above)
    return scores if found else np.sqrt(square().scores(group))


# ------------------------------------------------------------------------------------------------
# Taylor: gradients of the output-energy proxy
# ------------------------------------------------------------------------------------------------


def _output_energy_grads(graph: Graph, calib: Sequence[np.ndarray] | None) -> dict[str, np.ndarray]:
    """dL/dc for every float constant c, with L = 0.5 * sum over float outputs of mean(out^2)."""
    if calib is None:
        raise ValueError("taylor needs calibration inputs: pass calib=[one array per graph input]")
    if len(calib) != len(graph.inputs):
        raise ValueError(
            f"taylor: calib has {len(calib)} arrays but graph {graph.name!r} takes {len(graph.inputs)} inputs "
            f"({', '.join(v.name for v in graph.inputs)})"
        )
    import torch

    module = graph.to_torch()
    tensors: dict[str, torch.Tensor] = {}
    for c in graph.constants:
        t = getattr(module, module.const_names[c.name])
        # buffers too: bare weights (a matmul's constant, a layer scale) are still weights here. Not
        # BatchNorm running statistics: torch's batch_norm refuses gradients for them (and they are
        # not weights, see _is_weight)
        if t.is_floating_point() and not any(n.op is Op.BATCH_NORM and i in _BN_STATS for n, i in c.uses):
            t.requires_grad_(True)
            tensors[c.name] = t
    inputs = [torch.from_numpy(np.array(a, copy=True)) for a in calib]
    with torch.enable_grad():
        outs = module(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        terms = [o.float().pow(2).mean() for o in outs if o.is_floating_point() and o.requires_grad]
        if not terms:
            raise ValueError(f"taylor: graph {graph.name!r} has no float output that depends on its weights")
        loss = 0.5 * torch.stack(terms).sum()
        loss.backward()
    grads: dict[str, np.ndarray] = {}
    for c in graph.constants:
        t = tensors.get(c.name)
        g = None if t is None else t.grad
        # constants off the gradient path (or not float) contribute nothing
        grads[c.name] = (
            np.zeros(c.type.shape, dtype=np.float64) if g is None else g.detach().double().numpy()  # type: ignore[arg-type]
        )
    return grads
