"""Torch backend: turn an IR graph into an ``nn.Module`` that runs it op by op with torch.

The module owns the graph's constants: float weights read by convolutions, linear layers, norms,
PReLU and embedding tables are ``nn.Parameter``s, every other constant is a buffer. Attribute names
are the IR names with dots replaced by "__" (``GraphModule.const_names`` maps IR name -> attribute).
``forward`` walks a precomputed list of steps, so the module is plain Python over torch calls and can
itself be traced by ``torch.export``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphprune.ir.errors import ExportError
from graphprune.ir.graph import Graph, Node
from graphprune.ir.opaque import TorchCall, decode
from graphprune.ir.ops import Op
from graphprune.ir.types import DType

__all__ = ["GraphModule", "to_torch"]

_DTYPES: dict[DType, torch.dtype] = {
    DType.F32: torch.float32,
    DType.F64: torch.float64,
    DType.F16: torch.float16,
    DType.I64: torch.int64,
    DType.I32: torch.int32,
    DType.I8: torch.int8,
    DType.U8: torch.uint8,
    DType.BOOL: torch.bool,
}

# (op, input position) pairs whose float constants are trainable weights.
_WEIGHT_SLOTS = {
    (Op.CONV, 1), (Op.CONV, 2),
    (Op.CONV_TRANSPOSE, 1), (Op.CONV_TRANSPOSE, 2),
    (Op.LINEAR, 1), (Op.LINEAR, 2),
    (Op.BATCH_NORM, 1), (Op.BATCH_NORM, 2),
    (Op.LAYER_NORM, 1), (Op.LAYER_NORM, 2),
    (Op.GROUP_NORM, 1), (Op.GROUP_NORM, 2),
    (Op.INSTANCE_NORM, 1), (Op.INSTANCE_NORM, 2),
    (Op.RMS_NORM, 1),
    (Op.PRELU, 1),
    (Op.GATHER, 0),
}  # fmt: skip


@dataclass(frozen=True)
class _Call:
    """What a kernel needs of an IR node, copied so the module does not follow later graph edits."""

    op: Op
    attrs: Any
    name: str


Kernel = Callable[[_Call, list[torch.Tensor]], list[torch.Tensor]]


@dataclass(frozen=True)
class _Step:
    node: _Call
    kernel: Kernel
    inputs: tuple[str, ...]  # env keys: "i:<name>" graph inputs, "c:<attr>" constants, "v:<name>" values
    outputs: tuple[str, ...]


class GraphModule(torch.nn.Module):
    """An IR graph as a torch module (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph_name = graph.name
        self.input_names = [v.name for v in graph.inputs]
        self.const_names: dict[str, str] = {}  # IR constant name -> attribute name
        self._steps: list[_Step] = []
        self._outputs: tuple[str, ...] = ()
        for c in graph.constants:
            attr = _attr_name(c.name, self)
            self.const_names[c.name] = attr
            tensor = torch.from_numpy(np.array(c.data, copy=True))
            if c.type.dtype.is_float and any((n.op, i) in _WEIGHT_SLOTS for n, i in c.uses):
                self.register_parameter(attr, torch.nn.Parameter(tensor))  # trainable: fine-tune after pruning
            else:
                self.register_buffer(attr, tensor)

        def key(v: Any) -> str:
            if v.is_const:
                return "c:" + self.const_names[v.name]
            if v.producer is None:
                return "i:" + v.name
            return "v:" + v.name

        for n in graph:
            kernel = _KERNELS.get(n.op)
            if kernel is None:
                raise ExportError(f"node {n.name!r}: op {n.op.value} has no torch kernel")
            if n.op is Op.OPAQUE:
                _check_opaque(n)
            call = _Call(n.op, n.attrs, n.name)
            ins, outs = tuple(key(v) for v in n.inputs), tuple("v:" + o.name for o in n.outputs)
            self._steps.append(_Step(call, kernel, ins, outs))
        self._outputs = tuple(key(v) for v in graph.outputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"{self.graph_name} takes {len(self.input_names)} inputs ({self.input_names}), got {len(inputs)}"
            )
        env: dict[str, torch.Tensor] = {"i:" + n: t for n, t in zip(self.input_names, inputs, strict=True)}
        for step in self._steps:
            args = [env[k] if k[0] != "c" else getattr(self, k[2:]) for k in step.inputs]
            for k, out in zip(step.outputs, step.kernel(step.node, args), strict=True):
                env[k] = out
        outs = tuple(env[k] if k[0] != "c" else getattr(self, k[2:]) for k in self._outputs)
        return outs[0] if len(outs) == 1 else outs


def to_torch(graph: Graph) -> GraphModule:
    """An ``nn.Module`` computing `graph` with torch ops (in eval mode)."""
    return GraphModule(graph).eval()


_ATTR_RE = re.compile(r"[^A-Za-z0-9_]")


def _attr_name(name: str, module: torch.nn.Module) -> str:
    """A free attribute name for constant `name`: dots become "__", other odd characters "_"."""
    base = _ATTR_RE.sub("_", name.replace(".", "__")) or "c"
    if base[0].isdigit():
        base = "c_" + base
    attr, i = base, 1
    while hasattr(module, attr):
        attr = f"{base}_{i}"
        i += 1
    return attr


def _check_opaque(n: Node) -> None:
    if n.attrs.source == "onnx":
        raise ExportError(
            f"node {n.name!r} ({n.attrs.op_name}): an ONNX op opaque to graphprune cannot run in torch; "
            "export this graph to ONNX instead"
        )
    if n.attrs.source != "torch":
        raise ExportError(f"node {n.name!r}: opaque op of unknown source {n.attrs.source!r}")


# ---------------------------------------------------------------------------------------------
# Kernels: one function per op, (node, input tensors) -> output tensors
# ---------------------------------------------------------------------------------------------

_KERNELS: dict[Op, Kernel] = {}


def _kernel(*ops: Op) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[[_Call, list[torch.Tensor]], Any]) -> Callable[[_Call, list[torch.Tensor]], Any]:
        def wrapped(n: _Call, xs: list[torch.Tensor]) -> list[torch.Tensor]:
            out = fn(n, xs)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        for op in ops:
            _KERNELS[op] = wrapped
        return fn

    return deco


def _torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """IR begin/end pads of trailing axes as F.pad's last-axis-first pairs."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        out += [int(b), int(e)]
    return out


def _split_pads(pads: Sequence[int]) -> tuple[list[int], list[int]]:
    n = len(pads) // 2
    return list(pads[:n]), list(pads[n:])


@_kernel(Op.CONV)
def _conv(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    begins, ends = _split_pads(a.pads)
    padding: Any = begins
    if begins != ends:  # asymmetric padding: pad explicitly with zeros
        x = F.pad(x, _torch_pads(begins, ends))
        padding = 0
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(a.stride)]
    return conv(x, w, b, list(a.stride), padding, list(a.dilation), a.groups)


@_kernel(Op.CONV_TRANSPOSE)
def _conv_transpose(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(a.stride)]
    begins, ends = _split_pads(a.pads)
    if begins == ends:
        return conv(x, w, b, list(a.stride), begins, list(a.output_padding), a.groups, list(a.dilation))
    # asymmetric: run unpadded, then crop pads (negative F.pad) and extend by output_padding
    y = conv(x, w, None, list(a.stride), 0, 0, a.groups, list(a.dilation))
    y = F.pad(y, _torch_pads([-p for p in begins], [op - p for p, op in zip(ends, a.output_padding, strict=True)]))
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * len(a.stride)))
    return y


@_kernel(Op.LINEAR)
def _linear(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.linear(xs[0], xs[1], xs[2] if len(xs) > 2 else None)


@_kernel(Op.MATMUL)
def _matmul(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.matmul(xs[0], xs[1])


@_kernel(Op.BATCH_NORM)
def _batch_norm(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    x, scale, bias, mean, var = xs
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, n.attrs.eps)


@_kernel(Op.LAYER_NORM)
def _layer_norm(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    x = xs[0]
    shape = list(x.shape[n.attrs.axis :])
    return F.layer_norm(x, shape, xs[1] if len(xs) > 1 else None, xs[2] if len(xs) > 2 else None, n.attrs.eps)


@_kernel(Op.RMS_NORM)
def _rms_norm(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    x = xs[0]
    return F.rms_norm(x, list(x.shape[n.attrs.axis :]), xs[1] if len(xs) > 1 else None, n.attrs.eps)


@_kernel(Op.GROUP_NORM)
def _group_norm(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.group_norm(xs[0], n.attrs.num_groups, xs[1], xs[2], n.attrs.eps)


@_kernel(Op.INSTANCE_NORM)
def _instance_norm(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.instance_norm(xs[0], weight=xs[1], bias=xs[2], eps=n.attrs.eps)


def _simple(fn: Callable[..., torch.Tensor]) -> Callable[[_Call, list[torch.Tensor]], torch.Tensor]:
    return lambda n, xs: fn(*xs)


for _op, _fn in {
    Op.RELU: F.relu,
    Op.SILU: F.silu,
    Op.SIGMOID: torch.sigmoid,
    Op.TANH: torch.tanh,
    Op.HARD_SWISH: F.hardswish,
    Op.ERF: torch.erf,
    Op.EXP: torch.exp,
    Op.LOG: torch.log,
    Op.SQRT: torch.sqrt,
    Op.RSQRT: torch.rsqrt,
    Op.NEG: torch.neg,
    Op.ABS: torch.abs,
    Op.RECIPROCAL: torch.reciprocal,
    Op.SIN: torch.sin,
    Op.COS: torch.cos,
    Op.ADD: torch.add,
    Op.SUB: torch.sub,
    Op.MUL: torch.mul,
    Op.POW: torch.pow,
    Op.MAXIMUM: torch.maximum,
    Op.MINIMUM: torch.minimum,
    Op.EQUAL: torch.eq,
    Op.LESS: torch.lt,
    Op.GREATER: torch.gt,
    Op.WHERE: torch.where,
}.items():
    _kernel(_op)(_simple(_fn))


@_kernel(Op.DIV)
def _div(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a, b = xs
    if a.dtype.is_floating_point or b.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # integer division truncates (ONNX semantics)


@_kernel(Op.LEAKY_RELU)
def _leaky_relu(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.leaky_relu(xs[0], n.attrs.alpha)


@_kernel(Op.PRELU)
def _prelu(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.prelu(xs[0], xs[1].reshape(-1))


@_kernel(Op.GELU)
def _gelu(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.gelu(xs[0], approximate=n.attrs.approximate)


@_kernel(Op.HARD_SIGMOID)
def _hard_sigmoid(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    if abs(a.alpha - 1 / 6) < 1e-12 and a.beta == 0.5:
        return F.hardsigmoid(xs[0])
    return torch.clamp(xs[0] * a.alpha + a.beta, 0.0, 1.0)


@_kernel(Op.CLIP)
def _clip(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    if n.attrs.min is None and n.attrs.max is None:
        return xs[0]
    return torch.clamp(xs[0], n.attrs.min, n.attrs.max)


@_kernel(Op.SOFTMAX)
def _softmax(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.softmax(xs[0], n.attrs.axis)


@_kernel(Op.CONCAT)
def _concat(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(xs, n.attrs.axis)


@_kernel(Op.SPLIT)
def _split(n: _Call, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.split(xs[0], list(n.attrs.sizes), n.attrs.axis))


@_kernel(Op.SLICE)
def _slice(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    x = xs[0]
    if a.step > 0:
        index = [slice(None)] * a.axis + [slice(a.start, a.end, a.step)]
        return x[tuple(index)]
    # torch has no negative-step slicing: gather the indices instead
    idx = torch.arange(a.start, a.end, a.step, device=x.device)
    return torch.index_select(x, a.axis, idx)


@_kernel(Op.GATHER)
def _gather(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    data, idx = xs
    axis = n.attrs.axis
    if axis == 0 and data.dim() == 2 and data.dtype.is_floating_point:
        return F.embedding(idx, data)
    size = data.shape[axis]
    flat = torch.where(idx < 0, idx + size, idx).reshape(-1)
    out = torch.index_select(data, axis, flat)
    return out.reshape(*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :])


@_kernel(Op.RESHAPE)
def _reshape(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    x = xs[0]
    shape = [x.shape[i] if t == 0 else t for i, t in enumerate(n.attrs.shape)]
    return x.reshape(shape)


@_kernel(Op.TRANSPOSE)
def _transpose(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return xs[0].permute(*n.attrs.perm)


@_kernel(Op.SQUEEZE)
def _squeeze(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.squeeze(xs[0], tuple(n.attrs.axes)) if n.attrs.axes else xs[0]


@_kernel(Op.UNSQUEEZE)
def _unsqueeze(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    x = xs[0]
    for a in sorted(n.attrs.axes):
        x = x.unsqueeze(a)
    return x


@_kernel(Op.EXPAND)
def _expand(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    x = xs[0]
    target = list(n.attrs.shape)
    off = len(target) - x.dim()
    # IR expand is numpy broadcasting: -1 keeps the input's size, and the larger size wins
    shape = []
    for j, t in enumerate(target):
        d = x.shape[j - off] if j >= off else 1
        shape.append(d if t == -1 else (t if d == 1 else d))
    return x.expand(shape)


@_kernel(Op.PAD)
def _pad(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    x = xs[0]
    begins, ends = _split_pads(a.pads)
    first = next((i for i in range(x.dim()) if begins[i] or ends[i]), x.dim())
    pads = _torch_pads(begins[first:], ends[first:])
    if not pads:
        return x
    if a.mode == "constant":
        return F.pad(x, pads, value=a.value)
    mode = {"reflect": "reflect", "edge": "replicate"}.get(a.mode)
    if mode is None:
        raise ExportError(f"node {n.name!r}: pad mode {a.mode!r} has no torch equivalent")
    # reflect/replicate pad the trailing 1-3 axes of a batched input; make that shape if needed
    npad = len(pads) // 2
    if npad > 3:
        raise ExportError(f"node {n.name!r}: torch can {a.mode}-pad at most 3 axes, this pads {npad}")
    lead = x.shape[: x.dim() - npad]
    y = x.reshape(1, -1, *x.shape[x.dim() - npad :])
    y = F.pad(y, pads, mode=mode)
    return y.reshape(*lead, *y.shape[2:])


@_kernel(Op.RESIZE)
def _resize(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    x = xs[0]
    nsp = x.dim() - 2
    sizes = [int(s) for s in a.sizes]
    in_sizes = [int(d) for d in x.shape[2:]]
    coord, mode = a.coordinate_transformation, a.mode
    # F.interpolate maps coordinates with scale_factor when given, else with in/out: pass the scales
    # when they reproduce the sizes (the frontend records the scales the model gave)
    scales = [float(s) for s in a.scales] if a.scales and len(a.scales) == nsp else None
    if scales is not None and [int(np.floor(i * s)) for i, s in zip(in_sizes, scales, strict=True)] != sizes:
        scales = None
    kwargs: dict[str, Any] = {"scale_factor": scales} if scales is not None else {"size": sizes}
    if mode == "nearest" and coord == "asymmetric" and a.nearest_mode == "floor":
        return F.interpolate(x, mode="nearest", **kwargs)
    if mode == "nearest" and coord == "half_pixel" and a.nearest_mode == "round_prefer_ceil":
        return F.interpolate(x, mode="nearest-exact", **kwargs)
    if mode == "linear" and nsp in (1, 2, 3):
        name = {1: "linear", 2: "bilinear", 3: "trilinear"}[nsp]
        if coord == "align_corners":
            return F.interpolate(x, size=sizes, mode=name, align_corners=True)
        if coord == "half_pixel" or (coord == "pytorch_half_pixel" and 1 not in sizes):
            return F.interpolate(x, mode=name, align_corners=False, **kwargs)
    if mode not in ("nearest", "linear"):
        raise ExportError(f"node {n.name!r}: resize mode {mode!r} has no torch equivalent")
    # Any other combination: resample axis by axis with index_select, as ONNX Resize defines it.
    for i, (out, size) in enumerate(zip(sizes, in_sizes, strict=True)):
        axis = 2 + i
        src = _source_coords(coord, out, size, float(a.scales[i]) if a.scales else None, n)
        if mode == "nearest":
            idx = np.clip(_round(a.nearest_mode, src, n), 0, size - 1).astype(np.int64)
            x = torch.index_select(x, axis, torch.from_numpy(idx).to(x.device))
            continue
        src = np.clip(src, 0, size - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, size - 1)
        frac = torch.from_numpy(src - lo).to(x.dtype).reshape(-1, *([1] * (x.dim() - axis - 1)))
        x0 = torch.index_select(x, axis, torch.from_numpy(lo))
        x1 = torch.index_select(x, axis, torch.from_numpy(hi))
        x = x0 + (x1 - x0) * frac
    return x


def _source_coords(coord: str, out: int, size: int, scale: float | None, n: _Call) -> np.ndarray:
    """ONNX Resize's input coordinate of every output index along one axis."""
    t = np.arange(out, dtype=np.float64)

    def inv(v: np.ndarray) -> np.ndarray:
        return v / scale if scale is not None else v * size / out

    if coord == "half_pixel":
        return inv(t + 0.5) - 0.5
    if coord == "pytorch_half_pixel":
        return inv(t + 0.5) - 0.5 if out > 1 else np.zeros(out)
    if coord == "align_corners":
        return t * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    if coord == "asymmetric":
        return inv(t)
    raise ExportError(f"node {n.name!r}: unknown resize coordinate transformation {coord!r}")


def _round(mode: str, v: np.ndarray, n: _Call) -> np.ndarray:
    if mode == "floor":
        return np.floor(v)
    if mode == "ceil":
        return np.ceil(v)
    if mode == "round_prefer_floor":
        return np.ceil(v - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(v + 0.5)
    raise ExportError(f"node {n.name!r}: unknown nearest mode {mode!r}")


@_kernel(Op.PIXEL_SHUFFLE)
def _pixel_shuffle(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.pixel_shuffle(xs[0], n.attrs.factor)


@_kernel(Op.PIXEL_UNSHUFFLE)
def _pixel_unshuffle(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return F.pixel_unshuffle(xs[0], n.attrs.factor)


@_kernel(Op.CAST)
def _cast(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    return xs[0].to(_DTYPES[n.attrs.dtype])


def _pool_padding(n: _Call, x: torch.Tensor, fill: float) -> tuple[torch.Tensor, list[int]]:
    """Symmetric pads torch's pooling accepts (at most half the kernel), else explicit F.pad."""
    a = n.attrs
    begins, ends = _split_pads(a.pads)
    if begins == ends and all(p <= k // 2 for p, k in zip(begins, a.kernel, strict=True)):
        return x, begins
    if a.ceil_mode:
        raise ExportError(
            f"node {n.name!r}: pooling with ceil_mode and asymmetric or large pads has no torch equivalent"
        )
    return F.pad(x, _torch_pads(begins, ends), value=fill), [0] * len(begins)


@_kernel(Op.MAX_POOL)
def _max_pool(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    x, padding = _pool_padding(n, xs[0], float("-inf"))
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(a.kernel)]
    return pool(x, list(a.kernel), list(a.stride), padding, list(a.dilation), a.ceil_mode)


@_kernel(Op.AVG_POOL)
def _avg_pool(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    if any(d != 1 for d in a.dilation):
        raise ExportError(f"node {n.name!r}: average pooling with dilation {a.dilation} has no torch equivalent")
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(a.kernel)]
    x = xs[0]
    padded, padding = _pool_padding(n, x, 0.0)
    if padded is x or a.count_include_pad:
        return pool(padded, list(a.kernel), list(a.stride), padding, a.ceil_mode, a.count_include_pad)
    # explicit pads that must not be counted: divide by the pooled count of real elements
    ones = F.pad(torch.ones_like(x[:1, :1]), _torch_pads(*_split_pads(a.pads)))
    total = pool(padded, list(a.kernel), list(a.stride), 0, a.ceil_mode, True)
    count = pool(ones, list(a.kernel), list(a.stride), 0, a.ceil_mode, True)
    return total / count


@_kernel(Op.ADAPTIVE_AVG_POOL)
def _adaptive_avg_pool(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    size = list(n.attrs.output_size)
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(size)]
    return pool(xs[0], size)


def _reduce(fn: Callable[..., torch.Tensor]) -> Kernel:
    def kernel(n: _Call, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        axes = list(n.attrs.axes)
        if not axes:
            return [xs[0]]
        return [fn(xs[0], dim=axes, keepdim=n.attrs.keepdims)]

    return kernel


_KERNELS[Op.REDUCE_MEAN] = _reduce(torch.mean)
_KERNELS[Op.REDUCE_SUM] = _reduce(torch.sum)
_KERNELS[Op.REDUCE_MAX] = _reduce(torch.amax)


@_kernel(Op.ATTENTION)
def _attention(n: _Call, xs: list[torch.Tensor]) -> torch.Tensor:
    a = n.attrs
    q, k, v = xs[:3]
    mask = xs[3] if len(xs) > 3 else None
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=a.is_causal, scale=a.scale, enable_gqa=a.enable_gqa
    )


def _resolve_target(target: str) -> Any:
    """ "aten.cumsum.default" -> torch.ops.aten.cumsum.default."""
    obj: Any = torch.ops
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@_kernel(Op.OPAQUE)
def _opaque(n: _Call, xs: list[torch.Tensor]) -> Any:
    call = decode(n.attrs)
    if not isinstance(call, TorchCall):
        raise ExportError(f"node {n.name!r}: an ONNX op opaque to graphprune cannot run in torch")

    def arg(a: Any) -> Any:
        if isinstance(a, dict) and "$input" in a:
            return xs[a["$input"]]
        if isinstance(a, dict) and "$dtype" in a:
            return getattr(torch, a["$dtype"])
        if isinstance(a, list):
            return [arg(x) for x in a]
        return a

    fn = _resolve_target(call.target)
    out = fn(*[arg(a) for a in call.args], **{k: arg(v) for k, v in call.kwargs.items()})
    return list(out) if isinstance(out, (tuple, list)) else out


assert set(_KERNELS) == set(Op), f"torch kernels missing for {set(Op) - set(_KERNELS)}"
