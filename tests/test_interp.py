"""The reference interpreter against torch (float64) as the oracle, op by op and attribute by attribute.

Every graph here is one node (or a short chain) built directly with Graph.add_input/add_const/add_node.
Float64 runs must agree with torch's float64 kernels to ~1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from graphprune.interp import InterpreterError, run
from graphprune.ir import DType, Graph, GraphpruneError, Op, ShapeError, TensorType
from graphprune.ir import ops as A
from graphprune.ir.opaque import onnx_attrs, torch_attrs

RTOL = 1e-12


@dataclass(frozen=True)
class Const:
    """An operand that becomes a graph constant instead of a graph input."""

    data: np.ndarray


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return rng(seed).standard_normal(shape)


def build(op: Op, attrs: Any, *operands: np.ndarray | Const) -> tuple[Graph, list[np.ndarray]]:
    """A one-node graph: arrays become graph inputs, Const operands become constants."""
    g = Graph("t")
    vals, feeds = [], []
    for i, o in enumerate(operands):
        if isinstance(o, Const):
            vals.append(g.add_const(f"c{i}", o.data))
        else:
            vals.append(g.add_input(f"x{i}", TensorType(DType.from_numpy(o.dtype), o.shape)))
            feeds.append(o)
    node = g.add_node(op, vals, attrs, name=f"the_{op.value}")
    g.set_outputs(node.outputs)
    return g, feeds


def run_op(op: Op, attrs: Any, *operands: np.ndarray | Const, dtype: str | None = "float64") -> list[np.ndarray]:
    g, feeds = build(op, attrs, *operands)
    return g.run(*feeds, dtype=dtype)


def run1(op: Op, attrs: Any, *operands: np.ndarray | Const, dtype: str | None = "float64") -> np.ndarray:
    (out,) = run_op(op, attrs, *operands, dtype=dtype)
    return out


def T(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


def close(got: np.ndarray, want: torch.Tensor | np.ndarray, rtol: float = RTOL, atol: float = 1e-12) -> None:
    want = want.numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# convolution and dense
# ---------------------------------------------------------------------------------------------

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@pytest.mark.parametrize(
    "spatial,kernel,stride,pads,dilation,groups,bias",
    [
        ((9,), (3,), (2,), (1, 2), (1,), 1, True),
        ((11,), (3,), (1,), (0, 0), (3,), 4, False),
        ((8, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
        ((10, 7), (3, 2), (2, 1), (0, 2, 1, 0), (2, 1), 2, True),  # asymmetric pads, stride, dilation
        ((9, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4, True),  # depthwise
        ((5, 6, 7), (3, 2, 3), (1, 2, 2), (1, 0, 1, 1, 1, 0), (1, 1, 2), 2, True),
    ],
)
def test_conv(spatial, kernel, stride, pads, dilation, groups, bias):
    cin, cout = 4, 8
    x = randn(2, cin, *spatial)
    w = randn(cout, cin // groups, *kernel, seed=1)
    b = randn(cout, seed=2)
    operands: list[Any] = [x, Const(w)] + ([Const(b)] if bias else [])
    got = run1(Op.CONV, A.ConvAttrs(stride, pads, dilation, groups), *operands)
    nsp = len(spatial)
    # torch pads symmetrically: pad explicitly (F.pad takes the last axis first)
    torch_pad = [p for i in reversed(range(nsp)) for p in (pads[i], pads[nsp + i])]
    want = _CONV_FN[nsp](F.pad(T(x), torch_pad), T(w), T(b) if bias else None, stride, 0, dilation, groups)
    close(got, want)


def test_conv_float32_stays_float32():
    x = randn(1, 3, 8, 8).astype(np.float32)
    w = randn(4, 3, 3, 3, seed=1).astype(np.float32)
    got = run1(Op.CONV, A.ConvAttrs((1, 1), (1, 1, 1, 1), (1, 1)), x, Const(w), dtype=None)
    assert got.dtype == np.float32
    close(got, F.conv2d(T(x), T(w), padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "spatial,kernel,stride,pads,dilation,output_padding,groups",
    [
        ((7,), (3,), (2,), (1, 1), (1,), (1,), 1),
        ((5, 6), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (1, 0), 2),
        ((4, 5), (2, 3), (3, 2), (0, 1, 0, 1), (2, 1), (2, 1), 4),
        ((3, 4, 3), (3, 2, 2), (2, 1, 2), (1, 0, 1, 1, 0, 1), (1, 1, 1), (1, 0, 1), 2),
    ],
)
def test_conv_transpose(spatial, kernel, stride, pads, dilation, output_padding, groups):
    cin, og = 4, 3
    x = randn(2, cin, *spatial)
    w = randn(cin, og, *kernel, seed=1)
    b = randn(og * groups, seed=2)
    attrs = A.ConvTransposeAttrs(stride, pads, dilation, output_padding, groups)
    got = run1(Op.CONV_TRANSPOSE, attrs, x, Const(w), Const(b))
    nsp = len(spatial)
    # torch pads symmetrically: run unpadded (keeping output_padding) and crop begin/end pads
    full = _CONVT_FN[nsp](T(x), T(w), T(b), stride, 0, output_padding, groups, dilation)
    crop = tuple(slice(pads[i], full.shape[2 + i] - pads[nsp + i]) for i in range(nsp))
    close(got, full[(slice(None), slice(None), *crop)])


def test_conv_transpose_symmetric_matches_torch_padding():
    x, w = randn(1, 2, 5, 5), randn(2, 3, 4, 4, seed=1)
    attrs = A.ConvTransposeAttrs((2, 2), (1, 1, 1, 1), (1, 1), (1, 1))
    close(run1(Op.CONV_TRANSPOSE, attrs, x, Const(w)), F.conv_transpose2d(T(x), T(w), None, 2, 1, 1))


def test_linear_and_matmul():
    x, w, b = randn(2, 3, 5), randn(4, 5, seed=1), randn(4, seed=2)
    close(run1(Op.LINEAR, A.NoAttrs(), x, Const(w), Const(b)), F.linear(T(x), T(w), T(b)))
    close(run1(Op.LINEAR, A.NoAttrs(), x, Const(w)), F.linear(T(x), T(w)))
    a, c = randn(2, 1, 3, 4), randn(5, 4, 6, seed=1)
    close(run1(Op.MATMUL, A.NoAttrs(), a, c), torch.matmul(T(a), T(c)))
    v = randn(4, seed=3)
    close(run1(Op.MATMUL, A.NoAttrs(), a, v), torch.matmul(T(a), T(v)))


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------


def test_batch_norm():
    x = randn(2, 3, 4, 5)
    scale, bias, mean = randn(3, seed=1), randn(3, seed=2), randn(3, seed=3)
    var = rng(4).uniform(0.5, 2, 3)
    got = run1(Op.BATCH_NORM, A.EpsAttrs(1e-3), x, *(Const(p) for p in (scale, bias, mean, var)))
    close(got, F.batch_norm(T(x), T(mean), T(var), T(scale), T(bias), False, 0.0, 1e-3))


@pytest.mark.parametrize("axis,params", [(2, 2), (1, 1), (2, 0)])
def test_layer_norm(axis, params):
    x = randn(2, 3, 4) * 3 + 1
    shape = x.shape[axis:]
    w, b = randn(*shape, seed=1), randn(*shape, seed=2)
    got = run1(Op.LAYER_NORM, A.NormAttrs(axis, 1e-5), x, *[Const(w), Const(b)][:params])
    want = F.layer_norm(T(x), shape, T(w) if params >= 1 else None, T(b) if params == 2 else None, 1e-5)
    close(got, want)


def test_rms_norm():
    x, w = randn(2, 3, 8), randn(8, seed=1)
    close(run1(Op.RMS_NORM, A.NormAttrs(2, 1e-6), x, Const(w)), F.rms_norm(T(x), (8,), T(w), 1e-6))
    close(run1(Op.RMS_NORM, A.NormAttrs(1, 1e-6), x), F.rms_norm(T(x), (3, 8), None, 1e-6))


def test_group_and_instance_norm():
    x, w, b = randn(2, 6, 4, 5) * 2 + 1, randn(6, seed=1), randn(6, seed=2)
    close(run1(Op.GROUP_NORM, A.GroupNormAttrs(3, 1e-5), x, Const(w), Const(b)), F.group_norm(T(x), 3, T(w), T(b)))
    got = run1(Op.INSTANCE_NORM, A.EpsAttrs(1e-5), x, Const(w), Const(b))
    close(got, F.instance_norm(T(x), weight=T(w), bias=T(b), eps=1e-5))


# ---------------------------------------------------------------------------------------------
# activations and unary math
# ---------------------------------------------------------------------------------------------

_X = np.concatenate([randn(40) * 3, [0.0, -0.0, 3.0, -3.0, 50.0, -50.0, 800.0, -800.0]])
_POS = np.abs(_X) + 0.1

_UNARY_CASES: list[tuple[Op, Any, np.ndarray, Any]] = [
    (Op.RELU, A.NoAttrs(), _X, F.relu),
    (Op.LEAKY_RELU, A.LeakyReluAttrs(0.2), _X, lambda t: F.leaky_relu(t, 0.2)),
    (Op.GELU, A.GeluAttrs("none"), _X, lambda t: F.gelu(t)),
    (Op.GELU, A.GeluAttrs("tanh"), _X, lambda t: F.gelu(t, approximate="tanh")),
    (Op.SILU, A.NoAttrs(), _X, F.silu),
    (Op.SIGMOID, A.NoAttrs(), _X, torch.sigmoid),
    (Op.TANH, A.NoAttrs(), _X, torch.tanh),
    (Op.HARD_SWISH, A.NoAttrs(), _X, F.hardswish),
    (Op.HARD_SIGMOID, A.HardSigmoidAttrs(), _X, F.hardsigmoid),
    (Op.HARD_SIGMOID, A.HardSigmoidAttrs(0.2, 0.4), _X, lambda t: torch.clamp(0.2 * t + 0.4, 0, 1)),
    (Op.CLIP, A.ClipAttrs(-1.0, 2.0), _X, lambda t: torch.clamp(t, -1.0, 2.0)),
    (Op.CLIP, A.ClipAttrs(min=0.5), _X, lambda t: torch.clamp(t, min=0.5)),
    (Op.CLIP, A.ClipAttrs(max=0.5), _X, lambda t: torch.clamp(t, max=0.5)),
    (Op.ERF, A.NoAttrs(), _X, torch.erf),
    (Op.EXP, A.NoAttrs(), _X[:40], torch.exp),
    (Op.LOG, A.NoAttrs(), _POS, torch.log),
    (Op.SQRT, A.NoAttrs(), _POS, torch.sqrt),
    (Op.RSQRT, A.NoAttrs(), _POS, torch.rsqrt),
    (Op.NEG, A.NoAttrs(), _X, torch.neg),
    (Op.ABS, A.NoAttrs(), _X, torch.abs),
    (Op.RECIPROCAL, A.NoAttrs(), _POS, torch.reciprocal),
    (Op.SIN, A.NoAttrs(), _X, torch.sin),
    (Op.COS, A.NoAttrs(), _X, torch.cos),
]


@pytest.mark.parametrize("op,attrs,x,fn", _UNARY_CASES, ids=[f"{c[0].value}-{i}" for i, c in enumerate(_UNARY_CASES)])
def test_unary(op, attrs, x, fn):
    close(run1(op, attrs, x.reshape(4, -1)), fn(T(x.reshape(4, -1))), rtol=1e-13, atol=1e-15)


def test_gelu_float32_is_accurate_to_float32_rounding():
    # 1 + erf(x / sqrt 2) cancels for negative x; the interpreter uses erfc and stays exact to f32 ulps
    x = np.concatenate([_X, np.linspace(-9, -2, 15)]).astype(np.float32)
    got = run1(Op.GELU, A.GeluAttrs(), x, dtype=None)
    assert got.dtype == np.float32
    # torch's own float64 gelu cancels too (it returns -0.0 at x=-9), so the reference is erfc-based
    want = [0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)]
    close(got, np.array(want), rtol=1e-6, atol=1e-37)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax(axis):
    x = randn(3, 4, 5) * 30
    close(run1(Op.SOFTMAX, A.AxisAttrs(axis), x), torch.softmax(T(x), axis))


@pytest.mark.parametrize("slope_shape", [(3,), (1,)])
def test_prelu(slope_shape):
    x, s = randn(2, 3, 4, 4), randn(*slope_shape, seed=1)
    close(run1(Op.PRELU, A.NoAttrs(), x, Const(s)), F.prelu(T(x), T(s)))


# ---------------------------------------------------------------------------------------------
# binary elementwise
# ---------------------------------------------------------------------------------------------

_BINARY = {
    Op.ADD: torch.add,
    Op.SUB: torch.sub,
    Op.MUL: torch.mul,
    Op.DIV: torch.div,
    Op.MAXIMUM: torch.maximum,
    Op.MINIMUM: torch.minimum,
    Op.EQUAL: torch.eq,
    Op.LESS: torch.lt,
    Op.GREATER: torch.gt,
}


@pytest.mark.parametrize("op", list(_BINARY), ids=lambda o: o.value)
def test_binary_broadcast(op):
    a = np.round(randn(2, 1, 4), 1)
    b = np.round(randn(3, 1, seed=1), 1)
    b[0, 0] = a[0, 0, 0]  # one equal pair for EQUAL
    got = run1(op, A.NoAttrs(), a, b)
    want = _BINARY[op](T(a), T(b))
    assert got.dtype == (np.bool_ if op in (Op.EQUAL, Op.LESS, Op.GREATER) else np.float64)
    close(got, want)


def test_pow():
    a, b = np.abs(randn(3, 4)) + 0.5, randn(4, seed=1)
    close(run1(Op.POW, A.NoAttrs(), a, b), torch.pow(T(a), T(b)))
    close(run1(Op.POW, A.NoAttrs(), a, Const(np.array(2.0))), T(a) ** 2)


def test_integer_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 6, -6, 0], dtype=np.int64)
    b = np.array([2, 2, -2, -2, 3, 4, 5], dtype=np.int64)
    got = run1(Op.DIV, A.NoAttrs(), a, b)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, torch.div(T(a), T(b), rounding_mode="trunc").numpy())


def test_int_tensor_times_float_scalar_is_float():
    a = np.array([1, 2, 3], dtype=np.int64)
    got = run1(Op.MUL, A.NoAttrs(), a, Const(np.array(0.5, dtype=np.float32)), dtype=None)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [0.5, 1.0, 1.5])


def test_float32_tensor_with_float64_scalar_stays_float32():
    x = randn(5).astype(np.float32)
    got = run1(Op.MUL, A.NoAttrs(), x, Const(np.array(0.1)), dtype=None)
    assert got.dtype == np.float32
    close(got, T(x) * 0.1, rtol=1e-6)


def test_where():
    c = randn(3, 1) > 0
    a, b = randn(3, 4, seed=1), randn(4, seed=2)
    close(run1(Op.WHERE, A.NoAttrs(), c, a, b), torch.where(T(c), T(a), T(b)))


# ---------------------------------------------------------------------------------------------
# data movement
# ---------------------------------------------------------------------------------------------


def test_concat_and_split():
    a, b = randn(2, 3, 4), randn(2, 5, 4, seed=1)
    close(run1(Op.CONCAT, A.AxisAttrs(1), a, b), torch.cat([T(a), T(b)], 1))
    outs = run_op(Op.SPLIT, A.SplitAttrs(1, (1, 3, 4)), np.concatenate([a, b], 1))
    for got, want in zip(outs, torch.split(torch.cat([T(a), T(b)], 1), [1, 3, 4], 1), strict=True):
        close(got, want)


@pytest.mark.parametrize(
    "start,end,step",
    [(1, 5, 1), (0, 7, 3), (6, -1, -1), (5, 1, -2), (6, -1, -3), (3, 3, 1), (2, -1, 1)],
)
def test_slice(start, end, step):
    x = randn(2, 7, 3)
    got = run1(Op.SLICE, A.SliceAttrs(1, start, end, step), x)
    np.testing.assert_array_equal(got, x[:, list(range(start, end, step))])


def test_slice_negative_step_cannot_start_past_the_end():
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F64, (7,)))
    with pytest.raises(ShapeError, match="out of range"):
        g.add_node(Op.SLICE, [x], A.SliceAttrs(0, 7, -1, -1))


def test_gather_negative_indices():
    table = randn(6, 4)
    idx = np.array([[0, -1], [5, -6]], dtype=np.int64)
    got = run1(Op.GATHER, A.GatherAttrs(0), Const(table), idx)
    close(got, T(table)[torch.from_numpy(idx) % 6])
    x = randn(2, 6, 3)
    close(run1(Op.GATHER, A.GatherAttrs(1), x, Const(np.array([-2, 1]))), T(x)[:, [4, 1]])


def test_gather_out_of_range_names_the_node():
    with pytest.raises(InterpreterError, match="the_gather.*IndexError"):
        run1(Op.GATHER, A.GatherAttrs(0), randn(4, 2), Const(np.array([4])))


def test_reshape_with_symbolic_batch():
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, ("N", 2, 3, 4)))
    r = g.add_node(Op.RESHAPE, [x], A.ReshapeAttrs((0, -1)), name="flat")
    assert r.output.type.shape == ("N", 24)
    r2 = g.add_node(Op.RESHAPE, [r.output], A.ReshapeAttrs((0, 4, -1)), name="fold")
    w = g.add_const("w", randn(5, 6).astype(np.float32))
    lin = g.add_node(Op.LINEAR, [r2.output, w], name="fc")
    g.set_outputs([r.output, lin.output])
    for n in (3, 1):
        xs = randn(n, 2, 3, 4).astype(np.float32)
        flat, y = g.run(xs)
        np.testing.assert_array_equal(flat, xs.reshape(n, 24))
        close(y, T(xs).reshape(n, 4, 6) @ T(w.data).T, rtol=1e-5, atol=1e-6)


def test_transpose_squeeze_unsqueeze_expand():
    x = randn(2, 1, 3)
    close(run1(Op.TRANSPOSE, A.TransposeAttrs((2, 0, 1)), x), T(x).permute(2, 0, 1))
    close(run1(Op.SQUEEZE, A.AxesAttrs((1,)), x), T(x).squeeze(1))
    close(run1(Op.UNSQUEEZE, A.AxesAttrs((0, 3)), x), T(x).unsqueeze(0).unsqueeze(3))
    got = run1(Op.EXPAND, A.ExpandAttrs((4, -1, 5, -1)), x)
    close(got, T(x).expand(4, -1, 5, -1))
    assert got.flags.writeable


@pytest.mark.parametrize(
    "mode,pads,torch_mode",
    [
        ("constant", (0, 1, 2, 0, 2, 1), "constant"),
        ("reflect", (0, 1, 2, 0, 2, 1), "reflect"),
        ("edge", (0, 1, 2, 0, 2, 1), "replicate"),
        ("constant", (0, -1, 2, 0, 1, -2), "constant"),  # negative pads crop
    ],
)
def test_pad(mode, pads, torch_mode):
    x = randn(2, 4, 5)
    got = run1(Op.PAD, A.PadAttrs(pads, mode, 1.5), x)
    # F.pad lists the last axis first; axis 0 is never padded here (torch's reflect/replicate cannot)
    torch_pads = [pads[2], pads[5], pads[1], pads[4]]
    kwargs = {"value": 1.5} if torch_mode == "constant" else {}
    close(got, F.pad(T(x), torch_pads, mode=torch_mode, **kwargs))


# resize: (in spatial, sizes, scales, mode, coordinate_transformation, nearest_mode, torch kwargs)
_RESIZE_CASES = [
    ((4, 5), (8, 10), (2.0, 2.0), "nearest", "asymmetric", "floor", {"scale_factor": 2, "mode": "nearest"}),
    ((4, 5), (6, 7), (1.5, 1.5), "nearest", "asymmetric", "floor", {"scale_factor": 1.5, "mode": "nearest"}),
    ((5, 4), (7, 9), (), "nearest", "asymmetric", "floor", {"size": (7, 9), "mode": "nearest"}),
    ((5, 4), (7, 9), (), "nearest", "half_pixel", "round_prefer_ceil", {"size": (7, 9), "mode": "nearest-exact"}),
    (
        (4, 5),
        (8, 10),
        (2.0, 2.0),
        "linear",
        "half_pixel",
        "floor",
        {"scale_factor": 2, "mode": "bilinear", "align_corners": False},
    ),
    (
        (4, 5),
        (8, 10),
        (2.0, 2.0),
        "linear",
        "pytorch_half_pixel",
        "floor",
        {"scale_factor": 2, "mode": "bilinear", "align_corners": False},
    ),
    (
        (4, 5),
        (6, 7),
        (1.5, 1.5),
        "linear",
        "half_pixel",
        "floor",
        {"scale_factor": 1.5, "mode": "bilinear", "align_corners": False},
    ),
    ((5, 4), (7, 9), (), "linear", "half_pixel", "floor", {"size": (7, 9), "mode": "bilinear", "align_corners": False}),
    ((8, 9), (5, 4), (), "linear", "half_pixel", "floor", {"size": (5, 4), "mode": "bilinear", "align_corners": False}),
    (
        (4, 5),
        (8, 10),
        (2.0, 2.0),
        "linear",
        "align_corners",
        "floor",
        {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
    ),
    (
        (5, 4),
        (7, 9),
        (),
        "linear",
        "align_corners",
        "floor",
        {"size": (7, 9), "mode": "bilinear", "align_corners": True},
    ),
    (
        (3, 4, 5),
        (6, 5, 7),
        (),
        "linear",
        "half_pixel",
        "floor",
        {"size": (6, 5, 7), "mode": "trilinear", "align_corners": False},
    ),
    ((6,), (13,), (), "linear", "align_corners", "floor", {"size": (13,), "mode": "linear", "align_corners": True}),
]


@pytest.mark.parametrize("spatial,sizes,scales,mode,coord,nearest,kwargs", _RESIZE_CASES)
def test_resize_against_torch(spatial, sizes, scales, mode, coord, nearest, kwargs):
    x = randn(2, 3, *spatial)
    got = run1(Op.RESIZE, A.ResizeAttrs(sizes, scales, mode, coord, nearest), x)
    close(got, F.interpolate(T(x), **kwargs))


@pytest.mark.parametrize("nearest", ["floor", "ceil", "round_prefer_floor", "round_prefer_ceil"])
@pytest.mark.parametrize(
    "coord,spatial,scale",
    [
        ("asymmetric", (3, 4), 2.0),
        ("half_pixel", (3, 4), 2.0),
        ("align_corners", (3, 5), 2.0),
        ("asymmetric", (6, 8), 0.5),
        ("pytorch_half_pixel", (4, 4), 1.5),
    ],
)
def test_resize_nearest_modes_against_onnxruntime(nearest, coord, spatial, scale):
    x = randn(1, 2, *spatial).astype(np.float32)
    sizes = tuple(int(math.floor(s * scale)) for s in spatial)
    got = run1(Op.RESIZE, A.ResizeAttrs(sizes, (scale, scale), "nearest", coord, nearest), x, dtype=None)
    np.testing.assert_array_equal(got, _ort_resize(x, (scale, scale), "nearest", coord, nearest))


def test_resize_linear_asymmetric_against_onnxruntime():
    x = randn(1, 2, 4, 5).astype(np.float32)
    got = run1(Op.RESIZE, A.ResizeAttrs((10, 12), (2.5, 2.5), "linear", "asymmetric"), x, dtype=None)
    close(got, _ort_resize(x, (2.5, 2.5), "linear", "asymmetric", "floor"), rtol=1e-5, atol=1e-6)


def _ort_resize(x: np.ndarray, scales: Sequence[float], mode: str, coord: str, nearest: str) -> np.ndarray:
    node = helper.make_node(
        "Resize", ["x", "", "scales"], ["y"], mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest
    )
    graph = helper.make_graph(
        [node],
        "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, *scales])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_pixel_shuffle_and_unshuffle():
    x = randn(2, 12, 3, 4)
    close(run1(Op.PIXEL_SHUFFLE, A.FactorAttrs(2), x), F.pixel_shuffle(T(x), 2))
    y = randn(2, 3, 6, 4)
    close(run1(Op.PIXEL_UNSHUFFLE, A.FactorAttrs(2), y), F.pixel_unshuffle(T(y), 2))


def test_cast():
    x = np.array([-2.7, -0.5, 0.0, 0.5, 2.7])
    got = run1(Op.CAST, A.CastAttrs(DType.I64), x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, T(x).to(torch.int64).numpy())
    assert run1(Op.CAST, A.CastAttrs(DType.BOOL), x).tolist() == [True, True, False, True, True]
    # in float64 mode a cast to a float type still computes (and returns) float64
    assert run1(Op.CAST, A.CastAttrs(DType.F32), x).dtype == np.float64
    assert run1(Op.CAST, A.CastAttrs(DType.F16), x, dtype=None).dtype == np.float16


# ---------------------------------------------------------------------------------------------
# pooling and reduction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spatial,kernel,stride,pad,dilation,ceil",
    [
        ((9, 8), (3, 3), (2, 2), (1, 1), (1, 1), False),
        ((9, 8), (3, 3), (2, 2), (1, 1), (1, 1), True),
        ((10, 7), (3, 2), (2, 2), (1, 0), (2, 1), True),
        ((11,), (4,), (3,), (2,), (1,), True),
        ((5, 6, 7), (2, 3, 2), (2, 2, 2), (1, 1, 0), (1, 1, 2), True),
    ],
)
def test_max_pool(spatial, kernel, stride, pad, dilation, ceil):
    x = randn(2, 3, *spatial)
    attrs = A.PoolAttrs(kernel, stride, (*pad, *pad), dilation, ceil)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(spatial)]
    close(run1(Op.MAX_POOL, attrs, x), fn(T(x), kernel, stride, pad, dilation, ceil))


@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize(
    "spatial,kernel,stride,pad,ceil",
    [
        ((7, 7), (3, 3), (2, 2), (1, 1), False),
        ((8, 7), (3, 3), (2, 2), (1, 1), True),  # the last window overhangs the padded input
        ((6, 9), (2, 4), (2, 3), (1, 2), True),
        ((10,), (3,), (2,), (1,), True),
        ((5, 6, 4), (3, 2, 3), (2, 2, 2), (1, 1, 1), True),
    ],
)
def test_avg_pool(spatial, kernel, stride, pad, ceil, include_pad):
    x = randn(2, 3, *spatial)
    attrs = A.PoolAttrs(kernel, stride, (*pad, *pad), (1,) * len(kernel), ceil, include_pad)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(spatial)]
    close(run1(Op.AVG_POOL, attrs, x), fn(T(x), kernel, stride, pad, ceil, include_pad))


@pytest.mark.parametrize(
    "spatial,out", [((7, 10), (3, 4)), ((5, 5), (1, 1)), ((4, 6), (8, 4)), ((10,), (3,)), ((5, 7, 6), (2, 3, 4))]
)
def test_adaptive_avg_pool(spatial, out):
    x = randn(2, 3, *spatial)
    fn = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(spatial)]
    close(run1(Op.ADAPTIVE_AVG_POOL, A.AdaptivePoolAttrs(out), x), fn(T(x), out))


@pytest.mark.parametrize("keepdims", [True, False])
def test_reductions(keepdims):
    x = randn(2, 3, 4, 5)
    axes = (1, 3)
    close(run1(Op.REDUCE_MEAN, A.ReduceAttrs(axes, keepdims), x), T(x).mean(axes, keepdim=keepdims))
    close(run1(Op.REDUCE_SUM, A.ReduceAttrs(axes, keepdims), x), T(x).sum(axes, keepdim=keepdims))
    close(run1(Op.REDUCE_MAX, A.ReduceAttrs(axes, keepdims), x), T(x).amax(axes, keepdim=keepdims))


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "heads,kv_heads,L,S,causal,mask,scale",
    [
        (4, 4, 5, 5, False, None, None),
        (4, 4, 3, 6, True, None, None),  # causal with L != S: top-left aligned
        (4, 4, 6, 3, True, None, 0.3),
        (4, 2, 5, 5, True, None, None),  # grouped-query
        (6, 2, 5, 7, False, "bool", None),
        (4, 4, 5, 7, False, "float", 0.5),
    ],
)
def test_attention(heads, kv_heads, L, S, causal, mask, scale):
    q = randn(2, heads, L, 8)
    k, v = randn(2, kv_heads, S, 8, seed=1), randn(2, kv_heads, S, 6, seed=2)
    operands: list[Any] = [q, k, v]
    m = None
    if mask == "bool":
        m = rng(3).random((L, S)) > 0.3
        m[:, 0] = True  # no fully masked rows
        operands.append(m)
    elif mask == "float":
        m = randn(2, 1, L, S, seed=3)
        operands.append(m)
    attrs = A.AttentionAttrs(scale, causal, kv_heads != heads)
    got = run1(Op.ATTENTION, attrs, *operands)
    want = F.scaled_dot_product_attention(
        T(q),
        T(k),
        T(v),
        T(m) if m is not None else None,
        is_causal=causal,
        scale=scale,
        enable_gqa=kv_heads != heads,
    )
    close(got, want)


# ---------------------------------------------------------------------------------------------
# opaque ops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [None, "float64"])
def test_opaque_torch(dtype):
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, (2, 5)))
    cs = g.add_node(
        Op.OPAQUE,
        [x],
        torch_attrs("aten.cumsum.default", [{"$input": 0}, 1], {}),
        types=[TensorType(DType.F32, (2, 5), 1)],
        name="cumsum",
    )
    s = g.add_node(
        Op.OPAQUE,
        [cs.output],
        torch_attrs("aten.sum.dim_IntList", [{"$input": 0}, [1], True], {"dtype": {"$dtype": "float32"}}),
        types=[TensorType(DType.F32, (2, 1))],
        name="sum",
    )
    g.set_outputs([cs.output, s.output])
    xs = randn(2, 5).astype(np.float32)
    got_cs, got_s = g.run(xs, dtype=dtype)
    assert got_cs.dtype == (np.float64 if dtype else np.float32)
    close(got_cs, np.cumsum(xs.astype(np.float64), 1), rtol=1e-5, atol=1e-5)
    close(got_s, np.cumsum(xs.astype(np.float64), 1).sum(1, keepdims=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [None, "float64"])
def test_opaque_onnx(dtype):
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, ("N", 4)))
    y = g.add_input("y", TensorType(DType.F32, (4, 3)))
    axis = g.add_const("axis", np.array(1, dtype=np.int64))
    cumsum = helper.make_node("CumSum", ["a", "b"], ["c"], reverse=1, name="cs")
    c = g.add_node(
        Op.OPAQUE,
        [x, axis],
        onnx_attrs("CumSum", cumsum.SerializeToString(), {"": 17}),
        types=[TensorType(DType.F32, ("N", 4), 1)],
        name="cumsum",
    )
    einsum = helper.make_node("Einsum", ["p", "q"], ["r"], equation="ni,ij->nj")
    e = g.add_node(
        Op.OPAQUE,
        [c.output, y],
        onnx_attrs("Einsum", einsum.SerializeToString(), {"": 17}),
        types=[TensorType(DType.F32, ("N", 3), 1)],
        name="einsum",
    )
    g.set_outputs([c.output, e.output])
    for n in (2, 3):  # a new batch size builds (and caches) a new session
        xs, ys = randn(n, 4).astype(np.float32), randn(4, 3, seed=1).astype(np.float32)
        got_c, got_e = g.run(xs, ys, dtype=dtype)
        want_c = np.flip(np.cumsum(np.flip(xs.astype(np.float64), 1), 1), 1)
        assert got_c.dtype == (np.float64 if dtype else np.float32)
        close(got_c, want_c, rtol=1e-5, atol=1e-5)
        close(got_e, want_c @ ys, rtol=1e-5, atol=1e-5)


def test_opaque_unknown_torch_op_names_the_node():
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, (2,)))
    n = g.add_node(
        Op.OPAQUE, [x], torch_attrs("aten.no_such_op.default", [{"$input": 0}], {}), types=[x.type], name="mystery"
    )
    g.set_outputs(n.outputs)
    with pytest.raises(GraphpruneError, match="mystery.*aten.no_such_op"):
        g.run(np.zeros(2, np.float32))


# ---------------------------------------------------------------------------------------------
# the driver: validation, dtypes, outputs
# ---------------------------------------------------------------------------------------------


def _add_graph(shape: tuple[Any, ...], dtype: DType = DType.F32) -> Graph:
    g = Graph("g")
    x = g.add_input("x", TensorType(dtype, shape))
    y = g.add_input("y", TensorType(dtype, shape))
    g.set_outputs(g.add_node(Op.ADD, [x, y]).outputs)
    return g


def test_input_validation():
    g = _add_graph(("N", 3))
    ok = np.zeros((2, 3), np.float32)
    with pytest.raises(ShapeError, match="takes 2 inputs.*got 1"):
        g.run(ok)
    with pytest.raises(ShapeError, match=r"%y expects shape \('N', 3\) but got \(2, 3, 1\)"):
        g.run(ok, np.zeros((2, 3, 1), np.float32))
    with pytest.raises(ShapeError, match=r"%x expects shape \('N', 3\) but got \(2, 4\)"):
        g.run(np.zeros((2, 4), np.float32), ok)
    with pytest.raises(ShapeError, match=r"%y expects shape .* got \(5, 3\).*N=2"):
        g.run(ok, np.zeros((5, 3), np.float32))
    with pytest.raises(ShapeError, match="%x expects f32.*int64.*floating"):
        g.run(np.zeros((2, 3), np.int64), ok)
    # same kind, other width: accepted and cast to the declared dtype
    out = g.run(np.ones((4, 3)), np.ones((4, 3), np.float32))[0]
    assert out.dtype == np.float32 and out.shape == (4, 3)


def test_dtype_argument():
    g = _add_graph((2,))
    a = np.array([1, 2], np.float32)
    assert g.run(a, a, dtype="float64")[0].dtype == np.float64
    assert g.run(a, a, dtype=np.float64)[0].dtype == np.float64
    with pytest.raises(InterpreterError, match="floating"):
        g.run(a, a, dtype="int32")


def test_float16_graph_computes_in_float32_and_rounds():
    g = _add_graph((3,), DType.F16)
    a = np.array([1, 2, 3], np.float16)
    out = g.run(a, a)[0]
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, [2, 4, 6])


def test_outputs_are_writable_copies_and_constants_and_inputs_pass_through():
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, (2,)))
    c = g.add_const("c", np.array([1.0, 2.0], np.float32))
    r = g.add_node(Op.RESHAPE, [x], A.ReshapeAttrs((2, 1)))
    g.set_outputs([x, c, r.output, c])
    xs = np.array([5.0, 6.0], np.float32)
    outs = g.run(xs)
    for o in outs:
        assert o.flags.writeable
    outs[0][1] = 0
    outs[2][0, 0] = 0
    outs[3][0] = 0
    np.testing.assert_array_equal(xs, [5, 6])  # the caller's array is never aliased
    np.testing.assert_array_equal(outs[1], [1, 2])


def test_stale_types_are_reported():
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.F32, (2, 3)))
    n = g.add_node(Op.RELU, [x], types=[TensorType(DType.F32, (3, 2))], name="stale")
    g.set_outputs(n.outputs)
    with pytest.raises(ShapeError, match="stale.*retype"):
        g.run(np.zeros((2, 3), np.float32))


def test_chain_frees_intermediates_and_matches_torch():
    # a small conv net with a residual: exercises use counting (a value read by two consumers)
    g = Graph("net")
    x = g.add_input("x", TensorType(DType.F32, ("N", 3, 16, 16)))
    w1 = g.add_const("w1", randn(8, 3, 3, 3).astype(np.float32))
    w2 = g.add_const("w2", randn(8, 8, 3, 3, seed=1).astype(np.float32))
    conv = A.ConvAttrs((1, 1), (1, 1, 1, 1), (1, 1))
    a = g.add_node(Op.RELU, g.add_node(Op.CONV, [x, w1], conv).outputs).output
    b = g.add_node(Op.CONV, [a, w2], conv).output
    s = g.add_node(Op.ADD, [a, b]).output
    p = g.add_node(Op.ADAPTIVE_AVG_POOL, [s], A.AdaptivePoolAttrs((1, 1))).output
    g.set_outputs([p])
    xs = randn(3, 3, 16, 16).astype(np.float32)
    (got,) = g.run(xs, dtype="float64")
    ta = F.relu(F.conv2d(T(xs).double(), T(w1.data).double(), padding=1))
    want = F.adaptive_avg_pool2d(ta + F.conv2d(ta, T(w2.data).double(), padding=1), 1)
    close(got, want)
    assert run(g, [xs])[0].dtype == np.float32


def test_every_op_is_covered_by_a_test():
    with open(__file__) as f:
        source = f.read()
    missing = [op for op in Op if f"Op.{op.name}" not in source]
    assert not missing, f"untested ops: {missing}"
