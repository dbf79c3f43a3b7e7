"""Readers of shared tensors: the machinery of unconstrained channel pruning.

A *segment* is a channel space read by several layers: a residual stream (every block's first conv
and the next add read it), a DenseNet concat (every later layer reads every earlier layer's output).
A *reader* is one such read: a consumer (conv, linear, matmul with a constant weight) reached from
the shared tensor through a private chain of per-channel ops (BatchNorm, LayerNorm, an activation,
a depthwise conv, a transpose, a layer scale), e.g. DenseNet's BN -> ReLU -> conv1x1 or a
transformer's LayerNorm -> qkv.

Constrained pruning keeps one channel set per coupling group, so every reader of a stream drops the
same channels. Unconstrained pruning inserts a *reader gather* (all channels, in order: an identity)
at the start of every reader chain of a shared group; the coupling in cut mode
(`analyze(graph, cuts=True)`) gives each reader a coupling group of its own. The selection then
chooses every reader's channels (transform/joint.py: jointly with the stream's, under the budget),
and producers, adds and the stream's norms drop only the channels no reader reads; `resolve_streams`
sets each stream group's keep to the union of what freely chosen readers read. Physical pruning
rewrites each reader gather's indices to the positions of its kept channels in the pruned stream.

`lower_readers` (exact) turns a gather that reads every channel in order into nothing and one that
reads a contiguous range into a Slice (a view in torch); the rest stay one Gather each (a copy).

Complexity: linear in the number of nodes and channel elements.
"""

from __future__ import annotations

import numpy as np

from graphprune.ir.graph import Graph, Node, Value
from graphprune.ir.ops import BINARY_OPS, UNARY_OPS, AxisAttrs, GatherAttrs, Op, SliceAttrs

from ..analysis.coupling import Coupling, CouplingGroup, analyze

__all__ = [
    "Read",
    "find_reads",
    "insert_readers",
    "lower_readers",
    "reader_gathers",
    "reads_everything",
    "resolve_streams",
    "split_concat_reads",
    "splittable",
]

_NORMS = (Op.BATCH_NORM, Op.INSTANCE_NORM, Op.PRELU, Op.LAYER_NORM, Op.RMS_NORM)
_POOLS = (Op.MAX_POOL, Op.AVG_POOL)


def consumer_weight_axis(node: Node) -> tuple[Value, int] | None:
    """(weight, its input-channel axis) when `node` is a consumer: a dense layer that contracts its
    first input's channels with a constant weight."""
    if node.op is Op.CONV and node.attrs.groups == 1 and node.inputs[1].is_const:
        return node.inputs[1], 1
    if node.op is Op.CONV_TRANSPOSE and node.attrs.groups == 1 and node.inputs[1].is_const:
        return node.inputs[1], 0
    if node.op is Op.LINEAR and node.inputs[1].is_const:
        return node.inputs[1], 1
    if node.op is Op.MATMUL and node.inputs[1].is_const and node.inputs[1].type.rank == 2:
        return node.inputs[1], 0
    return None


def _chain_op(node: Node, index: int) -> bool:
    """Per-channel ops whose constants belong to the reader alone (they may run on its own channels)."""
    if index != 0 and node.op not in BINARY_OPS:
        return False
    if node.op in _NORMS or node.op in UNARY_OPS or node.op in _POOLS or node.op in (Op.CAST, Op.TRANSPOSE):
        return True
    if node.op is Op.CONV:  # depthwise, multiplier 1: channel c in, channel c out
        cin = node.inputs[0].type.shape[1]
        return node.attrs.groups == cin and node.outputs[0].type.shape[1] == cin
    if node.op in BINARY_OPS:  # a layer scale or bias: the other operand is a constant
        return all(v.is_const for i, v in enumerate(node.inputs) if i != index)
    return False


def _reader_chain(graph: Graph, node: Node, index: int) -> bool:
    """Whether reading through input `index` of `node` ends, privately, in consumers only."""
    if index == 0 and consumer_weight_axis(node) is not None:
        return True
    if not _chain_op(node, index):
        return False
    out = node.outputs[0]
    if out in graph.outputs or not out.uses:
        return False
    return all(_reader_chain(graph, n, i) for n, i in out.uses)


class Read:
    """One reader: `node` reads `value` (through its input `index`) along channel axis `axis`."""

    def __init__(self, node: Node, index: int, value: Value, axis: int, groups: frozenset[int]) -> None:
        self.node, self.index, self.value, self.axis, self.groups = node, index, value, axis, groups


def find_reads(graph: Graph, coupling: Coupling) -> list[Read]:
    """The reads of shared groups: prunable groups read by at least two reader chains."""
    candidates: list[Read] = []
    for v in graph.values():
        if v.is_const or v in graph.inputs:
            continue
        blocks = coupling.blocks_of(v)
        if len(blocks) != 1 or len(blocks[0].axes) != 1:
            continue
        b = blocks[0]
        p = v.producer
        if p is not None and any(
            not u.is_const and _chain_op(p, i) and _reader_chain(graph, p, i) for i, u in enumerate(p.inputs)
        ):
            continue  # inside a reader chain that starts further up
        gids = frozenset(int(x) for x in np.unique(coupling.label_group[b.labels]))
        for node, index in v.uses:
            if _reader_chain(graph, node, index):
                candidates.append(Read(node, index, v, b.axes[0], gids))
    groups = {g.id: g for g in coupling.groups}
    count: dict[int, int] = {}
    for r in candidates:
        for gid in r.groups:
            count[gid] = count.get(gid, 0) + 1
    shared = {gid for gid, n in count.items() if n >= 2 and groups[gid].prunable}
    return [r for r in candidates if r.groups & shared]


def insert_readers(graph: Graph) -> list[Node]:
    """Insert an identity reader gather before every read of a shared group (exact); returns them."""
    made = []
    for r in find_reads(graph, analyze(graph)):
        n = int(r.value.type.shape[r.axis])
        base = r.node.name or r.node.outputs[0].name
        idx = graph.add_const(f"{base}.read.idx", np.arange(n, dtype=np.int64), unique=True)
        g = graph.add_node(Op.GATHER, [r.value, idx], GatherAttrs(r.axis), name=f"{base}.read",
                           output_names=[f"{base}.read"], unique=True, before=r.node)
        graph.set_input(r.node, r.index, g.output)
        made.append(g)
    return made


def reader_gathers(graph: Graph, coupling: Coupling) -> list[Node]:
    """The cut gathers of a cut-mode coupling, in graph order."""
    return [n for n in graph.nodes if n.op is Op.GATHER and id(n.outputs[0]) in coupling.cuts]


def _uncut_consumers(graph: Graph, coupling: Coupling) -> set[int]:
    """Groups whose channels a consumer reads without a reader gather (the group's own selection counts)."""
    out: set[int] = set()
    weights = {id(w): axis for n in graph.nodes if (wa := consumer_weight_axis(n)) is not None for w, axis in [wa]}
    for g in coupling.groups:
        if any(m.is_weight and weights.get(id(m.value)) in m.axes for m in g.members):
            out.add(g.id)
    return out


def stream_groups(graph: Graph, coupling: Coupling) -> dict[int, list[Node]]:
    """Every group read through a reader gather, with its reader gathers."""
    out: dict[int, list[Node]] = {}
    for n in reader_gathers(graph, coupling):
        b = next(b for b in coupling.blocks_of(n.inputs[0]) if n.attrs.axis in b.axes)
        for gid in np.unique(coupling.label_group[b.labels]):
            out.setdefault(int(gid), []).append(n)
    return out


def resolve_streams(
    graph: Graph,
    coupling: Coupling,
    keep: dict[int, np.ndarray],
    scores: dict[int, np.ndarray] | None = None,
    round_to: int = 1,
) -> dict[int, np.ndarray]:
    """`keep` with every stream group's mask replaced by what its readers read (plus the group's own
    selection where a consumer reads it without a reader gather). The stream's width is then rounded
    up to a multiple of `round_to` with its best unread channels (by `scores`): kernels such as
    onnxruntime's blocked-layout convolutions fall back to slow paths on odd widths."""
    groups = {g.id: g for g in coupling.groups}
    need = {g.id: np.zeros(g.size, bool) for g in coupling.groups}
    for n in reader_gathers(graph, coupling):
        axis = n.attrs.axis
        b_in = next(b for b in coupling.blocks_of(n.inputs[0]) if b.axes == (axis,))
        b_out = next(b for b in coupling.blocks_of(n.outputs[0]) if b.axes == (axis,))
        lg, lu = coupling.label_group[b_out.labels], coupling.label_unit[b_out.labels]
        kept = np.array([keep[int(g)][int(u)] for g, u in zip(lg, lu, strict=True)], bool)
        sel = np.asarray(n.inputs[1].data).astype(np.int64) % len(b_in.labels)
        read = b_in.labels[sel[kept]]
        for g, u in zip(coupling.label_group[read], coupling.label_unit[read], strict=True):
            need[int(g)][int(u)] = True
    own = _uncut_consumers(graph, coupling)
    out = dict(keep)
    for gid in stream_groups(graph, coupling):
        g: CouplingGroup = groups[gid]
        if not g.prunable or g.bins:
            out[gid] = np.ones(g.size, bool)  # bins cannot follow a union; the order of a fixed group stays
            continue
        mask = need[gid] | (np.asarray(keep[gid], bool) if gid in own else False)
        if not mask.any():
            mask = np.asarray(keep[gid], bool)
        extra = -int(mask.sum()) % round_to
        if extra and mask.sum() + extra <= g.size:
            s = np.asarray(scores[gid], np.float64) if scores is not None else np.zeros(g.size)
            unread = np.flatnonzero(~mask)
            mask = mask.copy()
            mask[unread[np.argsort(-s[unread], kind="stable")[:extra]]] = True
        out[gid] = mask
    return out


def reads_everything(node: Node) -> bool:
    """Whether a gather reads every channel of its input in order (an identity: it disappears)."""
    size = node.inputs[0].type.shape[node.attrs.axis]
    sel = np.asarray(node.inputs[1].data).astype(np.int64)
    return isinstance(size, int) and len(sel) == size and np.array_equal(sel % size, np.arange(size))


def splittable(graph: Graph, node: Node) -> bool:
    """Whether a reader gather reads a concat along its axis that only reader gathers read (so
    splitting every read per concat input removes the concat), and not all of it in order (then
    it reads the concat itself, no copy of its own)."""
    src, axis = node.inputs[0].producer, node.attrs.axis
    if src is None or src.op is not Op.CONCAT or src.attrs.axis != axis or node.inputs[0] in graph.outputs:
        return False
    if reads_everything(node):
        return False
    if not all(isinstance(v.type.shape[axis], int) for v in src.inputs):
        return False
    return all(
        u.op is Op.GATHER and i == 0 and u.attrs.axis == axis and u.inputs[1].is_const and u.inputs[1].type.rank == 1
        for u, i in node.inputs[0].uses
    )


def split_concat_reads(graph: Graph) -> int:
    """Exact: a reader gather with ascending indices over a concat (along its axis) becomes a concat
    of one gather per concat input it reads (each then a slice or nothing after `lower_readers`); a
    concat nobody reads any more is removed. Returns how many gathers were split."""
    coupling = analyze(graph, cuts=True)
    count = 0
    for n in reader_gathers(graph, coupling):
        data, idx = n.inputs
        src, axis = data.producer, n.attrs.axis
        sel = np.asarray(idx.data).astype(np.int64)
        if not splittable(graph, n) or np.any(np.diff(sel) < 0) or src is None:
            continue
        widths = [v.type.shape[axis] for v in src.inputs]
        sel = sel % int(sum(widths))  # type: ignore[arg-type]
        pieces, offset = [], 0
        for j, (v, w) in enumerate(zip(src.inputs, widths, strict=True)):
            part = sel[(sel >= offset) & (sel < offset + w)] - offset
            offset += w  # type: ignore[operator]
            if len(part):
                pi = graph.add_const(f"{n.name}.{j}.idx", part, unique=True)
                pieces.append(graph.add_node(Op.GATHER, [v, pi], GatherAttrs(axis), name=f"{n.name}.{j}",
                                             output_names=[f"{n.name}.{j}"], unique=True, before=n).output)
        if len(pieces) == 1:
            graph.replace_all_uses(n.outputs[0], pieces[0])
        else:
            joined = graph.add_node(Op.CONCAT, pieces, AxisAttrs(axis), name=f"{n.name}.join",
                                    output_names=[f"{n.name}.join"], unique=True, before=n)
            graph.replace_all_uses(n.outputs[0], joined.output)
        graph.erase(n)
        if not idx.uses:
            graph.remove_const(idx)
        if not src.outputs[0].uses and src.outputs[0] not in graph.outputs:
            graph.erase(src)
        count += 1
    if count:
        graph.retype()
    return count


def lower_readers(graph: Graph) -> dict[str, int]:
    """Exact: constant 1-D channel gathers that read every channel in order disappear, those that
    read a contiguous range become a Slice. Returns how many of each and how many gathers are left."""
    stats = {"removed": 0, "sliced": 0, "gathers": 0}
    for n in list(graph.nodes):
        if n.op is not Op.GATHER or n.inputs[0].is_const or not n.inputs[1].is_const or n.inputs[1].type.rank != 1:
            continue
        data, idx = n.inputs
        axis = n.attrs.axis
        size = data.type.shape[axis]
        sel = np.asarray(idx.data).astype(np.int64)
        if not isinstance(size, int) or len(sel) == 0:
            continue
        sel = sel % size
        if not np.array_equal(sel, sel[0] + np.arange(len(sel))):
            stats["gathers"] += 1
            continue
        out = n.outputs[0]
        if len(sel) == size:
            graph.replace_all_uses(out, data)
            stats["removed"] += 1
        else:
            s = graph.add_node(Op.SLICE, [data], SliceAttrs(axis, int(sel[0]), int(sel[0]) + len(sel), 1),
                               name=n.name, output_names=[out.name + ".slice"], unique=True, before=n)
            graph.replace_all_uses(out, s.output)
            stats["sliced"] += 1
        graph.erase(n)
        if not idx.uses:
            graph.remove_const(idx)
    if stats["removed"] or stats["sliced"]:
        graph.retype()  # a slice keeps the channel axis a gather's type may not record
    return stats
