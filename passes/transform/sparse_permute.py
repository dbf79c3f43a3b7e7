"""Channel permutations that raise the magnitude an N:M or block pattern keeps (EXACT).

N:M groups run along a layer's input channels, so which channels share a group decides what the
mask must drop: four large channels in one group of 2:4 lose two large weights per row. Permuting a
layer's input channels means permuting the coupling group that holds them: every producer's output
channels, every sibling reader's input channels, biases and norm parameters, all at once through
`apply_permutation` (the machinery channel reordering uses too). The function is unchanged; only the
later mask keeps more.

For each coupling group, the *contributions* are the weights of the sparsified layers (the same
layer choice as `sparsify`: pattern, `layers` regex, first/last) whose pattern runs along the
group's axis: N:M readers' input axes; for blocks, the input axis when blocks are wider than one
input and the output axis when they are taller than one output. Their |w| (summed over the block's
other extent) are stacked and handed to the search (`analysis/permutation_search.py`): `fast` (the
default: sort and deal, then a few rounds of stripe-pair refinement; clustering for blocks), `strong`
(every stripe pair with escapes, or block swaps, within `time_budget` seconds), or `plain` (no
permutation). A search never returns an order that keeps less than the identity. A progress bar on
stderr follows the groups when the pass runs longer than a second (on a terminal, `progress=true`).

For blocks the objective counts, per layer, the largest blocks at the target density (what local
scope keeps); with global scope the final masks may differ, and the report gives both kept shares.

Sharing the freedom with the reorder (`prefer`). After unconstrained pruning and `reorder`, a
stream's readers read slices of it (views, no copy); the coupling then splits the stream into one
group per run of channels with the same readers, and permuting inside such a run keeps every slice
a slice. The readers' N:M stripes straddle those runs (a slice starts anywhere), so these groups are
searched together: `nm_search_within` permutes channels only within the runs, over every reader's
stripes at once (winner "both": the reorder's views stay and N:M gains). The alternative gives a
reader its own channel order: its Slice becomes a reader gather (a copy of its channels per
inference, priced like the reorder prices it: channels x the rest of the shape x item size) and its
input channels are permuted freely for N:M (winner "sparsity"). A reader that already gathers gets
its own order for free. The rule, per reader of such a cluster: `prefer=reorder` never turns a view
into a copy; `prefer=sparsity` always does when its own order keeps more than the shared one; `auto`
(default) does only when that gain exceeds `min_gain` (a fraction of the reader's magnitude, 2%).
A cluster where no search raised the kept magnitude is "neither", one where a free order would have
gained but the views were kept "reorder". Blocks across runs are not searched (listed as skipped).

Groups are searched one after the other, each on the weights as the previous ones left them, so
the total kept magnitude never falls. A group is left alone, with the reason in the stats, when its
channel order is fixed (model input/output, opaque op), when its channels are not laid out one per
position in aligned runs in some contribution, or when a bin (grouped conv, heads) is not an
aligned run of slots.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from graphprune.ir.errors import GraphError
from graphprune.ir.graph import Graph, Node
from graphprune.ir.ops import GatherAttrs, Op
from graphprune.ir.sparsity import Pattern, parse_pattern, to_matrix
from graphprune.pm import ALL, AnalysisManager, Contract, PassResult
from graphprune.progress import Progress

from ..analysis.coupling import Coupling, CouplingAnalysis, CouplingGroup, Member, analyze
from ..analysis.permutation_search import (
    BlockObjective,
    SearchResult,
    SharedWeight,
    block_search,
    nm_search,
    nm_search_within,
)
from .permute_channels import apply_permutation, bin_classes, permutable
from .readers import _chain_op, _reader_chain
from .reorder import _bytes_per_channel
from .sparsify import Layer, find_layers, weight_scores

__all__ = ["PREFER", "GroupRow", "PermuteForSparsity"]

PREFER = ("auto", "reorder", "sparsity")
_STRADDLE = "not one per position in runs"


@dataclass
class _Contribution:
    weight: str
    z: np.ndarray  # [rows, group size]: |w| over the group's slots, in slot order
    width: int  # pattern extent along the group's axis (M, or the block's extent)
    keep: int  # blocks: how many of the layer's blocks survive
    fixed: np.ndarray  # blocks: block sums of the layer outside the group


@dataclass(frozen=True)
class GroupRow:
    group: int
    name: str
    channels: int
    weights: tuple[str, ...]
    kept_identity: float  # magnitude the pattern keeps on the group's contributions, no permutation
    kept: float  # with the chosen permutation
    method: str  # which candidate won (identity when nothing beat it)
    seconds: float
    # who set the channel order: sparsity, both (N:M within the reorder's runs, views kept), reorder
    # (views kept although a free order would keep more), neither (nothing gained)
    winner: str = "sparsity"
    kept_free: float | None = None  # with every reader that can in its own order (contiguity ignored)
    bytes_before: int = 0  # copied per inference by the readers of these channels, before the pass
    bytes_after: int = 0  # and after
    views_kept: int = 0  # readers still reading a slice
    views_broken: int = 0  # slices turned into gathers for N:M

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "weights": list(self.weights)}


def _contributions(group: CouplingGroup, by_weight: dict[int, Layer], p: Pattern, density: float
                   ) -> tuple[list[_Contribution], str | None]:
    out: list[_Contribution] = []
    for m in group.members:
        lay = by_weight.get(id(m.value))
        if lay is None:
            continue
        if p.kind == "nm" and sorted(m.axes) == sorted((lay.out_axis, lay.axis)):
            z, reason = _grouped_reader(m, lay, group.size, p.m)
            if reason is not None:
                return [], reason
            out.append(_Contribution(m.value.name, z, p.m, 0, np.zeros(0)))
            continue
        a = m.axes[0] if len(m.axes) == 1 else None
        if a == lay.axis:
            width = p.m if p.kind == "nm" else p.cols
        elif a == lay.out_axis:
            width = p.rows if p.kind == "block" else 1
        else:
            return [], f"its channels lie on several axes of %{m.value.name}"
        if width == 1:
            continue  # the pattern does not group along this axis: the order does not matter here
        units = m.units
        pos = np.flatnonzero(units >= 0)
        if not (len(pos) == group.size and np.array_equal(units[pos], np.arange(group.size))
                and pos[-1] - pos[0] + 1 == group.size and pos[0] % width == 0 and group.size % width == 0):
            return [], (f"its channels are not one per position in runs of {width} aligned to the pattern in "
                        f"%{m.value.name}")
        region = slice(int(pos[0]), int(pos[0]) + group.size)
        mat = np.maximum(to_matrix(weight_scores(m.value), lay.axis, lay.out_axis), 0.0)  # [..., O, I]
        if p.kind == "nm":
            out.append(_Contribution(m.value.name, mat.reshape(-1, mat.shape[-1])[:, region], width, 0, np.zeros(0)))
            continue
        o, i = mat.shape[-2], mat.shape[-1]
        if a == lay.axis:  # blocks as wide as `cols` input channels: sum each block's rows
            full = mat.reshape(*mat.shape[:-2], o // p.rows, p.rows, i).sum(-2).reshape(-1, i)
        else:  # blocks as tall as `rows` outputs: sum each block's columns, outputs last
            full = np.swapaxes(mat.reshape(*mat.shape[:-2], o, i // p.cols, p.cols).sum(-1), -1, -2).reshape(-1, o)
        outside = np.delete(full, np.arange(region.start, region.stop), axis=1)
        fixed = outside.reshape(outside.shape[0], -1, width).sum(-1).reshape(-1)
        total_blocks = (o // p.rows) * (i // p.cols) * math.prod(mat.shape[:-2])
        out.append(_Contribution(m.value.name, full[:, region], width, max(1, round(density * total_blocks)), fixed))
    return out, None


def _grouped_reader(m: Member, lay: Layer, size: int, width: int) -> tuple[np.ndarray, str | None]:
    """A grouped conv reading the group: every output row reads one conv group's input channels, a
    run of units. |w| goes to the columns of those units, zeros elsewhere (a row has no N:M groups
    outside its own channels, and zeros keep nothing), so the stacked N:M objective stays exact."""
    units = np.moveaxis(m.units, m.axes.index(lay.out_axis), 0)  # [O, I/g]
    per = units.shape[1]
    live = units[:, 0] >= 0
    starts = units[:, 0]
    runs = starts[:, None] + np.arange(per)
    if not (np.all((units >= 0) == live[:, None]) and np.array_equal(units[live], runs[live])
            and np.all(starts[live] % width == 0)):
        return np.zeros(0), (f"its channels do not reach %{m.value.name} as aligned runs of {width} input "
                             "channels per output")
    mat = np.maximum(to_matrix(weight_scores(m.value), lay.axis, lay.out_axis), 0.0)  # [..., O, I/g]
    rows = mat.reshape(-1, *mat.shape[-2:])  # [kernel taps, O, I/g]
    z = np.zeros((rows.shape[0], units.shape[0], size))
    o_idx = np.flatnonzero(live)
    z[:, o_idx[:, None], runs[live]] = rows[:, live]
    return z.reshape(-1, size), None


def _search_class(contribs: list[_Contribution], slots: np.ndarray, p: Pattern, method: str, budget: float,
                  seed: int, report: Any) -> SearchResult:
    if p.kind == "nm":
        z = np.concatenate([c.z[:, slots] for c in contribs], axis=0)
        return nm_search(z, p.n, p.m, method=method, time_budget=budget, seed=seed, progress=report)
    objectives = []
    rest = np.setdiff1d(np.arange(contribs[0].z.shape[1]), slots)
    for c in contribs:
        other = c.z[:, rest].reshape(c.z.shape[0], -1, c.width).sum(-1).reshape(-1)
        objectives.append(BlockObjective(c.z[:, slots], c.width, c.keep, np.concatenate([c.fixed, other])))
    return block_search(objectives, method=method, time_budget=budget, seed=seed, progress=report)


@dataclass(frozen=True)
class PermuteForSparsity:
    """Permute coupling groups so that a later `sparsify` with the same pattern and layer options keeps
    more magnitude. `search`: plain, fast (default) or strong (within `time_budget` seconds in all)."""

    name: ClassVar[str] = "permute-sparse"
    contract: ClassVar[Contract] = Contract.EXACT

    pattern: str = "2:4"
    sparsity: float = 0.5  # blocks: the fraction removed (decides how many blocks the objective counts)
    layers: str = ""
    first: bool = False
    last: bool = False
    search: str = "fast"
    time_budget: float = 10.0
    seed: int = 0
    progress: bool = True
    prefer: str = "auto"  # who wins a reader's channel order: auto, reorder (keep views) or sparsity
    min_gain: float = 0.02  # auto: a view becomes a gather when its reader's own order keeps this much more

    def __post_init__(self) -> None:
        parse_pattern(self.pattern)
        if self.search not in ("plain", "deal", "fast", "strong"):
            raise ValueError(f"search must be plain, deal, fast or strong, got {self.search!r}")
        if self.prefer not in PREFER:
            raise ValueError(f"prefer must be one of {', '.join(PREFER)}, got {self.prefer!r}")

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult:
        p = parse_pattern(self.pattern)
        stats: dict[str, Any] = {"groups": [], "skipped": []}
        if p.kind == "unstructured" or self.search == "plain":
            return PassResult(False, ALL, stats)
        layers, _ = find_layers(graph, p, layers=self.layers, first=self.first, last=self.last)
        density = p.density if p.kind == "nm" else 1.0 - self.sparsity
        assert density is not None
        by_weight = {id(lay.weight): lay for lay in layers}
        coupling = analyses.get(CouplingAnalysis)
        plans = []
        straddling = []
        for group in coupling.groups:
            contribs, reason = _contributions(group, by_weight, p, density)
            if reason is None and not contribs:
                continue
            if reason is None and not permutable(group):
                reason = f"its channel order is fixed ({group.blocked or 'a single channel'})"
            if reason is not None and _STRADDLE in reason and p.kind == "nm" and permutable(group):
                straddling.append(group)  # its stripes straddle other groups: searched with them below
                continue
            if reason is not None:
                stats["skipped"].append((group.id, group.name, reason))
                continue
            plans.append((group, sum(c.z.size for c in contribs)))
        work = sum(w for _, w in plans) or 1
        # one bar over the groups (weighted by their size), shown when the search runs over a second
        bar = Progress(f"permute-sparse {p} ({self.search})", work, enabled=self.progress)
        done = 0
        changed = 0
        for k, (group, w) in enumerate(plans):
            t0 = time.perf_counter()
            contribs, _ = _contributions(group, by_weight, p, density)  # on the weights as permuted so far
            perm = np.arange(group.size)
            base = kept = 0.0
            method = "identity"
            classes = bin_classes(group)
            budget = self.time_budget * w / work / len(classes)
            for slots in classes:
                width = math.lcm(*(c.width for c in contribs))
                if len(slots) % width or slots[-1] - slots[0] + 1 != len(slots) or slots[0] % width:
                    stats["skipped"].append((group.id, group.name, "a bin of its channels is not an aligned run"))
                    continue

                def report(t: float, note: str, d: int = done, w: int = w, b: float = budget) -> None:
                    bar.update(d + w * min(t / b, 1.0), note)

                res = _search_class(contribs, slots, p, self.search, budget, self.seed, report)
                perm[slots] = slots[res.perm]
                base, kept = base + res.kept_identity, kept + res.kept
                method = res.method if res.method != "identity" else method
            permuted = not np.array_equal(perm, np.arange(group.size))
            if permuted:
                apply_permutation(graph, coupling, {group.id: perm})
                changed += 1
            # permuting one group never changes a slice: a group with views keeps them ("both")
            views = sum(1 for m in group.members if (q := m.value.producer) is not None and q.op is Op.SLICE
                        and m.axes == (q.attrs.axis,))
            winner = ("both" if views else "sparsity") if permuted else "neither"
            stats["groups"].append(GroupRow(group.id, group.name, group.size, tuple(c.weight for c in contribs),
                                            base, kept, method, time.perf_counter() - t0, winner,
                                            views_kept=views))
            done += w
            bar.update(done, f"group {k + 1}/{len(plans)}")
        bar.close()
        clusters, skipped = _clusters(coupling, straddling, layers, p)
        stats["skipped"] += skipped
        perms: dict[int, np.ndarray] = {}
        moves: list[tuple[Node, np.ndarray]] = []
        # a reader whose columns fall in several clusters keeps the shared orders (no one cluster may free it)
        seen: dict[int, int] = {}
        for cl in clusters:
            for lay, _ in cl.weights:
                seen[id(lay.weight)] = seen.get(id(lay.weight), 0) + 1
        split = {w for w, c in seen.items() if c > 1}
        bar = Progress(f"permute-sparse {p} (runs shared with the reorder)", len(clusters) or 1,
                       enabled=self.progress)
        for k, cl in enumerate(clusters):
            row, cl_perms, cl_moves = _share(graph, cl, p, self, split)
            stats["groups"].append(row)
            perms.update(cl_perms)
            moves += cl_moves
            bar.update(k + 1, f"cluster {k + 1}/{len(clusters)}")
        bar.close()
        if perms:
            apply_permutation(graph, coupling, perms)
            changed += len(perms)
        if moves:
            _free_reads(graph, moves)
        # shapes and groups stay unless a view became a gather; weight values moved (scores and costs
        # that read them are recomputed)
        preserved = frozenset() if moves else frozenset({CouplingAnalysis}) if changed else ALL
        return PassResult(changed > 0 or bool(moves), preserved, stats)


# ------------------------------------------------------------------------------------------------
# groups whose N:M stripes straddle each other: the reorder's runs, shared with the readers' views
# ------------------------------------------------------------------------------------------------


def _reader_source(graph: Graph, node: Node) -> Node | None:
    """The Slice or constant Gather a consumer reads its channels through (past a private chain of
    per-channel ops), when that read feeds consumers only."""
    v = node.inputs[0]
    while (p := v.producer) is not None:
        if p.op is Op.SLICE and p.attrs.step == 1 or (
                p.op is Op.GATHER and p.inputs[1].is_const and p.inputs[1].type.rank == 1):
            out = p.outputs[0]
            private = out not in graph.outputs and all(_reader_chain(graph, u, i) for u, i in out.uses)
            return p if private and not p.inputs[0].is_const else None
        if not _chain_op(p, 0):
            return None
        v = p.inputs[0]
    return None


def _to_gather(graph: Graph, node: Node) -> Node:
    """A Slice as the equivalent reader gather (exact)."""
    a = node.attrs
    idx = graph.add_const(f"{node.name or node.outputs[0].name}.idx", np.arange(a.start, a.end, dtype=np.int64),
                          unique=True)
    g = graph.add_node(Op.GATHER, [node.inputs[0], idx], GatherAttrs(a.axis), name=node.name,
                       output_names=[node.outputs[0].name + ".read"], unique=True, before=node)
    graph.replace_all_uses(node.outputs[0], g.outputs[0])
    graph.erase(node)
    return g


@dataclass
class _Cluster:
    groups: list[CouplingGroup]
    weights: list[tuple[Layer, SharedWeight]]
    classes: list[np.ndarray]
    offsets: dict[int, int]


def _clusters(coupling: Coupling, straddling: list[CouplingGroup], layers: list[Layer], p: Pattern
              ) -> tuple[list[_Cluster], list[tuple[int, str, str]]]:
    """Groups joined by a stripe of some N:M layer, with every layer's columns as shared slots."""
    ids = {g.id: g for g in straddling}
    cols: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # layer weight -> (column group, column unit)
    bad: dict[int, str] = {}
    for lay in layers:
        width = int(lay.weight.type.shape[lay.axis])
        cg, cu = np.full(width, -1), np.full(width, -1)
        for g in straddling:
            for m in g.members:
                if m.value is lay.weight and m.axes == (lay.axis,):
                    pos = np.flatnonzero(m.units >= 0)
                    if sorted(m.units[pos].tolist()) != list(range(g.size)):
                        bad[g.id] = f"%{lay.weight.name} reads some of its channels twice or not at all"
                    cg[pos], cu[pos] = g.id, m.units[pos]
        if np.any(cg >= 0):
            cols[id(lay.weight)] = (cg, cu)
    parent = {g.id: g.id for g in straddling}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for cg, _ in cols.values():
        for stripe in cg.reshape(-1, p.m):
            present = [int(x) for x in np.unique(stripe) if x >= 0]
            for x in present[1:]:
                parent[find(x)] = find(present[0])
    comps: dict[int, list[int]] = {}
    for gid in ids:
        comps.setdefault(find(gid), []).append(gid)
    out, skipped = [], []
    for members in comps.values():
        why = next((bad[g] for g in members if g in bad), None)
        if why is not None:
            skipped += [(g, ids[g].name, why) for g in members]
            continue
        offsets, total = {}, 0
        for g in members:
            offsets[g], total = total, total + ids[g].size
        classes = [cls + offsets[g] for g in members for cls in bin_classes(ids[g])]
        weights = []
        for lay in layers:
            if id(lay.weight) not in cols:
                continue
            cg, cu = cols[id(lay.weight)]
            slot = np.array([offsets[int(g)] + int(u) if int(g) in offsets else -1 for g, u in zip(cg, cu,
                                                                                                   strict=True)])
            if np.any(slot >= 0):
                mat = np.maximum(to_matrix(weight_scores(lay.weight), lay.axis, lay.out_axis), 0.0)
                weights.append((lay, SharedWeight(mat.reshape(-1, mat.shape[-1]), slot)))
        out.append(_Cluster([ids[g] for g in members], weights, classes, offsets))
    return out, skipped


def _share(graph: Graph, cl: _Cluster, p: Pattern, opts: PermuteForSparsity, split: set[int]
           ) -> tuple[GroupRow, dict[int, np.ndarray], list[Node]]:
    """Decide who sets the cluster's order (see the module docstring): the row for the report, the
    permutations within the runs, and the reads to turn into gathers with an order of their own.
    Every search here runs within a quarter of `time_budget` (at most three shared searches and one
    per reader)."""
    t0 = time.perf_counter()
    budget = opts.time_budget / 4

    def shared(weights: list[tuple[Layer, SharedWeight]]) -> tuple[SearchResult, list[float], list[float]]:
        return nm_search_within([w for _, w in weights], cl.classes, p.n, p.m, slots=sum(g.size for g in cl.groups),
                                time_budget=budget, seed=opts.seed)

    res, base, kept = shared(cl.weights)
    # the readers that could take an order of their own, and what it would keep
    reads: dict[int, tuple[Node, list[int]]] = {}
    for k, (lay, _) in enumerate(cl.weights):
        src = _reader_source(graph, lay.node)
        if src is not None:
            reads.setdefault(id(src), (src, []))[1].append(k)
    for key in [key for key, (_, ks) in reads.items() if any(id(cl.weights[k][0].weight) in split for k in ks)]:
        del reads[key]
    free: dict[int, float] = {}
    order: dict[int, np.ndarray] = {}  # a reader's own best order of its input columns
    for key, (_, ks) in reads.items():
        z = np.concatenate([cl.weights[k][1].z for k in ks], axis=0)
        r = nm_search(z, p.n, p.m, method=opts.search, time_budget=budget, seed=opts.seed)
        free[key], order[key] = r.kept, r.perm
    bytes_of = {key: _bytes_per_channel(src) * int(src.outputs[0].type.shape[src.attrs.axis])
                for key, (src, _) in reads.items()}
    freed = []
    for key, (src, ks) in reads.items():
        gain = free[key] - sum(kept[k] for k in ks)
        total = float(sum(cl.weights[k][1].z.sum() for k in ks)) or 1.0
        if src.op is Op.SLICE and (opts.prefer == "reorder" or opts.prefer == "auto" and gain < opts.min_gain * total):
            continue  # the view stays
        if gain <= 0:
            continue
        freed.append(key)
    if freed:  # the shared order now serves only the readers that keep it
        stay = [k for k in range(len(cl.weights)) if not any(k in reads[f][1] for f in freed)]
        sub, _, sub_kept = shared([cl.weights[k] for k in stay])
        res = sub
        kept = [0.0] * len(cl.weights)
        for k, v in zip(stay, sub_kept, strict=True):
            kept[k] = v
    final = sum(kept) + sum(free[f] for f in freed)
    views = [key for key, (src, _) in reads.items() if src.op is Op.SLICE]
    # every slice of these channels counts (a DenseNet piece feeds a concat, not one reader)
    slices = {id(q) for g in cl.groups for m in g.members
              if (q := m.value.producer) is not None and q.op is Op.SLICE and m.axes == (q.attrs.axis,)}
    before = sum(bytes_of[key] for key, (src, _) in reads.items() if src.op is Op.GATHER)
    after = before + sum(bytes_of[f] for f in freed if f in views)
    broken = sum(f in views for f in freed)
    any_free = any(free[key] > sum(kept[k] for k in ks) for key, (_, ks) in reads.items() if key not in freed)
    if broken:
        winner = "sparsity"
    elif final > sum(base) * (1 + 1e-12):
        winner = "both" if slices else "sparsity"
    else:
        winner = "reorder" if any_free and slices else "neither"
    perms = {}
    for g in cl.groups:
        o = cl.offsets[g.id]
        perm = res.perm[o : o + g.size] - o
        if not np.array_equal(perm, np.arange(g.size)):
            perms[g.id] = perm
    # sparsity everywhere: every reader that can in an order of its own, the rest searched within the runs
    kept_free = None
    if reads:
        rest = [k for k in range(len(cl.weights)) if not any(k in ks for _, ks in reads.values())]
        kept_free = sum(free.values()) + shared([cl.weights[k] for k in rest])[0].kept
    g0 = cl.groups[0]
    row = GroupRow(g0.id, g0.name, sum(g.size for g in cl.groups), tuple(lay.weight.name for lay, _ in cl.weights),
                   sum(base), final, "within-runs" if perms else ("free" if freed else "identity"),
                   time.perf_counter() - t0, winner, kept_free, before, after, len(slices) - broken, broken)
    # the shared order moves the freed readers' columns too: their own order is set relative to it
    moves = []
    for f in freed:
        src, ks = reads[f]
        now = cl.weights[ks[0]][1].columns(res.perm)  # column i now holds original column now[i]
        inv = np.empty_like(now)
        inv[now] = np.arange(len(now))
        moves.append((src, inv[order[f]]))
    return row, perms, moves


def _free_reads(graph: Graph, moves: list[tuple[Node, np.ndarray]]) -> None:
    """Turn the given reads into reader gathers and move each reader's input columns (`move[i]`: the
    column that goes to column i) through the gather: exact, the gather's indices follow."""
    outs = [((_to_gather(graph, n) if n.op is Op.SLICE else n).outputs[0], move) for n, move in moves]
    graph.retype()  # a gather's type may not record the channel axis a slice's did
    coupling = analyze(graph, cuts=True)
    perms = {}
    for v, move in outs:
        axis = v.producer.attrs.axis
        labels = next(b.labels for b in coupling.blocks_of(v) if b.axes == (axis,))
        gid = int(coupling.label_group[labels[0]])
        units = coupling.label_unit[labels]
        if not np.all(coupling.label_group[labels] == gid):
            raise GraphError(f"reader gather {v.producer.name!r}: its channels are not one coupling group; this "
                             f"is a bug in permute-sparse")
        perm = np.arange(len(units))
        perm[units] = units[move]
        perms[gid] = perm
    apply_permutation(graph, coupling, perms)
