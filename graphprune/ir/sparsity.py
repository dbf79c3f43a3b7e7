"""Sparsity records: the keep mask of a weight, with the pattern it follows, as IR data.

A constant may carry a `Sparsity` record (`Value.sparsity`): the pattern text, the boolean keep mask
(same shape as the weight), the weight's reduction axis (the axis a layer sums over: a conv's or
linear's input channels) and its output axis. The data is zero wherever the mask is False; a kept
element may be zero too. Backends read the record (ONNX exports the zeros; packed formats read the
mask, which always has the pattern's exact structure).

Patterns (`parse_pattern`):

- ``"N:M"`` (0 < N < M): along the reduction axis, every run of M consecutive elements at each
  position of the other axes keeps exactly N. For a conv weight [O, I/g, kh, kw] a group is M
  consecutive input channels of one (o, kh, kw), as in NVIDIA ASP. The axis length must divide by M.
- ``"block:RxC"``: blocks of R output channels x C reduction elements (at each position of the other
  axes, a conv's kernel taps) are kept or dropped whole. Both lengths must divide by the block.
- ``"unstructured"``: any mask.

When a rewrite moves or slices a masked weight (channel pruning, channel permutation), it moves the
mask the same way with `Sparsity.reindexed`; a mask that no longer has its pattern's structure
(input channels pruned out of a 2:4 group) is recorded as ``unstructured``: the zeros stay true.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

import numpy as np

from .errors import GraphError

_NM = re.compile(r"^(\d+):(\d+)$")
_BLOCK = re.compile(r"^block:(\d+)x(\d+)$")


@dataclass(frozen=True)
class Pattern:
    kind: str  # "nm", "block" or "unstructured"
    n: int = 0  # N:M: kept per group
    m: int = 0  # N:M: group length along the reduction axis
    rows: int = 1  # block: output channels per block
    cols: int = 1  # block: reduction elements per block

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.rows}x{self.cols}"
        return "unstructured"

    @property
    def density(self) -> float | None:
        """The kept fraction the pattern fixes (N/M), or None when a target sparsity sets it."""
        return self.n / self.m if self.kind == "nm" else None


def parse_pattern(text: str) -> Pattern:
    """Read "N:M", "block:RxC" or "unstructured"; ValueError saying what is expected otherwise."""
    t = text.strip().lower()
    if t == "unstructured":
        return Pattern("unstructured")
    if m := _NM.match(t):
        n, mm = int(m.group(1)), int(m.group(2))
        if not 0 < n < mm:
            raise ValueError(f"sparsity pattern {text!r}: N:M needs 0 < N < M (for example 2:4)")
        return Pattern("nm", n=n, m=mm)
    if m := _BLOCK.match(t):
        r, c = int(m.group(1)), int(m.group(2))
        if r < 1 or c < 1 or r * c == 1:
            raise ValueError(f"sparsity pattern {text!r}: a block needs at least 2 elements (for example block:4x1)")
        return Pattern("block", rows=r, cols=c)
    raise ValueError(f"unknown sparsity pattern {text!r}; expected N:M (2:4), block:RxC (block:4x1) or unstructured")


def to_matrix(arr: np.ndarray, axis: int, out_axis: int) -> np.ndarray:
    """The array as [other axes..., out, reduction] (a view): the layout every pattern is defined on."""
    return np.moveaxis(arr, (out_axis, axis), (-2, -1))


def from_matrix(mat: np.ndarray, axis: int, out_axis: int) -> np.ndarray:
    return np.moveaxis(mat, (-2, -1), (out_axis, axis))


def fit_problem(p: Pattern, shape: tuple[int, ...], axis: int, out_axis: int) -> str | None:
    """Why a weight of `shape` cannot take the pattern (None when it can)."""
    red, out = shape[axis], shape[out_axis]
    if p.kind == "nm" and red % p.m:
        return f"its reduction axis has {red} elements, not a multiple of {p.m}"
    if p.kind == "block" and (out % p.rows or red % p.cols):
        return f"its {out} outputs x {red} reduction elements do not tile into {p.rows}x{p.cols} blocks"
    return None


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(pack_bits(mask).encode()).hexdigest()[:16]


def pack_bits(mask: np.ndarray) -> str:
    return np.packbits(np.asarray(mask, bool).reshape(-1)).tobytes().hex()


def unpack_bits(text: str, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    raw = np.frombuffer(bytes.fromhex(text), np.uint8)
    if raw.size * 8 < size or raw.size > (size + 7) // 8:
        raise ValueError(f"{raw.size} bytes of mask bits do not fit shape {shape}")
    return np.unpackbits(raw, count=size).astype(bool).reshape(shape)


@dataclass(frozen=True, eq=False)
class Sparsity:
    pattern: str  # canonical text of the Pattern
    axis: int  # reduction axis of the weight
    out_axis: int  # output-channel axis of the weight
    mask: np.ndarray | None  # bool keep mask, the weight's shape; None only while the weight has no data
    digest: str | None = None  # the mask's digest when the mask itself is not present (elided text)

    def __post_init__(self) -> None:
        if self.mask is not None:
            m = np.asarray(self.mask, bool)
            if m.flags.writeable:
                m = m.copy()
                m.flags.writeable = False
            object.__setattr__(self, "mask", m)

    @property
    def parsed(self) -> Pattern:
        return parse_pattern(self.pattern)

    def mask_digest(self) -> str:
        return mask_digest(self.mask) if self.mask is not None else (self.digest or "")

    def density(self) -> float:
        return float(self.mask.mean()) if self.mask is not None and self.mask.size else 1.0

    def structure_problem(self, mask: np.ndarray) -> str | None:
        """Why `mask` does not have the pattern's structure (None when it has)."""
        p = self.parsed
        if p.kind == "unstructured":
            return None
        fit = fit_problem(p, mask.shape, self.axis, self.out_axis)
        if fit is not None:
            return fit
        mat = to_matrix(mask, self.axis, self.out_axis)
        if p.kind == "nm":
            counts = mat.reshape(*mat.shape[:-1], -1, p.m).sum(-1)
            if np.any(counts != p.n):
                bad = np.argwhere(counts != p.n)[0]
                return f"a group of {p.m} keeps {int(counts[tuple(bad)])} elements, not {p.n} (group index {list(bad)})"
            return None
        blocks = block_view(mat, p)
        mixed = blocks.any(axis=(-3, -1)) & ~blocks.all(axis=(-3, -1))
        if mixed.any():
            return f"{int(mixed.sum())} block(s) of {p.rows}x{p.cols} are partly kept"
        return None

    def problems(self, data: np.ndarray | None, name: str) -> list[str]:
        """What is wrong with this record on constant `name` holding `data` (empty when nothing)."""
        out: list[str] = []
        where = f"constant %{name} (sparsity {self.pattern})"
        try:
            parse_pattern(self.pattern)
        except ValueError as e:
            return [f"{where}: {e}"]
        if self.mask is None or data is None:
            return out
        if not (0 <= self.axis < data.ndim and 0 <= self.out_axis < data.ndim and self.axis != self.out_axis):
            return [f"{where}: axes {self.axis} (reduction) and {self.out_axis} (output) do not fit a weight of "
                    f"rank {data.ndim}; give two different axes of the weight"]
        if self.mask.shape != data.shape:
            return [f"{where}: mask shape {self.mask.shape} differs from the data's {data.shape}; a rewrite that "
                    "moved or sliced the data must move the mask the same way (Sparsity.reindexed)"]
        nonzero = np.count_nonzero(np.asarray(data)[~self.mask])
        if nonzero:
            out.append(f"{where}: {nonzero} element(s) outside the mask are not zero; multiply the data by the mask")
        problem = self.structure_problem(self.mask)
        if problem is not None:
            out.append(f"{where}: the mask does not follow the pattern: {problem}")
        return out

    def reindexed(self, mask: np.ndarray) -> Sparsity:
        """The record for a moved or sliced copy of the weight: the same pattern when `mask` still has
        its structure, else unstructured (the zeros are what stays true)."""
        moved = replace(self, mask=np.asarray(mask, bool), digest=None)
        if moved.structure_problem(moved.mask) is None:  # type: ignore[arg-type]
            return moved
        return replace(moved, pattern="unstructured")


def nm_keep(score: np.ndarray, p: Pattern, axis: int, out_axis: int) -> np.ndarray:
    """The N:M mask keeping the N highest scores of every group of M along the reduction axis
    (earlier positions first among equals)."""
    mat = to_matrix(score, axis, out_axis)
    groups = mat.reshape(*mat.shape[:-1], -1, p.m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., : p.n], True, axis=-1)
    return from_matrix(keep.reshape(mat.shape), axis, out_axis)


def mask_from_data(p: Pattern, data: np.ndarray, axis: int, out_axis: int) -> np.ndarray:
    """The mask of the pattern that a weight's zeros imply: its nonzeros, completed to the pattern's
    structure (N:M: the N largest of each group, earlier positions first among equals; blocks: every
    block holding a nonzero). A record whose kept elements are all nonzero is recovered exactly."""
    nonzero = np.asarray(data) != 0
    if p.kind == "unstructured":
        return nonzero
    if p.kind == "nm":
        return nm_keep(np.abs(np.asarray(data, np.float64)), p, axis, out_axis)
    blocks = block_view(to_matrix(nonzero, axis, out_axis), p).any(axis=(-3, -1))
    return expand_blocks(blocks, p, axis, out_axis)


def block_view(mat: np.ndarray, p: Pattern) -> np.ndarray:
    """[..., out, reduction] as [..., out blocks, rows, reduction blocks, cols]."""
    o, r = mat.shape[-2], mat.shape[-1]
    return mat.reshape(*mat.shape[:-2], o // p.rows, p.rows, r // p.cols, p.cols)


def expand_blocks(keep: np.ndarray, p: Pattern, axis: int, out_axis: int) -> np.ndarray:
    """A per-block mask [..., out blocks, reduction blocks] as an element mask in the weight's layout."""
    full = np.repeat(np.repeat(keep, p.rows, axis=-2), p.cols, axis=-1)
    return from_matrix(full, axis, out_axis)


def check_record(record: Sparsity, data: np.ndarray, name: str) -> None:
    found = record.problems(data, name)
    if found:
        raise GraphError("; ".join(found))
