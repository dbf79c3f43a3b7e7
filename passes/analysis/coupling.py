"""Channel coupling analysis: which channels of which tensors and weights must be pruned together.

Every channel element of every tracked tensor gets a label (an int). Walking the graph once in
order, each op's rule either passes labels through (relu, norms, pools), makes fresh labels for a
new channel space (conv/linear outputs, embeddings), or records that two labels are the same channel
(residual add, depthwise conv in = out, a matmul contraction, the head axis of attention). The
connected components of those unions are the prunable *units*: removing one removes every element
that carries its labels, in every tensor and weight. Units that touch the same set of tensors form a
*coupling group* (one channel space: a layer's outputs, a residual stream, an attention block).

Exact index maps come from the labels themselves: concat offsets, split/slice/gather with constant
indices, channel shuffle and every other reshape -> transpose -> reshape, pixel (un)shuffle,
flatten -> linear (one channel owns its H*W features), grouped-query attention (a kv head and the
query heads it serves become one unit, so the q-per-kv ratio survives). An op whose channel
semantics the analysis cannot map exactly *blocks* the groups it touches, with the reason; it never
guesses. Blocked too: model inputs and outputs, opaque ops, channels mixed with an untracked tensor.

Constraints that are not unions are recorded on the group: `bins` (keep the same number of units in
every bin: grouped convolutions, GroupNorm groups, reshapes that split a channel axis; bins filled by
several groups, as when a grouped conv reads a concat, are *linked*: `Coupling.links` says those
groups keep the same count per bin) and `stats`
(ops where removing a channel is not the same as zeroing it: LayerNorm/RMSNorm/GroupNorm statistics,
softmax, mean or max over channels).

Unconstrained mode (`analyze(graph, cuts=True)`): a gather with constant 1-D indices along a channel
axis is a *cut*, a boundary between two channel spaces: its output gets fresh labels instead of the
labels it reads. Unconstrained pruning inserts such a *reader gather* before every layer that reads a
shared tensor (a residual stream, a concat read by several layers), so each reader becomes its own
coupling group and keeps its own channels; the cut gathers are listed in `Coupling.cuts`.

Complexity: one pass over the nodes; the labels are numpy arrays, so the work is linear in the
number of channel elements, and the components come from scipy's connected_components in
O(elements + unions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from graphprune.ir.graph import Graph, Node, Value
from graphprune.ir.ops import BINARY_OPS, UNARY_OPS, Op
from graphprune.pm import AnalysisManager


@dataclass
class Block:
    """Labels of one value over some of its axes (ascending); labels.shape == the value's sizes there."""

    axes: tuple[int, ...]
    labels: np.ndarray


@dataclass(frozen=True)
class Member:
    """Where a group lives in one tensor or weight: `units` has the value's sizes over `axes` and
    holds, for each element, the index of the unit it belongs to (-1: another group's element)."""

    value: Value
    axes: tuple[int, ...]
    units: np.ndarray

    @property
    def is_weight(self) -> bool:
        return self.value.is_const


@dataclass(frozen=True, eq=False)
class CouplingGroup:
    id: int
    size: int  # number of prunable units
    members: tuple[Member, ...]
    blocked: str | None = None  # why the group cannot be pruned
    # each array maps unit -> bin; a selection must keep the same number of units in every bin
    bins: tuple[np.ndarray, ...] = ()
    stats: tuple[str, ...] = ()  # nodes where removing a channel differs from zeroing it
    # for each unit: the name of the first tensor it lives in (for reports: "conv1 out channel 7")
    name: str = ""

    @property
    def prunable(self) -> bool:
        return self.blocked is None and self.size > 1

    def weights(self) -> list[Member]:
        return [m for m in self.members if m.is_weight]

    def __repr__(self) -> str:
        state = f"blocked: {self.blocked}" if self.blocked else "prunable"
        return f"<group {self.id} {self.name!r}: {self.size} units, {len(self.members)} members, {state}>"


@dataclass(eq=False)
class Coupling:
    groups: tuple[CouplingGroup, ...]
    # label -> (group id, unit index) for every tracked element, and the blocks of every value
    label_group: np.ndarray
    label_unit: np.ndarray
    blocks: dict[int, list[Block]] = field(repr=False)
    # ids of the outputs of cut gathers (unconstrained mode): reader gathers at segment boundaries
    cuts: frozenset[int] = frozenset()
    # groups whose bins must keep the same count per bin: ((group id, its number of bins), ...) each
    links: tuple[tuple[tuple[int, int], ...], ...] = ()

    def blocks_of(self, value: Value) -> list[Block]:
        return self.blocks.get(id(value), [])

    def __eq__(self, other: object) -> bool:
        # the analysis manager's preserved-check compares results: equal groups and memberships
        if not isinstance(other, Coupling) or len(self.groups) != len(other.groups):
            return False
        for a, b in zip(self.groups, other.groups, strict=True):
            if (a.size, a.blocked, len(a.members)) != (b.size, b.blocked, len(b.members)):
                return False
            for ma, mb in zip(a.members, b.members, strict=True):
                if ma.value.name != mb.value.name or ma.axes != mb.axes or not np.array_equal(ma.units, mb.units):
                    return False
        return True

    __hash__ = None  # type: ignore[assignment]


class _Walker:
    """One pass over the graph that assigns labels and records unions and constraints."""

    def __init__(self, graph: Graph, cuts: bool = False) -> None:
        self.graph = graph
        self.cut_gathers = cuts
        self.cuts: set[int] = set()
        self.next = 0
        self.blocks: dict[int, list[Block]] = {}
        self.unions: list[tuple[np.ndarray, np.ndarray]] = []
        self.blocked: list[tuple[np.ndarray, str]] = []
        self.stats: list[tuple[np.ndarray, str]] = []
        # (labels in order, bin size, whether units may own whole bins: true for a reshape, where
        # dropping whole rows is fine, false for conv groups, which would be left without inputs)
        self.bins: list[tuple[np.ndarray, int, bool]] = []
        self.attached: list[tuple[Value, Block]] = []  # weights and constants that carry labels
        # blocks whose units must own whole lines along some axes, or else be the same at every
        # position of the other axes: (constant broadcast over the others or None, block, line axes, shift)
        self.deferred: list[tuple[Value | None, Block, tuple[int, ...], int]] = []

    # -------------------------------------------------------------- label helpers

    def fresh(self, shape: Sequence[int]) -> np.ndarray:
        n = math.prod(shape)
        out = np.arange(self.next, self.next + n, dtype=np.int64).reshape(tuple(shape))
        self.next += n
        return out

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.broadcast_arrays(a, b)
        self.unions.append((a.reshape(-1).copy(), b.reshape(-1).copy()))

    def block(self, labels: np.ndarray, reason: str) -> None:
        self.blocked.append((labels.reshape(-1), reason))

    def attach(self, value: Value, axes: tuple[int, ...], labels: np.ndarray) -> None:
        self.attached.append((value, Block(axes, labels)))

    def set(self, value: Value, blocks: list[Block]) -> None:
        if blocks:
            self.blocks[id(value)] = blocks

    def get(self, value: Value) -> list[Block]:
        return self.blocks.get(id(value), [])

    def where(self, node: Node) -> str:
        return f"{node.op.value} {node.name or node.outputs[0].name!r}"

    def block_inputs(self, node: Node, reason: str) -> None:
        for v in node.inputs:
            for b in self.get(v):
                self.block(b.labels, f"{reason} at {self.where(node)}")

    # -------------------------------------------------------------- the walk

    def run(self) -> None:
        g = self.graph
        for v in g.inputs:
            t = v.type
            if t.channel_axis is not None and isinstance(t.shape[t.channel_axis], int):
                labels = self.fresh((t.shape[t.channel_axis],))
                self.block(labels, f"model input %{v.name}")
                self.set(v, [Block((t.channel_axis,), labels)])
        for node in g.nodes:
            rule = _RULES.get(node.op, _opaque)
            rule(self, node)
        for v in g.outputs:
            for b in self.get(v):
                self.block(b.labels, f"model output %{v.name}")


# ------------------------------------------------------------------------------------------------
# Rules. Each reads the blocks of the node's inputs and sets the blocks of its outputs.
# ------------------------------------------------------------------------------------------------


def _passthrough(w: _Walker, node: Node) -> None:
    w.set(node.outputs[0], [Block(b.axes, b.labels) for b in w.get(node.inputs[0])])


def _spatial(w: _Walker, node: Node) -> None:
    """Pooling and resizing work on axes 2.. of an NC... tensor: channels there would be mixed."""
    for b in w.get(node.inputs[0]):
        if any(a >= 2 for a in b.axes):
            w.block(b.labels, f"channels on a spatial axis at {w.where(node)}")
    w.set(node.outputs[0], [Block(b.axes, b.labels) for b in w.get(node.inputs[0]) if all(a < 2 for a in b.axes)])


def _pad(w: _Walker, node: Node) -> None:
    """Padding along a channel axis adds channels no producer writes: new, unprunable labels."""
    x = node.inputs[0]
    pads, rank = node.attrs.pads, x.type.rank
    blocks = []
    for b in w.get(x):
        lab = b.labels
        for pos, a in enumerate(b.axes):
            before, after = pads[a], pads[rank + a]
            if before < 0 or after < 0:
                w.block(b.labels, f"channels cropped by a pad at {w.where(node)}")
                break
            if before or after:
                shape = list(lab.shape)
                parts = []
                for n in (before, after):
                    shape[pos] = n
                    extra = w.fresh(shape)
                    w.block(extra, f"channels added by a pad at {w.where(node)}")
                    parts.append(extra)
                lab = np.concatenate([parts[0], lab, parts[1]], axis=pos)
        else:
            blocks.append(Block(b.axes, lab))
    w.set(node.outputs[0], blocks)


def _opaque(w: _Walker, node: Node) -> None:
    name = node.attrs.op_name if node.op is Op.OPAQUE else node.op.value
    w.block_inputs(node, f"opaque op {name}")


def _expand_to(block: Block, axes: tuple[int, ...], sizes: dict[int, int]) -> np.ndarray:
    """The block's labels broadcast over a superset of its axes (sizes of the new axes given)."""
    shape = []
    for a in axes:
        shape.append(block.labels.shape[block.axes.index(a)] if a in block.axes else 1)
    lab = block.labels.reshape(shape)
    return np.broadcast_to(lab, tuple(sizes[a] for a in axes))


def _elementwise(w: _Walker, node: Node) -> None:
    """Broadcasting ops: blocks on the same output axes are the same channels."""
    out = node.outputs[0]
    rank = out.type.rank
    oshape = out.type.shape
    blocks: list[Block] = []
    for v in node.inputs:  # a where's condition is data too: it is usually computed from x
        shift = rank - v.type.rank
        for b in w.get(v):
            axes = tuple(a + shift for a in b.axes)
            target = tuple(oshape[a] for a in axes)
            if any(not isinstance(s, int) for s in target):
                w.block(b.labels, f"symbolic size at {w.where(node)}")
                continue
            # a block broadcast along one of its axes (size 1 -> n) repeats its labels there
            blocks.append(Block(axes, np.broadcast_to(b.labels, target)))  # type: ignore[arg-type]
    merged = _set_merged(w, node, out, blocks)
    # every operand that varies along a block axis must carry those channels too
    for v in node.inputs:
        shift = rank - v.type.rank
        covered = {a + shift for b in w.get(v) for a in b.axes}
        for b in merged:
            varies = tuple(a for a in b.axes if a >= shift and v.type.shape[a - shift] != 1 and a not in covered)
            if not varies:
                continue
            if v.is_const and varies == b.axes:
                w.attach(v, tuple(a - shift for a in varies), b.labels)
            elif v.is_const:
                # broadcast along other block axes (rotary tables across heads): decided once units are known
                w.deferred.append((v, b, varies, shift))
            else:
                w.block(b.labels, f"channels mixed with untracked tensor %{v.name} at {w.where(node)}")


def _reduce_labels(w: _Walker, b: Block, keep_axes: tuple[int, ...]) -> np.ndarray:
    """Labels over a subset of a block's axes: elements that differ only in dropped axes become
    one unit (a constant that does not vary along an axis ties that axis's channels together)."""
    lab = b.labels
    drop = [i for i, a in enumerate(b.axes) if a not in keep_axes]
    if not drop:
        return lab
    moved = np.moveaxis(lab, drop, list(range(len(drop))))
    flat = moved.reshape(math.prod(moved.shape[: len(drop)]), -1)
    w.union(flat[:1], flat[1:])
    return flat[0].reshape(moved.shape[len(drop) :])


def _fresh_out(w: _Walker, node: Node, axis: int) -> np.ndarray:
    out = node.outputs[0]
    labels = w.fresh((int(out.type.shape[axis]),))
    w.set(out, [Block((axis,), labels)])
    return labels


def _in_block(w: _Walker, v: Value, axis: int) -> np.ndarray | None:
    """The labels of `v` along one axis, when a block covers exactly that axis."""
    for b in w.get(v):
        if b.axes == (axis,):
            return b.labels
        if axis in b.axes:
            return None
    return None


def _other_blocks(w: _Walker, v: Value, axis: int, node: Node, what: str) -> None:
    for b in w.get(v):
        if axis in b.axes and b.axes != (axis,):
            w.block(b.labels, f"{what} spans several axes at {w.where(node)}")


def _conv(w: _Walker, node: Node) -> None:
    x, wt = node.inputs[0], node.inputs[1]
    groups = int(node.attrs.groups)
    cin, cout = int(x.type.shape[1]), int(node.outputs[0].type.shape[1])
    gin, gout = cin // groups, cout // groups
    _other_blocks(w, x, 1, node, "input channels")
    inl = _in_block(w, x, 1)
    if groups == cin and inl is not None:
        # depthwise (channel multiplier m): output channel j reads input channel j // m only, so
        # an input channel and its m outputs are one unit
        outl = np.repeat(inl, gout)
        w.set(node.outputs[0], [Block((1,), outl)])
    else:
        outl = _fresh_out(w, node, 1)
        if groups > 1:
            w.bins.append((outl, gout, False))
            if inl is not None:
                w.bins.append((inl, gin, False))
    if node.op is Op.CONV:
        w.attach(wt, (0,), outl)
        if inl is not None and groups == 1:
            w.attach(wt, (1,), inl)
        elif inl is not None and groups != cin:
            # weight [OUT, IN/g]: element (o, j) reads input channel (o // (OUT/g)) * (IN/g) + j
            w.attach(wt, (0, 1), inl[np.arange(cout)[:, None] // gout * gin + np.arange(gin)[None, :]])
    else:
        if inl is not None:
            w.attach(wt, (0,), inl)
        if groups == 1:
            w.attach(wt, (1,), outl)
        elif not (groups == cin and inl is not None):
            # weight [IN, OUT/g]: element (i, j) writes output channel (i // (IN/g)) * (OUT/g) + j
            w.attach(wt, (0, 1), outl[np.arange(cin)[:, None] // gin * gout + np.arange(gout)[None, :]])
    if len(node.inputs) == 3:
        w.attach(node.inputs[2], (0,), outl)


def _linear(w: _Walker, node: Node) -> None:
    x, wt = node.inputs[0], node.inputs[1]
    last = x.type.rank - 1
    _other_blocks(w, x, last, node, "input features")
    inl = _in_block(w, x, last)
    if inl is not None:
        w.attach(wt, (1,), inl)
    out = node.outputs[0]
    labels = w.fresh((int(out.type.shape[-1]),))
    blocks = [Block(b.axes, b.labels) for b in w.get(x) if last not in b.axes]
    w.set(out, [*blocks, Block((last,), labels)])
    w.attach(wt, (0,), labels)
    if len(node.inputs) == 3:
        w.attach(node.inputs[2], (0,), labels)


def _matmul(w: _Walker, node: Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    out = node.outputs[0]
    ra, rb, ro = a.type.rank, b.type.rank, out.type.rank
    if ra < 2 or rb < 2:
        w.block_inputs(node, "vector matmul")
        return
    ka, kb = ra - 1, rb - 2
    ba = next((x for x in w.get(a) if ka in x.axes), None)
    bb = next((x for x in w.get(b) if kb in x.axes), None)

    def contracted(blk: Block, r: int, k: int) -> tuple[tuple[int, ...], np.ndarray]:
        # labels over the batch axes (in output coordinates) and the contracted axis (key `ro`)
        axes = tuple(x for x in blk.axes if x < r - 2 or x == k)
        keys = tuple(ro if x == k else x + ro - r for x in axes)
        return keys, _reduce_labels(w, blk, axes)

    if ba is not None and bb is not None:
        # a's last axis and b's second-last are the same channels, batch (head) by batch
        (keys_a, la), (keys_b, lb) = contracted(ba, ra, ka), contracted(bb, rb, kb)
        keys = tuple(sorted(set(keys_a) | set(keys_b)))
        sizes = {x: (int(a.type.shape[ka]) if x == ro else int(out.type.shape[x])) for x in keys}  # type: ignore[arg-type]
        w.union(_expand_to(Block(keys_a, la), keys, sizes), _expand_to(Block(keys_b, lb), keys, sizes))
    elif ba is not None and b.is_const and rb == 2:
        w.attach(b, (0,), _reduce_labels(w, ba, (ka,)))
    else:
        for blk in (ba, bb):
            if blk is not None:
                w.block(blk.labels, f"contracted with an untracked tensor at {w.where(node)}")
    blocks: list[Block] = []
    # batch axes (attention heads), a's rows and b's columns carry on; a channel of a batch axis
    # owns everything the contraction reads of it (a head is one unit with all its features)
    for v, r, own in ((a, ra, ra - 2), (b, rb, rb - 1)):
        for blk in w.get(v):
            keep = tuple(x for x in blk.axes if x < r - 2 or x == own)
            if keep:
                blocks.append(Block(tuple(x + ro - r for x in keep), _reduce_labels(w, blk, keep)))
    if b.is_const and rb == 2:
        labels = w.fresh((int(out.type.shape[-1]),))
        w.attach(b, (1,), labels)
        blocks.append(Block((ro - 1,), labels))
    _set_merged(w, node, out, blocks)


def _axis_labels(w: _Walker, v: Value, axis: int) -> np.ndarray | None:
    """Labels along one axis of `v`, merging the other axes of a multi-axis block into them."""
    for b in w.get(v):
        if axis in b.axes:
            return _reduce_labels(w, b, (axis,)) if b.axes != (axis,) else b.labels
    return None


def _set_merged(w: _Walker, node: Node, out: Value, blocks: list[Block]) -> list[Block]:
    """Set blocks on `out`, uniting blocks that land on the same axes."""
    merged: list[Block] = []
    shape = out.type.shape
    for nb in blocks:
        for m in list(merged):
            if set(m.axes) & set(nb.axes):
                axes = tuple(sorted(set(m.axes) | set(nb.axes)))
                sizes = {a: int(shape[a]) for a in axes}
                la, lb = _expand_to(m, axes, sizes), _expand_to(nb, axes, sizes)
                w.union(la, lb)
                merged.remove(m)
                nb = Block(axes, np.ascontiguousarray(la))
        merged.append(nb)
    w.set(out, merged)
    return merged


def _channel_norm(w: _Walker, node: Node) -> None:
    """BatchNorm, InstanceNorm, GroupNorm, PReLU: per-channel parameters on axis 1."""
    x = node.inputs[0]
    _passthrough(w, node)
    lab = _in_block(w, x, 1)
    if lab is None:
        _other_blocks(w, x, 1, node, "normalised channels")
        return
    for p in node.inputs[1:]:
        if p.type.rank == 1 and p.type.shape[0] == len(lab) and len(lab) > 1:
            w.attach(p, (0,), lab)
        elif p.type.numel() != 1:
            w.block(lab, f"parameter %{p.name} of unexpected shape at {w.where(node)}")
    if node.op is Op.GROUP_NORM:
        w.bins.append((lab, len(lab) // int(node.attrs.num_groups), False))
        w.stats.append((lab, w.where(node)))


def _last_axes_norm(w: _Walker, node: Node) -> None:
    x = node.inputs[0]
    axes = tuple(range(node.attrs.axis, x.type.rank))
    _passthrough(w, node)
    for b in w.get(x):
        if set(b.axes) & set(axes):
            w.stats.append((b.labels, w.where(node)))
            if b.axes != (x.type.rank - 1,) or len(axes) != 1:
                w.block(b.labels, f"normalisation over several axes at {w.where(node)}")
            for p in node.inputs[1:]:
                if p.type.rank == 1 and b.axes == (x.type.rank - 1,):
                    w.attach(p, (0,), b.labels)


def _reduce(w: _Walker, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    axes = set(node.attrs.axes)
    blocks = []
    for b in w.get(x):
        keep = tuple(a for a in b.axes if a not in axes)
        if len(keep) < len(b.axes) and node.op is not Op.REDUCE_SUM:
            w.stats.append((b.labels, w.where(node)))  # mean or max over channels: removal != zeroing
        if not keep:
            continue
        lab = _reduce_labels(w, b, keep)
        if not node.attrs.keepdims:
            keep = tuple(a - sum(1 for r in axes if r < a) for a in keep)
        blocks.append(Block(keep, lab))
    w.set(out, blocks)


def _softmax(w: _Walker, node: Node) -> None:
    for b in w.get(node.inputs[0]):
        if node.attrs.axis in b.axes:
            w.stats.append((b.labels, w.where(node)))
    _passthrough(w, node)


def _concat(w: _Walker, node: Node) -> None:
    axis = node.attrs.axis
    out = node.outputs[0]
    along = [next((b for b in w.get(v) if axis in b.axes), None) for v in node.inputs]
    blocks: list[Block] = []
    if any(b is not None for b in along):
        axes = next(b.axes for b in along if b is not None)
        pos = axes.index(axis)
        parts = []
        for v, b in zip(node.inputs, along, strict=True):
            if b is not None and b.axes != axes:
                w.block(b.labels, f"inputs carry channels on different axes at {w.where(node)}")
                b = None
            if b is None:
                lab = w.fresh(tuple(int(v.type.shape[a]) for a in axes))
                if v.is_const:
                    w.attach(v, axes, lab)
                else:
                    w.block(lab, f"untracked channels from %{v.name} at {w.where(node)}")
            else:
                lab = b.labels
            parts.append(lab)
        blocks.append(Block(axes, np.concatenate(parts, axis=pos)))
    # blocks on other axes (tokens concatenated, features tracked) are the same channels in every input
    others = [Block(b.axes, b.labels) for v in node.inputs for b in w.get(v) if axis not in b.axes]
    merged = _set_merged(w, node, out, blocks + others)
    for v in node.inputs:
        covered = {a for b in w.get(v) for a in b.axes}
        for b in merged:
            if axis in b.axes or set(b.axes) & covered:
                continue
            if v.is_const:  # a class token concatenated along the tokens carries the features
                w.attach(v, b.axes, b.labels)
            else:
                w.block(b.labels, f"channels mixed with untracked tensor %{v.name} at {w.where(node)}")


def _take(b: Block, axis: int, idx: np.ndarray | int) -> Block:
    """The block after selecting `idx` along one of its axes (an int index drops the axis)."""
    pos = b.axes.index(axis)
    lab = np.take(b.labels, idx, axis=pos)
    if isinstance(idx, int):
        return Block(tuple(a if a < axis else a - 1 for a in b.axes if a != axis), lab)
    return Block(b.axes, lab)


def _split(w: _Walker, node: Node) -> None:
    axis = node.attrs.axis
    start = 0
    for out, size in zip(node.outputs, node.attrs.sizes, strict=True):
        idx = np.arange(start, start + size)
        w.set(out, [_take(b, axis, idx) if axis in b.axes else b for b in w.get(node.inputs[0])])
        start += size


def _slice(w: _Walker, node: Node) -> None:
    a = node.attrs
    x = node.inputs[0]
    idx = np.arange(int(x.type.shape[a.axis]))[a.start : a.end if a.end >= 0 else None : a.step]
    w.set(node.outputs[0], [_take(b, a.axis, idx) if a.axis in b.axes else b for b in w.get(x)])


def _gather(w: _Walker, node: Node) -> None:
    data, idx = node.inputs
    axis = node.attrs.axis
    out = node.outputs[0]
    if data.is_const and axis == 0 and data.type.rank == 2:
        # an embedding table [V, D]: rows are looked up by data, columns are a channel space
        labels = w.fresh((int(data.type.shape[1]),))  # tied uses of the table are united afterwards
        w.attach(data, (1,), labels)
        w.set(out, [Block((out.type.rank - 1,), labels)])
        return
    shift = idx.type.rank - 1
    blocks = []
    if w.cut_gathers and idx.is_const and idx.type.rank == 1 and _in_block(w, data, axis) is not None:
        # a cut: the gather's output is a new channel space (a reader's own channels)
        w.cuts.add(id(out))
        rest = [b for b in w.get(data) if axis not in b.axes]
        w.set(out, [*rest, Block((axis,), w.fresh((int(out.type.shape[axis]),)))])
        return
    for b in w.get(data):
        if axis in b.axes:
            if not (idx.is_const and idx.type.rank <= 1):
                w.block(b.labels, f"gather with data-dependent indices at {w.where(node)}")
                continue
            sel = np.asarray(idx.data).astype(np.int64) % int(data.type.shape[axis])
            b = _take(b, axis, int(sel) if idx.type.rank == 0 else sel)
            if idx.type.rank == 0:
                blocks.append(b)
                continue
        blocks.append(Block(tuple(x if x <= axis else x + shift for x in b.axes), b.labels))
    w.set(out, blocks)


def _transpose(w: _Walker, node: Node) -> None:
    perm = node.attrs.perm
    blocks = []
    for b in w.get(node.inputs[0]):
        new_axes = [perm.index(a) for a in b.axes]
        order = np.argsort(new_axes)
        blocks.append(Block(tuple(sorted(new_axes)), np.transpose(b.labels, order)))
    w.set(node.outputs[0], blocks)


def _squeeze_like(w: _Walker, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    axes = set(node.attrs.axes)
    blocks = []
    for b in w.get(x):
        if node.op is Op.SQUEEZE:
            mapped = tuple(a - sum(1 for s in axes if s < a) for a in b.axes if a not in axes)
            lab = b.labels.reshape([s for a, s in zip(b.axes, b.labels.shape, strict=True) if a not in axes])
        else:
            kept = [i for i in range(out.type.rank) if i not in axes]
            mapped = tuple(kept[a] for a in b.axes)
            lab = b.labels
        blocks.append(Block(mapped, lab))
    w.set(out, blocks)


def _expand(w: _Walker, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shift = out.type.rank - x.type.rank
    blocks = []
    for b in w.get(x):
        axes = tuple(a + shift for a in b.axes)
        target = tuple(out.type.shape[a] for a in axes)
        blocks.append(Block(axes, np.broadcast_to(b.labels, target)))  # type: ignore[arg-type]
    w.set(out, blocks)


def _segments(src: Sequence[int], dst: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Split a reshape into runs of source axes and target axes with equal products."""
    out, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        si, dj = [i], [j]
        if i >= len(src) or j >= len(dst):
            return None
        ps, pd = src[i], dst[j]
        i, j = i + 1, j + 1
        while ps != pd:
            if ps < pd:
                if i >= len(src):
                    return None
                ps *= src[i]
                si.append(i)
                i += 1
            else:
                if j >= len(dst):
                    return None
                pd *= dst[j]
                dj.append(j)
                j += 1
        # size-1 axes attach to the run on their left
        while i < len(src) and src[i] == 1 and (j >= len(dst) or dst[j] != 1):
            si.append(i)
            i += 1
        while j < len(dst) and dst[j] == 1 and (i >= len(src) or src[i] != 1):
            dj.append(j)
            j += 1
        out.append((si, dj))
    return out


def _reshape(w: _Walker, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    blocks = w.get(x)
    if not blocks:
        return
    # symbolic dims (the batch) are matched as tokens and never carry channels
    src = [d if isinstance(d, int) else -1 for d in x.type.shape]
    dst = [d if isinstance(d, int) else -1 for d in out.type.shape]
    segs = _segments([abs(d) if d != -1 else 1 for d in src], [abs(d) if d != -1 else 1 for d in dst])
    if segs is None or any(
        (any(src[a] == -1 for a in si) or any(dst[b] == -1 for b in dj)) and (len(si) > 1 or len(dj) > 1)
        for si, dj in segs
    ):
        for b in blocks:
            w.block(b.labels, f"reshape {tuple(x.type.shape)} -> {tuple(out.type.shape)} at {w.where(node)}")
        return
    new: list[Block] = []
    for b in blocks:
        seg_axes: list[int] = []
        dst_axes: list[int] = []
        for si, dj in segs:
            if set(si) & set(b.axes):
                seg_axes += si
                dst_axes += dj
        # labels over the whole source run (broadcast where the run has untracked axes), reshaped
        sizes = {a: int(x.type.shape[a]) for a in seg_axes}
        lab = _expand_to(b, tuple(seg_axes), sizes)
        lab = np.ascontiguousarray(lab).reshape(tuple(int(out.type.shape[a]) for a in dst_axes))
        # target axes where the labels do not vary carry no channels (a merged spatial axis does)
        keep = [i for i, a in enumerate(dst_axes) if _varies(lab, i)]
        if not keep:
            new.append(Block((dst_axes[0],), lab.reshape(-1)[:1]))
            continue
        drop = [i for i in range(len(dst_axes)) if i not in keep]
        lab = lab[tuple(0 if i in drop else slice(None) for i in range(len(dst_axes)))]
        new.append(Block(tuple(dst_axes[i] for i in keep), lab))
        # a channel axis split in two (heads, a shuffle's groups): what is kept must stay a product of
        # rows and columns, or a later transpose would pack the kept channels in another order
        if len(keep) > 1:
            nb = new[-1]
            w.deferred.append((None, nb, nb.axes[1:], 0))
    w.set(out, new)


def _varies(lab: np.ndarray, axis: int) -> bool:
    if lab.shape[axis] <= 1:
        return False
    first = np.take(lab, [0], axis=axis)
    return not np.array_equal(np.broadcast_to(first, lab.shape), lab)


def _pixel_shuffle(w: _Walker, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    r2 = node.attrs.factor**2
    lab = _in_block(w, x, 1)
    _other_blocks(w, x, 1, node, "shuffled channels")
    if lab is None:
        return
    if node.op is Op.PIXEL_SHUFFLE:
        grouped = lab.reshape(-1, r2)  # output channel c is made of input channels c*r^2 .. c*r^2 + r^2 - 1
        w.union(grouped[:, :1], grouped[:, 1:])
        w.set(out, [Block((1,), grouped[:, 0].copy())])
    else:
        w.set(out, [Block((1,), np.repeat(lab, r2))])


def _attention(w: _Walker, node: Node) -> None:
    q, k, v = node.inputs[:3]
    out = node.outputs[0]
    r = q.type.rank
    head = r - 3
    heads = {}
    # one head (SegFormer's first stage): its features are pruned like an unheaded attention's
    single = r < 3 or int(q.type.shape[head]) == int(k.type.shape[head]) == 1
    if not single:
        for t in (q, k, v):
            for b in w.get(t):
                if head in b.axes:
                    heads[id(t)] = _reduce_labels(w, b, (head,))  # a head is one unit with its features
                elif b.axes:
                    w.block(b.labels, f"features tracked without their head at {w.where(node)}")
    if heads:
        # query head h reads key/value head h // (Hq / Hkv): a kv head and its query heads are one unit
        hq, hk = int(q.type.shape[head]), int(k.type.shape[head])
        hl = heads.get(id(q))
        if hl is None:
            hl = w.fresh((hq,))
            w.block(hl, f"query heads untracked at {w.where(node)}")
        for t in (k, v):
            if id(t) in heads:
                w.union(hl, np.repeat(heads[id(t)], hq // hk))
            else:
                w.block(hl, f"%{t.name} heads untracked at {w.where(node)}")
        if len(node.inputs) == 4:
            _attention_mask(w, node, hl, head)
        w.set(out, [Block((head,), hl)])
        return
    if len(node.inputs) == 4 and w.get(node.inputs[3]):
        w.block_inputs(node, "attention mask carrying pruned channels")
    lq, lk, lv = (_axis_labels(w, t, r - 1) for t in (q, k, v))
    if lq is not None and lk is not None:
        w.union(lq, lk)
    else:
        for lab in (lq, lk):
            if lab is not None:
                w.block(lab, f"q/k features of one side untracked at {w.where(node)}")
    if lv is not None:
        w.set(out, [Block((r - 1,), lv)])


def _attention_mask(w: _Walker, node: Node, heads: np.ndarray, head: int) -> None:
    """A mask broadcast over the heads constrains nothing; one with a mask per head (ALiBi-style
    biases) loses the rows of the pruned heads: a constant is sliced, a tracked tensor is coupled."""
    mask = node.inputs[3]
    axis = head - (node.inputs[0].type.rank - mask.type.rank)  # masks broadcast from the right
    blocks = w.get(mask)
    if axis < 0 or int(mask.type.shape[axis]) == 1:
        for b in blocks:
            w.block(b.labels, f"attention mask carrying channels at {w.where(node)}")
        return
    if mask.is_const:
        w.attach(mask, (axis,), heads)
        return
    lab = _axis_labels(w, mask, axis)
    if lab is None:
        w.block(heads, f"attention mask with one row per head, untracked, at {w.where(node)}")
    else:
        w.union(lab, heads)


_RULES = {
    Op.CONV: _conv,
    Op.CONV_TRANSPOSE: _conv,
    Op.LINEAR: _linear,
    Op.MATMUL: _matmul,
    Op.BATCH_NORM: _channel_norm,
    Op.INSTANCE_NORM: _channel_norm,
    Op.GROUP_NORM: _channel_norm,
    Op.PRELU: _channel_norm,
    Op.LAYER_NORM: _last_axes_norm,
    Op.RMS_NORM: _last_axes_norm,
    Op.SOFTMAX: _softmax,
    Op.CONCAT: _concat,
    Op.SPLIT: _split,
    Op.SLICE: _slice,
    Op.GATHER: _gather,
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.SQUEEZE: _squeeze_like,
    Op.UNSQUEEZE: _squeeze_like,
    Op.EXPAND: _expand,
    Op.PIXEL_SHUFFLE: _pixel_shuffle,
    Op.PIXEL_UNSHUFFLE: _pixel_shuffle,
    Op.REDUCE_MEAN: _reduce,
    Op.REDUCE_SUM: _reduce,
    Op.REDUCE_MAX: _reduce,
    Op.ATTENTION: _attention,
    Op.WHERE: _elementwise,
    Op.CAST: _passthrough,
    Op.PAD: _pad,
    Op.RESIZE: _spatial,
    Op.MAX_POOL: _spatial,
    Op.AVG_POOL: _spatial,
    Op.ADAPTIVE_AVG_POOL: _spatial,
}
for _op in UNARY_OPS:
    _RULES[_op] = _passthrough
for _op in BINARY_OPS:
    _RULES[_op] = _elementwise


# ------------------------------------------------------------------------------------------------
# From labels to groups
# ------------------------------------------------------------------------------------------------


def _components(n: int, unions: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Component id of every label (scipy's connected components over the union pairs)."""
    if not unions or n == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a = np.concatenate([u[0] for u in unions])
    b = np.concatenate([u[1] for u in unions])
    adj = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    return comp.astype(np.int64)


def _resolve_deferred(w: _Walker) -> None:
    """A block whose units own whole lines along the given axes is fine as it is (whole heads: a
    rotary table broadcast over heads needs no slicing, a split channel axis loses whole rows);
    otherwise the channels at one position along those axes go together across the other axes."""
    pending = w.deferred
    while pending:
        comp = _components(w.next, w.unions)
        rest = []
        for v, b, varies, shift in pending:
            lines = np.moveaxis(comp[b.labels], [b.axes.index(a) for a in varies], range(-len(varies), 0))
            lines = lines.reshape(-1, math.prod(lines.shape[-len(varies) :]))
            if np.all(lines == lines[:, :1]):
                continue
            lab = _reduce_labels(w, b, varies)
            if v is not None:
                w.attach(v, tuple(a - shift for a in varies), lab)
            rest.append((v, b, varies, shift))
        pending = [] if len(rest) == len(pending) else rest  # repeat while new unions can change lines
        if pending and len(rest) == len(pending):
            break


def analyze(graph: Graph, cuts: bool = False) -> Coupling:
    w = _Walker(graph, cuts)
    w.run()
    _resolve_deferred(w)
    # one constant read in several places (tied embeddings, a shared conv) has the same channels
    # on the same axes in every use
    first: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
    members: list[tuple[Value, tuple[int, ...], np.ndarray]] = []
    for v, b in w.attached:
        key = (id(v), b.axes)
        if key in first:
            w.union(first[key], b.labels)
        else:
            first[key] = b.labels
            members.append((v, b.axes, b.labels))
    values = {id(v): v for v in graph.values()}
    for vid, blocks in w.blocks.items():
        for b in blocks:
            members.append((values[vid], b.axes, b.labels))
    n = w.next
    comp = _components(n, w.unions)

    # a unit's signature: the members it appears in and how many elements it has in each, hashed
    # as sum over members of count * a random 62-bit weight (wrapping; distinct count vectors collide
    # with probability ~2^-62). Units with one signature are one coupling group.
    weights = np.random.default_rng(0).integers(1, 2**62, size=len(members), dtype=np.int64)
    flat = [comp[lab.reshape(-1)] for _, _, lab in members]
    every = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    sig = np.zeros(n, dtype=np.int64)
    with np.errstate(over="ignore"):
        np.add.at(sig, every, np.repeat(weights, [len(f) for f in flat]))
    seen = np.zeros(n, dtype=bool)
    seen[every] = True
    roots = np.flatnonzero(seen)  # component ids some member reads
    # group ids in order of first appearance (labels are made in graph order), units numbered in
    # that order within their group
    first_label = np.full(n, n, dtype=np.int64)
    np.minimum.at(first_label, comp, np.arange(n))
    order = roots[np.argsort(first_label[roots], kind="stable")]
    _, first, inverse = np.unique(sig[order], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    of_group = rank[inverse.reshape(-1)]
    by_group = np.argsort(of_group, kind="stable")
    sizes = np.bincount(of_group, minlength=len(first)).tolist()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    unit_in_order = np.empty(len(order), dtype=np.int64)
    unit_in_order[by_group] = np.arange(len(order)) - starts[of_group[by_group]]
    comp_group = np.full(n, -1, dtype=np.int64)
    comp_unit = np.full(n, -1, dtype=np.int64)
    comp_group[order], comp_unit[order] = of_group, unit_in_order
    label_group, label_unit = comp_group[comp], comp_unit[comp]

    blocked: dict[int, str] = {}
    for lab, reason in w.blocked:
        for g in np.unique(label_group[lab]):
            blocked.setdefault(int(g), reason)
    stats: dict[int, list[str]] = {}
    for lab, where in w.stats:
        for g in np.unique(label_group[lab.reshape(-1)]):
            if where not in stats.setdefault(int(g), []):
                stats[int(g)].append(where)
    bins: dict[int, list[np.ndarray]] = {}
    links: list[tuple[tuple[int, int], ...]] = []
    for lab, size, whole_ok in w.bins:
        _add_bins(lab, size, whole_ok, label_group, label_unit, sizes, bins, blocked, links)
    # a link with a blocked group cannot be honoured: its partners stay whole too (links chain)
    for g, seed in linked_to(links, blocked).items():
        blocked[g] = f"its grouped channels must keep the per-group count of a blocked group ({blocked[seed]})"
    links = [link for link in dict.fromkeys(links) if not any(g in blocked for g, _ in link)]

    grouped: dict[int, list[Member]] = {g: [] for g in range(len(sizes))}
    for v, axes, lab in members:
        gl = label_group[lab]
        g0 = gl.flat[0] if gl.size else -1
        if gl.size and (gl == g0).all():  # the common case: a member of one group
            grouped[int(g0)].append(Member(v, axes, label_unit[lab]))
            continue
        for g in np.unique(gl):
            units = np.where(gl == g, label_unit[lab], -1)
            grouped[int(g)].append(Member(v, axes, units))
    groups = tuple(
        CouplingGroup(
            g,
            sizes[g],
            tuple(grouped[g]),
            blocked.get(g),
            tuple(bins.get(g, ())),
            tuple(stats.get(g, ())),
            _group_name(grouped[g]),
        )
        for g in range(len(sizes))
    )
    return Coupling(groups, label_group, label_unit, w.blocks, frozenset(w.cuts), tuple(links))


def linked_to(links: Sequence[tuple[tuple[int, int], ...]], seeds: Iterable[int]) -> dict[int, int]:
    """Every group that a chain of links joins to one of `seeds` (not a seed itself) -> that seed."""
    found = dict.fromkeys(seeds)
    reached = {g: g for g in found}
    changed = True
    while changed:
        changed = False
        for link in links:
            seed = next((reached[g] for g, _ in link if g in reached), None)
            for g, _ in link:
                if seed is not None and g not in reached:
                    reached[g], changed = seed, True
    return {g: s for g, s in reached.items() if g not in found}


def _add_bins(
    lab: np.ndarray,
    size: int,
    whole_ok: bool,
    label_group: np.ndarray,
    label_unit: np.ndarray,
    sizes: list[int],
    bins: dict[int, list[np.ndarray]],
    blocked: dict[int, str],
    links: list[tuple[tuple[int, int], ...]],
) -> None:
    """Equal-count bins over a channel axis (consecutive runs of `size` elements). A unit spread
    evenly over the bins keeps them balanced whatever is selected; units that each sit in one bin
    become a unit -> bin map (keep equally many per bin); anything else cannot keep the structure.

    Bins over several groups (a grouped conv reading a concat or a residual stream fed by several
    producers: ShuffleNet) are kept when every group fills whole bins of its own with all its units,
    each unit the same number of elements: each group keeps equally many per bin, and a link says
    the groups keep the same count per bin (selection keeps `kept / nbins` equal across the link)."""
    flat = lab.reshape(-1)
    which = np.arange(len(flat)) // size
    nbins = int(which.max()) + 1
    gs, us = label_group[flat], label_unit[flat]
    present_groups = np.unique(gs)
    maps: dict[int, np.ndarray] = {}  # group -> unit -> bin, for the groups the bins constrain
    per: set[int] = set()  # elements of a unit in its bin
    uneven: list[int] = []
    for g in present_groups:
        sel = gs == g
        counts = np.zeros((sizes[g], nbins), dtype=np.int64)
        np.add.at(counts, (us[sel], which[sel]), 1)
        present = counts.sum(axis=1) > 0
        counts = counts[present]
        if np.all(counts == counts[:, :1]):
            continue  # every unit has the same share of every bin
        if whole_ok and np.all((counts == 0) | (counts == size)):
            continue  # units own whole rows: dropping rows keeps the shape rectangular
        single = (counts > 0).sum(axis=1) == 1
        if np.all(single) and len(np.unique(counts.max(axis=1))) == 1:
            maps[int(g)] = np.full(sizes[g], -1, dtype=np.int64)
            maps[int(g)][np.flatnonzero(present)] = counts.argmax(axis=1)
            per.add(int(counts.max()))
        else:
            uneven.append(int(g))
    if len(present_groups) == 1 or not (maps or uneven):
        for g in uneven:
            blocked.setdefault(g, "channels split over groups unevenly (grouped conv, group norm or reshape)")
        for g, unit_bin in maps.items():
            bins.setdefault(g, []).append(unit_bin)
        return
    # bins shared by several groups: linked when every group fills whole bins of its own with all
    # its units, the same number of elements per unit
    pure = all(len(np.unique(gs[which == b])) == 1 for b in range(nbins))
    whole = len(maps) == len(present_groups) and all(np.all(m >= 0) for m in maps.values())
    if not (pure and whole and len(per) == 1):
        for h in present_groups:
            blocked.setdefault(int(h), "grouped channels drawn unevenly from several groups")
        return
    link = []
    for g, unit_bin in maps.items():
        own, local = np.unique(unit_bin, return_inverse=True)  # the group's bins, numbered 0..
        bins.setdefault(g, []).append(local.reshape(-1))
        link.append((g, len(own)))
    links.append(tuple(sorted(link)))


def _group_name(members: list[Member]) -> str:
    acts = [m for m in members if not m.is_weight and m.value.producer is not None]
    pick = acts[0] if acts else members[0]
    node = pick.value.producer
    return (node.name if node is not None and node.name else pick.value.name) or pick.value.name


class CouplingAnalysis:
    name: ClassVar[str] = "coupling"

    @classmethod
    def compute(cls, graph: Graph, analyses: AnalysisManager | None = None) -> Coupling:
        return analyze(graph)
