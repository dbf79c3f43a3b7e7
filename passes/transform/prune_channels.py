"""Structured channel pruning: units chosen by importance are removed physically.

`apply_prune` rewrites the graph in place: every constant that is a member of a pruned group loses
the pruned elements, and every attribute that encodes a channel count is recomputed (reshape
targets, split sizes, slices, gather indices, expand targets, depthwise `groups`, the attention
scale when a head's width changes). Shapes then follow from type inference.

`masked_reference` builds the oracle of the MASK_EQUIVALENT contract from the original graph, not
from the rewrite: every value that carries pruned channels is followed by where(mask, v, 0). Where
removing a channel is not the same as zeroing it (norm statistics, softmax, mean or max over
channels) the reference computes the op on the kept channels only and scatters the result back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from graphprune.ir.errors import GraphError
from graphprune.ir.graph import Graph, Node, Value
from graphprune.ir.ops import (
    AttentionAttrs,
    AxisAttrs,
    ConvAttrs,
    ConvTransposeAttrs,
    ExpandAttrs,
    GatherAttrs,
    Op,
    ReshapeAttrs,
    SliceAttrs,
    SplitAttrs,
)
from graphprune.ir.sparsity import Sparsity
from graphprune.parallel import map_arrays
from graphprune.pm import ALL, AnalysisManager, Contract, PassResult

from ..analysis.coupling import Block, Coupling, CouplingAnalysis


class Keep:
    """Which elements survive: keep masks per group, looked up per label."""

    def __init__(self, coupling: Coupling, keep: dict[int, np.ndarray]) -> None:
        self.coupling = coupling
        offsets = np.cumsum([0] + [g.size for g in coupling.groups])
        flat = np.concatenate([np.asarray(keep.get(g.id, np.ones(g.size, bool)), bool) for g in coupling.groups] + [
            np.ones(1, bool)
        ])
        lg, lu = coupling.label_group, coupling.label_unit
        index = np.where(lg >= 0, offsets[np.maximum(lg, 0)] + lu, len(flat) - 1)
        self.label_keep = flat[index]

    def mask(self, labels: np.ndarray) -> np.ndarray:
        return self.label_keep[labels]

    def block_masks(self, value: Value) -> list[tuple[Block, np.ndarray]]:
        return [(b, self.mask(b.labels)) for b in self.coupling.blocks_of(value)]

    def pruned(self, value: Value) -> bool:
        return any(not m.all() for _, m in self.block_masks(value))


def kept_shape(mask: np.ndarray, where: str) -> tuple[int, ...]:
    """The shape the kept elements of a block take once packed in layout order: whole rows dropped
    (heads), or every row keeping the same count (the split of a shuffled channel axis)."""
    if mask.ndim == 1:
        return (int(mask.sum()),)
    rows = mask.reshape(mask.shape[0], -1)
    live = rows.any(axis=1)
    kept = rows[live]
    if len(kept) == 0:
        return (0, *mask.shape[1:])
    if np.all(kept == kept[:1]):
        return (int(live.sum()), *kept_shape(kept[0].reshape(mask.shape[1:]), where))
    counts = kept.sum(axis=1)
    if mask.ndim == 2 and np.all(counts == counts[0]):
        # rows keeping the same count of different columns: a grouped conv's weight, packed row by row
        return (int(live.sum()), int(counts[0]))
    raise GraphError(f"{where}: the kept channels do not form a rectangular block; this is a bug in the selection")


def _axis_mask(block: Block, mask: np.ndarray, axis: int) -> np.ndarray:
    """Kept positions along one axis of a block (an element is kept when any line through it is)."""
    pos = block.axes.index(axis)
    other = tuple(i for i in range(mask.ndim) if i != pos)
    return mask.any(axis=other) if other else mask


def _new_size(keep: Keep, value: Value, axis: int) -> int:
    for b, m in keep.block_masks(value):
        if axis in b.axes:
            return kept_shape(m, f"%{value.name}")[b.axes.index(axis)]
    return int(value.type.shape[axis])


def _sliced_const(
    value: Value, masks: list[tuple[tuple[int, ...], np.ndarray]]
) -> tuple[np.ndarray, Sparsity | None] | None:
    """A constant without its pruned elements (masks over its member axes, combined), and its sparsity
    record sliced alike; None when nothing goes. Reads only: it runs on worker threads."""
    data = np.asarray(value.data)
    axes = tuple(sorted({a for ax, _ in masks for a in ax}))
    if len(masks) == 1 and len(axes) == 1:  # one mask on one axis (a bias, a norm's parameters): most constants
        full = masks[0][1]
    else:
        full = np.ones([data.shape[a] for a in axes], bool)
        for ax, m in masks:
            shape = [data.shape[a] if a in ax else 1 for a in axes]
            order = [ax.index(a) for a in axes if a in ax]
            full &= np.transpose(m, order).reshape(shape)
    if full.all():
        return None
    if full.ndim == 1:
        lines, new = [full], None
    else:
        lines = [full.any(axis=tuple(j for j in range(full.ndim) if j != i)) for i in range(full.ndim)]
        outer = np.ones(full.shape, bool)
        for i, line in enumerate(lines):
            outer = outer & line.reshape([-1 if j == i else 1 for j in range(full.ndim)])
        new = kept_shape(full, f"constant %{value.name}") if not np.array_equal(full, outer) else None

    def sliced(arr: np.ndarray) -> np.ndarray:
        rest = arr.shape[len(axes) :]
        if new is None and axes == tuple(range(len(axes))) and math.prod(rest) >= 4:
            # whole rows and columns of leading axes with a kernel behind them (a conv's out, in): one
            # gather of the kept kernels is cheaper than a compress per axis, which copies twice
            idx = np.ravel_multi_index(np.ix_(*(np.flatnonzero(line) for line in lines)), full.shape)
            return arr.reshape(-1, *rest).take(idx, axis=0)  # shaped like idx + rest, owning its data
        if new is None:
            # whole rows and columns go: one compress per axis (cheapest for 1x1 convs and matrices)
            for a, line in zip(axes, lines, strict=True):
                arr = np.compress(line, arr, axis=a)
            return arr
        moved = np.moveaxis(arr, axes, range(len(axes)))
        rest = moved.shape[len(axes) :]
        packed = moved.reshape(-1, *rest)[full.reshape(-1)].reshape(*new, *rest)
        return np.moveaxis(packed, range(len(axes)), axes)

    # a sparse weight's mask loses the same elements (and its pattern, if the groups no longer line up)
    rec = value.sparsity
    return sliced(data), rec.reindexed(sliced(rec.mask)) if rec is not None and rec.mask is not None else None


def apply_prune(graph: Graph, coupling: Coupling, keep: dict[int, np.ndarray]) -> None:
    """Remove the units whose keep mask is False, in place."""
    k = Keep(coupling, keep)
    const_masks: dict[int, list[tuple[tuple[int, ...], np.ndarray]]] = {}
    consts: dict[int, Value] = {}
    for group in coupling.groups:
        km = np.asarray(keep.get(group.id, np.ones(group.size, bool)), bool)
        if km.all():
            continue
        for m in group.members:
            if m.value.is_const:
                elem = np.where(m.units >= 0, km[np.maximum(m.units, 0)], True)
                const_masks.setdefault(id(m.value), []).append((m.axes, elem))
                consts[id(m.value)] = m.value
    # attributes first (they read the original shapes), then constants, then types
    rewrites = [(n, _REWRITES[n.op]) for n in graph.nodes if n.op in _REWRITES]
    planned = [(n, fn(graph, n, k)) for n, fn in rewrites]
    values = list(consts.values())
    sliced = map_arrays(lambda v: _sliced_const(v, const_masks[id(v)]), values, lambda v: v.type.numel())
    for value, new in zip(values, sliced, strict=True):
        if new is not None:
            graph.replace_const_data(value, new[0], sparsity=new[1])
    for n, attrs in planned:
        if isinstance(attrs, tuple):  # a slice whose kept positions are no longer strided
            gather = graph.add_node(Op.GATHER, [n.inputs[0], attrs[1]], GatherAttrs(n.attrs.axis), name=n.name,
                                    types=[n.outputs[0].type], output_names=[n.outputs[0].name + ".gather"],
                                    unique=True, before=n)
            graph.replace_all_uses(n.outputs[0], gather.output)
            graph.erase(n)
        elif attrs is not None:
            n.attrs = attrs
    graph.retype()


# ------------------------------------------------------------------------------------------------
# attribute rewrites: each returns the node's new attributes (or None), computed on the original
# ------------------------------------------------------------------------------------------------


def _rw_reshape(graph: Graph, node: Node, k: Keep) -> Any:
    out = node.outputs[0]
    if not k.pruned(out) and not k.pruned(node.inputs[0]):
        return None
    shape = list(node.attrs.shape)
    for b, m in k.block_masks(out):
        for a, size in zip(b.axes, kept_shape(m, f"reshape {node.name!r}"), strict=True):
            shape[a] = size if shape[a] != -1 else -1
    return ReshapeAttrs(tuple(shape))


def _rw_expand(graph: Graph, node: Node, k: Keep) -> Any:
    out = node.outputs[0]
    if not k.pruned(out):
        return None
    shape = list(node.attrs.shape)
    for b, m in k.block_masks(out):
        for a, size in zip(b.axes, kept_shape(m, f"expand {node.name!r}"), strict=True):
            if shape[a] != -1:
                shape[a] = size
    return ExpandAttrs(tuple(shape))


def _rw_split(graph: Graph, node: Node, k: Keep) -> Any:
    a: SplitAttrs = node.attrs
    sizes = tuple(_new_size(k, o, a.axis) for o in node.outputs)
    return None if sizes == a.sizes else SplitAttrs(a.axis, sizes)


def _new_positions(k: Keep, node: Node, axis: int, selected: np.ndarray) -> np.ndarray | None:
    """Where the kept ones of `selected` (original positions along `axis` of the input) sit in the
    pruned input; None when the input is not pruned along that axis."""
    x = node.inputs[0]
    for b, m in k.block_masks(x):
        if axis in b.axes:
            am = _axis_mask(b, m, axis)
            if am.all():
                return None
            new_index = np.cumsum(am) - 1
            return new_index[selected[am[selected]]]
    return None


def _rw_slice(graph: Graph, node: Node, k: Keep) -> Any:
    a: SliceAttrs = node.attrs
    size = int(node.inputs[0].type.shape[a.axis])
    selected = np.arange(size)[a.start : a.end if a.end >= 0 else None : a.step]
    pos = _new_positions(k, node, a.axis, selected)
    if pos is None:
        return None
    if len(pos) == 0:
        raise GraphError(f"slice {node.name!r} would select no channels; the selection must keep some")
    step = int(pos[1] - pos[0]) if len(pos) > 1 else 1
    if step != 0 and np.array_equal(pos, pos[0] + step * np.arange(len(pos))):
        end = int(pos[-1] + step)
        return SliceAttrs(a.axis, int(pos[0]), end if end >= 0 else -1, step)
    # not a strided run any more: the slice becomes a gather of the kept positions
    idx = graph.add_const(f"{node.name or 'slice'}.indices", pos.astype(np.int64), unique=True)
    return ("gather", idx)


def _rw_gather(graph: Graph, node: Node, k: Keep) -> Any:
    data, idx = node.inputs
    axis = node.attrs.axis
    if id(node.outputs[0]) in k.coupling.cuts:
        return _rw_cut_gather(graph, node, k)
    if not idx.is_const or (data.is_const and axis == 0):
        return None
    sel = np.asarray(idx.data).astype(np.int64) % int(data.type.shape[axis])
    pos = _new_positions(k, node, axis, np.atleast_1d(sel))
    if pos is None:
        return None
    new = np.asarray(pos.reshape(sel.shape) if idx.type.rank else pos[0], dtype=idx.type.dtype.numpy)
    graph.set_input(node, 1, graph.add_const(f"{idx.name}.pruned", new, unique=True))
    if not idx.uses:
        graph.remove_const(idx)
    return None


def _rw_cut_gather(graph: Graph, node: Node, k: Keep) -> Any:
    """A reader gather (a cut): it keeps its own kept channels, read from where they sit in the
    pruned input (the selection keeps every channel a reader reads)."""
    data, idx = node.inputs
    axis = node.attrs.axis
    out_mask = next(m for b, m in k.block_masks(node.outputs[0]) if b.axes == (axis,))
    sel = np.asarray(idx.data).astype(np.int64) % int(data.type.shape[axis])
    in_mask = next((_axis_mask(b, m, axis) for b, m in k.block_masks(data) if axis in b.axes), None)
    if in_mask is None:
        in_mask = np.ones(int(data.type.shape[axis]), bool)
    if out_mask.all() and in_mask.all():
        return None
    if not in_mask[sel[out_mask]].all():
        raise GraphError(f"reader gather {node.name!r} keeps channels its input loses; this is a bug in the selection")
    new = (np.cumsum(in_mask) - 1)[sel[out_mask]].astype(idx.type.dtype.numpy)
    graph.set_input(node, 1, graph.add_const(f"{idx.name}.pruned", new, unique=True))
    if not idx.uses:
        graph.remove_const(idx)
    return None


def _rw_conv(graph: Graph, node: Node, k: Keep) -> Any:
    a = node.attrs
    cin = int(node.inputs[0].type.shape[1])
    if a.groups == 1 or a.groups != cin:
        return None  # grouped convs keep their group count (selection balances the groups)
    new_cin = _new_size(k, node.inputs[0], 1)
    if new_cin == cin:
        return None
    if isinstance(a, ConvAttrs):
        return ConvAttrs(a.stride, a.pads, a.dilation, new_cin)
    return ConvTransposeAttrs(a.stride, a.pads, a.dilation, a.output_padding, new_cin)


def _rw_attention(graph: Graph, node: Node, k: Keep) -> Any:
    a: AttentionAttrs = node.attrs
    q = node.inputs[0]
    e = int(q.type.shape[-1])
    if a.scale is None and _new_size(k, q, q.type.rank - 1) != e:
        # the default scale follows the feature width: keep the original one
        return AttentionAttrs(1.0 / math.sqrt(e), a.is_causal, a.enable_gqa)
    return None


_REWRITES = {
    Op.RESHAPE: _rw_reshape,
    Op.EXPAND: _rw_expand,
    Op.SPLIT: _rw_split,
    Op.SLICE: _rw_slice,
    Op.GATHER: _rw_gather,
    Op.CONV: _rw_conv,
    Op.CONV_TRANSPOSE: _rw_conv,
    Op.ATTENTION: _rw_attention,
}


# ------------------------------------------------------------------------------------------------
# the masked reference (the oracle)
# ------------------------------------------------------------------------------------------------

_STATS = (Op.LAYER_NORM, Op.RMS_NORM, Op.GROUP_NORM, Op.SOFTMAX, Op.REDUCE_MEAN, Op.REDUCE_MAX)


def _reduced_axes(node: Node) -> tuple[int, ...]:
    if node.op in (Op.LAYER_NORM, Op.RMS_NORM):
        return tuple(range(node.attrs.axis, node.inputs[0].type.rank))
    if node.op is Op.GROUP_NORM:
        return (1,)
    if node.op is Op.SOFTMAX:
        return (node.attrs.axis,)
    return tuple(node.attrs.axes)


def _mixed_axis(k: Keep, node: Node) -> tuple[int, np.ndarray] | None:
    """The reduced block axis along which kept and pruned channels meet in one reduction, with the
    kept positions along it; None when every reduction sees only kept or only pruned channels."""
    x = node.inputs[0]
    for b, m in k.block_masks(x):
        for a in set(b.axes) & set(_reduced_axes(node)):
            lines = np.moveaxis(m, b.axes.index(a), -1).reshape(-1, m.shape[b.axes.index(a)])
            mixed = lines.any(axis=1) & ~lines.all(axis=1)
            if mixed.any():
                live = lines[lines.any(axis=1)]
                if not np.all(live == live[:1]):
                    raise GraphError(f"{node.op.value} {node.name!r}: kept channels differ between reductions")
                return a, live[0]
    return None


def masked_reference(graph: Graph, coupling: Coupling, keep: dict[int, np.ndarray]) -> Graph:
    """The original graph with the pruned channels masked out (see the module docstring)."""
    k = Keep(coupling, keep)
    ref = graph.copy()
    ref_nodes = dict(zip(graph.nodes, ref.nodes, strict=True))
    replaced: dict[str, Value] = {}
    # ops where a pruned channel would still count: run them on the kept channels only
    for node in graph.nodes:
        if node.op in _STATS:
            mixed = _mixed_axis(k, node)
            if mixed is not None:
                replaced[node.outputs[0].name] = _kept_only(ref, ref_nodes[node], *mixed)
    by_name = {v.name: v for v in ref.values()} | replaced
    # every value that carries pruned channels: where(mask, v, 0)
    for v in graph.values():
        masks = k.block_masks(v)
        if v.is_const or not any(not m.all() for _, m in masks):
            continue
        rv = by_name[v.name]
        shape = [1] * v.type.rank
        full = np.ones(shape, bool)
        for b, m in masks:
            bshape = [m.shape[b.axes.index(a)] if a in b.axes else 1 for a in range(v.type.rank)]
            full = full & m.reshape(bshape)
        mask = ref.add_const(f"{v.name}.mask", full, unique=True)
        zero = ref.add_const(f"{v.name}.zero", np.zeros((), v.type.dtype.numpy), unique=True)
        masked = ref.add_node(Op.WHERE, [mask, rv, zero], name=f"{v.name}.masked", types=[rv.type])
        ref.replace_all_uses(rv, masked.output)
        ref.set_input(masked, 1, rv)
    ref.sort()
    return ref


def _kept_only(ref: Graph, node: Node, axis: int, kept: np.ndarray) -> Value:
    """Replace a stats op by: gather the kept channels, the op on them, scatter back with zeros."""
    x = node.inputs[0]
    name = node.name or node.outputs[0].name
    idx = np.flatnonzero(kept)
    gi = ref.add_const(f"{name}.kept", idx.astype(np.int64), unique=True)
    xk = ref.add_node(Op.GATHER, [x, gi], GatherAttrs(axis), name=f"{name}.kept", before=node).output
    params = [
        ref.add_const(f"{p.name}.kept", np.asarray(p.data)[idx], unique=True) if p.type.rank == 1 else p
        for p in node.inputs[1:]
    ]
    yk = ref.add_node(node.op, [xk, *params], node.attrs, name=name, before=node).output
    out = node.outputs[0]
    if node.op in (Op.REDUCE_MEAN, Op.REDUCE_MAX):
        y = yk  # the reduced axis is gone (or size 1): nothing to scatter back
    else:
        zero = ref.add_const(f"{name}.zero", np.zeros((), out.type.dtype.numpy), unique=True)
        first = ref.add_node(Op.SLICE, [yk], SliceAttrs(axis, 0, 1, 1), name=f"{name}.pad", before=node).output
        zcol = ref.add_node(Op.MUL, [first, zero], name=f"{name}.pad", before=node).output
        ext = ref.add_node(Op.CONCAT, [yk, zcol], AxisAttrs(axis), name=f"{name}.pad", before=node).output
        back = np.where(kept, np.cumsum(kept) - 1, len(idx)).astype(np.int64)
        bi = ref.add_const(f"{name}.scatter", back, unique=True)
        y = ref.add_node(Op.GATHER, [ext, bi], GatherAttrs(axis), name=f"{name}.scatter", before=node).output
    ref.replace_all_uses(out, y)
    ref.erase(node)
    return y


# ------------------------------------------------------------------------------------------------
# the pass
# ------------------------------------------------------------------------------------------------


def pruned_cost(graph: Graph, coupling: Coupling, keep: dict[int, np.ndarray]) -> tuple[int, int]:
    """(MACs, parameters) of the graph after pruning with `keep` (computed on a copy)."""
    from ..analysis.cost import CostAnalysis

    g = graph.copy()
    coupling_copy = _rebind(coupling, graph, g)
    apply_prune(g, coupling_copy, keep)
    cost = CostAnalysis.compute(g)
    return cost.macs, cost.params


def _rebind(coupling: Coupling, old: Graph, new: Graph) -> Coupling:
    """The same coupling with its values looked up in a copy of the graph (matched by name)."""
    from ..analysis.coupling import CouplingGroup, Member

    by_name = {v.name: v for v in new.values()}
    old_by_id = {id(v): v for v in old.values()}
    blocks = {id(by_name[old_by_id[vid].name]): bl for vid, bl in coupling.blocks.items()}
    groups = tuple(
        CouplingGroup(
            g.id,
            g.size,
            tuple(Member(by_name[m.value.name], m.axes, m.units) for m in g.members),
            g.blocked,
            g.bins,
            g.stats,
            g.name,
        )
        for g in coupling.groups
    )
    cuts = frozenset(id(by_name[old_by_id[vid].name]) for vid in coupling.cuts)
    return Coupling(groups, coupling.label_group, coupling.label_unit, blocks, cuts, coupling.links)


@dataclass(frozen=True)
class PruneChannels:
    """Remove channels: `channels` is the fraction of prunable units to remove (or meet a MACs or
    parameter budget: the fraction of the original to keep), chosen by `criterion`, per group
    (`scope=local`) or ranked across groups (`global`). `constrained=false`: each reader of a shared
    tensor keeps its own channels through a reader gather (follow with `reorder` to turn gathers
    into slices)."""

    name: ClassVar[str] = "prune-channels"
    contract: ClassVar[Contract] = Contract.MASK_EQUIVALENT

    channels: float = 0.5
    criterion: str = "l2"
    scope: str = "local"
    round_to: int = 8  # kept widths a multiple of 8 suit SIMD kernels; 1 = no rounding
    min_keep: float = 0.1
    target_macs: float = 0.0  # 0: no MACs budget
    target_params: float = 0.0  # 0: no parameter budget
    keep: str = ""  # regex over node and value names whose groups stay whole
    seed: int = 0
    calib: tuple[np.ndarray, ...] | None = None  # inputs for the taylor criterion (Python API only)
    # False: every reader of a shared tensor (residual stream, concat) keeps its own input channels
    constrained: bool = True
    # unconstrained only: snap a reader's channels to one contiguous range of the reorder's channel
    # order when that loses at most this fraction of the reader's kept importance (0: never)
    contiguity: float = 0.0

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult:
        from ..analysis.coupling import analyze
        from ..analysis.importance import unit_scores
        from ..analysis.select import SelectOptions, select
        from .readers import insert_readers

        if self.constrained:
            coupling = analyses.get(CouplingAnalysis)
            inserted = []
        else:
            # every reader of a shared tensor gets its own channels (see readers.py)
            plain = graph.copy()
            inserted = insert_readers(graph)
            coupling = analyze(graph, cuts=True)
        scores = unit_scores(
            graph, coupling, self.criterion, calib=list(self.calib) if self.calib else None, seed=self.seed
        )
        options = SelectOptions(
            channels=self.channels,
            scope=self.scope,
            round_to=self.round_to,
            min_keep=self.min_keep,
            target_macs=self.target_macs or None,
            target_params=self.target_params or None,
            keep_nodes=(self.keep,) if self.keep else (),
        )
        budget = self.target_macs or self.target_params
        notes: list[str] = []  # the selection's decisions (kept groups, relaxed round_to), for reports
        if self.constrained:
            cost_fn = (lambda kp: pruned_cost(graph, coupling, kp)) if budget else None
            keep = select(coupling, scores, options, cost_fn, notes=notes)
        else:
            from .joint import joint_keep

            # the constrained selection, then each segment's stream and readers chosen jointly (joint.py)
            keep = joint_keep(plain, graph, coupling, scores, options, self.criterion, self.calib, self.seed, notes)
            if self.contiguity > 0:
                from .reorder import snap_readers

                keep = snap_readers(graph, coupling, keep, scores, self.contiguity, notes, self.round_to)
        if not inserted and all(np.all(keep.get(g.id, True)) for g in coupling.groups):
            # nothing to remove; the stats still tell a report what was decided and why
            return PassResult(False, ALL, {"coupling": coupling, "keep": keep, "notes": notes, "units_removed": 0})
        # the reference is built only if a verifier asks; it needs the graph as it is now (a copy is
        # cheap: constants are shared) and the coupling bound to that copy
        original = graph.copy()
        original_coupling = _rebind(coupling, graph, original)

        def reference() -> Graph:
            return masked_reference(original, original_coupling, keep)

        removed = {g.id: int((~np.asarray(keep[g.id], bool)).sum()) for g in coupling.groups if g.id in keep}
        apply_prune(graph, coupling, keep)
        stats = {"coupling": coupling, "keep": keep, "notes": notes, "units_removed": sum(removed.values()),
                 "readers": len(inserted)}
        return PassResult(True, frozenset(), stats, reference=reference)
