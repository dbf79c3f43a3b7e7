"""ONNX frontend (graphprune.frontends.onnx) and backend (graphprune.backends.onnx).

Every case builds a small ONNX model by hand, loads it, and checks:
- graphprune's interpreter on the loaded graph equals onnxruntime on the original file;
- the graph written back with to_onnx passes the full checker and onnxruntime equals the interpreter;
- import -> export -> import gives a structurally equal graph (same ops, attrs and constant data).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphprune.backends.onnx import save, to_onnx
from helpers import structurally_equal
from onnx import TensorProto, helper, numpy_helper

from graphprune.frontends.onnx import load
from graphprune.ir import opaque
from graphprune.ir.errors import ExportError, ModelLoadError
from graphprune.ir.graph import Graph, Value
from graphprune.ir.ops import (
    AdaptivePoolAttrs,
    AttentionAttrs,
    ClipAttrs,
    ExpandAttrs,
    FactorAttrs,
    GeluAttrs,
    GroupNormAttrs,
    NormAttrs,
    Op,
    ReduceAttrs,
    ReshapeAttrs,
    SliceAttrs,
)
from graphprune.ir.types import DType, TensorType

F32 = TensorProto.FLOAT
I64 = TensorProto.INT64
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, tuple[int, Sequence[int | str]]],
    outputs: Sequence[str],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    domains: dict[str, int] | None = None,
    out_types: dict[str, tuple[int, Sequence[int | str]]] | None = None,
) -> onnx.ModelProto:
    """A model whose graph outputs get their types from ONNX shape inference (or `out_types`)."""
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(n, dt, list(s)) for n, (dt, s) in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=opsets, ir_version=max(8, 10 if opset >= 21 else 8))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for o in model.graph.output:
        if out_types and o.name in out_types:
            dt, shape = out_types[o.name]
            o.type.CopyFrom(helper.make_tensor_type_proto(dt, list(shape)))
        elif o.name in types and types[o.name].tensor_type.HasField("shape"):
            o.type.CopyFrom(types[o.name])
        else:
            raise AssertionError(f"shape inference gives no type for output {o.name!r}; pass out_types")
    return model


def ort_run(model: onnx.ModelProto | str | Path, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), feeds, strict=True)})


def assert_close(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], what: str = "") -> None:
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected, strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"{what}: shape {a.shape} vs {e.shape}"
        if e.dtype == bool or e.dtype.kind in "iu":
            np.testing.assert_array_equal(a, e, err_msg=what)
            continue
        scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
        err = float(np.abs(a.astype(np.float64) - e).max()) if e.size else 0.0
        assert err <= 1e-4 * scale, f"{what}: max abs err {err:.3e} (scale {scale:.3e})"


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def load_file(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> tuple[Graph, Path]:
    path = tmp_path / name
    onnx.save(model, path)
    return load(path), path


def check_export(g: Graph, feeds: Sequence[np.ndarray], opset: int = 17) -> onnx.ModelProto:
    """IR -> to_onnx passes the full checker and runs in onnxruntime like the interpreter."""
    m = to_onnx(g, opset=opset)
    onnx.checker.check_model(m, full_check=True)
    assert_close(ort_run(m, feeds), g.run(*feeds), f"export of {g.name} at opset {opset}")
    return m


# ---------------------------------------------------------------------------------------------
# the op-family table: (model, feeds, expected IR ops)
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    model: onnx.ModelProto
    feeds: list[np.ndarray]
    ops: list[str] | None = None  # the IR ops expected (in order), None: not checked
    roundtrip: bool = True  # import -> export -> import is structurally equal
    extra: Callable[[Graph], None] | None = field(default=None)


def _single(
    op: str,
    x_shape: Sequence[int],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    extra_inputs: Sequence[str] = (),
    y_shape: Sequence[int] | None = None,
    **attrs: object,
) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", *extra_inputs], ["y"], **attrs)
    out_types = {"y": (F32, y_shape)} if y_shape is not None else None
    return make_model([node], {"x": (F32, x_shape)}, ["y"], inits, opset, out_types=out_types)


def _conv_cases() -> dict[str, Case]:
    w = randn(6, 3, 3, 3)
    b = randn(6)
    cases: dict[str, Case] = {}
    for mode in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        m = _single("Conv", (1, 3, 9, 8), {"w": w, "b": b}, extra_inputs=["w", "b"], auto_pad=mode, strides=[2, 2])
        cases[f"conv_{mode.lower()}"] = Case(m, [randn(1, 3, 9, 8)], ["conv"])
    m = _single("Conv", (2, 3, 9, 8), {"w": w}, extra_inputs=["w"], pads=[1, 0, 2, 1], dilations=[2, 1])
    cases["conv_pads_dilation"] = Case(m, [randn(2, 3, 9, 8)], ["conv"])
    m = _single("Conv", (1, 4, 7, 7), {"w": randn(8, 2, 3, 3)}, extra_inputs=["w"], group=2, auto_pad="SAME_UPPER")
    cases["conv_grouped"] = Case(m, [randn(1, 4, 7, 7)], ["conv"])
    m = _single("Conv", (1, 3, 11), {"w": randn(4, 3, 3)}, extra_inputs=["w"], strides=[2], pads=[1, 1])
    cases["conv1d"] = Case(m, [randn(1, 3, 11)], ["conv"])
    m = _single("Conv", (1, 2, 5, 6, 4), {"w": randn(3, 2, 3, 3, 3)}, extra_inputs=["w"], auto_pad="SAME_LOWER")
    cases["conv3d"] = Case(m, [randn(1, 2, 5, 6, 4)], ["conv"])
    wt = randn(3, 4, 3, 3)
    m = _single(
        "ConvTranspose",
        (1, 3, 5, 5),
        {"w": wt},
        extra_inputs=["w"],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        output_padding=[1, 0],
    )
    cases["conv_transpose_output_padding"] = Case(m, [randn(1, 3, 5, 5)], ["conv_transpose"])
    m = _single("ConvTranspose", (1, 3, 5, 5), {"w": wt}, extra_inputs=["w"], strides=[2, 2], output_shape=[10, 11])
    cases["conv_transpose_output_shape"] = Case(m, [randn(1, 3, 5, 5)], ["conv_transpose"])
    m = _single(
        "ConvTranspose",
        (1, 3, 5, 5),
        {"w": wt, "b": randn(4)},
        extra_inputs=["w", "b"],
        strides=[2, 2],
        auto_pad="SAME_UPPER",
    )
    cases["conv_transpose_same_upper"] = Case(m, [randn(1, 3, 5, 5)], ["conv_transpose"])
    m = _single("ConvTranspose", (1, 4, 5, 5), {"w": randn(4, 2, 3, 3)}, extra_inputs=["w"], group=2)
    cases["conv_transpose_grouped"] = Case(m, [randn(1, 4, 5, 5)], ["conv_transpose"])
    return cases


def _gemm_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    x = randn(3, 5)
    m = _single("Gemm", (3, 5), {"w": randn(4, 5), "b": randn(4)}, extra_inputs=["w", "b"], transB=1)
    cases["gemm_transb"] = Case(m, [x], ["linear"])
    m = _single("Gemm", (3, 5), {"w": randn(5, 4), "b": randn(4)}, extra_inputs=["w", "b"])
    cases["gemm_no_transb"] = Case(m, [x], ["linear"])
    m = _single("Gemm", (3, 5), {"w": randn(5, 4), "c": randn(1, 4)}, extra_inputs=["w", "c"], alpha=0.5, beta=2.0)
    cases["gemm_alpha_beta"] = Case(m, [x], ["linear"], roundtrip=True)
    m = _single("Gemm", (3, 5), {"w": randn(4, 5), "c": randn(3, 4)}, extra_inputs=["w", "c"], transB=1)
    cases["gemm_full_c"] = Case(m, [x], ["linear", "add"])
    m = _single("Gemm", (5, 3), {"w": randn(5, 4), "c": randn(4)}, extra_inputs=["w", "c"], transA=1, alpha=2.0)
    # the general form; re-import sees MatMul with a constant rhs, which is a LINEAR
    cases["gemm_trans_a"] = Case(m, [randn(5, 3)], ["transpose", "matmul", "mul", "add"], roundtrip=False)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, beta=0.5)
    m = make_model([node], {"x": (F32, [3, 5]), "w": (F32, [4, 5])}, ["y"])
    cases["gemm_dynamic_b"] = Case(m, [x, randn(4, 5)], ["transpose", "matmul"], roundtrip=False)
    m = _single("MatMul", (2, 3, 5), {"w": randn(5, 4)}, extra_inputs=["w"])
    cases["matmul_const_rhs"] = Case(m, [randn(2, 3, 5)], ["linear"])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["bias", "h"], ["y"])]
    m = make_model(nodes, {"x": (F32, [2, 3, 5])}, ["y"], {"w": randn(5, 4), "bias": randn(1, 1, 4)})
    cases["matmul_add_bias_fused"] = Case(m, [randn(2, 3, 5)], ["linear"])
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    m = make_model([node], {"a": (F32, [2, 3, 5]), "b": (F32, [2, 5, 4])}, ["y"])
    cases["matmul_dynamic"] = Case(m, [randn(2, 3, 5), randn(2, 5, 4)], ["matmul"])
    return cases


def _norm_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    c = 6
    bn = {"s": randn(c), "b": randn(c), "m": randn(c), "v": np.abs(randn(c)) + 0.5}
    m = _single("BatchNormalization", (2, c, 4, 4), bn, extra_inputs=["s", "b", "m", "v"], epsilon=1e-3)
    cases["batch_norm"] = Case(m, [randn(2, c, 4, 4)], ["batch_norm"])
    m = _single("LayerNormalization", (2, 5, 8), {"s": randn(8), "b": randn(8)}, extra_inputs=["s", "b"])
    cases["layer_norm"] = Case(m, [randn(2, 5, 8)], ["layer_norm"])
    m = _single("LayerNormalization", (2, 3, 4, 5), {"s": randn(4, 5)}, extra_inputs=["s"], axis=2, epsilon=1e-3)
    cases["layer_norm_axis2"] = Case(m, [randn(2, 3, 4, 5)], ["layer_norm"])
    m = _single("InstanceNormalization", (2, c, 5, 5), {"s": randn(c), "b": randn(c)}, extra_inputs=["s", "b"])
    cases["instance_norm"] = Case(m, [randn(2, c, 5, 5)], ["instance_norm"])
    m = _single(
        "GroupNormalization",
        (2, c, 4, 4),
        {"s": randn(c), "b": randn(c)},
        opset=21,
        extra_inputs=["s", "b"],
        num_groups=3,
        y_shape=(2, c, 4, 4),
    )
    cases["group_norm_21"] = Case(m, [randn(2, c, 4, 4)], ["group_norm"])
    m = _single("RMSNormalization", (2, 5, 8), {"s": randn(8)}, opset=23, extra_inputs=["s"], epsilon=1e-6)
    cases["rms_norm_23"] = Case(m, [randn(2, 5, 8)], ["rms_norm"])
    return cases


def _activation_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    shape = (2, 3, 4, 5)
    for op in ("Relu", "Sigmoid", "Tanh", "HardSwish", "Erf", "Exp", "Neg", "Abs", "Sin", "Cos"):
        cases[op.lower()] = Case(_single(op, shape), [randn(*shape)], [op.lower().replace("hardswish", "hard_swish")])
    positive = np.abs(randn(*shape)) + 0.1
    for op in ("Log", "Sqrt", "Reciprocal"):
        cases[op.lower()] = Case(_single(op, shape), [positive], [op.lower()])
    cases["leaky_relu"] = Case(_single("LeakyRelu", shape, alpha=0.2), [randn(*shape)], ["leaky_relu"])
    cases["hard_sigmoid"] = Case(_single("HardSigmoid", shape, alpha=0.3, beta=0.4), [randn(*shape)], ["hard_sigmoid"])
    cases["softmax"] = Case(_single("Softmax", shape, axis=1), [randn(*shape)], ["softmax"])
    m = _single("Clip", shape, {"lo": np.float32(-0.5), "hi": np.float32(0.7)}, extra_inputs=["lo", "hi"])
    cases["clip"] = Case(m, [randn(*shape)], ["clip"])
    m = _single("Clip", shape, {"hi": np.float32(6.0)}, extra_inputs=["", "hi"])
    cases["clip_max_only"] = Case(m, [randn(*shape) * 10], ["clip"])
    m = _single("PRelu", shape, {"s": randn(3, 1, 1)}, extra_inputs=["s"])
    cases["prelu_channel"] = Case(m, [randn(*shape)], ["prelu"])
    m = _single("PRelu", shape, {"s": np.array([0.25], np.float32)}, extra_inputs=["s"])
    cases["prelu_scalar"] = Case(m, [randn(*shape)], ["prelu"])
    m = _single("PRelu", shape, {"s": randn(5)}, extra_inputs=["s"])
    # a slope along the last axis is not per-channel: where(x < 0, x * s, x)
    cases["prelu_last_axis"] = Case(m, [randn(*shape)], ["less", "mul", "where"])
    for approx in ("none", "tanh"):
        m = _single("Gelu", shape, opset=20, approximate=approx)
        cases[f"gelu_{approx}"] = Case(m, [randn(*shape)], ["gelu"])
    m = _single("Pow", shape, {"e": np.float32(2.0)}, extra_inputs=["e"])
    cases["pow"] = Case(m, [randn(*shape)], ["pow"])
    return cases


def _binary_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
        node = helper.make_node(op, ["a", "b"], ["y"])
        m = make_model([node], {"a": (F32, [2, 3, 4]), "b": (F32, [3, 1])}, ["y"])
        name = {"Max": "maximum", "Min": "minimum"}.get(op, op.lower())
        cases[f"binary_{op.lower()}"] = Case(m, [randn(2, 3, 4), np.abs(randn(3, 1)) + 0.5], [name])
    nodes = [
        helper.make_node("Greater", ["a", "b"], ["g"]),
        helper.make_node("Less", ["a", "z"], ["l"]),
        helper.make_node("Equal", ["g", "l"], ["e"]),
        helper.make_node("Where", ["e", "a", "b"], ["y"]),
    ]
    m = make_model(nodes, {"a": (F32, [2, 3]), "b": (F32, [2, 3])}, ["y"], {"z": np.float32(0.0)})
    cases["compare_where"] = Case(m, [randn(2, 3), randn(2, 3)], ["greater", "less", "equal", "where"])
    node = helper.make_node("Sum", ["a", "b", "a"], ["y"])
    m = make_model([node], {"a": (F32, [2, 3]), "b": (F32, [2, 3])}, ["y"])
    cases["sum_variadic"] = Case(m, [randn(2, 3), randn(2, 3)], ["add", "add"])
    return cases


def _data_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    i64 = np.int64
    node = helper.make_node("Concat", ["a", "b"], ["y"], axis=-1)
    m = make_model([node], {"a": (F32, [2, 3]), "b": (F32, [2, 4])}, ["y"])
    cases["concat"] = Case(m, [randn(2, 3), randn(2, 4)], ["concat"])
    node = helper.make_node("Split", ["x", "s"], ["y0", "y1", "y2"], axis=1)
    m = make_model([node], {"x": (F32, [2, 9])}, ["y0", "y1", "y2"], {"s": np.array([2, 3, 4], i64)})
    cases["split_input"] = Case(m, [randn(2, 9)], ["split"])
    node = helper.make_node("Split", ["x"], ["y0", "y1"], axis=0)
    m = make_model([node], {"x": (F32, [6, 2])}, ["y0", "y1"])
    cases["split_even"] = Case(m, [randn(6, 2)], ["split"])
    node = helper.make_node("Split", ["x"], ["y0", "y1", "y2"], axis=1, num_outputs=3)
    m = make_model([node], {"x": (F32, [2, 7])}, ["y0", "y1", "y2"], opset=18)
    cases["split_num_outputs"] = Case(m, [randn(2, 7)], ["split"])
    inits = {
        "st": np.array([1, -1], i64),
        "en": np.array([-1, -100], i64),
        "ax": np.array([1, 2], i64),
        "sp": np.array([2, -2], i64),
    }
    m = _single("Slice", (2, 7, 6), inits, extra_inputs=["st", "en", "ax", "sp"])
    cases["slice_steps"] = Case(m, [randn(2, 7, 6)], ["slice", "slice"])
    inits = {"st": np.array([0], i64), "en": np.array([2**62], i64)}
    m = _single("Slice", (2, 7), inits, extra_inputs=["st", "en"])
    cases["slice_noop"] = Case(m, [randn(2, 7)], [], roundtrip=False)
    m = _single("Gather", (5, 4), {"i": np.array([[0, -1], [2, 3]], i64)}, extra_inputs=["i"], axis=0)
    cases["gather_const_indices"] = Case(m, [randn(5, 4)], ["gather"])
    m = _single("Gather", (5, 4), {"i": np.array(-2, i64)}, extra_inputs=["i"], axis=1)
    cases["gather_scalar_index"] = Case(m, [randn(5, 4)], ["gather"])
    node = helper.make_node("Gather", ["table", "ids"], ["y"])
    m = make_model([node], {"ids": (I64, [2, 3])}, ["y"], {"table": randn(10, 4)})
    cases["embedding"] = Case(m, [np.array([[1, 2, 9], [0, 0, 5]], i64)], ["gather"])
    m = _single("Reshape", (2, 3, 4), {"s": np.array([0, -1], i64)}, extra_inputs=["s"])
    cases["reshape"] = Case(m, [randn(2, 3, 4)], ["reshape"])
    m = _single("Flatten", (2, 3, 4, 5), axis=2)
    cases["flatten_axis2"] = Case(m, [randn(2, 3, 4, 5)], ["reshape"])
    m = _single("Squeeze", (2, 1, 3, 1), {"a": np.array([1, -1], i64)}, extra_inputs=["a"])
    cases["squeeze"] = Case(m, [randn(2, 1, 3, 1)], ["squeeze"])
    m = _single("Unsqueeze", (2, 3), {"a": np.array([0, -1], i64)}, extra_inputs=["a"])
    cases["unsqueeze"] = Case(m, [randn(2, 3)], ["unsqueeze"])
    m = _single("Transpose", (2, 3, 4), perm=[2, 0, 1])
    cases["transpose"] = Case(m, [randn(2, 3, 4)], ["transpose"])
    m = _single("Expand", (3, 1), {"s": np.array([2, 1, 4], i64)}, extra_inputs=["s"])
    cases["expand"] = Case(m, [randn(3, 1)], ["expand"])
    for mode in ("constant", "reflect", "edge"):
        inits = {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], i64), "v": np.float32(1.5)}
        m = _single("Pad", (1, 2, 4, 5), inits, extra_inputs=["p", "v"] if mode == "constant" else ["p"], mode=mode)
        cases[f"pad_{mode}"] = Case(m, [randn(1, 2, 4, 5)], ["pad"])
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)
    cases["cast"] = Case(make_model([node], {"x": (F32, [2, 3])}, ["y"]), [randn(2, 3) * 5], ["cast"])
    return cases


def _resize_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    x = randn(1, 2, 5, 6)
    variants = [
        (
            "nearest_asym_floor",
            dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
            [1, 1, 2, 3],
            None,
        ),
        ("nearest_half_pixel", dict(mode="nearest"), [1, 1, 1.5, 2.5], None),
        (
            "linear_align_corners",
            dict(mode="linear", coordinate_transformation_mode="align_corners"),
            None,
            [1, 2, 9, 11],
        ),
        ("linear_half_pixel_sizes", dict(mode="linear"), None, [1, 2, 8, 4]),
        (
            "linear_pytorch_half_pixel",
            dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
            [1, 1, 1.7, 0.5],
            None,
        ),
        ("nearest_ceil_sizes", dict(mode="nearest", nearest_mode="ceil"), None, [1, 2, 8, 13]),
        ("nearest_floor_downscale", dict(mode="nearest", nearest_mode="floor"), [1, 1, 0.5, 0.5], None),
    ]
    for name, attrs, scales, sizes in variants:
        inits: dict[str, np.ndarray] = {}
        ins = ["x", ""]
        if scales is not None:
            inits["sc"] = np.array(scales, np.float32)
            ins.append("sc")
        else:
            inits["sz"] = np.array(sizes, np.int64)
            ins += ["", "sz"]
        node = helper.make_node("Resize", ins, ["y"], **attrs)
        m = make_model([node], {"x": (F32, [1, 2, 5, 6])}, ["y"], inits)
        cases[f"resize_{name}"] = Case(m, [x], ["resize"])
    x = randn(1, 8, 3, 4)
    for mode in ("DCR", "CRD"):
        m = _single("DepthToSpace", (1, 8, 3, 4), blocksize=2, mode=mode)
        ops = ["pixel_shuffle"] if mode == "CRD" else ["reshape", "transpose", "reshape"]
        cases[f"depth_to_space_{mode.lower()}"] = Case(m, [x], ops)
    m = _single("SpaceToDepth", (2, 3, 4, 6), blocksize=2)
    cases["space_to_depth"] = Case(m, [randn(2, 3, 4, 6)], ["reshape", "transpose", "reshape"])
    return cases


def _pool_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    shape = (1, 3, 7, 8)
    m = _single("MaxPool", shape, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    cases["max_pool_ceil"] = Case(m, [randn(*shape)], ["max_pool"])
    m = _single("MaxPool", (1, 3, 9, 8), kernel_shape=[2, 2], strides=[3, 3], ceil_mode=1)
    # the last ceil-mode window would start past the input: onnxruntime and the IR drop it, ONNX shape
    # inference below opset 22 keeps it; the export says it with end pads in floor mode
    cases["max_pool_ceil_window_in_padding"] = Case(m, [randn(1, 3, 9, 8)], ["max_pool"], roundtrip=False)
    m = _single("AveragePool", (1, 3, 9, 8), kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 0, 1], ceil_mode=1)
    cases["avg_pool_ceil_window_in_padding"] = Case(m, [randn(1, 3, 9, 8)], ["avg_pool"], roundtrip=False)
    m = _single("MaxPool", shape, kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
    cases["max_pool_same"] = Case(m, [randn(*shape)], ["max_pool"])
    m = _single("AveragePool", shape, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)
    cases["avg_pool_include_pad"] = Case(m, [randn(*shape)], ["avg_pool"])
    m = _single("AveragePool", shape, kernel_shape=[3, 2], pads=[1, 0, 1, 1])
    cases["avg_pool_exclude_pad"] = Case(m, [randn(*shape)], ["avg_pool"])
    cases["global_avg_pool"] = Case(_single("GlobalAveragePool", shape), [randn(*shape)], ["reduce_mean"])
    cases["global_max_pool"] = Case(_single("GlobalMaxPool", shape), [randn(*shape)], ["reduce_max"])
    m = _single("ReduceMean", shape, axes=[1, -1], keepdims=0)
    cases["reduce_mean_attr"] = Case(m, [randn(*shape)], ["reduce_mean"])
    m = _single("ReduceMax", shape, {"a": np.array([2], np.int64)}, opset=18, extra_inputs=["a"])
    cases["reduce_max_input"] = Case(m, [randn(*shape)], ["reduce_max"])
    m = _single("ReduceSum", shape, {"a": np.array([0, 2], np.int64)}, extra_inputs=["a"], keepdims=0)
    cases["reduce_sum"] = Case(m, [randn(*shape)], ["reduce_sum"])
    for op, ops in (("ReduceMin", ["neg", "reduce_max", "neg"]), ("ReduceL1", ["abs", "reduce_sum"]),
                    ("ReduceL2", ["mul", "reduce_sum", "sqrt"]), ("ReduceSumSquare", ["mul", "reduce_sum"])):
        m = _single(op, shape, {"a": np.array([2, 3], np.int64)}, opset=18, extra_inputs=["a"])
        cases[op] = Case(m, [randn(*shape)], ops)
    return cases


def _misc_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Dropout", ["a"], ["b"]),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32(2.0))),
        helper.make_node("Add", ["c", "c"], ["d"]),  # folded: both inputs are constants
        helper.make_node("Mul", ["b", "d"], ["y"]),
    ]
    m = make_model(nodes, {"x": (F32, [2, 3])}, ["y"])
    cases["identity_dropout_constant_fold"] = Case(m, [randn(2, 3)], ["mul"])
    q, k, v = randn(1, 4, 5, 8), randn(1, 2, 6, 8), randn(1, 2, 6, 8)
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)
    m = make_model([node], {"q": (F32, q.shape), "k": (F32, k.shape), "v": (F32, v.shape)}, ["y"], opset=23)
    cases["attention_23_gqa_causal"] = Case(m, [q, k, v], ["attention"])
    # exporters zero the NaN rows of a fully masked softmax: where(isnan(p), 0, p)
    special = np.array([[1.0, np.nan, np.inf, -np.inf, 0.0, -2.5]], np.float32)
    nodes = [helper.make_node("IsNaN", ["x"], ["nan"]), helper.make_node("Where", ["nan", "zero", "x"], ["y"]),
             helper.make_node("Not", ["nan"], ["num"])]
    m = make_model(nodes, {"x": (F32, [1, 6])}, ["y", "num"], {"zero": np.zeros((), np.float32)})
    cases["isnan_where_not"] = Case(m, [np.where(np.isinf(special), 3.0, special)], ["equal", "equal", "where", "equal"])
    for flags in ({}, {"detect_negative": 0}, {"detect_positive": 0}, {"detect_positive": 0, "detect_negative": 0}):
        m = make_model([helper.make_node("IsInf", ["x"], ["y"], **flags)], {"x": (F32, [1, 6])}, ["y"], opset=20)
        cases["isinf_" + "_".join(f"{k}{v}" for k, v in flags.items())] = Case(m, [special], None)
    return cases


CASES: dict[str, Case] = {
    **_conv_cases(),
    **_gemm_cases(),
    **_norm_cases(),
    **_activation_cases(),
    **_binary_cases(),
    **_data_cases(),
    **_resize_cases(),
    **_pool_cases(),
    **_misc_cases(),
}


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain == "")


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_family(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every op here is known: no opaque warnings
        g, path = load_file(case.model, tmp_path)
    g.verify()
    if case.ops is not None:
        assert [n.op.value for n in g] == case.ops
    assert not g.find(Op.OPAQUE)
    assert_close(g.run(*case.feeds), ort_run(path, case.feeds), f"{name}: load vs onnxruntime")
    opset = max(17, _opset(case.model))
    m = check_export(g, case.feeds, opset)
    if case.roundtrip:
        assert structurally_equal(g, load(m)) == []


@pytest.mark.parametrize(
    ("nearest_mode", "scales", "sizes"),
    [("floor", [1, 1, 0.5, 0.6], None), ("round_prefer_ceil", [1, 1, 1.3, 2.7], None), ("floor", None, [1, 2, 1, 1])],
)
def test_resize_nearest_float32_coordinates(nearest_mode: str, scales: list | None, sizes: list | None) -> None:
    inits = {"sc": np.array(scales, np.float32)} if scales else {"sz": np.array(sizes, np.int64)}
    ins = ["x", "", "sc"] if scales else ["x", "", "", "sz"]
    node = helper.make_node("Resize", ins, ["y"], mode="nearest", nearest_mode=nearest_mode)
    m = make_model([node], {"x": (F32, [1, 2, 5, 7])}, ["y"], inits)
    x = randn(1, 2, 5, 7)
    assert_close(load(m).run(x), ort_run(m, [x]))


# ---------------------------------------------------------------------------------------------
# older opsets and per-group GroupNormalization
# ---------------------------------------------------------------------------------------------


def test_group_norm_opset18_per_group_params(tmp_path: Path) -> None:
    # opsets 18-20 give one scale/bias per group; the IR expands them to one per channel
    s, b = randn(3), randn(3)
    m = _single(
        "GroupNormalization",
        (2, 6, 4, 4),
        {"s": s, "b": b},
        opset=18,
        extra_inputs=["s", "b"],
        num_groups=3,
        y_shape=(2, 6, 4, 4),
    )
    x = randn(2, 6, 4, 4)
    with pytest.warns(UserWarning, match="deprecated"):
        g, path = load_file(m, tmp_path)
    (node,) = g.nodes
    assert node.op is Op.GROUP_NORM and node.inputs[1].type.shape == (6,)
    np.testing.assert_array_equal(node.inputs[1].data, np.repeat(s, 2))
    # onnxruntime has no opset-18 GroupNormalization kernel: compare with the per-channel opset 21 form
    ref = _single(
        "GroupNormalization",
        (2, 6, 4, 4),
        {"s": np.repeat(s, 2), "b": np.repeat(b, 2)},
        opset=21,
        extra_inputs=["s", "b"],
        num_groups=3,
        y_shape=(2, 6, 4, 4),
    )
    assert_close(g.run(x), ort_run(ref, [x]))
    check_export(g, [x], 17)  # decomposed below opset 21
    check_export(g, [x], 21)


def test_old_opset_is_converted(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),  # opset 11: axes attribute
        helper.make_node("Softmax", ["u"], ["y"], axis=2),  # opset 11: flattens from the axis
    ]
    m = make_model(nodes, {"x": (F32, [2, 3, 4])}, ["y"], opset=11)
    x = randn(2, 3, 4)
    g, path = load_file(m, tmp_path)
    assert_close(g.run(x), ort_run(path, [x]))


def test_old_opset_that_cannot_be_converted(tmp_path: Path) -> None:
    node = helper.make_node("Crop", ["x"], ["y"], border=[1, 1, 1, 1])  # retired op: no converter adapter
    m = make_model([node], {"x": (F32, [1, 2, 5, 5])}, ["y"], opset=1, out_types={"y": (F32, [1, 2, 3, 3])})
    path = tmp_path / "old.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelLoadError, match=r"old.onnx: uses opset 1; .*re-export the model with opset >= 13"):
        load(path)


def test_constant_subgraphs_fold(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Range", ["start", "limit", "delta"], ["r"]),  # numpy folding
        helper.make_node("Cast", ["r"], ["rf"], to=F32),
        helper.make_node("Sqrt", ["rf"], ["s"]),  # onnxruntime folding
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=numpy_helper.from_array(np.ones(1, np.float32))),
        helper.make_node("Mul", ["s", "ones"], ["k"]),
        helper.make_node("Add", ["x", "k"], ["y"]),
    ]
    inits = {
        "start": np.array(0, np.int64),
        "limit": np.array(4, np.int64),
        "delta": np.array(1, np.int64),
        "shape": np.array([3, 4], np.int64),
    }
    m = make_model(nodes, {"x": (F32, [3, 4])}, ["y"], inits)
    g, path = load_file(m, tmp_path)
    (add,) = g.nodes
    assert add.op is Op.ADD
    np.testing.assert_allclose(add.inputs[1].data, np.broadcast_to(np.sqrt(np.arange(4.0)), (3, 4)), rtol=1e-6)
    x = randn(3, 4)
    assert_close(g.run(x), ort_run(path, [x]))


# ---------------------------------------------------------------------------------------------
# symbolic batch and shape folding
# ---------------------------------------------------------------------------------------------


def test_flatten_keeps_symbolic_batch(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
    ]
    m = make_model(nodes, {"x": (F32, ["batch_size", 3, 4, 4])}, ["y"], {"w": randn(5, 48), "b": randn(5)})
    g, path = load_file(m, tmp_path)
    assert g.inputs[0].type.shape == ("N", 3, 4, 4) and g.inputs[0].type.channel_axis == 1
    reshape, linear = g.nodes
    assert reshape.op is Op.RESHAPE and reshape.attrs == ReshapeAttrs(shape=(0, 48))
    assert linear.op is Op.LINEAR and g.outputs[0].type.shape == ("N", 5)
    for n in (1, 3):
        x = randn(n, 3, 4, 4)
        assert_close(g.run(x), ort_run(path, [x]))
        check_export(g, [x])
    exported = to_onnx(g)
    dim = exported.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"


def test_shape_gather_concat_reshape_folds(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Shape", ["r"], ["rs"]),
        helper.make_node("Slice", ["rs", "one", "two"], ["feat"]),  # static part folds to a constant
        helper.make_node("Cast", ["feat"], ["featf"], to=F32),
        helper.make_node("Div", ["r", "featf"], ["y"]),
    ]
    inits = {
        "zero": np.array(0, np.int64),
        "axes0": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64),
        "one": np.array([1], np.int64),
        "two": np.array([2], np.int64),
    }
    m = make_model(nodes, {"x": (F32, ["batch", 2, 3, 4])}, ["y"], inits)
    g, path = load_file(m, tmp_path)
    assert [n.op for n in g] == [Op.RESHAPE, Op.DIV]
    assert g.nodes[0].attrs.shape == (0, 24)
    np.testing.assert_array_equal(g.nodes[1].inputs[1].data, np.array([24.0], np.float32))
    for n in (1, 4):
        x = randn(n, 2, 3, 4)
        assert_close(g.run(x), ort_run(path, [x]))
    check_export(g, [randn(2, 2, 3, 4)])


def test_dynamic_reshape_is_an_error_naming_the_node(tmp_path: Path) -> None:
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="the_reshape")
    m = make_model([node], {"x": (F32, [2, 3]), "shape": (I64, [2])}, ["y"])
    path = tmp_path / "dyn.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelLoadError, match="the_reshape.*target shape is computed at run time"):
        load(path)


# ---------------------------------------------------------------------------------------------
# unknown ops
# ---------------------------------------------------------------------------------------------


def test_unknown_op_becomes_opaque_and_runs(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("CumSum", ["r", "axis"], ["c"], name="cum"),
        helper.make_node("Einsum", ["c", "w"], ["y"], name="ein", equation="bij,jk->bik"),
    ]
    m = make_model(nodes, {"x": (F32, [2, 3, 4])}, ["y"], {"axis": np.array(1, np.int64), "w": randn(4, 5)})
    path = tmp_path / "opaque.onnx"
    onnx.save(m, path)
    with pytest.warns(UserWarning) as rec:
        g = load(path)
    messages = [str(w.message) for w in rec]
    assert (
        "op 'CumSum' at node 'cum' is not known to graphprune; it runs opaquely and blocks pruning across it"
        in messages
    )
    assert any("'Einsum' at node 'ein'" in m for m in messages)
    assert all(w.filename == __file__ for w in rec), "warnings point at the caller of load()"
    assert [n.op for n in g] == [Op.RELU, Op.OPAQUE, Op.OPAQUE]
    assert [n.attrs.op_name for n in g.find(Op.OPAQUE)] == ["CumSum", "Einsum"]
    assert g.outputs[0].type.shape == (2, 3, 5)
    x = randn(2, 3, 4)
    assert_close(g.run(x), ort_run(path, [x]))
    m2 = check_export(g, [x])
    with pytest.warns(UserWarning):
        assert structurally_equal(g, load(m2)) == []


def test_unknown_op_without_shape_is_an_error(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Frobnicate", ["x"], ["f"], name="frob", domain="com.example"),
        helper.make_node("Relu", ["f"], ["y"]),
    ]
    m = make_model(nodes, {"x": (F32, [2, 3])}, ["y"], domains={"com.example": 1}, out_types={"y": (F32, [2, 3])})
    path = tmp_path / "custom.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelLoadError, match="frob.*onnxsim"):
        load(path)


# ---------------------------------------------------------------------------------------------
# files: errors and external data
# ---------------------------------------------------------------------------------------------


def _conv_model() -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    return make_model([node], {"x": (F32, [1, 4, 8, 8])}, ["y"], {"w": randn(8, 4, 3, 3), "b": randn(8)})


def test_missing_truncated_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="nope.onnx: no such file"):
        load(tmp_path / "nope.onnx")
    data = _conv_model().SerializeToString()
    half = tmp_path / "half.onnx"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="half.onnx"):
        load(half)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        load(garbage)
    with pytest.raises(ModelLoadError, match="no graph"):
        load(onnx.ModelProto())


def _save_external(model: onnx.ModelProto, folder: Path, location: str = "weights.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return path


def test_external_data_loads_lazily(tmp_path: Path) -> None:
    path = _save_external(_conv_model(), tmp_path / "ext")
    g = load(path)
    weights = [c for c in g.constants if c.source in ("w", "b")]
    assert len(weights) == 2
    assert all(c._data is None and c._loader is not None for c in weights), "external weights load lazily"
    x = randn(1, 4, 8, 8)
    assert_close(g.run(x), ort_run(path, [x]))


def test_external_weight_folded_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a weight stored transposed ([IN, OUT] for MatMul) and one behind a Transpose node: both fold to
    # IR constants that read the external file only when used
    import graphprune.frontends.onnx as frontend

    monkeypatch.setattr(frontend, "_LAZY_FOLD_BYTES", 0)
    nodes = [
        helper.make_node("MatMul", ["x", "w_in_out"], ["h"]),
        helper.make_node("Transpose", ["w_out_in"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["h", "wt"], ["y"]),
    ]
    inits = {"w_in_out": randn(8, 6), "w_out_in": randn(5, 6)}
    path = _save_external(make_model(nodes, {"x": (F32, [3, 8])}, ["y"], inits), tmp_path / "fold")
    g = load(path)
    assert [n.op for n in g] == [Op.LINEAR, Op.LINEAR]
    weights = [n.inputs[1] for n in g]
    assert [w.type.shape for w in weights] == [(6, 8), (5, 6)]
    assert all(w._data is None and w._loader is not None for w in weights)
    x = randn(3, 8)
    assert_close(g.run(x), ort_run(path, [x]))


def test_save_switches_to_external_data_when_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import graphprune.backends.onnx as backend

    g, _ = load_file(_conv_model(), tmp_path)
    monkeypatch.setattr(backend, "EXTERNAL_DATA_THRESHOLD", 1000)  # bytes; the conv weight has 1152
    out = tmp_path / "auto" / "m.onnx"
    out.parent.mkdir()
    save(g, out)
    assert (out.parent / "m.onnx.data").exists()
    x = randn(1, 4, 8, 8)
    assert_close(ort_run(out, [x]), g.run(x))


@pytest.mark.parametrize("location", ["../evil.bin", "ABSOLUTE", "link.bin"])
def test_external_data_outside_the_folder_is_rejected(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    path = _save_external(_conv_model(), folder)
    outside = tmp_path / "evil.bin"
    outside.write_bytes((folder / "weights.bin").read_bytes())
    if location == "ABSOLUTE":
        location = str(outside)
    if location == "link.bin":
        os.symlink(outside, folder / "link.bin")
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, path)
    with pytest.raises(ModelLoadError, match="external data must live in the model's folder") as err:
        load(path)
    assert "model.onnx" in str(err.value) and "'w'" in str(err.value)


def test_external_data_missing_file(tmp_path: Path) -> None:
    path = _save_external(_conv_model(), tmp_path / "m")
    (tmp_path / "m" / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load(path)


def test_save_roundtrip_and_external_data(tmp_path: Path) -> None:
    g, path = load_file(_conv_model(), tmp_path)
    x = randn(1, 4, 8, 8)
    out = tmp_path / "plain.onnx"
    save(g, out)
    assert_close(ort_run(out, [x]), g.run(x))
    ext = tmp_path / "ext" / "big.onnx"
    ext.parent.mkdir()
    save(g, ext, external_data=True)
    assert (ext.parent / "big.onnx.data").exists()
    assert sorted(p.name for p in ext.parent.iterdir()) == ["big.onnx", "big.onnx.data"]
    g2 = load(ext)
    assert all(c._data is None for c in g2.constants if c.source == "w")
    assert_close(g2.run(x), g.run(x))
    assert structurally_equal(g, g2) == []


def test_save_failure_leaves_no_file(tmp_path: Path) -> None:
    g = Graph("torchy")
    x = g.add_input("x", TensorType(DType.F32, (2, 3), 1))
    attrs = opaque.torch_attrs("aten.cumsum.default", [{"$input": 0}, 1], {})
    node = g.add_node(Op.OPAQUE, [x], attrs, name="cumsum_node", types=[x.type])
    g.set_outputs([node.output])
    out = tmp_path / "never.onnx"
    with pytest.raises(ExportError, match="cumsum_node.*aten.cumsum.default.*cannot be written to ONNX"):
        save(g, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# IR ops with no single ONNX op: lowering checked against the interpreter
# ---------------------------------------------------------------------------------------------


def _ir_graph(shape: tuple[int | str, ...], build: Callable[[Graph, Value], Value]) -> Graph:
    g = Graph("ir")
    x = g.add_input("x", TensorType(DType.F32, shape, 1 if len(shape) >= 2 else None))
    g.set_outputs([build(g, x)])
    return g


def _unary_ir(op: Op, attrs: object = None) -> Callable[[Graph, Value], Value]:
    return lambda g, x: g.add_node(op, [x], attrs).output


IR_CASES: dict[str, tuple[Graph, list[np.ndarray]]] = {}


def _ir_cases() -> None:
    x4 = randn(2, 6, 4, 4)
    IR_CASES["silu"] = (_ir_graph((2, 6, 4, 4), _unary_ir(Op.SILU)), [x4])
    IR_CASES["rsqrt"] = (_ir_graph((2, 6, 4, 4), _unary_ir(Op.RSQRT)), [np.abs(x4) + 0.1])
    IR_CASES["gelu_tanh_decomposed"] = (_ir_graph((2, 6, 4, 4), _unary_ir(Op.GELU, GeluAttrs("tanh"))), [x4])
    IR_CASES["gelu_erf_decomposed"] = (_ir_graph((2, 6, 4, 4), _unary_ir(Op.GELU, GeluAttrs("none"))), [x4])
    IR_CASES["clip_max_only"] = (_ir_graph((2, 6, 4, 4), _unary_ir(Op.CLIP, ClipAttrs(max=0.3))), [x4])

    def pool(g: Graph, x: Value) -> Value:
        return g.add_node(Op.ADAPTIVE_AVG_POOL, [x], AdaptivePoolAttrs((2, 1))).output

    IR_CASES["adaptive_avg_pool"] = (_ir_graph((2, 6, 4, 4), pool), [x4])

    def unshuffle(g: Graph, x: Value) -> Value:
        return g.add_node(Op.PIXEL_UNSHUFFLE, [x], FactorAttrs(2)).output

    IR_CASES["pixel_unshuffle_symbolic_batch"] = (_ir_graph(("N", 6, 4, 4), unshuffle), [x4])

    def group_norm(g: Graph, x: Value) -> Value:
        s, b = g.add_const("s", randn(6)), g.add_const("b", randn(6))
        return g.add_node(Op.GROUP_NORM, [x, s, b], GroupNormAttrs(num_groups=3, eps=1e-5)).output

    IR_CASES["group_norm_decomposed"] = (_ir_graph(("N", 6, 4, 4), group_norm), [x4])

    def rms_norm(g: Graph, x: Value) -> Value:
        s = g.add_const("s", randn(4))
        return g.add_node(Op.RMS_NORM, [x, s], NormAttrs(axis=3, eps=1e-6)).output

    IR_CASES["rms_norm_decomposed"] = (_ir_graph((2, 6, 4, 4), rms_norm), [x4])

    def layer_norm_no_scale(g: Graph, x: Value) -> Value:
        return g.add_node(Op.LAYER_NORM, [x], NormAttrs(axis=2, eps=1e-5)).output

    IR_CASES["layer_norm_no_scale"] = (_ir_graph((2, 6, 4, 4), layer_norm_no_scale), [x4])

    def slice_reverse(g: Graph, x: Value) -> Value:
        return g.add_node(Op.SLICE, [x], SliceAttrs(axis=1, start=5, end=-1, step=-2)).output

    IR_CASES["slice_negative_step_to_start"] = (_ir_graph((2, 6, 4, 4), slice_reverse), [x4])

    def expand(g: Graph, x: Value) -> Value:
        return g.add_node(Op.EXPAND, [x], ExpandAttrs((-1, 3, 4))).output

    IR_CASES["expand_keep_symbolic"] = (_ir_graph(("N", 1, 4), expand), [randn(2, 1, 4)])

    def linear3d(g: Graph, x: Value) -> Value:
        w, b = g.add_const("w", randn(5, 4)), g.add_const("b", randn(5))
        y = g.add_node(Op.LINEAR, [x, w, b]).output
        # the same weight read raw too (tied weights): exported once as is, once transposed
        return g.add_node(
            Op.ADD, [y, g.add_node(Op.REDUCE_SUM, [w], ReduceAttrs(axes=(1,), keepdims=False)).output]
        ).output

    IR_CASES["linear_3d_tied"] = (_ir_graph((2, 3, 4), linear3d), [randn(2, 3, 4)])

    for causal, mask, gqa in ((True, None, False), (False, "bool", False), (False, "float", True)):

        def attention(g: Graph, x: Value, causal: bool = causal, mask: str | None = mask, gqa: bool = gqa) -> Value:
            heads = 2 if gqa else 4
            k = g.add_const("k", randn(1, heads, 6, 8))
            v = g.add_const("v", randn(1, heads, 6, 8))
            ins = [x, k, v]
            if mask == "bool":
                ins.append(g.add_const("mask", RNG.random((5, 6)) > 0.3))
            elif mask == "float":
                ins.append(g.add_const("mask", randn(1, 1, 5, 6)))
            return g.add_node(Op.ATTENTION, ins, AttentionAttrs(scale=None, is_causal=causal, enable_gqa=gqa)).output

        IR_CASES[f"attention_causal{int(causal)}_mask{mask}_gqa{int(gqa)}"] = (
            _ir_graph((1, 4, 5, 8), attention),
            [randn(1, 4, 5, 8)],
        )


_ir_cases()


@pytest.mark.parametrize("name", sorted(IR_CASES))
def test_ir_lowering(name: str) -> None:
    g, feeds = IR_CASES[name]
    check_export(g, feeds, 17)
    check_export(g, feeds, 23)


def test_adaptive_pool_uneven_is_an_export_error() -> None:
    def pool(g: Graph, x: Value) -> Value:
        return g.add_node(Op.ADAPTIVE_AVG_POOL, [x], AdaptivePoolAttrs((3, 3)), name="head.pool").output

    with pytest.raises(ExportError, match="head.pool.*uneven"):
        to_onnx(_ir_graph((1, 2, 4, 4), pool))


# ---------------------------------------------------------------------------------------------
# models written by torch.onnx.export(dynamo=True)
# ---------------------------------------------------------------------------------------------


def _torch_modules():  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8 * 4 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.pool(F.relu(self.bn(self.conv(x)))), 1))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(16)
            self.up = nn.Linear(16, 32)
            self.down = nn.Linear(32, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.down(F.gelu(self.up(self.norm(x))))

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(16, 48)
            self.out = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, 2, 8).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.out(y.transpose(1, 2).reshape(b, t, 16))

    torch.manual_seed(0)
    bn = ConvNet()
    with torch.no_grad():
        bn.bn.running_mean.uniform_(-0.5, 0.5)
        bn.bn.running_var.uniform_(0.5, 1.5)
    return {
        "conv_bn_relu_pool_linear": (bn, (torch.randn(2, 3, 8, 8),)),
        "layernorm_gelu_mlp": (MLP(), (torch.randn(2, 5, 16),)),
        "sdpa_attention": (Attention(), (torch.randn(2, 6, 16),)),
    }


@pytest.mark.parametrize("name", ["conv_bn_relu_pool_linear", "layernorm_gelu_mlp", "sdpa_attention"])
def test_torch_dynamo_export(name: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module, inputs = _torch_modules()[name]
    module.eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, path, dynamo=True, verbose=False)
    feeds = [t.numpy() for t in inputs]
    g = load(path)
    assert not g.find(Op.OPAQUE)
    assert_close(g.run(*feeds), ort_run(path, feeds), name)
    check_export(g, feeds, 17)
