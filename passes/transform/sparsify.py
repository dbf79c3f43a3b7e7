"""Sparsity patterns on weights: N:M, blocks and unstructured magnitude pruning (APPROXIMATE).

A *layer* is a conv, conv_transpose, linear or matmul node whose weight is a float constant. Its
weight's reduction axis (the axis the layer sums over) and output axis come from the axis roles
(`ir/roles.py`): [O, I/g, k...] for conv, [I, O/g, k...] for conv_transpose, [O, I] for linear,
[I, O] for a matmul weight. The patterns are defined on that layout (see `ir/sparsity.py`):

- ``N:M``: in every run of M consecutive reduction elements (a conv: M consecutive input channels at
  one (o, kh, kw), as NVIDIA ASP groups them) the N largest |w| stay. The sparsity is 1 - N/M.
- ``block:RxC``: R output channels x C reduction elements, kept or dropped whole by block L1 norm,
  at the target `sparsity` (fraction removed).
- ``unstructured``: the smallest |w| go, at the target `sparsity`.

`scope=local` gives every layer the target; `scope=global` ranks elements (or blocks) of all layers
together by LAMP score (Lee et al., ICLR 2021: magnitude squared over the sum of the squares that
survive it, per layer), so layers end with different sparsities (block and unstructured only: N:M
fixes every group). Layers whose shapes do not fit the pattern are skipped and listed with the
reason, never padded. By default the first layers (reading a model input through no other layer
or embedding lookup: the image stem, whose 3 input channels fit no pattern) and the last ones (whose
outputs reach a model output through no other layer: the classifier) stay dense, as SR-STE and the
ASP recipes leave them; `first=true` / `last=true` include them. `layers` is a regex matched whole
against a layer's node name or weight name.

A weight that is already sparse composes: its pruned elements rank below every kept one, so the new
mask is chosen among what was kept and the old zeros stay. The record is the new pattern's.

Contract APPROXIMATE: the pass measures max-abs, relative L2 and cosine error of the outputs against
the dense graph on sample inputs (and per layer, of that layer's output), and declares `budget`, the
largest relative L2 error of the outputs the numerical verifier accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from graphprune.inputs import sample_inputs
from graphprune.ir.graph import Graph, Node, Value
from graphprune.ir.ops import Op
from graphprune.ir.roles import axis_roles, groups_of
from graphprune.ir.sparsity import (
    Pattern,
    Sparsity,
    block_view,
    expand_blocks,
    fit_problem,
    nm_keep,
    parse_pattern,
    to_matrix,
)
from graphprune.ir.types import AxisRole
from graphprune.pm import ALL, AnalysisManager, Contract, Metrics, PassResult

from ..analysis.importance import lamp_normalize

__all__ = ["Layer", "LayerRow", "Sparsify", "find_layers", "kept_fraction", "select_mask", "weight_scores"]

_LAYER_OPS = (Op.CONV, Op.CONV_TRANSPOSE, Op.LINEAR, Op.MATMUL)


@dataclass(frozen=True)
class Layer:
    node: Node
    weight: Value
    axis: int  # reduction axis of the weight
    out_axis: int

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name


def _layer_of(node: Node) -> Layer | None:
    if node.op not in _LAYER_OPS or len(node.inputs) < 2:
        return None
    w = node.inputs[1]
    roles = axis_roles(node, 1)
    if not w.is_const or roles is None or AxisRole.IN not in roles or AxisRole.OUT not in roles:
        return None
    return Layer(node, w, roles.index(AxisRole.IN), roles.index(AxisRole.OUT))


def _upstream_free(graph: Graph, layers: list[Layer]) -> tuple[set[int], set[int]]:
    """(first, last): ids of layer nodes no other layer feeds / no other layer follows on the way to
    a model output."""
    layer_ids = {id(lay.node) for lay in layers}
    fed: set[int] = set()  # values computed after some layer (an embedding lookup counts as one)
    for n in graph.nodes:
        embedding = n.op is Op.GATHER and n.inputs[0].is_const and n.inputs[0].type.rank == 2
        if id(n) in layer_ids or embedding or any(id(v) in fed for v in n.inputs):
            fed.update(id(o) for o in n.outputs)
    first = {id(lay.node) for lay in layers if id(lay.node.inputs[0]) not in fed}
    # backwards: values from which a model output is reached through no layer
    free = {id(v) for v in graph.outputs}
    last: set[int] = set()
    for n in reversed(graph.nodes):
        if any(id(o) in free for o in n.outputs):
            if id(n) in layer_ids:
                last.add(id(n))
            else:
                free.update(id(v) for v in n.inputs)
    return first, last


def find_layers(
    graph: Graph, pattern: Pattern, *, layers: str = "", first: bool = False, last: bool = False
) -> tuple[list[Layer], list[tuple[str, str]]]:
    """The layers that take the pattern, and (layer, reason) for every layer skipped."""
    found = [lay for n in graph.nodes if (lay := _layer_of(n)) is not None]
    rx = re.compile(layers) if layers else None
    first_ids, last_ids = _upstream_free(graph, found)
    chosen: list[Layer] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[int, Layer] = {}
    for lay in found:
        w = lay.weight
        if rx is not None and not (rx.fullmatch(lay.name) or rx.fullmatch(w.name)):
            continue
        reason = None
        shape = tuple(int(d) for d in w.type.shape) if w.type.is_static else None
        if not w.type.dtype.is_float:
            reason = f"weight %{w.name} is {w.type.dtype.value}, not float"
        elif shape is None or not w.has_data:
            reason = f"weight %{w.name} has no data"
        elif id(lay.node) in first_ids and not first:
            reason = "first layer (reads the model input; include with first=true)"
        elif id(lay.node) in last_ids and not last:
            reason = "last layer (the classifier; include with last=true)"
        elif id(w) in seen:
            prev = seen[id(w)]
            if (prev.axis, prev.out_axis) != (lay.axis, lay.out_axis):
                reason = f"weight %{w.name} is shared with {prev.name!r}, which reads it with other axes"
            else:
                continue  # a tied weight is sparsified once
        else:
            reason = fit_problem(pattern, shape, lay.axis, lay.out_axis)
            if reason is None and pattern.kind == "nm" and lay.node.op is Op.CONV_TRANSPOSE and groups_of(lay.node) > 1:
                per = shape[lay.axis] // groups_of(lay.node)
                if per % pattern.m:
                    reason = f"its {per} input channels per group are not a multiple of {pattern.m}"
            if reason is not None:
                reason = f"weight %{w.name} {list(shape)}: {reason}"
        if reason is not None:
            skipped.append((lay.name, reason))
            continue
        seen[id(w)] = lay
        chosen.append(lay)
    return chosen, skipped


# ------------------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------------------


def weight_scores(w: Value) -> np.ndarray:
    """|w|, with the elements an existing mask prunes below every kept one (so sparsity composes)."""
    a = np.abs(np.asarray(w.data, np.float64))
    rec = w.sparsity
    if rec is not None and rec.mask is not None:
        a = np.where(rec.mask, a, -1.0)
    return a


def block_scores(score: np.ndarray, p: Pattern, axis: int, out_axis: int) -> np.ndarray:
    """L1 norm of every block ([other axes..., out blocks, reduction blocks])."""
    return block_view(to_matrix(np.maximum(score, 0.0), axis, out_axis), p).sum(axis=(-3, -1))


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest values (earlier positions first among equals)."""
    flat = values.reshape(-1)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    return keep.reshape(values.shape)


def select_mask(score: np.ndarray, p: Pattern, axis: int, out_axis: int, density: float = 0.5) -> np.ndarray:
    """The keep mask of pattern `p` on a weight with element scores `score` (local scope): N:M keeps
    the N best of each group; blocks and unstructured keep the best `density` of blocks / elements."""
    if p.kind == "nm":
        return nm_keep(score, p, axis, out_axis)
    if p.kind == "block":
        bs = block_scores(score, p, axis, out_axis)
        return expand_blocks(_top(bs, max(1, round(density * bs.size))), p, axis, out_axis)
    return _top(score, max(1, round(density * score.size)))


def _global_masks(scores: list[np.ndarray], layers: list[Layer], p: Pattern, density: float) -> list[np.ndarray]:
    """Masks for all layers at once: units (elements or blocks) ranked by LAMP score across layers."""
    units = [block_scores(s, p, lay.axis, lay.out_axis) if p.kind == "block" else np.maximum(s, 0.0)
             for s, lay in zip(scores, layers, strict=True)]
    # LAMP normalises squared magnitudes; a block's magnitude is its L1 norm
    lamp = [lamp_normalize(u.reshape(-1)) for u in units]
    flat = np.concatenate(lamp)
    k = max(len(units), round(density * flat.size))
    keep_flat = _top(flat, k)
    out, start = [], 0
    for u, lay in zip(units, layers, strict=True):
        keep = keep_flat[start : start + u.size].reshape(u.shape)
        start += u.size
        if not keep.any():  # every layer keeps its best unit: a layer is never cut off
            keep = _top(u, 1)
        out.append(expand_blocks(keep, p, lay.axis, lay.out_axis) if p.kind == "block" else keep)
    return out


def kept_fraction(weight: np.ndarray, mask: np.ndarray) -> float:
    """The share of the L1 magnitude that the mask keeps."""
    a = np.abs(np.asarray(weight, np.float64))
    total = float(a.sum())
    return float(a[mask].sum()) / total if total else 1.0


# ------------------------------------------------------------------------------------------------
# the pass
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRow:
    """What the pass did to one layer."""

    layer: str
    weight: str
    shape: tuple[int, ...]
    pattern: str
    sparsity: float  # fraction of the weight's elements the mask removes
    kept: float  # share of the L1 magnitude kept
    weight_error: float  # ||w - w_sparse|| / ||w||
    output_error: Metrics | None = None  # the layer's output, sparse graph vs dense graph
    # with a permutation before the masks: the kept share without it (the identity order)
    kept_unpermuted: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "weight": self.weight,
            "shape": list(self.shape),
            "pattern": self.pattern,
            "sparsity": self.sparsity,
            "kept_magnitude": self.kept,
            "kept_magnitude_unpermuted": self.kept_unpermuted,
            "weight_rel_l2": self.weight_error,
            "output_error": self.output_error.to_json() if self.output_error else None,
        }


def measure_layers(dense: Graph, sparse: Graph, layers: list[str], *, seed: int = 0
                   ) -> tuple[Metrics, dict[str, Metrics]]:
    """Error of the outputs, and of every named layer's output value, on the same sample inputs."""
    watched = [n.outputs[0].name for n in dense.nodes if (n.name or n.outputs[0].name) in set(layers)]
    runs = []
    for g in (dense, sparse):
        c = g.copy()
        by_name = {v.name: v for v in c.values()}
        c.set_outputs([*c.outputs, *(by_name[w] for w in watched)])
        runs.append(c.run(*sample_inputs(dense, seed=seed), dtype="float64"))
    k = len(dense.outputs)
    total = Metrics.between(runs[0][:k], runs[1][:k])
    names = {n.outputs[0].name: n.name or n.outputs[0].name for n in dense.nodes}
    per = {names[w]: Metrics.between([a], [b]) for w, a, b in zip(watched, runs[0][k:], runs[1][k:], strict=True)}
    return total, per


@dataclass(frozen=True)
class Sparsify:
    """Zero weights in a pattern (`pattern`: "N:M", "block:RxC" or "unstructured"; `sparsity`: the
    fraction removed for blocks and unstructured). See the module docstring for the options."""

    name: ClassVar[str] = "sparsify"
    contract: ClassVar[Contract] = Contract.APPROXIMATE

    pattern: str = "2:4"
    sparsity: float = 0.5  # block and unstructured; N:M removes 1 - N/M
    scope: str = "local"
    layers: str = ""  # regex matched whole against node or weight names; "" = every layer
    first: bool = False  # include the first layers (reading the model input)
    last: bool = False  # include the last layers (the classifier)
    budget: float = 1.0  # the largest relative L2 output error accepted (1.0: no worse than all zeros)
    measure: bool = True  # measure the output errors (whole graph and per layer) on sample inputs
    seed: int = 0

    def __post_init__(self) -> None:
        p = parse_pattern(self.pattern)
        if self.scope not in ("local", "global"):
            raise ValueError(f"scope must be local or global, got {self.scope!r}")
        if p.kind == "nm" and self.scope == "global":
            raise ValueError(f"scope=global ranks blocks or elements across layers; N:M ({p}) fixes the "
                             "sparsity of every group: use scope=local")
        if p.kind != "nm" and not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"sparsity is the fraction of weights removed, in (0, 1); got {self.sparsity}")
        if self.layers:
            try:
                re.compile(self.layers)
            except re.error as e:
                raise ValueError(f"layers {self.layers!r} is not a regular expression ({e})") from None

    def masks(self, graph: Graph) -> tuple[list[Layer], list[tuple[str, str]], list[np.ndarray]]:
        """The layers that take the pattern, the skipped ones with the reason, and the keep masks."""
        p = parse_pattern(self.pattern)
        layers, skipped = find_layers(graph, p, layers=self.layers, first=self.first, last=self.last)
        density = p.density if p.kind == "nm" else 1.0 - self.sparsity
        assert density is not None
        scores = [weight_scores(lay.weight) for lay in layers]
        if self.scope == "global" and layers:
            return layers, skipped, _global_masks(scores, layers, p, density)
        return layers, skipped, [select_mask(s, p, lay.axis, lay.out_axis, density)
                                 for s, lay in zip(scores, layers, strict=True)]

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult:
        p = parse_pattern(self.pattern)
        layers, skipped, masks = self.masks(graph)
        stats: dict[str, Any] = {"pattern": str(p), "skipped": skipped, "layers": []}
        if not layers:
            return PassResult(False, ALL, stats, budget=self.budget)
        dense = graph.copy() if self.measure else None
        rows = []
        for lay, mask in zip(layers, masks, strict=True):
            w = np.asarray(lay.weight.data)
            new = np.where(mask, w, np.zeros((), w.dtype))
            graph.replace_const_data(lay.weight, new, sparsity=Sparsity(str(p), lay.axis, lay.out_axis, mask))
            norm = float(np.linalg.norm(w))
            rows.append(LayerRow(lay.name, lay.weight.name, tuple(w.shape), str(p), 1.0 - float(mask.mean()),
                                 kept_fraction(w, mask), float(np.linalg.norm(w - new)) / norm if norm else 0.0))
        error = None
        if dense is not None:
            error, per = measure_layers(dense, graph, [r.layer for r in rows], seed=self.seed)
            rows = [replace(r, output_error=per.get(r.layer)) for r in rows]
        stats["layers"] = rows
        # shapes and coupling are unchanged; scores and costs that read weight values are not
        from ..analysis.coupling import CouplingAnalysis

        return PassResult(True, frozenset({CouplingAnalysis}), stats, error=error, budget=self.budget)
