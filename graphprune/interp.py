"""The reference interpreter: runs a Graph on numpy arrays, one node at a time, in graph order.

It is the oracle that every pass and backend is checked against, so it favours exactness and plain
numpy over speed tricks, while staying fast enough for ResNet-50-sized graphs (convolutions are one
im2col GEMM per group batch, pooling loops over kernel taps, never over pixels).

Semantics every caller relies on:
- Types are the contract. Every op's results are cast to the dtype its output type declares, and
  their shapes are checked against the declared shape (static dims exactly, plain symbols such as
  "N" consistently with the inputs), so a graph whose types lie fails here instead of downstream.
- dtype=None computes in the graph's dtypes, except that float16 ops compute in float32 and round
  the result to float16 (what torch's CPU kernels do; numpy's float16 GEMM has no BLAS path).
  dtype="float64" (any floating dtype works) casts every floating input and constant to it, and
  every floating result stays in it: the pass-contract checks use this for ~1e-12 comparisons.
- Integer DIV truncates toward zero (ONNX Div); float DIV is true division.
- Intermediates are freed once their last consumer has run.
- OPAQUE nodes run in torch (`torch.ops.<target>`) or onnxruntime (a cached one-node model).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .ir import opaque
from .ir.errors import GraphpruneError, InterpreterError, ShapeError
from .ir.graph import Graph, Node, Value
from .ir.ops import (
    AdaptivePoolAttrs,
    AttentionAttrs,
    ConvAttrs,
    ConvTransposeAttrs,
    Op,
    PoolAttrs,
    ResizeAttrs,
)
from .ir.types import DType, TensorType

__all__ = ["InterpreterError", "run"]


# Upper bound on the elements of one im2col buffer; larger batches are convolved in chunks so a big
# batch does not need a multi-GB temporary.
_COLS_LIMIT = 1 << 25


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


class _Ctx:
    """Dtype policy of one run: the dtype a value of a declared type is stored and computed in."""

    def __init__(self, mode: np.dtype | None) -> None:
        self.mode = mode

    def storage(self, t: DType) -> np.dtype:
        """The dtype a value of declared dtype `t` has between ops."""
        if self.mode is not None and t.is_float:
            return self.mode
        return t.numpy

    def compute(self, t: DType) -> np.dtype:
        """The dtype ops compute in for a declared dtype `t` (float16 computes in float32)."""
        dt = self.storage(t)
        return np.dtype(np.float32) if dt == np.float16 else dt

    def out(self, node: Node, k: int = 0) -> np.dtype:
        return self.compute(node.outputs[k].type.dtype)


def _mode_dtype(dtype: str | np.dtype | type | None) -> np.dtype | None:
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise InterpreterError(f"run(dtype={dtype!r}): not a numpy dtype; use None or 'float64'") from e
    if dt.kind != "f":
        raise InterpreterError(f"run(dtype={dtype!r}): the compute dtype must be floating; use None or 'float64'")
    return dt


def run(graph: Graph, inputs: Sequence[Any], dtype: str | np.dtype | None = None) -> list[np.ndarray]:
    """Run `graph` on `inputs` (one array per graph input, in order) and return its outputs.

    dtype=None computes in the graph's dtypes; dtype="float64" casts every floating input and constant
    to float64 and computes every op in float64. Raises ShapeError for inputs that do not fit the
    graph's input types and InterpreterError (naming the node) when an op fails.
    """
    ctx = _Ctx(_mode_dtype(dtype))
    bindings: dict[str, int] = {}
    env: dict[int, np.ndarray] = {}
    given = _validate_inputs(graph, inputs, bindings)
    for v, arr in zip(graph.inputs, given, strict=True):
        env[id(v)] = arr.astype(ctx.storage(v.type.dtype), copy=False)

    # remaining uses per value: an intermediate is dropped when its count reaches zero
    remaining: dict[int, int] = {}
    for node in graph:
        for v in node.inputs:
            remaining[id(v)] = remaining.get(id(v), 0) + 1
    pinned = {id(v) for v in graph.outputs}

    def fetch(v: Value, user: Node | None) -> np.ndarray:
        arr = env.get(id(v))
        if arr is not None:
            return arr
        if v.is_const:
            data = v.data  # raises GraphError naming the constant when its data was elided
            arr = data.astype(ctx.storage(v.type.dtype), copy=False)
            env[id(v)] = arr
            return arr
        where = f"node {user.name!r} ({user.op.value})" if user is not None else f"graph {graph.name!r} output"
        raise InterpreterError(
            f"{where} reads %{v.name} before it is computed; the graph is not in topological order "
            f"or the value's producer is not in the graph; call graph.sort() or graph.verify()"
        )

    for node in graph:
        args = [fetch(v, node) for v in node.inputs]
        outs = _execute(node, args, ctx)
        for k, (v, arr) in enumerate(zip(node.outputs, outs, strict=True)):
            arr = np.asarray(arr).astype(ctx.storage(v.type.dtype), copy=False)
            _check_output(node, k, arr, bindings)
            if remaining.get(id(v), 0) or id(v) in pinned:
                env[id(v)] = arr
        del args, outs
        for v in node.inputs:
            remaining[id(v)] -= 1
            if remaining[id(v)] == 0 and id(v) not in pinned:
                env.pop(id(v), None)

    results: list[np.ndarray] = []
    for v in graph.outputs:
        arr = fetch(v, None)
        # Hand out independent, writable arrays: never a read-only constant or broadcast view, the
        # caller's own input (or a view of it), or one array twice.
        if not arr.flags.writeable or any(np.may_share_memory(arr, a) for a in given) or any(arr is r for r in results):
            arr = arr.copy()
        results.append(arr)
    return results


def _validate_inputs(graph: Graph, inputs: Sequence[Any], bindings: dict[str, int]) -> list[np.ndarray]:
    names = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    if len(inputs) != len(graph.inputs):
        raise ShapeError(
            f"graph {graph.name!r} takes {len(graph.inputs)} inputs ({names}) but got {len(inputs)}; "
            f"pass one array per graph input, in this order"
        )
    arrays = []
    for v, given in zip(graph.inputs, inputs, strict=True):
        arr = np.asarray(given)
        t = v.type
        want = _kind(t.dtype.numpy)
        if _kind(arr.dtype) != want:
            raise ShapeError(
                f"graph {graph.name!r} input %{v.name} expects {t} but got a {arr.dtype} array; "
                f"pass a {want} array (for example `x.astype(np.{t.dtype.numpy})`)"
            )
        ok = arr.ndim == t.rank
        if ok:
            for d, n in zip(t.shape, arr.shape, strict=True):
                if isinstance(d, int):
                    ok = ok and d == n
                else:
                    ok = ok and bindings.setdefault(d, n) == n
        if not ok:
            bound = ", ".join(f"{k}={n}" for k, n in bindings.items())
            raise ShapeError(
                f"graph {graph.name!r} input %{v.name} expects shape {tuple(t.shape)} but got {arr.shape}"
                + (f" (symbolic dims bound so far: {bound})" if bound else "")
                + "; pass an array of that rank whose static dims match exactly; a symbolic dim may take "
                "any size but must take the same size in every input"
            )
        arrays.append(arr)
    return arrays


def _kind(dt: np.dtype) -> str:
    if dt.kind == "f":
        return "floating"
    if dt.kind == "b":
        return "bool"
    if dt.kind in "iu":
        return "integer"
    return dt.name


def _check_output(node: Node, k: int, arr: np.ndarray, bindings: dict[str, int]) -> None:
    t: TensorType = node.outputs[k].type
    ok = arr.ndim == t.rank
    if ok:
        for d, n in zip(t.shape, arr.shape, strict=True):
            if isinstance(d, int):
                ok = ok and d == n
            elif d.isidentifier():  # a plain symbol; expressions such as "(H)" are not checked
                ok = ok and bindings.setdefault(d, n) == n
    if not ok:
        raise ShapeError(
            f"{_where(node)} computed output %{node.outputs[k].name} of shape {arr.shape}, but its type says "
            f"{t}; the graph's types are stale or wrong: re-run type inference (graph.retype()) after "
            f"changing shapes, or fix the op's type rule"
        )


def _where(node: Node) -> str:
    if node.name:
        return f"node {node.name!r} ({node.op.value})"
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    return f"the {node.op.value} node computing {outs}"


def _fail(node: Node, what: str) -> InterpreterError:
    return InterpreterError(f"{_where(node)}: {what}")


def _execute(node: Node, args: list[np.ndarray], ctx: _Ctx) -> list[np.ndarray]:
    impl = _IMPLS[node.op]
    if node.op is not Op.OPAQUE:
        # float16 values compute in float32 (numpy's float16 kernels are slow and lose precision)
        args = [a.astype(np.float32) if a.dtype == np.float16 else a for a in args]
    try:
        # inf and nan are legitimate results (log(0), 0/0) and match torch; do not warn about them
        with np.errstate(all="ignore"):
            out = impl(node, args, ctx)
    except GraphpruneError:
        raise
    except Exception as e:
        shapes = ", ".join(f"%{v.name}: {a.shape} {a.dtype}" for v, a in zip(node.inputs, args, strict=True))
        raise InterpreterError(
            f"{_where(node)} failed: {type(e).__name__}: {e}; inputs are [{shapes}]; check the node's "
            f"attributes {node.attrs} against its input shapes"
        ) from e
    outs = list(out) if isinstance(out, list | tuple) else [out]
    if len(outs) != len(node.outputs):
        raise _fail(node, f"computed {len(outs)} outputs but the node declares {len(node.outputs)}")
    return outs


# ---------------------------------------------------------------------------------------------
# helpers shared by several ops
# ---------------------------------------------------------------------------------------------

_Impl = Callable[[Node, list[np.ndarray], _Ctx], "np.ndarray | list[np.ndarray]"]


def _cast_all(args: Sequence[np.ndarray], dt: np.dtype) -> list[np.ndarray]:
    return [a.astype(dt, copy=False) for a in args]


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel parameter ([C] or [1]) shaped to broadcast along axis 1 of a rank-`ndim` tensor."""
    return p.reshape(-1, *([1] * (ndim - 2))) if ndim >= 2 else p.reshape(-1)


def _pad_axes(x: np.ndarray, begin: Sequence[int], end: Sequence[int], first: int, **pad: Any) -> np.ndarray:
    """Pad axes first, first+1, ... by (begin, end); negative entries crop (applied after padding)."""
    width = [(0, 0)] * first + [(max(b, 0), max(e, 0)) for b, e in zip(begin, end, strict=True)]
    width += [(0, 0)] * (x.ndim - len(width))
    if any(b or e for b, e in width):
        x = np.pad(x, width, **pad)
    if any(b < 0 or e < 0 for b, e in zip(begin, end, strict=True)):
        crop = [slice(None)] * first + [
            slice(max(-b, 0), x.shape[first + i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begin, end, strict=True))
        ]
        x = x[tuple(crop)]
    return x


def _window_out(size: int, k: int, stride: int, pb: int, pe: int, dil: int, ceil: bool) -> int:
    """Output length of a sliding window (torch's rule: with ceil_mode the last window must start
    inside the input or its left padding)."""
    span = size + pb + pe - dil * (k - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pb:
        out -= 1
    return out


def _windows(
    xp: np.ndarray, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], out: Sequence[int]
) -> np.ndarray:
    """Read-only view [N, C, *out, *kernel] of the windows of a padded NC... array."""
    nsp = len(kernel)
    st = xp.strides
    shape = (*xp.shape[:2], *out, *kernel)
    strides = (
        *st[:2],
        *(st[2 + i] * stride[i] for i in range(nsp)),
        *(st[2 + i] * dilation[i] for i in range(nsp)),
    )
    return as_strided(xp, shape, strides, writeable=False)


def _tap_slices(
    tap: Sequence[int], stride: Sequence[int], dilation: Sequence[int], count: Sequence[int], offset: Sequence[int]
) -> tuple[slice, ...]:
    """Slices of the spatial axes (after N, C) touched by one kernel tap across all window positions."""
    sl = [slice(None), slice(None)]
    for t, s, d, n, o in zip(tap, stride, dilation, count, offset, strict=True):
        start = o + t * d
        sl.append(slice(start, start + (n - 1) * s + 1, s))
    return tuple(sl)


# ---------------------------------------------------------------------------------------------
# convolution and dense
# ---------------------------------------------------------------------------------------------


def _conv(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a: ConvAttrs = node.attrs
    x, w, *b = _cast_all(args, ctx.out(node))
    nsp = len(a.stride)
    n, c = x.shape[:2]
    o, g = w.shape[0], a.groups
    cg, og = c // g, o // g
    kernel = w.shape[2:]
    xp = _pad_axes(x, a.pads[:nsp], a.pads[nsp:], 2)
    out_sp = [_window_out(xp.shape[2 + i], kernel[i], a.stride[i], 0, 0, a.dilation[i], False) for i in range(nsp)]
    p, k = math.prod(out_sp), math.prod(kernel)
    # weight as [g, cg*K, og] so one batched GEMM computes every group
    wm = w.reshape(g, og, cg * k).transpose(0, 2, 1)
    y = np.empty((n, o, *out_sp), dtype=x.dtype)
    chunk = max(1, _COLS_LIMIT // max(1, p * c * k))
    # [N, C, *out, *k] -> [g, N, *out, cg, *k]: the im2col copy happens in the reshape below
    perm = (1, 0, *range(3, 3 + nsp), 2, *range(3 + nsp, 3 + 2 * nsp))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        win = _windows(xp[lo:hi], kernel, a.stride, a.dilation, out_sp)
        cols = win.reshape(hi - lo, g, cg, *out_sp, *kernel).transpose(perm).reshape(g, (hi - lo) * p, cg * k)
        r = np.matmul(cols, wm).reshape(g, hi - lo, *out_sp, og)
        y[lo:hi] = r.transpose(1, 0, nsp + 2, *range(2, nsp + 2)).reshape(hi - lo, o, *out_sp)
    if b:
        y += _per_channel(b[0], y.ndim)
    return y


def _conv_transpose(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a: ConvTransposeAttrs = node.attrs
    x, w, *b = _cast_all(args, ctx.out(node))
    nsp = len(a.stride)
    n, cin = x.shape[:2]
    sp = x.shape[2:]
    g = a.groups
    cig, og = cin // g, w.shape[1]
    kernel = w.shape[2:]
    p, k = math.prod(sp), math.prod(kernel)
    # every input pixel times every kernel tap: [g, N*P, cig] @ [g, cig, og*K]
    xm = x.reshape(n, g, cig, p).transpose(1, 0, 3, 2).reshape(g, n * p, cig)
    cols = np.matmul(xm, w.reshape(g, cig, og * k))
    # -> [N, g*og, *kernel, *sp] so each tap is one strided block to scatter-add
    cols = cols.reshape(g, n, *sp, og, *kernel)
    perm = (1, 0, nsp + 2, *range(nsp + 3, 2 * nsp + 3), *range(2, nsp + 2))
    cols = cols.transpose(perm).reshape(n, g * og, *kernel, *sp)
    # input pixel i with tap t lands at i*stride + t*dilation of the un-cropped output ("full")
    full = [(sp[i] - 1) * a.stride[i] + a.dilation[i] * (kernel[i] - 1) + 1 for i in range(nsp)]
    out_sp = [full[i] - a.pads[i] - a.pads[nsp + i] + a.output_padding[i] for i in range(nsp)]
    shift = [max(0, -a.pads[i]) for i in range(nsp)]  # room for negative begin pads
    size = [max(full[i], a.pads[i] + out_sp[i]) + shift[i] for i in range(nsp)]
    buf = np.zeros((n, g * og, *size), dtype=cols.dtype)
    for tap in itertools.product(*(range(kk) for kk in kernel)):
        buf[_tap_slices(tap, a.stride, a.dilation, sp, shift)] += cols[(slice(None), slice(None), *tap)]
    crop = tuple(slice(shift[i] + a.pads[i], shift[i] + a.pads[i] + out_sp[i]) for i in range(nsp))
    y = buf[(slice(None), slice(None), *crop)]
    if b:
        y = y + _per_channel(b[0], y.ndim)
    return y


def _linear(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, w, *b = _cast_all(args, ctx.out(node))
    y = np.matmul(x, w.T)
    return y + b[0] if b else y


def _matmul(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a, b = _cast_all(args, ctx.out(node))
    return np.matmul(a, b)


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------


def _normalize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=axes, keepdims=True)  # biased variance, as every framework's norms use
    return d / np.sqrt(var + eps)


def _batch_norm(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, scale, bias, mean, var = _cast_all(args, ctx.out(node))
    r = x.ndim
    inv = _per_channel(scale, r) / np.sqrt(_per_channel(var, r) + node.attrs.eps)
    return (x - _per_channel(mean, r)) * inv + _per_channel(bias, r)


def _layer_norm(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, *params = _cast_all(args, ctx.out(node))
    y = _normalize(x, tuple(range(node.attrs.axis, x.ndim)), node.attrs.eps)
    if params:
        y = y * params[0]
    if len(params) > 1:
        y = y + params[1]
    return y


def _rms_norm(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, *params = _cast_all(args, ctx.out(node))
    axes = tuple(range(node.attrs.axis, x.ndim))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + node.attrs.eps)
    return y * params[0] if params else y


def _group_norm(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, scale, bias = _cast_all(args, ctx.out(node))
    groups = node.attrs.num_groups
    y = _normalize(x.reshape(x.shape[0], groups, -1), (2,), node.attrs.eps).reshape(x.shape)
    return y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


def _instance_norm(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, scale, bias = _cast_all(args, ctx.out(node))
    y = _normalize(x, tuple(range(2, x.ndim)), node.attrs.eps)
    return y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


# ---------------------------------------------------------------------------------------------
# activations and unary math
# ---------------------------------------------------------------------------------------------

# math.erf/erfc are accurate to ~1 ulp; numpy has no erf and scipy is not a dependency. Element-wise
# Python calls cost ~0.1 s per million elements, which is fine for an oracle.
_ERF = np.frompyfunc(math.erf, 1, 1)
_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _erf(x: np.ndarray, fn: np.ufunc = _ERF) -> np.ndarray:
    return np.asarray(fn(x.astype(np.float64)), dtype=np.float64).astype(x.dtype, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3)))
    if approximate == "none":
        # 1 + erf(z) == erfc(-z), without the cancellation that 1 + erf(z) suffers for negative x; the
        # argument is formed in float64 too, since the tail amplifies its rounding error ~2|z| times
        x64 = x.astype(np.float64)
        return (0.5 * x64 * _erf(-x64 / math.sqrt(2), _ERFC)).astype(x.dtype, copy=False)
    raise ValueError(f"unknown gelu approximation {approximate!r}; expected 'none' or 'tanh'")


def _clip(x: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    # np.maximum/np.minimum propagate nan like torch.clamp
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return x


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # all -inf rows give nan below, like torch; no inf - inf here
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def _unary(fn: Callable[[np.ndarray, Any], np.ndarray]) -> _Impl:
    def impl(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
        return fn(args[0].astype(ctx.out(node), copy=False), node.attrs)

    return impl


_UNARY: dict[Op, Callable[[np.ndarray, Any], np.ndarray]] = {
    Op.RELU: lambda x, a: np.maximum(x, 0),
    Op.LEAKY_RELU: lambda x, a: np.where(x >= 0, x, a.alpha * x),
    Op.GELU: lambda x, a: _gelu(x, a.approximate),
    Op.SILU: lambda x, a: x * _sigmoid(x),
    Op.SIGMOID: lambda x, a: _sigmoid(x),
    Op.TANH: lambda x, a: np.tanh(x),
    Op.HARD_SWISH: lambda x, a: x * np.clip(x + 3, 0, 6) / 6,
    Op.HARD_SIGMOID: lambda x, a: np.clip(a.alpha * x + a.beta, 0, 1),
    Op.CLIP: lambda x, a: _clip(x, a.min, a.max),
    Op.SOFTMAX: lambda x, a: _softmax(x, a.axis),
    Op.ERF: lambda x, a: _erf(x),
    Op.EXP: lambda x, a: np.exp(x),
    Op.LOG: lambda x, a: np.log(x),
    Op.SQRT: lambda x, a: np.sqrt(x),
    Op.RSQRT: lambda x, a: 1 / np.sqrt(x),
    Op.NEG: lambda x, a: -x,
    Op.ABS: lambda x, a: np.abs(x),
    Op.RECIPROCAL: lambda x, a: 1 / x,
    Op.SIN: lambda x, a: np.sin(x),
    Op.COS: lambda x, a: np.cos(x),
}


def _prelu(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, slope = _cast_all(args, ctx.out(node))
    s = _per_channel(slope, x.ndim)
    return np.where(x >= 0, x, s * x)


# ---------------------------------------------------------------------------------------------
# binary elementwise
# ---------------------------------------------------------------------------------------------


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a / b
    # integers: ONNX Div truncates toward zero (numpy's // floors)
    q = np.floor_divide(a, b)
    fix = (q * b != a) & ((a < 0) != (b < 0))
    return q + fix.astype(q.dtype)


_ARITH: dict[Op, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    Op.ADD: np.add,
    Op.SUB: np.subtract,
    Op.MUL: np.multiply,
    Op.DIV: _div,
    Op.POW: np.power,
    Op.MAXIMUM: np.maximum,
    Op.MINIMUM: np.minimum,
}
_COMPARE: dict[Op, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    Op.EQUAL: np.equal,
    Op.LESS: np.less,
    Op.GREATER: np.greater,
}


def _binary(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a, b = args
    if node.op in _COMPARE:
        dt = np.result_type(a.dtype, b.dtype)
        return _COMPARE[node.op](a.astype(dt, copy=False), b.astype(dt, copy=False))
    # compute in the declared result dtype: a float32 tensor times a float64 scalar constant stays float32
    a, b = _cast_all(args, ctx.out(node))
    return _ARITH[node.op](a, b)


def _where_op(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    cond, a, b = args
    dt = ctx.out(node)
    return np.where(cond.astype(bool, copy=False), a.astype(dt, copy=False), b.astype(dt, copy=False))


# ---------------------------------------------------------------------------------------------
# data movement
# ---------------------------------------------------------------------------------------------


def _concat(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    return np.concatenate(_cast_all(args, ctx.out(node)), axis=node.attrs.axis)


def _split(node: Node, args: list[np.ndarray], ctx: _Ctx) -> list[np.ndarray]:
    cuts = np.cumsum(node.attrs.sizes)[:-1]
    return np.split(args[0], cuts, axis=node.attrs.axis)


def _slice(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a = node.attrs
    x = args[0]
    # end == -1 means "before index 0" (only meaningful for a negative step), never python's "last"
    stop = a.end if a.end >= 0 else (None if a.step < 0 else 0)
    index = [slice(None)] * x.ndim
    index[a.axis] = slice(a.start, stop, a.step)
    return x[tuple(index)]


def _gather(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    data, idx = args
    # np.take wraps negative indices like python and raises IndexError out of range
    return np.take(data, idx.astype(np.intp, copy=False), axis=node.attrs.axis)


def _reshape(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x = args[0]
    target = [x.shape[i] if t == 0 else t for i, t in enumerate(node.attrs.shape)]
    return x.reshape(target)


def _expand(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x = args[0]
    shape = node.attrs.shape
    off = len(shape) - x.ndim
    target = [x.shape[i - off] if (t == -1 and i >= off) else t for i, t in enumerate(shape)]
    # bidirectional broadcast (ONNX Expand): a target 1 keeps the input's larger size
    return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(target)))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge"}


def _pad(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a = node.attrs
    x = args[0]
    r = x.ndim
    if a.mode not in _PAD_MODES:
        raise _fail(node, f"unknown pad mode {a.mode!r}; expected one of {sorted(_PAD_MODES)}")
    extra: dict[str, Any] = {"constant_values": a.value} if a.mode == "constant" else {}
    return _pad_axes(x, a.pads[:r], a.pads[r:], 0, mode=_PAD_MODES[a.mode], **extra)


def _source_coords(mode: str, out_size: int, in_size: int, scale: float | None, dtype: type = np.float64) -> np.ndarray:
    """ONNX Resize's x_original for every output index along one axis, computed in `dtype`."""
    f = np.dtype(dtype).type
    x = np.arange(out_size, dtype=dtype)
    if scale is not None:
        s = f(scale)
    elif dtype is np.float32:
        s = f(out_size) / f(in_size)  # runtimes form the scale first, in float32
    else:
        s = None

    def inv(t: np.ndarray) -> np.ndarray:
        # with no given scale, t * in / out is exact where t / (out / in) would round twice
        return t / s if s is not None else t * f(in_size) / f(out_size)

    half = f(0.5)
    if mode == "half_pixel":
        return inv(x + half) - half
    if mode == "pytorch_half_pixel":
        return inv(x + half) - half if out_size > 1 else np.zeros(out_size, dtype)
    if mode == "align_corners":
        return x * f(in_size - 1) / f(out_size - 1) if out_size > 1 else np.zeros(out_size, dtype)
    if mode == "asymmetric":
        return inv(x)
    raise ValueError(
        f"unknown coordinate_transformation {mode!r}; expected half_pixel, pytorch_half_pixel, "
        f"align_corners or asymmetric"
    )


_ROUND: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "floor": np.floor,
    "ceil": np.ceil,
    "round_prefer_floor": lambda v: np.ceil(v - 0.5),
    "round_prefer_ceil": lambda v: np.floor(v + 0.5),
}


def _resize(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a: ResizeAttrs = node.attrs
    x = args[0].astype(ctx.out(node), copy=False)
    if a.mode not in ("nearest", "linear"):
        raise _fail(node, f"unsupported resize mode {a.mode!r}; expected nearest or linear")
    if a.mode == "nearest" and a.nearest_mode not in _ROUND:
        raise _fail(node, f"unknown nearest_mode {a.nearest_mode!r}; expected one of {sorted(_ROUND)}")
    # separable: resample one spatial axis at a time
    for i, out_size in enumerate(a.sizes):
        axis = 2 + i
        in_size = x.shape[axis]
        scale = float(a.scales[i]) if a.scales else None
        if a.mode == "nearest":
            # torch and onnxruntime pick nearest pixels from float32 coordinates; where the exact
            # coordinate is a whole or half number, float64 would round to a different pixel
            src = _source_coords(a.coordinate_transformation, out_size, in_size, scale, np.float32)
            idx = np.clip(_ROUND[a.nearest_mode](src), 0, in_size - 1).astype(np.intp)
            x = np.take(x, idx, axis=axis)
            continue
        src = np.clip(_source_coords(a.coordinate_transformation, out_size, in_size, scale), 0, in_size - 1)
        lo = np.floor(src).astype(np.intp)
        hi = np.minimum(lo + 1, in_size - 1)
        frac = (src - lo).astype(x.dtype).reshape(-1, *([1] * (x.ndim - axis - 1)))
        x0, x1 = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
        x = x0 + (x1 - x0) * frac
    return x


def _pixel_shuffle(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, r = args[0], node.attrs.factor
    n, c, h, w = x.shape
    # torch: channel c*r*r + i*r + j moves to pixel (h*r + i, w*r + j) (ONNX DepthToSpace mode CRD)
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


def _pixel_unshuffle(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    x, r = args[0], node.attrs.factor
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)


def _cast(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    # float -> int truncates toward zero (C casts), like torch and ONNX
    return args[0].astype(ctx.storage(node.attrs.dtype))


# ---------------------------------------------------------------------------------------------
# pooling and reduction
# ---------------------------------------------------------------------------------------------


def _pool_geometry(x: np.ndarray, a: PoolAttrs) -> tuple[list[int], list[int]]:
    """Output sizes and the extra end padding that ceil_mode windows reach past the padded input."""
    nsp = len(a.kernel)
    out, extra = [], []
    for i in range(nsp):
        size, pb, pe = x.shape[2 + i], a.pads[i], a.pads[nsp + i]
        o = _window_out(size, a.kernel[i], a.stride[i], pb, pe, a.dilation[i], a.ceil_mode)
        reach = (o - 1) * a.stride[i] + a.dilation[i] * (a.kernel[i] - 1) + 1
        out.append(o)
        extra.append(max(0, reach - (size + pb + pe)))
    return out, extra


def _max_pool(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a: PoolAttrs = node.attrs
    x = args[0]
    nsp = len(a.kernel)
    out, extra = _pool_geometry(x, a)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    ends = [a.pads[nsp + i] + extra[i] for i in range(nsp)]
    xp = _pad_axes(x, a.pads[:nsp], ends, 2, mode="constant", constant_values=fill)
    y: np.ndarray | None = None
    for tap in itertools.product(*(range(k) for k in a.kernel)):
        v = xp[_tap_slices(tap, a.stride, a.dilation, out, [0] * nsp)]
        y = v.copy() if y is None else np.maximum(y, v)
    assert y is not None
    return y


def _avg_pool(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a: PoolAttrs = node.attrs
    x = args[0].astype(ctx.out(node), copy=False)
    nsp = len(a.kernel)
    out, extra = _pool_geometry(x, a)
    ends = [a.pads[nsp + i] + extra[i] for i in range(nsp)]
    xp = _pad_axes(x, a.pads[:nsp], ends, 2, mode="constant", constant_values=0)
    total = np.zeros((*x.shape[:2], *out), dtype=x.dtype)
    for tap in itertools.product(*(range(k) for k in a.kernel)):
        total += xp[_tap_slices(tap, a.stride, a.dilation, out, [0] * nsp)]
    # Divisor: the taps inside the input (count_include_pad=False) or inside input + explicit pads
    # (True). Either way taps in the ceil_mode overhang never count, as in torch and ONNX. The window
    # is a box, so the count is a product of per-axis counts.
    divisor = np.ones((1, 1, *([1] * nsp)), dtype=x.dtype)
    for i in range(nsp):
        size, pb, pe = x.shape[2 + i], a.pads[i], a.pads[nsp + i]
        pos = np.arange(out[i])[:, None] * a.stride[i] - pb + np.arange(a.kernel[i])[None, :] * a.dilation[i]
        lo, hi = (-pb, size + pe) if a.count_include_pad else (0, size)
        count = ((pos >= lo) & (pos < hi)).sum(axis=1).astype(x.dtype)
        divisor = divisor * count.reshape(-1, *([1] * (nsp - 1 - i)))
    return total / divisor


def _adaptive_avg_pool(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a: AdaptivePoolAttrs = node.attrs
    x = args[0].astype(ctx.out(node), copy=False)
    # torch's bins: [floor(i*L/out), ceil((i+1)*L/out)); a box average is a chain of per-axis averages,
    # each a small averaging matrix (no cumulative sums, which would lose precision)
    for i, out in enumerate(a.output_size):
        axis = 2 + i
        size = x.shape[axis]
        avg = np.zeros((out, size), dtype=x.dtype)
        for j in range(out):
            lo, hi = (j * size) // out, -(-((j + 1) * size) // out)
            avg[j, lo:hi] = 1.0 / (hi - lo)
        x = np.moveaxis(np.tensordot(x, avg, axes=([axis], [1])), -1, axis)
    return x


def _reduce(fn: Callable[..., np.ndarray]) -> _Impl:
    def impl(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
        x = args[0].astype(ctx.out(node), copy=False)
        return fn(x, axis=tuple(node.attrs.axes), keepdims=node.attrs.keepdims)

    return impl


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


def _attention(node: Node, args: list[np.ndarray], ctx: _Ctx) -> np.ndarray:
    a: AttentionAttrs = node.attrs
    dt = ctx.out(node)
    q, k, v = _cast_all(args[:3], dt)
    if a.enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        # each kv head serves q_heads / kv_heads consecutive query heads (torch's repeat_interleave)
        rep = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, rep, axis=-3), np.repeat(v, rep, axis=-3)
    scale = a.scale if a.scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, dtype=dt)
    if a.is_causal:
        length, src = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((length, src), dtype=bool)), scores, -np.inf)
    if len(args) > 3:
        mask = args[3]
        if mask.dtype == bool:
            scores = np.where(mask, scores, -np.inf)  # True keeps the position
        else:
            scores = scores + mask.astype(dt, copy=False)
    return np.matmul(_softmax(scores, -1), v)


# ---------------------------------------------------------------------------------------------
# opaque ops
# ---------------------------------------------------------------------------------------------


def _opaque(node: Node, args: list[np.ndarray], ctx: _Ctx) -> list[np.ndarray]:
    call = opaque.decode(node.attrs)
    if isinstance(call, opaque.TorchCall):
        return _run_torch(node, call, args)
    return _run_onnx(node, call, args)


def _run_torch(node: Node, call: opaque.TorchCall, args: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    fn: Any = torch.ops
    for part in call.target.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise _fail(node, f"torch has no op {call.target!r}; the model needs a torch that provides it")
    # Copies: torch.from_numpy needs writable memory and must not alias the interpreter's arrays. In
    # float64 mode floating values are float64 already (the run's storage policy), so the op runs in it.
    tensors = [torch.from_numpy(np.array(a)) for a in args]

    def build(v: Any) -> Any:
        if isinstance(v, dict):
            if "$input" in v:
                return tensors[int(v["$input"])]
            if "$dtype" in v:
                return getattr(torch, v["$dtype"])
            return {key: build(x) for key, x in v.items()}
        if isinstance(v, list):
            return [build(x) for x in v]
        return v

    try:
        with torch.no_grad():
            result = fn(*build(call.args), **build(call.kwargs))
    except Exception as e:
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in tensors)
        raise _fail(node, f"torch op {call.target} failed on inputs [{shapes}]: {type(e).__name__}: {e}") from e
    results = list(result) if isinstance(result, list | tuple) else [result]
    return [r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r) for r in results]


def _run_onnx(node: Node, call: opaque.OnnxCall, args: list[np.ndarray]) -> list[np.ndarray]:
    # onnxruntime lacks float64 kernels for many ops, so the node runs in the graph's declared dtypes
    # and the run's float64 policy then widens the results: in float64 mode an opaque ONNX op is only
    # as exact as its original dtype.
    feeds = [a.astype(v.type.dtype.numpy, copy=False) for v, a in zip(node.inputs, args, strict=True)]
    in_sig = tuple((a.shape, a.dtype.str) for a in feeds)
    out_sig = tuple((o.type.dtype.numpy.str, tuple(o.type.shape)) for o in node.outputs)
    session, names = onnx_node_session(node.attrs.payload, in_sig, out_sig)
    return list(session.run(None, dict(zip(names, feeds, strict=True))))


@functools.lru_cache(maxsize=256)
def onnx_node_session(payload: str, in_sig: tuple[Any, ...], out_sig: tuple[Any, ...]) -> tuple[Any, list[str]]:
    """A cached onnxruntime session running one opaque node (keyed by payload and concrete types, so it
    survives graph copies and never goes stale)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from .ir.ops import OpaqueAttrs

    call = opaque.decode(OpaqueAttrs("onnx", "", payload))
    assert isinstance(call, opaque.OnnxCall)
    original = onnx.NodeProto()
    original.ParseFromString(call.node)
    node = onnx.NodeProto()
    node.CopyFrom(original)
    in_names: list[str] = []
    for j, name in enumerate(original.input):
        if name:  # empty names are absent optional inputs and stay empty
            node.input[j] = f"in{len(in_names)}"
            in_names.append(node.input[j])
    out_names: list[str] = []
    for j, name in enumerate(original.output):
        if name:
            node.output[j] = f"out{len(out_names)}"
            out_names.append(node.output[j])
    if len(in_names) != len(in_sig) or len(out_names) != len(out_sig):
        raise ValueError(
            f"opaque ONNX node {original.op_type!r} has {len(in_names)} inputs and {len(out_names)} outputs "
            f"but the IR node has {len(in_sig)} and {len(out_sig)}; the frontend recorded it wrongly"
        )
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), list(shape))
        for n, (shape, dt) in zip(in_names, in_sig, strict=True)
    ]
    outputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), list(shape))
        for n, (dt, shape) in zip(out_names, out_sig, strict=True)
    ]
    graph = helper.make_graph([node], "opaque", inputs, outputs)
    opsets = [helper.make_opsetid(domain, version) for domain, version in call.opsets.items()]
    model = helper.make_model(graph, opset_imports=opsets)
    # the lowest IR version the opsets allow: onnxruntime may not read the installed onnx's newest one
    model.ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the interpreter reports failures itself
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, in_names


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------

_IMPLS: dict[Op, _Impl] = {
    Op.CONV: _conv,
    Op.CONV_TRANSPOSE: _conv_transpose,
    Op.LINEAR: _linear,
    Op.MATMUL: _matmul,
    Op.BATCH_NORM: _batch_norm,
    Op.LAYER_NORM: _layer_norm,
    Op.GROUP_NORM: _group_norm,
    Op.INSTANCE_NORM: _instance_norm,
    Op.RMS_NORM: _rms_norm,
    Op.PRELU: _prelu,
    Op.WHERE: _where_op,
    Op.CONCAT: _concat,
    Op.SPLIT: _split,
    Op.SLICE: _slice,
    Op.GATHER: _gather,
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: lambda node, args, ctx: np.transpose(args[0], node.attrs.perm),
    Op.SQUEEZE: lambda node, args, ctx: np.squeeze(args[0], axis=tuple(node.attrs.axes)),
    Op.UNSQUEEZE: lambda node, args, ctx: np.expand_dims(args[0], tuple(node.attrs.axes)),
    Op.EXPAND: _expand,
    Op.PAD: _pad,
    Op.RESIZE: _resize,
    Op.PIXEL_SHUFFLE: _pixel_shuffle,
    Op.PIXEL_UNSHUFFLE: _pixel_unshuffle,
    Op.CAST: _cast,
    Op.MAX_POOL: _max_pool,
    Op.AVG_POOL: _avg_pool,
    Op.ADAPTIVE_AVG_POOL: _adaptive_avg_pool,
    Op.REDUCE_MEAN: _reduce(np.mean),
    Op.REDUCE_SUM: _reduce(np.sum),
    Op.REDUCE_MAX: _reduce(np.max),
    Op.ATTENTION: _attention,
    Op.OPAQUE: _opaque,
}
for _op, _fn in _UNARY.items():
    _IMPLS[_op] = _unary(_fn)
for _op in (*_ARITH, *_COMPARE):
    _IMPLS[_op] = _binary

assert set(_IMPLS) == set(Op), f"interpreter is missing {set(Op) - set(_IMPLS)}"
