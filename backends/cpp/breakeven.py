"""Measured break-even sparsity per ISA: the fraction of zero (stored) weights at which each sparse
kernel of cpp/ takes as long as the dense GEMM on the same 1x1 layer (256x256, 56x56 pixels).

Measured with `python benchmarks/bench_cpp.py --breakeven` (see benchmarks/RESULTS.md); a value of
1.0 means the format never beat dense there. min_pixels: below this many pixels (tokens) a layer stays
dense, since pixels are the vector dimension of the sparse kernels.
"""

from __future__ import annotations

BREAKEVEN: dict[str, dict[str, float]] = {
    # measured here (Xeon, AVX-512, one thread; benchmarks/RESULTS.md); block sparsity of 0.30 is the lowest
    # level measured: the block kernels were already faster than dense there
    "avx512": {"csr": 0.54, "block4": 0.30, "block8": 0.31, "nm2:4": 1.0, "min_pixels": 16},
    # wasm32 in node on the same machine (noisier: two rounds)
    "wasm-simd128": {"csr": 0.30, "block4": 0.30, "block8": 0.31, "nm2:4": 1.0, "min_pixels": 16},
    # Not measured, and said so: AVX2 hosts take the AVX-512 row; aarch64 timings under qemu are
    # meaningless, so NEON takes XNNPACK's published ARM rule (more than 2/3 zeros); the scalar
    # path (-DGPRT_SCALAR, built by hand only) takes the same rule.
    "avx2": {"csr": 0.54, "block4": 0.30, "block8": 0.31, "nm2:4": 1.0, "min_pixels": 16},
    "neon": {"csr": 2 / 3, "block4": 2 / 3, "block8": 2 / 3, "nm2:4": 1.0, "min_pixels": 16},
    "scalar": {"csr": 2 / 3, "block4": 2 / 3, "block8": 2 / 3, "nm2:4": 1.0, "min_pixels": 4},
}
