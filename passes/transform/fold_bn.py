"""BatchNorm folding: conv/linear followed by inference BatchNorm becomes one conv/linear.

Rule: y = BN(W * x + b) = (s * W) * x + (s * (b - mean) + beta), with s = gamma / sqrt(var + eps),
scaling W along its OUT axis. Folding happens in float64 and the result is stored in the weight's
dtype; it applies only where the producer's output feeds the BN alone and every parameter is constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from graphprune.ir.graph import Graph, Node
from graphprune.ir.ops import Op
from graphprune.pm import AnalysisManager, Contract, PassResult


def _out_axis_scale(producer: Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Multiply the weight by s along its output-channel axis."""
    if producer.op is Op.CONV_TRANSPOSE:
        # weight is [IN, OUT/groups, *k]; output channel o = group * (OUT/groups) + j
        g = int(producer.attrs.groups)
        cin, cpg = w.shape[0], w.shape[1]
        wg = w.reshape(g, cin // g, cpg, *w.shape[2:])
        sg = s.reshape(g, 1, cpg, *([1] * (w.ndim - 2)))
        return (wg * sg).reshape(w.shape)
    return w * s.reshape(-1, *([1] * (w.ndim - 1)))  # CONV [OUT, ...], LINEAR [OUT, IN]


def _foldable(bn: Node) -> Node | None:
    x = bn.inputs[0]
    producer = x.producer
    if producer is None or producer.op not in (Op.CONV, Op.CONV_TRANSPOSE, Op.LINEAR):
        return None
    if len(x.uses) != 1 or x in (bn.graph.outputs if bn.graph else []):
        return None
    if not all(v.is_const for v in (*bn.inputs[1:], *producer.inputs[1:])):
        return None
    # LINEAR's features are its last axis; BatchNorm's channels are axis 1: they agree only at rank 2
    if producer.op is Op.LINEAR and x.type.rank != 2:
        return None
    return producer


@dataclass(frozen=True)
class FoldBatchNorm:
    name: ClassVar[str] = "fold-bn"
    contract: ClassVar[Contract] = Contract.EXACT

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult:
        folded = 0
        orphans = []
        for bn in graph.find(Op.BATCH_NORM):
            producer = _foldable(bn)
            if producer is None:
                continue
            gamma, beta, mean, var = (np.asarray(v.data, np.float64) for v in bn.inputs[1:])
            s = gamma / np.sqrt(var + bn.attrs.eps)
            w_val = producer.inputs[1]
            w = _out_axis_scale(producer, np.asarray(w_val.data, np.float64), s)
            b = np.asarray(producer.inputs[2].data, np.float64) if len(producer.inputs) == 3 else 0.0
            bias = s * (b - mean) + beta
            dtype = w_val.type.dtype.numpy
            new_w = graph.add_const(w_val.name + ".folded", w.astype(dtype), source=w_val.source, unique=True)
            if w_val.sparsity is not None:  # scaling output rows keeps every zero: the mask still holds
                graph.set_sparsity(new_w, w_val.sparsity)
            new_b = graph.add_const(bn.name + ".folded_bias" if bn.name else "folded_bias", bias.astype(dtype),
                                    unique=True)
            fused = graph.add_node(
                producer.op,
                [producer.inputs[0], new_w, new_b],
                producer.attrs,
                name=producer.name,
                output_names=[bn.output.name + ".fused"],
                unique=True,
                before=producer,
            )
            graph.replace_all_uses(bn.output, fused.output)
            orphans += [*bn.inputs[1:], *producer.inputs[1:]]
            graph.erase(bn)
            graph.erase(producer)
            folded += 1
        for c in {id(c): c for c in orphans}.values():  # the old weights and BN parameters, if unshared
            if not c.uses and c not in graph.outputs:
                graph.remove_const(c)
        if not folded:
            return PassResult.unchanged()
        return PassResult(True, frozenset(), {"folded": folded})
