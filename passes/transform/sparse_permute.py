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

from graphprune.ir.graph import Graph
from graphprune.ir.sparsity import Pattern, parse_pattern, to_matrix
from graphprune.pm import ALL, AnalysisManager, Contract, PassResult
from graphprune.progress import Progress

from ..analysis.coupling import CouplingAnalysis, CouplingGroup, Member
from ..analysis.permutation_search import BlockObjective, SearchResult, block_search, nm_search
from .permute_channels import apply_permutation, bin_classes, permutable
from .sparsify import Layer, find_layers, weight_scores

__all__ = ["GroupRow", "PermuteForSparsity"]


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

    def __post_init__(self) -> None:
        parse_pattern(self.pattern)
        if self.search not in ("plain", "deal", "fast", "strong"):
            raise ValueError(f"search must be plain, deal, fast or strong, got {self.search!r}")

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
        for group in coupling.groups:
            contribs, reason = _contributions(group, by_weight, p, density)
            if reason is None and not contribs:
                continue
            if reason is None and not permutable(group):
                reason = f"its channel order is fixed ({group.blocked or 'a single channel'})"
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
            if not np.array_equal(perm, np.arange(group.size)):
                apply_permutation(graph, coupling, {group.id: perm})
                changed += 1
            stats["groups"].append(GroupRow(group.id, group.name, group.size, tuple(c.weight for c in contribs),
                                            base, kept, method, time.perf_counter() - t0))
            done += w
            bar.update(done, f"group {k + 1}/{len(plans)}")
        bar.close()
        # shapes and groups stay; weight values moved (scores and costs that read them are recomputed)
        return PassResult(changed > 0, frozenset({CouplingAnalysis}) if changed else ALL, stats)
