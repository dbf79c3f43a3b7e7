"""PyTorch frontend: capture an ``nn.Module`` and translate it into graphprune IR.

Capture uses ``torch.export`` (non-strict) followed by ``run_decompositions`` with a table from which
the ops graphprune knows natively were removed, so convolutions, norms, attention, resizes and the
like survive as single ATen calls while everything else decomposes into core ATen. Each ATen target
is translated by one small function in ``_TABLE``. When ``torch.export`` cannot capture a module,
``torch.fx.symbolic_trace`` is tried: every FX call is lowered on its own to ATen (``make_fx`` with
the example values recorded by ``ShapeProp``) and goes through the same table.

Translation rules that hold everywhere:

- Parameters and buffers become IR constants named by their fully-qualified name; tied tensors
  become one constant. A node whose inputs are all constants is evaluated with torch at import time
  (constant folding); constants are only materialised in the IR when an IR node reads them.
- Python scalars become 0-d constants with the dtype torch's promotion rules give the op.
- An ATen op without a translation becomes ``Op.OPAQUE`` (it still runs, through ``torch.ops``) and
  a ``UserWarning`` names it.
- Node names are module paths (``layer1.0.conv1``; ``path.op`` when one module call emits several
  ops); graph inputs are named after forward()'s arguments; nested outputs are flattened.

With ``dynamic_batch=True`` axis 0 of every input is the symbol "N". Reshapes copy it with 0, and
the view + bmm + view that torch emits for batched matmuls of rank > 3 becomes one MATMUL over the
original axes. The IR cannot express a size that mixes N with other axes (MultiheadAttention's
batch * heads views) or a constant expanded to N (a ViT class token, an LSTM's initial state);
such models raise ModelLoadError and must be traced with a static batch.
"""

from __future__ import annotations

import inspect
import math
import operator
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch._ops import OpOverload, OpOverloadPacket
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils import _pytree as pytree

from ..ir.errors import GraphError, GraphpruneError, ModelLoadError
from ..ir.graph import Graph, Node, Value
from ..ir.opaque import torch_attrs
from ..ir.ops import (
    AdaptivePoolAttrs,
    AttentionAttrs,
    AxesAttrs,
    AxisAttrs,
    CastAttrs,
    ClipAttrs,
    ConvAttrs,
    ConvTransposeAttrs,
    EpsAttrs,
    ExpandAttrs,
    FactorAttrs,
    GatherAttrs,
    GeluAttrs,
    GroupNormAttrs,
    HardSigmoidAttrs,
    LeakyReluAttrs,
    NormAttrs,
    Op,
    PadAttrs,
    PoolAttrs,
    ReduceAttrs,
    ReshapeAttrs,
    ResizeAttrs,
    SliceAttrs,
    SplitAttrs,
    TransposeAttrs,
)
from ..ir.types import Dim, DType, TensorType

__all__ = ["trace"]

aten = torch.ops.aten

_INT64_MAX = 2**63 - 1

_TORCH_TO_DTYPE: dict[torch.dtype, DType] = {
    torch.float32: DType.F32,
    torch.float64: DType.F64,
    torch.float16: DType.F16,
    torch.int64: DType.I64,
    torch.int32: DType.I32,
    torch.int8: DType.I8,
    torch.uint8: DType.U8,
    torch.bool: DType.BOOL,
}
_DTYPE_TO_TORCH = {v: k for k, v in _TORCH_TO_DTYPE.items()}


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def trace(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    dynamic_batch: bool = False,
    name: str | None = None,
    method: str = "auto",
) -> Graph:
    """Capture `module` called on `example_inputs` as an IR graph.

    `dynamic_batch=True` makes axis 0 of every input the symbolic dimension "N". `method` picks the
    capture: "export" (torch.export only), "fx" (torch.fx.symbolic_trace only, static shapes) or
    "auto" (export, then fx if export cannot capture the module).
    """
    _check_arguments(module, example_inputs, method)
    graph_name = name or type(module).__name__
    # Trace the inference graph; remember every submodule's mode so the caller's module is untouched.
    modes = {m: m.training for m in module.modules()}
    if any(m.training and isinstance(m, _MODE_DEPENDENT) for m in module.modules()):
        warnings.warn(
            f"{type(module).__name__} is in training mode; graphprune traces it in eval mode "
            "(call module.eval() first to silence this)",
            UserWarning,
            stacklevel=2,
        )
    module.eval()
    try:
        return _trace(module, example_inputs, dynamic_batch, graph_name, method)
    finally:
        for m, mode in modes.items():
            m.training = mode


# Layers that compute differently in training mode (trace() always captures eval mode).
_MODE_DEPENDENT = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.MultiheadAttention,
    torch.nn.RNNBase,
    torch.nn.TransformerEncoderLayer,
    torch.nn.TransformerDecoderLayer,
)


def _check_arguments(module: object, example_inputs: object, method: str) -> None:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"trace() expects a torch.nn.Module, got {type(module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        raise TypeError("example_inputs must be a tuple of tensors; wrap a single tensor as (x,)")
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of tensors, got {type(example_inputs).__name__}")
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"example_inputs[{i}] is a {type(t).__name__}, not a tensor; graphprune graphs take tensor "
                "inputs only (bind other arguments in a wrapper module)"
            )
        if t.dtype not in _TORCH_TO_DTYPE:
            raise TypeError(
                f"example_inputs[{i}] has dtype {t.dtype}, which graphprune does not support; expected one of "
                f"{sorted(str(d) for d in _TORCH_TO_DTYPE)}"
            )
    if method not in ("auto", "export", "fx"):
        raise ValueError(f"method must be 'auto', 'export' or 'fx', got {method!r}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _trace(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], dynamic: bool, name: str, method: str) -> Graph:
    cls = type(module).__name__
    export_error: BaseException | None = None
    if method in ("auto", "export"):
        try:
            ep = _export(module, inputs, dynamic)
        except Exception as e:  # noqa: BLE001 - any capture failure moves on to the fx fallback
            export_error = e
            if method == "export":
                raise ModelLoadError(
                    f"torch.export could not capture {cls}: {_first_line(e)}; remove data-dependent Python "
                    "control flow from forward() or try method='fx'"
                ) from e
        else:
            return _import_program(module, inputs, ep, name, dynamic)
    if dynamic:
        reason = f"torch.export failed ({_first_line(export_error)}); " if export_error else ""
        raise ModelLoadError(
            f"cannot trace {cls} with dynamic_batch=True: {reason}the torch.fx fallback only records static "
            "shapes; make forward() exportable or trace with dynamic_batch=False"
        )
    try:
        gm = _symbolic_trace(module, inputs)
    except Exception as e:  # noqa: BLE001
        export_part = f"torch.export failed with {_first_line(export_error)}; " if export_error else ""
        raise ModelLoadError(
            f"cannot capture {cls}: {export_part}torch.fx.symbolic_trace failed with {_first_line(e)}. "
            "Make forward() traceable: no Python control flow (if/while/for) on tensor values, no "
            ".item()/.tolist()/numpy() on tensors, only tensor inputs and outputs"
        ) from e
    return _FxImporter(module, inputs, gm, name).run()


# ---------------------------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------------------------

# ATen packets graphprune translates as one op: their decompositions are removed from the table.
_PRESERVED = (
    "conv1d conv2d conv3d convolution conv_transpose1d conv_transpose2d conv_transpose3d linear matmul "
    "layer_norm native_layer_norm group_norm native_group_norm rms_norm _fused_rms_norm batch_norm "
    "instance_norm scaled_dot_product_attention gelu silu hardswish hardsigmoid hardtanh relu6 leaky_relu "
    "prelu _prelu_kernel elu softplus mish pixel_shuffle pixel_unshuffle upsample_nearest1d upsample_nearest2d "
    "upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d "
    "upsample_linear1d upsample_bilinear2d upsample_trilinear3d adaptive_avg_pool1d adaptive_avg_pool2d "
    "adaptive_avg_pool3d avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d "
    "max_pool2d_with_indices max_pool3d_with_indices embedding softmax _softmax _safe_softmax log_softmax "
    "_log_softmax pad constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d "
    "replication_pad2d replication_pad3d "
    # no IR op, but their decompositions are worse: many opaque index ops instead of one opaque op
    "upsample_bicubic2d _upsample_bicubic2d_aa _upsample_bilinear2d_aa im2col col2im"
).split()


@cache
def _preserved_packets() -> frozenset[OpOverloadPacket]:
    return frozenset(getattr(aten, n) for n in _PRESERVED if hasattr(aten, n))


def _decomposition_table() -> dict[OpOverload, Callable[..., Any]]:
    """torch.export's default decompositions minus those of the ops graphprune translates natively."""
    table = torch.export.default_decompositions()
    keep = _preserved_packets()
    for op in list(table):
        if getattr(op, "overloadpacket", None) in keep:
            table.pop(op)
    return table  # type: ignore[return-value]


@cache
def _make_fx_table() -> dict[OpOverload, Callable[..., Any]]:
    return dict(_decomposition_table().items())


def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], dynamic: bool) -> torch.export.ExportedProgram:
    dynamic_shapes = None
    if dynamic:
        batch = torch.export.Dim("N")
        # torch.export specialises sizes 0 and 1, so export a batch-1 example with batch 2: only
        # shapes matter for the capture, the graph is the same.
        inputs = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in inputs)
        dynamic_shapes = _batch_shapes(module, inputs, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes, strict=False)


def _import_program(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    ep: torch.export.ExportedProgram,
    name: str,
    dynamic: bool,
) -> Graph:
    """The exported program as it is when every call has a translator and none mutates, and the
    result needs no opaque op; else its decomposition. Decomposing re-traces the whole program (as
    long again as the export) and mostly renames ops the importer translates either way."""
    if _translatable(ep):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an opaque op here only means: decompose
                graph = _ExportImporter(module, inputs, ep, name, dynamic).run()
            if not graph.find(Op.OPAQUE):
                return graph
        except Exception:  # noqa: BLE001, S110 - any failure of the shortcut takes the decomposed path
            pass
    return _ExportImporter(module, inputs, ep.run_decompositions(_decomposition_table()), name, dynamic).run()


def _translatable(ep: torch.export.ExportedProgram) -> bool:
    """Whether every call of the exported program is an ATen op with a translator and none mutates
    its inputs."""
    for n in ep.graph.nodes:
        if n.op != "call_function" or n.target is operator.getitem:
            continue
        t = n.target
        if not isinstance(t, OpOverload) or t._schema.is_mutable:
            return False
        if str(t).rsplit(".", 1)[0] not in _SKIPPED and t not in _TABLE and t.overloadpacket not in _TABLE:
            return False
    return True


def _batch_shapes(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], batch: Any) -> Any:
    """dynamic_shapes for torch.export with axis 0 of every input dynamic, shaped like forward()'s
    signature (a *args parameter takes a tuple of specs)."""

    def spec(t: torch.Tensor) -> dict[int, Any] | None:
        return {0: batch} if t.dim() else None

    try:
        bound = inspect.signature(module.forward).bind(*inputs)
    except (TypeError, ValueError):
        return tuple(spec(t) for t in inputs)
    shapes: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        shapes[name] = tuple(spec(t) for t in value) if isinstance(value, tuple) else spec(value)
    return shapes


class _ValueRecorder(ShapeProp):
    """ShapeProp that also keeps every node's real result in meta["val"] (the fx path needs values
    for sizes and for lowering single calls to ATen)."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        n.meta["val"] = pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, result)
        return result


def _symbolic_trace(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    gm = fx.symbolic_trace(module)
    with torch.no_grad():
        _ValueRecorder(gm).propagate(*inputs)
    return gm


# ---------------------------------------------------------------------------------------------
# Translation state
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Const:
    """A constant tensor known at import time; it enters the IR only when an IR node reads it."""

    tensor: torch.Tensor
    name: str
    source: str | None = None
    value: Value | None = None


@dataclass(eq=False)
class _Merged:
    """`value` reshaped so that its first `lead` axes are one axis. torch lowers batched matmuls of
    rank > 3 to view + bmm + view; keeping the unmerged tensor lets bmm become one MATMUL over the
    original axes (heads stay visible and a symbolic batch stays in its own axis). The reshape is
    only emitted if something other than bmm or the inverse view reads the merged tensor."""

    value: Value
    lead: int
    target: tuple[int, ...]
    name: str
    merged: Value | None = None


_TensorLike = (Value, _Const, _Merged)


class _MetaData:
    """The lazy loader of a constant that lives on the meta device: there is no data to load."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> np.ndarray:
        raise GraphError(
            f"constant %{self.name} lives on the meta device: its data is not available; trace a model with "
            "real weights to run or prune it"
        )


class _Unsupported(Exception):
    """Raised by a translator for an argument combination it cannot express: the op becomes OPAQUE."""


def _torch_dtype(d: DType) -> torch.dtype:
    return _DTYPE_TO_TORCH[d]


def _ir_dtype(d: torch.dtype, where: str) -> DType:
    if d not in _TORCH_TO_DTYPE:
        raise ModelLoadError(
            f"{where} produces dtype {d}, which graphprune does not support; convert the model to float32 "
            "(module.float()) before tracing"
        )
    return _TORCH_TO_DTYPE[d]


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _ints(v: Any, n: int) -> tuple[int, ...]:
    """An int or a list of ints (length 1 or n) as n ints."""
    if isinstance(v, int):
        return (v,) * n
    v = [int(x) for x in v]
    return tuple(v * n) if len(v) == 1 else tuple(v)


def _meta_tensors(node: fx.Node) -> list[Any]:
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return list(val)
    return [val]


def _bind(target: OpOverload, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by schema name, defaults filled in."""
    out: dict[str, Any] = {}
    for i, a in enumerate(target._schema.arguments):
        if not a.kwarg_only and i < len(args):  # positional arguments come first in a schema
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            out[a.name] = None
    return out


def _short(target: Any) -> str:
    if isinstance(target, OpOverload):
        return target.overloadpacket.__name__.lstrip("_")
    return getattr(target, "__name__", str(target))


# Targets that carry no computation for an inference graph.
_SKIPPED = {
    "aten._assert_tensor_metadata",
    "aten._assert_scalar",
    "aten._assert_async",
    "aten.sym_constrain_range",
    "aten.sym_constrain_range_for_size",
    "aten._functional_sym_constrain_range",
    "aten._functional_sym_constrain_range_for_size",
    "aten._check_is_size",
}


class _Importer:
    """Translation state shared by the export and fx paths."""

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        self.module = module
        self.g = Graph(name)
        self.env: dict[fx.Node, Any] = {}
        self.node: fx.Node | None = None  # the FX node being translated
        self.target: Any = None  # its target (the functional form of an in-place op)
        self.name = ""  # the IR node name for it
        self.batch_symbols: set[Any] = set()  # sympy symbols of the symbolic batch
        # Tied parameters: one _Const per tensor, named by the tensor's canonical FQN.
        self._by_tensor: dict[int, _Const] = {}
        self._canonical: dict[int, str] = {}
        for fqn, t in [*module.named_parameters(), *module.named_buffers()]:
            self._canonical.setdefault(id(t), fqn)

    # ------------------------------------------------------------------ values

    def param(self, fqn: str, tensor: torch.Tensor) -> _Const:
        """The constant for a parameter, buffer or lifted tensor (one per tensor: ties stay tied)."""
        key = id(tensor)
        if key not in self._by_tensor:
            fqn = self._canonical.get(key, fqn)
            self._by_tensor[key] = _Const(tensor.detach(), fqn, fqn)
        return self._by_tensor[key]

    def value(self, a: Any) -> Value:
        """The IR value of a tensor-like translation result (materialising constants and merges)."""
        if isinstance(a, Value):
            return a
        if isinstance(a, _Const):
            if a.value is None:
                a.value = self._add_const(a.name, a.tensor, a.source)
            return a.value
        if isinstance(a, _Merged):
            if a.merged is None:
                node = self.g.add_node(Op.RESHAPE, [a.value], ReshapeAttrs(a.target), name=a.name)
                a.merged = node.output
            return a.merged
        if isinstance(a, list) and len(a) == 1:
            return self.value(a[0])
        raise ModelLoadError(f"{self._where()}: expected a tensor argument, got {type(a).__name__} {a!r}")

    def _add_const(self, name: str, tensor: torch.Tensor, source: str | None) -> Value:
        if tensor.is_meta:
            return self._add_meta_const(name, tensor, source)
        t = tensor.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        _ir_dtype(t.dtype, f"constant {name!r}")
        data = t.contiguous().numpy().copy()
        try:
            return self.g.add_const(name, data, source=source)
        except GraphpruneError:
            return self.g.add_const(name, data, source=source, unique=True)

    def _add_meta_const(self, name: str, tensor: torch.Tensor, source: str | None) -> Value:
        """A constant with a type but no data (a meta-device parameter, or a fold of one): the
        analyses that read only types work; reading its data raises GraphError naming it."""
        dtype = torch.float32 if tensor.dtype == torch.bfloat16 else tensor.dtype
        ttype = TensorType(_ir_dtype(dtype, f"constant {name!r}"), tuple(int(d) for d in tensor.shape))
        loader = _MetaData(name)
        try:
            v = self.g.add_const(name, type=ttype, loader=loader, source=source)
        except GraphpruneError:
            v = self.g.add_const(name, type=ttype, loader=loader, source=source, unique=True)
        loader.name = v.name
        return v

    def const(self, data: np.ndarray | torch.Tensor, suffix: str) -> Value:
        """A new IR constant named after the current node."""
        t = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
        return self._add_const(f"{self.name}.{suffix}" if self.name else suffix, t, None)

    def scalar(self, x: float | int | bool, dtype: torch.dtype) -> Value:
        return self.const(torch.tensor(x, dtype=dtype), "scalar")

    def filled(self, shape: Sequence[Dim], fill: float, dtype: DType, suffix: str) -> Value:
        if not all(isinstance(d, int) for d in shape):
            raise ModelLoadError(f"{self._where()}: cannot build a default {suffix} for symbolic shape {shape}")
        return self.const(np.full(tuple(int(d) for d in shape), fill, dtype=dtype.numpy), suffix)

    def operand(self, a: Any, dtype: torch.dtype) -> Value:
        """`a` (tensor-like or Python scalar) as an IR value of `dtype`."""
        if isinstance(a, (bool, int, float)):
            return self.scalar(a, dtype)
        if isinstance(a, _Const) and a.tensor.dtype != dtype:
            return self.value(_Const(a.tensor.to(dtype), a.name))
        return self.cast(self.value(a), _ir_dtype(dtype, self._where()))

    def cast(self, v: Value, dtype: DType) -> Value:
        if v.type.dtype == dtype:
            return v
        return self.emit(Op.CAST, [v], CastAttrs(dtype))

    @staticmethod
    def dtype_of(a: Any) -> torch.dtype:
        if isinstance(a, Value):
            return _torch_dtype(a.type.dtype)
        if isinstance(a, _Merged):
            return _torch_dtype(a.value.type.dtype)
        if isinstance(a, _Const):
            return a.tensor.dtype
        raise TypeError(type(a).__name__)

    @staticmethod
    def _promotion_proxy(a: Any) -> Any:
        """Something torch.result_type treats like `a`: a 0-d or dimensioned tensor, or the scalar."""
        if isinstance(a, _Const):
            return a.tensor
        if isinstance(a, (Value, _Merged)):
            rank = (a.value if isinstance(a, _Merged) else a).type.rank
            return torch.empty((1,) * min(rank, 1), dtype=_Importer.dtype_of(a))
        return a

    def promote(self, a: Any, b: Any) -> torch.dtype:
        return torch.result_type(self._promotion_proxy(a), self._promotion_proxy(b))

    # ------------------------------------------------------------------ node helpers

    def emit_node(self, op: Op, inputs: Sequence[Value], attrs: Any = None, **kw: Any) -> Node:
        return self.g.add_node(op, inputs, attrs, name=self.name, **kw)

    def emit(self, op: Op, inputs: Sequence[Value], attrs: Any = None) -> Value:
        return self.emit_node(op, inputs, attrs).output

    def dims(self, shape: Iterable[Any]) -> tuple[Dim, ...]:
        return tuple(self.dim(d) for d in shape)

    def dim(self, d: Any) -> Dim:
        if isinstance(d, int):
            return d
        if isinstance(d, torch.SymInt):
            expr = d.node.expr
            if expr.is_number:
                return int(expr)
            if expr in self.batch_symbols:
                return "N"
            import sympy

            named = expr.subs({s: sympy.Symbol("N") for s in self.batch_symbols})
            return f"({named})"
        return int(d)

    def out_meta(self, i: int = 0) -> Any:
        assert self.node is not None
        metas = _meta_tensors(self.node)
        if i >= len(metas) or not isinstance(metas[i], torch.Tensor):
            raise ModelLoadError(f"{self._where()}: output {i} has no recorded tensor metadata")
        return metas[i]

    def out_dims(self, i: int = 0) -> tuple[Dim, ...]:
        return self.dims(self.out_meta(i).shape)

    def out_dtype(self, i: int = 0) -> torch.dtype:
        return self.out_meta(i).dtype

    def tensor_type(self, meta: Any, channel_hint: Value | None) -> TensorType:
        dims = self.dims(meta.shape)
        ch = None
        if channel_hint is not None and channel_hint.type.channel_axis is not None:
            if channel_hint.type.rank == len(dims):
                ch = channel_hint.type.channel_axis
        return TensorType(_ir_dtype(meta.dtype, self._where()), dims, ch)

    def _where(self) -> str:
        if self.node is None:
            return "graph"
        return f"node {self.node.name!r} ({self.node.target})"

    def fx_arg(self, i: int) -> Any:
        """The raw FX argument `i` of the current node (for pattern checks across nodes)."""
        assert self.node is not None
        return self.node.args[i] if i < len(self.node.args) else None

    def output_used(self, i: int) -> bool:
        """Whether output `i` of the current multi-output node is read."""
        assert self.node is not None
        for user in self.node.users:
            if user.target is not operator.getitem or user.args[1] == i:
                return True
        return False

    # ------------------------------------------------------------------ translating FX nodes

    def lookup(self, a: Any) -> Any:
        def get(x: Any) -> Any:
            if isinstance(x, fx.Node):
                if x not in self.env:
                    raise ModelLoadError(f"{self._where()}: argument {x.name!r} was not translated")
                return self.env[x]
            return x

        return pytree.tree_map(get, a, is_leaf=lambda x: isinstance(x, fx.Node))

    def translate_call(self, node: fx.Node, name: str) -> Any:
        """Translate one call_function node of an ATen graph; returns its env entry."""
        self.node, self.name = node, name
        target = node.target
        args, kwargs = self.lookup(list(node.args)), self.lookup(dict(node.kwargs))
        try:
            return self._translate(node, target, args, kwargs)
        except ModelLoadError as e:
            if str(e).startswith("node "):  # already names the node
                raise
            raise ModelLoadError(f"{self._where()}: {e}") from e
        except GraphpruneError as e:  # a shape or graph error from the IR
            hint = ""
            if self.batch_symbols:
                hint = (
                    "; with dynamic_batch=True the batch must stay in an axis of its own (the IR cannot merge a "
                    "symbolic size with other axes): trace with dynamic_batch=False"
                )
            raise ModelLoadError(f"cannot translate {self._where()} (module path {name!r}): {e}{hint}") from e
        except Exception as e:
            raise ModelLoadError(
                f"internal error translating {self._where()} (module path {name!r}): {_first_line(e)}; this is a "
                "graphprune bug, please report it with the model"
            ) from e

    def _translate(self, node: fx.Node, target: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if target is operator.getitem:
            seq, idx = args
            if isinstance(seq, (list, tuple)):
                return seq[idx]
            return node.meta.get("val")  # indexing a symbolic size or similar non-tensor
        if not isinstance(target, OpOverload):
            # Python arithmetic on sizes (operator.mul, sym_* helpers): the recorded value is the answer.
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) or val is None:
                raise ModelLoadError(f"{self._where()}: unsupported call to {target!r}")
            return val
        if str(target).rsplit(".", 1)[0] in _SKIPPED:
            return None
        if target._schema.is_mutable:
            return self._translate_inplace(node, target, args, kwargs)
        self.target = target
        translator = _TABLE.get(target) or _TABLE.get(target.overloadpacket)
        if translator is not None and translator.before_folding:
            res = translator.fn(self, _bind(target, args, kwargs))
            if res is not NotImplemented:
                return res
        folded = self._fold(target, args, kwargs)
        if folded is not NotImplemented:
            return folded
        if translator is not None and not translator.before_folding:
            try:
                res = translator.fn(self, _bind(target, args, kwargs))
            except _Unsupported:
                res = NotImplemented
            if res is not NotImplemented:
                return res
        return self.opaque(target, args, kwargs)

    def _translate_inplace(self, node: fx.Node, target: OpOverload, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """An in-place op (only the fx path has them) as its functional form; later readers of the
        mutated argument read the result, as they would in eager mode."""
        name = target.overloadpacket.__name__
        if name == "copy_":
            dst, src = args[0], args[1]
            dt, dims = self.dtype_of(dst), tuple(self.value(dst).type.shape)
            res: Any = self.operand(src, dt)
            if tuple(res.type.shape) != dims:
                res = self.emit(Op.EXPAND, [res], ExpandAttrs(tuple(int(d) for d in dims)))
        else:
            packet = getattr(aten, name[:-1], None) if name.endswith("_") else None
            functional = getattr(packet, target._overloadname, None) if packet is not None else None
            if functional is None:
                raise ModelLoadError(f"{self._where()}: the in-place op {target} has no functional form to translate")
            res = self._translate(node, functional, args, kwargs)
        mutated = node.args[0]
        if isinstance(mutated, fx.Node):
            self.env[mutated] = res
        return res

    def _fold(self, target: OpOverload, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Evaluate `target` with torch when every input is a constant."""
        leaves = pytree.tree_leaves((args, kwargs))
        if any(isinstance(x, (Value, _Merged, torch.SymInt, torch.SymFloat)) for x in leaves):
            return NotImplemented
        if torch.Tag.nondeterministic_seeded in target.tags:
            return NotImplemented
        real_args, real_kwargs = pytree.tree_map(
            lambda x: x.tensor if isinstance(x, _Const) else x, (args, kwargs), is_leaf=lambda x: isinstance(x, _Const)
        )
        try:
            with torch.no_grad():
                out = target(*real_args, **real_kwargs)
        except Exception:  # noqa: BLE001 - an op that cannot run eagerly here is translated instead
            return NotImplemented
        if isinstance(out, torch.Tensor):
            return _Const(out, self.name)
        if isinstance(out, (tuple, list)):
            return [_Const(o, self.name) if isinstance(o, torch.Tensor) else o for o in out]
        return out

    def opaque(self, target: OpOverload, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """An OPAQUE node running `target` through torch.ops, typed from the FX metadata."""
        assert self.node is not None
        inputs: list[Value] = []

        def encode(a: Any) -> Any:
            if isinstance(a, _TensorLike):
                inputs.append(self.value(a))
                return {"$input": len(inputs) - 1}
            if isinstance(a, torch.dtype):
                return {"$dtype": str(a).removeprefix("torch.")}
            if isinstance(a, (list, tuple)):
                return [encode(x) for x in a]
            if a is None or isinstance(a, (bool, int, float, str)):
                return a
            if isinstance(a, torch.device):
                return str(a)
            if isinstance(a, (torch.layout, torch.memory_format)):
                return None
            raise ModelLoadError(
                f"{self._where()}: op {target} is not known to graphprune and its argument {a!r} "
                f"({type(a).__name__}) cannot be recorded for opaque execution"
            )

        jargs = [encode(a) for a in args]
        jkwargs = {k: encode(v) for k, v in kwargs.items()}
        metas = _meta_tensors(self.node)
        if not metas or not all(isinstance(m, torch.Tensor) for m in metas):
            raise ModelLoadError(f"{self._where()}: op {target} is not known to graphprune and has non-tensor outputs")
        hint = inputs[0] if inputs else None
        types = [self.tensor_type(m, hint) for m in metas]
        warnings.warn(
            f"op {target} at node '{self.name or self.node.name}' is not known to graphprune; it runs opaquely "
            "and blocks pruning across it",
            UserWarning,
            stacklevel=2,
        )
        node = self.emit_node(Op.OPAQUE, inputs, torch_attrs(str(target), jargs, jkwargs), types=types)
        if isinstance(self.node.meta.get("val"), (list, tuple)):
            return list(node.outputs)
        return node.outputs[0]

    # ------------------------------------------------------------------ graph inputs and outputs

    def add_input(self, name: str, meta: Any) -> Value:
        dims = self.dims(meta.shape)
        dtype = _ir_dtype(meta.dtype, f"input {name!r}")
        ch = 1 if dtype.is_float and len(dims) >= 2 else None
        v = self.g.add_input(name, TensorType(dtype, dims, ch))
        v.source = name
        return v

    def set_outputs(self, outs: Iterable[Any]) -> None:
        values = []
        for o in outs:
            if o is None:
                continue
            if isinstance(o, (bool, int, float)):
                raise ModelLoadError(f"graph {self.g.name!r}: outputs must be tensors, got the Python value {o!r}")
            values.append(self.value(o))
        self.g.set_outputs(values)


def _input_names(module: torch.nn.Module, n: int) -> list[str]:
    """Graph input names: the forward() argument names (numbered for *args)."""
    names: list[str] = []
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    for p in params:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            names += [f"{p.name}{i}" for i in range(n - len(names))]
        elif p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        if len(names) >= n:
            break
    names += [f"input{i}" for i in range(len(names), n)]
    return names[:n]


def _real_ops(nodes: Iterable[fx.Node]) -> list[fx.Node]:
    return [
        n
        for n in nodes
        if n.op == "call_function"
        and isinstance(n.target, OpOverload)
        and n.target.overloadpacket not in (aten.sym_size, aten.sym_numel, aten.sym_stride)
        and str(n.target).rsplit(".", 1)[0] not in _SKIPPED
    ]


def _leaf_module_type(type_name: str) -> bool:
    return type_name.startswith("torch.nn.modules.")


# ---------------------------------------------------------------------------------------------
# torch.export path
# ---------------------------------------------------------------------------------------------


class _ExportImporter(_Importer):
    def __init__(
        self,
        module: torch.nn.Module,
        inputs: tuple[torch.Tensor, ...],
        ep: torch.export.ExportedProgram,
        name: str,
        dynamic: bool,
    ) -> None:
        super().__init__(module, name)
        self.ep = ep
        self.inputs = inputs
        self.dynamic = dynamic

    def _node_names(self) -> dict[fx.Node, str]:
        """IR node names from the module call each op came from (nn_module_stack): the module path
        for the single op of a built-in layer call, else path.op; top-level ops keep the FX name."""
        calls: dict[str, list[fx.Node]] = {}
        info: dict[fx.Node, tuple[str, str]] = {}
        for n in _real_ops(self.ep.graph.nodes):
            stack = n.meta.get("nn_module_stack") or {}
            if not stack:
                continue
            key, (path, type_name) = list(stack.items())[-1]
            if not isinstance(path, str) or not path or path.startswith("_empty"):
                continue
            calls.setdefault(key, []).append(n)
            info[n] = (path, str(type_name))
        names: dict[fx.Node, str] = {}
        for nodes in calls.values():
            for n in nodes:
                path, type_name = info[n]
                single = len(nodes) == 1 and _leaf_module_type(type_name)
                names[n] = path if single else f"{path}.{_short(n.target)}"
        return names

    def run(self) -> Graph:
        sig = self.ep.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
        arg_names = _input_names(self.module, len(self.inputs))
        state = {**self.ep.state_dict, **self.ep.constants}
        placeholders = [n for n in self.ep.graph.nodes if n.op == "placeholder"]
        user = [n for n in placeholders if specs[n.name].kind == torch.export.graph_signature.InputKind.USER_INPUT]
        if self.dynamic:
            for n in user:
                shape = n.meta["val"].shape
                if len(shape) and isinstance(shape[0], torch.SymInt):
                    self.batch_symbols.add(shape[0].node.expr)
        user_index = 0
        for n in placeholders:
            spec = specs[n.name]
            kind = spec.kind.name
            if kind == "USER_INPUT":
                self.env[n] = self.add_input(arg_names[user_index], n.meta["val"])
                user_index += 1
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                tensor = state[spec.target]
                self.env[n] = self.param(spec.target, tensor)
            else:
                raise ModelLoadError(
                    f"graph {self.g.name!r}: input {n.name!r} of kind {kind} is not supported; "
                    "graphprune imports modules with tensor inputs, parameters and buffers only"
                )
        names = self._node_names()
        for n in self.ep.graph.nodes:
            if n.op == "call_function":
                self.env[n] = self.translate_call(n, names.get(n, n.name))
            elif n.op == "output":
                outs = self.lookup(list(n.args[0]))
                kinds = [s.kind.name for s in sig.output_specs]
                self.node = None
                self.set_outputs(o for o, k in zip(outs, kinds, strict=True) if k == "USER_OUTPUT")
            elif n.op == "get_attr":
                raise ModelLoadError(
                    f"node {n.name!r}: submodule {n.target!r} (control flow such as torch.cond) is not supported"
                )
        return self.g


# ---------------------------------------------------------------------------------------------
# torch.fx fallback path
# ---------------------------------------------------------------------------------------------

_DATA_DEPENDENT_METHODS = {"item", "tolist", "numpy", "__bool__", "nonzero", "cpu", "cuda"}


class _FxImporter(_Importer):
    """Translates a symbolic_trace graph: every call is lowered on its own to ATen with make_fx (using
    the example values ShapeProp recorded) and its ATen nodes go through the same table as export."""

    def __init__(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], gm: fx.GraphModule, name: str):
        super().__init__(module, name)
        self.gm = gm
        self.inputs = inputs

    def run(self) -> Graph:
        arg_names = _input_names(self.module, len(self.inputs))
        i = 0
        for n in self.gm.graph.nodes:
            self.node, self.name = n, n.name
            if n.op == "placeholder":
                if i >= len(self.inputs):
                    raise ModelLoadError(f"{type(self.module).__name__}.forward takes more inputs than were given")
                self.env[n] = self.add_input(arg_names[i], self.inputs[i])
                i += 1
            elif n.op == "get_attr":
                attr = _fetch_attr(self.gm, str(n.target))
                self.env[n] = self.param(str(n.target), attr) if isinstance(attr, torch.Tensor) else attr
            elif n.op in ("call_module", "call_function", "call_method"):
                self.env[n] = self._call(n)
            elif n.op == "output":
                self.node = None
                self.set_outputs(pytree.tree_leaves(self.lookup(n.args[0])))
        return self.g

    def _call(self, n: fx.Node) -> Any:
        val = n.meta.get("val")
        if n.op == "call_method" and n.target in _DATA_DEPENDENT_METHODS:
            raise ModelLoadError(
                f"node {n.name!r}: Tensor.{n.target}() depends on tensor values; the fx fallback cannot capture it"
            )
        has_tensor = any(isinstance(x, torch.Tensor) for x in pytree.tree_leaves(val))
        if not has_tensor:
            return val  # sizes, dims, dtypes: static facts recorded by ShapeProp
        picked = self._pick(n)
        if picked is not None:
            return picked
        args, kwargs = self.lookup(list(n.args)), self.lookup(dict(n.kwargs))
        if n.op != "call_module" and not any(
            isinstance(x, (Value, _Merged)) for x in pytree.tree_leaves((args, kwargs))
        ):
            # every input is constant: the recorded result is the folded constant
            return pytree.tree_map(lambda t: _Const(t, n.name) if isinstance(t, torch.Tensor) else t, val)
        if n.op == "call_function" and not _is_torch_callable(n.target):
            raise ModelLoadError(
                f"node {n.name!r}: {getattr(n.target, '__qualname__', n.target)} is a user function kept as a leaf "
                "(torch.fx.wrap); the fx fallback lowers only torch functions, so inline it or make it exportable"
            )
        return self._lower(n)

    def _pick(self, n: fx.Node) -> Any:
        """`outputs[i]` or `outputs.values` of a multi-output call: no computation, pick the entry."""
        if n.op != "call_function" or n.target not in (operator.getitem, getattr) or not isinstance(n.args[0], fx.Node):
            return None
        items, val = self.env[n.args[0]], n.args[0].meta.get("val")
        if not isinstance(items, list) or not isinstance(val, tuple):
            return None
        if n.target is operator.getitem:
            return items[n.args[1]] if isinstance(n.args[1], int) else None
        field = getattr(val, str(n.args[1]))  # a torch.return_types field, e.g. max(...).values
        return next((items[i] for i, v in enumerate(val) if v is field), None)

    def _lower(self, n: fx.Node) -> Any:
        """Lower one FX call to ATen with make_fx and translate the resulting ATen nodes."""
        bound: list[Any] = []  # env entries for the traced function's tensor arguments
        sources: list[fx.Node | None] = []  # the FX node each entry came from (for in-place ops)
        examples: list[torch.Tensor] = []
        base = n.name
        if n.op == "call_module":
            sub = self.gm.get_submodule(str(n.target))
            base = str(n.target)
            local = [*sub.named_parameters(), *sub.named_buffers()]
            for key, t in local:
                bound.append(self.param(f"{n.target}.{key}", t))
                sources.append(None)
                examples.append(t.detach())

        # Every tensor-valued argument becomes an argument of the traced function: a slot holds its
        # index (or indices, for a list of tensors); other arguments are kept as _Literal values.
        leaves, spec = pytree.tree_flatten((list(n.args), dict(n.kwargs)))
        slots: list[int | tuple[int, ...] | _Literal] = []
        for leaf in leaves:
            if isinstance(leaf, fx.Node):
                item, val = self.env[leaf], leaf.meta.get("val")
                if isinstance(val, torch.Tensor):
                    slots.append(len(bound))
                    bound.append(item)
                    sources.append(leaf)
                    examples.append(val)
                    continue
                if isinstance(val, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in val):
                    slots.append(tuple(range(len(bound), len(bound) + len(val))))
                    bound.extend(item)
                    sources.extend([None] * len(val))
                    examples.extend(val)
                    continue
                slots.append(_Literal(val))
            else:
                slots.append(_Literal(leaf))

        def call(*tensors: torch.Tensor) -> Any:
            filled: list[Any] = []
            for s in slots:
                if isinstance(s, _Literal):
                    filled.append(s.value)
                elif isinstance(s, int):
                    filled.append(tensors[s])
                else:
                    filled.append([tensors[i] for i in s])
            args, kwargs = pytree.tree_unflatten(filled, spec)
            if n.op == "call_module":
                sub = self.gm.get_submodule(str(n.target))
                params = {k: tensors[i] for i, (k, _) in enumerate(local)}
                return torch.func.functional_call(sub, params, tuple(args), kwargs)
            if n.op == "call_method":
                return getattr(args[0], str(n.target))(*args[1:], **kwargs)
            return n.target(*args, **kwargs)  # type: ignore[operator]

        try:
            with torch.no_grad():
                sub_gm = make_fx(call, pre_dispatch=True, decomposition_table=_make_fx_table())(*examples)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"node {n.name!r}: could not lower {n.target} to ATen: {_first_line(e)}") from e
        _drop_unused_outputs(sub_gm.graph, n)
        sub_nodes = list(sub_gm.graph.nodes)
        ops = _real_ops(sub_nodes)
        placeholders = [s for s in sub_nodes if s.op == "placeholder"]
        for ph, item in zip(placeholders, bound, strict=True):
            self.env[ph] = item
        result: Any = None
        for s in sub_nodes:
            if s.op == "get_attr":
                attr = _fetch_attr(sub_gm, str(s.target))
                self.env[s] = _Const(attr.detach(), f"{base}.{s.target}") if isinstance(attr, torch.Tensor) else attr
            elif s.op == "call_function":
                name = base if len(ops) == 1 else f"{base}.{_short(s.target)}"
                self.env[s] = self.translate_call(s, name)
            elif s.op == "output":
                result = self.lookup(s.args[0])
        # an argument the call mutated in place now reads as its new value
        for ph, item, src in zip(placeholders, bound, sources, strict=True):
            if src is not None and self.env[ph] is not item:
                self.env[src] = self.env[ph]
        if isinstance(result, tuple):
            result = list(result)
        return result


@dataclass(frozen=True)
class _Literal:
    value: Any


def _drop_unused_outputs(graph: fx.Graph, n: fx.Node) -> None:
    """Remove the outputs of a lowered multi-output call that nothing in the outer graph reads (the
    indices of max(dim) used as `.values` only), so their ATen producers see them unused."""
    val = n.meta.get("val")
    if not isinstance(val, tuple) or not n.users:
        return
    used: set[int] = set()
    for user in n.users:
        if user.target is operator.getitem and isinstance(user.args[1], int):
            used.add(user.args[1])
        elif user.target is getattr:
            field = getattr(val, str(user.args[1]))
            used.update(i for i, v in enumerate(val) if v is field)
        else:
            return
    out = next(s for s in graph.nodes if s.op == "output")
    results = out.args[0]
    if isinstance(results, (tuple, list)) and len(results) == len(val):
        out.args = (type(results)(r if i in used else None for i, r in enumerate(results)),)
        graph.eliminate_dead_code()


def _fetch_attr(gm: torch.nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_torch_callable(fn: Any) -> bool:
    if isinstance(fn, (OpOverload, OpOverloadPacket)):
        return True
    module = getattr(fn, "__module__", None) or ""
    return module.startswith("torch") or module in ("_operator", "operator", "builtins")


# ---------------------------------------------------------------------------------------------
# The ATen translation table
# ---------------------------------------------------------------------------------------------

Params = dict[str, Any]


@dataclass(frozen=True)
class _Translator:
    fn: Callable[[_Importer, Params], Any]
    before_folding: bool = False  # runs before constant folding (keeps a parameter's identity)


_TABLE: dict[OpOverload | OpOverloadPacket, _Translator] = {}


def _register(*targets: Any, before_folding: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[[_Importer, Params], Any]) -> Callable[[_Importer, Params], Any]:
        for t in targets:
            if t is not None:
                _TABLE[t] = _Translator(fn, before_folding)
        return fn

    return deco


def _op(name: str) -> OpOverloadPacket | None:
    return getattr(aten, name, None)


def _ops(*names: str) -> list[OpOverloadPacket | None]:
    return [_op(n) for n in names]


def _self(p: Params) -> Any:
    return p["self"] if "self" in p else p["input"]


# ------------------------------------------------------------------ identity and dtype


@_register(
    *_ops(
        "clone",
        "contiguous",
        "alias",
        "detach",
        "lift_fresh_copy",
        "lift_fresh",
        "dropout",
        "feature_dropout",
        "alpha_dropout",
        "feature_alpha_dropout",
        "_to_copy",
        "to",
        "type_as",
        "_unsafe_view_copy",
    ),
    before_folding=True,
)
def _t_identity_or_cast(cx: _Importer, p: Params) -> Any:
    x = _self(p)
    out = cx.out_meta(0)
    if isinstance(x, _Const):
        return x if x.tensor.dtype == out.dtype else NotImplemented  # a dtype change is folded
    if isinstance(x, (Value, _Merged)) and cx.dtype_of(x) == out.dtype:
        return x
    return cx.cast(cx.value(x), _ir_dtype(out.dtype, cx._where()))


# ------------------------------------------------------------------ shape-only constants


@_register(
    *_ops("zeros_like", "ones_like", "full_like", "empty_like", "new_zeros", "new_ones", "new_full", "new_empty")
)
def _t_like(cx: _Importer, p: Params) -> Any:
    """These read only the shape of their input: fold them when the shape is static."""
    out = cx.out_meta()
    dims = cx.out_dims()
    if not all(isinstance(d, int) for d in dims):
        return NotImplemented
    name = cx.target.overloadpacket.__name__
    fill = 0.0
    if "ones" in name:
        fill = 1.0
    elif "full" in name:
        fill = p["fill_value"]
    return _Const(torch.full(tuple(int(d) for d in dims), fill, dtype=out.dtype), cx.name)


@_register(*_ops("sym_size", "sym_numel", "sym_stride", "sym_storage_offset"))
def _t_sym(cx: _Importer, p: Params) -> Any:
    assert cx.node is not None
    return cx.node.meta.get("val")


# ------------------------------------------------------------------ convolution and dense


def _conv(
    cx: _Importer,
    x: Any,
    w: Any,
    b: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    transposed: bool = False,
    output_padding: Any = 0,
) -> Value:
    xv, wv = cx.value(x), cx.value(w)
    nsp = wv.type.rank - 2
    st, dil = _ints(stride, nsp), _ints(dilation, nsp)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0,) * (2 * nsp)
        else:  # "same": torch puts the odd extra pad at the end
            total = [dil[i] * (int(wv.type.shape[2 + i]) - 1) for i in range(nsp)]
            pads = (*[t // 2 for t in total], *[t - t // 2 for t in total])
    else:
        pd = _ints(padding, nsp)
        pads = (*pd, *pd)
    inputs = [xv, wv] + ([cx.value(b)] if b is not None else [])
    if transposed:
        attrs: Any = ConvTransposeAttrs(st, pads, dil, _ints(output_padding, nsp), int(groups))
        return cx.emit(Op.CONV_TRANSPOSE, inputs, attrs)
    return cx.emit(Op.CONV, inputs, ConvAttrs(st, pads, dil, int(groups)))


@_register(*_ops("conv1d", "conv2d", "conv3d"))
def _t_conv(cx: _Importer, p: Params) -> Value:
    return _conv(cx, p["input"], p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"])


@_register(_op("convolution"), _op("_convolution"), *_ops("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"))
def _t_convolution(cx: _Importer, p: Params) -> Value:
    # aten.convolution says whether it is transposed; conv_transposeNd always is
    transposed = bool(p.get("transposed", True))
    return _conv(cx, p["input"], p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"],
                 transposed, p["output_padding"])


@_register(_op("linear"))
def _t_linear(cx: _Importer, p: Params) -> Value:
    inputs = [cx.value(p["input"]), cx.value(p["weight"])]
    if p["bias"] is not None:
        inputs.append(cx.value(p["bias"]))
    return cx.emit(Op.LINEAR, inputs)


def _transposed_weight(cx: _Importer, i: int) -> _Const | None:
    """The parameter behind FX argument `i` when it is `t(param)` (torch lowers x @ w.T this way)."""
    a = cx.fx_arg(i)
    if not isinstance(a, fx.Node) or a.op != "call_function":
        return None
    t = a.target
    ok = (
        t in (aten.t.default, aten.numpy_T.default)
        or (t is aten.permute.default and list(a.args[1]) == [1, 0])
        or (t is aten.transpose.int and sorted(_norm_axis(int(d), 2) for d in a.args[1:3]) == [0, 1])
    )
    if not ok or not isinstance(a.args[0], fx.Node):
        return None
    src = cx.env.get(a.args[0])
    if isinstance(src, _Const) and src.tensor.dim() == 2:
        return src
    return None


def _matmul(cx: _Importer, a: Any, b: Any, b_index: int) -> Any:
    if isinstance(a, _Merged) and isinstance(b, _Merged) and a.lead == b.lead:
        la, lb = a.value.type.shape[: a.lead], b.value.type.shape[: b.lead]
        if la == lb:
            out = cx.emit(Op.MATMUL, [a.value, b.value])
            return _Merged(out, a.lead, _reshape_target(out.type.shape, cx.out_dims()), cx.name)
    w = _transposed_weight(cx, b_index)
    if w is not None and not isinstance(a, _Const):
        return cx.emit(Op.LINEAR, [cx.value(a), cx.value(w)])
    dt = cx.promote(a, b)
    return cx.emit(Op.MATMUL, [cx.operand(a, dt), cx.operand(b, dt)])


@_register(_op("mm"), _op("bmm"))
def _t_mm(cx: _Importer, p: Params) -> Any:
    return _matmul(cx, p["self"], p["mat2"], 1)


@_register(_op("matmul"))
def _t_matmul(cx: _Importer, p: Params) -> Any:
    return _matmul(cx, p["self"], p["other"], 1)


@_register(_op("addmm"), _op("baddbmm"))
def _t_addmm(cx: _Importer, p: Params) -> Any:
    a = p["mat1"] if "mat1" in p else p["batch1"]
    b = p["mat2"] if "mat2" in p else p["batch2"]
    bias, beta, alpha = p["self"], p["beta"], p["alpha"]
    w = _transposed_weight(cx, 2)
    if (
        w is not None
        and beta == 1
        and alpha == 1
        and isinstance(bias, _Const)
        and bias.tensor.dim() == 1
        and not isinstance(a, _Const)
    ):
        return cx.emit(Op.LINEAR, [cx.value(a), cx.value(w), cx.value(bias)])
    prod = _matmul(cx, a, b, 2)
    prod = cx.value(prod)
    if alpha != 1:
        prod = cx.emit(Op.MUL, [prod, cx.scalar(alpha, cx.dtype_of(prod))])
    dt = cx.dtype_of(prod)
    bias_v = cx.operand(bias, dt)
    if beta != 1:
        bias_v = cx.emit(Op.MUL, [bias_v, cx.scalar(beta, dt)])
    return cx.emit(Op.ADD, [prod, bias_v])


# ------------------------------------------------------------------ normalisation


def _param_or(cx: _Importer, a: Any, channels: Dim, fill: float, dtype: DType, suffix: str) -> Value:
    return cx.value(a) if a is not None else cx.filled((channels,), fill, dtype, suffix)


def _batch_norm(cx: _Importer, x: Any, w: Any, b: Any, mean: Any, var: Any, eps: float) -> Value:
    if mean is None or var is None:
        raise _Unsupported("batch norm without running statistics")
    xv = cx.value(x)
    c = xv.type.shape[1]
    ins = [
        xv,
        _param_or(cx, w, c, 1.0, xv.type.dtype, "weight"),
        _param_or(cx, b, c, 0.0, xv.type.dtype, "bias"),
        cx.value(mean),
        cx.value(var),
    ]
    return cx.emit(Op.BATCH_NORM, ins, EpsAttrs(float(eps)))


@_register(_op("_native_batch_norm_legit_no_training"))
def _t_bn_no_training(cx: _Importer, p: Params) -> Any:
    out = _batch_norm(cx, p["input"], p["weight"], p["bias"], p["running_mean"], p["running_var"], p["eps"])
    return [out, None, None]


@_register(_op("_native_batch_norm_legit"), _op("native_batch_norm"), _op("_native_batch_norm_legit_functional"))
def _t_native_bn(cx: _Importer, p: Params) -> Any:
    if p["training"]:
        raise _Unsupported("training-mode batch norm")
    out = _batch_norm(cx, p["input"], p["weight"], p["bias"], p["running_mean"], p["running_var"], p["eps"])
    return [out, None, None]


@_register(_op("batch_norm"))
def _t_batch_norm(cx: _Importer, p: Params) -> Any:
    if p["training"]:
        raise _Unsupported("training-mode batch norm")
    return _batch_norm(cx, p["input"], p["weight"], p["bias"], p["running_mean"], p["running_var"], p["eps"])


@_register(_op("instance_norm"))
def _t_instance_norm(cx: _Importer, p: Params) -> Any:
    if not p["use_input_stats"]:
        return _batch_norm(cx, p["input"], p["weight"], p["bias"], p["running_mean"], p["running_var"], p["eps"])
    xv = cx.value(p["input"])
    c = xv.type.shape[1]
    ins = [
        xv,
        _param_or(cx, p["weight"], c, 1.0, xv.type.dtype, "weight"),
        _param_or(cx, p["bias"], c, 0.0, xv.type.dtype, "bias"),
    ]
    return cx.emit(Op.INSTANCE_NORM, ins, EpsAttrs(float(p["eps"])))


def _layer_norm(
    cx: _Importer, x: Any, shape: Sequence[int], w: Any, b: Any, eps: float, op: Op = Op.LAYER_NORM
) -> Value:
    xv = cx.value(x)
    axis = xv.type.rank - len(shape)
    ins = [xv]
    if w is not None or b is not None:
        ins.append(cx.value(w) if w is not None else cx.filled(tuple(shape), 1.0, xv.type.dtype, "weight"))
    if b is not None:
        ins.append(cx.value(b))
    return cx.emit(op, ins, NormAttrs(axis=axis, eps=float(eps)))


@_register(_op("layer_norm"))
def _t_layer_norm(cx: _Importer, p: Params) -> Value:
    return _layer_norm(cx, p["input"], p["normalized_shape"], p["weight"], p["bias"], p["eps"])


@_register(_op("native_layer_norm"))
def _t_native_layer_norm(cx: _Importer, p: Params) -> Any:
    return [_layer_norm(cx, p["input"], p["normalized_shape"], p["weight"], p["bias"], p["eps"]), None, None]


def _rms_eps(cx: _Importer, x: Any, eps: float | None) -> float:
    return float(eps) if eps is not None else float(torch.finfo(cx.dtype_of(x)).eps)


@_register(_op("rms_norm"))
def _t_rms_norm(cx: _Importer, p: Params) -> Value:
    x = p["input"]
    return _layer_norm(cx, x, p["normalized_shape"], p["weight"], None, _rms_eps(cx, x, p["eps"]), Op.RMS_NORM)


@_register(_op("_fused_rms_norm"))
def _t_fused_rms_norm(cx: _Importer, p: Params) -> Any:
    x = p["input"]
    out = _layer_norm(cx, x, p["normalized_shape"], p["weight"], None, _rms_eps(cx, x, p["eps"]), Op.RMS_NORM)
    return [out, None]


def _group_norm(cx: _Importer, x: Any, groups: int, w: Any, b: Any, eps: float) -> Value:
    xv = cx.value(x)
    c = xv.type.shape[1]
    ins = [
        xv,
        _param_or(cx, w, c, 1.0, xv.type.dtype, "weight"),
        _param_or(cx, b, c, 0.0, xv.type.dtype, "bias"),
    ]
    return cx.emit(Op.GROUP_NORM, ins, GroupNormAttrs(int(groups), float(eps)))


@_register(_op("group_norm"))
def _t_group_norm(cx: _Importer, p: Params) -> Value:
    return _group_norm(cx, p["input"], p["num_groups"], p["weight"], p["bias"], p["eps"])


@_register(_op("native_group_norm"))
def _t_native_group_norm(cx: _Importer, p: Params) -> Any:
    return [_group_norm(cx, p["input"], p["group"], p["weight"], p["bias"], p["eps"]), None, None]


# ------------------------------------------------------------------ activations and unary math


def _unary(op: Op, attrs: Callable[[Params], Any] | None = None) -> Callable[[_Importer, Params], Value]:
    def translate(cx: _Importer, p: Params) -> Value:
        x = cx.operand(_self(p), cx.out_dtype())  # int -> float promotion happens before the op
        return cx.emit(op, [x], attrs(p) if attrs else None)

    return translate


for _name, _irop in {
    "relu": Op.RELU,
    "sigmoid": Op.SIGMOID,
    "tanh": Op.TANH,
    "silu": Op.SILU,
    "hardswish": Op.HARD_SWISH,
    "erf": Op.ERF,
    "exp": Op.EXP,
    "log": Op.LOG,
    "sqrt": Op.SQRT,
    "rsqrt": Op.RSQRT,
    "neg": Op.NEG,
    "abs": Op.ABS,
    "reciprocal": Op.RECIPROCAL,
    "sin": Op.SIN,
    "cos": Op.COS,
}.items():
    _register(_op(_name))(_unary(_irop))

_register(_op("gelu"))(_unary(Op.GELU, lambda p: GeluAttrs(str(p["approximate"]))))
_register(_op("leaky_relu"))(_unary(Op.LEAKY_RELU, lambda p: LeakyReluAttrs(float(p["negative_slope"]))))
_register(_op("hardsigmoid"))(_unary(Op.HARD_SIGMOID, lambda p: HardSigmoidAttrs()))
_register(_op("hardtanh"))(_unary(Op.CLIP, lambda p: ClipAttrs(float(p["min_val"]), float(p["max_val"]))))
_register(_op("relu6"))(_unary(Op.CLIP, lambda p: ClipAttrs(0.0, 6.0)))


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@_register(_op("clamp"), _op("clamp_min"), _op("clamp_max"))
def _t_clamp(cx: _Importer, p: Params) -> Value:
    packet = cx.target.overloadpacket
    lo = p.get("min") if packet is not aten.clamp_max else None
    hi = p.get("max") if packet is not aten.clamp_min else None
    x = _self(p)
    if not isinstance(lo, _TensorLike) and not isinstance(hi, _TensorLike):
        return cx.emit(Op.CLIP, [cx.operand(x, cx.out_dtype())], ClipAttrs(_opt_float(lo), _opt_float(hi)))
    dt = cx.out_dtype()
    v = cx.operand(x, dt)
    if lo is not None:
        v = cx.emit(Op.MAXIMUM, [v, cx.operand(lo, dt)])
    if hi is not None:
        v = cx.emit(Op.MINIMUM, [v, cx.operand(hi, dt)])
    return v


@_register(_op("prelu"), _op("_prelu_kernel"))
def _t_prelu(cx: _Importer, p: Params) -> Value:
    x, w = cx.value(_self(p)), cx.value(p["weight"])
    if w.type.rank != 1:
        raise _Unsupported("prelu slope must be 1-D")
    return cx.emit(Op.PRELU, [x, w])


@_register(_op("elu"))
def _t_elu(cx: _Importer, p: Params) -> Value:
    x = cx.value(_self(p))
    dt = cx.dtype_of(x)
    alpha, scale, in_scale = float(p["alpha"]), float(p["scale"]), float(p["input_scale"])
    inner = x if in_scale == 1 else cx.emit(Op.MUL, [x, cx.scalar(in_scale, dt)])
    em1 = cx.emit(Op.SUB, [cx.emit(Op.EXP, [inner]), cx.scalar(1.0, dt)])
    neg = cx.emit(Op.MUL, [em1, cx.scalar(alpha, dt)])
    out = cx.emit(Op.WHERE, [cx.emit(Op.GREATER, [x, cx.scalar(0.0, dt)]), x, neg])
    return out if scale == 1 else cx.emit(Op.MUL, [out, cx.scalar(scale, dt)])


def _softplus(cx: _Importer, x: Value, beta: float, threshold: float) -> Value:
    dt = cx.dtype_of(x)
    bx = x if beta == 1 else cx.emit(Op.MUL, [x, cx.scalar(beta, dt)])
    soft = cx.emit(Op.LOG, [cx.emit(Op.ADD, [cx.emit(Op.EXP, [bx]), cx.scalar(1.0, dt)])])
    if beta != 1:
        soft = cx.emit(Op.DIV, [soft, cx.scalar(beta, dt)])
    # above the threshold torch returns x itself (exp would overflow)
    return cx.emit(Op.WHERE, [cx.emit(Op.GREATER, [bx, cx.scalar(threshold, dt)]), x, soft])


@_register(_op("softplus"))
def _t_softplus(cx: _Importer, p: Params) -> Value:
    return _softplus(cx, cx.value(_self(p)), float(p["beta"]), float(p["threshold"]))


@_register(_op("mish"))
def _t_mish(cx: _Importer, p: Params) -> Value:
    x = cx.value(_self(p))
    return cx.emit(Op.MUL, [x, cx.emit(Op.TANH, [_softplus(cx, x, 1.0, 20.0)])])


@_register(_op("log1p"), _op("expm1"))
def _t_log1p_expm1(cx: _Importer, p: Params) -> Value:
    # composed from exp/log: exact to ~1 ulp of 1, which the tolerances the IR is checked at allow
    x = cx.operand(_self(p), cx.out_dtype())
    one = cx.scalar(1.0, cx.dtype_of(x))
    if cx.target.overloadpacket is aten.log1p:
        return cx.emit(Op.LOG, [cx.emit(Op.ADD, [x, one])])
    return cx.emit(Op.SUB, [cx.emit(Op.EXP, [x]), one])


@_register(_op("square"))
def _t_square(cx: _Importer, p: Params) -> Value:
    x = cx.operand(_self(p), cx.out_dtype())
    return cx.emit(Op.MUL, [x, x])


@_register(*_ops("softmax", "_softmax", "_safe_softmax"))
def _t_softmax(cx: _Importer, p: Params) -> Value:
    x = cx.operand(_self(p), cx.out_dtype())
    return cx.emit(Op.SOFTMAX, [x], AxisAttrs(_norm_axis(int(p["dim"]), x.type.rank)))


@_register(_op("log_softmax"), _op("_log_softmax"))
def _t_log_softmax(cx: _Importer, p: Params) -> Value:
    # x - max - log(sum(exp(x - max))): stable without a dedicated op
    x = cx.operand(_self(p), cx.out_dtype())
    axes = (_norm_axis(int(p["dim"]), x.type.rank),)
    shifted = cx.emit(Op.SUB, [x, cx.emit(Op.REDUCE_MAX, [x], ReduceAttrs(axes, True))])
    total = cx.emit(Op.REDUCE_SUM, [cx.emit(Op.EXP, [shifted])], ReduceAttrs(axes, True))
    return cx.emit(Op.SUB, [shifted, cx.emit(Op.LOG, [total])])


# ------------------------------------------------------------------ binary elementwise


def _binary(op: Op, reverse: bool = False) -> Callable[[_Importer, Params], Value]:
    def translate(cx: _Importer, p: Params) -> Value:
        # add/sub: self op alpha * other; rsub: other - alpha * self
        a, b = _self(p), p["other"]
        if reverse:
            a, b = b, a
        dt = cx.promote(a, b)
        if op is Op.DIV and not dt.is_floating_point:
            dt = torch.get_default_dtype()  # true division
        va, vb = cx.operand(a, dt), cx.operand(b, dt)
        alpha = p.get("alpha", 1)
        if alpha is not None and alpha != 1:
            vb = cx.emit(Op.MUL, [vb, cx.scalar(alpha, dt)])
        return cx.emit(op, [va, vb])

    return translate


_register(_op("add"))(_binary(Op.ADD))
_register(_op("sub"))(_binary(Op.SUB))
_register(_op("rsub"))(_binary(Op.SUB, reverse=True))
_register(_op("mul"))(_binary(Op.MUL))
_register(_op("maximum"))(_binary(Op.MAXIMUM))
_register(_op("minimum"))(_binary(Op.MINIMUM))


@_register(_op("div"))
def _t_div(cx: _Importer, p: Params) -> Value:
    if p.get("rounding_mode") is not None:
        raise _Unsupported("division with rounding")
    return _binary(Op.DIV)(cx, p)


@_register(_op("pow"))
def _t_pow(cx: _Importer, p: Params) -> Value:
    base, exp = _self(p), p["exponent"]
    dt = cx.out_dtype()
    return cx.emit(Op.POW, [cx.operand(base, dt), cx.operand(exp, dt)])


def _not(cx: _Importer, v: Value) -> Value:
    return cx.emit(Op.WHERE, [v, cx.scalar(False, torch.bool), cx.scalar(True, torch.bool)])


def _compare(kind: str) -> Callable[[_Importer, Params], Value]:
    def translate(cx: _Importer, p: Params) -> Value:
        a, b = _self(p), p["other"]
        dt = cx.promote(a, b)
        va, vb = cx.operand(a, dt), cx.operand(b, dt)
        if kind == "eq":
            return cx.emit(Op.EQUAL, [va, vb])
        if kind == "ne":
            return _not(cx, cx.emit(Op.EQUAL, [va, vb]))
        if kind == "lt":
            return cx.emit(Op.LESS, [va, vb])
        if kind == "gt":
            return cx.emit(Op.GREATER, [va, vb])
        # le / ge as (less or equal) so that NaN compares false like in torch
        strict = cx.emit(Op.LESS if kind == "le" else Op.GREATER, [va, vb])
        return cx.emit(Op.WHERE, [strict, cx.scalar(True, torch.bool), cx.emit(Op.EQUAL, [va, vb])])

    return translate


for _kind in ("eq", "ne", "lt", "gt", "le", "ge"):
    _register(_op(_kind))(_compare(_kind))


def _as_bool(cx: _Importer, a: Any) -> Value:
    return cx.operand(a, torch.bool)


@_register(_op("logical_not"))
def _t_logical_not(cx: _Importer, p: Params) -> Value:
    return _not(cx, _as_bool(cx, _self(p)))


@_register(_op("bitwise_not"))
def _t_bitwise_not(cx: _Importer, p: Params) -> Value:
    if cx.dtype_of(_self(p)) != torch.bool:
        raise _Unsupported("bitwise not of integers")
    return _not(cx, cx.value(_self(p)))


@_register(*_ops("logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor"))
def _t_logical(cx: _Importer, p: Params) -> Value:
    kind = cx.target.overloadpacket.__name__.split("_")[1]
    a, b = _self(p), p["other"]
    if cx.target.overloadpacket.__name__.startswith("bitwise") and cx.out_dtype() != torch.bool:
        raise _Unsupported("bitwise ops on integers")
    a, b = _as_bool(cx, a), _as_bool(cx, b)
    if kind == "and":
        return cx.emit(Op.WHERE, [a, b, cx.scalar(False, torch.bool)])
    if kind == "or":
        return cx.emit(Op.WHERE, [a, cx.scalar(True, torch.bool), b])
    return _not(cx, cx.emit(Op.EQUAL, [a, b]))


@_register(_op("where"))
def _t_where(cx: _Importer, p: Params) -> Value:
    cond, a, b = p["condition"], _self(p), p["other"]
    dt = cx.out_dtype()
    return cx.emit(Op.WHERE, [_as_bool(cx, cond), cx.operand(a, dt), cx.operand(b, dt)])


@_register(_op("masked_fill"))
def _t_masked_fill(cx: _Importer, p: Params) -> Value:
    dt = cx.out_dtype()
    return cx.emit(Op.WHERE, [_as_bool(cx, p["mask"]), cx.operand(p["value"], dt), cx.operand(_self(p), dt)])


# ------------------------------------------------------------------ reductions


def _reduce_axes(p: Params, rank: int) -> tuple[int, ...]:
    dims = p.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return tuple(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return tuple(sorted({_norm_axis(int(d), rank) for d in dims}))


def _reduce(op: Op, negate: bool = False) -> Callable[[_Importer, Params], Any]:
    def translate(cx: _Importer, p: Params) -> Any:
        x = cx.operand(_self(p), cx.out_dtype())
        if negate:
            x = cx.emit(Op.NEG, [x])
        out = cx.emit(op, [x], ReduceAttrs(_reduce_axes(p, x.type.rank), bool(p.get("keepdim", False))))
        if negate:
            out = cx.emit(Op.NEG, [out])
        assert cx.node is not None
        if isinstance(cx.node.meta.get("val"), (list, tuple)):  # max.dim / min.dim: (values, indices)
            if cx.output_used(1):
                raise _Unsupported("indices of max/min")
            return [out, None]
        return out

    return translate


_register(_op("mean"))(_reduce(Op.REDUCE_MEAN))
_register(_op("sum"))(_reduce(Op.REDUCE_SUM))
_register(_op("amax"))(_reduce(Op.REDUCE_MAX))
_register(_op("amin"))(_reduce(Op.REDUCE_MAX, negate=True))


@_register(_op("max"))
def _t_max(cx: _Importer, p: Params) -> Any:
    if "other" in p:
        return _binary(Op.MAXIMUM)(cx, p)
    return _reduce(Op.REDUCE_MAX)(cx, p)


@_register(_op("min"))
def _t_min(cx: _Importer, p: Params) -> Any:
    if "other" in p:
        return _binary(Op.MINIMUM)(cx, p)
    return _reduce(Op.REDUCE_MAX, negate=True)(cx, p)


def _variance(cx: _Importer, p: Params) -> tuple[Value, Value]:
    """(variance, mean with kept dims) as sum((x - mean)^2) / (n - correction)."""
    x = cx.operand(_self(p), cx.out_dtype())
    axes = _reduce_axes(p, x.type.rank)
    correction = p.get("correction")
    if correction is None:
        correction = 1 if p.get("unbiased", True) else 0
    sizes = [x.type.shape[a] for a in axes]
    if not all(isinstance(s, int) for s in sizes):
        raise _Unsupported("variance over a symbolic axis")
    n = math.prod(int(s) for s in sizes)
    dt = cx.dtype_of(x)
    mean = cx.emit(Op.REDUCE_MEAN, [x], ReduceAttrs(axes, True))
    d = cx.emit(Op.SUB, [x, mean])
    total = cx.emit(Op.REDUCE_SUM, [cx.emit(Op.MUL, [d, d])], ReduceAttrs(axes, bool(p.get("keepdim", False))))
    return cx.emit(Op.DIV, [total, cx.scalar(max(n - float(correction), 0.0), dt)]), mean


@_register(_op("var"))
def _t_var(cx: _Importer, p: Params) -> Value:
    return _variance(cx, p)[0]


@_register(_op("std"))
def _t_std(cx: _Importer, p: Params) -> Value:
    return cx.emit(Op.SQRT, [_variance(cx, p)[0]])


@_register(_op("var_mean"))
def _t_var_mean(cx: _Importer, p: Params) -> Any:
    var, mean = _variance(cx, p)
    if not p.get("keepdim", False):
        mean = cx.emit(Op.SQUEEZE, [mean], AxesAttrs(_reduce_axes(p, mean.type.rank)))
    return [var, mean]


@_register(_op("linalg_vector_norm"))
def _t_vector_norm(cx: _Importer, p: Params) -> Value:
    order = float(p["ord"])
    x = cx.operand(_self(p), cx.out_dtype())
    attrs = ReduceAttrs(_reduce_axes(p, x.type.rank), bool(p["keepdim"]))
    if order == 2:
        return cx.emit(Op.SQRT, [cx.emit(Op.REDUCE_SUM, [cx.emit(Op.MUL, [x, x])], attrs)])
    if order == 1:
        return cx.emit(Op.REDUCE_SUM, [cx.emit(Op.ABS, [x])], attrs)
    if order == math.inf:
        return cx.emit(Op.REDUCE_MAX, [cx.emit(Op.ABS, [x])], attrs)
    raise _Unsupported(f"vector norm of order {order}")


# ------------------------------------------------------------------ shapes and data movement


def _reshape_target(in_shape: Sequence[Dim], out: Sequence[Dim]) -> tuple[int, ...]:
    """A RESHAPE target for `out`: 0 copies axis 0 (and any symbolic axis kept in place), so the
    batch is never baked in; other symbolic sizes become the single -1."""
    target: list[int] = []
    for j, d in enumerate(out):
        same = j < len(in_shape) and in_shape[j] == d
        if same and (j == 0 or isinstance(d, str)):
            target.append(0)
        elif isinstance(d, int):
            target.append(d)
        else:
            target.append(-1)
    if target.count(-1) > 1:
        raise ModelLoadError(
            f"cannot reshape {tuple(in_shape)} to {tuple(out)}: more than one axis has a symbolic size; trace "
            "with dynamic_batch=False or keep the batch in its own axis"
        )
    return tuple(target)


@_register(*_ops("view", "_unsafe_view", "reshape", "view_copy", "flatten", "unflatten", "view_as", "reshape_as"))
def _t_reshape(cx: _Importer, p: Params) -> Any:
    x = _self(p)
    out = cx.out_dims()
    if isinstance(x, _Merged):
        if tuple(x.value.type.shape) == out:
            return x.value  # the view that undoes a merge
        x = cx.value(x)
    v = cx.value(x)
    shape = tuple(v.type.shape)
    if shape == out:
        return v
    k = len(shape) - len(out) + 1
    if k >= 2 and shape[k:] == out[1:] and not v.is_const:
        return _Merged(v, k, _reshape_target(shape, out), cx.name)
    return cx.emit(Op.RESHAPE, [v], ReshapeAttrs(_reshape_target(shape, out)))


@_register(_op("permute"))
def _t_permute(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    perm = tuple(_norm_axis(int(d), v.type.rank) for d in p["dims"])
    return v if perm == tuple(range(v.type.rank)) else cx.emit(Op.TRANSPOSE, [v], TransposeAttrs(perm))


@_register(_op("transpose"), _op("swapaxes"), _op("swapdims"))
def _t_transpose(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    r = v.type.rank
    a = _norm_axis(int(p.get("dim0", p.get("axis0", 0))), r)
    b = _norm_axis(int(p.get("dim1", p.get("axis1", 0))), r)
    perm = list(range(r))
    perm[a], perm[b] = perm[b], perm[a]
    return v if a == b else cx.emit(Op.TRANSPOSE, [v], TransposeAttrs(tuple(perm)))


@_register(_op("t"), _op("numpy_T"))
def _t_t(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    if v.type.rank < 2:
        return v
    return cx.emit(Op.TRANSPOSE, [v], TransposeAttrs(tuple(reversed(range(v.type.rank)))))


@_register(_op("unsqueeze"))
def _t_unsqueeze(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    return cx.emit(Op.UNSQUEEZE, [v], AxesAttrs((_norm_axis(int(p["dim"]), v.type.rank + 1),)))


@_register(_op("squeeze"))
def _t_squeeze(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    shape = v.type.shape
    dims = p.get("dim")
    if dims is None:
        dims = range(len(shape))
    elif isinstance(dims, int):
        dims = [dims]
    axes = tuple(sorted({a for a in (_norm_axis(int(d), len(shape)) for d in dims) if shape[a] == 1}))
    return v if not axes else cx.emit(Op.SQUEEZE, [v], AxesAttrs(axes))


@_register(_op("expand"), _op("expand_as"), _op("broadcast_to"))
def _t_expand(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    shape, out = tuple(v.type.shape), cx.out_dims()
    if shape == out:
        return v
    off = len(out) - len(shape)
    target: list[int] = []
    for j, d in enumerate(out):
        i = j - off
        if isinstance(d, int):
            target.append(d)
        elif i >= 0 and shape[i] == d:
            target.append(-1)  # keep the input's (symbolic) size
        else:
            raise ModelLoadError(
                f"{cx._where()}: expanding {shape} to the symbolic shape {out} cannot be expressed (the IR expands to "
                "static sizes only); trace with dynamic_batch=False"
            )
    return cx.emit(Op.EXPAND, [v], ExpandAttrs(tuple(target)))


def _slice(cx: _Importer, v: Value, axis: int, start: Any, end: Any, step: int) -> Value:
    size = v.type.shape[axis]
    full_end = end is None or (isinstance(end, int) and end >= _INT64_MAX // 2)
    if isinstance(size, str):
        if start in (None, 0) and step == 1 and (full_end or end == size):
            return v
        raise ModelLoadError(f"{cx._where()}: cannot slice the symbolic axis {axis} ({size}) of {v.type.shape}")
    start = 0 if start is None else int(start)
    end = size if full_end else int(end)
    if start < 0:
        start += size
    if end < 0:
        end += size
    start, end = min(max(start, 0), size), min(max(end, 0), size)
    if (start, end, step) == (0, size, 1):
        return v
    return cx.emit(Op.SLICE, [v], SliceAttrs(axis, start, max(end, start), int(step)))


@_register(_op("slice"))
def _t_slice(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    axis = _norm_axis(int(p["dim"]), v.type.rank)
    return _slice(cx, v, axis, p["start"], p["end"], int(p["step"]))


@_register(_op("narrow"))
def _t_narrow(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    axis = _norm_axis(int(p["dim"]), v.type.rank)
    start = int(p["start"])
    return _slice(cx, v, axis, start, start + int(p["length"]), 1)


def _index_const(cx: _Importer, index: int, size: Dim) -> Value:
    if index < 0:
        if not isinstance(size, int):
            raise ModelLoadError(f"{cx._where()}: negative index on the symbolic axis {size}")
        index += size
    return cx.const(np.array(index, dtype=np.int64), "index")


@_register(_op("select"))
def _t_select(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    axis = _norm_axis(int(p["dim"]), v.type.rank)
    return cx.emit(Op.GATHER, [v, _index_const(cx, int(p["index"]), v.type.shape[axis])], GatherAttrs(axis))


def _split_sizes(cx: _Importer, axis: int) -> list[int]:
    assert cx.node is not None
    sizes = [cx.dim(m.shape[axis]) for m in _meta_tensors(cx.node)]
    if not all(isinstance(s, int) for s in sizes):
        raise ModelLoadError(f"{cx._where()}: cannot split the symbolic axis {axis}")
    return [int(s) for s in sizes]


def _split(cx: _Importer, v: Value, axis: int, sizes: list[int]) -> list[Value]:
    if len(sizes) == 1:
        return [v]
    return list(cx.emit_node(Op.SPLIT, [v], SplitAttrs(axis, tuple(sizes))).outputs)


@_register(*_ops("split", "split_with_sizes", "chunk", "tensor_split", "split_copy", "split_with_sizes_copy"))
def _t_split(cx: _Importer, p: Params) -> list[Value]:
    v = cx.value(_self(p))
    axis = _norm_axis(int(p.get("dim", 0)), v.type.rank)
    return _split(cx, v, axis, _split_sizes(cx, axis))


@_register(_op("unbind"))
def _t_unbind(cx: _Importer, p: Params) -> list[Value]:
    v = cx.value(_self(p))
    axis = _norm_axis(int(p["dim"]), v.type.rank)
    n = v.type.shape[axis]
    if not isinstance(n, int):
        raise ModelLoadError(f"{cx._where()}: cannot unbind the symbolic axis {axis}")
    if n == 1:
        return [cx.emit(Op.SQUEEZE, [v], AxesAttrs((axis,)))]
    parts = _split(cx, v, axis, [1] * n)
    return [cx.emit(Op.SQUEEZE, [x], AxesAttrs((axis,))) for x in parts]


@_register(_op("cat"), _op("concat"), _op("concatenate"))
def _t_cat(cx: _Importer, p: Params) -> Value:
    dt = cx.out_dtype()
    rank = len(cx.out_dims())
    # torch still accepts (and skips) legacy empty 1-D tensors in cat
    parts = [t for t in p["tensors"] if not (rank > 1 and _is_empty_1d(t))]
    vals = [cx.operand(t, dt) for t in parts]
    if len(vals) == 1:
        return vals[0]
    return cx.emit(Op.CONCAT, vals, AxisAttrs(_norm_axis(int(p["dim"]), rank)))


def _is_empty_1d(t: Any) -> bool:
    shape = t.tensor.shape if isinstance(t, _Const) else _shape_of(t)
    return tuple(shape) == (0,)


def _shape_of(t: Any) -> tuple[Dim, ...]:
    if isinstance(t, Value):
        return tuple(t.type.shape)
    if isinstance(t, _Merged):
        return tuple(t.value.type.shape)
    return ()


@_register(_op("stack"))
def _t_stack(cx: _Importer, p: Params) -> Value:
    dt = cx.out_dtype()
    rank = len(cx.out_dims())
    axis = _norm_axis(int(p["dim"]), rank)
    vals = [cx.emit(Op.UNSQUEEZE, [cx.operand(t, dt)], AxesAttrs((axis,))) for t in p["tensors"]]
    return vals[0] if len(vals) == 1 else cx.emit(Op.CONCAT, vals, AxisAttrs(axis))


@_register(_op("embedding"))
def _t_embedding(cx: _Importer, p: Params) -> Value:
    return cx.emit(Op.GATHER, [cx.value(p["weight"]), cx.value(p["indices"])], GatherAttrs(0))


@_register(_op("index_select"))
def _t_index_select(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    return cx.emit(Op.GATHER, [v, cx.value(p["index"])], GatherAttrs(_norm_axis(int(p["dim"]), v.type.rank)))


@_register(_op("index"))
def _t_index(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    indices = list(p["indices"])
    used = [i for i, ix in enumerate(indices) if ix is not None]
    if len(used) != 1:
        raise _Unsupported("advanced indexing with several index tensors")
    ix = indices[used[0]]
    if cx.dtype_of(ix) == torch.bool:
        raise _Unsupported("boolean mask indexing")
    return cx.emit(Op.GATHER, [v, cx.value(ix)], GatherAttrs(used[0]))


@_register(_op("flip"))
def _t_flip(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    for d in p["dims"]:
        axis = _norm_axis(int(d), v.type.rank)
        n = v.type.shape[axis]
        if not isinstance(n, int):
            raise ModelLoadError(f"{cx._where()}: cannot flip the symbolic axis {axis}")
        rev = cx.const(np.arange(n - 1, -1, -1, dtype=np.int64), "index")
        v = cx.emit(Op.GATHER, [v, rev], GatherAttrs(axis))
    return v


@_register(_op("roll"))
def _t_roll(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    shifts, dims = list(p["shifts"]), list(p["dims"])
    if not dims:
        raise _Unsupported("roll of the flattened tensor")
    for s, d in zip(shifts, dims, strict=True):
        axis = _norm_axis(int(d), v.type.rank)
        n = v.type.shape[axis]
        if not isinstance(n, int):
            raise ModelLoadError(f"{cx._where()}: cannot roll the symbolic axis {axis}")
        s = int(s) % n
        if s:
            tail = _slice(cx, v, axis, n - s, n, 1)
            head = _slice(cx, v, axis, 0, n - s, 1)
            v = cx.emit(Op.CONCAT, [tail, head], AxisAttrs(axis))
    return v


@_register(_op("repeat"), _op("tile"))
def _t_repeat(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    reps = [int(r) for r in (p["repeats"] if "repeats" in p else p["dims"])]
    if len(reps) < v.type.rank:  # tile pads the repeats with leading ones
        reps = [1] * (v.type.rank - len(reps)) + reps
    if len(reps) > v.type.rank:
        v = cx.emit(Op.UNSQUEEZE, [v], AxesAttrs(tuple(range(len(reps) - v.type.rank))))
    if all(r == 1 for r in reps):
        return v
    # [s0, s1, ...] -> [1, s0, 1, s1, ...] -> expand [r0, s0, r1, s1, ...] -> [r0*s0, r1*s1, ...]
    inter = cx.emit(Op.UNSQUEEZE, [v], AxesAttrs(tuple(range(0, 2 * len(reps), 2))))
    target = [x for r in reps for x in (r, -1)]
    expanded = cx.emit(Op.EXPAND, [inter], ExpandAttrs(tuple(target)))
    return cx.emit(Op.RESHAPE, [expanded], ReshapeAttrs(_reshape_target(expanded.type.shape, cx.out_dims())))


@_register(_op("repeat_interleave"))
def _t_repeat_interleave(cx: _Importer, p: Params) -> Value:
    reps, dim = p.get("repeats"), p.get("dim")
    if not isinstance(reps, int) or dim is None:
        raise _Unsupported("repeat_interleave with tensor repeats or without dim")
    v = cx.value(_self(p))
    axis = _norm_axis(int(dim), v.type.rank)
    inter = cx.emit(Op.UNSQUEEZE, [v], AxesAttrs((axis + 1,)))
    target = [-1] * inter.type.rank
    target[axis + 1] = reps
    expanded = cx.emit(Op.EXPAND, [inter], ExpandAttrs(tuple(target)))
    return cx.emit(Op.RESHAPE, [expanded], ReshapeAttrs(_reshape_target(expanded.type.shape, cx.out_dims())))


def _pad(cx: _Importer, x: Any, pad: Sequence[int], mode: str, value: float) -> Value:
    v = cx.value(x)
    r = v.type.rank
    begins, ends = [0] * r, [0] * r
    for i in range(len(pad) // 2):
        axis = r - 1 - i
        begins[axis], ends[axis] = int(pad[2 * i]), int(pad[2 * i + 1])
    # negative pads crop
    for axis in range(r):
        if begins[axis] < 0 or ends[axis] < 0:
            size = v.type.shape[axis]
            if not isinstance(size, int):
                raise ModelLoadError(f"{cx._where()}: cannot crop the symbolic axis {axis}")
            v = _slice(cx, v, axis, max(-begins[axis], 0), size - max(-ends[axis], 0), 1)
            begins[axis], ends[axis] = max(begins[axis], 0), max(ends[axis], 0)
    if not any(begins) and not any(ends):
        return v
    ir_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}.get(mode)
    if ir_mode is None:
        raise _Unsupported(f"pad mode {mode}")
    return cx.emit(Op.PAD, [v], PadAttrs(tuple(begins + ends), ir_mode, float(value or 0.0)))


@_register(_op("pad"))
def _t_pad(cx: _Importer, p: Params) -> Value:
    return _pad(cx, _self(p), p["pad"], str(p["mode"]), p["value"] or 0.0)


@_register(_op("constant_pad_nd"))
def _t_constant_pad(cx: _Importer, p: Params) -> Value:
    return _pad(cx, _self(p), p["pad"], "constant", p["value"])


@_register(*_ops("reflection_pad1d", "reflection_pad2d", "reflection_pad3d"))
def _t_reflection_pad(cx: _Importer, p: Params) -> Value:
    return _pad(cx, _self(p), p["padding"], "reflect", 0.0)


@_register(*_ops("replication_pad1d", "replication_pad2d", "replication_pad3d"))
def _t_replication_pad(cx: _Importer, p: Params) -> Value:
    return _pad(cx, _self(p), p["padding"], "replicate", 0.0)


@_register(_op("pixel_shuffle"))
def _t_pixel_shuffle(cx: _Importer, p: Params) -> Value:
    return cx.emit(Op.PIXEL_SHUFFLE, [cx.value(_self(p))], FactorAttrs(int(p["upscale_factor"])))


@_register(_op("pixel_unshuffle"))
def _t_pixel_unshuffle(cx: _Importer, p: Params) -> Value:
    return cx.emit(Op.PIXEL_UNSHUFFLE, [cx.value(_self(p))], FactorAttrs(int(p["downscale_factor"])))


# ------------------------------------------------------------------ resize


def _resize(linear: bool = False, exact: bool = False) -> Callable[[_Importer, Params], Value]:
    def translate(cx: _Importer, p: Params) -> Value:
        v = cx.value(_self(p))
        out = cx.out_dims()
        sizes = out[2:]
        if not all(isinstance(s, int) for s in sizes) or not all(isinstance(s, int) for s in v.type.shape[2:]):
            raise ModelLoadError(f"{cx._where()}: resize needs static spatial sizes")
        # torch maps coordinates with the scales the model gave, else with in/out
        scales = p.get("scale_factors")
        if scales is None:
            given = [p[k] for k in p if k.startswith("scales")]
            scales = given if given and all(s is not None for s in given) else None
        if scales is None:
            scales = [int(o) / int(i) for o, i in zip(sizes, v.type.shape[2:], strict=True)]
        scales = tuple(float(s) for s in _ints_or_floats(scales, len(sizes)))
        if linear:
            # torch's align_corners=False is ONNX half_pixel; pytorch_half_pixel (the usual name for it)
            # agrees except that it maps a size-1 output to coordinate 0, where torch samples the centre
            coord = "align_corners" if p["align_corners"] else "pytorch_half_pixel"
            if coord == "pytorch_half_pixel" and 1 in sizes:
                coord = "half_pixel"
            attrs = ResizeAttrs(tuple(int(s) for s in sizes), scales, "linear", coord, "floor")
        elif exact:
            attrs = ResizeAttrs(tuple(int(s) for s in sizes), scales, "nearest", "half_pixel", "round_prefer_ceil")
        else:
            attrs = ResizeAttrs(tuple(int(s) for s in sizes), scales, "nearest", "asymmetric", "floor")
        return cx.emit(Op.RESIZE, [v], attrs)

    return translate


def _ints_or_floats(v: Any, n: int) -> list[float]:
    v = [float(x) for x in v]
    return v * n if len(v) == 1 else v


for _name in ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d"):
    _register(_op(_name))(_resize())
for _name in ("_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d"):
    _register(_op(_name))(_resize(exact=True))
for _name in ("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d"):
    _register(_op(_name))(_resize(linear=True))


# ------------------------------------------------------------------ pooling


def _pool(cx: _Importer, p: Params, op: Op) -> Value:
    v = cx.value(_self(p))
    nsp = v.type.rank - 2
    kernel = _ints(p["kernel_size"], nsp)
    stride = _ints(p["stride"], nsp) if p.get("stride") else kernel
    pad = _ints(p.get("padding", 0), nsp)
    dilation = _ints(p.get("dilation", 1), nsp)
    attrs = PoolAttrs(
        kernel, stride, (*pad, *pad), dilation, bool(p.get("ceil_mode", False)), bool(p.get("count_include_pad", False))
    )
    return cx.emit(op, [v], attrs)


@_register(*_ops("max_pool1d", "max_pool2d", "max_pool3d"))
def _t_max_pool(cx: _Importer, p: Params) -> Value:
    return _pool(cx, p, Op.MAX_POOL)


@_register(*_ops("max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices"))
def _t_max_pool_indices(cx: _Importer, p: Params) -> Any:
    if cx.output_used(1):
        raise _Unsupported("max pool indices")
    return [_pool(cx, p, Op.MAX_POOL), None]


@_register(*_ops("avg_pool1d", "avg_pool2d", "avg_pool3d"))
def _t_avg_pool(cx: _Importer, p: Params) -> Value:
    if p.get("divisor_override") is not None:
        raise _Unsupported("avg pool divisor_override")
    return _pool(cx, p, Op.AVG_POOL)


@_register(
    *_ops(
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
    )
)
def _t_adaptive_avg_pool(cx: _Importer, p: Params) -> Value:
    v = cx.value(_self(p))
    out = cx.out_dims()[2:]
    if not all(isinstance(d, int) for d in out):
        raise ModelLoadError(f"{cx._where()}: adaptive pooling needs a static output size")
    return cx.emit(Op.ADAPTIVE_AVG_POOL, [v], AdaptivePoolAttrs(tuple(int(d) for d in out)))


# ------------------------------------------------------------------ attention


@_register(_op("scaled_dot_product_attention"))
def _t_sdpa(cx: _Importer, p: Params) -> Value:
    if p.get("dropout_p"):
        warnings.warn(
            f"{cx._where()}: scaled_dot_product_attention with dropout_p={p['dropout_p']} is imported without "
            "dropout (inference semantics)",
            UserWarning,
            stacklevel=2,
        )
    dt = cx.out_dtype()
    ins = [cx.operand(p["query"], dt), cx.operand(p["key"], dt), cx.operand(p["value"], dt)]
    if p.get("attn_mask") is not None:
        mask = p["attn_mask"]
        ins.append(cx.value(mask) if cx.dtype_of(mask) == torch.bool else cx.operand(mask, dt))
    scale = p.get("scale")
    attrs = AttentionAttrs(None if scale is None else float(scale), bool(p["is_causal"]), bool(p.get("enable_gqa")))
    return cx.emit(Op.ATTENTION, ins, attrs)


@_register(_op("_scaled_dot_product_flash_attention_for_cpu"))
def _t_sdpa_cpu(cx: _Importer, p: Params) -> Any:
    return [_t_sdpa(cx, p), None]
