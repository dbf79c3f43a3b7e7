"""The reorder pass (EXACT): one channel order per segment, so that reader gathers become slices.

1. The coupling in cut mode finds the segments: the stream groups read through reader gathers,
   joined when one gather reads several of them (a concat), and their readers (`segments`).
2. `plan` (analysis/reorder.py) picks every stream block's order; `apply_permutation` moves the
   producers' output channels, the stream's norms and biases, and rewrites the reader gathers'
   indices so every reader still reads the same channels.
3. Each reader whose indices are now out of order permutes its own channels (its weights' input
   columns, its norm's parameters) so that the indices ascend.
4. A reader of a concat (DenseNet) reads each concat input on its own and concatenates the pieces
   (`split_concat_reads`): a piece is then a slice of one producer's output, and the original concat,
   read by nobody else, goes away. The planner knows this and asks each piece to be a run.
5. `lower_readers`: a gather of every channel in order disappears, a contiguous range becomes a Slice.

`method`: search (ours), upscale (UPSCALE's heuristic, the baseline) or none (no reordering and no
splitting: the naive export, a gather per reader in the original order; only steps 3 and 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphprune.ir.errors import GraphError
from graphprune.ir.graph import Graph, Node
from graphprune.pm import ALL, AnalysisManager, Contract, PassResult

from ..analysis.coupling import Coupling, CouplingGroup, analyze
from ..analysis.reorder import ReaderCost, ReaderSpec, SegmentSpec, evaluate, plan, upscale_order
from .permute_channels import apply_permutation, permutable
from .readers import lower_readers, reader_gathers, resolve_streams, split_concat_reads, splittable, stream_groups

__all__ = ["METHODS", "Reorder", "SegmentResult", "reorder_graph", "segments", "snap_readers"]

METHODS = ("search", "upscale", "none")


def _free(group: CouplingGroup) -> bool:
    """Permutable, and every member holds every unit equally often (so units can trade places)."""
    if not permutable(group):
        return False
    for m in group.members:
        u = m.units[m.units >= 0]
        counts = np.bincount(u, minlength=group.size)
        if not np.all(counts == counts[0]):
            return False
    return True


def _block(coupling: Coupling, node: Node, which: int) -> np.ndarray:
    v = node.inputs[0] if which == 0 else node.outputs[0]
    return next(b.labels for b in coupling.blocks_of(v) if b.axes == (node.attrs.axis,))


def _layout(coupling: Coupling, labels: np.ndarray, sizes: dict[int, int]) -> list[int] | None:
    """The groups along a gathered axis, in order, when each sits there whole and in slot order."""
    lg, lu = coupling.label_group[labels], coupling.label_unit[labels]
    out: list[int] = []
    i = 0
    while i < len(lg):
        g = int(lg[i])
        n = sizes[g]
        whole = np.array_equal(lg[i : i + n], np.full(n, g)) and np.array_equal(lu[i : i + n], np.arange(n))
        if g in out or not whole:
            return None
        out.append(g)
        i += n
    return out


def _bytes_per_channel(node: Node) -> int:
    t = node.outputs[0].type
    n = 1
    for a, d in enumerate(t.shape):
        if a != node.attrs.axis and isinstance(d, int):
            n *= d
    return n * np.dtype(t.dtype.numpy).itemsize


@dataclass(frozen=True)
class Segment:
    spec: SegmentSpec
    groups: tuple[int, ...]  # block -> coupling group id
    gathers: tuple[Node, ...]  # the readers, as in spec.readers


def _pieces(graph: Graph, n: Node, layout: list[int] | None, sizes: dict[int, int], block: dict[int, int]) -> tuple:
    """The blocks of each concat input when `n` reads a concat that `split_concat_reads` will split
    and whose inputs hold whole blocks; () otherwise."""
    src = n.inputs[0].producer
    if layout is None or src is None or not splittable(graph, n):
        return ()
    widths = [src.inputs[j].type.shape[n.attrs.axis] for j in range(len(src.inputs))]
    out, cur, acc, i = [], [], 0, 0
    for w in widths:
        if not isinstance(w, int):
            return ()
        while acc < w and i < len(layout):
            cur.append(block[layout[i]])
            acc += sizes[layout[i]]
            i += 1
        if acc != w:
            return ()
        out.append(tuple(cur))
        cur, acc = [], 0
    return tuple(out) if len(out) > 1 else ()


def segments(graph: Graph, coupling: Coupling, split: bool = False) -> list[Segment]:
    """Every segment of a cut-mode coupling, with its readers (`split`: reads of a concat are split
    per concat input, see `split_concat_reads`)."""
    streams = stream_groups(graph, coupling)
    groups = {g.id: g for g in coupling.groups}
    parent = {g: g for g in streams}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in reader_gathers(graph, coupling):
        gids = [int(g) for g in np.unique(coupling.label_group[_block(coupling, n, 0)])]
        for g in gids[1:]:
            parent[find(g)] = find(gids[0])
    comps: dict[int, list[int]] = {}
    for g in sorted(streams):
        comps.setdefault(find(g), []).append(g)
    out = []
    sizes = {g.id: g.size for g in coupling.groups}
    for gids in comps.values():
        block = {g: i for i, g in enumerate(gids)}
        gathers = [n for n in reader_gathers(graph, coupling) if any(n in streams[g] for g in gids)]
        layouts = [_layout(coupling, _block(coupling, n, 0), sizes) for n in gathers]
        ordered = all(lay is not None for lay in layouts)
        free = tuple(ordered and _free(groups[g]) for g in gids)
        readers = []
        for n, lay in zip(gathers, layouts, strict=True):
            lab = _block(coupling, n, 0)
            sel = np.asarray(n.inputs[1].data).astype(np.int64) % len(lab)
            read = lab[sel]
            reads = tuple(
                (block[int(g)], int(u))
                for g, u in zip(coupling.label_group[read], coupling.label_unit[read], strict=True)
            )
            out_lab = _block(coupling, n, 1)
            og = groups[int(coupling.label_group[out_lab[0]])]
            sortable = (
                bool(np.all(coupling.label_group[out_lab] == og.id))
                and np.array_equal(coupling.label_unit[out_lab], np.arange(len(out_lab)))
                and _free(og)
            )
            layout = tuple(block[g] for g in lay) if lay is not None else tuple(block[g] for g in gids)
            pieces = _pieces(graph, n, lay, sizes, block) if split and sortable else ()
            readers.append(
                ReaderSpec(n.name or n.outputs[0].name, layout, reads, _bytes_per_channel(n), sortable, pieces)
            )
        name = groups[gids[0]].name
        spec = SegmentSpec(name, tuple(sizes[g] for g in gids), free, tuple(readers))
        out.append(Segment(spec, tuple(gids), tuple(gathers)))
    return out


def _sort_readers(graph: Graph) -> int:
    """Permute each reader's own channels so that its gather's indices ascend."""
    coupling = analyze(graph, cuts=True)
    groups = {g.id: g for g in coupling.groups}
    perms: dict[int, np.ndarray] = {}
    for n in reader_gathers(graph, coupling):
        idx = np.asarray(n.inputs[1].data).astype(np.int64)
        if np.all(np.diff(idx) >= 0):
            continue
        out_lab = _block(coupling, n, 1)
        og = groups[int(coupling.label_group[out_lab[0]])]
        if (
            og.id not in perms
            and np.all(coupling.label_group[out_lab] == og.id)
            and np.array_equal(coupling.label_unit[out_lab], np.arange(og.size))
            and _free(og)
        ):
            perms[og.id] = np.argsort(idx, kind="stable")
    if perms:
        apply_permutation(graph, coupling, perms)
    return len(perms)


@dataclass(frozen=True)
class SegmentResult:
    name: str
    readers: tuple[ReaderCost, ...]  # after the reorder
    naive_bytes: int  # bytes the readers copy without reordering

    @property
    def views(self) -> int:
        return sum(r.view for r in self.readers)

    @property
    def gathers(self) -> int:
        return sum(not r.view for r in self.readers)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.readers)


def reorder_graph(graph: Graph, method: str = "search") -> tuple[list[SegmentResult], dict[str, int]]:
    """Reorder in place (see the module docstring); the per-segment results and lowering counts."""
    if method not in METHODS:
        raise GraphError(f"reorder: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    coupling = analyze(graph, cuts=True)
    perms: dict[int, np.ndarray] = {}
    results = []
    split = method != "none"
    for seg in segments(graph, coupling, split):
        identity = [np.arange(n) for n in seg.spec.sizes]
        if method == "search":
            orders = plan(seg.spec)
        elif method == "upscale":
            orders = upscale_order(seg.spec)
        else:
            orders = identity
        for b, gid in enumerate(seg.groups):
            if seg.spec.free[b] and not np.array_equal(orders[b], identity[b]):
                perms[gid] = orders[b]
        results.append(SegmentResult(seg.spec.name, tuple(evaluate(seg.spec, orders)),
                                     sum(c.bytes for c in evaluate(seg.spec, identity))))
    if perms:
        apply_permutation(graph, coupling, perms)
    sorted_readers = _sort_readers(graph)
    split_reads = split_concat_reads(graph) if split else 0
    lowered = lower_readers(graph)
    lowered.update(groups_permuted=len(perms), readers_sorted=sorted_readers, split=split_reads)
    return results, lowered


@dataclass(frozen=True)
class Reorder:
    """Order every segment's channels so that readers of shared tensors read contiguous ranges, and
    turn their reader gathers into slices where they do (`method`: search, upscale or none)."""

    name: ClassVar[str] = "reorder"
    contract: ClassVar[Contract] = Contract.EXACT

    method: str = "search"

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult:
        results, lowered = reorder_graph(graph, self.method)
        changed = any(lowered[k] for k in ("removed", "sliced", "groups_permuted", "readers_sorted", "split"))
        stats = {
            "segments": results,
            "gathers_left": lowered["gathers"],
            "bytes_copied": sum(r.bytes for r in results),
            **lowered,
        }
        return PassResult(changed, ALL if not changed else frozenset(), stats)


# ------------------------------------------------------------------------------------------------
# copy-cost-aware selection
# ------------------------------------------------------------------------------------------------


def snap_readers(
    graph: Graph,
    coupling: Coupling,
    selected: dict[int, np.ndarray],
    scores: dict[int, np.ndarray],
    contiguity: float,
    notes: list[str] | None = None,
    round_to: int = 1,
) -> dict[int, np.ndarray]:
    """Trade a little importance for contiguity, before pruning (`graph` has identity reader gathers).

    The planner orders the channels each stream would keep; a reader that would still gather takes
    instead the contiguous window of as many channels (in that order) with the highest sum of its own
    scores, when that loses at most `contiguity` of its kept score. Returns the resolved keep masks.
    Cost: one `plan` per segment plus O(channels) per reader and window position."""
    keep = resolve_streams(graph, coupling, selected, scores, round_to)
    snapped = dict(selected)
    groups = {g.id: g for g in coupling.groups}
    for seg in segments(graph, coupling):
        kept = [np.flatnonzero(keep[g]) for g in seg.groups]
        compact = [np.full(groups[g].size, -1, dtype=np.int64) for g in seg.groups]
        for b, k in enumerate(kept):
            compact[b][k] = np.arange(len(k))
        readers, out_groups = [], []
        for r, n in zip(seg.spec.readers, seg.gathers, strict=True):
            og = int(coupling.label_group[_block(coupling, n, 1)[0]])
            mask = np.asarray(selected[og], bool)
            ok = r.sortable and len(r.reads) == len(mask) and len(set(r.reads)) == len(r.reads)
            reads = tuple((b, int(compact[b][u])) for (b, u), m in zip(r.reads, mask, strict=True) if m)
            readers.append(ReaderSpec(r.name, r.layout, reads, r.bytes_per_channel, ok))
            out_groups.append(og)
        spec = SegmentSpec(seg.spec.name, tuple(len(k) for k in kept), seg.spec.free, tuple(readers))
        orders = plan(spec)
        costs = evaluate(spec, orders)
        for r, full, og, cost in zip(readers, seg.spec.readers, out_groups, costs, strict=True):
            if cost.view or not r.sortable or not r.reads:
                continue
            # the reader's value in the planned order: (block, original unit) per position
            seq = [(b, int(kept[b][orders[b][i]])) for b in r.layout for i in range(len(kept[b]))]
            unit_of = {bu: j for j, bu in enumerate(full.reads)}  # (block, unit) -> the reader's unit
            s = np.asarray(scores[og], dtype=np.float64)
            pos_score = np.array([s[unit_of[bu]] if bu in unit_of else -np.inf for bu in seq])
            k = len(r.reads)
            if k > len(seq):
                continue
            window = np.convolve(np.where(np.isfinite(pos_score), pos_score, -1e300), np.ones(k), "valid")
            best = int(np.argmax(window))
            current = float(s[np.asarray(selected[og], bool)].sum())
            if not np.isfinite(window[best]) or window[best] < (1 - contiguity) * current:
                continue
            mask = np.zeros(len(s), bool)
            mask[[unit_of[bu] for bu in seq[best : best + k]]] = True
            snapped[og] = mask
            if notes is not None:
                loss = 1 - window[best] / current if current > 0 else 0.0
                notes.append(f"reader {r.name}: snapped to one contiguous range ({loss:.2%} of its importance)")
    return resolve_streams(graph, coupling, snapped, scores, round_to)
