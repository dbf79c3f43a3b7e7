"""The prune report: what channel pruning did to every layer and every coupling group.

`build_report(before, after, coupling, keep)` compares the graph before pruning with the pruned
graph. Layers are the nodes that hold weights (conv, conv_transpose, linear, matmul with a constant
operand); the prune pass keeps node names and order, so a layer is matched by its name and, for
repeated names, by its occurrence. A layer's width is its output channel count. Parameters and MACs
per layer and in total come from the cost analysis.

Groups come from the coupling the selection worked on, with the units kept by `keep`. A group's
`stats` are the ops where removing a channel is not the same as zeroing it (norm statistics,
softmax, mean or max over channels): where such a group loses channels, the masked reference of the
MASK_EQUIVALENT contract computes those ops on the kept channels only.

`PruneReport.table()` is the terminal form, `to_json()` the machine form and `plot(path)` a PNG bar
chart of the widths (matplotlib's Agg canvas, no pyplot: no global backend state is touched).
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphprune.ir.errors import ExportError
from graphprune.ir.graph import Graph, Node
from graphprune.ir.ops import Op

from .cost import CostAnalysis
from .coupling import Coupling

__all__ = ["GroupRow", "LayerRow", "PruneReport", "SegmentRow", "build_report", "segment_rows", "weighted_layers"]

_LAYER_OPS = (Op.CONV, Op.CONV_TRANSPOSE, Op.LINEAR)
_NAME_WIDTH = 48  # longer node names are shortened from the left in the table


@dataclass(frozen=True)
class LayerRow:
    node: str
    op: str
    width_before: int  # output channels
    width_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass(frozen=True)
class GroupRow:
    id: int
    name: str
    units_before: int
    units_after: int
    blocked: str | None  # why the group cannot be pruned
    stats: tuple[str, ...]  # ops where removing a channel differs from zeroing it

    @property
    def pruned(self) -> bool:
        return self.units_after < self.units_before


@dataclass(frozen=True)
class SegmentRow:
    """One segment of unconstrained pruning after the reorder: its readers that read a slice (or
    the whole stream: copy-free), those left gathering, and the bytes they copy per inference
    (symbolic sizes count 1), against the same masks without reordering."""

    name: str
    copy_free: tuple[str, ...]
    gathers: tuple[str, ...]
    bytes_copied: int
    bytes_naive: int


def segment_rows(results: Iterable[Any]) -> tuple[SegmentRow, ...]:
    """Rows from the reorder pass's per-segment results (transform/reorder.py SegmentResult)."""
    return tuple(
        SegmentRow(
            r.name,
            tuple(c.name for c in r.readers if c.view),
            tuple(c.name for c in r.readers if not c.view),
            r.bytes,
            r.naive_bytes,
        )
        for r in results
    )


@dataclass(frozen=True)
class PruneReport:
    layers: tuple[LayerRow, ...]
    groups: tuple[GroupRow, ...]
    params: tuple[int, int]  # (before, after), whole graph
    macs: tuple[int, int]
    notes: tuple[str, ...]  # the selection's decisions
    segments: tuple[SegmentRow, ...] = ()  # unconstrained pruning: readers of shared tensors

    def to_json(self) -> dict[str, Any]:
        return {
            "params": {"before": self.params[0], "after": self.params[1], "ratio": _ratio(*self.params)},
            "macs": {"before": self.macs[0], "after": self.macs[1], "ratio": _ratio(*self.macs)},
            "layers": [asdict(r) for r in self.layers],
            "groups": [{**asdict(g), "stats": list(g.stats)} for g in self.groups],
            "notes": list(self.notes),
            "segments": [{**asdict(r), "copy_free": list(r.copy_free), "gathers": list(r.gathers)}
                         for r in self.segments],
        }

    def table(self) -> str:
        """Widths, parameters and MACs per layer; totals; blocked groups; groups pruned across
        statistics ops; the selection's notes."""
        name_w = min(max([len("layer"), *(len(r.node) for r in self.layers)]), _NAME_WIDTH)
        head = f"{'layer':<{name_w}}  {'op':<14} {'width':>13} {'params':>23} {'MACs':>29}"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            node = r.node if len(r.node) <= name_w else "…" + r.node[-(name_w - 1) :]
            lines.append(
                f"{node:<{name_w}}  {r.op:<14} {_arrow(r.width_before, r.width_after):>13} "
                f"{_arrow(r.params_before, r.params_after):>23} {_arrow(r.macs_before, r.macs_after):>29}"
            )
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<{name_w}}  {'':<14} {'':>13} {_arrow(*self.params):>23} {_arrow(*self.macs):>29}"
        )
        pruned = sum(g.pruned for g in self.groups)
        lines.append(
            f"parameters: {_arrow(*self.params)} ({_percent(*self.params)}), "
            f"MACs: {_arrow(*self.macs)} ({_percent(*self.macs)}), groups pruned: {pruned} of {len(self.groups)}"
        )
        blocked = [g for g in self.groups if g.blocked]
        if blocked:
            lines += ["", f"blocked groups ({len(blocked)}):"]
            lines += [f"  group {g.id} {g.name!r} ({g.units_before} units): {g.blocked}" for g in blocked]
        stats = [g for g in self.groups if g.stats and g.pruned]
        if stats:
            lines += ["", f"pruned across statistics ({len(stats)}): the masked reference computes these ops "
                          "on the kept channels only"]
            lines += [
                f"  group {g.id} {g.name!r} ({_arrow(g.units_before, g.units_after)} units): {', '.join(g.stats)}"
                for g in stats
            ]
        if self.segments:
            lines += ["", f"segments ({len(self.segments)}): readers of shared tensors after the reorder"]
            for r in self.segments:
                lines.append(
                    f"  {r.name}: {len(r.copy_free)} of {len(r.copy_free) + len(r.gathers)} readers copy-free, "
                    f"{len(r.gathers)} gathers, {r.bytes_copied:,} bytes copied per inference "
                    f"(without reordering: {r.bytes_naive:,})"
                )
                if r.gathers:
                    lines.append(f"    gathering: {', '.join(r.gathers)}")
        if self.notes:
            lines += ["", f"notes ({len(self.notes)}):", *(f"  {n}" for n in self.notes)]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """A PNG bar chart of every layer's width before and after, written atomically."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        n = len(self.layers)
        # a readable bar per layer, within what a PNG viewer copes with (Agg's limit is 2^16 pixels)
        fig = Figure(figsize=(min(max(6.0, 0.28 * n + 2.0), 120.0), 5.0), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        x = np.arange(n)
        ax.bar(x - 0.2, [r.width_before for r in self.layers], 0.4, label="before", color="#9db4d0")
        ax.bar(x + 0.2, [r.width_after for r in self.layers], 0.4, label="after", color="#2b5d9b")
        ax.set_xticks(x, [r.node for r in self.layers], rotation=90, fontsize=7)
        ax.set_xlim(-0.7, max(n, 1) - 0.3)
        ax.set_ylabel("output channels")
        ax.set_title(
            f"layer widths: parameters {_percent(*self.params)}, MACs {_percent(*self.macs)}", fontsize=10
        )
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        _write_atomic(path, buf.getvalue())


def weighted_layers(graph: Graph) -> list[Node]:
    """The nodes that hold weights: conv, conv_transpose, linear, and matmul with a constant operand."""
    return [
        n for n in graph.nodes
        if n.op in _LAYER_OPS or (n.op is Op.MATMUL and any(v.is_const for v in n.inputs))
    ]


def build_report(
    before: Graph,
    after: Graph,
    coupling: Coupling,
    keep: Mapping[int, np.ndarray],
    notes: Iterable[str] = (),
    segments: Iterable[SegmentRow] = (),
) -> PruneReport:
    """The report of pruning `before` into `after` with `keep` (group id -> keep mask over the
    group's units; a group not in `keep` kept whole)."""
    cost_before, cost_after = CostAnalysis.compute(before), CostAnalysis.compute(after)
    # cost rows follow the graph's nodes one for one; names need not be unique (repeated matmuls)
    rows_before = dict(zip(map(id, before.nodes), cost_before.nodes, strict=True))
    rows_after = dict(zip(map(id, after.nodes), cost_after.nodes, strict=True))
    matched = _occurrences(weighted_layers(after))
    layers = []
    for key, node in _occurrences(weighted_layers(before)).items():
        other = matched.get(key)
        if other is None:
            raise ValueError(
                f"prune report: layer {key[0]!r} of the original graph is not in the pruned graph; "
                "build the report from the graphs right before and after the prune pass"
            )
        cb, ca = rows_before[id(node)], rows_after[id(other)]
        layers.append(
            LayerRow(cb.node, cb.op, _width(node), _width(other), cb.params, ca.params, cb.macs, ca.macs)
        )
    groups = tuple(
        GroupRow(
            g.id,
            g.name,
            g.size,
            int(np.count_nonzero(keep[g.id])) if g.id in keep else g.size,
            g.blocked,
            tuple(g.stats),
        )
        for g in coupling.groups
    )
    return PruneReport(
        tuple(layers),
        groups,
        (cost_before.params, cost_after.params),
        (cost_before.macs, cost_after.macs),
        tuple(notes),
        tuple(segments),
    )


def _occurrences(nodes: list[Node]) -> dict[tuple[str, int], Node]:
    """Nodes keyed by (name, how many earlier nodes had that name)."""
    seen: dict[str, int] = {}
    out = {}
    for n in nodes:
        name = n.name or n.outputs[0].name
        out[(name, seen.get(name, 0))] = n
        seen[name] = seen.get(name, 0) + 1
    return out


def _width(node: Node) -> int:
    """Output channels: the output's channel axis, else the axis the weight's out features land on."""
    t = node.outputs[0].type
    axis = t.channel_axis
    if axis is None:
        if node.op in (Op.CONV, Op.CONV_TRANSPOSE):
            axis = 1
        elif node.op is Op.MATMUL and node.inputs[0].is_const:
            axis = t.rank - 2  # W @ x: W's rows land on the second-to-last axis
        else:
            axis = t.rank - 1  # linear and x @ W: the last axis
    d = t.shape[axis]
    return d if isinstance(d, int) else 0  # a symbolic channel count is not a width


def _arrow(a: int, b: int) -> str:
    return f"{a:,}" if a == b else f"{a:,} -> {b:,}"


def _ratio(before: int, after: int) -> float:
    return after / before if before else 1.0


def _percent(before: int, after: int) -> str:
    return f"{_ratio(before, after) * 100:.1f}% kept"


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file beside `path`, then os.replace: a reader never sees a half-written file."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"{path}: the folder {folder} does not exist; create it first")
    tmp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # os.open with 0o666 lets the umask decide the mode, as for any new file (mkstemp would make it 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
