"""Measured break-even sparsity per ISA: the fraction of zero (stored) weights at which each sparse
kernel of cpp/ takes as long as the dense GEMM on the same 1x1 layer (256x256, 56x56 pixels).

Measured with `python benchmarks/bench_cpp.py` (its break-even section, see benchmarks/RESULTS.md); a
value of 1.0 would mean the format never beat dense there. 2:4 has one point (half the weights stored):
it was faster than dense there, so its entry is that point, and the linear model of `packing.choose`
then predicts it no faster than dense, so "auto" keeps such layers dense (a forced nm2:4 uses it).
min_pixels: below this many pixels (tokens) a layer stays dense, since pixels are the vector dimension
of the sparse kernels.
"""

from __future__ import annotations

BREAKEVEN: dict[str, dict[str, float]] = {
    # measured here (Xeon, AVX-512, one thread; benchmarks/RESULTS.md); block sparsity of 0.30 is the lowest
    # level measured: the block kernels (and on wasm32 CSR) were already faster than dense there
    "avx512": {"csr": 0.468, "block4": 0.303, "block8": 0.306, "nm2:4": 0.5, "min_pixels": 16},
    # wasm32 in node on the same machine (noisier: two rounds)
    "wasm-simd128": {"csr": 0.299, "block4": 0.303, "block8": 0.306, "nm2:4": 0.5, "min_pixels": 16},
    # Not measured, and said so: AVX2 hosts take the AVX-512 row; aarch64 timings under qemu are
    # meaningless, so NEON takes XNNPACK's published ARM rule (more than 2/3 zeros); the scalar
    # path (-DGPRT_SCALAR, built by hand only) takes the same rule.
    "avx2": {"csr": 0.468, "block4": 0.303, "block8": 0.306, "nm2:4": 0.5, "min_pixels": 16},
    "neon": {"csr": 2 / 3, "block4": 2 / 3, "block8": 2 / 3, "nm2:4": 1.0, "min_pixels": 16},
    "scalar": {"csr": 2 / 3, "block4": 2 / 3, "block8": 2 / 3, "nm2:4": 1.0, "min_pixels": 4},
}
