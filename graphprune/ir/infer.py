"""Type inference: output dtype, shape (static or symbolic dims) and channel axis of every op.

Symbolic dims (strings such as "N") pass through the ops that keep them; reshape copies them with 0
and infers -1 only when the symbols on both sides cancel. Errors name the node and the shapes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import ShapeError
from .ops import (
    BINARY_OPS,
    UNARY_OPS,
    AdaptivePoolAttrs,
    CastAttrs,
    ConvAttrs,
    ConvTransposeAttrs,
    ExpandAttrs,
    GatherAttrs,
    Op,
    PadAttrs,
    PoolAttrs,
    ReduceAttrs,
    ReshapeAttrs,
    ResizeAttrs,
    SliceAttrs,
    SplitAttrs,
)
from .types import Dim, DType, TensorType

if TYPE_CHECKING:
    from .graph import Node


def _fail(node: Node, what: str, fix: str = "") -> ShapeError:
    where = f"node {node.name!r} ({node.op.value})" if node.name else f"a {node.op.value} node"
    shapes = ", ".join(f"%{v.name}: {v.type}" for v in node.inputs)
    msg = f"{where}: {what}; inputs are [{shapes}]"
    return ShapeError(msg + (f"; {fix}" if fix else ""))


def broadcast_shapes(a: Sequence[Dim], b: Sequence[Dim]) -> tuple[Dim, ...] | None:
    """numpy broadcasting of two shapes, or None when they do not broadcast."""
    out: list[Dim] = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        elif isinstance(da, str) and isinstance(db, int):
            out.append(db)  # the symbol must take this size at run time
        elif isinstance(db, str) and isinstance(da, int):
            out.append(da)
        else:
            return None
    return tuple(reversed(out))


def _shift_axis(axis: int | None, in_rank: int, out_rank: int) -> int | None:
    """An axis of a right-aligned (broadcast) operand, as an axis of the output."""
    return None if axis is None else axis + out_rank - in_rank


def _result_dtype(node: Node) -> DType:
    ins = node.inputs
    if len(ins) == 1:
        return ins[0].type.dtype
    a, b = ins[0], ins[1]
    if a.type.dtype == b.type.dtype:
        return a.type.dtype
    # a float operand always wins over an integer one, scalar or not (torch: int tensor * 0.5 is float)
    if a.type.dtype.is_float != b.type.dtype.is_float:
        return a.type.dtype if a.type.dtype.is_float else b.type.dtype
    # within one category a scalar constant adapts to the tensor it meets (torch's rule for python scalars)
    if b.is_const and b.type.rank == 0:
        return a.type.dtype
    if a.is_const and a.type.rank == 0:
        return b.type.dtype
    import numpy as np

    return DType.from_numpy(np.promote_types(a.type.dtype.numpy, b.type.dtype.numpy))


def _window_out(size: Dim, k: int, stride: int, pb: int, pe: int, dil: int, ceil: bool) -> Dim:
    if isinstance(size, str):
        return size if (k, stride, pb, pe) == (1, 1, 0, 0) else f"({size})"
    span = size + pb + pe - dil * (k - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pb:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _spatial(node: Node, x: TensorType, nsp: int) -> None:
    if x.rank != nsp + 2:
        raise _fail(node, f"expected an input of rank {nsp + 2} (N, C and {nsp} spatial axes), got rank {x.rank}")


def _conv(node: Node) -> list[TensorType]:
    a: ConvAttrs = node.attrs
    x, w = node.inputs[0].type, node.inputs[1].type
    nsp = len(a.stride)
    _spatial(node, x, nsp)
    if w.rank != nsp + 2:
        raise _fail(node, f"weight must have rank {nsp + 2} (OUT, IN/groups, kernel), got {w.shape}")
    cin = x.shape[1]
    if isinstance(cin, int) and cin != w.shape[1] * a.groups:
        raise _fail(
            node,
            f"input has {cin} channels but weight expects {w.shape[1]} x groups {a.groups}",
            "the weight's axis 1 times groups must equal the input's channel count",
        )
    if isinstance(w.shape[0], int) and w.shape[0] % a.groups:
        raise _fail(node, f"{w.shape[0]} output channels are not divisible by groups {a.groups}")
    if len(node.inputs) == 3 and node.inputs[2].type.shape != (w.shape[0],):
        raise _fail(node, f"bias must have shape ({w.shape[0]},), got {node.inputs[2].type.shape}")
    sp = tuple(
        _window_out(x.shape[2 + i], int(w.shape[2 + i]), a.stride[i], a.pads[i], a.pads[nsp + i], a.dilation[i], False)
        for i in range(nsp)
    )
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], *sp), 1)]


def _conv_transpose(node: Node) -> list[TensorType]:
    a: ConvTransposeAttrs = node.attrs
    x, w = node.inputs[0].type, node.inputs[1].type
    nsp = len(a.stride)
    _spatial(node, x, nsp)
    if x.shape[1] != w.shape[0]:
        raise _fail(node, f"input has {x.shape[1]} channels but the weight's axis 0 is {w.shape[0]}")
    sp: list[Dim] = []
    for i in range(nsp):
        size = x.shape[2 + i]
        if isinstance(size, str):
            sp.append(f"({size})")
            continue
        k = int(w.shape[2 + i])
        sp.append(
            (size - 1) * a.stride[i] - a.pads[i] - a.pads[nsp + i] + a.dilation[i] * (k - 1) + a.output_padding[i] + 1
        )
    return [TensorType(x.dtype, (x.shape[0], int(w.shape[1]) * a.groups, *sp), 1)]


def _linear(node: Node) -> list[TensorType]:
    x, w = node.inputs[0].type, node.inputs[1].type
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[1]:
        raise _fail(node, f"expected x[..., {w.shape[1] if w.rank == 2 else 'IN'}] and weight[OUT, IN]")
    if len(node.inputs) == 3 and node.inputs[2].type.shape != (w.shape[0],):
        raise _fail(node, f"bias must have shape ({w.shape[0]},), got {node.inputs[2].type.shape}")
    shape = (*x.shape[:-1], w.shape[0])
    return [TensorType(x.dtype, shape, len(shape) - 1)]


def _matmul(node: Node) -> list[TensorType]:
    a, b = node.inputs[0].type, node.inputs[1].type
    sa, sb = list(a.shape), list(b.shape)
    if not sa or not sb:
        raise _fail(node, "matmul operands must have rank >= 1")
    va, vb = len(sa) == 1, len(sb) == 1
    if va:
        sa = [1, *sa]
    if vb:
        sb = [*sb, 1]
    k1, k2 = sa[-1], sb[-2]
    if k1 != k2 and not (isinstance(k1, str) or isinstance(k2, str)):
        raise _fail(node, f"contraction sizes differ: {k1} vs {k2}")
    batch = broadcast_shapes(sa[:-2], sb[:-2])
    if batch is None:
        raise _fail(node, f"batch dims {sa[:-2]} and {sb[:-2]} do not broadcast")
    shape = [*batch, sa[-2], sb[-1]]
    if va:
        shape.pop(-2)
    if vb:
        shape.pop(-1)
    return [TensorType(_result_dtype(node), tuple(shape), len(shape) - 1 if shape else None)]


def _same(node: Node) -> list[TensorType]:
    return [node.inputs[0].type]


def _binary(node: Node) -> list[TensorType]:
    a, b = node.inputs[0].type, node.inputs[1].type
    shape = broadcast_shapes(a.shape, b.shape)
    if shape is None:
        raise _fail(node, f"shapes {a.shape} and {b.shape} do not broadcast", "insert a reshape or expand")
    # the channel axis comes from the operand that has one, preferring the higher rank
    src = max((t for t in (a, b) if t.channel_axis is not None), key=lambda t: t.rank, default=None)
    ch = _shift_axis(src.channel_axis, src.rank, len(shape)) if src else None
    dtype = DType.BOOL if node.op in (Op.EQUAL, Op.LESS, Op.GREATER) else _result_dtype(node)
    return [TensorType(dtype, shape, ch)]


def _where(node: Node) -> list[TensorType]:
    c, a, b = (v.type for v in node.inputs)
    shape = broadcast_shapes(c.shape, a.shape)
    shape = broadcast_shapes(shape, b.shape) if shape is not None else None
    if shape is None:
        raise _fail(node, "condition and values do not broadcast")
    src = max((t for t in (a, b) if t.channel_axis is not None), key=lambda t: t.rank, default=None)
    dtype = a.dtype if not (node.inputs[1].is_const and a.rank == 0) else b.dtype
    return [TensorType(dtype, shape, _shift_axis(src.channel_axis, src.rank, len(shape)) if src else None)]


def _channel_first(node: Node) -> list[TensorType]:
    x = node.inputs[0].type
    if x.rank < 2:
        raise _fail(node, f"expected an input with a channel axis 1 (rank >= 2), got rank {x.rank}")
    for p in node.inputs[1:]:
        if p.type.rank != 1 or (p.type.shape[0] != x.shape[1] and p.type.shape[0] != 1):
            raise _fail(node, f"parameter %{p.name} must have shape ({x.shape[1]},), got {p.type.shape}")
    return [TensorType(x.dtype, x.shape, 1)]


def _last_axes_norm(node: Node) -> list[TensorType]:
    x = node.inputs[0].type
    axis = node.attrs.axis
    if not 0 <= axis < x.rank:
        raise _fail(node, f"normalised axis {axis} is out of range for rank {x.rank}")
    for p in node.inputs[1:]:
        if tuple(p.type.shape) != tuple(x.shape[axis:]):
            raise _fail(node, f"parameter %{p.name} must have shape {tuple(x.shape[axis:])}, got {p.type.shape}")
    ch = x.channel_axis if x.channel_axis is not None else x.rank - 1
    return [TensorType(x.dtype, x.shape, ch)]


def _prelu(node: Node) -> list[TensorType]:
    x, s = node.inputs[0].type, node.inputs[1].type
    if s.numel() not in (1, x.shape[1] if x.rank > 1 else 1):
        raise _fail(node, f"slope must have 1 or {x.shape[1] if x.rank > 1 else 1} elements, got {s.shape}")
    return [x]


def _concat(node: Node) -> list[TensorType]:
    axis: int = node.attrs.axis
    first = node.inputs[0].type
    total: Dim = 0
    for v in node.inputs:
        t = v.type
        if t.rank != first.rank or any(
            t.shape[i] != first.shape[i] for i in range(first.rank) if i != axis
        ):
            raise _fail(node, f"all inputs must match outside axis {axis}; %{v.name} is {t.shape}")
        d = t.shape[axis]
        total = total + d if isinstance(total, int) and isinstance(d, int) else f"({total}+{d})"
    shape = list(first.shape)
    shape[axis] = total
    return [TensorType(first.dtype, tuple(shape), first.channel_axis)]


def _split(node: Node) -> list[TensorType]:
    a: SplitAttrs = node.attrs
    x = node.inputs[0].type
    if x.shape[a.axis] != sum(a.sizes):
        raise _fail(node, f"sizes {a.sizes} add up to {sum(a.sizes)}, but axis {a.axis} has {x.shape[a.axis]}")
    outs = []
    for s in a.sizes:
        shape = list(x.shape)
        shape[a.axis] = s
        outs.append(TensorType(x.dtype, tuple(shape), x.channel_axis))
    return outs


def _slice(node: Node) -> list[TensorType]:
    a: SliceAttrs = node.attrs
    x = node.inputs[0].type
    size = x.shape[a.axis]
    if a.step == 0:
        raise _fail(node, "slice step must not be 0")
    if isinstance(size, str):
        raise _fail(node, f"cannot slice the symbolic axis {a.axis} ({size})", "slice a static axis")
    # a negative step starts at an existing element (size - 1 at most), else range() would count index `size`
    last_start = size if a.step > 0 else size - 1
    n = len(range(a.start, a.end, a.step)) if (0 <= a.start <= last_start and -1 <= a.end <= size) else -1
    if n < 0:
        raise _fail(node, f"slice [{a.start}:{a.end}:{a.step}] is out of range for axis {a.axis} of size {size}")
    shape = list(x.shape)
    shape[a.axis] = n
    return [TensorType(x.dtype, tuple(shape), x.channel_axis)]


def _gather(node: Node) -> list[TensorType]:
    a: GatherAttrs = node.attrs
    data, idx = node.inputs[0], node.inputs[1].type
    d = data.type
    if idx.dtype.is_float:
        raise _fail(node, f"indices must be integers, got {idx.dtype.value}")
    shape = (*d.shape[: a.axis], *idx.shape, *d.shape[a.axis + 1 :])
    if data.is_const and a.axis == 0:
        ch = len(shape) - 1 if d.rank > 1 else None  # an embedding table: features are the last axis
    elif d.channel_axis is None or d.channel_axis == a.axis:
        ch = None
    else:
        ch = d.channel_axis if d.channel_axis < a.axis else d.channel_axis + idx.rank - 1
    return [TensorType(d.dtype, shape, ch)]


def _sym_product(dims: Sequence[Dim]) -> tuple[int, Counter[str]]:
    p, syms = 1, Counter[str]()
    for d in dims:
        if isinstance(d, int):
            p *= d
        else:
            syms[d] += 1
    return p, syms


def reshape_target(node: Node, in_shape: Sequence[Dim], target: Sequence[int]) -> tuple[Dim, ...]:
    out: list[Dim] = [in_shape[i] if t == 0 else t for i, t in enumerate(target)]
    if sum(1 for t in target if t == -1) > 1:
        raise _fail(node, f"reshape target {tuple(target)} has more than one -1")
    p_in, s_in = _sym_product(in_shape)
    known = [d for d in out if d != -1]
    p_out, s_out = _sym_product(known)
    if -1 in out:
        rest = s_in - s_out
        if s_out - s_in:
            raise _fail(node, f"cannot reshape {tuple(in_shape)} to {tuple(target)}")
        if p_out == 0 or p_in % p_out:
            raise _fail(node, f"cannot reshape {tuple(in_shape)} ({p_in} elements) to {tuple(target)}")
        q = p_in // p_out
        if not rest:
            out[out.index(-1)] = q
        elif q == 1 and sum(rest.values()) == 1:
            out[out.index(-1)] = next(iter(rest))
        else:
            raise _fail(
                node,
                f"the -1 in reshape target {tuple(target)} mixes the symbolic dims {dict(rest)} of "
                f"{tuple(in_shape)} with static sizes",
                "keep symbolic dims in their own axes (use 0 to copy them)",
            )
    elif (p_in, s_in) != (p_out, s_out):
        raise _fail(node, f"cannot reshape {tuple(in_shape)} to {tuple(target)}: element counts differ")
    return tuple(out)


def reshape_channel_axis(in_shape: Sequence[Dim], ch: int | None, out_shape: Sequence[Dim]) -> int | None:
    """Where the channel axis lands after a reshape: the output axis where its span starts."""
    if ch is None:
        return None
    before = _sym_product(in_shape[:ch])
    starts = [j for j in range(len(out_shape)) if _sym_product(out_shape[:j]) == before]
    if starts:
        # size-1 axes share their prefix product with the next axis: the span starts at the first
        # candidate that is not 1 ([1,32,1,1]c1 -> [1,32] keeps the channels on axis 1)
        if in_shape[ch] != 1:
            return next((j for j in starts if out_shape[j] != 1), starts[0])
        return starts[0]
    # the channel axis was merged into a wider axis: find the output axis that contains it
    p_before, s_before = before
    for j in range(len(out_shape)):
        p, s = _sym_product(out_shape[: j + 1])
        if not (s_before - s) and p % max(p_before, 1) == 0 and p > p_before:
            return j
    return None


def _reshape(node: Node) -> list[TensorType]:
    a: ReshapeAttrs = node.attrs
    x = node.inputs[0].type
    shape = reshape_target(node, x.shape, a.shape)
    return [TensorType(x.dtype, shape, reshape_channel_axis(x.shape, x.channel_axis, shape))]


def _transpose(node: Node) -> list[TensorType]:
    perm = node.attrs.perm
    x = node.inputs[0].type
    if sorted(perm) != list(range(x.rank)):
        raise _fail(node, f"perm {perm} is not a permutation of range({x.rank})")
    ch = None if x.channel_axis is None else perm.index(x.channel_axis)
    return [TensorType(x.dtype, tuple(x.shape[p] for p in perm), ch)]


def _squeeze(node: Node) -> list[TensorType]:
    axes = node.attrs.axes
    x = node.inputs[0].type
    if any(x.shape[i] != 1 for i in axes):
        raise _fail(node, f"squeeze axes {axes} must have size 1 in {x.shape}")
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    ch = x.channel_axis
    if ch is not None:
        ch = None if ch in axes else ch - sum(1 for i in axes if i < ch)
    return [TensorType(x.dtype, shape, ch)]


def _unsqueeze(node: Node) -> list[TensorType]:
    axes = sorted(node.attrs.axes)
    x = node.inputs[0].type
    shape = list(x.shape)
    for i in axes:
        shape.insert(i, 1)
    ch = x.channel_axis
    if ch is not None:
        kept = [i for i in range(len(shape)) if i not in axes]
        ch = kept[ch]
    return [TensorType(x.dtype, tuple(shape), ch)]


def _expand(node: Node) -> list[TensorType]:
    a: ExpandAttrs = node.attrs
    x = node.inputs[0].type
    off = len(a.shape) - x.rank
    if off < 0:
        raise _fail(node, f"expand target {a.shape} has lower rank than the input {x.shape}")
    target = [x.shape[i - off] if (t == -1 and i >= off) else t for i, t in enumerate(a.shape)]
    shape = broadcast_shapes(x.shape, target)
    if shape is None:
        raise _fail(node, f"cannot expand {x.shape} to {a.shape}")
    return [TensorType(x.dtype, shape, _shift_axis(x.channel_axis, x.rank, len(shape)))]


def _pad(node: Node) -> list[TensorType]:
    a: PadAttrs = node.attrs
    x = node.inputs[0].type
    if len(a.pads) != 2 * x.rank:
        raise _fail(node, f"pads must have 2 x rank = {2 * x.rank} entries, got {len(a.pads)}")
    shape = tuple(
        d + a.pads[i] + a.pads[x.rank + i] if isinstance(d, int) else d for i, d in enumerate(x.shape)
    )
    return [TensorType(x.dtype, shape, x.channel_axis)]


def _resize(node: Node) -> list[TensorType]:
    a: ResizeAttrs = node.attrs
    x = node.inputs[0].type
    if len(a.sizes) != x.rank - 2:
        raise _fail(node, f"resize gives {len(a.sizes)} spatial sizes for an input of rank {x.rank}")
    return [TensorType(x.dtype, (*x.shape[:2], *a.sizes), 1)]


def _pixel(node: Node) -> list[TensorType]:
    r = node.attrs.factor
    x = node.inputs[0].type
    if x.rank != 4:
        raise _fail(node, f"expected an NCHW input, got rank {x.rank}")
    n, c, h, w = x.shape
    if node.op is Op.PIXEL_SHUFFLE:
        if isinstance(c, int) and c % (r * r):
            raise _fail(node, f"{c} channels are not divisible by factor^2 = {r * r}")
        shape = (n, c // (r * r) if isinstance(c, int) else c, _mul(h, r), _mul(w, r))
    else:
        if any(isinstance(d, int) and d % r for d in (h, w)):
            raise _fail(node, f"spatial size {h}x{w} is not divisible by factor {r}")
        shape = (n, c * r * r if isinstance(c, int) else c, _div(h, r), _div(w, r))
    return [TensorType(x.dtype, shape, 1)]


def _mul(d: Dim, k: int) -> Dim:
    return d * k if isinstance(d, int) else f"({d}*{k})"


def _div(d: Dim, k: int) -> Dim:
    return d // k if isinstance(d, int) else f"({d}/{k})"


def _cast(node: Node) -> list[TensorType]:
    a: CastAttrs = node.attrs
    x = node.inputs[0].type
    return [TensorType(a.dtype, x.shape, x.channel_axis)]


def _pool(node: Node) -> list[TensorType]:
    a: PoolAttrs = node.attrs
    x = node.inputs[0].type
    nsp = len(a.kernel)
    _spatial(node, x, nsp)
    sp = tuple(
        _window_out(x.shape[2 + i], a.kernel[i], a.stride[i], a.pads[i], a.pads[nsp + i], a.dilation[i], a.ceil_mode)
        for i in range(nsp)
    )
    return [TensorType(x.dtype, (*x.shape[:2], *sp), 1)]


def _adaptive_pool(node: Node) -> list[TensorType]:
    a: AdaptivePoolAttrs = node.attrs
    x = node.inputs[0].type
    _spatial(node, x, len(a.output_size))
    return [TensorType(x.dtype, (*x.shape[:2], *a.output_size), 1)]


def _reduce(node: Node) -> list[TensorType]:
    a: ReduceAttrs = node.attrs
    x = node.inputs[0].type
    if any(not 0 <= i < x.rank for i in a.axes):
        raise _fail(node, f"reduce axes {a.axes} are out of range for rank {x.rank}")
    ch = x.channel_axis
    if a.keepdims:
        shape = tuple(1 if i in a.axes else d for i, d in enumerate(x.shape))
        ch = None if ch in a.axes else ch
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in a.axes)
        if ch is not None:
            ch = None if ch in a.axes else ch - sum(1 for i in a.axes if i < ch)
    return [TensorType(x.dtype, shape, ch)]


def _softmax(node: Node) -> list[TensorType]:
    x = node.inputs[0].type
    if not 0 <= node.attrs.axis < x.rank:
        raise _fail(node, f"softmax axis {node.attrs.axis} is out of range for rank {x.rank}")
    return [x]


def _attention(node: Node) -> list[TensorType]:
    q, k, v = (i.type for i in node.inputs[:3])
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        raise _fail(node, "q, k and v must have the same rank >= 2 ([..., L, E], [..., S, E], [..., S, Ev])")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise _fail(node, "q and k must share E, and k and v must share S")
    if node.attrs.enable_gqa and q.rank >= 3:
        hq, hk = q.shape[-3], k.shape[-3]
        if isinstance(hq, int) and isinstance(hk, int) and hq % hk:
            raise _fail(node, f"{hq} query heads are not a multiple of {hk} key/value heads")
        batch = q.shape[:-2]
    else:
        b = broadcast_shapes(q.shape[:-2], k.shape[:-2])
        if b is None:
            raise _fail(node, "batch dims of q and k do not broadcast")
        batch = b
    shape = (*batch, q.shape[-2], v.shape[-1])
    return [TensorType(q.dtype, shape, len(shape) - 1)]


def _opaque(node: Node) -> list[TensorType]:
    if node.outputs:
        return [o.type for o in node.outputs]
    raise _fail(node, "an opaque op has no type rules", "the frontend must give its output types")


_RULES: dict[Op, Callable[[Node], list[TensorType]]] = {
    Op.CONV: _conv,
    Op.CONV_TRANSPOSE: _conv_transpose,
    Op.LINEAR: _linear,
    Op.MATMUL: _matmul,
    Op.BATCH_NORM: _channel_first,
    Op.GROUP_NORM: _channel_first,
    Op.INSTANCE_NORM: _channel_first,
    Op.LAYER_NORM: _last_axes_norm,
    Op.RMS_NORM: _last_axes_norm,
    Op.PRELU: _prelu,
    Op.SOFTMAX: _softmax,
    Op.WHERE: _where,
    Op.CONCAT: _concat,
    Op.SPLIT: _split,
    Op.SLICE: _slice,
    Op.GATHER: _gather,
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.SQUEEZE: _squeeze,
    Op.UNSQUEEZE: _unsqueeze,
    Op.EXPAND: _expand,
    Op.PAD: _pad,
    Op.RESIZE: _resize,
    Op.PIXEL_SHUFFLE: _pixel,
    Op.PIXEL_UNSHUFFLE: _pixel,
    Op.CAST: _cast,
    Op.MAX_POOL: _pool,
    Op.AVG_POOL: _pool,
    Op.ADAPTIVE_AVG_POOL: _adaptive_pool,
    Op.REDUCE_MEAN: _reduce,
    Op.REDUCE_SUM: _reduce,
    Op.REDUCE_MAX: _reduce,
    Op.ATTENTION: _attention,
    Op.OPAQUE: _opaque,
}
for _op in UNARY_OPS:
    _RULES.setdefault(_op, _same)
for _op in BINARY_OPS:
    _RULES.setdefault(_op, _binary)

assert set(_RULES) == set(Op), f"type rules missing for {set(Op) - set(_RULES)}"


def infer_types(node: Node) -> list[TensorType]:
    """Output types of `node` from its inputs and attributes (raises ShapeError naming the node)."""
    return _RULES[node.op](node)


def conv_macs(node: Node) -> int:
    """Multiply-accumulates of a CONV or CONV_TRANSPOSE node (symbolic dims count as 1)."""
    w = node.inputs[1].type
    k = math.prod(int(d) for d in w.shape[2:])
    if node.op is Op.CONV:
        out = node.outputs[0].type
        return out.numel() * int(w.shape[1]) * k
    x = node.inputs[0].type
    return x.numel() * int(w.shape[1]) * k

