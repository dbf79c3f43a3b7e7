"""Measured break-even sparsity per ISA: the fraction of zero (stored) weights at which each sparse
kernel of cpp/ takes as long as the dense GEMM on the same 1x1 layer (256x256, 56x56 pixels).

Measured with `python benchmarks/bench_cpp.py --breakeven` (see benchmarks/RESULTS.md); a value of
1.0 means the format never beat dense there. min_pixels: below this many pixels (tokens) a layer stays
dense, since pixels are the vector dimension of the sparse kernels.
"""

from __future__ import annotations

BREAKEVEN: dict[str, dict[str, float]] = {
    "avx512": {"csr": 0.56, "block4": 0.2, "block8": 0.2, "nm2:4": 1.0, "min_pixels": 16},
    "avx2": {"csr": 0.56, "block4": 0.2, "block8": 0.2, "nm2:4": 1.0, "min_pixels": 16},
    "wasm-simd128": {"csr": 0.56, "block4": 0.2, "block8": 0.2, "nm2:4": 1.0, "min_pixels": 16},
    # aarch64 timings under qemu are meaningless: XNNPACK's published ARM rule (> 2/3 zeros) instead
    "neon": {"csr": 2 / 3, "block4": 2 / 3, "block8": 2 / 3, "nm2:4": 1.0, "min_pixels": 16},
    "scalar": {"csr": 0.5, "block4": 0.5, "block8": 0.5, "nm2:4": 1.0, "min_pixels": 4},
}
