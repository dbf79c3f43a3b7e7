"""Tensor types of the IR: dtype, shape (static ints or named symbolic dims) and channel axis."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

# A dimension is a static size or a named symbol (for example the batch dimension "N").
Dim = int | str


class DType(enum.Enum):
    F32 = "f32"
    F64 = "f64"
    F16 = "f16"
    I64 = "i64"
    I32 = "i32"
    I8 = "i8"
    U8 = "u8"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(_TO_NUMPY[self])

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F64, DType.F16)

    @staticmethod
    def from_numpy(dtype: np.dtype | type) -> DType:
        key = np.dtype(dtype)  # looked up by dtype object: numpy's .name is slow on a hot path
        if key not in _FROM_NUMPY:
            known = sorted(_TO_NUMPY.values())
            raise TypeError(f"numpy dtype {key.name!r} has no graphprune DType; expected one of {known}")
        return _FROM_NUMPY[key]


_TO_NUMPY = {
    DType.F32: "float32",
    DType.F64: "float64",
    DType.F16: "float16",
    DType.I64: "int64",
    DType.I32: "int32",
    DType.I8: "int8",
    DType.U8: "uint8",
    DType.BOOL: "bool",
}
_FROM_NUMPY = {np.dtype(v): k for k, v in _TO_NUMPY.items()}


class AxisRole(enum.Enum):
    """What an axis of a weight means to the op that reads it.

    OUT and IN are the axes channel pruning shrinks; SPATIAL axes are kernel extents; CHANNEL is the
    single axis of a per-channel parameter (norm scale, bias, PReLU slope); INDEX is an axis that is
    addressed by data (the vocabulary axis of an embedding); OTHER is any axis with no channel meaning.
    """

    OUT = "out"
    IN = "in"
    SPATIAL = "s"
    CHANNEL = "c"
    INDEX = "idx"
    OTHER = "o"


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Dim, ...]
    # The axis that carries channels (features) for this tensor, or None when it has none (scalars,
    # index tensors). Set by type inference: 1 for NCHW activations, the last axis for token features.
    channel_axis: int | None = None

    def __post_init__(self) -> None:
        if self.channel_axis is not None and not 0 <= self.channel_axis < max(len(self.shape), 1):
            raise ValueError(f"channel axis {self.channel_axis} is out of range for shape {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int:
        """Number of elements; symbolic dims count as 1 (per-sample size)."""
        n = 1
        for d in self.shape:
            if isinstance(d, int):
                n *= d
        return n

    @property
    def channels(self) -> Dim | None:
        return None if self.channel_axis is None else self.shape[self.channel_axis]

    def with_shape(self, shape: tuple[Dim, ...], channel_axis: int | None = None) -> TensorType:
        return TensorType(self.dtype, shape, channel_axis)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        text = f"{self.dtype.value}[{dims}]"
        if self.channel_axis is not None:
            text += f"c{self.channel_axis}"
        return text


def concrete_shape(shape: tuple[Dim, ...], bindings: dict[str, int]) -> tuple[int, ...]:
    """Replace symbolic dims by their bound sizes."""
    out = []
    for d in shape:
        if isinstance(d, str):
            if d not in bindings:
                raise KeyError(f"symbolic dimension {d!r} is not bound")
            out.append(bindings[d])
        else:
            out.append(d)
    return tuple(out)
