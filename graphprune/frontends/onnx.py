"""ONNX frontend: read an ONNX model into the IR.

Reading goes through `onnx` (parsing, checker, version conversion, shape inference) and
`onnx_graphsurgeon` (the node graph). Every ONNX op_type is translated by one small function per
op family (see `_HANDLERS`); what no handler takes becomes an OPAQUE node that carries the original
NodeProto, still runs (in onnxruntime) and blocks pruning across itself.

Values are kept in three forms while importing, so that the IR only sees what it needs:
- `_Const`: a constant known at import time (initializers, Constant nodes, folded subgraphs). It is
  written into the IR graph only when an IR node reads it, and large ones load lazily.
- `_Sym`: a small integer tensor with symbolic entries (the result of Shape on a tensor with a
  symbolic batch, and arithmetic on it). Reshape/Expand read it directly (a symbol that matches
  the input's dim becomes 0 = "copy"); any other consumer makes the frontend translate its
  producer for real.
- `Value`: an IR value.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper
from onnx_graphsurgeon.logger import G_LOGGER

from ..ir.errors import GraphpruneError, ModelLoadError
from ..ir.graph import Graph, Value
from ..ir.opaque import onnx_attrs
from ..ir.ops import (
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

__all__ = ["load", "MIN_OPSET"]

MIN_OPSET = 13  # older models are converted with onnx.version_converter first
_INT64_MAX = 2**63 - 1
_FOLD_MAX_ELEMENTS = 1 << 24  # do not fold nodes whose output is larger than this (64 MiB of f32)
_LAZY_FOLD_BYTES = 1 << 24  # fold nodes reading more than this many bytes lazily (on first use)
_NO_FOLD = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "If",
        "Loop",
        "Scan",
        "Constant",  # has its own handler
    }
)
_NAME_RE = re.compile(r"[^A-Za-z0-9_.]+")
_SYM_RE = re.compile(r"[^A-Za-z0-9_]+")


def _contiguous(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    return np.ascontiguousarray(arr).reshape(arr.shape)  # ascontiguousarray makes 0-d arrays 1-d


class _Unsupported(Exception):
    """A handler cannot translate this node variant; the node becomes OPAQUE (with the reason).

    `shape` optionally gives the output shape the handler worked out (None for unknown dims); it
    beats ONNX shape inference, which often loses symbolic dims."""

    def __init__(self, reason: str, shape: Sequence[Dim | None] | None = None) -> None:
        super().__init__(reason)
        self.shape = None if shape is None else tuple(shape)


class _NoFold(Exception):
    """A numpy fold/symbolic evaluation does not apply; fall back to the next strategy."""


# ---------------------------------------------------------------------------------------------
# import-time value forms
# ---------------------------------------------------------------------------------------------


class _Const:
    """A constant known at import time; `value` is its IR constant once a node reads it."""

    __slots__ = ("dtype", "shape", "_load", "_data", "source", "value")

    def __init__(
        self,
        dtype: np.dtype,
        shape: tuple[int, ...],
        *,
        data: np.ndarray | None = None,
        load: Callable[[], np.ndarray] | None = None,
        source: str | None = None,
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self._data = data
        self._load = load
        self.source = source
        self.value: Value | None = None

    @staticmethod
    def of(arr: np.ndarray, source: str | None = None) -> _Const:
        arr = np.asarray(arr)
        return _Const(arr.dtype, arr.shape, data=arr, source=source)

    @property
    def loaded(self) -> bool:
        return self._data is not None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def data(self) -> np.ndarray:
        """The array (loaded and cached on first use)."""
        if self._data is None:
            self._data = self.read()
        return self._data

    def read(self) -> np.ndarray:
        """The array, without caching it here (for lazily derived constants)."""
        if self._data is not None:
            return self._data
        assert self._load is not None
        arr = np.asarray(self._load())
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ModelLoadError(
                f"constant {self.source!r} loaded as {arr.dtype}{list(arr.shape)}, expected "
                f"{self.dtype}{list(self.shape)}; the model file changed since it was loaded"
            )
        return arr

    def derive(self, fn: Callable[[np.ndarray], np.ndarray], shape: Sequence[int], dtype: Any = None) -> _Const:
        """A constant computed from this one; lazy when this one is not loaded yet."""
        dt = np.dtype(dtype) if dtype is not None else self.dtype
        if self._data is not None:
            return _Const.of(_contiguous(fn(self._data)).astype(dt, copy=False), self.source)

        def load() -> np.ndarray:
            return _contiguous(fn(self.read())).astype(dt, copy=False)

        return _Const(dt, tuple(shape), load=load, source=self.source)


class _Sym:
    """A small int tensor whose entries are ints or symbol names (shape arithmetic on a symbolic batch)."""

    __slots__ = ("vals", "dtype", "node")

    def __init__(self, vals: np.ndarray, dtype: np.dtype, node: gs.Node) -> None:
        self.vals = vals  # object array of int | str
        self.dtype = np.dtype(dtype)
        self.node = node  # the ONNX node that computes it (translated for real when needed)


_Entry = Value | _Const | _Sym


# ---------------------------------------------------------------------------------------------
# reading the file
# ---------------------------------------------------------------------------------------------


def _label(model: str | os.PathLike[str] | onnx.ModelProto) -> str:
    return "<ModelProto>" if isinstance(model, onnx.ModelProto) else os.fspath(model)


def _default_opset(model: onnx.ModelProto) -> int | None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}


def _check_location(label: str, base: Path, tensor: str, location: str) -> Path:
    """Resolve an external data location; it must be a relative path inside the model's folder."""
    bad = (
        not location
        or os.path.isabs(location)
        or location.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", location) is not None
        or ".." in re.split(r"[/\\]", location)
    )
    real = Path(os.path.realpath(base / location))
    root = Path(os.path.realpath(base))
    if not bad and root != real and root not in real.parents:
        bad = True  # a symlink that leads out of the folder
    if bad:
        raise ModelLoadError(
            f"{label}: tensor {tensor!r} points at external data {location!r}: external data must live in "
            f"the model's folder ({root}), as a relative path without '..'; move the data file next to "
            f"the model and re-save it with a relative location"
        )
    if not real.is_file():
        raise ModelLoadError(
            f"{label}: the external data file {location!r} of tensor {tensor!r} is missing (expected at "
            f"{base / location}); copy it next to the model"
        )
    return real


def _np_dtype(elem_type: int, what: str) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception as e:  # noqa: BLE001 - onnx raises KeyError/ValueError for unknown enums
        raise _Unsupported(f"{what} has ONNX element type {elem_type}, which numpy cannot hold") from e


def _external_loader(label: str, base: Path | None, t: TensorProto) -> tuple[Callable[[], np.ndarray], int]:
    """A loader reading one externally stored tensor with numpy, after validating where it lives."""
    info = {e.key: e.value for e in t.external_data}
    if base is None:
        raise ModelLoadError(
            f"{label}: tensor {t.name!r} keeps its data in an external file ({info.get('location')!r}) that "
            f"was not loaded; pass the model's path to load() instead of a ModelProto"
        )
    path = _check_location(label, base, t.name, info.get("location", ""))
    dtype = _np_dtype(t.data_type, f"tensor {t.name!r}").newbyteorder("<")
    shape = tuple(int(d) for d in t.dims)
    count = math.prod(shape)
    offset = int(info.get("offset", 0) or 0)
    length = int(info.get("length", count * dtype.itemsize) or 0)
    if length != count * dtype.itemsize:
        raise ModelLoadError(
            f"{label}: external data of tensor {t.name!r} is {length} bytes, but {dtype}{list(shape)} needs "
            f"{count * dtype.itemsize}; the model and its data file do not match"
        )
    if offset + length > path.stat().st_size:
        raise ModelLoadError(
            f"{label}: external data file {path.name!r} ends before tensor {t.name!r} (needs bytes "
            f"{offset}..{offset + length}, file has {path.stat().st_size}); the data file is truncated"
        )

    def load() -> np.ndarray:
        arr = np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(shape)
        return arr.astype(dtype.newbyteorder("="), copy=False)

    return load, length


def _read_model(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None, str]:
    label = _label(model)
    if isinstance(model, onnx.ModelProto):
        return model, None, label
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"{label}: no such file; expected the path of an .onnx model")
    if not path.is_file():
        raise ModelLoadError(f"{label}: is a directory, not an .onnx model file")
    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError/RuntimeWarning-like errors
        raise ModelLoadError(
            f"{label}: cannot be parsed as an ONNX model ({type(e).__name__}: {str(e).strip() or 'bad bytes'}); "
            f"the file is truncated or not ONNX; re-export or re-download it"
        ) from None
    return proto, path.parent, label


def _validate(model: onnx.ModelProto, path: Path | None, label: str) -> None:
    if not model.HasField("graph"):
        raise ModelLoadError(f"{label}: the file has no graph; it is not an ONNX model (or it is truncated)")
    if not model.graph.output:
        raise ModelLoadError(f"{label}: graph {model.graph.name!r} has no outputs; nothing to compute")
    try:
        # by path, the checker finds external data next to the model (and handles files over 2 GB)
        onnx.checker.check_model(os.fspath(path) if path is not None else model)
    except Exception as e:  # noqa: BLE001 - checker raises ValidationError and others
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if path is None and "2GB" in first:
            return  # an in-memory proto too large to serialize: nothing more to check here
        if "is deprecated" in first:
            # an op version onnx has since retired (GroupNormalization-18): readable, not damaged
            warnings.warn(f"{label}: {first}", UserWarning, stacklevel=2)
            return
        raise ModelLoadError(
            f"{label}: onnx.checker rejects the model: {first}; the file is damaged or was written by a broken "
            f"exporter; re-export it"
        ) from None


def _convert_opset(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    version = _default_opset(model)
    if version is None:
        if any(n.domain in ("", "ai.onnx") for n in model.graph.node):
            raise ModelLoadError(f"{label}: the model uses standard ONNX ops but imports no ai.onnx opset")
        return model
    if version >= MIN_OPSET:
        return model
    try:
        from onnx import version_converter

        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"{label}: uses opset {version}; graphprune reads opset {MIN_OPSET} and newer, and converting it "
            f"failed ({first}); re-export the model with opset >= {MIN_OPSET}"
        ) from None


def _infer_shapes(model: onnx.ModelProto, path: Path | None, label: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as first:  # noqa: BLE001
        reason = str(first).strip().splitlines()[0] if str(first).strip() else type(first).__name__
    if path is not None:
        # large protos cannot go through the in-memory API; the path-based one handles them
        try:
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "inferred.onnx")
                src = os.path.join(tmp, "model.onnx")
                onnx.save(model, src)
                onnx.shape_inference.infer_shapes_path(src, out, strict_mode=False, data_prop=True)
                return onnx.load(out, load_external_data=False)
        except Exception:  # noqa: BLE001
            pass
    warnings.warn(
        f"{label}: ONNX shape inference failed ({reason}); continuing without it (ops graphprune does not "
        f"know will need static shapes)",
        UserWarning,
        stacklevel=2,
    )
    return model


# ---------------------------------------------------------------------------------------------
# numpy evaluation for constant folding and symbolic shape arithmetic
# ---------------------------------------------------------------------------------------------


def _axis(axis: int, rank: int, what: str = "axis") -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < max(rank, 1):
        raise _Unsupported(f"{what} {axis} is out of range for rank {rank}")
    return a


def _f32(v: Any) -> float:
    """An ONNX float attribute as the float32 value the model actually holds (defaults included)."""
    return float(np.float32(v))


def _ints(arr: np.ndarray | None) -> list[int]:
    return [] if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]


def _slice_params(size: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX Slice clamping for one axis: (start, end) ready for range()."""
    if step == 0:
        raise _Unsupported("slice step 0")
    if start < 0:
        start += size
    if end < 0:
        end += size
    if step > 0:
        start = min(max(start, 0), size)
        end = min(max(end, 0), size)
    else:
        start = min(max(start, 0), size - 1)
        end = min(max(end, -1), size - 1)
    return start, end


def _sym_binary(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        a, b = int(a), int(b)
        if op == "Add":
            return a + b
        if op == "Sub":
            return a - b
        if op == "Mul":
            return a * b
        if op == "Div":
            if b == 0:
                raise _NoFold("division by zero")
            q = abs(a) // abs(b)
            return q if (a >= 0) == (b >= 0) else -q  # ONNX integer division truncates
        raise _NoFold(op)
    if op == "Mul" and (a == 1 or b == 1):
        return b if a == 1 else a
    if op in ("Add", "Sub") and b == 0:
        return a
    if op == "Add" and a == 0:
        return b
    if op == "Div" and b == 1:
        return a
    sign = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}.get(op)
    if sign is None:
        raise _NoFold(op)
    return f"({a}{sign}{b})"


def _np_eval(op: str, attrs: dict[str, Any], args: list[np.ndarray | None], sym: bool) -> list[np.ndarray]:
    """Evaluate a few cheap ops in numpy. With `sym`, args are object arrays (ints and symbol names)
    and only shape-moving and integer ops apply. Raises _NoFold when it does not apply."""
    x = args[0] if args else None
    if op == "Identity":
        return [x]
    if op == "Cast":
        if sym:
            if helper.tensor_dtype_to_np_dtype(attrs["to"]).kind not in "iu":
                raise _NoFold("cast of a symbolic shape to a non-int type")
            return [x]
        return [np.asarray(x).astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))]
    if op == "Reshape":
        shape = _ints(args[1])
        if any(s == 0 for s in shape) and not attrs.get("allowzero", 0):
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return [np.reshape(x, shape)]
    if op in ("Unsqueeze", "Squeeze"):
        axes = _ints(args[1]) if len(args) > 1 and args[1] is not None else list(attrs.get("axes", []))
        if op == "Unsqueeze":
            r = x.ndim + len(axes)
            return [np.expand_dims(x, tuple(sorted(_axis(a, r) for a in axes)))]
        if not axes:
            return [np.squeeze(x)]
        return [np.squeeze(x, tuple(_axis(a, x.ndim) for a in axes))]
    if op == "Concat":
        parts = [a for a in args if a is not None]
        return [np.concatenate(parts, axis=_axis(attrs["axis"], parts[0].ndim))]
    if op == "Gather":
        axis = _axis(attrs.get("axis", 0), x.ndim)
        idx = np.asarray(args[1]).astype(np.int64)
        idx = np.where(idx < 0, idx + x.shape[axis], idx)
        return [np.take(x, idx, axis=axis)]
    if op == "Slice":
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
        index: list[slice] = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            a = _axis(a, x.ndim)
            b, f = _slice_params(x.shape[a], s, e, st)
            index[a] = slice(b, f if f >= 0 else None, st)
        return [x[tuple(index)]]
    if op == "Transpose":
        perm = attrs.get("perm")
        return [np.transpose(x, perm)]
    if op == "Where":
        cond = np.asarray(args[0])
        if cond.dtype == object and any(isinstance(v, str) for v in cond.reshape(-1)):
            raise _NoFold("symbolic condition")
        return [np.where(cond.astype(bool), args[1], args[2])]
    if op in ("Add", "Sub", "Mul", "Div") and (sym or x.dtype.kind in "iu"):
        f = np.frompyfunc(lambda a, b: _sym_binary(op, a, b), 2, 1)
        out = np.asarray(f(args[0], args[1]), dtype=object)
        return [out if sym else out.astype(x.dtype)]
    if op == "Shape":
        shape = np.array(x.shape, dtype=np.int64)
        return [shape[attrs.get("start", 0) : attrs.get("end", None)]]
    if op == "Size":
        return [np.array(x.size, dtype=np.int64)]
    if sym:
        if op == "Equal":

            def eq(a: Any, b: Any) -> bool:
                if a == b:
                    return True
                if isinstance(a, str) and isinstance(b, str):
                    raise _NoFold("symbolic comparison")
                # a symbolic dim is a size: never equal to the -1 / 0 placeholders torch compares with
                other = b if isinstance(a, str) else a
                if isinstance(a, str) or isinstance(b, str):
                    if int(other) <= 0:
                        return False
                    raise _NoFold("symbolic comparison")
                return False

            return [np.asarray(np.frompyfunc(eq, 2, 1)(args[0], args[1]), dtype=bool)]
        raise _NoFold(op)
    if op in ("Add", "Sub", "Mul", "Div"):
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return [fn(args[0], args[1]).astype(x.dtype)]
    if op in ("Equal", "Less", "Greater"):
        fn = {"Equal": np.equal, "Less": np.less, "Greater": np.greater}[op]
        return [fn(args[0], args[1])]
    if op == "Not":
        return [np.logical_not(x)]
    if op == "Neg":
        return [np.negative(x)]
    if op == "Range":
        start, limit, delta = (np.asarray(a).item() for a in args[:3])
        return [np.arange(start, limit, delta, dtype=np.asarray(args[0]).dtype)]
    if op == "ConstantOfShape":
        value = attrs.get("value")
        fill = np.asarray(value.values if value is not None else np.zeros(1, np.float32)).reshape(-1)
        return [np.full(_ints(x), fill[0], dtype=fill.dtype)]
    if op == "Expand":
        shape = np.broadcast_shapes(x.shape, tuple(_ints(args[1])))
        return [np.broadcast_to(x, shape).copy()]
    raise _NoFold(op)


def _ir_version_for(opsets: dict[str, int]) -> int:
    try:
        v = helper.find_min_ir_version_for([helper.make_opsetid(d, n) for d, n in opsets.items()], ignore_unknown=True)
    except Exception:  # noqa: BLE001
        v = 8
    return max(int(v), 8)


def _ort_eval(node: onnx.NodeProto, args: list[np.ndarray | None], opsets: dict[str, int]) -> list[np.ndarray]:
    """Evaluate one node with onnxruntime (constant folding of ops numpy does not cover)."""
    import onnxruntime as ort

    feeds: dict[str, np.ndarray] = {}
    inputs = []
    for name, arr in zip(node.input, args, strict=False):
        if not name or arr is None or name in feeds:
            continue
        arr = np.asarray(arr)
        feeds[name] = arr
        inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
    outputs = [onnx.ValueInfoProto(name=o) for o in node.output if o]
    g = helper.make_graph([node], "fold", inputs, outputs)
    m = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        ir_version=_ir_version_for(opsets),
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(r) for r in sess.run(None, feeds)]


# ---------------------------------------------------------------------------------------------
# the importer
# ---------------------------------------------------------------------------------------------


def _standard(node: gs.Node) -> bool:
    """Whether the node is a standard ONNX (ai.onnx) op."""
    return node.domain in (None, "", "ai.onnx")


def _sanitize(name: str, fallback: str = "v") -> str:
    return _NAME_RE.sub("_", name).strip("_") or fallback


class _Importer:
    def __init__(self, model: onnx.ModelProto, base: Path | None, label: str, name: str | None) -> None:
        self.model = model
        self.base = base
        self.label = label
        self.opsets = _opsets(model)
        default_name = Path(label).stem if base is not None else (model.graph.name or "main")
        self.g = Graph(name or model.graph.name or default_name)
        self.env: dict[str, _Entry] = {}
        self._used: set[str] = set()
        self._dims: dict[str, str] = {}  # ONNX dim_param -> IR symbol
        self._syms: set[str] = set()
        self.vi: dict[str, onnx.TypeProto] = {}
        for v in (*model.graph.input, *model.graph.value_info, *model.graph.output):
            if v.type.HasField("tensor_type"):
                self.vi[v.name] = v.type
        self.protos: dict[str, onnx.NodeProto] = {}
        for p in model.graph.node:
            key = next((o for o in p.output if o), None)
            if key is not None:
                self.protos[key] = p
        self._current: gs.Node | None = None
        self._trust_inference = True
        self.skip: set[int] = set()  # ids of gs nodes an earlier handler already translated (fused)
        self._graph_outputs = {o.name for o in model.graph.output}

    # ------------------------------------------------------------------ naming

    def name(self, base: str) -> str:
        base = _sanitize(base)
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name

    def symbol(self, param: str | None, axis: int, owner: str, is_input: bool = False) -> str:
        """The IR symbol for an ONNX dim_param (or an unnamed dim). The first symbolic batch axis of the
        graph inputs becomes "N"; other symbols keep their (sanitized) names."""
        if param and param in self._dims:
            return self._dims[param]
        if is_input and axis == 0 and "N" not in self._syms:
            sym = "N"
        else:
            base = _SYM_RE.sub("_", param).strip("_") if param else f"{_SYM_RE.sub('_', owner).strip('_')}_d{axis}"
            base = base or "d"
            if base[0].isdigit():
                base = "d_" + base
            sym, i = base, 1
            while sym in self._syms or sym == "N":
                sym = f"{base}_{i}"
                i += 1
        self._syms.add(sym)
        if param:
            self._dims[param] = sym
        return sym

    # ------------------------------------------------------------------ errors and warnings

    def where(self, node: gs.Node | None = None) -> str:
        node = node or self._current
        if node is None:
            return self.label
        return f"{self.label}: node {node.name!r} ({node.op})"

    def error(self, what: str, fix: str = "", node: gs.Node | None = None) -> ModelLoadError:
        return ModelLoadError(f"{self.where(node)}: {what}" + (f"; {fix}" if fix else ""))

    # ------------------------------------------------------------------ types

    def onnx_type(self, name: str, is_input: bool = False) -> TensorType | None:
        tp = self.vi.get(name)
        if tp is None or not tp.tensor_type.elem_type:
            return None
        tt = tp.tensor_type
        try:
            dtype = DType.from_numpy(_np_dtype(tt.elem_type, f"value {name!r}"))
        except (TypeError, _Unsupported):
            return None
        if not tt.HasField("shape"):
            return None
        shape: list[Dim] = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            else:
                shape.append(self.symbol(d.dim_param or None, i, name, is_input))
        return TensorType(dtype, tuple(shape), 1 if dtype.is_float and len(shape) >= 2 else None)

    # ------------------------------------------------------------------ environment

    def has(self, node: gs.Node, i: int) -> bool:
        return i < len(node.inputs) and bool(node.inputs[i].name)

    def entry(self, name: str) -> _Entry:
        e = self.env.get(name)
        if e is None:
            raise self.error(f"reads %{name!r}, which no earlier node, input or initializer defines")
        return e

    def value(self, name: str) -> Value:
        """The IR value of an ONNX tensor (writes constants and deferred symbolic shapes into the IR)."""
        e = self.entry(name)
        if isinstance(e, Value):
            return e
        if isinstance(e, _Const):
            return self.value_of(e, name)
        # a symbolic shape a real op needs: translate the node that computes it
        saved = self._current
        self.translate(e.node, fold=False)
        self._current = saved
        out = self.env[name]
        assert isinstance(out, Value)
        return out

    def inp(self, node: gs.Node, i: int) -> Value:
        if not self.has(node, i):
            raise self.error(f"input {i} is missing")
        return self.value(node.inputs[i].name)

    def const(self, node: gs.Node, i: int) -> np.ndarray | None:
        """The array of input i when it is known at import time (None when absent or dynamic)."""
        if not self.has(node, i):
            return None
        e = self.entry(node.inputs[i].name)
        if isinstance(e, _Const):
            return e.data
        if isinstance(e, Value) and e.is_const:
            return e.data
        return None

    def const_entry(self, node: gs.Node, i: int) -> _Const | None:
        if not self.has(node, i):
            return None
        e = self.entry(node.inputs[i].name)
        return e if isinstance(e, _Const) else None

    def sym(self, node: gs.Node, i: int) -> np.ndarray | None:
        """Input i as an object array of ints and symbols (a shape), or None when it is dynamic."""
        if not self.has(node, i):
            return None
        e = self.entry(node.inputs[i].name)
        if isinstance(e, _Sym):
            return e.vals
        c = self.const(node, i)
        return None if c is None else np.asarray(c).astype(object)

    def dynamic(self, node: gs.Node, what: str, inputs: Sequence[int]) -> Exception:
        """The error for an input that must be known at import time but is not: shapes derived from
        symbolic dims leave the node opaque; anything computed from data is an error."""
        if any(self.has(node, i) and isinstance(self.env.get(node.inputs[i].name), _Sym) for i in inputs):
            return _Unsupported(f"{what} depends on symbolic dims in a way the IR cannot express")
        return self.error(
            f"{what} is computed at run time (not from constants or input shapes)",
            "export the model with static shapes or simplify it with onnxsim",
        )

    def used(self, t: gs.Tensor) -> bool:
        return bool(t.name) and (bool(t.outputs) or t.name in self._graph_outputs)

    def bind(self, t: gs.Tensor, e: _Entry) -> None:
        self.env[t.name] = e

    def new_const(self, arr: np.ndarray, base: str) -> Value:
        """A helper constant the translation needs (not an ONNX tensor)."""
        return self.value_of(_Const.of(np.asarray(arr)), base)

    def value_of(self, c: _Const, base: str = "const") -> Value:
        """The IR constant of `c` (written into the graph the first time it is read)."""
        if c.value is None:
            try:
                dtype = DType.from_numpy(c.dtype)
            except TypeError:
                raise self.error(
                    f"constant {c.source or base!r} has dtype {c.dtype}, which graphprune does not support",
                    "cast it to float32/int64 in the model",
                ) from None
            cname = self.name(c.source or base)
            if c.loaded:
                c.value = self.g.add_const(cname, c.data, source=c.source)
            else:
                c.value = self.g.add_const(cname, type=TensorType(dtype, c.shape), loader=c.read, source=c.source)
        return c.value

    def scalar(self, v: float, like: Value, base: str) -> Value:
        return self.new_const(np.array(v, dtype=like.type.dtype.numpy), base)

    # ------------------------------------------------------------------ emitting IR nodes

    def emit(
        self,
        node: gs.Node,
        op: Op,
        inputs: Sequence[Value],
        attrs: Any = None,
        out: gs.Tensor | None = None,
        *,
        types: Sequence[TensorType] | None = None,
        outs: Sequence[gs.Tensor] | None = None,
    ) -> Value:
        """Add an IR node for ONNX `node`; `out` (or `outs`) are the ONNX tensors it defines."""
        targets = list(outs) if outs is not None else [out]
        names = [self.name(t.name if t is not None and t.name else f"{node.name or node.op}_tmp") for t in targets]
        try:
            ir = self.g.add_node(op, inputs, attrs, name=node.name or node.op, types=types, output_names=names)
        except GraphpruneError as e:
            raise self.error(
                f"the IR rejects its translation to {op.value}: {e}",
                "give the model static input shapes or simplify it with onnxsim",
                node,
            ) from None
        for t, v in zip(targets, ir.outputs, strict=True):
            if t is None:
                continue
            v.source = t.name
            self._check_shape(node, t.name, v)
            self.env[t.name] = v
        return ir.outputs[0]

    def _check_shape(self, node: gs.Node, name: str, v: Value) -> None:
        """Catch translation bugs: static IR shapes must agree with ONNX shape inference."""
        if node.op in ("MaxPool", "AveragePool") and node.attrs.get("ceil_mode", 0):
            # ONNX shape inference below opset 22 counts a last window that starts in the end padding;
            # onnxruntime (and the IR) drop it. Everything downstream may then disagree too.
            self._trust_inference = False
        if not self._trust_inference:
            return
        tp = self.vi.get(name)
        if tp is None or not tp.tensor_type.HasField("shape") or not v.type.is_static:
            return
        dims = tp.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            return
        want = tuple(int(d.dim_value) for d in dims)
        if want != v.type.shape:
            raise self.error(
                f"graphprune computed shape {list(v.type.shape)} for {name!r} but ONNX shape inference says "
                f"{list(want)}",
                "this is a graphprune bug; please report it with the model",
                node,
            )

    # ------------------------------------------------------------------ the walk

    def run(self) -> Graph:
        m = self.model
        severity = G_LOGGER.severity
        G_LOGGER.severity = G_LOGGER.ERROR  # graphprune reports what matters itself (dtypes, opaque ops)
        try:
            # no toposort: the checker has verified the order, and keeping it keeps the model's own order
            gg = gs.import_onnx(m)
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"{self.label}: onnx-graphsurgeon cannot read the graph: {first}") from None
        finally:
            G_LOGGER.severity = severity
        for i, node in enumerate(gg.nodes):
            # errors, warnings and IR node names need a name; ONNX allows none
            node.name = node.name or f"{node.op}_{i}"
        self._read_initializers()
        for inp in m.graph.input:
            if inp.name in self.env:  # old-style models list initializers as inputs too
                continue
            t = self.onnx_type(inp.name, is_input=True)
            if t is None:
                raise ModelLoadError(
                    f"{self.label}: graph input {inp.name!r} has no tensor type graphprune supports (dtype and "
                    f"rank are required; float16/32/64 or int8/32/64, uint8, bool)"
                )
            v = self.g.add_input(self.name(inp.name), t)
            v.source = inp.name
            self.env[inp.name] = v
        for node in gg.nodes:
            self.translate(node)
        self._current = None
        outs = []
        for o in m.graph.output:
            if o.name not in self.env:
                raise ModelLoadError(f"{self.label}: graph output {o.name!r} is computed by no node")
            outs.append(self.value(o.name))
        self.g.set_outputs(outs)
        self._remove_dead()
        self._unshare_vectors()
        return self.g

    def _unshare_vectors(self) -> None:
        """Give every reader of a shared float vector its own copy. Exporters deduplicate equal
        initializers, so the zero biases and unit norm scales of a freshly initialised model end up
        as one tensor read by every layer; read as tied weights, that would couple the channels of
        every layer of the same width. A copy per reader computes the same; genuinely tied layers
        stay coupled through their shared matrices."""
        for c in self.g.constants:
            if c.type.rank > 1 or not c.type.dtype.is_float or len(c.uses) < 2:
                continue
            for node, i in c.uses[1:]:
                copy = self.g.add_const(c.name, c.data, source=c.source, unique=True)
                self.g.set_input(node, i, copy)

    def _read_initializers(self) -> None:
        g = self.model.graph
        if len(g.sparse_initializer):
            raise ModelLoadError(
                f"{self.label}: sparse initializer {g.sparse_initializer[0].values.name!r} is not supported; "
                f"densify it (onnx.numpy_helper) and re-save the model"
            )
        for t in g.initializer:
            try:
                dtype = _np_dtype(t.data_type, f"initializer {t.name!r}")
            except _Unsupported as e:
                raise ModelLoadError(f"{self.label}: {e}; graphprune reads numeric tensors only") from None
            shape = tuple(int(d) for d in t.dims)
            if t.data_location == TensorProto.EXTERNAL:
                load, _ = _external_loader(self.label, self.base, t)
            else:
                load = self._proto_loader(t)
            self.env[t.name] = _Const(dtype, shape, load=load, source=t.name)

    def _proto_loader(self, t: TensorProto) -> Callable[[], np.ndarray]:
        label = self.label

        def load() -> np.ndarray:
            try:
                return numpy_helper.to_array(t)
            except Exception as e:  # noqa: BLE001
                raise ModelLoadError(f"{label}: initializer {t.name!r} cannot be read: {e}") from None

        return load

    def _remove_dead(self) -> None:
        """Drop nodes and constants no output depends on (dead ONNX nodes, unused fold leftovers)."""
        live = {id(v) for v in self.g.outputs}
        for n in reversed(self.g.nodes):
            if any(id(o) in live or o.uses for o in n.outputs):
                live.update(id(v) for v in n.inputs)
                continue
            self.g.erase(n)
        for c in self.g.constants:
            if not c.uses and c not in self.g.outputs:
                self.g.remove_const(c)

    def translate(self, node: gs.Node, *, fold: bool = True) -> None:
        self._current = node
        if id(node) in self.skip or not any(t.name for t in node.outputs):
            return
        if fold and self._try_fold(node):
            return
        if fold and self._try_sym(node):
            return
        handler = _HANDLERS.get(("" if _standard(node) else node.domain, node.op))
        if handler is None:
            self.opaque(node)
            return
        try:
            handler(self, node)
        except _Unsupported as e:
            self.opaque(node, str(e), e.shape)

    # ------------------------------------------------------------------ folding

    def _try_fold(self, node: gs.Node) -> bool:
        if node.op in _NO_FOLD or not node.inputs:
            return False
        consts: list[_Const | None] = []
        for t in node.inputs:
            if not t.name:
                consts.append(None)
                continue
            e = self.env.get(t.name)
            if isinstance(e, Value) and e.is_const and e.has_data:
                e = _Const(e.type.dtype.numpy, tuple(int(d) for d in e.type.shape), load=lambda v=e: v.data)
            if not isinstance(e, _Const):
                return False
            consts.append(e)
        out_types = [self.vi.get(t.name) for t in node.outputs if t.name]
        static = []
        for tp in out_types:
            if tp is None or not tp.tensor_type.HasField("shape"):
                static.append(None)
                continue
            dims = tp.tensor_type.shape.dim
            static.append(tuple(int(d.dim_value) for d in dims) if all(d.HasField("dim_value") for d in dims) else None)
        if any(s is not None and math.prod(s) > _FOLD_MAX_ELEMENTS for s in static):
            return False
        proto = self.protos.get(next(t.name for t in node.outputs if t.name))
        nbytes = sum(c.nbytes for c in consts if c is not None)
        outs = [t for t in node.outputs if t.name]
        if nbytes > _LAZY_FOLD_BYTES and all(s is not None for s in static) and proto is not None:
            # big weights (a transposed or dequantized matrix): fold on first use, keep loading lazy
            dtypes = []
            for tp in out_types:
                try:
                    dtypes.append(_np_dtype(tp.tensor_type.elem_type, "output"))  # type: ignore[union-attr]
                except _Unsupported:
                    return False
            cache: dict[str, list[np.ndarray]] = {}

            def compute(idx: int, node: gs.Node = node, consts: list[_Const | None] = consts) -> np.ndarray:
                if "r" not in cache:
                    cache["r"] = self._evaluate(node, [None if c is None else c.read() for c in consts])
                r = cache["r"][idx]
                if idx == len(outs) - 1:
                    cache.clear()
                return r

            for k, (t, s, dt) in enumerate(zip(outs, static, dtypes, strict=True)):
                self.env[t.name] = _Const(dt, s, load=lambda k=k: compute(k), source=t.name)  # type: ignore[arg-type]
            return True
        try:
            results = self._evaluate(node, [None if c is None else c.data for c in consts])
        except (_NoFold, _Unsupported):
            return False
        except Exception:  # noqa: BLE001 - onnxruntime refuses: translate the node instead
            return False
        if len(results) != len(outs):
            return False
        for t, r in zip(outs, results, strict=True):
            self.env[t.name] = _Const.of(np.asarray(r), t.name)
        return True

    def _evaluate(self, node: gs.Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
        if _standard(node):
            try:
                return _np_eval(node.op, dict(node.attrs), args, sym=False)
            except (_NoFold, ValueError, IndexError, TypeError, KeyError):
                pass  # onnxruntime evaluates it
        proto = self.protos.get(next(t.name for t in node.outputs if t.name))
        if proto is None:
            raise _NoFold("no proto")
        return _ort_eval(proto, args, self.opsets)

    def _try_sym(self, node: gs.Node) -> bool:
        """Shape arithmetic with symbolic dims (Shape of a tensor with a symbolic batch, and what follows)."""
        if not _standard(node):
            return False
        if node.op in ("Shape", "Size") and self.has(node, 0):
            e = self.entry(node.inputs[0].name)
            if isinstance(e, Value) and not e.is_const:
                shape = list(e.type.shape)
                if node.op == "Size":
                    if not e.type.is_static:
                        return False
                    self.env[node.outputs[0].name] = _Const.of(np.array(math.prod(shape), np.int64))  # type: ignore[arg-type]
                    return True
                r = len(shape)
                start = node.attrs.get("start", 0)
                end = node.attrs.get("end", r)
                start = min(max(start + r if start < 0 else start, 0), r)
                end = min(max(end + r if end < 0 else end, 0), r)
                part = shape[start:end]
                if all(isinstance(d, int) for d in part):
                    self.env[node.outputs[0].name] = _Const.of(np.array(part, dtype=np.int64))
                else:
                    self.env[node.outputs[0].name] = _Sym(np.array(part, dtype=object), np.dtype(np.int64), node)
                return True
            if not isinstance(e, _Sym):
                return False
        if not node.inputs or not any(isinstance(self.env.get(t.name), _Sym) for t in node.inputs if t.name):
            return False
        args: list[np.ndarray | None] = []
        dtype: np.dtype | None = None
        for i, t in enumerate(node.inputs):
            if not t.name:
                args.append(None)
                continue
            a = self.sym(node, i)
            if a is None:
                return False
            e = self.env[t.name]
            if isinstance(e, _Sym) and dtype is None:
                dtype = e.dtype
            args.append(a)
        try:
            results = _np_eval(node.op, dict(node.attrs), args, sym=True)
        except (_NoFold, _Unsupported, ValueError, IndexError, TypeError, KeyError):
            return False
        outs = [t for t in node.outputs if t.name]
        if len(results) != len(outs):
            return False
        for t, r in zip(outs, results, strict=True):
            # np.take on an object array returns the bare element for a scalar index
            r = r if isinstance(r, np.ndarray) and r.dtype == bool else np.asarray(r, dtype=object)
            if r.dtype == bool:
                self.env[t.name] = _Const.of(r)
            elif r.dtype == object and any(isinstance(v, str) for v in r.reshape(-1)):
                self.env[t.name] = _Sym(r, dtype or np.dtype(np.int64), node)
            else:
                out_dtype = dtype or np.dtype(np.int64)
                if node.op == "Cast":
                    out_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
                self.env[t.name] = _Const.of(r.astype(out_dtype))
        return True

    # ------------------------------------------------------------------ opaque

    def opaque(self, node: gs.Node, reason: str | None = None, shape: Sequence[Dim | None] | None = None) -> None:
        outs = [t for t in node.outputs if t.name]
        proto = self.protos.get(outs[0].name)
        if proto is None:
            raise self.error("has no NodeProto to keep as an opaque op", node=node)
        self._check_outer_scope(node, proto)
        types = []
        for k, t in enumerate(outs):
            tt = self.onnx_type(t.name)
            if k == 0 and shape is not None and tt is not None and tt.rank == len(shape):
                dims = tuple(d if d is not None else o for d, o in zip(shape, tt.shape, strict=True))
                tt = tt.with_shape(dims, tt.channel_axis)
            if tt is None:
                raise self.error(
                    f"graphprune does not translate this op and ONNX shape inference gave no type for its output "
                    f"{t.name!r}",
                    "run onnxsim on the model or export it with static input shapes",
                    node,
                )
            types.append(tt)
        inputs = [self.value(t.name) for t in node.inputs if t.name]
        attrs = onnx_attrs(node.op, proto.SerializeToString(), self.opsets)
        if reason:
            msg = (
                f"op {node.op!r} at node {node.name!r} is not translated ({reason}); it runs opaquely and blocks "
                f"pruning across it"
            )
        else:
            msg = (
                f"op {node.op!r} at node {node.name!r} is not known to graphprune; it runs opaquely and blocks "
                f"pruning across it"
            )
        self._check_runnable(node, attrs.payload, inputs, types)
        warnings.warn(msg, UserWarning, stacklevel=2)
        self.emit(node, Op.OPAQUE, inputs, attrs, types=types, outs=outs)

    def _check_runnable(
        self, node: gs.Node, payload: str, inputs: Sequence[Value], types: Sequence[TensorType]
    ) -> None:
        """An opaque op must still run: one that neither ONNX's standard opsets nor onnxruntime know
        (a custom-domain op without its library) is refused here, not at the first run."""
        domain = node.domain or ""
        if domain in ("", "ai.onnx", "ai.onnx.ml") and onnx.defs.has(node.op, domain):
            return
        from ..interp import onnx_node_session

        def sig(t: TensorType) -> tuple[tuple[int, ...], str]:
            return tuple(d if isinstance(d, int) else 1 for d in t.shape), t.dtype.numpy.str

        try:
            onnx_node_session(
                payload,
                tuple(sig(v.type) for v in inputs),
                tuple((sig(t)[1], tuple(d if isinstance(d, int) else 1 for d in t.shape)) for t in types),
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime reports unknown ops with generic exceptions
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise self.error(
                f"op {node.op!r} (domain {domain or 'ai.onnx'!r}) is known neither to graphprune nor to "
                f"onnxruntime, so it cannot run ({first})",
                "replace it with standard ONNX ops, or load a model that does not need a custom-op library",
                node,
            ) from None

    def _check_outer_scope(self, node: gs.Node, proto: onnx.NodeProto) -> None:
        """Control flow whose subgraphs read outer values cannot run as a one-node model."""
        outer: list[str] = []

        def walk(g: onnx.GraphProto, defined: set[str]) -> None:
            defined = defined | {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                for i in n.input:
                    if i and i not in defined:
                        outer.append(i)
                for a in n.attribute:
                    for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                        walk(sub, defined)
                defined |= set(n.output)

        for a in proto.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                walk(sub, set())
        if outer:
            raise self.error(
                f"its subgraph reads {sorted(set(outer))[:3]} from the enclosing graph, which an opaque op cannot "
                f"carry",
                "fold the control flow (onnxsim) or export the model without it",
                node,
            )


# ---------------------------------------------------------------------------------------------
# handlers: one small function per op family
# ---------------------------------------------------------------------------------------------

Handler = Callable[[_Importer, gs.Node], None]
_HANDLERS: dict[tuple[str, str], Handler] = {}


def _handles(*ops: str, domain: str = "") -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for op in ops:
            _HANDLERS[(domain, op)] = fn
        return fn

    return deco


def _out(node: gs.Node, i: int = 0) -> gs.Tensor:
    return node.outputs[i]


def _static(imp: _Importer, dims: Sequence[Dim], what: str) -> list[int]:
    if not all(isinstance(d, int) for d in dims):
        raise _Unsupported(f"{what} needs static sizes but got {list(dims)}; export with static shapes")
    return [int(d) for d in dims]  # type: ignore[arg-type]


def _extra_outputs_unused(imp: _Importer, node: gs.Node, what: str) -> None:
    if any(imp.used(t) for t in node.outputs[1:]):
        raise _Unsupported(f"its {what} output is used")


# ---- identity-like and constants


@_handles("Identity", "Dropout")
def _identity(imp: _Importer, node: gs.Node) -> None:
    if node.op == "Dropout":
        if imp.has(node, 2):
            training = imp.const(node, 2)
            if training is None or bool(np.asarray(training).reshape(-1)[0]):
                raise _Unsupported("training mode")
        _extra_outputs_unused(imp, node, "mask")
    imp.bind(_out(node), imp.entry(node.inputs[0].name))


@_handles("Constant")
def _constant(imp: _Importer, node: gs.Node) -> None:
    proto = imp.protos[_out(node).name]
    attr = proto.attribute[0] if proto.attribute else None
    if attr is None:
        raise imp.error("has no value attribute")
    if attr.name == "value":
        t = attr.t
        if t.data_location == TensorProto.EXTERNAL:
            load, _ = _external_loader(imp.label, imp.base, t)
            arr = load()
        else:
            arr = numpy_helper.to_array(t)
    elif attr.name == "value_float":
        arr = np.array(attr.f, np.float32)
    elif attr.name == "value_floats":
        arr = np.array(list(attr.floats), np.float32)
    elif attr.name == "value_int":
        arr = np.array(attr.i, np.int64)
    elif attr.name == "value_ints":
        arr = np.array(list(attr.ints), np.int64)
    else:
        raise imp.error(f"Constant attribute {attr.name!r} is not supported", "use a numeric tensor value")
    imp.bind(_out(node), _Const.of(arr, _out(node).name))


@_handles("ConstantOfShape")
def _constant_of_shape(imp: _Importer, node: gs.Node) -> None:
    # a large fill (not folded): broadcast a scalar constant
    shape = imp.const(node, 0)
    if shape is None:
        raise imp.dynamic(node, "its shape", [0])
    value = node.attrs.get("value")
    fill = np.asarray(value.values if value is not None else np.zeros(1, np.float32)).reshape(-1)[:1]
    scalar = imp.new_const(fill.reshape(()), f"{_out(node).name}_fill")
    imp.emit(node, Op.EXPAND, [scalar], ExpandAttrs(shape=tuple(_ints(shape))), _out(node))


@_handles("Shape", "Size")
def _shape(imp: _Importer, node: gs.Node) -> None:
    # reached only when a real op needs the shape of a tensor with symbolic dims as a tensor
    raise _Unsupported("it reads a symbolic shape at run time; export with static shapes to fold it")


# ---- convolution and dense


def _auto_pads(
    imp: _Importer,
    node: gs.Node,
    spatial: Sequence[Dim],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[int, ...]:
    nsp = len(kernel)
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode == "NOTSET":
        pads = list(node.attrs.get("pads", [0] * (2 * nsp)))
        return tuple(int(p) for p in pads)
    if mode == "VALID":
        return (0,) * (2 * nsp)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise imp.error(f"auto_pad {mode!r} is not an ONNX mode", "use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    sizes = _static(imp, spatial, f"auto_pad={mode}")
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return tuple(begins + ends)


@_handles("Conv")
def _conv(imp: _Importer, node: gs.Node) -> None:
    x, w = imp.inp(node, 0), imp.inp(node, 1)
    nsp = w.type.rank - 2
    if nsp < 1 or x.type.rank != nsp + 2:
        raise _Unsupported(f"input rank {x.type.rank} with weight rank {w.type.rank}")
    kernel = [int(k) for k in node.attrs.get("kernel_shape", w.type.shape[2:])]
    strides = [int(s) for s in node.attrs.get("strides", [1] * nsp)]
    dils = [int(d) for d in node.attrs.get("dilations", [1] * nsp)]
    pads = _auto_pads(imp, node, x.type.shape[2:], kernel, strides, dils)
    inputs = [x, w] + ([imp.inp(node, 2)] if imp.has(node, 2) else [])
    attrs = ConvAttrs(stride=tuple(strides), pads=pads, dilation=tuple(dils), groups=int(node.attrs.get("group", 1)))
    imp.emit(node, Op.CONV, inputs, attrs, _out(node))


@_handles("ConvTranspose")
def _conv_transpose(imp: _Importer, node: gs.Node) -> None:
    x, w = imp.inp(node, 0), imp.inp(node, 1)
    nsp = w.type.rank - 2
    if nsp < 1 or x.type.rank != nsp + 2:
        raise _Unsupported(f"input rank {x.type.rank} with weight rank {w.type.rank}")
    kernel = _static(imp, w.type.shape[2:], "the kernel")
    strides = [int(s) for s in node.attrs.get("strides", [1] * nsp)]
    dils = [int(d) for d in node.attrs.get("dilations", [1] * nsp)]
    adj = [int(a) for a in node.attrs.get("output_padding", [0] * nsp)]
    mode = node.attrs.get("auto_pad", "NOTSET")
    out_shape = [int(s) for s in node.attrs.get("output_shape", [])]
    if len(out_shape) == nsp + 2:
        out_shape = out_shape[2:]
    if mode in ("SAME_UPPER", "SAME_LOWER") and not out_shape:
        out_shape = [s * st for s, st in zip(_static(imp, x.type.shape[2:], "auto_pad"), strides, strict=True)]
    if out_shape:
        # the padding that makes the output exactly output_shape (ONNX spec, as onnxruntime does it):
        # SAME_UPPER puts the odd pad at the end, NOTSET and SAME_LOWER at the beginning
        sizes = _static(imp, x.type.shape[2:], "output_shape")
        begins, ends = [], []
        for i in range(nsp):
            natural = (sizes[i] - 1) * strides[i] + adj[i] + (kernel[i] - 1) * dils[i] + 1
            total = natural - out_shape[i]
            if total < 0:
                adj[i] -= total  # a larger output only adds rows no kernel tap reaches
                total = 0
            head = total // 2 if mode == "SAME_UPPER" else total - total // 2
            begins.append(head)
            ends.append(total - head)
        pads = tuple(begins + ends)
    elif mode == "VALID":
        pads = (0,) * (2 * nsp)
    else:
        pads = tuple(int(p) for p in node.attrs.get("pads", [0] * (2 * nsp)))
    inputs = [x, w] + ([imp.inp(node, 2)] if imp.has(node, 2) else [])
    attrs = ConvTransposeAttrs(
        stride=tuple(strides),
        pads=pads,
        dilation=tuple(dils),
        output_padding=tuple(adj),
        groups=int(node.attrs.get("group", 1)),
    )
    imp.emit(node, Op.CONV_TRANSPOSE, inputs, attrs, _out(node))


def _transposed(c: _Const) -> _Const:
    return c.derive(lambda a: a.T, c.shape[::-1])


@_handles("Gemm")
def _gemm(imp: _Importer, node: gs.Node) -> None:
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    trans_a = int(node.attrs.get("transA", 0))
    trans_b = int(node.attrs.get("transB", 0))
    a = imp.inp(node, 0)
    b = imp.const_entry(node, 1)
    has_c = imp.has(node, 2)
    y = _out(node)
    if b is not None and not trans_a and a.type.rank == 2 and len(b.shape) == 2:
        w = b if trans_b else _transposed(b)
        if alpha != 1.0:
            w = w.derive(lambda m: m * np.asarray(alpha, m.dtype), w.shape)
        out_features = w.shape[0]
        bias: Value | None = None
        post_add: Value | None = None
        if has_c:
            c = imp.const_entry(node, 2)
            if c is not None and (len(c.shape) <= 1 or c.shape[0] == 1) and c.shape[-1:] in ((), (1,), (out_features,)):
                if beta == 1.0 and c.shape == (out_features,):
                    bias = imp.value_of(c)
                else:
                    bias = imp.value_of(
                        c.derive(
                            lambda v: np.broadcast_to(v.reshape(-1) * np.asarray(beta, v.dtype), (out_features,)),
                            (out_features,),
                        )
                    )
            else:
                post_add = _scaled(imp, node, imp.inp(node, 2), beta)
        weight = imp.value_of(w)
        inputs = [a, weight] + ([bias] if bias is not None else [])
        if post_add is None:
            imp.emit(node, Op.LINEAR, inputs, None, y)
        else:
            lin = imp.emit(node, Op.LINEAR, inputs, None)
            imp.emit(node, Op.ADD, [lin, post_add], None, y)
        return
    # general form: (A' @ B') * alpha + C * beta
    if trans_a:
        a = imp.emit(node, Op.TRANSPOSE, [a], TransposeAttrs((1, 0)))
    if b is not None:
        bv = imp.value_of(_transposed(b) if trans_b else b)
    else:
        bv = imp.inp(node, 1)
        if trans_b:
            bv = imp.emit(node, Op.TRANSPOSE, [bv], TransposeAttrs((1, 0)))
    last = not has_c and alpha == 1.0
    prod = imp.emit(node, Op.MATMUL, [a, bv], None, y if last else None)
    if alpha != 1.0:
        prod = imp.emit(node, Op.MUL, [prod, imp.scalar(alpha, prod, f"{node.name}_alpha")], None, None if has_c else y)
    if has_c:
        imp.emit(node, Op.ADD, [prod, _scaled(imp, node, imp.inp(node, 2), beta)], None, y)


def _scaled(imp: _Importer, node: gs.Node, v: Value, k: float) -> Value:
    if k == 1.0:
        return v
    if v.is_const:
        return imp.new_const(v.data * np.asarray(k, v.data.dtype), f"{v.name}_scaled")
    return imp.emit(node, Op.MUL, [v, imp.scalar(k, v, f"{node.name}_beta")], None)


@_handles("MatMul")
def _matmul(imp: _Importer, node: gs.Node) -> None:
    b = imp.const_entry(node, 1)
    a = imp.inp(node, 0)
    if b is not None and len(b.shape) == 2 and a.type.rank >= 1 and not a.is_const:
        # the IR keeps dense weights as [OUT, IN]
        weight = imp.value_of(_transposed(b))
        bias_add = _bias_add(imp, node, b.shape[1])
        if bias_add is None:
            imp.emit(node, Op.LINEAR, [a, weight], None, _out(node))
            return
        add, bias = bias_add
        # MatMul + Add(bias) is one LINEAR with a bias (how exporters write Linear on 3-D inputs)
        imp.skip.add(id(add))
        imp.emit(node, Op.LINEAR, [a, weight, bias], None, _out(add))
        return
    imp.emit(node, Op.MATMUL, [a, imp.inp(node, 1)], None, _out(node))


def _bias_add(imp: _Importer, node: gs.Node, features: int) -> tuple[gs.Node, Value] | None:
    """The Add that only adds a constant [features] bias to this node's output, with the bias."""
    y = _out(node)
    if y.name in imp._graph_outputs or len(y.outputs) != 1:
        return None
    add = y.outputs[0]
    if add.op != "Add" or not _standard(add) or len(add.inputs) != 2:
        return None
    other = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
    if other is y or not other.name:
        return None
    c = imp.env.get(other.name)
    if not isinstance(c, _Const) or math.prod(c.shape) != features or any(d != 1 for d in c.shape[:-1]):
        return None
    if len(c.shape) > len(imp.value(node.inputs[0].name).type.shape):
        return None  # the bias would add leading axes
    bias = c if c.shape == (features,) else c.derive(lambda v: v.reshape(features), (features,))
    return add, imp.value_of(bias)


# ---- normalisation


@_handles("BatchNormalization")
def _batch_norm(imp: _Importer, node: gs.Node) -> None:
    if node.attrs.get("training_mode", 0):
        raise _Unsupported("training_mode=1")
    _extra_outputs_unused(imp, node, "running statistics")
    inputs = [imp.inp(node, i) for i in range(5)]
    imp.emit(node, Op.BATCH_NORM, inputs, EpsAttrs(eps=_f32(node.attrs.get("epsilon", 1e-5))), _out(node))


def _param_for(imp: _Importer, node: gs.Node, i: int, shape: tuple[Dim, ...]) -> Value:
    """A norm parameter with exactly `shape` (ONNX lets it broadcast; the IR wants the full shape)."""
    v = imp.inp(node, i)
    if v.type.shape == shape:
        return v
    c = imp.const_entry(node, i)
    if c is None or not all(isinstance(d, int) for d in shape):
        raise _Unsupported(f"parameter shape {list(v.type.shape)} differs from the normalised shape {list(shape)}")
    try:
        np.broadcast_shapes(c.shape, shape)  # type: ignore[arg-type]
    except ValueError:
        raise _Unsupported(f"parameter shape {list(c.shape)} does not broadcast to {list(shape)}") from None
    return imp.value_of(c.derive(lambda a: np.broadcast_to(a, shape).copy(), shape))  # type: ignore[arg-type]


@_handles("LayerNormalization")
def _layer_norm(imp: _Importer, node: gs.Node) -> None:
    _extra_outputs_unused(imp, node, "mean/inv_std_dev")
    x = imp.inp(node, 0)
    axis = _axis(int(node.attrs.get("axis", -1)), x.type.rank)
    norm_shape = tuple(x.type.shape[axis:])
    inputs = [x, _param_for(imp, node, 1, norm_shape)]
    if imp.has(node, 2):
        inputs.append(_param_for(imp, node, 2, norm_shape))
    attrs = NormAttrs(axis=axis, eps=_f32(node.attrs.get("epsilon", 1e-5)))
    imp.emit(node, Op.LAYER_NORM, inputs, attrs, _out(node))


@_handles("RMSNormalization")
@_handles("SimplifiedLayerNormalization")
@_handles("SimplifiedLayerNormalization", domain="com.microsoft")
def _rms_norm(imp: _Importer, node: gs.Node) -> None:
    _extra_outputs_unused(imp, node, "inv_std_var")
    x = imp.inp(node, 0)
    axis = _axis(int(node.attrs.get("axis", -1)), x.type.rank)
    inputs = [x]
    if imp.has(node, 1):
        inputs.append(_param_for(imp, node, 1, tuple(x.type.shape[axis:])))
    attrs = NormAttrs(axis=axis, eps=_f32(node.attrs.get("epsilon", 1e-5)))
    imp.emit(node, Op.RMS_NORM, inputs, attrs, _out(node))


@_handles("InstanceNormalization")
def _instance_norm(imp: _Importer, node: gs.Node) -> None:
    inputs = [imp.inp(node, i) for i in range(3)]
    imp.emit(node, Op.INSTANCE_NORM, inputs, EpsAttrs(eps=_f32(node.attrs.get("epsilon", 1e-5))), _out(node))


@_handles("GroupNormalization")
def _group_norm(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    groups = int(node.attrs["num_groups"])
    channels = x.type.shape[1] if x.type.rank >= 2 else None
    params = []
    for i in (1, 2):
        v = imp.inp(node, i)
        if v.type.shape == (channels,):
            params.append(v)
            continue
        # opsets 18-20 give one scale/bias per group; the IR (and opset 21) wants one per channel
        c = imp.const_entry(node, i)
        if c is None or not isinstance(channels, int) or c.shape != (groups,) or channels % groups:
            raise _Unsupported(f"scale/bias shape {list(v.type.shape)} for {channels} channels in {groups} groups")
        rep = channels // groups
        params.append(imp.value_of(c.derive(lambda a, rep=rep: np.repeat(a, rep), (channels,))))
    attrs = GroupNormAttrs(num_groups=groups, eps=_f32(node.attrs.get("epsilon", 1e-5)))
    imp.emit(node, Op.GROUP_NORM, [x, *params], attrs, _out(node))


# ---- activations and elementwise math

_UNARY = {
    "Relu": Op.RELU,
    "Sigmoid": Op.SIGMOID,
    "Tanh": Op.TANH,
    "HardSwish": Op.HARD_SWISH,
    "Erf": Op.ERF,
    "Exp": Op.EXP,
    "Log": Op.LOG,
    "Sqrt": Op.SQRT,
    "Neg": Op.NEG,
    "Abs": Op.ABS,
    "Reciprocal": Op.RECIPROCAL,
    "Sin": Op.SIN,
    "Cos": Op.COS,
}


@_handles(*_UNARY)
def _unary(imp: _Importer, node: gs.Node) -> None:
    imp.emit(node, _UNARY[node.op], [imp.inp(node, 0)], None, _out(node))


def _logical_not(imp: _Importer, node: gs.Node, v: Value, out: gs.Tensor | None) -> Value:
    # v == false (onnxruntime has no Where over booleans)
    return imp.emit(node, Op.EQUAL, [v, imp.new_const(np.array(False), f"{node.name}_false")], None, out)


@_handles("Not")
def _not(imp: _Importer, node: gs.Node) -> None:
    _logical_not(imp, node, imp.inp(node, 0), _out(node))


@_handles("IsNaN")
def _is_nan(imp: _Importer, node: gs.Node) -> None:
    # NaN is the one value unequal to itself (exporters mask fully masked softmax rows this way)
    x = imp.inp(node, 0)
    _logical_not(imp, node, imp.emit(node, Op.EQUAL, [x, x], None), _out(node))


@_handles("IsInf")
def _is_inf(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    signs = [v for v, flag in ((np.inf, "detect_positive"), (-np.inf, "detect_negative")) if node.attrs.get(flag, 1)]
    if not signs:  # nothing to detect: x < x is false everywhere, NaN included
        imp.emit(node, Op.LESS, [x, x], None, _out(node))
    elif len(signs) == 1:
        imp.emit(node, Op.EQUAL, [x, imp.scalar(signs[0], x, f"{node.name}_inf")], None, _out(node))
    else:  # |x| == inf
        imp.emit(node, Op.EQUAL, [imp.emit(node, Op.ABS, [x], None), imp.scalar(np.inf, x, f"{node.name}_inf")], None,
                 _out(node))


@_handles("LeakyRelu")
def _leaky_relu(imp: _Importer, node: gs.Node) -> None:
    attrs = LeakyReluAttrs(alpha=_f32(node.attrs.get("alpha", 0.01)))
    imp.emit(node, Op.LEAKY_RELU, [imp.inp(node, 0)], attrs, _out(node))


@_handles("HardSigmoid")
def _hard_sigmoid(imp: _Importer, node: gs.Node) -> None:
    attrs = HardSigmoidAttrs(alpha=_f32(node.attrs.get("alpha", 0.2)), beta=_f32(node.attrs.get("beta", 0.5)))
    imp.emit(node, Op.HARD_SIGMOID, [imp.inp(node, 0)], attrs, _out(node))


@_handles("Gelu")
@_handles("Gelu", domain="com.microsoft")
@_handles("FastGelu", domain="com.microsoft")
@_handles("BiasGelu", domain="com.microsoft")
def _gelu(imp: _Importer, node: gs.Node) -> None:
    approx = "tanh" if node.op == "FastGelu" else str(node.attrs.get("approximate", "none"))
    if approx not in ("none", "tanh"):
        raise _Unsupported(f"approximate={approx!r}")
    x = imp.inp(node, 0)
    if node.op in ("FastGelu", "BiasGelu") and imp.has(node, 1):
        x = imp.emit(node, Op.ADD, [x, imp.inp(node, 1)], None)
    imp.emit(node, Op.GELU, [x], GeluAttrs(approximate=approx), _out(node))


@_handles("PRelu")
def _prelu(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    c = imp.const_entry(node, 1)
    rank = x.type.rank
    if c is not None and rank >= 2:
        # ONNX broadcasts the slope from the right; the IR's slope runs along axis 1
        shape = (1,) * (rank - len(c.shape)) + c.shape
        if math.prod(c.shape) == 1:
            slope = c.derive(lambda a: a.reshape(1), (1,))
            imp.emit(node, Op.PRELU, [x, imp.value_of(slope)], None, _out(node))
            return
        if all(d == 1 for i, d in enumerate(shape) if i != 1) and shape[1] == x.type.shape[1]:
            n = shape[1]
            slope = c.derive(lambda a: a.reshape(n), (n,))
            imp.emit(node, Op.PRELU, [x, imp.value_of(slope)], None, _out(node))
            return
    # any other slope layout: where(x < 0, x * slope, x)
    slope = imp.inp(node, 1)
    neg = imp.emit(node, Op.LESS, [x, imp.scalar(0.0, x, f"{node.name}_zero")], None)
    scaled = imp.emit(node, Op.MUL, [x, slope], None)
    imp.emit(node, Op.WHERE, [neg, scaled, x], None, _out(node))


@_handles("Clip")
def _clip(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    bounds: list[float | None] = []
    dynamic: list[Value | None] = []
    for i, key in ((1, "min"), (2, "max")):
        if imp.has(node, i):
            c = imp.const(node, i)
            if c is None:
                bounds.append(None)
                dynamic.append(imp.inp(node, i))
                continue
            bounds.append(float(np.asarray(c).reshape(-1)[0]))
        else:
            bounds.append(node.attrs.get(key))
        dynamic.append(None)
    if dynamic == [None, None]:
        imp.emit(node, Op.CLIP, [x], ClipAttrs(min=bounds[0], max=bounds[1]), _out(node))
        return
    y = x
    for op, b, d, last in ((Op.MAXIMUM, bounds[0], dynamic[0], False), (Op.MINIMUM, bounds[1], dynamic[1], True)):
        other = d if d is not None else (imp.scalar(b, x, f"{node.name}_bound") if b is not None else None)
        if other is not None:
            y = imp.emit(node, op, [y, other], None, _out(node) if last else None)
    if dynamic[1] is None and bounds[1] is None:
        imp.bind(_out(node), y)


@_handles("Softmax")
def _softmax(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    axis = _axis(int(node.attrs.get("axis", -1)), x.type.rank)
    imp.emit(node, Op.SOFTMAX, [x], AxisAttrs(axis=axis), _out(node))


_BINARY = {
    "Add": Op.ADD,
    "Sub": Op.SUB,
    "Mul": Op.MUL,
    "Div": Op.DIV,
    "Pow": Op.POW,
    "Equal": Op.EQUAL,
    "Less": Op.LESS,
    "Greater": Op.GREATER,
}


@_handles(*_BINARY)
def _binary(imp: _Importer, node: gs.Node) -> None:
    imp.emit(node, _BINARY[node.op], [imp.inp(node, 0), imp.inp(node, 1)], None, _out(node))


@_handles("Max", "Min", "Sum", "Mean")
def _variadic(imp: _Importer, node: gs.Node) -> None:
    op = {"Max": Op.MAXIMUM, "Min": Op.MINIMUM, "Sum": Op.ADD, "Mean": Op.ADD}[node.op]
    ins = [imp.inp(node, i) for i in range(len(node.inputs)) if imp.has(node, i)]
    if len(ins) == 1:
        imp.bind(_out(node), ins[0])
        return
    y = ins[0]
    for k, v in enumerate(ins[1:]):
        last = k == len(ins) - 2 and node.op != "Mean"
        y = imp.emit(node, op, [y, v], None, _out(node) if last else None)
    if node.op == "Mean":
        imp.emit(node, Op.MUL, [y, imp.scalar(1.0 / len(ins), y, f"{node.name}_inv_n")], None, _out(node))


@_handles("Where")
def _where(imp: _Importer, node: gs.Node) -> None:
    imp.emit(node, Op.WHERE, [imp.inp(node, i) for i in range(3)], None, _out(node))


@_handles("Cast", "CastLike")
def _cast(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    if node.op == "CastLike":
        dtype = imp.inp(node, 1).type.dtype
    else:
        try:
            dtype = DType.from_numpy(_np_dtype(int(node.attrs["to"]), "the cast target"))
        except TypeError:
            raise _Unsupported(f"cast to ONNX type {node.attrs['to']}") from None
    if dtype == x.type.dtype:
        imp.bind(_out(node), x)
        return
    imp.emit(node, Op.CAST, [x], CastAttrs(dtype=dtype), _out(node))


# ---- data movement


@_handles("Concat")
def _concat(imp: _Importer, node: gs.Node) -> None:
    ins = [imp.inp(node, i) for i in range(len(node.inputs)) if imp.has(node, i)]
    axis = _axis(int(node.attrs["axis"]), ins[0].type.rank)
    # zero-size pieces (torch exports them for empty caches) contribute nothing
    kept = [v for v in ins if v.type.shape[axis] != 0] or ins[:1]
    if len(kept) == 1:
        imp.bind(_out(node), kept[0])
        return
    imp.emit(node, Op.CONCAT, kept, AxisAttrs(axis=axis), _out(node))


@_handles("Split")
def _split(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    axis = _axis(int(node.attrs.get("axis", 0)), x.type.rank)
    size = x.type.shape[axis]
    n = len(node.outputs)
    split = imp.const(node, 1)
    if split is None and imp.has(node, 1):
        raise imp.dynamic(node, "its split sizes", [1])
    if split is not None:
        sizes = _ints(split)
    elif "split" in node.attrs:
        sizes = [int(s) for s in node.attrs["split"]]
    else:
        size = _static(imp, [size], "an even split")[0]
        n = int(node.attrs.get("num_outputs", n))
        chunk = -(-size // n)
        sizes = [min(chunk, size - k * chunk) for k in range(n)]
    outs = list(node.outputs)
    if len(sizes) != len(outs):
        raise imp.error(f"splits into {len(sizes)} pieces but has {len(outs)} outputs")
    imp.emit(node, Op.SPLIT, [x], SplitAttrs(axis=axis, sizes=tuple(sizes)), outs=outs)


@_handles("Slice")
def _slice(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    params = [imp.sym(node, i) for i in range(1, 5)]
    if params[0] is None or params[1] is None or any(p is None and imp.has(node, i + 1) for i, p in enumerate(params)):
        raise imp.dynamic(node, "its starts/ends/axes/steps", [1, 2, 3, 4])
    starts, ends = list(params[0].reshape(-1)), list(params[1].reshape(-1))
    axes = list(params[2].reshape(-1)) if params[2] is not None else list(range(len(starts)))
    steps = list(params[3].reshape(-1)) if params[3] is not None else [1] * len(starts)
    plan = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        if isinstance(a, str) or isinstance(st, str):
            raise imp.error("has symbolic axes or steps")
        axis = _axis(int(a), x.type.rank)
        size = x.type.shape[axis]
        # a symbolic bound equal to the axis size means "to the end"
        s = size if isinstance(s, str) and s == size else s
        e = _INT64_MAX if isinstance(e, str) and e == size else e
        if isinstance(s, str) or isinstance(e, str):
            raise _Unsupported(f"it slices axis {axis} with symbolic bounds {s}:{e}")
        if isinstance(size, str):
            if int(s) == 0 and int(e) >= _INT64_MAX // 2 and int(st) == 1:
                continue  # the whole symbolic axis
            raise _Unsupported(f"it slices the symbolic axis {axis} ({size})")
        b, f = _slice_params(size, int(s), int(e), int(st))
        if (b, f, int(st)) == (0, size, 1):
            continue  # the whole axis
        plan.append(SliceAttrs(axis=axis, start=b, end=f, step=int(st)))
    if not plan:
        imp.bind(_out(node), x)
        return
    y = x
    for k, attrs in enumerate(plan):
        y = imp.emit(node, Op.SLICE, [y], attrs, _out(node) if k == len(plan) - 1 else None)


@_handles("Gather")
def _gather(imp: _Importer, node: gs.Node) -> None:
    data = imp.inp(node, 0)
    axis = _axis(int(node.attrs.get("axis", 0)), data.type.rank)
    c = imp.const_entry(node, 1)
    size = data.type.shape[axis]
    if c is not None and isinstance(size, int) and c.loaded and (np.asarray(c.data) < 0).any():
        idx = imp.new_const(np.where(c.data < 0, c.data + size, c.data), f"{node.inputs[1].name}_pos")
    else:
        idx = imp.inp(node, 1)
    imp.emit(node, Op.GATHER, [data, idx], GatherAttrs(axis=axis), _out(node))


def _reshape_target(imp: _Importer, x: Value, target: Sequence[Any], allowzero: bool) -> tuple[int, ...]:
    """An IR reshape target: static sizes, 0 where the output keeps the input's symbol, at most one -1."""
    in_shape = x.type.shape
    spec: list[int] = []
    for i, t in enumerate(target):
        if isinstance(t, str):
            if i < len(in_shape) and in_shape[i] == t:
                spec.append(0)
            else:
                spec.append(-1)
        elif int(t) == 0:
            if allowzero:
                raise _Unsupported("allowzero=1 with a 0 in the shape (an empty tensor)")
            spec.append(0)
        else:
            spec.append(int(t))
    # the output shape as far as it is known, for the opaque fallback
    known = [
        in_shape[i] if s == 0 else (None if s == -1 else t) for i, (s, t) in enumerate(zip(spec, target, strict=True))
    ]
    if spec.count(-1) > 1:
        raise _Unsupported(f"the target {list(target)} for {list(in_shape)} has more than one symbolic size", known)
    from ..ir.infer import reshape_target

    node = imp._current
    try:
        out = reshape_target(node, in_shape, spec)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - reshape_target formats a ShapeError with the IR node; ours is a gs node
        raise _Unsupported(f"the IR cannot reshape {list(in_shape)} to {list(target)}", known) from None
    final = []
    for i, d in enumerate(out):
        if isinstance(d, int):
            final.append(d)
        elif i < len(in_shape) and in_shape[i] == d:
            final.append(0)
        else:
            final.append(-1)
    return tuple(final)


@_handles("Reshape")
def _reshape(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    target = imp.sym(node, 1)
    if target is None:
        raise imp.dynamic(node, "its target shape", [1])
    spec = _reshape_target(imp, x, list(target.reshape(-1)), bool(node.attrs.get("allowzero", 0)))
    if spec == tuple(x.type.shape) or all(s == 0 for s in spec) and len(spec) == x.type.rank:
        imp.bind(_out(node), x)
        return
    imp.emit(node, Op.RESHAPE, [x], ReshapeAttrs(shape=spec), _out(node))


@_handles("Flatten")
def _flatten(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    shape = x.type.shape
    axis = int(node.attrs.get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    spec = []
    for part in (shape[:axis], shape[axis:]):
        if all(isinstance(d, int) for d in part):
            spec.append(math.prod(part))  # type: ignore[arg-type]
        elif len(part) == 1 and part is shape[:axis]:
            spec.append(part[0])
        else:
            spec.append("?")
    if spec[0] == "?" and spec[1] == "?":
        raise _Unsupported(f"it flattens {list(shape)} at axis {axis} with symbolic sizes on both sides")
    target = _reshape_target(imp, x, spec, False)
    imp.emit(node, Op.RESHAPE, [x], ReshapeAttrs(shape=target), _out(node))


def _axes_input(imp: _Importer, node: gs.Node) -> list[int] | None:
    if imp.has(node, 1):
        c = imp.const(node, 1)
        if c is None:
            raise imp.dynamic(node, "its axes", [1])
        return _ints(c)
    return [int(a) for a in node.attrs["axes"]] if "axes" in node.attrs else None


@_handles("Squeeze")
def _squeeze(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    axes = _axes_input(imp, node)
    if axes is None:
        axes = [i for i, d in enumerate(x.type.shape) if d == 1]
    norm = tuple(sorted({_axis(a, x.type.rank) for a in axes}))
    if not norm:
        imp.bind(_out(node), x)
        return
    imp.emit(node, Op.SQUEEZE, [x], AxesAttrs(axes=norm), _out(node))


@_handles("Unsqueeze")
def _unsqueeze(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    axes = _axes_input(imp, node) or []
    rank = x.type.rank + len(axes)
    norm = tuple(sorted({_axis(a, rank) for a in axes}))
    imp.emit(node, Op.UNSQUEEZE, [x], AxesAttrs(axes=norm), _out(node))


@_handles("Transpose")
def _transpose(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    perm = tuple(int(p) for p in node.attrs.get("perm", range(x.type.rank - 1, -1, -1)))
    if perm == tuple(range(x.type.rank)):
        imp.bind(_out(node), x)
        return
    imp.emit(node, Op.TRANSPOSE, [x], TransposeAttrs(perm=perm), _out(node))


@_handles("Expand")
def _expand(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    target = imp.sym(node, 1)
    if target is None:
        raise imp.dynamic(node, "its target shape", [1])
    tgt = list(target.reshape(-1))
    in_shape = x.type.shape
    rank = max(len(tgt), len(in_shape))
    tgt = [1] * (rank - len(tgt)) + tgt
    ins: list[Dim] = [1] * (rank - len(in_shape)) + list(in_shape)
    # the output shape, for the opaque fallback: ONNX Expand broadcasts both ways
    out_shape = [t if d == 1 else d for d, t in zip(ins, tgt, strict=True)]
    spec: list[int] = []
    for i, (d, t) in enumerate(zip(ins, tgt, strict=True)):
        # the IR target is the output shape (-1 keeps the input's dim)
        if isinstance(t, str):
            if d == t:
                spec.append(-1)
                continue
            raise _Unsupported(f"the IR cannot expand {list(in_shape)} to the symbolic shape {tgt}", out_shape)
        t = int(t)
        if isinstance(d, str):
            if t != 1:
                raise _Unsupported(f"it expands the symbolic dim {d} to {t}", out_shape)
            spec.append(-1)
        elif t == 1 or t == d:
            spec.append(d if i >= rank - len(in_shape) else 1)
        elif d == 1:
            spec.append(t)
        else:
            raise imp.error(f"cannot expand {list(in_shape)} to {tgt}")
    if len(spec) == len(in_shape) and all(s == -1 or s == d for s, d in zip(spec, in_shape, strict=True)):
        imp.bind(_out(node), x)
        return
    imp.emit(node, Op.EXPAND, [x], ExpandAttrs(shape=tuple(spec)), _out(node))


@_handles("Pad")
def _pad(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    mode = str(node.attrs.get("mode", "constant"))
    if mode not in ("constant", "reflect", "edge"):
        raise _Unsupported(f"mode {mode!r}")
    pads_c = imp.const(node, 1) if imp.has(node, 1) else np.asarray(node.attrs.get("pads", []))
    if pads_c is None:
        raise imp.dynamic(node, "its pads", [1])
    pads = _ints(pads_c)
    rank = x.type.rank
    value = 0.0
    if imp.has(node, 2):
        v = imp.const(node, 2)
        if v is None:
            raise _Unsupported("a run-time pad value")
        value = float(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else 0.0
    if imp.has(node, 3):
        axes = [_axis(a, rank) for a in _ints(imp.const(node, 3))]
        full = [0] * (2 * rank)
        for k, a in enumerate(axes):
            full[a], full[rank + a] = pads[k], pads[len(axes) + k]
        pads = full
    if len(pads) != 2 * rank:
        raise imp.error(f"has {len(pads)} pads for rank {rank}")
    if not any(pads):
        imp.bind(_out(node), x)
        return
    imp.emit(node, Op.PAD, [x], PadAttrs(pads=tuple(pads), mode=mode, value=value), _out(node))


@_handles("Resize", "Upsample")
def _resize(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    a = node.attrs
    mode = str(a.get("mode", "nearest"))
    mode = "linear" if mode in ("bilinear", "trilinear") else mode  # Upsample-7 names, kept by the converter
    ctm = str(a.get("coordinate_transformation_mode", "half_pixel" if node.op == "Resize" else "asymmetric"))
    nearest = str(a.get("nearest_mode", "round_prefer_floor"))
    if mode not in ("nearest", "linear"):
        raise _Unsupported(f"mode {mode!r}")
    if ctm not in ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"):
        raise _Unsupported(f"coordinate_transformation_mode {ctm!r}")
    if a.get("antialias", 0) or a.get("exclude_outside", 0):
        raise _Unsupported("antialias/exclude_outside")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise _Unsupported("keep_aspect_ratio_policy")
    rank = x.type.rank
    if rank < 3:
        raise _Unsupported(f"rank {rank}")
    spatial = _static(imp, x.type.shape[2:], "resize")
    axes = [_axis(int(v), rank) for v in a.get("axes", range(rank))]
    scale_idx, size_idx = (1, None) if node.op == "Upsample" else (2, 3)
    scales_c = imp.const(node, scale_idx)
    # sizes may copy N and C from a symbolic shape; the spatial sizes must be static
    sizes_c = imp.sym(node, size_idx) if size_idx is not None else None
    if (scales_c is None or scales_c.size == 0) and sizes_c is None:
        raise imp.dynamic(node, "its scales/sizes", [scale_idx] + ([size_idx] if size_idx is not None else []))
    full_scales = [1.0] * rank
    full_sizes: list[Dim] = list(x.type.shape)
    if scales_c is not None and scales_c.size:
        sc = np.asarray(scales_c, np.float32).reshape(-1)
        for k, ax in enumerate(axes):
            full_scales[ax] = float(sc[k])
        for i in range(2, rank):
            # onnxruntime: floor(input * scale) in float32
            full_sizes[i] = int(np.floor(np.float32(full_scales[i]) * np.float32(spatial[i - 2])))
        if full_scales[0] != 1.0 or full_scales[1] != 1.0:
            raise _Unsupported("it resizes the batch or channel axis")
    else:
        sz = [v if isinstance(v, str) else int(v) for v in sizes_c.reshape(-1)]  # type: ignore[union-attr]
        for k, ax in enumerate(axes):
            full_sizes[ax] = sz[k]
        if full_sizes[:2] != list(x.type.shape[:2]):
            raise _Unsupported("it resizes the batch or channel axis")
        if not all(isinstance(d, int) for d in full_sizes[2:]):
            raise _Unsupported(f"symbolic output sizes {full_sizes[2:]}")
        for i in range(2, rank):
            # the exact ratio out / in: onnxruntime maps coordinates with it (rounded to float32, where
            # its float32 arithmetic then mostly lands on the exact coordinates again)
            full_scales[i] = full_sizes[i] / spatial[i - 2]  # type: ignore[operator]
    attrs = ResizeAttrs(
        sizes=tuple(int(s) for s in full_sizes[2:]),  # type: ignore[arg-type]
        scales=tuple(full_scales[2:]),
        mode=mode,
        coordinate_transformation=ctm,
        nearest_mode=nearest,
    )
    imp.emit(node, Op.RESIZE, [x], attrs, _out(node))


def _nchw(imp: _Importer, x: Value, what: str) -> tuple[Dim, int, int, int]:
    if x.type.rank != 4:
        raise _Unsupported(f"rank {x.type.rank} input")
    n = x.type.shape[0]
    c, h, w = _static(imp, x.type.shape[1:], what)
    return n, c, h, w


@_handles("DepthToSpace")
def _depth_to_space(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    b = int(node.attrs["blocksize"])
    if str(node.attrs.get("mode", "DCR")) == "CRD":
        imp.emit(node, Op.PIXEL_SHUFFLE, [x], FactorAttrs(factor=b), _out(node))
        return
    n, c, h, w = _nchw(imp, x, "DepthToSpace")
    nn = 0 if isinstance(n, str) else n
    # DCR: channels are ordered (block row, block col, out channel)
    y = imp.emit(node, Op.RESHAPE, [x], ReshapeAttrs((nn, b, b, c // (b * b), h, w)))
    y = imp.emit(node, Op.TRANSPOSE, [y], TransposeAttrs((0, 3, 4, 1, 5, 2)))
    imp.emit(node, Op.RESHAPE, [y], ReshapeAttrs((nn, c // (b * b), h * b, w * b)), _out(node))


@_handles("SpaceToDepth")
def _space_to_depth(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    b = int(node.attrs["blocksize"])
    n, c, h, w = _nchw(imp, x, "SpaceToDepth")
    nn = 0 if isinstance(n, str) else n
    # output channels are ordered (block row, block col, in channel): not torch's pixel_unshuffle
    y = imp.emit(node, Op.RESHAPE, [x], ReshapeAttrs((nn, c, h // b, b, w // b, b)))
    y = imp.emit(node, Op.TRANSPOSE, [y], TransposeAttrs((0, 3, 5, 1, 2, 4)))
    imp.emit(node, Op.RESHAPE, [y], ReshapeAttrs((nn, c * b * b, h // b, w // b)), _out(node))


# ---- pooling and reduction


@_handles("MaxPool", "AveragePool")
def _pool(imp: _Importer, node: gs.Node) -> None:
    if node.op == "MaxPool":
        _extra_outputs_unused(imp, node, "indices")
    x = imp.inp(node, 0)
    kernel = [int(k) for k in node.attrs["kernel_shape"]]
    nsp = len(kernel)
    strides = [int(s) for s in node.attrs.get("strides", [1] * nsp)]
    dils = [int(d) for d in node.attrs.get("dilations", [1] * nsp)]
    ceil = bool(node.attrs.get("ceil_mode", 0))
    if ceil and node.attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        raise _Unsupported("ceil_mode with auto_pad SAME")
    pads = _auto_pads(imp, node, x.type.shape[2:], kernel, strides, dils)
    attrs = PoolAttrs(
        kernel=tuple(kernel),
        stride=tuple(strides),
        pads=pads,
        dilation=tuple(dils),
        ceil_mode=ceil,
        count_include_pad=bool(node.attrs.get("count_include_pad", 0)),
    )
    imp.emit(node, Op.MAX_POOL if node.op == "MaxPool" else Op.AVG_POOL, [x], attrs, _out(node))


@_handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    op = Op.REDUCE_MEAN if node.op == "GlobalAveragePool" else Op.REDUCE_MAX
    imp.emit(node, op, [x], ReduceAttrs(axes=tuple(range(2, x.type.rank)), keepdims=True), _out(node))


@_handles("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare")
def _reduce(imp: _Importer, node: gs.Node) -> None:
    x = imp.inp(node, 0)
    axes = _axes_input(imp, node)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            imp.bind(_out(node), x)
            return
        axes = list(range(x.type.rank))
    attrs = ReduceAttrs(axes=tuple(sorted({_axis(a, x.type.rank) for a in axes})),
                        keepdims=bool(node.attrs.get("keepdims", 1)))
    out = _out(node)
    # the others through sum, mean and max: L1 = sum |x|, L2 = sqrt(sum x^2), min = -max(-x)
    if node.op in ("ReduceMean", "ReduceSum", "ReduceMax"):
        op = {"ReduceMean": Op.REDUCE_MEAN, "ReduceSum": Op.REDUCE_SUM, "ReduceMax": Op.REDUCE_MAX}[node.op]
        imp.emit(node, op, [x], attrs, out)
    elif node.op == "ReduceMin":
        top = imp.emit(node, Op.REDUCE_MAX, [imp.emit(node, Op.NEG, [x], None)], attrs)
        imp.emit(node, Op.NEG, [top], None, out)
    elif node.op == "ReduceL1":
        imp.emit(node, Op.REDUCE_SUM, [imp.emit(node, Op.ABS, [x], None)], attrs, out)
    else:
        squares = imp.emit(node, Op.REDUCE_SUM, [imp.emit(node, Op.MUL, [x, x], None)], attrs,
                           out if node.op == "ReduceSumSquare" else None)
        if node.op == "ReduceL2":
            imp.emit(node, Op.SQRT, [squares], None, out)


# ---- attention


@_handles("Attention")
def _attention(imp: _Importer, node: gs.Node) -> None:
    a = node.attrs
    if any(imp.has(node, i) for i in (4, 5)) or any(imp.used(t) for t in node.outputs[1:]):
        raise _Unsupported("a KV cache")
    if a.get("softcap", 0.0) or a.get("qk_matmul_output_mode", 0):
        raise _Unsupported("softcap/qk_matmul_output_mode")
    q, k, v = (imp.inp(node, i) for i in range(3))
    if not q.type.rank == k.type.rank == v.type.rank == 4:
        raise _Unsupported("3-D (packed heads) inputs")
    causal = bool(a.get("is_causal", 0))
    mask = imp.inp(node, 3) if imp.has(node, 3) else None
    if mask is not None and causal:
        raise _Unsupported("both a mask and is_causal")
    gqa = q.type.shape[1] != k.type.shape[1]
    scale = a.get("scale")
    attrs = AttentionAttrs(scale=None if scale is None else _f32(scale), is_causal=causal, enable_gqa=gqa)
    imp.emit(node, Op.ATTENTION, [q, k, v] + ([mask] if mask is not None else []), attrs, _out(node))


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def load(model: str | os.PathLike[str] | onnx.ModelProto, *, name: str | None = None) -> Graph:
    """Read an ONNX model (a path or a ModelProto) into an IR graph.

    Initializers become constants named after their ONNX names (external data loads lazily, and
    must live in the model's folder). Ops graphprune does not know become OPAQUE nodes with a
    UserWarning. Raises ModelLoadError naming the file (and node) when the model cannot be read.
    """
    # warnings are collected and re-emitted here so that they point at the caller of load()
    pending: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return _load(model, name)
            finally:
                pending = list(caught)
    finally:
        for w in pending:
            warnings.warn(w.message, w.category, stacklevel=2)


def _load(model: str | os.PathLike[str] | onnx.ModelProto, name: str | None) -> Graph:
    proto, base, label = _read_model(model)
    if base is not None:
        # every external location is validated before anything (the checker included) touches it
        for t in proto.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                _external_loader(label, base, t)
    _validate(proto, None if isinstance(model, onnx.ModelProto) else Path(model), label)
    if len(proto.functions):
        try:
            from onnx import inliner

            proto = inliner.inline_local_functions(proto)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{label}: cannot inline the model's local functions: {e}") from None
    sparse_props = {p.key: p.value for p in proto.metadata_props}.get("graphprune.sparsity")
    proto = _convert_opset(proto, label)
    proto = _infer_shapes(proto, Path(label) if base is not None else None, label)
    try:
        graph = _Importer(proto, base, label, name).run()
    except ModelLoadError:
        raise
    except GraphpruneError as e:
        raise ModelLoadError(f"{label}: {e}") from None
    if sparse_props:
        _attach_sparsity(graph, sparse_props, label)
    return graph


def _attach_sparsity(graph: Graph, text: str, label: str) -> None:
    """Rebuild the sparsity records graphprune wrote into the model's metadata: the mask comes from the
    weight's zeros (completed to the pattern); a record that does not fit is dropped with a warning."""
    from ..ir.sparsity import Sparsity, mask_from_data, parse_pattern

    try:
        entries = json.loads(text)
        if not isinstance(entries, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        warnings.warn(f"{label}: metadata graphprune.sparsity is not readable ({e}); masks not restored",
                      stacklevel=2)
        return
    consts = {c.name: c for c in graph.constants}
    for name, entry in entries.items():
        v = consts.get(name)
        try:
            p = parse_pattern(str(entry["pattern"]))
            axis, out_axis = int(entry["axis"]), int(entry["out_axis"])
            if v is None:
                raise ValueError("no constant of that name")
            data = np.asarray(v.data)
            rec = Sparsity(str(p), axis, out_axis, mask_from_data(p, data, axis, out_axis))
            found = rec.problems(data, name)
            if found:
                raise ValueError("; ".join(found))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            warnings.warn(f"{label}: sparsity record of {name!r} not restored: {e}", stacklevel=2)
            continue
        graph.set_sparsity(v, rec)
