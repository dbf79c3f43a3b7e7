"""ONNX backend: write an IR graph as a standard ONNX model (through onnx-graphsurgeon).

Every IR op lowers to standard ONNX ops of the requested opset (17 by default); ops that ONNX only
gained later (Gelu 20, GroupNormalization 21, RMSNormalization 23) are decomposed below those opsets.
ONNX value names are the IR value names; node names are the IR node names made unique. OPAQUE nodes
that came from ONNX are written back as their stored NodeProto; torch-opaque nodes cannot be written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from graphprune.ir import opaque
from graphprune.ir.errors import ExportError
from graphprune.ir.graph import Graph, Node, Value
from graphprune.ir.ops import Op
from graphprune.ir.types import Dim, DType, TensorType

__all__ = ["to_onnx", "save", "EXTERNAL_DATA_THRESHOLD"]

EXTERNAL_DATA_THRESHOLD = int(1.8 * 1024**3)  # bytes of weights above which save() writes external data
_INT64_MIN = -(2**63)


SPARSITY_KEY = "graphprune.sparsity"  # model metadata: {initializer: {pattern, axis, out_axis}}


def _contiguous(arr: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray turns 0-d arrays into 1-d ones; keep the shape
    return np.ascontiguousarray(arr).reshape(arr.shape)


def _dims(shape: Sequence[Dim]) -> list[int | str]:
    return [d if isinstance(d, int) else str(d) for d in shape]


class _Exporter:
    def __init__(self, graph: Graph, opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self.tensors: dict[int, gs.Tensor] = {}
        self.nodes: list[gs.Node] = []
        self.names: set[str] = {v.name for v in graph.values()}
        self.node_names: Counter[str] = Counter()
        self.domains: dict[str, int] = {}
        self.opaque_protos: dict[str, list[onnx.NodeProto]] = {}  # placeholder name -> the real nodes
        self.ir: Node | None = None  # the IR node being lowered (for names and errors)
        # constants exported as stored (the others are only read transposed, as MatMul weights)
        self.raw_uses: set[int] = set()
        self.transposed: dict[int, gs.Constant] = {}
        self.used_node_names: set[str] = set()

    # ------------------------------------------------------------------ names and tensors

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        return name

    def node_name(self, base: str | None = None) -> str:
        """A unique node name derived from the IR node's name."""
        if base is None:
            assert self.ir is not None
            base = self.ir.name or self.ir.op.value
        name, k = base, self.node_names[base]
        if k:
            name = f"{base}_{k}"
        while name in self.used_node_names:
            k += 1
            name = f"{base}_{k}"
        self.node_names[base] = k + 1
        self.used_node_names.add(name)
        return name

    def t(self, v: Value) -> gs.Tensor:
        """The gs tensor of an IR value."""
        got = self.tensors.get(id(v))
        if got is not None:
            return got
        if v.is_const:
            try:
                data = np.asarray(v.data)
            except Exception as e:  # noqa: BLE001 - lazy loaders may fail (missing file)
                raise ExportError(f"constant %{v.name} cannot be loaded for export: {e}") from None
            tensor: gs.Tensor = gs.Constant(v.name, _contiguous(data))
        else:
            tensor = gs.Variable(v.name, dtype=v.type.dtype.numpy, shape=_dims(v.type.shape))
        self.tensors[id(v)] = tensor
        return tensor

    def const(self, arr: np.ndarray, base: str) -> gs.Constant:
        return gs.Constant(self.fresh(base), _contiguous(np.asarray(arr)))

    def ints(self, values: Sequence[int], base: str) -> gs.Constant:
        return self.const(np.asarray(list(values), dtype=np.int64), base)

    def scalar(self, value: float, dtype: DType, base: str) -> gs.Constant:
        return self.const(np.asarray(value, dtype=dtype.numpy), base)

    def tmp(self, base: str = "t") -> gs.Variable:
        assert self.ir is not None
        return gs.Variable(self.fresh(f"{self.ir.outputs[0].name}_{base}" if self.ir.outputs else base))

    def add(
        self,
        op: str,
        inputs: Sequence[gs.Tensor],
        outputs: Sequence[gs.Tensor] | None = None,
        attrs: dict[str, Any] | None = None,
        domain: str | None = None,
    ) -> gs.Tensor:
        """Append a gs node; returns its first output (a fresh temporary when none is given)."""
        outs = list(outputs) if outputs is not None else [self.tmp(op.lower())]
        self.nodes.append(gs.Node(op, self.node_name(), attrs or {}, list(inputs), outs, domain))
        return outs[0]

    def out(self, k: int = 0) -> gs.Tensor:
        assert self.ir is not None
        return self.t(self.ir.outputs[k])

    def fail(self, what: str, fix: str = "") -> ExportError:
        n = self.ir
        where = f"node {n.name!r} ({n.op.value})" if n is not None else "graph"
        return ExportError(f"{where}: {what}" + (f"; {fix}" if fix else ""))

    def need_static(self, dims: Sequence[Dim], what: str) -> list[int]:
        if not all(isinstance(d, int) for d in dims):
            raise self.fail(f"{what} needs static sizes, got {list(dims)}", "give the graph static shapes")
        return [int(d) for d in dims]  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the walk

    def run(self) -> onnx.ModelProto:
        g = self.graph
        for n in g:
            for i, v in enumerate(n.inputs):
                if v.is_const and not (n.op is Op.LINEAR and i == 1 and n.inputs[0].type.rank != 2):
                    self.raw_uses.add(id(v))
        inputs = [self.t(v) for v in g.inputs]
        for n in g:
            self.ir = n
            lower = _LOWER.get(n.op)
            if lower is None:
                raise self.fail("has no ONNX lowering")
            lower(self, n)
        self.ir = None
        outputs: list[gs.Tensor] = []
        seen: set[int] = set()
        for v in g.outputs:
            t = self.t(v)
            if v.is_const or v in g.inputs or id(v) in seen:
                # ONNX graph outputs must be produced by a node (and be distinct)
                y = gs.Variable(self.fresh(f"{v.name}_out"), dtype=v.type.dtype.numpy, shape=_dims(v.type.shape))
                self.nodes.append(gs.Node("Identity", self.node_name(f"{v.name}_identity"), {}, [t], [y]))
                t = y
            seen.add(id(v))
            outputs.append(t)
        domains = [helper.make_opsetid(d, v) for d, v in sorted(self.domains.items()) if d]
        gg = gs.Graph(
            nodes=self.nodes,
            inputs=inputs,
            outputs=outputs,
            name=g.name,
            opset=self.opset,
            import_domains=domains or None,
            producer_name="graphprune",
        )
        model = gs.export_onnx(gg, do_type_check=True)
        if self.opaque_protos:
            spliced: list[onnx.NodeProto] = []
            for p in model.graph.node:
                spliced.extend(self.opaque_protos.get(p.name, [p]))
            del model.graph.node[:]
            model.graph.node.extend(spliced)
        opsets = [helper.make_opsetid("", self.opset)] + domains
        model.ir_version = max(8, helper.find_min_ir_version_for(opsets, ignore_unknown=True))
        # the sparsity patterns of weights exported as stored (the zeros are in the data): graphprune's
        # ONNX reader rebuilds the masks from them
        sparse = {
            v.name: {"pattern": v.sparsity.pattern, "axis": v.sparsity.axis, "out_axis": v.sparsity.out_axis}
            for v in g.constants
            if v.sparsity is not None and id(v) in self.raw_uses
        }
        if sparse:
            helper.set_model_props(model, {SPARSITY_KEY: json.dumps(sparse, sort_keys=True)})
        return model


# ---------------------------------------------------------------------------------------------
# lowerings: one small function per op family
# ---------------------------------------------------------------------------------------------

_Lower = Callable[[_Exporter, Node], None]
_LOWER: dict[Op, _Lower] = {}


def _lowers(*ops: Op) -> Callable[[_Lower], _Lower]:
    def deco(fn: _Lower) -> _Lower:
        for op in ops:
            _LOWER[op] = fn
        return fn

    return deco


def _ins(ex: _Exporter, n: Node) -> list[gs.Tensor]:
    return [ex.t(v) for v in n.inputs]


@_lowers(Op.CONV, Op.CONV_TRANSPOSE)
def _conv(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    attrs: dict[str, Any] = {
        "kernel_shape": ex.need_static(n.inputs[1].type.shape[2:], "the kernel"),
        "strides": list(a.stride),
        "pads": list(a.pads),
        "dilations": list(a.dilation),
        "group": int(a.groups),
    }
    if n.op is Op.CONV_TRANSPOSE:
        attrs["output_padding"] = list(a.output_padding)
    ex.add("Conv" if n.op is Op.CONV else "ConvTranspose", _ins(ex, n), [ex.out()], attrs)


@_lowers(Op.LINEAR)
def _linear(ex: _Exporter, n: Node) -> None:
    x, w = n.inputs[0], n.inputs[1]
    b = ex.t(n.inputs[2]) if len(n.inputs) > 2 else None
    if x.type.rank == 2:
        # Gemm reads the [OUT, IN] weight as stored
        ex.add("Gemm", [ex.t(x), ex.t(w)] + ([b] if b is not None else []), [ex.out()], {"transB": 1})
        return
    if w.is_const:
        wt: gs.Tensor | None = ex.transposed.get(id(w))
        if wt is None:
            # the transposed weight takes the IR name unless the raw weight is exported too
            name = ex.fresh(f"{w.name}_T") if id(w) in ex.raw_uses else w.name
            wt = gs.Constant(name, _contiguous(np.asarray(w.data).T))
            ex.transposed[id(w)] = wt
    else:
        wt = ex.add("Transpose", [ex.t(w)], attrs={"perm": [1, 0]})
    if b is None:
        ex.add("MatMul", [ex.t(x), wt], [ex.out()])
        return
    y = ex.add("MatMul", [ex.t(x), wt])
    ex.add("Add", [y, b], [ex.out()])


@_lowers(Op.MATMUL)
def _matmul(ex: _Exporter, n: Node) -> None:
    a, b = (_as_dtype(ex, v, n.outputs[0].type.dtype) for v in n.inputs)
    ex.add("MatMul", [a, b], [ex.out()])


@_lowers(Op.BATCH_NORM, Op.INSTANCE_NORM)
def _channel_norm(ex: _Exporter, n: Node) -> None:
    op = "BatchNormalization" if n.op is Op.BATCH_NORM else "InstanceNormalization"
    ex.add(op, _ins(ex, n), [ex.out()], {"epsilon": float(n.attrs.eps)})


def _norm_params(ex: _Exporter, n: Node, count: int) -> list[gs.Tensor]:
    """Scale (ones when absent) and bias (when there is one) for LayerNormalization/RMSNormalization."""
    x = n.inputs[0].type
    params = [ex.t(v) for v in n.inputs[1:count]]
    if not params:
        shape = ex.need_static(x.shape[n.attrs.axis :], "a norm without a scale")
        params.append(ex.const(np.ones(shape, x.dtype.numpy), f"{n.outputs[0].name}_scale"))
    return params


@_lowers(Op.LAYER_NORM)
def _layer_norm(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    if ex.opset >= 17:
        params = _norm_params(ex, n, 3)
        attrs = {"axis": int(a.axis), "epsilon": float(a.eps)}
        ex.add("LayerNormalization", [ex.t(n.inputs[0]), *params], [ex.out()], attrs)
        return
    x = ex.t(n.inputs[0])
    axes = list(range(a.axis, n.inputs[0].type.rank))
    dtype = n.inputs[0].type.dtype
    mean = _reduce(ex, "ReduceMean", x, axes, True)
    d = ex.add("Sub", [x, mean])
    var = _reduce(ex, "ReduceMean", ex.add("Mul", [d, d]), axes, True)
    std = ex.add("Sqrt", [ex.add("Add", [var, ex.scalar(a.eps, dtype, "eps")])])
    y = ex.add("Div", [d, std])
    _affine(ex, y, [ex.t(v) for v in n.inputs[1:]], ex.out())


def _affine(ex: _Exporter, y: gs.Tensor, params: list[gs.Tensor], out: gs.Tensor) -> None:
    """y * scale (+ bias), writing `out`."""
    if not params:
        ex.add("Identity", [y], [out])
        return
    if len(params) == 1:
        ex.add("Mul", [y, params[0]], [out])
        return
    ex.add("Add", [ex.add("Mul", [y, params[0]]), params[1]], [out])


def _reduce(
    ex: _Exporter, op: str, x: gs.Tensor, axes: Sequence[int], keepdims: bool, out: gs.Tensor | None = None
) -> gs.Tensor:
    # ReduceSum takes axes as an input from opset 13, the others from opset 18
    as_input = op == "ReduceSum" or ex.opset >= 18
    attrs: dict[str, Any] = {"keepdims": int(keepdims)}
    inputs = [x]
    if as_input:
        inputs.append(ex.ints(axes, "axes"))
    else:
        attrs["axes"] = list(axes)
    return ex.add(op, inputs, [out] if out is not None else None, attrs)


@_lowers(Op.RMS_NORM)
def _rms_norm(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    if ex.opset >= 23:
        params = _norm_params(ex, n, 2)
        attrs = {"axis": int(a.axis), "epsilon": float(a.eps)}
        ex.add("RMSNormalization", [ex.t(n.inputs[0]), *params], [ex.out()], attrs)
        return
    x = ex.t(n.inputs[0])
    dtype = n.inputs[0].type.dtype
    axes = list(range(a.axis, n.inputs[0].type.rank))
    ms = _reduce(ex, "ReduceMean", ex.add("Pow", [x, ex.scalar(2.0, dtype, "two")]), axes, True)
    rms = ex.add("Sqrt", [ex.add("Add", [ms, ex.scalar(a.eps, dtype, "eps")])])
    y = ex.add("Div", [x, rms])
    _affine(ex, y, [ex.t(v) for v in n.inputs[1:]], ex.out())


@_lowers(Op.GROUP_NORM)
def _group_norm(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    x, scale, bias = n.inputs
    if ex.opset >= 21:
        attrs = {"num_groups": int(a.num_groups), "epsilon": float(a.eps)}
        ex.add("GroupNormalization", _ins(ex, n), [ex.out()], attrs)
        return
    # InstanceNormalization over [N, G, rest] is group norm without the per-channel affine
    g = int(a.num_groups)
    dtype = x.type.dtype
    grouped = ex.add("Reshape", [ex.t(x), ex.ints([0, g, -1], "groups_shape")])
    ones = ex.const(np.ones(g, dtype.numpy), "group_ones")
    zeros = ex.const(np.zeros(g, dtype.numpy), "group_zeros")
    normed = ex.add("InstanceNormalization", [grouped, ones, zeros], attrs={"epsilon": float(a.eps)})
    back = ex.add("Reshape", [normed, ex.add("Shape", [ex.t(x)])])
    per_channel = [1] * (x.type.rank - 2)
    params = [_channel_param(ex, p, per_channel) for p in (scale, bias)]
    _affine(ex, back, params, ex.out())


def _channel_param(ex: _Exporter, p: Value, trailing: list[int]) -> gs.Tensor:
    """A [C] parameter shaped [C, 1, ...] so that it broadcasts along axis 1."""
    if not trailing:
        return ex.t(p)
    if p.is_const:
        data = np.asarray(p.data)
        return ex.const(data.reshape(data.shape[0], *trailing), f"{p.name}_c")
    return ex.add("Unsqueeze", [ex.t(p), ex.ints(range(1, 1 + len(trailing)), "axes")])


_UNARY = {
    Op.RELU: "Relu",
    Op.SIGMOID: "Sigmoid",
    Op.TANH: "Tanh",
    Op.ERF: "Erf",
    Op.EXP: "Exp",
    Op.LOG: "Log",
    Op.SQRT: "Sqrt",
    Op.NEG: "Neg",
    Op.ABS: "Abs",
    Op.RECIPROCAL: "Reciprocal",
    Op.SIN: "Sin",
    Op.COS: "Cos",
    Op.HARD_SWISH: "HardSwish",
}


@_lowers(*_UNARY)
def _unary(ex: _Exporter, n: Node) -> None:
    ex.add(_UNARY[n.op], _ins(ex, n), [ex.out()])


@_lowers(Op.RSQRT)
def _rsqrt(ex: _Exporter, n: Node) -> None:
    ex.add("Reciprocal", [ex.add("Sqrt", _ins(ex, n))], [ex.out()])


@_lowers(Op.SILU)
def _silu(ex: _Exporter, n: Node) -> None:
    x = ex.t(n.inputs[0])
    ex.add("Mul", [x, ex.add("Sigmoid", [x])], [ex.out()])


@_lowers(Op.LEAKY_RELU)
def _leaky_relu(ex: _Exporter, n: Node) -> None:
    ex.add("LeakyRelu", _ins(ex, n), [ex.out()], {"alpha": float(n.attrs.alpha)})


@_lowers(Op.HARD_SIGMOID)
def _hard_sigmoid(ex: _Exporter, n: Node) -> None:
    ex.add("HardSigmoid", _ins(ex, n), [ex.out()], {"alpha": float(n.attrs.alpha), "beta": float(n.attrs.beta)})


@_lowers(Op.PRELU)
def _prelu(ex: _Exporter, n: Node) -> None:
    x, slope = n.inputs
    trailing = [1] * max(x.type.rank - 2, 0)
    s = ex.t(slope) if slope.type.shape in ((1,), ()) else _channel_param(ex, slope, trailing)
    ex.add("PRelu", [ex.t(x), s], [ex.out()])


@_lowers(Op.GELU)
def _gelu(ex: _Exporter, n: Node) -> None:
    approx = n.attrs.approximate
    if ex.opset >= 20:
        ex.add("Gelu", _ins(ex, n), [ex.out()], {"approximate": approx})
        return
    x = ex.t(n.inputs[0])
    dt = n.inputs[0].type.dtype
    if approx == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = ex.add("Mul", [ex.add("Mul", [x, x]), x])
        inner = ex.add("Add", [x, ex.add("Mul", [cube, ex.scalar(0.044715, dt, "gelu_c")])])
        t = ex.add("Tanh", [ex.add("Mul", [inner, ex.scalar(math.sqrt(2.0 / math.pi), dt, "gelu_k")])])
    else:
        # 0.5 x (1 + erf(x / sqrt(2)))
        t = ex.add("Erf", [ex.add("Mul", [x, ex.scalar(1.0 / math.sqrt(2.0), dt, "gelu_k")])])
    one_plus = ex.add("Add", [t, ex.scalar(1.0, dt, "one")])
    half_x = ex.add("Mul", [x, ex.scalar(0.5, dt, "half")])
    ex.add("Mul", [half_x, one_plus], [ex.out()])


@_lowers(Op.CLIP)
def _clip(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    dt = n.inputs[0].type.dtype
    inputs = [ex.t(n.inputs[0])]
    if a.min is not None or a.max is not None:
        inputs.append(ex.scalar(a.min, dt, "min") if a.min is not None else gs.Variable.empty())
    if a.max is not None:
        inputs.append(ex.scalar(a.max, dt, "max"))
    ex.add("Clip", inputs, [ex.out()])


@_lowers(Op.SOFTMAX)
def _softmax(ex: _Exporter, n: Node) -> None:
    ex.add("Softmax", _ins(ex, n), [ex.out()], {"axis": int(n.attrs.axis)})


def _as_dtype(ex: _Exporter, v: Value, dtype: DType) -> gs.Tensor:
    """The tensor of `v` in `dtype` (ONNX binary ops need equal dtypes; the IR lets scalars adapt)."""
    if v.type.dtype == dtype:
        return ex.t(v)
    if v.is_const:
        return ex.const(np.asarray(v.data).astype(dtype.numpy), f"{v.name}_{dtype.value}")
    return ex.add("Cast", [ex.t(v)], attrs={"to": helper.np_dtype_to_tensor_dtype(dtype.numpy)})


def _common_dtype(a: Value, b: Value) -> DType:
    ta, tb = a.type.dtype, b.type.dtype
    if ta == tb:
        return ta
    if b.is_const and b.type.rank == 0:
        return ta
    if a.is_const and a.type.rank == 0:
        return tb
    if ta.is_float != tb.is_float:
        return ta if ta.is_float else tb
    return DType.from_numpy(np.promote_types(ta.numpy, tb.numpy))


_BINARY = {
    Op.ADD: "Add",
    Op.SUB: "Sub",
    Op.MUL: "Mul",
    Op.DIV: "Div",
    Op.POW: "Pow",
    Op.MAXIMUM: "Max",
    Op.MINIMUM: "Min",
    Op.EQUAL: "Equal",
    Op.LESS: "Less",
    Op.GREATER: "Greater",
}


@_lowers(*_BINARY)
def _binary(ex: _Exporter, n: Node) -> None:
    a, b = n.inputs
    if n.op is Op.POW:
        # Pow may mix dtypes; only the base sets the result
        ex.add("Pow", [_as_dtype(ex, a, n.outputs[0].type.dtype), ex.t(b)], [ex.out()])
        return
    dt = _common_dtype(a, b)
    ex.add(_BINARY[n.op], [_as_dtype(ex, a, dt), _as_dtype(ex, b, dt)], [ex.out()])


@_lowers(Op.WHERE)
def _where(ex: _Exporter, n: Node) -> None:
    c, a, b = n.inputs
    dt = n.outputs[0].type.dtype
    cond = _as_dtype(ex, c, DType.BOOL)
    ex.add("Where", [cond, _as_dtype(ex, a, dt), _as_dtype(ex, b, dt)], [ex.out()])


@_lowers(Op.CONCAT)
def _concat(ex: _Exporter, n: Node) -> None:
    ex.add("Concat", _ins(ex, n), [ex.out()], {"axis": int(n.attrs.axis)})


@_lowers(Op.SPLIT)
def _split(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    outs = [ex.t(o) for o in n.outputs]
    ex.add("Split", [ex.t(n.inputs[0]), ex.ints(a.sizes, "split")], outs, {"axis": int(a.axis)})


@_lowers(Op.SLICE)
def _slice(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    # IR end -1 with a negative step means "through index 0"; in ONNX -1 would mean the last index
    end = _INT64_MIN if a.end < 0 else a.end
    inputs = [
        ex.t(n.inputs[0]),
        ex.ints([a.start], "starts"),
        ex.ints([end], "ends"),
        ex.ints([a.axis], "axes"),
        ex.ints([a.step], "steps"),
    ]
    ex.add("Slice", inputs, [ex.out()])


@_lowers(Op.GATHER)
def _gather(ex: _Exporter, n: Node) -> None:
    data, idx = n.inputs
    index = ex.t(idx) if idx.type.dtype in (DType.I64, DType.I32) else _as_dtype(ex, idx, DType.I64)
    ex.add("Gather", [ex.t(data), index], [ex.out()], {"axis": int(n.attrs.axis)})


@_lowers(Op.RESHAPE)
def _reshape(ex: _Exporter, n: Node) -> None:
    ex.add("Reshape", [ex.t(n.inputs[0]), ex.ints(n.attrs.shape, "shape")], [ex.out()])


@_lowers(Op.TRANSPOSE)
def _transpose(ex: _Exporter, n: Node) -> None:
    ex.add("Transpose", _ins(ex, n), [ex.out()], {"perm": list(n.attrs.perm)})


@_lowers(Op.SQUEEZE, Op.UNSQUEEZE)
def _squeeze(ex: _Exporter, n: Node) -> None:
    op = "Squeeze" if n.op is Op.SQUEEZE else "Unsqueeze"
    ex.add(op, [ex.t(n.inputs[0]), ex.ints(n.attrs.axes, "axes")], [ex.out()])


@_lowers(Op.EXPAND)
def _expand(ex: _Exporter, n: Node) -> None:
    # ONNX Expand broadcasts both ways, so a 1 keeps the input's size (the IR writes -1)
    shape = [1 if s == -1 else s for s in n.attrs.shape]
    ex.add("Expand", [ex.t(n.inputs[0]), ex.ints(shape, "shape")], [ex.out()])


@_lowers(Op.PAD)
def _pad(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    dt = n.inputs[0].type.dtype
    inputs = [ex.t(n.inputs[0]), ex.ints(a.pads, "pads")]
    if a.mode == "constant":
        inputs.append(ex.scalar(a.value, dt, "pad_value"))
    ex.add("Pad", inputs, [ex.out()], {"mode": a.mode})


@_lowers(Op.RESIZE)
def _resize(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    x = n.inputs[0]
    attrs = {
        "mode": a.mode,
        "coordinate_transformation_mode": a.coordinate_transformation,
        "nearest_mode": a.nearest_mode,
    }
    spatial = x.type.shape[2:]
    # sizes when the scales are out / in (onnxruntime maps coordinates with exactly that); otherwise the
    # scales, which must reproduce the sizes as floor(in * scale)
    by_sizes = not a.scales or all(
        isinstance(d, int) and np.float32(o / d) == np.float32(s)
        for d, s, o in zip(spatial, a.scales, a.sizes, strict=True)
    )
    if not by_sizes:
        for d, s, o in zip(spatial, a.scales, a.sizes, strict=True):
            d = ex.need_static([d], "resize with scales")[0]
            if int(np.floor(np.float32(s) * np.float32(d))) != o or int(np.floor(float(np.float32(s)) * d)) != o:
                raise ex.fail(
                    f"scale {s} maps size {d} to {o}, which ONNX's floor(size * scale) does not give",
                    "set sizes consistent with the scales",
                )
    empty = gs.Variable.empty()
    if not by_sizes:
        scales = ex.const(np.asarray([1.0, 1.0, *a.scales], np.float32), "scales")
        ex.add("Resize", [ex.t(x), empty, scales], [ex.out()], attrs)
        return
    lead = x.type.shape[:2]
    if all(isinstance(d, int) for d in lead):
        sizes: gs.Tensor = ex.ints([*lead, *a.sizes], "sizes")  # type: ignore[list-item]
    else:
        n_c = ex.add("Slice", [ex.add("Shape", [ex.t(x)]), ex.ints([0], "s"), ex.ints([2], "e")])
        sizes = ex.add("Concat", [n_c, ex.ints(a.sizes, "sizes")], attrs={"axis": 0})
    ex.add("Resize", [ex.t(x), empty, gs.Variable.empty(), sizes], [ex.out()], attrs)


@_lowers(Op.PIXEL_SHUFFLE)
def _pixel_shuffle(ex: _Exporter, n: Node) -> None:
    ex.add("DepthToSpace", _ins(ex, n), [ex.out()], {"blocksize": int(n.attrs.factor), "mode": "CRD"})


@_lowers(Op.PIXEL_UNSHUFFLE)
def _pixel_unshuffle(ex: _Exporter, n: Node) -> None:
    r = int(n.attrs.factor)
    x = n.inputs[0]
    c, h, w = ex.need_static(x.type.shape[1:], "pixel_unshuffle")
    nn = 0 if isinstance(x.type.shape[0], str) else x.type.shape[0]
    y = ex.add("Reshape", [ex.t(x), ex.ints([nn, c, h // r, r, w // r, r], "shape")])
    y = ex.add("Transpose", [y], attrs={"perm": [0, 1, 3, 5, 2, 4]})
    ex.add("Reshape", [y, ex.ints([nn, c * r * r, h // r, w // r], "shape")], [ex.out()])


@_lowers(Op.CAST)
def _cast(ex: _Exporter, n: Node) -> None:
    ex.add("Cast", _ins(ex, n), [ex.out()], {"to": helper.np_dtype_to_tensor_dtype(n.attrs.dtype.numpy)})


@_lowers(Op.MAX_POOL, Op.AVG_POOL)
def _pool(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    attrs: dict[str, Any] = {
        "kernel_shape": list(a.kernel),
        "strides": list(a.stride),
        "pads": list(a.pads),
        "ceil_mode": int(a.ceil_mode),
    }
    if a.ceil_mode and ex.opset < 22 and _old_ceil_differs(n):
        # below opset 22, ONNX's shape rule keeps a last window that starts in the end padding (the IR
        # and onnxruntime drop it); say the same with explicit end pads and floor mode instead
        if n.op is Op.AVG_POOL and a.count_include_pad:
            raise ex.fail(
                "this ceil_mode average pool (counting pads) has a shape ONNX below opset 22 computes differently",
                "export with opset=22",
            )
        attrs["pads"] = _floor_pads(n)
        attrs["ceil_mode"] = 0
    if n.op is Op.MAX_POOL:
        attrs["dilations"] = list(a.dilation)
        ex.add("MaxPool", _ins(ex, n), [ex.out()], attrs)
        return
    attrs["count_include_pad"] = int(a.count_include_pad)
    if any(d != 1 for d in a.dilation):
        if ex.opset < 19:
            raise ex.fail("a dilated average pool needs opset 19", "export with opset=19 or newer")
        attrs["dilations"] = list(a.dilation)
    ex.add("AveragePool", _ins(ex, n), [ex.out()], attrs)


def _old_ceil_differs(n: Node) -> bool:
    a = n.attrs
    x, y = n.inputs[0].type.shape, n.outputs[0].type.shape
    nsp = len(a.kernel)
    for i in range(nsp):
        size, out = x[2 + i], y[2 + i]
        if not isinstance(size, int) or not isinstance(out, int):
            continue
        span = size + a.pads[i] + a.pads[nsp + i] - a.dilation[i] * (a.kernel[i] - 1) - 1
        if -(-span // a.stride[i]) + 1 != out:
            return True
    return False


def _floor_pads(n: Node) -> list[int]:
    """End pads that make floor mode give the IR's (ceil mode) output sizes."""
    a = n.attrs
    x, y = n.inputs[0].type.shape, n.outputs[0].type.shape
    nsp = len(a.kernel)
    pads = list(a.pads)
    for i in range(nsp):
        size, out = int(x[2 + i]), int(y[2 + i])  # type: ignore[arg-type]
        need = (out - 1) * a.stride[i] + a.dilation[i] * (a.kernel[i] - 1) + 1  # input extent the windows read
        pads[nsp + i] = max(a.pads[nsp + i], need - size - a.pads[i])
    return pads


@_lowers(Op.ADAPTIVE_AVG_POOL)
def _adaptive_avg_pool(ex: _Exporter, n: Node) -> None:
    x = n.inputs[0]
    out = list(n.attrs.output_size)
    if all(o == 1 for o in out):
        ex.add("GlobalAveragePool", _ins(ex, n), [ex.out()])
        return
    spatial = ex.need_static(x.type.shape[2:], "adaptive_avg_pool")
    if any(s % o for s, o in zip(spatial, out, strict=True)):
        raise ex.fail(
            f"adaptive average pooling from {spatial} to {out} has uneven windows, which ONNX cannot express",
            "choose input sizes divisible by the output size",
        )
    k = [s // o for s, o in zip(spatial, out, strict=True)]
    attrs = {"kernel_shape": k, "strides": k, "pads": [0] * (2 * len(k))}
    ex.add("AveragePool", _ins(ex, n), [ex.out()], attrs)


@_lowers(Op.REDUCE_MEAN, Op.REDUCE_SUM, Op.REDUCE_MAX)
def _reduce_op(ex: _Exporter, n: Node) -> None:
    op = {Op.REDUCE_MEAN: "ReduceMean", Op.REDUCE_SUM: "ReduceSum", Op.REDUCE_MAX: "ReduceMax"}[n.op]
    _reduce(ex, op, ex.t(n.inputs[0]), n.attrs.axes, n.attrs.keepdims, ex.out())


@_lowers(Op.ATTENTION)
def _attention(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    q, k, v = n.inputs[:3]
    dt = q.type.dtype
    rank = q.type.rank
    if ex.opset >= 23 and rank == 4 and not (a.is_causal and len(n.inputs) > 3):
        # opset 23 has the op itself (4-D [B, H, L, E] inputs; fewer kv heads is grouped-query attention)
        attrs: dict[str, Any] = {"is_causal": int(a.is_causal)}
        if a.scale is not None:
            attrs["scale"] = float(a.scale)
        ex.add("Attention", _ins(ex, n), [ex.out()], attrs)
        return
    kt, vt = ex.t(k), ex.t(v)
    if a.enable_gqa and rank >= 3 and q.type.shape[-3] != k.type.shape[-3]:
        hq, hk = ex.need_static([q.type.shape[-3], k.type.shape[-3]], "grouped-query attention heads")
        kt = _repeat_heads(ex, kt, k, hq // hk)
        vt = _repeat_heads(ex, vt, v, hq // hk)
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    scores = ex.add("MatMul", [ex.t(q), ex.add("Transpose", [kt], attrs={"perm": perm})])
    e = q.type.shape[-1]
    if a.scale is None:
        scale = 1.0 / math.sqrt(ex.need_static([e], "attention's default scale")[0])
    else:
        scale = float(a.scale)
    scores = ex.add("Mul", [scores, ex.scalar(scale, dt, "scale")])
    neg_inf = ex.scalar(-np.inf, dt, "neg_inf")
    if a.is_causal:
        length, src = ex.need_static([q.type.shape[-2], k.type.shape[-2]], "a causal mask")
        keep = ex.const(np.tril(np.ones((length, src), dtype=bool)), "causal_mask")
        scores = ex.add("Where", [keep, scores, neg_inf])
    if len(n.inputs) > 3:
        mask = n.inputs[3]
        if mask.type.dtype == DType.BOOL:
            scores = ex.add("Where", [ex.t(mask), scores, neg_inf])
        else:
            scores = ex.add("Add", [scores, _as_dtype(ex, mask, dt)])
    probs = ex.add("Softmax", [scores], attrs={"axis": -1})
    ex.add("MatMul", [probs, vt], [ex.out()])


def _repeat_heads(ex: _Exporter, t: gs.Tensor, v: Value, rep: int) -> gs.Tensor:
    """[..., Hk, S, E] -> [..., Hk * rep, S, E], each kv head repeated rep times in place."""
    rank = v.type.rank
    heads = ex.need_static([v.type.shape[-3]], "grouped-query attention heads")[0]
    e = ex.need_static([v.type.shape[-1]], "grouped-query attention's head dim")[0]
    u = ex.add("Unsqueeze", [t, ex.ints([rank - 2], "axes")])  # [..., Hk, 1, S, E]
    reps = [1] * (rank + 1)
    reps[rank - 2] = rep
    expanded = ex.add("Expand", [u, ex.ints(reps, "rep")])  # [..., Hk, rep, S, E]
    # 0 copies the leading dims, -1 takes S (which may be symbolic)
    shape = [0] * (rank - 3) + [heads * rep, -1, e]
    return ex.add("Reshape", [expanded, ex.ints(shape, "shape")])


@_lowers(Op.OPAQUE)
def _opaque(ex: _Exporter, n: Node) -> None:
    a = n.attrs
    call = opaque.decode(a)
    if isinstance(call, opaque.TorchCall):
        raise ex.fail(
            f"the torch op {call.target!r} cannot be written to ONNX; graphprune has no ONNX form for it",
            "export the model from torch with torch.onnx.export, or replace the op",
        )
    proto = onnx.NodeProto()
    proto.ParseFromString(call.node)
    ins = iter(n.inputs)
    for j, name in enumerate(proto.input):
        if name:
            proto.input[j] = next(ins).name
    outs = iter(n.outputs)
    for j, name in enumerate(proto.output):
        if name:
            proto.output[j] = next(outs).name
    name = ex.node_name()
    proto.name = name
    domain = proto.domain if proto.domain != "ai.onnx" else ""
    version = call.opsets.get(domain)
    protos = [proto]
    if domain:
        if version is not None:
            ex.domains[domain] = max(ex.domains.get(domain, 0), version)
    elif version is not None and version != ex.opset:
        protos = _convert_node(ex, n, proto, call.opsets)
    # a placeholder that gs can export; the real NodeProtos replace it afterwards
    ex.nodes.append(gs.Node(proto.op_type, name, {}, _ins(ex, n), [ex.t(o) for o in n.outputs], proto.domain or None))
    ex.opaque_protos[name] = protos


def _convert_node(ex: _Exporter, n: Node, proto: onnx.NodeProto, opsets: dict[str, int]) -> list[onnx.NodeProto]:
    """A standard-domain node read at another opset, as nodes of the export opset."""
    version = opsets[""]
    try:
        same = (
            onnx.defs.get_schema(proto.op_type, ex.opset, "").since_version
            == onnx.defs.get_schema(proto.op_type, version, "").since_version
        )
    except Exception:  # noqa: BLE001 - onnx does not know the op at one of the opsets
        same = False
    if same:
        return [proto]
    # the op changed between the opsets: let onnx's version converter rewrite it (it adapts
    # attributes that became inputs and the like), on a one-node model typed like the IR node
    from onnx import version_converter

    def info(v: Value) -> onnx.ValueInfoProto:
        dtype = helper.np_dtype_to_tensor_dtype(v.type.dtype.numpy)
        return helper.make_tensor_value_info(v.name, dtype, _dims(v.type.shape))

    graph = helper.make_graph([proto], "one", [info(v) for v in n.inputs], [info(v) for v in n.outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    try:
        converted = version_converter.convert_version(model, ex.opset)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ex.fail(
            f"op {proto.op_type!r} was read at opset {version} and cannot be converted to opset {ex.opset} ({first})",
            f"export with opset={version}",
        ) from None
    keep = {v.name for v in (*n.inputs, *n.outputs)}
    renamed: dict[str, str] = {}
    nodes = []
    for p in converted.graph.node:
        for field in (p.input, p.output):
            for k, t in enumerate(field):
                if t and t not in keep:
                    field[k] = renamed.setdefault(t, ex.fresh(f"{proto.name}_{t}"))
        p.name = proto.name if not nodes else ex.node_name(proto.name)
        nodes.append(p)
    return nodes


assert set(_LOWER) == set(Op), f"ONNX lowerings missing for {set(Op) - set(_LOWER)}"


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------


def to_onnx(graph: Graph, *, opset: int = 17) -> onnx.ModelProto:
    """The graph as an ONNX model of the given opset (13 or newer).

    Raises ExportError naming the node when an op has no ONNX form (a torch-opaque op, an uneven
    adaptive pool, a shape ONNX cannot express)."""
    if opset < 13:
        raise ExportError(f"graph {graph.name!r}: opset {opset} is too old; export with opset 13 or newer")
    return _Exporter(graph, opset).run()


def _weight_bytes(graph: Graph) -> int:
    total = 0
    for c in graph.constants:
        t: TensorType = c.type
        total += t.numel() * t.dtype.numpy.itemsize
    return total


def save(
    graph: Graph,
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    external_data: bool | None = None,
) -> None:
    """Write the graph as an ONNX file, atomically (a failed export leaves nothing behind).

    external_data=None writes weights to "<file name>.data" next to the model when they exceed
    1.8 GB (protobuf cannot hold 2 GB)."""
    path = Path(path)
    model = to_onnx(graph, opset=opset)
    if external_data is None:
        external_data = _weight_bytes(graph) > EXTERNAL_DATA_THRESHOLD
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"{path}: the folder {folder} does not exist; create it first")
    location = f"{path.name}.data"
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=folder))
    try:
        tmp_model = tmp_dir / path.name
        if external_data:
            onnx.save(
                model,
                os.fspath(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=location,
                size_threshold=1024,
            )
            if (tmp_dir / location).exists():
                os.replace(tmp_dir / location, folder / location)
        else:
            onnx.save(model, os.fspath(tmp_model))
        os.replace(tmp_model, path)
    except (OSError, ValueError) as e:
        # ValueError: a model over protobuf's 2 GB limit written without external data
        fix = "; pass external_data=True" if not external_data and "2GB" in str(e) else ""
        raise ExportError(f"{path}: cannot be written: {e}{fix}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
