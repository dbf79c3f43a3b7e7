"""Joint selection of a stream's channels and its readers' channels under a cost budget.

Unconstrained pruning that keeps each stream as the union of what its readers read (`resolve_streams`)
lets every reader choose freely but makes the producers pay for every channel any reader wants: the
MACs budget then takes those producer MACs from elsewhere, and can keep less importance than
constrained pruning (EfficientNet-style, benchmarks/RESULTS.md). Here the stream's channels and the
readers' channels are chosen together, per segment, starting from the constrained selection:

- A stream channel (unit u of a stream group g) is worth its own score s_g[u] and costs c_g (the MACs,
  or parameters, of one unit of g: the producers' rows, measured); a reader's unit j is worth its
  score s_i[j] and costs c_i, and can be kept only if the stream keeps the channel it reads.
- For a price lam per MAC the best choice is separable per stream channel: reader unit j is wanted
  when s_i[j] - lam * c_i > 0, and the channel is kept when s_g[u] - lam * c_g plus the wanted
  readers' surpluses is positive (then those readers read it). Widths are rounded up to multiples of
  `round_to` with the next best channels, every kept stream channel is read by someone.
- lam is scanned (quantiles of the value/cost ratios, then bisection) for the largest kept score
  whose cost stays within the segment's cost under the constrained selection; a segment where no lam
  beats the constrained choice keeps it (constrained's selection is one feasible point of this
  problem), so the result is never worse than constrained, segment by segment, at no more cost.
- The unit costs are finite differences of the real cost function at the current selection (one
  evaluation per group of the segment); a cost that is not linear in one segment's choice (a conv
  both reading and producing the same segment) is caught by measuring the whole graph after every
  segment, which is reverted if the total went up.

Complexity per segment: G + 1 cost evaluations for G groups, then O(S * (C + R)) for S price steps
(64 + 40), C stream channels and R reader units.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from graphprune.ir.graph import Graph

from ..analysis.coupling import Coupling
from ..analysis.select import SelectOptions, _keep_match
from .readers import _uncut_consumers
from .reorder import _block, segments

__all__ = ["joint_keep", "joint_select", "kept_score", "to_cut"]

CostFn = Callable[[dict[int, np.ndarray]], tuple[int, int]]


def to_cut(uncut: Coupling, cut: Coupling, keep: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The keep masks of `cut` (the cut-mode coupling of a graph with reader gathers) that keep exactly
    what `keep` keeps with `uncut` (the coupling of the same graph without them): every reader reads
    its stream's channels. Members are matched by value name and axes."""
    kept: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}  # (value, axes) -> element kept
    for g in uncut.groups:
        for m in g.members:
            elems = kept.setdefault((m.value.name, m.axes), np.ones(m.units.shape, bool))
            if elems.shape == m.units.shape:
                on = m.units >= 0
                elems[on] = np.asarray(keep[g.id], bool)[m.units[on]]
    out = {g.id: np.ones(g.size, bool) for g in cut.groups}
    for g in cut.groups:
        for m in g.members:
            elems = kept.get((m.value.name, m.axes))
            if elems is not None and elems.shape == m.units.shape:
                on = m.units >= 0
                out[g.id][m.units[on]] &= elems[on]
    return out


def kept_score(keep: dict[int, np.ndarray], scores: dict[int, np.ndarray], groups: set[int] | None = None) -> float:
    """The sum of the kept units' scores (over `groups`, default all): importance kept."""
    return float(sum(np.asarray(scores[g], np.float64)[np.asarray(m, bool)].sum()
                     for g, m in keep.items() if groups is None or g in groups))


class _Segment:
    """One segment as arrays: stream channels (group, unit) and, per reader, the channel each unit reads."""

    def __init__(self, gids: list[int], readers: list[tuple[int, np.ndarray]], sizes: dict[int, int]) -> None:
        self.gids = gids
        self.offset = dict(zip(gids, np.cumsum([0] + [sizes[g] for g in gids])[:-1].tolist(), strict=True))
        self.n = sum(sizes[g] for g in gids)
        self.chan_group = np.concatenate([np.full(sizes[g], i) for i, g in enumerate(gids)])
        self.readers = readers  # (reader group id, stream channel index of each of its units)


def _segment(graph: Graph, cut: Coupling, seg, own: set[int], protected: frozenset[int]) -> _Segment | None:
    """The segment's arrays, or None when it is not a free choice: a stream group that is not
    prunable, has bins, is in `own` (read by a consumer without a reader gather) or `protected` (by
    keep_nodes), a reader that is not one whole group or is protected, a channel nobody reads."""
    groups = {g.id: g for g in cut.groups}
    sizes = {g.id: g.size for g in cut.groups}
    gids = list(seg.groups)
    if any(not groups[g].prunable or groups[g].bins or g in own or g in protected for g in gids):
        return None
    out = _Segment(gids, [], sizes)
    for n in seg.gathers:
        lab_in, lab_out = _block(cut, n, 0), _block(cut, n, 1)
        og = int(cut.label_group[lab_out[0]])
        if (og in gids or og in protected or not groups[og].prunable or groups[og].bins
                or not np.all(cut.label_group[lab_out] == og)
                or not np.array_equal(cut.label_unit[lab_out], np.arange(groups[og].size))):
            return None
        read = lab_in[np.asarray(n.inputs[1].data).astype(np.int64) % len(lab_in)]
        rg, ru = cut.label_group[read], cut.label_unit[read]
        if not all(int(g) in out.offset for g in rg):
            return None
        ch = np.array([out.offset[int(g)] + int(u) for g, u in zip(rg, ru, strict=True)], np.int64)
        if len(np.unique(ch)) != len(ch):
            return None  # a reader reading a channel twice: its units are not independent choices
        out.readers.append((og, ch))
    read = np.zeros(out.n, bool)
    for _, ch in out.readers:
        read[ch] = True
    return out if out.readers and read.all() else None


def _floor(size: int, round_to: int, min_keep: float) -> int:
    k = max(1, math.ceil(min_keep * size - 1e-9))
    if round_to > 1 and size >= round_to:
        k = -(-k // round_to) * round_to
    return min(size, k)


def _round_up(k: int, size: int, round_to: int) -> int:
    return min(size, -(-k // round_to) * round_to) if round_to > 1 and size >= round_to else k


def _choose(seg: _Segment, lam: float, vs: np.ndarray, cs: np.ndarray, vr: list[np.ndarray], cr: np.ndarray,
            sizes: dict[int, int], round_to: int, min_keep: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stream and reader masks at price `lam` (see the module docstring)."""
    gain_r = [v - lam * c for v, c in zip(vr, cr, strict=True)]
    gain = vs - lam * cs
    for (_, ch), g in zip(seg.readers, gain_r, strict=True):
        np.add.at(gain, ch, np.maximum(g, 0.0))
    stream = gain > 0
    for i, gid in enumerate(seg.gids):
        idx = np.flatnonzero(seg.chan_group == i)
        k = max(int(stream[idx].sum()), _floor(sizes[gid], round_to, min_keep))
        k = _round_up(k, len(idx), round_to)
        stream[idx[np.argsort(-gain[idx], kind="stable")[:k]]] = True
    reads = [(g > 0) & stream[ch] for (_, ch), g in zip(seg.readers, gain_r, strict=True)]
    # a kept stream channel nobody reads: the reader losing least reads it
    covered = np.zeros(seg.n, bool)
    for (_, ch), r in zip(seg.readers, reads, strict=True):
        covered[ch[r]] = True
    best = np.full(seg.n, -np.inf)
    who = np.full((seg.n, 2), -1)
    for i, ((_, ch), g) in enumerate(zip(seg.readers, gain_r, strict=True)):
        better = g > best[ch]
        best[ch[better]] = g[better]
        who[ch[better]] = np.stack([np.full(better.sum(), i), np.flatnonzero(better)], 1)
    for c in np.flatnonzero(stream & ~covered):  # every channel has a reader (see _segment)
        i, j = who[c]
        reads[i][j] = True
    for (og, ch), r, g in zip(seg.readers, reads, gain_r, strict=True):
        avail = np.flatnonzero(stream[ch] & ~r)
        k = _round_up(max(int(r.sum()), _floor(sizes[og], round_to, min_keep)), sizes[og], round_to)
        need = min(k - int(r.sum()), len(avail))
        if need > 0:
            r[avail[np.argsort(-g[avail], kind="stable")[:need]]] = True
    return stream, reads


def joint_select(
    graph: Graph,
    cut: Coupling,
    keep: dict[int, np.ndarray],
    scores: dict[int, np.ndarray],
    cost: CostFn,
    metric: int = 0,
    round_to: int = 1,
    min_keep: float = 0.0,
    notes: list[str] | None = None,
    protected: frozenset[int] = frozenset(),
) -> dict[int, np.ndarray]:
    """Improve a constrained selection `keep` (in cut-mode groups, see `to_cut`) segment by segment:
    more kept score at no more cost (`metric`: 0 MACs, 1 parameters of `cost`); segments with a
    `protected` group keep their selection."""
    keep = {g: np.asarray(m, bool).copy() for g, m in keep.items()}
    sizes = {g.id: g.size for g in cut.groups}
    own = _uncut_consumers(graph, cut)
    total = cost(keep)[metric]
    for spec in segments(graph, cut):
        seg = _segment(graph, cut, spec, own, protected)
        if seg is None:
            continue
        # unit costs by finite differences at the current selection
        cr = np.zeros(len(seg.readers))
        for i, (og, _) in enumerate(seg.readers):
            if keep[og].sum() > 1:
                trial = dict(keep)
                trial[og] = keep[og].copy()
                trial[og][np.flatnonzero(keep[og])[-1]] = False
                cr[i] = total - cost(trial)[metric]
        cs_group = np.zeros(len(seg.gids))
        for i, gid in enumerate(seg.gids):
            kept = np.flatnonzero(keep[gid])
            if len(kept) <= 1:
                continue
            u = kept[-1]
            c = seg.offset[gid] + u
            trial = dict(keep)
            trial[gid] = keep[gid].copy()
            trial[gid][u] = False
            readers_cost = 0.0
            for j, (og, ch) in enumerate(seg.readers):
                hit = np.flatnonzero(ch == c)
                if len(hit) and keep[og][hit[0]]:
                    trial[og] = trial.get(og, keep[og]).copy()
                    trial[og][hit[0]] = False
                    readers_cost += cr[j]
            cs_group[i] = total - cost(trial)[metric] - readers_cost
        cs = cs_group[seg.chan_group]
        vs = np.concatenate([np.asarray(scores[g], np.float64) for g in seg.gids])
        vr = [np.asarray(scores[og], np.float64) for og, _ in seg.readers]
        mine = set(seg.gids) | {og for og, _ in seg.readers}

        def linear(stream: np.ndarray, reads: list[np.ndarray], cs=cs, cr=cr) -> float:
            return float(cs[stream].sum() + sum(c * r.sum() for c, r in zip(cr, reads, strict=True)))

        def value(stream: np.ndarray, reads: list[np.ndarray], vs=vs, vr=vr) -> float:
            return float(vs[stream].sum() + sum(v[r].sum() for v, r in zip(vr, reads, strict=True)))

        now_stream = np.concatenate([keep[g] for g in seg.gids])
        now_reads = [keep[og].copy() for og, _ in seg.readers]
        budget, best_v = linear(now_stream, now_reads), value(now_stream, now_reads)
        best = None
        ratios = np.concatenate([vs / np.maximum(cs, 1e-30)] + [v / max(c, 1e-30) for v, c in zip(vr, cr, strict=True)])
        grid = np.unique(np.quantile(ratios, np.linspace(0, 1, 65)))
        feasible_lo = None
        for lam in grid:  # the cost falls as the price rises
            s, r = _choose(seg, float(lam), vs, cs, vr, cr, sizes, round_to, min_keep)
            if linear(s, r) <= budget:
                feasible_lo = float(lam) if feasible_lo is None else feasible_lo
                if value(s, r) > best_v * (1 + 1e-12):
                    best, best_v = (s, r), value(s, r)
        if feasible_lo is not None:  # refine between the last infeasible and the first feasible price
            lo = float(grid[max(0, int(np.searchsorted(grid, feasible_lo)) - 1)])
            hi = feasible_lo
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                s, r = _choose(seg, mid, vs, cs, vr, cr, sizes, round_to, min_keep)
                if linear(s, r) <= budget:
                    hi = mid
                    if value(s, r) > best_v * (1 + 1e-12):
                        best, best_v = (s, r), value(s, r)
                else:
                    lo = mid
        if best is None:
            continue
        trial = dict(keep)
        s, reads = best
        for i, gid in enumerate(seg.gids):
            trial[gid] = s[seg.chan_group == i]
        for (og, _), r in zip(seg.readers, reads, strict=True):
            trial[og] = r.copy()
        new_total = cost(trial)[metric]
        if new_total > total:
            if notes is not None:
                notes.append(f"segment {spec.spec.name}: the joint selection cost more than measured; kept constrained")
            continue
        gain = kept_score(trial, scores, mine) - kept_score(keep, scores, mine)
        keep, total = trial, new_total
        if notes is not None:
            notes.append(f"segment {spec.spec.name}: stream and readers chosen jointly (+{gain:.4g} importance)")
    return keep


def joint_keep(
    plain: Graph,
    graph: Graph,
    cut: Coupling,
    scores: dict[int, np.ndarray],
    options: SelectOptions,
    criterion: str,
    calib: tuple[np.ndarray, ...] | None,
    seed: int,
    notes: list[str] | None = None,
) -> dict[int, np.ndarray]:
    """Unconstrained keep masks for `graph` (`plain` with reader gathers, `cut` its cut-mode coupling):
    the constrained selection of `plain` under `options`, improved by `joint_select`. The budget is the
    constrained selection's cost: MACs, or parameters when only a parameter target is set."""
    from ..analysis.coupling import analyze
    from ..analysis.importance import unit_scores
    from ..analysis.select import select
    from .prune_channels import pruned_cost

    uncut = analyze(plain)
    plain_scores = unit_scores(plain, uncut, criterion, calib=list(calib) if calib else None, seed=seed)
    cost_fn = (lambda kp: pruned_cost(plain, uncut, kp)) if options.targets else None
    constrained = to_cut(uncut, cut, select(uncut, plain_scores, options, cost_fn, notes=notes))
    metric = 1 if options.target_params and not options.target_macs else 0
    patterns = [re.compile(p) for p in options.keep_nodes]
    protected = frozenset(g.id for g in cut.groups if _keep_match(g, patterns) is not None)
    return joint_select(graph, cut, constrained, scores, lambda kp: pruned_cost(graph, cut, kp), metric,
                        options.round_to, options.min_keep, notes, protected)
