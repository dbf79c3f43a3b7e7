"""IR Graph -> C++ source for the gprt runtime (cpp/).

The generated model.cpp is a list of kernel calls with every shape a literal, fused operators
(conv / linear / add + relu or clip), tensors in one static arena planned from liveness (no heap in
run), and the weights in one blob (embedded, or a .bin beside the library). Names from the model
never reach the source as code: tensors are `t<number>`, and node names appear only sanitised to
[A-Za-z0-9_] inside comments. The same graph gives byte-identical files.

Every node is checked before anything is emitted: an op or dtype the backend cannot lower raises a
CompileError naming the node and op.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from graphprune.ir.errors import GraphpruneError
from graphprune.ir.graph import Graph, Node, Value
from graphprune.ir.ops import Op
from graphprune.ir.types import DType

from . import packing

ALIGN = 64
CTYPE = {DType.F32: "float", DType.I64: "int64_t", DType.BOOL: "uint8_t", DType.I32: "int32_t"}
DTYPE_CODE = {DType.F32: 0, DType.I64: 1, DType.BOOL: 2, DType.I32: 3}
NBYTES = {DType.F32: 4, DType.I64: 8, DType.BOOL: 1, DType.I32: 4}

UNARY = {
    Op.RELU: "U_RELU",
    Op.LEAKY_RELU: "U_LEAKY_RELU",
    Op.SILU: "U_SILU",
    Op.SIGMOID: "U_SIGMOID",
    Op.TANH: "U_TANH",
    Op.HARD_SWISH: "U_HARD_SWISH",
    Op.HARD_SIGMOID: "U_HARD_SIGMOID",
    Op.CLIP: "U_CLIP",
    Op.ERF: "U_ERF",
    Op.EXP: "U_EXP",
    Op.LOG: "U_LOG",
    Op.SQRT: "U_SQRT",
    Op.RSQRT: "U_RSQRT",
    Op.NEG: "U_NEG",
    Op.ABS: "U_ABS",
    Op.RECIPROCAL: "U_RECIPROCAL",
    Op.SIN: "U_SIN",
    Op.COS: "U_COS",
    Op.GELU: "U_GELU",
}
BINARY = {
    Op.ADD: "B_ADD",
    Op.SUB: "B_SUB",
    Op.MUL: "B_MUL",
    Op.DIV: "B_DIV",
    Op.POW: "B_POW",
    Op.MAXIMUM: "B_MAX",
    Op.MINIMUM: "B_MIN",
    Op.EQUAL: "B_EQ",
    Op.LESS: "B_LT",
    Op.GREATER: "B_GT",
}
ALIASES = (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE)  # same bytes, new shape: no copy
FUSABLE_PRODUCERS = (Op.CONV, Op.LINEAR, Op.ADD)


# Fused chains (fuse_chain): a band's expanded and depthwise rows together take at most BAND_BYTES, and
# "auto" fuses an expand chain on one thread only when its whole expanded and depthwise tensors exceed
# FUSE_MIN_BYTES (on several, see fuse_pays). Measured on the pruned MobileNetV2 (benchmarks/RESULTS.md):
# fusing pays where those tensors spill out of the 2 MB L2 (48 x 112 x 112 expanded: 2.4 MB); below
# that, on one thread, bands only add the rows recomputed at their edges and per-band setup.
BAND_BYTES = 512 * 1024
FUSE_MIN_BYTES = 3 * 1024 * 1024 // 2
FUSE_MODES = ("auto", "on", "off")


class CompileError(GraphpruneError):
    """The graph cannot be lowered to the cpp backend (the message names the node and op)."""


def sanitize(name: str) -> str:
    """A model name as a comment-safe identifier fragment."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)[:48] or "_"


def _f(x: float) -> str:
    """A float32 literal that round-trips (inf as the runtime's constant)."""
    if math.isinf(x):
        return "gprt::kInf" if x > 0 else "-gprt::kInf"
    return repr(float(np.float32(x))) + "f"


def _ints(xs: Sequence[int]) -> str:
    return ", ".join(str(int(x)) for x in xs)


@dataclass
class Blob:
    """The weight blob: arrays at 64-byte aligned offsets, identical arrays stored once."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    seen: dict[str, int] = field(default_factory=dict)

    def add(self, arr: np.ndarray) -> int:
        data = np.ascontiguousarray(arr).tobytes()
        key = hashlib.sha256(str(arr.dtype).encode() + data).hexdigest()
        if key in self.seen:
            return self.seen[key]
        pad = -self.size % ALIGN
        self.parts.append(b"\0" * pad + data)
        self.size += pad
        off = self.size
        self.size += len(data)
        self.seen[key] = off
        return off

    def data(self) -> bytes:
        return b"".join(self.parts) + b"\0" * (-self.size % ALIGN)


@dataclass
class Plan:
    """Storage of every tensor the run reads or writes."""

    kind: dict[int, str] = field(default_factory=dict)  # id(value) -> input | const | arena | alias
    ref: dict[int, int] = field(default_factory=dict)  # input index, blob offset, arena slot, alias root id
    offset: dict[int, int] = field(default_factory=dict)  # alias -> its first element within what it views
    nbytes: dict[int, int] = field(default_factory=dict)
    dtype: dict[int, DType] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    threads: int = 1
    isa: str = "avx512"  # row of the break-even table (breakeven.py)
    # "auto": dense or sparse per layer by the break-even table; "off": all dense; a format name
    # ("csr", "block4", "block8", "nm2:4") forces it wherever it applies (tests and benchmarks)
    sparse: str = "auto"
    # [1x1 expand] -> depthwise -> 1x1 project [+ residual] chains as one banded kernel (fused_block):
    # "auto" where the expanded and depthwise tensors would not stay in L2 (FUSE_MIN_BYTES) or, on several
    # threads, where bands keep rows on one core (fuse_pays), "on" for every such chain (tests), "off" never
    fuse: str = "auto"


@dataclass
class Generated:
    header: str
    source: str
    weights: bytes
    sparse_layers: dict[str, str]  # sanitised node name -> format, for reports and tests
    arena_bytes: int


def _static(v: Value, node: Node | None = None) -> tuple[int, ...]:
    if not v.type.is_static:
        where = f"node {node.name} ({node.op.value})" if node else f"input {v.name}"
        raise CompileError(
            f"{where}: tensor {v.name} has symbolic shape {v.type.shape}; the cpp backend needs "
            "static shapes (trace or load the model with a fixed batch size)"
        )
    return tuple(int(d) for d in v.type.shape)


def _strides(shape: Sequence[int]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _bcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides of an operand broadcast to out_shape (0 on broadcast axes)."""
    shape = [1] * (len(out_shape) - len(shape)) + list(shape)
    st = _strides(shape)
    return [0 if shape[i] == 1 and out_shape[i] != 1 else st[i] for i in range(len(out_shape))]


def _coalesce(shape: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 axes and merge neighbours that every stride set walks contiguously."""
    dims = [(s, [st[i] for st in strides]) for i, s in enumerate(shape) if s != 1]
    out: list[tuple[int, list[int]]] = []
    for s, st in dims:
        if out and all(p == q * s for p, q in zip(out[-1][1], st, strict=True)):
            out[-1] = (out[-1][0] * s, st)
        else:
            out.append((s, st))
    if not out:
        out = [(1, [0] * len(strides))]
    return [s for s, _ in out], [[st[k] for _, st in out] for k in range(len(strides))]


class Lowering:
    def __init__(self, graph: Graph, options: Options) -> None:
        self.g = graph
        self.o = options
        self.blob = Blob()
        self.plan = Plan()
        self.decls: list[str] = []  # namespace-scope constants (shapes, stride tables)
        self.ws: list[str] = []  # workspace size expressions
        self.steps: list[tuple[list[str], list[Value], list[Value]]] = []  # (code lines, reads, writes)
        self.fused: set[int] = set()  # ids of nodes folded into their producer
        self.sparse_layers: dict[str, str] = {}
        self.ndecl = 0
        self.users: dict[int, int] = {}
        for n in graph.nodes:
            for v in n.inputs:
                self.users[id(v)] = self.users.get(id(v), 0) + 1
        self.outputs = {id(v) for v in graph.outputs}
        self.pos = {id(n): i for i, n in enumerate(graph.nodes)}  # topological position of every node

    # ---- storage ----
    def ptr(self, v: Value) -> str:
        """A placeholder for v's pointer, resolved once the arena is planned."""
        return f"@{id(v)}@"

    def const(self, arr: np.ndarray, ctype: str = "float") -> str:
        off = self.blob.add(arr)
        return f"(({ctype}*)(W + {off}))"

    def value_const(self, v: Value, node: Node, what: str) -> np.ndarray:
        if not v.is_const:
            raise CompileError(
                f"node {node.name} ({node.op.value}): the {what} must be a constant; the cpp "
                "backend takes weights as constants (run fold-bn/constant folding first)"
            )
        return np.asarray(v.data)

    def decl(self, ctype: str, init: str) -> str:
        name = f"kD{self.ndecl}"
        self.ndecl += 1
        self.decls.append(f"static const {ctype} {name} = {init};")
        return name

    def arr(self, xs: Sequence[int]) -> str:
        name = f"kD{self.ndecl}"
        self.ndecl += 1
        self.decls.append(f"static const int64_t {name}[{max(len(xs), 1)}] = {{{_ints(xs) or '0'}}};")
        return name

    def emit(self, node: Node, lines: list[str], reads: Sequence[Value], writes: Sequence[Value]) -> None:
        ops = node.op.value
        lines = [f"// {ops} {sanitize(node.name)}", *lines]
        self.steps.append((lines, list(reads), list(writes)))

    # ---- checks ----
    def f32(self, node: Node, *vals: Value) -> None:
        for v in vals:
            if v.type.dtype is not DType.F32:
                raise CompileError(
                    f"node {node.name} ({node.op.value}): input {v.name} is {v.type.dtype.value}; "
                    "the cpp backend computes in float32 (cast the model to float32 first)"
                )

    # ---- fusion ----
    def sole_consumer(self, v: Value) -> Node | None:
        """The one node that reads v (once), unless v is a graph output."""
        if id(v) in self.outputs or self.users.get(id(v), 0) != 1:
            return None
        (user,) = v.consumers
        return user

    def peek_act(self, node: Node) -> tuple[str, Value, Node | None]:
        """The activation `node` can fold in (a sole-consumer relu or clip), the value it then writes, and
        the activation node (None: no activation)."""
        out = node.outputs[0]
        user = self.sole_consumer(out)
        if user is not None and user.op is Op.RELU:
            return "gprt::Act{0.f, gprt::kInf}", user.outputs[0], user
        if user is not None and user.op is Op.CLIP:
            lo = -math.inf if user.attrs.min is None else user.attrs.min
            hi = math.inf if user.attrs.max is None else user.attrs.max
            return f"gprt::Act{{{_f(lo)}, {_f(hi)}}}", user.outputs[0], user
        return "gprt::kNoAct", out, None

    def fused_act(self, node: Node) -> tuple[str, Value]:
        """The activation folded into `node` (a sole-consumer relu or clip) and the value to write."""
        act, out, user = self.peek_act(node)
        if user is not None:
            self.fused.add(id(user))
        return act, out

    def residual(self, node: Node, out: Value) -> tuple[Value, Node, str, Node | None, Value] | None:
        """The residual add that the step starting at `node`, writing `out` with no activation, can fold
        in: the add is out's sole consumer and its other operand a tensor of the same type computed before
        that step. (residual, add, the add's activation, that activation's node, the value then written)."""
        user = self.sole_consumer(out)
        if user is None or user.op is not Op.ADD:
            return None
        other = [v for v in user.inputs if v is not out]
        if (
            len(other) != 1
            or other[0].is_const
            or other[0].type != out.type
            # the step sits where its first node was
            or (other[0].producer is not None and self.pos[id(other[0].producer)] >= self.pos[id(node)])
        ):
            return None
        act, value, actnode = self.peek_act(user)
        return other[0], user, act, actnode, value

    def conv_kind(self, node: Node | None) -> str | None:
        """'pw' (1x1, stride 1, no padding), 'dw' (depthwise 2-D) or None, for a float32 2-D conv with
        constant weights and bias that a fused chain can take."""
        if node is None or node.op is not Op.CONV or len(node.inputs[0].type.shape) != 4:
            return None
        x, w = node.inputs[0], node.inputs[1]
        if not all(v.type.is_static and v.type.dtype is DType.F32 for v in (x, w, node.outputs[0])):
            return None
        if not w.is_const or (len(node.inputs) > 2 and not node.inputs[2].is_const):
            return None
        a = node.attrs
        (_, c, h, wi), (_, oc, oh, ow) = _static(x), _static(node.outputs[0])
        kh, kw = w.type.shape[2:]
        if (kh, kw) == (1, 1) and tuple(a.stride) == (1, 1) and not any(a.pads) and a.groups == 1:
            return "pw" if (oh, ow) == (h, wi) else None
        if a.groups == c == oc > 1 and w.type.shape[1] == 1:
            ph, pw = a.pads[0], a.pads[1]
            (sh, sw), (dh, dw) = a.stride, a.dilation
            # every output row's and column's window must overlap the image (bands rely on it)
            inside = (
                (kh - 1) * dh >= ph and (oh - 1) * sh - ph < h and (kw - 1) * dw >= pw and (ow - 1) * sw - pw < wi
            )
            return "dw" if inside else None
        return None

    def pointwise_args(self, node: Node, act: str) -> tuple[str, str] | None:
        """(PointwiseShape, PointwiseWeights) initialisers of a 1x1 layer in a fused chain, or None for a
        format fused_block does not take (N:M)."""
        w = self.value_const(node.inputs[1], node, "weight").astype(np.float32)
        oc, c = w.shape[:2]
        w2 = w.reshape(oc, c)
        x = node.inputs[0].type.shape
        choice = self.choose(w2, int(x[2]) * int(x[3]))
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        b = self.const(np.asarray(bias.data).astype(np.float32)) if bias is not None else "nullptr"
        if choice.fmt == "dense":
            return f"{{{c}, {oc}, 0}}", f"gprt::PointwiseWeights{{{self.const(w2)}, nullptr, nullptr, {b}, {act}}}"
        if choice.fmt.startswith("nm"):
            return None
        nb = 1 if choice.fmt == "csr" else int(choice.fmt[5:])
        q = packing.pack_block(w2, nb)
        self.sparse_layers[sanitize(node.name)] = choice.fmt
        weights = (
            f"gprt::PointwiseWeights{{{self.const(q.values)}, {self.const(q.counts, 'int32_t')}, "
            f"{self.const(q.incs, 'int32_t')}, {b}, {act}}}"
        )
        return f"{{{c}, {oc}, {nb}}}", weights

    def fuse_pays(self, expand: Node | None, ds: Sequence[int], dw: Node) -> bool:
        """"auto": whether an expand chain runs faster fused. On one thread, where its expanded and depthwise
        tensors spill out of L2 (FUSE_MIN_BYTES). On several, also wherever each thread's band (one per
        thread) recomputes at most a third more expanded rows than it owns: a band's rows then stay on
        one core from the chain's input to its output, where unfused layers split channels and pixels
        in turn and moved half of every small tensor between the cores (the pruned MobileNetV2 on two
        threads: 0.73 -> 0.66 ms; 7 x 7 chains, 4-row bands recomputing half again, were slower fused)."""
        if expand is None:
            return False
        ys = _static(dw.outputs[0])
        if 4 * (math.prod(ds) + math.prod(ys)) > FUSE_MIN_BYTES:
            return True
        sh = dw.attrs.stride[0]
        reach = (dw.inputs[1].type.shape[2] - 1) * dw.attrs.dilation[0] + 1  # input rows of one output row
        rows = -(-ys[2] // self.o.threads)  # output rows of a thread's band
        return self.o.threads > 1 and 3 * (reach - sh) <= sh * rows

    def fuse_chain(self, node: Node) -> bool:
        """Emit [1x1 expand] -> depthwise -> 1x1 project [+ residual add] starting at `node` as one
        fused_block call when the chain is there: every link the sole consumer of the one before, each
        optionally followed by a relu or clip, the residual a tensor already computed."""
        if self.o.fuse == "off":
            return False
        kind = self.conv_kind(node)
        if kind == "pw":
            expand, (e_act, e_out, e_actnode) = node, self.peek_act(node)
            dw = self.sole_consumer(e_out)
            if self.conv_kind(dw) != "dw":
                return False
        elif kind == "dw":
            expand, e_act, e_actnode, dw = None, "gprt::kNoAct", None, node
        else:
            return False
        d_act, d_out, d_actnode = self.peek_act(dw)
        project = self.sole_consumer(d_out)
        if self.conv_kind(project) != "pw":
            return False
        p_act, p_out, p_actnode = self.peek_act(project)
        folded = self.residual(node, p_out) if p_actnode is None else None
        res, add, r_act, r_actnode, out = folded or (None, None, "gprt::kNoAct", None, p_out)
        x = node.inputs[0]
        xs, ds = _static(x), _static(dw.inputs[0])
        if expand is not None and xs[2:] != ds[2:]:
            return False
        if self.o.fuse == "auto" and not self.fuse_pays(expand, ds, dw):
            return False
        e_args = self.pointwise_args(expand, e_act) if expand is not None else ("{0, 0, 0}", None)
        p_args = self.pointwise_args(project, p_act)
        if e_args is None or p_args is None:
            return False
        a = dw.attrs
        n, c, h, wi = ds
        _, _, oh, ow = _static(dw.outputs[0])
        kh, kw = dw.inputs[1].type.shape[2:]
        conv = [n, c, h, wi, c, oh, ow, kh, kw, *a.stride, a.pads[0], a.pads[1], *a.dilation, c]
        # rows of a band: the expanded input rows its window reads and its depthwise rows, under band_bytes
        per_row = c * (a.stride[0] * wi + ow) * 4
        band = max(1, min(oh, BAND_BYTES // per_row))
        # the same rows in every band, and as many bands for each of the default threads (7 bands on
        # two threads would leave one idle for a seventh of the layer)
        bands = -(-oh // band)
        bands = min(oh, -(-bands // self.o.threads) * self.o.threads)
        band = -(-oh // bands)
        shape = self.decl("gprt::FusedShape", f"{{{{{_ints(conv)}}}, {e_args[0]}, {p_args[0]}, {band}}}")
        self.ws.append(f"gprt::fused_workspace({shape}, threads)")
        dwd = self.value_const(dw.inputs[1], dw, "weight").astype(np.float32)
        db = self.const(np.asarray(dw.inputs[2].data).astype(np.float32)) if len(dw.inputs) > 2 else "nullptr"
        no_expand = "gprt::PointwiseWeights{nullptr, nullptr, nullptr, nullptr, gprt::kNoAct}"
        chain = [m for m in (expand, dw, project, add) if m is not None]
        for m in chain[1:] + [e_actnode, d_actnode, p_actnode, r_actnode]:
            if m is not None:
                self.fused.add(id(m))
        lines = [
            "// fused: " + " -> ".join(f"{m.op.value} {sanitize(m.name)}" for m in chain),
            f"gprt::fused_block(m->pool, m->ws, {shape}, {e_args[1] or no_expand}, {self.const(dwd)}, {db}, "
            f"{d_act}, {p_args[1]}, {self.ptr(x)}, {self.ptr(res) if res is not None else 'nullptr'}, {r_act}, "
            f"{self.ptr(out)});",
        ]
        self.emit(node, lines, [x] + ([res] if res is not None else []), [out])
        return True

    # ---- the walk ----
    def run(self) -> None:
        for i, v in enumerate(self.g.inputs):
            _static(v)
            if v.type.dtype not in CTYPE:
                raise CompileError(
                    f"input {v.name} is {v.type.dtype.value}; the cpp backend takes {', '.join(d.value for d in CTYPE)}"
                )
            self.plan.kind[id(v)] = "input"
            self.plan.ref[id(v)] = i
            self.plan.dtype[id(v)] = v.type.dtype
        for node in self.g.nodes:
            if id(node) in self.fused:
                continue
            fn = getattr(self, "op_" + node.op.name.lower(), None)
            if fn is None and node.op in UNARY:
                fn = self.op_unary
            if fn is None and node.op in BINARY:
                fn = self.op_binary
            if fn is None:
                what = f"opaque op {node.attrs.op_name}" if node.op is Op.OPAQUE else f"op {node.op.value}"
                raise CompileError(f"node {node.name}: the cpp backend cannot lower {what}")
            for v in node.outputs:
                _static(v, node)
                if v.type.dtype not in CTYPE:
                    raise CompileError(
                        f"node {node.name} ({node.op.value}): output dtype {v.type.dtype.value} "
                        "is not supported by the cpp backend"
                    )
            fn(node)

    # ---- dense layers ----
    def op_conv(self, node: Node) -> None:
        if self.fuse_chain(node):
            return
        x, w = node.inputs[0], node.inputs[1]
        self.f32(node, x, w)
        a = node.attrs
        xs, ys = _static(x, node), _static(node.outputs[0], node)
        wd = self.value_const(w, node, "weight").astype(np.float32)
        if len(xs) not in (3, 4):
            raise CompileError(
                f"node {node.name} (conv): {len(xs) - 2}-D convolution; the cpp backend lowers 1-D and 2-D"
            )
        one_d = len(xs) == 3
        sp = lambda t, i: 1 if one_d and i == 0 else t[-2 + i] if not one_d else t[-1]  # noqa: E731
        k = wd.shape[2:]
        kh, kw = (1, k[0]) if one_d else k
        st, dl, pads = a.stride, a.dilation, a.pads
        sh, sw = (1, st[0]) if one_d else st
        dh, dw = (1, dl[0]) if one_d else dl
        ph, pw = (0, pads[0]) if one_d else (pads[0], pads[1])
        n, c = xs[0], xs[1]
        oc = ys[1]
        h, wi, oh, ow = sp(xs, 0), sp(xs, 1), sp(ys, 0), sp(ys, 1)
        bias = self.value_const(node.inputs[2], node, "bias").astype(np.float32) if len(node.inputs) > 2 else None
        b = self.const(bias) if bias is not None else "nullptr"
        pointwise = kh == kw == 1 and sh == sw == 1 and ph == pw == 0 and a.groups == 1 and (oh, ow) == (h, wi)
        if pointwise:
            # a sparse 1x1 layer adds the residual after it tile by tile (no pass of its own over both tensors)
            act, out, actnode = self.peek_act(node)
            res = add = None
            folded = self.residual(node, out) if actnode is None else None
            if folded is not None:
                res, add, act, actnode, out = folded
            r = self.ptr(res) if res is not None else None
            lines = self.sparse_lines(node, wd.reshape(oc, c), h * wi, n, self.ptr(x), self.ptr(out), b, act, r)
            if lines is not None:
                self.fused.update(id(m) for m in (add, actnode) if m is not None)
                self.emit(node, lines, [x] + ([res] if res is not None else []), [out])
                return
        act, out = self.fused_act(node)
        reads = [x]
        s = self.decl(
            "gprt::ConvShape", "{" + _ints([n, c, h, wi, oc, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, a.groups]) + "}"
        )
        self.ws.append(f"gprt::conv_workspace({s}, threads)")
        self.emit(
            node,
            [f"gprt::conv2d(m->pool, m->ws, {s}, {self.ptr(x)}, {self.const(wd)}, {b}, {self.ptr(out)}, {act});"],
            reads,
            [out],
        )

    def choose(self, w2: np.ndarray, pixels: int) -> packing.Choice:
        if self.o.sparse == "auto":
            return packing.choose(w2, pixels, self.o.isa)
        if self.o.sparse == "off":
            return packing.Choice("dense", 1.0, 1.0)
        return packing.force(w2, self.o.sparse)

    def sparse_lines(
        self, node: Node, w2: np.ndarray, pixels: int, batch: int, x: str, y: str, bias: str, act: str, res=None
    ) -> list[str] | None:
        """The kernel calls of a sparse 1x1 layer (Y[b] = act(W X[b] + bias [+ res[b]]) over `pixels`
        columns), or None when the break-even table (or the forced format) keeps it dense."""
        choice = self.choose(w2, pixels)
        if choice.fmt == "dense":
            return None
        m_rows, k = w2.shape
        self.sparse_layers[sanitize(node.name)] = choice.fmt
        lines = [
            f"// {choice.fmt}: {choice.density:.3f} of the weights stored, predicted {choice.ratio:.2f}x dense time"
        ]
        if choice.fmt.startswith("nm"):
            p = packing.pack_nm(w2, *map(int, choice.fmt[2:].split(":")))
            call = (
                f"gprt::spmm_nm(m->pool, {p.n}, {p.m}, {m_rows}, {k}, {pixels}, {self.const(p.values)}, "
                f"{self.const(p.idx, 'uint8_t')}, {bias}"
            )
        else:
            nb = 1 if choice.fmt == "csr" else int(choice.fmt[5:])
            q = packing.pack_block(w2, nb)
            call = (
                f"gprt::spmm_block(m->pool, {nb}, {m_rows}, {k}, {pixels}, {self.const(q.counts, 'int32_t')}, "
                f"{self.const(q.incs, 'int32_t')}, {self.const(q.values)}, {bias}"
            )
        for i in range(batch):
            r = f", {res} + {i * m_rows * pixels}" if res is not None else ""
            lines.append(f"{call}, {x} + {i * k * pixels}, {y} + {i * m_rows * pixels}, {act}{r});")
        return lines

    def op_conv_transpose(self, node: Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        self.f32(node, x, w)
        a = node.attrs
        xs, ys = _static(x, node), _static(node.outputs[0], node)
        wd = self.value_const(w, node, "weight").astype(np.float32)
        if len(xs) not in (3, 4):
            raise CompileError(f"node {node.name} (conv_transpose): the cpp backend lowers 1-D and 2-D only")
        if len(xs) == 3:
            vals = [
                xs[0],
                xs[1],
                1,
                xs[2],
                ys[1],
                1,
                ys[2],
                1,
                wd.shape[2],
                1,
                a.stride[0],
                0,
                a.pads[0],
                1,
                a.dilation[0],
                a.groups,
            ]
        else:
            vals = [
                xs[0],
                xs[1],
                xs[2],
                xs[3],
                ys[1],
                ys[2],
                ys[3],
                wd.shape[2],
                wd.shape[3],
                *a.stride,
                a.pads[0],
                a.pads[1],
                *a.dilation,
                a.groups,
            ]
        s = self.decl("gprt::ConvShape", "{" + _ints(vals) + "}")
        bias = self.value_const(node.inputs[2], node, "bias").astype(np.float32) if len(node.inputs) > 2 else None
        b = self.const(bias) if bias is not None else "nullptr"
        out = node.outputs[0]
        self.emit(
            node, [f"gprt::conv_transpose2d({s}, {self.ptr(x)}, {self.const(wd)}, {b}, {self.ptr(out)});"], [x], [out]
        )

    def op_linear(self, node: Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        self.f32(node, x, w)
        xs = _static(x, node)
        wd = self.value_const(w, node, "weight").astype(np.float32)
        n_out, n_in = wd.shape
        rows = int(np.prod(xs[:-1], dtype=np.int64))
        bias = self.value_const(node.inputs[2], node, "bias").astype(np.float32) if len(node.inputs) > 2 else None
        act, out = self.fused_act(node)
        b = self.const(bias) if bias is not None else "nullptr"
        # pixels (tokens) are the sparse kernels' vector dimension: run on X^T, transpose back
        xt, yt = "m->ws", f"m->ws + {n_in * rows}"
        sparse = self.sparse_lines(node, wd, rows, 1, xt, yt, b, act)
        if sparse is not None:
            self.ws.append(f"{(n_in + n_out) * rows * 4}")
            to_t = f"{self.arr([rows, n_in])}, {self.arr([1, rows])}, {xt}, {self.arr([n_in, 1])}, {self.ptr(x)}"
            back = f"{self.arr([n_out, rows])}, {self.arr([1, n_out])}, {self.ptr(out)}, {self.arr([rows, 1])}, {yt}"
            lines = [f"gprt::copy_strided(2, {to_t}, 4);", *sparse, f"gprt::copy_strided(2, {back}, 4);"]
            self.emit(node, lines, [x], [out])
            return
        if rows < 4:  # a few rows: read W once in place (packing it for a GEMM would cost more than the product)
            self.emit(
                node,
                [
                    f"gprt::gemv(m->pool, {rows}, {n_out}, {n_in}, {self.ptr(x)}, {self.const(wd)}, {b}, "
                    f"{self.ptr(out)}, {act});"
                ],
                [x],
                [out],
            )
            return
        wt = np.ascontiguousarray(wd.T)
        bias_kind = "gprt::kBiasCol" if bias is not None else "gprt::kNoBias"
        self.ws.append(f"gprt::gemm_workspace({rows}, {n_out}, {n_in}, threads)")
        self.emit(
            node,
            [
                f"gprt::gemm(m->pool, m->ws, {rows}, {n_out}, {n_in}, {self.ptr(x)}, {n_in}, {self.const(wt)}, "
                f"{n_out}, {self.ptr(out)}, {n_out}, {b}, {bias_kind}, {act});"
            ],
            [x],
            [out],
        )

    def op_matmul(self, node: Node) -> None:
        a, b = node.inputs
        self.f32(node, a, b)
        sa, sb, so = list(_static(a, node)), list(_static(b, node)), _static(node.outputs[0], node)
        if len(sa) == 1:
            sa = [1, *sa]
        if len(sb) == 1:
            sb = [*sb, 1]
        m_, k = sa[-2:]
        n_ = sb[-1]
        batch = list(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2])))
        ast = [s * m_ * k for s in _bcast_strides(sa[:-2], batch)] if batch else []
        bst = [s * k * n_ for s in _bcast_strides(sb[:-2], batch)] if batch else []
        pa = self.ptr(a) if not a.is_const else self.const(np.asarray(a.data, np.float32))
        pb = self.ptr(b) if not b.is_const else self.const(np.asarray(b.data, np.float32))
        reads = [v for v in (a, b) if not v.is_const]
        self.ws.append(f"gprt::matmul_workspace({m_}, {n_}, {k}, threads)")
        out = node.outputs[0]
        assert int(np.prod(so)) == int(np.prod(batch, dtype=np.int64)) * m_ * n_
        self.emit(
            node,
            [
                f"gprt::matmul(m->pool, m->ws, {len(batch)}, {self.arr(batch)}, {self.arr(ast)}, {self.arr(bst)}, "
                f"{m_}, {n_}, {k}, {pa}, {pb}, {self.ptr(out)});"
            ],
            reads,
            [out],
        )

    # ---- norms ----
    def op_batch_norm(self, node: Node) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        scale, bias, mean, var = (self.value_const(v, node, "statistics").astype(np.float64) for v in node.inputs[1:])
        s = scale / np.sqrt(var + node.attrs.eps)
        t = bias - mean * s
        xs = _static(x, node)
        inner = int(np.prod(xs[2:], dtype=np.int64))
        out = node.outputs[0]
        self.emit(
            node,
            [
                f"gprt::channel_affine({xs[0]}, {xs[1]}, {inner}, {self.ptr(x)}, {self.const(s.astype(np.float32))}, "
                f"{self.const(t.astype(np.float32))}, {self.ptr(out)});"
            ],
            [x],
            [out],
        )

    def _norm_params(self, node: Node, shape: Sequence[int], count: int) -> list[str]:
        out = []
        for v in node.inputs[1 : 1 + count]:
            d = self.value_const(v, node, "scale/bias").astype(np.float32)
            out.append(self.const(np.broadcast_to(d, shape).reshape(-1)))
        return out + ["nullptr"] * (count - len(out))

    def op_layer_norm(self, node: Node) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        xs = _static(x, node)
        ax = node.attrs.axis
        rows, d = int(np.prod(xs[:ax], dtype=np.int64)), int(np.prod(xs[ax:], dtype=np.int64))
        sc, bi = self._norm_params(node, xs[ax:], 2)
        out = node.outputs[0]
        self.emit(
            node,
            [f"gprt::layer_norm({rows}, {d}, {self.ptr(x)}, {sc}, {bi}, {_f(node.attrs.eps)}, {self.ptr(out)});"],
            [x],
            [out],
        )

    def op_rms_norm(self, node: Node) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        xs = _static(x, node)
        ax = node.attrs.axis
        rows, d = int(np.prod(xs[:ax], dtype=np.int64)), int(np.prod(xs[ax:], dtype=np.int64))
        (sc,) = self._norm_params(node, xs[ax:], 1)
        out = node.outputs[0]
        self.emit(
            node,
            [f"gprt::rms_norm({rows}, {d}, {self.ptr(x)}, {sc}, {_f(node.attrs.eps)}, {self.ptr(out)});"],
            [x],
            [out],
        )

    def _group_norm(self, node: Node, groups: int) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        xs = _static(x, node)
        inner = int(np.prod(xs[2:], dtype=np.int64))
        sc, bi = self._norm_params(node, (xs[1],), 2)
        out = node.outputs[0]
        self.emit(
            node,
            [
                f"gprt::group_norm({xs[0]}, {xs[1]}, {inner}, {groups}, {self.ptr(x)}, {sc}, {bi}, "
                f"{_f(node.attrs.eps)}, {self.ptr(out)});"
            ],
            [x],
            [out],
        )

    def op_group_norm(self, node: Node) -> None:
        self._group_norm(node, node.attrs.num_groups)

    def op_instance_norm(self, node: Node) -> None:
        self._group_norm(node, _static(node.inputs[0], node)[1])

    # ---- elementwise ----
    def op_unary(self, node: Node) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        a, b = 0.0, 0.0
        kind = UNARY[node.op]
        if node.op is Op.LEAKY_RELU:
            a = node.attrs.alpha
        elif node.op is Op.HARD_SIGMOID:
            a, b = node.attrs.alpha, node.attrs.beta
        elif node.op is Op.CLIP:
            a = -math.inf if node.attrs.min is None else node.attrs.min
            b = math.inf if node.attrs.max is None else node.attrs.max
        elif node.op is Op.GELU and node.attrs.approximate == "tanh":
            kind = "U_GELU_TANH"
        out = node.outputs[0]
        n = int(np.prod(_static(x, node), dtype=np.int64))
        src = self.ptr(x) if not x.is_const else self.const(np.asarray(x.data, np.float32))
        self.emit(
            node,
            [f"gprt::unary(gprt::{kind}, {_f(a)}, {_f(b)}, {n}, {src}, {self.ptr(out)});"],
            [] if x.is_const else [x],
            [out],
        )

    def operand(self, v: Value, dtype: DType = DType.F32) -> str:
        if v.is_const:
            return self.const(np.asarray(v.data).astype(dtype.numpy), CTYPE[dtype])
        return self.ptr(v)

    def op_binary(self, node: Node) -> None:
        a, b = node.inputs
        self.f32(node, a, b)
        so = _static(node.outputs[0], node)
        shape, (sa, sb) = _coalesce(so, _bcast_strides(_static(a, node), so), _bcast_strides(_static(b, node), so))
        act, out = self.fused_act(node) if node.op is Op.ADD else ("gprt::kNoAct", node.outputs[0])
        self.emit(
            node,
            [
                f"gprt::binary(gprt::{BINARY[node.op]}, {len(shape)}, {self.arr(shape)}, {self.arr(sa)}, "
                f"{self.operand(a)}, {self.arr(sb)}, {self.operand(b)}, {self.ptr(out)}, {act});"
            ],
            [v for v in (a, b) if not v.is_const],
            [out],
        )

    def op_where(self, node: Node) -> None:
        c, a, b = node.inputs
        if c.type.dtype is not DType.BOOL:
            raise CompileError(f"node {node.name} (where): the condition is {c.type.dtype.value}, expected bool")
        self.f32(node, a, b)
        so = _static(node.outputs[0], node)
        shape, (sc, sa, sb) = _coalesce(so, *(_bcast_strides(_static(v, node), so) for v in (c, a, b)))
        out = node.outputs[0]
        self.emit(
            node,
            [
                f"gprt::where({len(shape)}, {self.arr(shape)}, {self.arr(sc)}, {self.operand(c, DType.BOOL)}, "
                f"{self.arr(sa)}, {self.operand(a)}, {self.arr(sb)}, {self.operand(b)}, {self.ptr(out)});"
            ],
            [v for v in (c, a, b) if not v.is_const],
            [out],
        )

    def op_prelu(self, node: Node) -> None:
        x, slope = node.inputs
        self.f32(node, x, slope)
        xs = _static(x, node)
        sd = self.value_const(slope, node, "slope").astype(np.float32).reshape(-1)
        c = xs[1] if len(xs) > 1 else 1
        if sd.size not in (1, c):
            raise CompileError(f"node {node.name} (prelu): slope of {sd.size} values for {c} channels")
        inner = int(np.prod(xs[2:], dtype=np.int64))
        out = node.outputs[0]
        self.emit(
            node,
            [
                f"gprt::prelu({xs[0]}, {c}, {inner}, {self.ptr(x)}, {self.const(sd)}, {int(sd.size > 1)}, "
                f"{self.ptr(out)});"
            ],
            [x],
            [out],
        )

    def op_softmax(self, node: Node) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        xs = _static(x, node)
        ax = node.attrs.axis
        outer, inner = int(np.prod(xs[:ax], dtype=np.int64)), int(np.prod(xs[ax + 1 :], dtype=np.int64))
        out = node.outputs[0]
        self.emit(node, [f"gprt::softmax({outer}, {xs[ax]}, {inner}, {self.ptr(x)}, {self.ptr(out)});"], [x], [out])

    # ---- data movement ----
    def alias(self, node: Node, offset: int = 0) -> None:
        """The output is the input's storage (from element `offset` on): a view, no copy."""
        x, out = node.inputs[0], node.outputs[0]
        if x.is_const:
            self.copy(node, list(_static(out, node)), _strides(_static(out, node)), x, _strides(_static(out, node)), 0)
            return
        self.view(out, x, offset)
        self.emit(node, ["// (a view: no copy)"], [x], [out])

    def view(self, out: Value, x: Value, offset: int) -> None:
        """`out` lives in `x`'s storage from element `offset` on."""
        self.plan.kind[id(out)], self.plan.ref[id(out)], self.plan.offset[id(out)] = "alias", id(x), offset
        self.plan.dtype[id(out)] = out.type.dtype

    op_reshape = op_squeeze = op_unsqueeze = alias

    def copy(
        self,
        node: Node,
        shape: Sequence[int],
        dst_st: Sequence[int],
        src: Value,
        src_st: Sequence[int],
        src_off: int,
        dst: Value | None = None,
        dst_off: int = 0,
        lines: list[str] | None = None,
    ) -> list[str]:
        """A strided copy src -> dst (dst: the node's output); emitted unless `lines` collects it."""
        shape, (ds, ss) = _coalesce(shape, dst_st, src_st)
        dst = dst or node.outputs[0]
        el = NBYTES[src.type.dtype]
        sp = self.operand(src, src.type.dtype) if src.is_const else self.ptr(src)
        code = (
            f"gprt::copy_strided({len(shape)}, {self.arr(shape)}, {self.arr(ds)}, "
            f"({CTYPE[dst.type.dtype]}*){self.ptr(dst)} + {dst_off}, "
            f"{self.arr(ss)}, ({CTYPE[src.type.dtype]}*){sp} + {src_off}, {el});"
        )
        if lines is not None:
            lines.append(code)
            return lines
        self.emit(node, [code], [] if src.is_const else [src], [dst])
        return []

    def op_transpose(self, node: Node) -> None:
        x = node.inputs[0]
        xs = _static(x, node)
        st = _strides(xs)
        perm = node.attrs.perm
        oshape = [xs[p] for p in perm]
        self.copy(node, oshape, _strides(oshape), x, [st[p] for p in perm], 0)

    def op_expand(self, node: Node) -> None:
        x = node.inputs[0]
        so = _static(node.outputs[0], node)
        self.copy(node, so, _strides(so), x, _bcast_strides(_static(x, node), so), 0)

    def op_slice(self, node: Node) -> None:
        x = node.inputs[0]
        a = node.attrs
        if a.step <= 0:
            raise CompileError(f"node {node.name} (slice): step {a.step}; the cpp backend lowers positive steps")
        xs, so = _static(x, node), _static(node.outputs[0], node)
        st = _strides(xs)
        if a.step == 1 and math.prod(xs[: a.axis]) == 1:
            # a contiguous range (channels of a batch-1 tensor, a reordered reader's slice): a pointer
            # into the input, no copy
            self.alias(node, a.start * st[a.axis])
            return
        src = list(st)
        src[a.axis] *= a.step
        self.copy(node, so, _strides(so), x, src, a.start * st[a.axis])

    def op_concat(self, node: Node) -> None:
        so = _static(node.outputs[0], node)
        ax = node.attrs.axis
        outer, inner = int(np.prod(so[:ax], dtype=np.int64)), int(np.prod(so[ax + 1 :], dtype=np.int64))
        lines: list[str] = []
        off = 0
        for v in node.inputs:
            n = _static(v, node)[ax]
            self.copy(
                node, [outer, n * inner], [so[ax] * inner, 1], v, [n * inner, 1], 0, dst_off=off * inner, lines=lines
            )
            off += n
        self.emit(node, lines, [v for v in node.inputs if not v.is_const], [node.outputs[0]])

    def op_split(self, node: Node) -> None:
        x = node.inputs[0]
        xs = _static(x, node)
        ax = node.attrs.axis
        outer, inner = int(np.prod(xs[:ax], dtype=np.int64)), int(np.prod(xs[ax + 1 :], dtype=np.int64))
        view = outer == 1 and not x.is_const  # each part a contiguous range: pointers into the input
        lines: list[str] = ["// (views: no copy)"] if view else []
        off = 0
        for v, n in zip(node.outputs, node.attrs.sizes, strict=True):
            if view:
                self.view(v, x, off * inner)
            else:
                self.copy(
                    node, [outer, n * inner], [n * inner, 1], x, [xs[ax] * inner, 1], off * inner, dst=v, lines=lines
                )
            off += n
        self.emit(node, lines, [x], list(node.outputs))

    def _shuffle(self, node: Node, up: bool) -> None:
        x = node.inputs[0]
        n, c, h, w = _static(x, node)
        r = node.attrs.factor
        if up:  # [n, c/r², r, r, h, w] -> [n, c/r², h, r, w, r]
            view, perm = [n, c // (r * r), r, r, h, w], (0, 1, 4, 2, 5, 3)
        else:  # [n, c, h/r, r, w/r, r] -> [n, c, r, r, h/r, w/r]
            view, perm = [n, c, h // r, r, w // r, r], (0, 1, 3, 5, 2, 4)
        st = _strides(view)
        oshape = [view[p] for p in perm]
        self.copy(node, oshape, _strides(oshape), x, [st[p] for p in perm], 0)

    def op_pixel_shuffle(self, node: Node) -> None:
        self._shuffle(node, True)

    def op_pixel_unshuffle(self, node: Node) -> None:
        self._shuffle(node, False)

    def op_pad(self, node: Node) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        xs, so = _static(x, node), _static(node.outputs[0], node)
        mode = {"constant": 0, "reflect": 1, "edge": 2}.get(node.attrs.mode)
        if mode is None:
            raise CompileError(f"node {node.name} (pad): mode {node.attrs.mode!r} is not supported")
        out = node.outputs[0]
        self.emit(
            node,
            [
                f"gprt::pad({len(xs)}, {self.arr(xs)}, {self.arr(so)}, {self.arr(node.attrs.pads[: len(xs)])}, "
                f"{mode}, {_f(node.attrs.value)}, {self.ptr(x)}, {self.ptr(out)});"
            ],
            [x],
            [out],
        )

    def op_gather(self, node: Node) -> None:
        data, idx = node.inputs
        self.f32(node, data)
        if idx.type.dtype is not DType.I64:
            raise CompileError(f"node {node.name} (gather): indices are {idx.type.dtype.value}; expected i64")
        ds = _static(data, node)
        ax = node.attrs.axis
        outer, inner = int(np.prod(ds[:ax], dtype=np.int64)), int(np.prod(ds[ax + 1 :], dtype=np.int64))
        nidx = int(np.prod(_static(idx, node), dtype=np.int64))
        out = node.outputs[0]
        self.emit(
            node,
            [
                f"gprt::gather({outer}, {ds[ax]}, {inner}, {self.operand(data)}, {nidx}, "
                f"{self.operand(idx, DType.I64)}, {self.ptr(out)});"
            ],
            [v for v in (data, idx) if not v.is_const],
            [out],
        )

    def op_cast(self, node: Node) -> None:
        x, out = node.inputs[0], node.outputs[0]
        n = int(np.prod(_static(x, node), dtype=np.int64))
        self.emit(
            node,
            [
                f"gprt::cast({DTYPE_CODE[x.type.dtype]}, {DTYPE_CODE[out.type.dtype]}, {n}, "
                f"{self.operand(x, x.type.dtype)}, {self.ptr(out)});"
            ],
            [] if x.is_const else [x],
            [out],
        )

    # ---- pooling and reduction ----
    def _pool(self, node: Node, fn: str) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        a = node.attrs
        xs, so = _static(x, node), _static(node.outputs[0], node)
        if len(xs) == 3:
            vals = [
                xs[0],
                xs[1],
                1,
                xs[2],
                1,
                so[2],
                1,
                a.kernel[0],
                1,
                a.stride[0],
                0,
                a.pads[0],
                1,
                a.dilation[0],
                0,
                a.pads[1],
            ]
        elif len(xs) == 4:
            vals = [*xs, so[2], so[3], *a.kernel, *a.stride, a.pads[0], a.pads[1], *a.dilation, a.pads[2], a.pads[3]]
        else:
            raise CompileError(f"node {node.name} ({node.op.value}): the cpp backend pools 1-D and 2-D inputs")
        s = self.decl("gprt::PoolShape", "{" + _ints(vals) + f", {int(a.count_include_pad)}}}")
        out = node.outputs[0]
        self.ws.append(f"gprt::pool_workspace({s}, threads)")
        self.emit(node, [f"gprt::{fn}(m->pool, {s}, {self.ptr(x)}, {self.ptr(out)}, m->ws);"], [x], [out])

    def op_max_pool(self, node: Node) -> None:
        self._pool(node, "max_pool2d")

    def op_avg_pool(self, node: Node) -> None:
        self._pool(node, "avg_pool2d")

    def op_adaptive_avg_pool(self, node: Node) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        xs, so = _static(x, node), _static(node.outputs[0], node)
        if len(xs) not in (3, 4):
            raise CompileError(f"node {node.name} (adaptive_avg_pool): the cpp backend pools 1-D and 2-D inputs")
        h, w, oh, ow = (1, xs[2], 1, so[2]) if len(xs) == 3 else (xs[2], xs[3], so[2], so[3])
        out = node.outputs[0]
        self.emit(
            node,
            [f"gprt::adaptive_avg_pool2d({xs[0] * xs[1]}, {h}, {w}, {oh}, {ow}, {self.ptr(x)}, {self.ptr(out)});"],
            [x],
            [out],
        )

    def _reduce(self, node: Node, kind: int) -> None:
        x = node.inputs[0]
        self.f32(node, x)
        xs = _static(x, node)
        axes = set(node.attrs.axes)
        kept = [1 if i in axes else d for i, d in enumerate(xs)]
        ost = [0 if i in axes else s for i, s in enumerate(_strides(kept))]
        shape, (ist, ost2) = _coalesce(xs, _strides(xs), ost)
        count = int(np.prod([xs[i] for i in axes], dtype=np.int64))
        out = node.outputs[0]
        size = int(np.prod(_static(out, node), dtype=np.int64))
        self.emit(
            node,
            [
                f"gprt::reduce({kind}, {len(shape)}, {self.arr(shape)}, {self.arr(ist)}, {self.arr(ost2)}, "
                f"{self.ptr(x)}, {self.ptr(out)}, {size}, {count});"
            ],
            [x],
            [out],
        )

    def op_reduce_sum(self, node: Node) -> None:
        self._reduce(node, 0)

    def op_reduce_mean(self, node: Node) -> None:
        self._reduce(node, 1)

    def op_reduce_max(self, node: Node) -> None:
        self._reduce(node, 2)

    # ---- attention and resize ----
    def op_attention(self, node: Node) -> None:
        q, k, v = node.inputs[:3]
        self.f32(node, q, k, v)
        qs, ks, vs = (list(_static(t, node)) for t in (q, k, v))
        if len(qs) not in (3, 4) or len(ks) != len(qs) or len(vs) != len(qs):
            raise CompileError(f"node {node.name} (attention): the cpp backend takes 3-D or 4-D q, k, v of one rank")
        if len(qs) == 3:
            qs, ks, vs = [qs[0], 1, *qs[1:]], [ks[0], 1, *ks[1:]], [vs[0], 1, *vs[1:]]
        b, hq, seq_l, e = qs
        hkv, seq_s, ev = ks[1], ks[2], vs[3]
        if hq % hkv:
            raise CompileError(f"node {node.name} (attention): {hq} query heads over {hkv} key heads")
        a = node.attrs
        scale = a.scale if a.scale is not None else 1.0 / math.sqrt(e)
        mask, mbool, mst, reads = "nullptr", 0, [0, 0, 0, 0], [q, k, v]
        if len(node.inputs) > 3:
            mv = node.inputs[3]
            mbool = int(mv.type.dtype is DType.BOOL)
            if not mbool:
                self.f32(node, mv)
            mst = _bcast_strides(_static(mv, node), [b, hq, seq_l, seq_s]) if len(_static(mv, node)) <= 4 else None
            if mst is None:
                raise CompileError(f"node {node.name} (attention): mask of rank > 4")
            mask = self.operand(mv, mv.type.dtype)
            reads += [] if mv.is_const else [mv]
        self.ws.append(f"gprt::attention_workspace({seq_l}, {seq_s})")
        out = node.outputs[0]
        self.emit(
            node,
            [
                f"gprt::attention(m->ws, {b}, {hq}, {hkv}, {seq_l}, {seq_s}, {e}, {ev}, {self.ptr(q)}, "
                f"{self.ptr(k)}, {self.ptr(v)}, {mask}, {mbool}, {self.arr(mst)}, {_f(scale)}, "
                f"{int(a.is_causal)}, {self.ptr(out)});"
            ],
            reads,
            [out],
        )

    def op_resize(self, node: Node) -> None:
        from graphprune.interp import _ROUND, _source_coords  # the oracle's coordinate rule, computed once here

        x = node.inputs[0]
        self.f32(node, x)
        a = node.attrs
        xs, so = _static(x, node), _static(node.outputs[0], node)
        if len(xs) not in (3, 4) or a.mode not in ("nearest", "linear"):
            raise CompileError(f"node {node.name} (resize): the cpp backend resizes 1-D/2-D, nearest or linear")
        tables = []
        for i, (out_size, in_size) in enumerate(zip(so[2:], xs[2:], strict=True)):
            scale = float(a.scales[i]) if a.scales else None
            if a.mode == "nearest":
                src = _source_coords(a.coordinate_transformation, out_size, in_size, scale, np.float32)
                i0 = np.clip(_ROUND[a.nearest_mode](src), 0, in_size - 1).astype(np.int32)
                tables.append((i0, i0, np.zeros(out_size, np.float32)))
            else:
                src = np.clip(_source_coords(a.coordinate_transformation, out_size, in_size, scale), 0, in_size - 1)
                lo = np.floor(src).astype(np.int32)
                tables.append((lo, np.minimum(lo + 1, in_size - 1).astype(np.int32), (src - lo).astype(np.float32)))
        if len(xs) == 3:
            tables.insert(0, (np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(1, np.float32)))
        h, w = (1, xs[2]) if len(xs) == 3 else xs[2:]
        oh, ow = (1, so[2]) if len(xs) == 3 else so[2:]
        t = [self.const(arr, "int32_t" if arr.dtype == np.int32 else "float") for tab in tables for arr in tab]
        out = node.outputs[0]
        self.emit(
            node,
            [f"gprt::resize2d({xs[0] * xs[1]}, {h}, {w}, {oh}, {ow}, {', '.join(t)}, {self.ptr(x)}, {self.ptr(out)});"],
            [x],
            [out],
        )

    # ---- memory plan ----
    def root(self, v: Value) -> int:
        r = id(v)
        while self.plan.kind.get(r) == "alias":
            r = self.plan.ref[r]
        return r

    def plan_arena(self) -> tuple[int, dict[int, int]]:
        """Offsets for every arena tensor: greedy first fit by size over live intervals."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        nbytes: dict[int, int] = {}
        for i, (_, reads, writes) in enumerate(self.steps):
            for v in writes:
                if self.plan.kind.get(id(v)) == "alias":
                    continue
                self.plan.kind.setdefault(id(v), "arena")
                self.plan.dtype[id(v)] = v.type.dtype
                first.setdefault(id(v), i)
                last[id(v)] = max(last.get(id(v), i), i)
                nbytes[id(v)] = int(np.prod(v.type.shape, dtype=np.int64)) * NBYTES[v.type.dtype]
            for v in reads:
                r = self.root(v)
                if r in first:
                    last[r] = max(last[r], i)
        # A graph output computed here is written straight into the caller's output buffer (no copy),
        # unless its storage also backs another output.
        roots = [self.root(v) for v in self.g.outputs]
        for i, (v, r) in enumerate(zip(self.g.outputs, roots, strict=True)):
            whole = v.type.numel() * NBYTES[v.type.dtype] == nbytes.get(r)  # not a slice of its storage
            if r in first and roots.count(r) == 1 and whole:
                self.plan.kind[r] = "output"
                self.plan.ref[r] = i
                del first[r]
        placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
        offsets: dict[int, int] = {}
        for vid in sorted(first, key=lambda k: (-nbytes[k], first[k])):
            size = -(-max(nbytes[vid], 1) // ALIGN) * ALIGN
            cands = sorted({0} | {o + s for o, s, f, la in placed})
            for off in cands:
                clash = any(
                    f <= last[vid] and first[vid] <= la and off < o + s and o < off + size for o, s, f, la in placed
                )
                if not clash:
                    break
            placed.append((off, size, first[vid], last[vid]))
            offsets[vid] = off
        total = max((o + s for o, s, _, _ in placed), default=0)
        return total, offsets


def _resolve(text: str, expr: dict[int, str]) -> str:
    return re.sub(r"@(\d+)@", lambda m: expr[int(m.group(1))], text)


def generate(graph: Graph, options: Options) -> Generated:
    low = Lowering(graph, options)
    low.run()
    arena, offsets = low.plan_arena()
    expr: dict[int, str] = {}
    values = {id(v): v for v in graph.values()} | {id(v): v for n in graph.nodes for v in n.outputs}

    def pointer(vid: int) -> str:
        root = low.root(values[vid])
        kind = low.plan.kind.get(root)
        ct = CTYPE[values[vid].type.dtype]
        elem, r = 0, vid  # a view's first element within its root's storage
        while r != root:
            elem, r = elem + low.plan.offset.get(r, 0), low.plan.ref[r]
        at = f" + {elem}" if elem else ""
        if kind == "input":
            return f"(({ct}*)in[{low.plan.ref[root]}]{at})"
        if kind == "arena":
            return f"(({ct}*)(A + {offsets[root]}){at})"
        if kind == "output":
            return f"(({ct}*)out[{low.plan.ref[root]}]{at})"
        raise CompileError(f"tensor {sanitize(values[vid].name)} has no storage (internal error of the cpp backend)")

    body: list[str] = []
    for lines, _, _ in low.steps:
        for line in lines:
            for m in re.findall(r"@(\d+)@", line):
                expr.setdefault(int(m), pointer(int(m)))
            body.append("    " + _resolve(line, expr))
    outs: list[str] = []
    for i, v in enumerate(graph.outputs):
        r = low.root(v)
        if low.plan.kind.get(r) == "output" and low.plan.ref[r] == i:
            continue  # written in place
        n = int(np.prod(_static(v), dtype=np.int64)) * NBYTES[v.type.dtype]
        src = low.const(np.asarray(v.data)) if v.is_const else pointer(id(v))
        outs.append(f"    std::memcpy(out[{i}], {src}, {n});")
    weights = low.blob.data()
    header = _header(graph)
    source = _source(graph, low, body, outs, arena, len(weights), weights)
    return Generated(header, source, weights, low.sparse_layers, arena)


def _shape_table(name: str, vals: Sequence[Value]) -> list[str]:
    lines = []
    for i, v in enumerate(vals):
        lines.append(f"static const int64_t {name}{i}[] = {{{_ints(_static(v)) or '1'}}};")
    lines.append(f"static const int64_t* const {name}[] = {{{', '.join(f'{name}{i}' for i in range(len(vals)))}}};")
    lines.append(f"static const int {name}_rank[] = {{{_ints([v.type.rank for v in vals])}}};")
    lines.append(f"static const int {name}_dtype[] = {{{_ints([DTYPE_CODE[v.type.dtype] for v in vals])}}};")
    return lines


def _header(graph: Graph) -> str:
    def describe(vals: Sequence[Value], what: str) -> list[str]:
        return [
            f" *   {what} {i}: {v.type.dtype.value}[{','.join(map(str, v.type.shape))}]" for i, v in enumerate(vals)
        ]

    return "\n".join(
        [
            "/* Generated by graphprune (cpp backend). Plain C API; link libmodel.a or libmodel.so.",
            *describe(graph.inputs, "input"),
            *describe(graph.outputs, "output"),
            " * dtype codes: 0 float32, 1 int64, 2 bool (uint8), 3 int32. */",
            "#ifndef GP_MODEL_H",
            "#define GP_MODEL_H",
            "#include <stdint.h>",
            "#if defined(_WIN32)",
            "#define GP_API __declspec(dllexport)",
            "#else",
            '#define GP_API __attribute__((visibility("default")))',
            "#endif",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "typedef struct gp_model gp_model;",
            "/* weights_path: the model_weights.bin written beside the library, or NULL when the weights are",
            " * embedded. threads: worker threads (1: none). NULL when the weights cannot be read. */",
            "GP_API gp_model* gp_model_create(const char* weights_path, int threads);",
            "/* inputs/outputs: one contiguous buffer per tensor, in the shapes below. Allocates nothing. */",
            "GP_API int gp_model_run(gp_model* model, const void* const* inputs, void* const* outputs);",
            "GP_API void gp_model_destroy(gp_model* model);",
            "GP_API int gp_model_num_inputs(void);",
            "GP_API int gp_model_num_outputs(void);",
            "GP_API int gp_model_input_rank(int i);",
            "GP_API const int64_t* gp_model_input_shape(int i);",
            "GP_API int gp_model_input_dtype(int i);",
            "GP_API int gp_model_output_rank(int i);",
            "GP_API const int64_t* gp_model_output_shape(int i);",
            "GP_API int gp_model_output_dtype(int i);",
            "GP_API int gp_model_weights_embedded(void);",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "#endif",
            "",
        ]
    )


def weights_source(weights: bytes) -> str:
    """The blob as a C++ array of little-endian 32-bit words (the blob is 64-byte padded)."""
    words = np.frombuffer(weights, dtype="<u4")
    rows = [", ".join(f"0x{w:08x}u" for w in words[i : i + 12]) for i in range(0, len(words), 12)]
    return "\n".join(
        [
            "// Generated by graphprune: the model's weights.",
            "#include <cstdint>",
            f"alignas(64) extern const uint32_t gp_weight_words[{max(len(words), 1)}] = {{",
            *([f"    {r}," for r in rows] or ["    0u,"]),
            "};",
            "",
        ]
    )


def _source(
    graph: Graph, low: Lowering, body: list[str], outs: list[str], arena: int, wbytes: int, weights: bytes
) -> str:
    ws = " ".join(f"ws = std::max(ws, (size_t)({e}));" for e in dict.fromkeys(low.ws))
    digest = hashlib.sha256(weights).hexdigest()[:16]
    return "\n".join(
        [
            "// Generated by graphprune (cpp backend): the graph lowered to gprt kernel calls.",
            "// Tensors live in one arena planned from liveness (outputs in the caller's buffers); nothing is",
            "// allocated in gp_model_run.",
            '#include "model.h"',
            "",
            "#include <algorithm>",
            "#include <cstdint>",
            "#include <cstdio>",
            "#include <cstdlib>",
            "#include <cstring>",
            "",
            '#include "gprt/gprt.h"',
            "",
            "#if defined(GP_WEIGHTS_EMBEDDED)",
            "extern const uint32_t gp_weight_words[];",
            "#endif",
            "",
            "namespace {",
            f"constexpr size_t kArenaBytes = {arena};",
            f"constexpr size_t kWeightBytes = {wbytes};",
            f"constexpr uint64_t kWeightDigest = 0x{digest}ull;  // first 64 bits of the blob's sha256, for messages",
            *low.decls,
            *_shape_table("kIn", graph.inputs),
            *_shape_table("kOut", graph.outputs),
            "",
            "unsigned char* aligned(size_t bytes, void** base) {",
            "    *base = gprt::alloc_buffer(bytes);",
            "    return (unsigned char*)*base;",
            "}",
            "}  // namespace",
            "",
            "struct gp_model {",
            "    gprt::Pool* pool;",
            "    unsigned char* arena;",
            "    float* ws;",
            "    const unsigned char* weights;",
            "    void* bases[3];",
            "};",
            "",
            'extern "C" {',
            "",
            "GP_API gp_model* gp_model_create(const char* weights_path, int threads) {",
            "    if (threads < 1) threads = 1;",
            "    gp_model* m = new gp_model();",
            "    size_t ws = 0;",
            f"    {ws}" if ws else "",
            "    m->arena = aligned(kArenaBytes, &m->bases[0]);",
            "    m->ws = (float*)aligned(ws, &m->bases[1]);",
            "#if defined(GP_WEIGHTS_EMBEDDED)",
            "    (void)weights_path;",
            "    m->weights = (const unsigned char*)gp_weight_words;",
            "    m->bases[2] = nullptr;",
            "#else",
            "    unsigned char* w = aligned(kWeightBytes, &m->bases[2]);",
            '    FILE* f = weights_path ? std::fopen(weights_path, "rb") : nullptr;',
            "    size_t got = (f && w) ? std::fread(w, 1, kWeightBytes, f) : 0;",
            "    bool extra = f && std::fgetc(f) != EOF;",
            "    if (f) std::fclose(f);",
            "    if (got != kWeightBytes || extra) {",
            '        std::fprintf(stderr, "gp_model_create: %s is not this model\'s weights file "',
            '                     "(%zu bytes, digest %016llx)\\n", weights_path ? weights_path : "(null)",',
            "                     kWeightBytes, (unsigned long long)kWeightDigest);",
            "        for (void* b : m->bases) std::free(b);",
            "        delete m;",
            "        return nullptr;",
            "    }",
            "    m->weights = w;",
            "#endif",
            "    if (!m->arena || !m->ws) {",
            "        gp_model_destroy(m);",
            "        return nullptr;",
            "    }",
            "    m->pool = gprt::pool_create(threads);",
            "    return m;",
            "}",
            "",
            "GP_API void gp_model_destroy(gp_model* m) {",
            "    if (!m) return;",
            "    gprt::pool_destroy(m->pool);",
            "    for (void* b : m->bases) std::free(b);",
            "    delete m;",
            "}",
            "",
            "GP_API int gp_model_run(gp_model* m, const void* const* in, void* const* out) {",
            "    unsigned char* A = m->arena;",
            "    const unsigned char* W = m->weights;",
            "    (void)A;",
            "    (void)W;",
            *body,
            *outs,
            "    return 0;",
            "}",
            "",
            f"GP_API int gp_model_num_inputs(void) {{ return {len(graph.inputs)}; }}",
            f"GP_API int gp_model_num_outputs(void) {{ return {len(graph.outputs)}; }}",
            "GP_API int gp_model_input_rank(int i) { return kIn_rank[i]; }",
            "GP_API const int64_t* gp_model_input_shape(int i) { return kIn[i]; }",
            "GP_API int gp_model_input_dtype(int i) { return kIn_dtype[i]; }",
            "GP_API int gp_model_output_rank(int i) { return kOut_rank[i]; }",
            "GP_API const int64_t* gp_model_output_shape(int i) { return kOut[i]; }",
            "GP_API int gp_model_output_dtype(int i) { return kOut_dtype[i]; }",
            "#if defined(GP_WEIGHTS_EMBEDDED)",
            "GP_API int gp_model_weights_embedded(void) { return 1; }",
            "#else",
            "GP_API int gp_model_weights_embedded(void) { return 0; }",
            "#endif",
            "",
            '}  // extern "C"',
            "",
        ]
    )
