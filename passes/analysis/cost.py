"""Cost analysis: parameters, multiply-accumulates and activation memory, per node and in total.

MACs count every multiply-accumulate of conv, linear, matmul (activation x activation too, so the
attention products of hand-written attention count) and fused attention. Symbolic dims count as 1,
so figures are per sample. Activation memory is the peak of live activations when nodes run in
graph order and each value is freed after its last consumer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from graphprune.ir.graph import Graph, Node
from graphprune.ir.infer import conv_macs
from graphprune.ir.ops import Op
from graphprune.ir.types import TensorType
from graphprune.pm import AnalysisManager


@dataclass(frozen=True)
class NodeCost:
    node: str
    op: str
    shape: tuple
    params: int  # elements of constants first read by this node (a shared constant counts once)
    macs: int
    out_bytes: int


@dataclass(frozen=True)
class Cost:
    nodes: tuple[NodeCost, ...]
    params: int
    param_bytes: int
    macs: int
    peak_activation_bytes: int
    opaque: tuple[str, ...]  # "node (framework op)" of every op that blocks pruning

    def by_node(self) -> dict[str, NodeCost]:
        return {c.node: c for c in self.nodes}


def _bytes(t: TensorType) -> int:
    return t.numel() * t.dtype.numpy.itemsize


def node_macs(node: Node) -> int:
    op = node.op
    if op in (Op.CONV, Op.CONV_TRANSPOSE):
        return conv_macs(node)
    if op is Op.LINEAR:
        return node.outputs[0].type.numel() * int(node.inputs[1].type.shape[1])
    if op is Op.MATMUL:
        k = node.inputs[0].type.shape[-1]
        return node.outputs[0].type.numel() * (k if isinstance(k, int) else 1)
    if op is Op.ATTENTION:
        q, k = node.inputs[0].type, node.inputs[1].type
        e, s = q.shape[-1], k.shape[-2]
        e = e if isinstance(e, int) else 1
        s = s if isinstance(s, int) else 1
        # q @ k^T is L x S x E per head, probabilities @ v is L x S x Ev per head
        return q.numel() // max(e, 1) * s * e + node.outputs[0].type.numel() * s
    return 0


class CostAnalysis:
    name: ClassVar[str] = "cost"

    @classmethod
    def compute(cls, graph: Graph, analyses: AnalysisManager | None = None) -> Cost:
        seen: set[int] = set()
        rows = []
        for n in graph.nodes:
            params = 0
            for v in n.inputs:
                if v.is_const and id(v) not in seen and v.type.dtype.is_float:
                    seen.add(id(v))
                    params += v.type.numel()
            rows.append(
                NodeCost(
                    n.name or n.outputs[0].name,
                    n.op.value,
                    tuple(n.outputs[0].type.shape) if n.outputs else (),
                    params,
                    node_macs(n),
                    sum(_bytes(o.type) for o in n.outputs),
                )
            )
        floats = [c for c in graph.constants if c.type.dtype.is_float]
        opaque = tuple(
            f"{n.name or n.outputs[0].name} ({n.attrs.op_name})" for n in graph.nodes if n.op is Op.OPAQUE
        )
        return Cost(
            tuple(rows),
            sum(c.type.numel() for c in floats),
            sum(_bytes(c.type) for c in graph.constants),
            sum(r.macs for r in rows),
            peak_activation_bytes(graph),
            opaque,
        )


def peak_activation_bytes(graph: Graph) -> int:
    remaining = {}
    for n in graph.nodes:
        for v in n.inputs:
            if not v.is_const:
                remaining[id(v)] = remaining.get(id(v), 0) + 1
    outputs = {id(v) for v in graph.outputs}
    live = sum(_bytes(v.type) for v in graph.inputs)
    peak = live
    sizes = {id(v): _bytes(v.type) for v in graph.inputs}
    for n in graph.nodes:
        for o in n.outputs:
            sizes[id(o)] = _bytes(o.type)
            live += sizes[id(o)]
        peak = max(peak, live)
        for v in {id(v): v for v in n.inputs if not v.is_const}.values():
            remaining[id(v)] -= sum(1 for u, _ in v.uses if u is n)
            if remaining[id(v)] <= 0 and id(v) not in outputs:
                live -= sizes.get(id(v), 0)
        for o in n.outputs:  # outputs nobody reads are freed at once
            if not o.uses and id(o) not in outputs:
                live -= sizes[id(o)]
    return peak


def format_table(cost: Cost, *, limit: int | None = None) -> str:
    """The `inspect` table: one row per node with parameters or MACs, then totals and opaque ops."""
    rows = [c for c in cost.nodes if c.params or c.macs or c.op == "opaque"]
    shown = rows if limit is None else rows[:limit]
    name_w = max([len("node"), *(len(r.node) for r in shown)][:200])
    name_w = min(name_w, 48)
    head = f"{'node':<{name_w}}  {'op':<16} {'output shape':<22} {'params':>10} {'MACs':>14}"
    lines = [head, "-" * len(head)]
    for r in shown:
        node = r.node if len(r.node) <= name_w else "…" + r.node[-(name_w - 1):]
        shape = "x".join(str(d) for d in r.shape)
        lines.append(f"{node:<{name_w}}  {r.op:<16} {shape:<22} {r.params:>10,} {r.macs:>14,}")
    if limit is not None and len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows (use --all)")
    lines.append("-" * len(head))
    lines.append(f"{'total':<{name_w}}  {'':<16} {'':<22} {cost.params:>10,} {cost.macs:>14,}")
    lines.append(
        f"parameters: {cost.params:,} ({_human(cost.param_bytes)}), MACs: {_human_n(cost.macs)}, "
        f"peak activations: {_human(cost.peak_activation_bytes)}"
    )
    if cost.opaque:
        lines.append(f"opaque to pruning ({len(cost.opaque)}): " + ", ".join(cost.opaque))
    else:
        lines.append("opaque to pruning: none")
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _human_n(n: int) -> str:
    if n == 0:
        return "0"
    k = min(int(math.log10(n) // 3), 4)
    return f"{n / 10 ** (3 * k):.2f}{['', 'K', 'M', 'G', 'T'][k]}"
