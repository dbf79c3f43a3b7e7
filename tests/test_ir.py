"""IR core: building, use lists, mutation, verification, text print/parse."""

from __future__ import annotations

import numpy as np
import pytest

import graphprune as gp
from graphprune.ir import DType, Graph, GraphError, Op, ParseError, ShapeError, TensorType
from graphprune.ir.ops import ConvAttrs, ReshapeAttrs, SplitAttrs, TransposeAttrs
from graphprune.ir.roles import axis_roles
from graphprune.ir.types import AxisRole


def small_graph() -> Graph:
    g = Graph("small")
    x = g.add_input("x", TensorType(DType.F32, ("N", 4, 6, 6), 1))
    w = g.add_const("conv.weight", np.arange(8 * 4 * 9, dtype=np.float32).reshape(8, 4, 3, 3) / 100)
    b = g.add_const("conv.bias", np.linspace(-1, 1, 8, dtype=np.float32))
    conv = g.add_node(Op.CONV, [x, w, b], ConvAttrs((1, 1), (1, 1, 1, 1), (1, 1), 1), name="conv")
    relu = g.add_node(Op.RELU, [conv.output], name="relu")
    split = g.add_node(Op.SPLIT, [relu.output], SplitAttrs(1, (3, 5)), name="split")
    add = g.add_node(Op.ADD, [split.outputs[0], split.outputs[0]], name="add")
    g.set_outputs([add.output, split.outputs[1]])
    return g


def test_types_and_channel_axes_are_inferred():
    g = small_graph()
    conv, relu, split, add = g.nodes
    assert conv.output.type == TensorType(DType.F32, ("N", 8, 6, 6), 1)
    assert [o.type.shape for o in split.outputs] == [("N", 3, 6, 6), ("N", 5, 6, 6)]
    assert add.output.type.channel_axis == 1
    g.verify()


def test_use_lists_follow_every_mutation():
    g = small_graph()
    conv, relu, split, add = g.nodes
    a = split.outputs[0]
    assert a.uses == ((add, 0), (add, 1))
    g.set_input(add, 1, split.outputs[1].producer.inputs[0])  # add(split0, relu)
    assert a.uses == ((add, 0),)
    assert (add, 1) in relu.output.uses
    g.replace_all_uses(a, relu.output)
    assert a.uses == () and relu.output.uses.count((add, 0)) == 1
    with pytest.raises(GraphError, match="still used"):
        g.erase(relu)
    with pytest.raises(GraphError, match="re-run type inference"):
        g.verify()  # add now reads two 8-channel tensors: its stored 3-channel type is stale
    g.retype()
    g.verify()


def test_erase_then_verify_and_copy_is_independent():
    g = small_graph()
    h = g.copy()
    add = h.nodes[-1]
    h.set_outputs([h.nodes[2].outputs[1]])
    h.erase(add)
    assert len(h) == 3 and len(g) == 4
    h.verify()
    g.verify()
    assert g.constants[0].data is h.constants[0].data  # constants are immutable and shared


def test_constants_are_read_only():
    g = small_graph()
    with pytest.raises(ValueError):
        g.constants[0].data[0, 0, 0, 0] = 1.0


def test_shape_errors_name_the_node_and_the_fix():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, (1, 3, 8, 8), 1))
    w = g.add_const("w", np.zeros((4, 5, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"node 'stem'.*3 channels.*weight expects 5"):
        g.add_node(Op.CONV, [x, w], ConvAttrs((1, 1), (0, 0, 0, 0), (1, 1), 1), name="stem")
    assert w.uses == ()  # a failed add leaves no dangling use


def test_reshape_keeps_symbolic_batch():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("N", 4, 2, 2), 1))
    r = g.add_node(Op.RESHAPE, [x], ReshapeAttrs((0, -1)), name="flat")
    assert r.output.type.shape == ("N", 16)
    t = g.add_node(Op.TRANSPOSE, [x], TransposeAttrs((0, 2, 3, 1)), name="nhwc")
    assert t.output.type.channel_axis == 3
    with pytest.raises(ShapeError, match="mixes the symbolic"):
        g.add_node(Op.RESHAPE, [x], ReshapeAttrs((-1, 8)), name="bad")


def test_verify_reports_broken_structure():
    g = small_graph()
    conv, relu, split, add = g.nodes
    relu.output.type = TensorType(DType.F32, ("N", 9, 6, 6), 1)  # a pass forgot to re-type
    with pytest.raises(GraphError, match=r"node 'split'.*sizes \(3, 5\) add up to 8, but axis 1 has 9"):
        g.verify()
    g = small_graph()
    g.nodes[1].outputs[0].type = TensorType(DType.F64, ("N", 8, 6, 6), 1)
    with pytest.raises(GraphError, match=r"node 'relu'.*re-run type inference"):
        g.verify()


def test_axis_roles_come_from_the_consumer():
    g = small_graph()
    conv = g.nodes[0]
    assert axis_roles(conv, 1) == (AxisRole.OUT, AxisRole.IN, AxisRole.SPATIAL, AxisRole.SPATIAL)
    assert axis_roles(conv, 2) == (AxisRole.OUT,)
    assert axis_roles(conv, 0) is None


def test_text_round_trip_with_elided_and_inline_constants():
    g = small_graph()
    text = str(g)
    assert "elided<" in text and "dense<[" in text
    weights = {c.name: c.data for c in g.constants}
    back = gp.parse(text, weights)
    assert str(back) == text
    np.testing.assert_array_equal(back.constants[0].data, g.constants[0].data)
    full = g.to_text(full=True)
    assert str(gp.parse(full)) == text and gp.parse(full).to_text(full=True) == full


def test_text_round_trip_of_hostile_names():
    g = Graph('a "quoted"\nname')
    x = g.add_input('x"; system("rm -rf /")', TensorType(DType.F32, (2, 3), 1))
    n = g.add_node(Op.RELU, [x], name="a/b\\c\n", output_names=["out put"])
    g.set_outputs([n.output])
    text = str(g)
    assert str(gp.parse(text)) == text
    assert gp.parse(text).nodes[0].name == "a/b\\c\n"


def test_parse_without_weights_keeps_digest_and_says_how_to_fix():
    text = str(small_graph())
    g = gp.parse(text)
    assert str(g) == text
    with pytest.raises(GraphError, match="weights="):
        _ = g.constants[0].data
    with pytest.raises(ParseError, match="does not match digest"):
        gp.parse(text, {"conv.weight": np.zeros((8, 4, 3, 3), np.float32)})


@pytest.mark.parametrize(
    "text, message",
    [
        ('graph @"g"(%x: f32[2]) {\n  %y = frobnicate(%x) : f32[2]\n  return %y\n}', "unknown op 'frobnicate'"),
        ('graph @"g"(%x: f32[2]) {\n  %y = relu(%z) : f32[2]\n  return %y\n}', r"%z is used before"),
        ('graph @"g"(%x: f32[2]) {\n  %y = relu(%x) {axis=1} : f32[2]\n  return %y\n}', "takes no attributes"),
        ('graph @"g"(%x: q9[2]) {\n  return %x\n}', "unknown dtype 'q9'"),
        ('graph @"g"(%x: f32[2]) {\n  %y = softmax(%x) {axis=1.5} : f32[2]\n  return %y\n}', "does not fit type int"),
        ('graph @"g"(%x: f32[2]) {\n  %y = relu(%x) : f32[2]\n', r"line 3.*expected"),
    ],
)
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(ParseError, match=message):
        gp.parse(text)
