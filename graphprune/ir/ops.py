"""The closed set of IR ops and their typed attributes.

Frontends translate ATen targets and ONNX op_types into these ops at the import boundary; nothing
past the frontends knows framework op names. An op a frontend cannot translate becomes OPAQUE: it
still runs (the interpreter delegates it to torch or onnxruntime) and blocks pruning across itself.

Conventions shared by every op (the interpreter, the frontends and the backends all rely on them):
- Layout is NC... (channels first) for convolution, pooling, norms with a channel axis and resize.
- Axes in attributes are normalised to non-negative ints by the frontends (rank is always known).
- `pads` lists begin pads for every spatial axis, then end pads (ONNX order).
- Optional inputs are absent from the node's input list (they are trailing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from .types import DType


class Op(enum.Enum):
    # convolution and dense
    CONV = "conv"  # (x, w[OUT, IN/groups, *k], b?[OUT])
    CONV_TRANSPOSE = "conv_transpose"  # (x, w[IN, OUT/groups, *k], b?[OUT])
    LINEAR = "linear"  # (x[..., IN], w[OUT, IN], b?[OUT]) -> x @ w.T + b
    MATMUL = "matmul"  # numpy matmul semantics, batched with broadcasting
    # normalisation
    BATCH_NORM = "batch_norm"  # (x, scale, bias, mean, var), inference form, channel axis 1
    LAYER_NORM = "layer_norm"  # (x, scale?, bias?) over axes [axis, rank)
    GROUP_NORM = "group_norm"  # (x, scale, bias), channel axis 1
    INSTANCE_NORM = "instance_norm"  # (x, scale, bias), channel axis 1
    RMS_NORM = "rms_norm"  # (x, scale?) over axes [axis, rank)
    # unary activations and math
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    PRELU = "prelu"  # (x, slope) slope broadcast along the channel axis (1)
    GELU = "gelu"
    SILU = "silu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    HARD_SWISH = "hard_swish"
    HARD_SIGMOID = "hard_sigmoid"
    CLIP = "clip"
    SOFTMAX = "softmax"
    ERF = "erf"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    NEG = "neg"
    ABS = "abs"
    RECIPROCAL = "reciprocal"
    SIN = "sin"
    COS = "cos"
    # binary elementwise with numpy broadcasting
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    EQUAL = "equal"
    LESS = "less"
    GREATER = "greater"
    WHERE = "where"  # (cond, a, b)
    # data movement
    CONCAT = "concat"
    SPLIT = "split"  # one output per size
    SLICE = "slice"  # one axis per node
    GATHER = "gather"  # (data, indices); embedding is gather on axis 0 of the table
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    SQUEEZE = "squeeze"
    UNSQUEEZE = "unsqueeze"
    EXPAND = "expand"
    PAD = "pad"
    RESIZE = "resize"
    PIXEL_SHUFFLE = "pixel_shuffle"
    PIXEL_UNSHUFFLE = "pixel_unshuffle"
    CAST = "cast"
    # pooling and reduction
    MAX_POOL = "max_pool"
    AVG_POOL = "avg_pool"
    ADAPTIVE_AVG_POOL = "adaptive_avg_pool"
    REDUCE_MEAN = "reduce_mean"
    REDUCE_SUM = "reduce_sum"
    REDUCE_MAX = "reduce_max"
    # attention
    ATTENTION = "attention"  # (q[..., L, E], k[..., S, E], v[..., S, Ev], mask?) scaled dot-product
    # anything else
    OPAQUE = "opaque"


# ---------------------------------------------------------------------------------------------
# Attributes: one frozen dataclass per op that has any. Field order is the text form's order.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoAttrs:
    pass


@dataclass(frozen=True)
class ConvAttrs:
    stride: tuple[int, ...]
    pads: tuple[int, ...]  # begin pads per spatial axis, then end pads
    dilation: tuple[int, ...]
    groups: int = 1


@dataclass(frozen=True)
class ConvTransposeAttrs:
    stride: tuple[int, ...]
    pads: tuple[int, ...]
    dilation: tuple[int, ...]
    output_padding: tuple[int, ...]
    groups: int = 1


@dataclass(frozen=True)
class EpsAttrs:
    """BatchNorm and InstanceNorm (both normalise per channel of axis 1)."""

    eps: float = 1e-5


@dataclass(frozen=True)
class NormAttrs:
    """LayerNorm and RMSNorm: normalise over the axes [axis, rank)."""

    axis: int
    eps: float = 1e-5


@dataclass(frozen=True)
class GroupNormAttrs:
    num_groups: int
    eps: float = 1e-5


@dataclass(frozen=True)
class LeakyReluAttrs:
    alpha: float = 0.01


@dataclass(frozen=True)
class GeluAttrs:
    approximate: str = "none"  # "none" (erf form) or "tanh"


@dataclass(frozen=True)
class HardSigmoidAttrs:
    # ONNX form: max(0, min(1, alpha * x + beta)); torch's hardsigmoid is alpha=1/6, beta=0.5
    alpha: float = 1.0 / 6.0
    beta: float = 0.5


@dataclass(frozen=True)
class ClipAttrs:
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class AxisAttrs:
    """Softmax and Concat."""

    axis: int


@dataclass(frozen=True)
class SplitAttrs:
    axis: int
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class SliceAttrs:
    axis: int
    start: int
    end: int  # exclusive, already clamped to the axis size
    step: int = 1


@dataclass(frozen=True)
class GatherAttrs:
    axis: int


@dataclass(frozen=True)
class ReshapeAttrs:
    # Target shape. 0 copies the input's size at that position (keeps a symbolic batch symbolic),
    # -1 is inferred. Frontends emit static sizes everywhere else.
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TransposeAttrs:
    perm: tuple[int, ...]


@dataclass(frozen=True)
class AxesAttrs:
    """Squeeze, Unsqueeze: axes of the input (squeeze) or of the output (unsqueeze)."""

    axes: tuple[int, ...]


@dataclass(frozen=True)
class ExpandAttrs:
    shape: tuple[int, ...]  # numpy broadcast target; -1 keeps the input's size (torch's expand)


@dataclass(frozen=True)
class PadAttrs:
    pads: tuple[int, ...]  # begin pads for every axis, then end pads (length 2 * rank)
    mode: str = "constant"  # constant | reflect | edge
    value: float = 0.0


@dataclass(frozen=True)
class ResizeAttrs:
    # Output spatial sizes are explicit (static shapes); scales are kept for exact export.
    sizes: tuple[int, ...]  # spatial output sizes (axes 2..)
    scales: tuple[float, ...]  # spatial scales as given by the model (used for coordinate mapping)
    mode: str = "nearest"  # nearest | linear
    # half_pixel | align_corners | asymmetric | pytorch_half_pixel
    coordinate_transformation: str = "asymmetric"
    nearest_mode: str = "floor"  # floor | round_prefer_floor | round_prefer_ceil | ceil


@dataclass(frozen=True)
class FactorAttrs:
    """PixelShuffle (upscale factor) and PixelUnshuffle (downscale factor)."""

    factor: int


@dataclass(frozen=True)
class CastAttrs:
    dtype: DType


@dataclass(frozen=True)
class PoolAttrs:
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False
    count_include_pad: bool = False  # AVG_POOL only


@dataclass(frozen=True)
class AdaptivePoolAttrs:
    output_size: tuple[int, ...]


@dataclass(frozen=True)
class ReduceAttrs:
    axes: tuple[int, ...]
    keepdims: bool = True


@dataclass(frozen=True)
class AttentionAttrs:
    scale: float | None = None  # None: 1 / sqrt(E)
    is_causal: bool = False
    # Grouped-query attention: k and v have fewer heads (axis -3) than q; each kv head serves
    # q_heads / kv_heads consecutive query heads.
    enable_gqa: bool = False


@dataclass(frozen=True)
class OpaqueAttrs:
    """An op the frontend does not know. `source` says who can run it: "torch" (payload: the ATen
    target and its non-tensor arguments as JSON) or "onnx" (payload: the serialized NodeProto,
    base64). `op_name` is the framework's name, for warnings and reports."""

    source: str
    op_name: str
    payload: str


@dataclass(frozen=True)
class OpSpec:
    attrs: type
    min_inputs: int
    max_inputs: int | None  # None: variadic
    num_outputs: int | None = 1  # None: given by the attributes (SPLIT) or the payload (OPAQUE)


_UNARY = OpSpec(NoAttrs, 1, 1)
_BINARY = OpSpec(NoAttrs, 2, 2)

SPECS: dict[Op, OpSpec] = {
    Op.CONV: OpSpec(ConvAttrs, 2, 3),
    Op.CONV_TRANSPOSE: OpSpec(ConvTransposeAttrs, 2, 3),
    Op.LINEAR: OpSpec(NoAttrs, 2, 3),
    Op.MATMUL: _BINARY,
    Op.BATCH_NORM: OpSpec(EpsAttrs, 5, 5),
    Op.LAYER_NORM: OpSpec(NormAttrs, 1, 3),
    Op.GROUP_NORM: OpSpec(GroupNormAttrs, 3, 3),
    Op.INSTANCE_NORM: OpSpec(EpsAttrs, 3, 3),
    Op.RMS_NORM: OpSpec(NormAttrs, 1, 2),
    Op.RELU: _UNARY,
    Op.LEAKY_RELU: OpSpec(LeakyReluAttrs, 1, 1),
    Op.PRELU: _BINARY,
    Op.GELU: OpSpec(GeluAttrs, 1, 1),
    Op.SILU: _UNARY,
    Op.SIGMOID: _UNARY,
    Op.TANH: _UNARY,
    Op.HARD_SWISH: _UNARY,
    Op.HARD_SIGMOID: OpSpec(HardSigmoidAttrs, 1, 1),
    Op.CLIP: OpSpec(ClipAttrs, 1, 1),
    Op.SOFTMAX: OpSpec(AxisAttrs, 1, 1),
    Op.ERF: _UNARY,
    Op.EXP: _UNARY,
    Op.LOG: _UNARY,
    Op.SQRT: _UNARY,
    Op.RSQRT: _UNARY,
    Op.NEG: _UNARY,
    Op.ABS: _UNARY,
    Op.RECIPROCAL: _UNARY,
    Op.SIN: _UNARY,
    Op.COS: _UNARY,
    Op.ADD: _BINARY,
    Op.SUB: _BINARY,
    Op.MUL: _BINARY,
    Op.DIV: _BINARY,
    Op.POW: _BINARY,
    Op.MAXIMUM: _BINARY,
    Op.MINIMUM: _BINARY,
    Op.EQUAL: _BINARY,
    Op.LESS: _BINARY,
    Op.GREATER: _BINARY,
    Op.WHERE: OpSpec(NoAttrs, 3, 3),
    Op.CONCAT: OpSpec(AxisAttrs, 1, None),
    Op.SPLIT: OpSpec(SplitAttrs, 1, 1, None),
    Op.SLICE: OpSpec(SliceAttrs, 1, 1),
    Op.GATHER: OpSpec(GatherAttrs, 2, 2),
    Op.RESHAPE: OpSpec(ReshapeAttrs, 1, 1),
    Op.TRANSPOSE: OpSpec(TransposeAttrs, 1, 1),
    Op.SQUEEZE: OpSpec(AxesAttrs, 1, 1),
    Op.UNSQUEEZE: OpSpec(AxesAttrs, 1, 1),
    Op.EXPAND: OpSpec(ExpandAttrs, 1, 1),
    Op.PAD: OpSpec(PadAttrs, 1, 1),
    Op.RESIZE: OpSpec(ResizeAttrs, 1, 1),
    Op.PIXEL_SHUFFLE: OpSpec(FactorAttrs, 1, 1),
    Op.PIXEL_UNSHUFFLE: OpSpec(FactorAttrs, 1, 1),
    Op.CAST: OpSpec(CastAttrs, 1, 1),
    Op.MAX_POOL: OpSpec(PoolAttrs, 1, 1),
    Op.AVG_POOL: OpSpec(PoolAttrs, 1, 1),
    Op.ADAPTIVE_AVG_POOL: OpSpec(AdaptivePoolAttrs, 1, 1),
    Op.REDUCE_MEAN: OpSpec(ReduceAttrs, 1, 1),
    Op.REDUCE_SUM: OpSpec(ReduceAttrs, 1, 1),
    Op.REDUCE_MAX: OpSpec(ReduceAttrs, 1, 1),
    Op.ATTENTION: OpSpec(AttentionAttrs, 3, 4),
    Op.OPAQUE: OpSpec(OpaqueAttrs, 0, None, None),
}

assert set(SPECS) == set(Op), "every op needs a spec"

UNARY_OPS = frozenset(op for op, spec in SPECS.items() if spec is _UNARY) | {
    Op.LEAKY_RELU,
    Op.GELU,
    Op.HARD_SIGMOID,
    Op.CLIP,
}
BINARY_OPS = frozenset(
    {
        Op.ADD,
        Op.SUB,
        Op.MUL,
        Op.DIV,
        Op.POW,
        Op.MAXIMUM,
        Op.MINIMUM,
        Op.EQUAL,
        Op.LESS,
        Op.GREATER,
    }
)


def attr_fields(attrs: object) -> list[tuple[str, object]]:
    """(name, value) pairs of an attribute dataclass, in declaration order."""
    return [(f.name, getattr(attrs, f.name)) for f in fields(attrs)]  # type: ignore[arg-type]
