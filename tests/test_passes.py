"""DCE and BatchNorm folding: unit tests, before/expected text tests, numerical contract tests."""

from __future__ import annotations

from textwrap import dedent

import numpy as np
import pytest
import torch
from torch import nn

import graphprune as gp
from graphprune.ir import DType, Graph, Op, TensorType
from graphprune.ir.ops import ConvAttrs, ConvTransposeAttrs, EpsAttrs
from graphprune.pm import NumericalVerifier, Pipeline


def run_text(pipeline: str, before: str) -> str:
    graph = gp.parse(dedent(before))
    Pipeline.parse(pipeline).run(graph)
    return str(graph)


def test_dce_text():
    before = """\
    graph @"g"(%x: f32[1,4]c1) {
      %unused = const f32[2] dense<[1.0, 2.0]>
      %k = const f32[] dense<[2.0]>
      %a = relu(%x) : f32[1,4]c1
      %dead = mul(%a, %k) : f32[1,4]c1
      %dead2 = sigmoid(%dead) : f32[1,4]c1
      %b = neg(%a) : f32[1,4]c1
      return %b
    }
    """
    expected = """\
    graph @"g"(%x: f32[1,4]c1) {
      %a = relu(%x) : f32[1,4]c1
      %b = neg(%a) : f32[1,4]c1
      return %b
    }
    """
    assert run_text("dce", before) == dedent(expected)


def test_dce_keeps_multi_output_nodes_with_one_live_output():
    before = """\
    graph @"g"(%x: f32[1,4]c1) {
      %a, %b = split(%x) {axis=1, sizes=[1, 3]} : f32[1,1]c1, f32[1,3]c1
      return %b
    }
    """
    assert run_text("dce", before) == dedent(before)


def test_fold_bn_text():
    # values chosen so that the folded numbers are exact: s = gamma / sqrt(var) = [0.5, 3]
    before = """\
    graph @"g"(%x: f32[1,1,2,2]c1) {
      %w = const f32[2,1,1,1] dense<[1.0, 2.0]>
      %b = const f32[2] dense<[1.0, -1.0]>
      %gamma = const f32[2] dense<[1.0, 3.0]>
      %beta = const f32[2] dense<[0.0, 1.0]>
      %mean = const f32[2] dense<[0.5, 0.0]>
      %var = const f32[2] dense<[4.0, 1.0]>
      %conv = conv(%x, %w, %b) {stride=[1, 1], pads=[0, 0, 0, 0], dilation=[1, 1], groups=1} : f32[1,2,2,2]c1 loc("conv")
      %bn = batch_norm(%conv, %gamma, %beta, %mean, %var) {eps=0.0} : f32[1,2,2,2]c1 loc("bn")
      %y = relu(%bn) : f32[1,2,2,2]c1 loc("relu")
      return %y
    }
    """
    expected = """\
    graph @"g"(%x: f32[1,1,2,2]c1) {
      %w.folded = const f32[2,1,1,1] dense<[0.5, 6.0]>  # out,in,s,s
      %bn.folded_bias = const f32[2] dense<[0.25, -2.0]>  # out
      %bn.fused = conv(%x, %w.folded, %bn.folded_bias) {stride=[1, 1], pads=[0, 0, 0, 0], dilation=[1, 1], groups=1} : f32[1,2,2,2]c1 loc("conv")
      %y = relu(%bn.fused) : f32[1,2,2,2]c1 loc("relu")
      return %y
    }
    """
    assert run_text("fold-bn", before) == dedent(expected)


def _bn_params(g: Graph, c: int, rng: np.random.Generator, dtype) -> list:
    return [
        g.add_const(f"bn.{k}", v.astype(dtype))
        for k, v in {
            "weight": rng.uniform(0.5, 1.5, c),
            "bias": rng.normal(size=c),
            "mean": rng.normal(size=c) * 0.1,
            "var": rng.uniform(0.5, 1.5, c),
        }.items()
    ]


@pytest.mark.parametrize("kind", ["conv", "depthwise", "conv_transpose_groups", "linear"])
def test_fold_bn_is_exact_in_float64(kind):
    rng = np.random.default_rng(0)
    g = Graph(kind)
    f64 = np.float64
    if kind == "linear":
        x = g.add_input("x", TensorType(DType.F64, (3, 5), 1))
        w = g.add_const("w", rng.normal(size=(6, 5)))
        p = g.add_node(Op.LINEAR, [x, w], name="fc")
        c = 6
    elif kind == "conv_transpose_groups":
        x = g.add_input("x", TensorType(DType.F64, (2, 4, 5, 5), 1))
        w = g.add_const("w", rng.normal(size=(4, 3, 3, 3)))  # [IN, OUT/groups, k, k], groups=2 -> OUT=6
        p = g.add_node(Op.CONV_TRANSPOSE, [x, w], ConvTransposeAttrs((2, 2), (1, 1, 1, 1), (1, 1), (1, 1), 2),
                       name="up")
        c = 6
    else:
        groups = 4 if kind == "depthwise" else 1
        x = g.add_input("x", TensorType(DType.F64, (2, 4, 7, 7), 1))
        w = g.add_const("w", rng.normal(size=(4, 4 // groups, 3, 3)))
        b = g.add_const("b", rng.normal(size=4))
        p = g.add_node(Op.CONV, [x, w, b], ConvAttrs((1, 1), (1, 1, 1, 1), (1, 1), groups), name="conv")
        c = 4
    bn = g.add_node(Op.BATCH_NORM, [p.output, *_bn_params(g, c, rng, f64)], EpsAttrs(1e-5), name="bn")
    g.set_outputs([bn.output])
    ref = g.run(*gp_inputs(g))
    verifier = NumericalVerifier()
    folded = gp.optimize(g, "fold-bn,dce", instruments=[verifier])
    assert [n.op for n in folded.nodes] == [p.op]
    (got,) = folded.run(*gp_inputs(g))
    np.testing.assert_allclose(got, ref[0], rtol=1e-12, atol=1e-12)
    assert verifier.records and verifier.records[0][1].max_abs < 1e-12


def gp_inputs(g: Graph) -> list[np.ndarray]:
    from graphprune.inputs import sample_inputs

    return sample_inputs(g, seed=3)


def test_fold_bn_leaves_shared_producers_alone():
    text = """\
    graph @"g"(%x: f32[1,2,2,2]c1) {
      %w = const f32[2,2,1,1] dense<[1.0, 2.0, 3.0, 4.0]>
      %p = const f32[2] dense<[1.0, 1.0]>
      %z = const f32[2] dense<[0.0, 0.0]>
      %conv = conv(%x, %w) {stride=[1, 1], pads=[0, 0, 0, 0], dilation=[1, 1], groups=1} : f32[1,2,2,2]c1
      %bn = batch_norm(%conv, %p, %z, %z, %p) {eps=1e-05} : f32[1,2,2,2]c1
      %y = add(%bn, %conv) : f32[1,2,2,2]c1
      return %y
    }
    """
    assert run_text("fold-bn", text) == str(gp.parse(dedent(text)))  # unchanged


def test_fold_bn_on_a_traced_float32_model_within_storage_precision():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                          nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_()
    x = torch.randn(1, 3, 8, 8)
    g = gp.trace(model, (x,))
    folded = gp.optimize(g, "fold-bn,dce", verify=True)  # the numerical verifier checks EXACT
    assert not folded.find(Op.BATCH_NORM) and len(folded.find(Op.CONV)) == 2
    np.testing.assert_allclose(folded.run(x.numpy())[0], model(x).detach().numpy(), rtol=1e-4, atol=1e-4)
