"""Sparse weight formats for the cpp runtime, built from the actual zeros of a weight.

All formats describe W[M, K] (a 1x1 convolution's [OUT, IN] or a linear's weight) multiplying
X[K, P] with P pixels (or tokens) as the vector dimension:

- block CSR in the XNNPACK layout (`pack_block`, NB = 1 is plain CSR): per block row a count of
  nonzero blocks, per nonzero block NB weights, and input-channel increments that the kernel scales by
  its input row stride (P in place, the tile width in its contiguous copy of a pixel tile); the last
  increment wraps back.
- N:M (`pack_nm`): every group of M input channels keeps N values, with their positions.

`choose` picks dense or one of these per layer from the measured break-even table (breakeven.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .breakeven import BREAKEVEN


@dataclass(frozen=True)
class BlockCSR:
    nb: int
    counts: np.ndarray  # int32 [M // nb + M % nb]
    incs: np.ndarray  # int32 [nnzb + 1]
    values: np.ndarray  # float32 [nnzb * nb] (leftover rows contribute 1 value per block)
    stored: int  # weights stored (explicit zeros inside kept blocks included)


@dataclass(frozen=True)
class NM:
    n: int
    m: int
    values: np.ndarray  # float32 [M, K // m * n]
    idx: np.ndarray  # uint8 [M, K // m * n]


def pack_block(w: np.ndarray, nb: int) -> BlockCSR:
    """Block CSR of w[M, K] with NB output rows per block; the M % NB leftover rows go one at a time."""
    w = np.asarray(w, dtype=np.float32)
    m_rows = w.shape[0]
    full = m_rows // nb * nb
    cols: list[np.ndarray] = []
    values: list[np.ndarray] = []
    counts: list[int] = []
    groups = [w[r : r + nb] for r in range(0, full, nb)] + [w[r : r + 1] for r in range(full, m_rows)]
    for blk in groups:
        nz = np.flatnonzero(np.any(blk != 0, axis=0))
        counts.append(len(nz))
        cols.append(nz)
        values.append(blk[:, nz].T.reshape(-1))  # per nonzero block: its rows' weights
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    if len(col):
        incs = np.empty(len(col) + 1, dtype=np.int64)
        incs[0] = col[0]
        incs[1:-1] = np.diff(col)
        incs[-1] = col[0] - col[-1]  # wrap: the pointer returns to the first block's row
    else:
        incs = np.zeros(1, np.int64)
    vals = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
    return BlockCSR(nb, np.asarray(counts, np.int32), incs.astype(np.int32), vals, int(vals.size))


def nm_pattern(w: np.ndarray, n: int, m: int) -> bool:
    """Whether every group of m consecutive input channels of w[M, K] holds at most n nonzeros."""
    k = w.shape[1]
    if k % m:
        return False
    return bool(((w.reshape(w.shape[0], k // m, m) != 0).sum(axis=2) <= n).all())


def pack_nm(w: np.ndarray, n: int, m: int) -> NM:
    """N:M values and in-group positions; groups with fewer than n nonzeros keep explicit zeros."""
    w = np.asarray(w, dtype=np.float32)
    rows, k = w.shape
    g = w.reshape(rows, k // m, m)
    # the n largest-magnitude positions per group hold every nonzero (nm_pattern), in ascending order
    order = np.sort(np.argsort(-np.abs(g), axis=2, kind="stable")[:, :, :n], axis=2)
    vals = np.take_along_axis(g, order, axis=2)
    return NM(n, m, vals.reshape(rows, -1).astype(np.float32), order.reshape(rows, -1).astype(np.uint8))


@dataclass(frozen=True)
class Choice:
    fmt: str  # "dense", "csr", "block4", "block8", "nm2:4"
    ratio: float  # predicted time relative to dense (1.0 for dense)
    density: float  # stored weights / all weights of the chosen format


FORMATS = ("csr", "block4", "block8", "nm2:4")


def stored_weights(w: np.ndarray, fmt: str) -> int | None:
    """Weights a format stores for w[M, K] (explicit zeros in kept blocks included); None: not applicable."""
    if fmt == "csr":
        return int(np.count_nonzero(w))
    if fmt.startswith("block"):
        nb = int(fmt[5:])
        full = w.shape[0] // nb * nb
        blocks = int(np.any(w[:full].reshape(-1, nb, w.shape[1]) != 0, axis=1).sum()) * nb
        return blocks + int(np.count_nonzero(w[full:]))
    n, m = map(int, fmt[2:].split(":"))
    return w.size * n // m if nm_pattern(w, n, m) else None


def force(w: np.ndarray, fmt: str) -> Choice:
    """`fmt` wherever it applies (an N:M format needs the pattern), else dense."""
    if fmt not in FORMATS:
        raise ValueError(f"sparse format {fmt!r}: expected auto, off or one of {', '.join(FORMATS)}")
    stored = stored_weights(np.asarray(w), fmt)
    return Choice("dense", 1.0, 1.0) if stored is None or w.size == 0 else Choice(fmt, 1.0, stored / w.size)


def _predicted(fmt: str, density: float, table: dict[str, float]) -> float:
    """Time relative to dense: sparse time grows linearly with the stored weights and equals dense
    at the measured break-even sparsity."""
    be = table.get(fmt)
    if be is None or be >= 1.0:
        return float("inf")
    return density / (1.0 - be)


def choose(w: np.ndarray, pixels: int, isa: str, allow: tuple[str, ...] = FORMATS) -> Choice:
    """Dense or the sparse format predicted fastest for w[M, K] on `pixels` columns, on this ISA."""
    w = np.asarray(w)
    table = BREAKEVEN[isa]
    total = w.size
    best = Choice("dense", 1.0, 1.0)
    if total == 0 or pixels < table["min_pixels"]:
        return best
    for fmt in allow:
        stored = stored_weights(w, fmt)
        if stored is None:
            continue
        density = stored / total
        ratio = _predicted(fmt, density, table)
        if ratio < best.ratio:
            best = Choice(fmt, ratio, density)
    return best
