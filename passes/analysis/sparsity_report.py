"""The sparsity report: what `sparsify` (and the permutation before it) did to every layer.

Per layer: the pattern, the sparsity reached (fraction of the weight's elements removed), the share
of the L1 magnitude kept (and, with a permutation, the share the same pattern keeps without it), the
relative L2 error of the weight, and the error of the layer's output in the sparse graph against the
dense graph on sample inputs. Then the error of the model outputs against the budget, the layers
skipped with the reason, and per coupling group what the permutation search kept and how long it took.

Where an unconstrained prune's reorder made readers read slices, the channel order is wanted by both
objectives: per group (or cluster of groups searched together) the report says who won (sparsity,
both, reorder, neither; see transform/sparse_permute.py), the magnitude kept without a permutation,
with the chosen one and with every reader free, and the bytes the readers copy per inference before
and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphprune.pm import Metrics

from ..transform.sparse_permute import GroupRow
from ..transform.sparsify import LayerRow

__all__ = ["SparsityReport"]

_NAME_WIDTH = 40
_WINNERS = ("sparsity", "both", "reorder", "neither")


@dataclass(frozen=True)
class SparsityReport:
    pattern: str
    layers: tuple[LayerRow, ...]
    skipped: tuple[tuple[str, str], ...]  # (layer, reason)
    error: Metrics | None  # the outputs, sparse against dense
    budget: float
    groups: tuple[GroupRow, ...] = ()  # the permutation search per coupling group
    groups_skipped: tuple[tuple[int, str, str], ...] = ()  # (group id, name, reason)
    search: str = "plain"

    @property
    def sparsity(self) -> float:
        """Fraction of the sparsified layers' weights removed."""
        total = sum(_numel(r.shape) for r in self.layers)
        return sum(r.sparsity * _numel(r.shape) for r in self.layers) / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "search": self.search,
            "sparsity": self.sparsity,
            "error": self.error.to_json() if self.error else None,
            "budget_rel_l2": self.budget,
            "layers": [r.to_json() for r in self.layers],
            "skipped": [{"layer": n, "reason": r} for n, r in self.skipped],
            "permutation": [g.to_json() for g in self.groups],
            "permutation_skipped": [{"group": i, "name": n, "reason": r} for i, n, r in self.groups_skipped],
            "order_winners": {w: sum(g.winner == w for g in self.groups) for w in _WINNERS},
        }

    def table(self) -> str:
        w = min(max([len("layer"), *(len(r.layer) for r in self.layers)]), _NAME_WIDTH)
        head = f"{'layer':<{w}}  {'pattern':<12} {'sparsity':>8} {'kept |w|':>9} {'unpermuted':>10} " \
               f"{'w rel L2':>8} {'out rel L2':>10} {'out cos':>8}"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            name = r.layer if len(r.layer) <= w else "…" + r.layer[-(w - 1) :]
            unperm = f"{r.kept_unpermuted * 100:9.2f}%" if r.kept_unpermuted is not None else f"{'-':>10}"
            out = r.output_error
            lines.append(
                f"{name:<{w}}  {r.pattern:<12} {r.sparsity * 100:7.1f}% {r.kept * 100:8.2f}% {unperm} "
                f"{r.weight_error:8.4f} {(f'{out.rel_l2:10.4f}' if out else '-'):>10} "
                f"{(f'{out.cosine:8.5f}' if out else '-'):>8}"
            )
        lines.append("-" * len(head))
        lines.append(f"{len(self.layers)} layer(s) sparsified, {self.sparsity * 100:.1f}% of their weights removed")
        if self.error is not None:
            e = self.error
            lines.append(f"outputs vs dense: max abs {e.max_abs:.4g}, rel L2 {e.rel_l2:.4g} (budget {self.budget:g}), "
                         f"cosine {e.cosine:.6f}")
        if self.groups:
            base = sum(g.kept_identity for g in self.groups)
            kept = sum(g.kept for g in self.groups)
            secs = sum(g.seconds for g in self.groups)
            gain = (kept / base - 1) * 100 if base else 0.0
            lines.append(f"permutation ({self.search}): {len(self.groups)} group(s), kept magnitude over their readers "
                         f"{base:.6g} -> {kept:.6g} (+{gain:.2f}%), {secs:.2f} s")
        shared = [g for g in self.groups if g.views_kept or g.views_broken or g.bytes_before or g.bytes_after]
        if shared:
            lines += ["", "channel order shared with the reorder (kept |w|: identity -> chosen [every reader in its "
                          "own order]; bytes copied per inference: before -> after):"]
            for g in shared:
                free = f"{g.kept_free:.6g}" if g.kept_free is not None else "-"
                lines.append(f"  group {g.group} {g.name!r} ({g.channels} ch): {g.winner:<8} kept {g.kept_identity:.6g}"
                             f" -> {g.kept:.6g} [{free}], bytes {g.bytes_before} -> {g.bytes_after}, slices kept "
                             f"{g.views_kept}, turned into gathers {g.views_broken}")
        if self.skipped:
            lines += ["", f"skipped layers ({len(self.skipped)}):", *(f"  {n}: {r}" for n, r in self.skipped)]
        if self.groups_skipped:
            lines += ["", f"groups not permuted ({len(self.groups_skipped)}):",
                      *(f"  group {i} {n!r}: {r}" for i, n, r in self.groups_skipped)]
        return "\n".join(lines)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
