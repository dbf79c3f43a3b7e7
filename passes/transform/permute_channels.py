"""Channel permutation: reorder the units of coupling groups, an EXACT transformation.

A permutation of a group moves *unit slots*: after `apply_permutation(graph, coupling, {g: perm})`
the channels that sat in unit slot `perm[i]` sit in slot `i`, in every tensor and weight of the
group at once. Only the group's constants move (producers' output rows, readers' input columns,
biases, norm parameters, position embeddings...). Every activation member follows by itself,
because the coupling's index maps are exact: an op that maps unit u at its input to unit u at its
output (elementwise ops, concat, split, slice, gather with constant indices, channel shuffles,
reshapes into heads) still does so when both sides hold the permuted channels. So no attribute of
any node changes, and the graph computes the same function.

A unit may own several elements of one member (a fused gate/up weight, flatten -> linear, grouped-
query heads, the rotate-half pairs of RoPE); its k-th element in layout order takes the k-th element
of the unit it receives. A permutation must keep every bin of the group (grouped convolutions, heads,
GroupNorm groups: a unit may only move within its bin) and never touches a blocked group (model
inputs and outputs, opaque ops: their channel order is fixed from outside).

A reader gather of the unconstrained view (a cut of `analyze(graph, cuts=True)`, see readers.py)
is a boundary: the channels on its two sides are different groups, joined by its index constant. When
either side is permuted the indices are rewritten so that every output slot still reads the channel
it read before (`new = inverse(move_in)[old[move_out]]`).

The same freedom serves channel reordering for contiguous reads (UPSCALE) and permutations that
raise the magnitude kept by N:M and block masks (NVIDIA ASP): both choose `perm`, this applies it.
A constant's other data that is indexed like it (a sparsity mask) must move with it.

Complexity: O(elements of the group's members) numpy work per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphprune.ir.errors import GraphError
from graphprune.ir.graph import Graph
from graphprune.ir.ops import Op
from graphprune.pm import ALL, AnalysisManager, Contract, PassResult

from ..analysis.coupling import Coupling, CouplingAnalysis, CouplingGroup, Member

__all__ = [
    "PermuteChannels",
    "apply_permutation",
    "bin_classes",
    "check_permutation",
    "permutable",
    "sorted_within_bins",
]


def permutable(group: CouplingGroup) -> bool:
    """Whether the group's channel order is free (not fixed by a model input/output or opaque op)."""
    return group.blocked is None and group.size > 1


def check_permutation(group: CouplingGroup, perm: np.ndarray) -> np.ndarray:
    """`perm` as an int64 array, or a GraphError saying why it cannot be applied to `group`."""
    perm = np.asarray(perm, dtype=np.int64).reshape(-1)
    if len(perm) != group.size or not np.array_equal(np.sort(perm), np.arange(group.size)):
        raise GraphError(
            f"coupling group {group.id} ({group.name!r}): a permutation of its {group.size} units is needed, got "
            f"{len(perm)} entries that are not a rearrangement of 0..{group.size - 1}"
        )
    if group.blocked is not None and not np.array_equal(perm, np.arange(group.size)):
        raise GraphError(
            f"coupling group {group.id} ({group.name!r}) is blocked ({group.blocked}); its channel order cannot "
            f"change: leave it out of the permutation"
        )
    for unit_bin in group.bins:
        if not np.array_equal(unit_bin[perm], unit_bin):
            bad = int(np.flatnonzero(unit_bin[perm] != unit_bin)[0])
            raise GraphError(
                f"coupling group {group.id} ({group.name!r}): slot {bad} would receive unit {int(perm[bad])} from "
                f"another bin (grouped conv, heads or group norm); permute units only within their bin"
            )
    return perm


def _member_source(member: Member, perm: np.ndarray, size: int) -> np.ndarray | None:
    """For each flat position of the member's block: the flat position its new content comes from
    (None when nothing moves)."""
    units = member.units.reshape(-1)
    pos = np.flatnonzero(units >= 0)
    if len(pos) == 0:
        return None
    u = units[pos]
    order = np.argsort(u, kind="stable")  # positions grouped by unit, layout order within a unit
    by_unit = pos[order]
    counts = np.bincount(u, minlength=size)
    if not np.array_equal(counts[perm], counts):
        raise GraphError(
            f"constant %{member.value.name}: its units own different numbers of elements, so they cannot "
            f"trade places; this is a bug in the coupling analysis"
        )
    starts = np.cumsum(counts) - counts
    us = u[order]
    rank = np.arange(len(us)) - starts[us]
    src = np.arange(units.size)
    src[by_unit] = by_unit[starts[perm[us]] + rank]
    return None if np.array_equal(src, np.arange(units.size)) else src


def apply_permutation(graph: Graph, coupling: Coupling, perms: dict[int, np.ndarray]) -> None:
    """Permute the units of the given groups (`perms[g][i]`: the unit moved into slot i), in place."""
    groups = {g.id: g for g in coupling.groups}
    checked = {gid: check_permutation(groups[gid], p) for gid, p in perms.items()}
    for gid, perm in checked.items():
        group = groups[gid]
        for m in group.members:
            if not m.value.is_const:
                continue
            src = _member_source(m, perm, group.size)
            if src is None:
                continue

            def moved(arr: np.ndarray, m: Member = m, src: np.ndarray = src) -> np.ndarray:
                front = np.moveaxis(arr, m.axes, range(len(m.axes)))
                block = front.shape[: len(m.axes)]
                flat = front.reshape(-1, *front.shape[len(m.axes) :])[src]
                back = np.moveaxis(flat.reshape(*block, *front.shape[len(m.axes) :]), range(len(m.axes)), m.axes)
                return np.ascontiguousarray(back)

            # a sparsity mask moves with its weight (its pattern stays only if its groups still line up)
            rec = m.value.sparsity
            record = rec.reindexed(moved(rec.mask)) if rec is not None and rec.mask is not None else None
            graph.replace_const_data(m.value, moved(np.asarray(m.value.data)), sparsity=record)
    if coupling.cuts:
        _rewrite_cuts(graph, coupling, checked)


def _slot_moves(coupling: Coupling, labels: np.ndarray, perms: dict[int, np.ndarray], where: str) -> np.ndarray:
    """For each position along a 1-D block: the position whose old content moves there."""
    lg, lu = coupling.label_group[labels], coupling.label_unit[labels]
    at = {(int(g), int(u)): i for i, (g, u) in enumerate(zip(lg, lu, strict=True))}
    if len(at) != len(labels) and any(int(g) in perms for g in lg):
        raise GraphError(f"{where}: a channel occurs twice along the gathered axis, so its reads cannot follow a "
                         f"permutation; leave its groups unpermuted")
    src = np.arange(len(labels))
    for i, (g, u) in enumerate(zip(lg, lu, strict=True)):
        if int(g) in perms:
            src[i] = at[(int(g), int(perms[int(g)][u]))]
    return src


def _rewrite_cuts(graph: Graph, coupling: Coupling, perms: dict[int, np.ndarray]) -> None:
    for node in graph.nodes:
        if node.op is not Op.GATHER or id(node.outputs[0]) not in coupling.cuts:
            continue
        axis = node.attrs.axis
        b_in = next(b for b in coupling.blocks_of(node.inputs[0]) if b.axes == (axis,))
        b_out = next(b for b in coupling.blocks_of(node.outputs[0]) if b.axes == (axis,))
        groups = set(coupling.label_group[b_in.labels].tolist()) | set(coupling.label_group[b_out.labels].tolist())
        if not groups & set(perms):
            continue
        where = f"reader gather {node.name!r}"
        src_in = _slot_moves(coupling, b_in.labels, perms, where)
        src_out = _slot_moves(coupling, b_out.labels, perms, where)
        inv_in = np.empty_like(src_in)
        inv_in[src_in] = np.arange(len(src_in))
        idx = node.inputs[1]
        old = np.asarray(idx.data).astype(np.int64) % len(b_in.labels)
        new = inv_in[old[src_out]].astype(idx.type.dtype.numpy)
        graph.set_input(node, 1, graph.add_const(f"{idx.name}.perm", new, unique=True))
        if not idx.uses:
            graph.remove_const(idx)


def bin_classes(group: CouplingGroup) -> list[np.ndarray]:
    """The slots whose units may trade places: units sharing every bin id form one class."""
    key = np.zeros(group.size, dtype=np.int64)
    for unit_bin in group.bins:
        key = key * (int(unit_bin.max()) + 2) + (unit_bin + 1)
    return [np.flatnonzero(key == k) for k in np.unique(key)]


def sorted_within_bins(group: CouplingGroup, scores: np.ndarray) -> np.ndarray:
    """The permutation that orders each bin's units by descending score, in the bin's own slots."""
    perm = np.arange(group.size)
    for slots in bin_classes(group):
        perm[slots] = slots[np.argsort(-np.asarray(scores)[slots], kind="stable")]
    return perm


@dataclass(frozen=True)
class PermuteChannels:
    """Order every permutable coupling group's channels by descending importance (`criterion`, as in
    prune-channels), within bins. The function is unchanged; the most important channels come first,
    so a later slice of the leading channels keeps the best ones."""

    name: ClassVar[str] = "permute-channels"
    contract: ClassVar[Contract] = Contract.EXACT

    criterion: str = "l2"

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult:
        from ..analysis.importance import unit_scores

        coupling = analyses.get(CouplingAnalysis)
        scores = unit_scores(graph, coupling, self.criterion)
        perms = {}
        for g in coupling.groups:
            if permutable(g):
                perm = sorted_within_bins(g, scores[g.id])
                if not np.array_equal(perm, np.arange(g.size)):
                    perms[g.id] = perm
        apply_permutation(graph, coupling, perms)
        # shapes and groups stay; the constants' contents moved, so scores and costs that read them
        # are recomputed on demand
        preserved = ALL if not perms else frozenset({CouplingAnalysis})
        return PassResult(bool(perms), preserved, {"groups_permuted": len(perms)})
