"""Property tests on random graphs: text round trip, and fold-bn + dce exact in float64."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import graphprune as gp
from graphprune.inputs import sample_inputs
from graphprune.ir import DType, Graph, Op, TensorType
from graphprune.ir.ops import AxisAttrs, ConvAttrs, EpsAttrs, SplitAttrs


@st.composite
def conv_chains(draw) -> Graph:
    """Random conv networks: grouped/strided/dilated convs, BN after some, residual adds, concats,
    splits. Built in float64 so BN folding can be checked to 1e-10."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g = Graph("random")
    c = draw(st.sampled_from([2, 4, 6]))
    x = g.add_input("x", TensorType(DType.F64, (1, c, 9, 9), 1))
    cur = x
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "residual", "concat", "split"]))
        c_in = int(cur.type.shape[1])
        if kind == "conv":
            groups = draw(st.sampled_from([g_ for g_ in (1, 2, c_in) if c_in % g_ == 0]))
            c_out = groups * draw(st.integers(1, 3))
            k = draw(st.sampled_from([1, 3]))
            dil = draw(st.sampled_from([1, 2])) if k == 3 else 1
            pad = dil * (k // 2)
            stride = draw(st.sampled_from([1, 1, 2])) if int(cur.type.shape[2]) > 4 else 1
            w = g.add_const(f"c{i}.w", rng.normal(size=(c_out, c_in // groups, k, k)))
            ins = [cur, w]
            if draw(st.booleans()):
                ins.append(g.add_const(f"c{i}.b", rng.normal(size=c_out)))
            cur = g.add_node(Op.CONV, ins, ConvAttrs((stride, stride), (pad,) * 4, (dil, dil), groups),
                             name=f"conv{i}").output
            if draw(st.booleans()):
                params = [g.add_const(f"bn{i}.{p}", v) for p, v in (
                    ("g", rng.uniform(0.5, 2, c_out)), ("b", rng.normal(size=c_out)),
                    ("m", rng.normal(size=c_out)), ("v", rng.uniform(0.2, 2, c_out)))]
                cur = g.add_node(Op.BATCH_NORM, [cur, *params], EpsAttrs(1e-3), name=f"bn{i}").output
            cur = g.add_node(Op.RELU, [cur], name=f"relu{i}").output
        elif kind == "residual":
            w = g.add_const(f"r{i}.w", rng.normal(size=(c_in, c_in, 3, 3)))
            y = g.add_node(Op.CONV, [cur, w], ConvAttrs((1, 1), (1, 1, 1, 1), (1, 1), 1), name=f"res{i}").output
            cur = g.add_node(Op.ADD, [cur, y], name=f"add{i}").output
        elif kind == "concat":
            y = g.add_node(Op.SIGMOID, [cur], name=f"sig{i}").output
            cur = g.add_node(Op.CONCAT, [y, cur], AxisAttrs(1), name=f"cat{i}").output
        elif c_in >= 2:
            a = draw(st.integers(1, c_in - 1))
            parts = g.add_node(Op.SPLIT, [cur], SplitAttrs(1, (a, c_in - a)), name=f"split{i}").outputs
            cur = g.add_node(Op.CONCAT, [parts[1], parts[0]], AxisAttrs(1), name=f"swap{i}").output
    g.set_outputs([cur])
    return g


@settings(max_examples=40, deadline=None)
@given(conv_chains())
def test_text_round_trip(graph):
    text = graph.to_text(full=True)
    assert gp.parse(text).to_text(full=True) == text
    assert str(gp.parse(str(graph))) == str(graph)


@settings(max_examples=40, deadline=None)
@given(conv_chains())
def test_fold_bn_and_dce_are_exact(graph):
    x = sample_inputs(graph, seed=1)
    ref = graph.run(*x)
    out = gp.optimize(graph, "fold-bn,dce", verify=True)
    assert not out.find(Op.BATCH_NORM)  # every BN here follows a conv read by nothing else
    got = out.run(*x)
    scale = max(1.0, float(np.abs(ref[0]).max()))
    assert float(np.abs(got[0] - ref[0]).max()) <= 1e-10 * scale
