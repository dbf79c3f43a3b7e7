"""The pass manager: pipelines, analysis caching, the preserved-analysis check, contract checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from graphprune.passes.analysis.cost import CostAnalysis

import graphprune as gp
from graphprune.ir import DType, Graph, Op, TensorType, VerificationError
from graphprune.pm import ALL, AnalysisManager, Contract, PassResult, Pipeline


def graph() -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.F32, ("N", 8), 1))
    w1 = g.add_const("fc1.weight", np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32))
    w2 = g.add_const("fc2.weight", np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32))
    h = g.add_node(Op.LINEAR, [x, w1], name="fc1")
    r = g.add_node(Op.RELU, [h.output], name="relu")
    o = g.add_node(Op.LINEAR, [r.output, w2], name="fc2")
    g.set_outputs([o.output])
    return g


@dataclass(frozen=True)
class DoubleWeights:
    """Changes the function: a liar if it claims EXACT, fine as APPROXIMATE with a large budget."""

    name: ClassVar[str] = "double"
    contract: ClassVar[Contract] = Contract.EXACT
    preserve_cost: bool = False

    def run(self, graph, analyses):
        w = graph.constants[0]
        graph.replace_const_data(w, w.data * 2)
        return PassResult(True, frozenset({CostAnalysis}) if self.preserve_cost else frozenset())


@dataclass(frozen=True)
class DropLayer(DoubleWeights):
    name: ClassVar[str] = "drop"

    def run(self, graph, analyses):  # removes relu+fc2 but claims the cost analysis is still valid
        fc2 = graph.nodes[-1]
        graph.set_outputs([graph.nodes[0].output])
        graph.erase(fc2)
        graph.erase(graph.nodes[-1])
        return PassResult(True, frozenset({CostAnalysis}))


def test_pipeline_parse_and_print():
    p = Pipeline.parse("fold-bn, dce")
    assert [q.name for q in p.passes] == ["fold-bn", "dce"]
    assert str(p) == "fold-bn,dce"
    with pytest.raises(ValueError, match="unknown pass 'prune'.*known passes"):
        Pipeline.parse("fold-bn,prune")
    with pytest.raises(ValueError, match="has no option 'ratio'"):
        Pipeline.parse("dce{ratio=0.5}")


def test_analysis_manager_caches_and_invalidates():
    g = graph()
    am = AnalysisManager(g, check_preserved=False)
    first = am.get(CostAnalysis)
    assert am.get(CostAnalysis) is first and am.computed["cost"] == 1
    am.after_pass("noop", PassResult.unchanged())
    assert am.cached(CostAnalysis)
    am.after_pass("changer", PassResult(True, frozenset()))
    assert not am.cached(CostAnalysis)
    assert am.get(CostAnalysis) == first and am.computed["cost"] == 2
    assert PassResult.unchanged().preserved is ALL


def test_false_preservation_claim_is_caught():
    g = graph()
    am = AnalysisManager(g, check_preserved=True)
    am.get(CostAnalysis)
    with pytest.raises(VerificationError, match="'drop' claims to preserve analysis 'cost'"):
        Pipeline([DropLayer()]).run(g, analyses=am, verify=False)
    # doubling weights keeps parameter and MAC counts: that claim is true and passes the check
    g = graph()
    am = AnalysisManager(g, check_preserved=True)
    am.get(CostAnalysis)
    Pipeline([DoubleWeights(preserve_cost=True)]).run(g, analyses=am, verify=False)
    assert am.cached(CostAnalysis)


def test_numerical_verifier_catches_a_broken_exact_pass():
    with pytest.raises(VerificationError, match="'double' broke its exact contract"):
        gp.optimize(graph(), Pipeline([DoubleWeights()]), verify=True)
    gp.optimize(graph(), Pipeline([DoubleWeights()]), verify=False)  # off when asked


def test_structural_verifier_always_runs():
    @dataclass(frozen=True)
    class Corrupt:
        name: ClassVar[str] = "corrupt"
        contract: ClassVar[Contract] = Contract.EXACT

        def run(self, graph, analyses):
            graph.nodes[1].outputs[0].type = TensorType(DType.F32, ("N", 3), 1)
            return PassResult(True)

    with pytest.raises(VerificationError, match="(?s)after pass 'corrupt'.*node 'fc2'"):
        gp.optimize(graph(), Pipeline([Corrupt()]))


def test_approximate_contract_budget():
    @dataclass(frozen=True)
    class Approx(DoubleWeights):
        name: ClassVar[str] = "approx"
        contract: ClassVar[Contract] = Contract.APPROXIMATE
        budget: float = 0.1

    with pytest.raises(VerificationError, match="exceeds its error budget"):
        gp.optimize(graph(), Pipeline([Approx()]), verify=True)
    gp.optimize(graph(), Pipeline([Approx(budget=10.0)]), verify=True)


def test_mask_equivalent_pass_needs_a_reference():
    @dataclass(frozen=True)
    class NoRef(DoubleWeights):
        name: ClassVar[str] = "noref"
        contract: ClassVar[Contract] = Contract.MASK_EQUIVALENT

    with pytest.raises(VerificationError, match="returned no masked reference"):
        gp.optimize(graph(), Pipeline([NoRef()]), verify=True)
