// Sparse 1x1 convolution / linear as SpMM with pixels as the vector dimension (the XNNPACK design):
// for every tile of pixels, walk the packed nonzeros once, advancing the input pointer by stored
// input-channel increments times the row stride (a shift in the copied tile), broadcast each weight
// and FMA it into vector accumulators.
// NB output rows per block share one input load per nonzero block (4x1 / 8x1 block sparsity).
#include <algorithm>
#include <cstring>

#include "gprt/gprt.h"
#include "gprt/vec.h"

namespace gprt {

// Accumulator budget per ISA (vector registers left after the inputs): 16 on AVX-512, NEON and the
// scalar path, 8 on AVX2 and on wasm (whose x86 hosts have 16 xmm registers).
#if GPRT_VW == 16 || defined(__aarch64__) || GPRT_VW == 1
constexpr int ACC = 16;
#else
constexpr int ACC = 8;
#endif
// Plain CSR reuses nothing across rows, so it takes wider pixel tiles (MR = 64 on AVX-512, 32 elsewhere).
constexpr int csr_tv() { return VW == 16 ? 4 : (VW == 8 ? 4 : 8); }
constexpr int block_tv(int nb) { return nb == 1 ? csr_tv() : (ACC / nb > 0 ? ACC / nb : 1); }

struct Stream {
    int64_t ldx;        // input row stride: P in place, the tile width in the copied tile
    const float* x;     // input pointer (already advanced by the stream)
    const int32_t* inc;  // next increment
    const float* w;      // next NB weights
    const int32_t* cnt;  // next block row's count
    // the next pixel tile's input rows, prefetched a few per block row while this tile is walked: the
    // copy of a tile reads K rows P floats apart, which the hardware prefetchers do not follow
    const float* pf;
    int64_t pf_left, pf_per_row, pf_stride, pf_width;
};

static inline void prefetch_next(Stream& s) {
    for (int64_t i = 0; i < s.pf_per_row && s.pf_left > 0; i++, s.pf_left--, s.pf += s.pf_stride)
        for (int64_t l = 0; l < s.pf_width; l += 16) __builtin_prefetch(s.pf + l, 0, 2);
}

// U independent accumulator sets take alternate nonzero blocks: an FMA's latency (4 cycles, 2 per
// cycle) needs 8 independent chains, and NB * TV alone gives fewer for plain CSR.
// nvalid: the tile's pixels that exist (the last tile of a layer is zero-padded; only those are stored).
template <int NB, int TV, int LDX>
static void block_rows(int64_t nrows, int64_t row0, int64_t P, Stream& s, const float* bias, float* y, Act act,
                       bool clamp, int64_t nvalid = TV * VW) {
    const int64_t ldx = LDX ? LDX : s.ldx;  // compile-time in the copied tile: a shift, not a multiply
    constexpr int U = NB * TV >= 8 ? 1 : (NB * TV >= 4 ? 2 : 4);
    for (int64_t r = 0; r < nrows; r++) {
        int64_t row = row0 + r * NB;
        prefetch_next(s);
        vf acc[U][NB][TV];
        GPRT_UNROLL
        for (int i = 0; i < NB; i++) {
            vf b = vbcast(bias ? bias[row + i] : 0.f);
            GPRT_UNROLL
            for (int t = 0; t < TV; t++) {
                acc[0][i][t] = b;
                GPRT_UNROLL
                for (int u = 1; u < U; u++) acc[u][i][t] = vf{};
            }
        }
        int32_t n = *s.cnt++;
        const float* xp = s.x;
        const int32_t* inc = s.inc;
        const float* w = s.w;
        int32_t j = 0;
        for (; j + U <= n; j += U) {
            GPRT_UNROLL
            for (int u = 0; u < U; u++) {
                vf xv[TV];
                GPRT_UNROLL
                for (int t = 0; t < TV; t++) xv[t] = vload(xp + t * VW);
                xp += inc[u] * ldx;
                GPRT_UNROLL
                for (int i = 0; i < NB; i++) {
                    vf wv = vbcast(w[u * NB + i]);
                    GPRT_UNROLL
                    for (int t = 0; t < TV; t++) acc[u][i][t] += wv * xv[t];
                }
            }
            inc += U;
            w += U * NB;
        }
        for (; j < n; j++) {
            vf xv[TV];
            GPRT_UNROLL
            for (int t = 0; t < TV; t++) xv[t] = vload(xp + t * VW);
            xp += *inc++ * ldx;
            GPRT_UNROLL
            for (int i = 0; i < NB; i++) {
                vf wv = vbcast(w[i]);
                GPRT_UNROLL
                for (int t = 0; t < TV; t++) acc[0][i][t] += wv * xv[t];
            }
            w += NB;
        }
        s.x = xp;
        s.inc = inc;
        s.w = w;
        GPRT_UNROLL
        for (int i = 0; i < NB; i++) {
            GPRT_UNROLL
            for (int t = 0; t < TV; t++) {
                vf a = acc[0][i][t];
                GPRT_UNROLL
                for (int u = 1; u < U; u++) a += acc[u][i][t];
                if (clamp) a = vclamp(a, act.lo, act.hi);
                if ((t + 1) * VW <= nvalid)
                    vstore(y + (row + i) * P + t * VW, a);
                else if (t * VW < nvalid)
                    vstore_part(y + (row + i) * P + t * VW, a, nvalid - t * VW);
            }
        }
    }
}

// Fewer than VW pixels left: the same walk, one pixel at a time.
static void tail_rows(int nb, int64_t nrows, int64_t row0, int64_t P, int64_t npix, Stream& s, const float* bias,
                      float* y, Act act) {
    for (int64_t r = 0; r < nrows; r++) {
        int64_t row = row0 + r * nb;
        float acc[8][VW];
        for (int i = 0; i < nb; i++)
            for (int64_t t = 0; t < npix; t++) acc[i][t] = bias ? bias[row + i] : 0.f;
        int32_t n = *s.cnt++;
        for (int32_t j = 0; j < n; j++) {
            for (int i = 0; i < nb; i++)
                for (int64_t t = 0; t < npix; t++) acc[i][t] += s.w[i] * s.x[t];
            s.x += *s.inc++ * s.ldx;
            s.w += nb;
        }
        for (int i = 0; i < nb; i++)
            for (int64_t t = 0; t < npix; t++) y[(row + i) * P + t] = std::min(std::max(acc[i][t], act.lo), act.hi);
    }
}

// A worker's share of the output rows: block rows [b0, b1), then the M % NB single rows if `tail`, and
// where its stream starts (the nonzero blocks before b0, and the input channel the pointer is then at).
struct RowRange {
    int64_t b0, b1;
    bool tail;
    int64_t nz, chan;
};

static RowRange row_range(int64_t nbr, int parts, int part, const int32_t* counts, const int32_t* incs) {
    RowRange r{nbr * part / parts, nbr * (part + 1) / parts, part == parts - 1, 0, 0};
    for (int64_t i = 0; i < r.b0; i++) r.nz += counts[i];
    for (int64_t j = 0; j <= r.nz; j++) r.chan += incs[j];  // incs[0]: the first nonzero's channel
    return r;
}

// P: the output row stride here; pf_stride: the input row stride of the prefetched next tile. A
// residual is added once the tile's rows are computed, then the activation (inside the kernels'
// epilogue it grew every variant by a quarter).
template <int NB, int TV, int LDX>
static void spmm_tile(const RowRange& r, int64_t M, int64_t P, int64_t npix, const int32_t* counts,
                      const int32_t* incs, const float* values, const float* bias, const float* x, int64_t ldx,
                      const float* res, float* y, Act act, const float* pf, int64_t K, int64_t pf_stride) {
    const int64_t nbr = r.b1 - r.b0, ntail = r.tail ? M % NB : 0, row0 = r.b0 * NB, trow0 = M / NB * NB;
    const int64_t nrows = nbr + ntail;
    Stream s{ldx, x + r.chan * ldx, incs + 1 + r.nz, values + r.nz * NB, counts + r.b0, pf, pf ? K : 0,
             (K + nrows) / (nrows + 1), pf_stride, TV * VW};
    const Act kernel_act = res ? kNoAct : act;
    const bool clamp = kernel_act.lo != -kInf || kernel_act.hi != kInf;
    if (LDX && npix <= VW && TV > 1) {  // a copied last tile of one vector (14 x 14: 196 = 3 * 64 + 4)
        block_rows<NB, 1, 0>(nbr, row0, P, s, bias, y, kernel_act, clamp, npix);
        block_rows<1, 1, 0>(ntail, trow0, P, s, bias, y, kernel_act, clamp, npix);
    } else if (LDX) {  // a copied tile, zero-padded past npix
        block_rows<NB, TV, LDX>(nbr, row0, P, s, bias, y, kernel_act, clamp, npix);
        block_rows<1, TV, LDX>(ntail, trow0, P, s, bias, y, kernel_act, clamp, npix);
    } else if (npix == TV * VW) {
        block_rows<NB, TV, LDX>(nbr, row0, P, s, bias, y, kernel_act, clamp);
        block_rows<1, TV, LDX>(ntail, trow0, P, s, bias, y, kernel_act, clamp);
    } else if (npix == VW) {
        block_rows<NB, 1, LDX>(nbr, row0, P, s, bias, y, kernel_act, clamp);
        block_rows<1, 1, LDX>(ntail, trow0, P, s, bias, y, kernel_act, clamp);
    } else {
        tail_rows(NB, nbr, row0, P, npix, s, bias, y, kernel_act);
        tail_rows(1, ntail, trow0, P, npix, s, bias, y, kernel_act);
    }
    if (res) {
        add_residual(nbr * NB, P, npix, res + row0 * P, y + row0 * P, act);
        add_residual(ntail, P, npix, res + trow0 * P, y + trow0 * P, act);
    }
}

// Every pixel tile is first copied into a contiguous stack buffer of K x T floats when K is at most
// SPMM_KMAX and the tile's input rows are read SPMM_REUSE times or more: read in place, input rows P
// floats apart fall into a few L1 sets (P = 3136 puts every 16th row on the same 4 KB offset) and evict
// each other while the nonzeros of every output row walk them. The last tile of a layer is zero-padded
// there, so it runs the full-tile kernel (or the one-vector kernel) and stores only its pixels.
// Measured on 256 channels: 64-pixel tiles (64 KB, in L2) beat 32-pixel ones that fit L1 (0.61 against
// 0.80 ms for CSR at 90%) and 128-pixel ones (0.75 ms): the per-row setup and the FMAs per loaded weight
// weigh more than L1 misses. A project layer (few outputs: 96 -> 16 at 80% has 0.8 blocks per input row)
// reads each row about once, and the copy cost more than the FMAs: in place, MobileNetV2's 28 x 28
// projects went 9.7 -> 3.8 us and the whole pruned model 1.01 -> 0.95 ms (a threshold of 1: 0.97, 2 and
// 4: 0.95; 3 also takes the 14 x 14 projects, 2.4 blocks per row, in place: 14.5 -> 13.1 us).
constexpr int64_t SPMM_KMAX = 512;
constexpr int64_t SPMM_REUSE = 3;

template <int NB, int TV>
static void spmm_tv(Pool* pool, int64_t M, int64_t K, int64_t P, const int32_t* counts, const int32_t* incs,
                    const float* values, const float* bias, const float* x, int64_t ldx, float* y, int64_t ldy,
                    Act act, const float* res) {
    constexpr int64_t T = TV * VW;
    int64_t blocks = 0;  // nonzero blocks: each copied input row is read blocks / K times per tile
    for (int64_t i = 0; i < M / NB; i++) blocks += counts[i];
    const bool copy = K <= SPMM_KMAX && (blocks >= SPMM_REUSE * K || P < T);
    int64_t full = P / T;
    // in place, the pieces after the full tiles: one-vector tiles, then fewer than VW pixels (copied into
    // the zero-padded tile when K allows it, else one pixel at a time)
    int64_t rest = P - full * T, vecs = copy ? 0 : rest / VW, tail = copy ? rest : rest % VW;
    int64_t units = full + vecs + (tail ? 1 : 0);
    // Workers split the pixel tiles (bands), or the output rows (channels) where the layer expands (at
    // least twice as many outputs as inputs) on a plane too small for bands, as the depthwise layer after
    // an expand then splits its channels (see split_in_bands), or where there are too few tiles to share.
    // Split by rows, every worker copies every tile: little work when K is small (a 256 x 256 layer split
    // by rows took 0.84 ms on two threads, by tiles 0.66).
    const int workers = pool_size(pool);
    const bool by_rows = workers > 1 && M / NB >= workers &&
                         ((M >= 2 * K && !split_in_bands(P, workers)) || units < 2 * workers);
    parallel_for(pool, by_rows ? workers : units, [&](int64_t pb, int64_t pe, int) {
        alignas(64) float tile[SPMM_KMAX * T];
        auto run = [&](const RowRange& rows, int64_t u) {  // tile u for the output rows `rows`
            int64_t off, npix;
            if (u < full) {
                off = u * T;
                npix = T;
            } else if (u < full + vecs) {
                off = full * T + (u - full) * VW;
                npix = VW;
            } else {
                off = full * T + vecs * VW;
                npix = tail;
            }
            const float* r = res ? res + off : nullptr;
            if (!copy && !(npix < VW && K <= SPMM_KMAX)) {
                spmm_tile<NB, TV, 0>(rows, M, ldy, npix, counts, incs, values, bias, x + off, ldx, r, y + off, act,
                                     nullptr, 0, 0);
                return;
            }
            const float* src = x + off;
            if (npix == T) {
                for (int64_t k = 0; k < K; k++) {
                    GPRT_UNROLL
                    for (int t = 0; t < TV; t++) vstore(tile + k * T + t * VW, vload(src + k * ldx + t * VW));
                }
            } else {  // zero-padded to the vectors the kernel reads (one, or the whole tile)
                const int64_t width = npix <= VW ? VW : T;
                for (int64_t k = 0; k < K; k++)
                    for (int64_t t = 0; t < width; t += VW) {
                        const float* p = src + k * ldx + t;
                        const int64_t n = std::max<int64_t>(0, npix - t);
                        vstore(tile + k * T + t, n >= VW ? vload(p) : vload_part(p, n));
                    }
            }
            const float* next = u + 1 < full ? src + T : nullptr;
            spmm_tile<NB, TV, T>(rows, M, ldy, npix, counts, incs, values, bias, tile, T, r, y + off, act, next, K,
                                 ldx);
        };
        // by rows: row parts [pb, pe) over every tile; else every row over tiles [pb, pe) (one loop, so
        // the kernels are inlined once)
        const int64_t p0 = by_rows ? pb : 0, p1 = by_rows ? pe : 1, u0 = by_rows ? 0 : pb, u1 = by_rows ? units : pe;
        for (int64_t part = p0; part < p1; part++) {
            const RowRange rows = row_range(M / NB, by_rows ? workers : 1, (int)part, counts, incs);
            for (int64_t u = u0; u < u1; u++) run(rows, u);
        }
    });
}

template <int NB>
static void spmm_nb(Pool* pool, int64_t M, int64_t K, int64_t P, const int32_t* counts, const int32_t* incs,
                    const float* values, const float* bias, const float* x, int64_t ldx, float* y, int64_t ldy,
                    Act act, const float* res) {
    spmm_tv<NB, block_tv(NB)>(pool, M, K, P, counts, incs, values, bias, x, ldx, y, ldy, act, res);
}

void spmm_block_strided(Pool* pool, int nb, int64_t M, int64_t K, int64_t P, const int32_t* counts,
                        const int32_t* incs, const float* values, const float* bias, const float* x, int64_t ldx,
                        float* y, int64_t ldy, Act act, const float* res) {
    switch (nb) {
        case 1: spmm_nb<1>(pool, M, K, P, counts, incs, values, bias, x, ldx, y, ldy, act, res); break;
        case 2: spmm_nb<2>(pool, M, K, P, counts, incs, values, bias, x, ldx, y, ldy, act, res); break;
        case 4: spmm_nb<4>(pool, M, K, P, counts, incs, values, bias, x, ldx, y, ldy, act, res); break;
        case 8: spmm_nb<8>(pool, M, K, P, counts, incs, values, bias, x, ldx, y, ldy, act, res); break;
        default: __builtin_trap();  // the code generator only emits 1, 2, 4 and 8
    }
}

void spmm_block(Pool* pool, int nb, int64_t M, int64_t K, int64_t P, const int32_t* counts, const int32_t* incs,
                const float* values, const float* bias, const float* x, float* y, Act act, const float* res) {
    spmm_block_strided(pool, nb, M, K, P, counts, incs, values, bias, x, P, y, P, act, res);
}

// ---- N:M ----

// N and M are compile-time so the group loop unrolls and the positions index the group's rows directly.
// R output rows at a time over a tile of TV vectors: R * TV independent accumulators keep both FMA
// pipes busy. The tile's input rows are first copied into a contiguous stack buffer (at most KC rows
// at a time, 32 KB): read in place, rows P floats apart fall into a few L1 sets (P = 3136 puts every
// 16th row on the same 4 KB offset) and evict each other while every row block of the layer walks
// them. Each kept weight then costs one broadcast and TV loads from L1 for TV FMAs.
constexpr int64_t NM_KC = 256;

template <int TV, int N, int M, int R>
static void nm_block(int64_t o, int64_t K, int64_t ldx, int64_t P, const float* values, const uint8_t* idx,
                     int64_t per_row, const float* bias, const float* x, float* y, Act act, bool first, bool last,
                     bool clamp) {
    vf acc[R][TV];
    const float* w[R];
    const uint8_t* ix[R];
    GPRT_UNROLL
    for (int r = 0; r < R; r++) {
        vf b = vbcast(bias ? bias[o + r] : 0.f);
        GPRT_UNROLL
        for (int t = 0; t < TV; t++) acc[r][t] = first ? b : vload(y + (o + r) * P + t * VW);
        w[r] = values + (o + r) * per_row;
        ix[r] = idx + (o + r) * per_row;
    }
    const float* xg = x;
    for (int64_t q = 0; q < K / M * N; q += N, xg += M * ldx) {
        GPRT_UNROLL
        for (int r = 0; r < R; r++) {
            GPRT_UNROLL
            for (int j = 0; j < N; j++) {
                vf wv = vbcast(w[r][q + j]);
                const float* xp = xg + (int64_t)ix[r][q + j] * ldx;
                GPRT_UNROLL
                for (int t = 0; t < TV; t++) acc[r][t] += wv * vload(xp + t * VW);
            }
        }
    }
    GPRT_UNROLL
    for (int r = 0; r < R; r++) {
        GPRT_UNROLL
        for (int t = 0; t < TV; t++)
            vstore(y + (o + r) * P + t * VW, last && clamp ? vclamp(acc[r][t], act.lo, act.hi) : acc[r][t]);
    }
}

template <int N, int M>
static void nm_rows_scalar(int64_t rows, int64_t K, int64_t P, int64_t npix, const float* values, const uint8_t* idx,
                           const float* bias, const float* x, float* y, Act act) {
    const int64_t per_row = K / M * N;
    for (int64_t o = 0; o < rows; o++) {  // fewer than a tile of pixels: one at a time
        const float* w = values + o * per_row;
        const uint8_t* ix = idx + o * per_row;
        for (int64_t t = 0; t < npix; t++) {
            float acc = bias ? bias[o] : 0.f;
            for (int64_t g = 0, q = 0; g < K; g += M)
                for (int j = 0; j < N; j++, q++) acc += w[q] * x[(g + ix[q]) * P + t];
            y[o * P + t] = std::min(std::max(acc, act.lo), act.hi);
        }
    }
}

template <int TV, int N, int M>
static void nm_rows(int64_t rows, int64_t K, int64_t P, int64_t npix, const float* values, const uint8_t* idx,
                    const float* bias, const float* res, const float* x, float* y, Act act) {
    constexpr int R = TV >= 8 ? 1 : 8 / TV;  // R * TV = 8 accumulators at least
    constexpr int64_t T = TV * VW;
    const Act out_act = act;
    if (res) act = kNoAct;  // a residual comes before the activation (added below)
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    const int64_t per_row = K / M * N;
    if (npix == T) {
        alignas(64) float tile[NM_KC * T];
        for (int64_t k0 = 0; k0 < K; k0 += NM_KC) {  // NM_KC is a multiple of every M
            int64_t kc = std::min(NM_KC, K - k0);
            for (int64_t k = 0; k < kc; k++) std::memcpy(tile + k * T, x + (k0 + k) * P, sizeof(float) * T);
            const float* v = values + k0 / M * N;
            const uint8_t* ix = idx + k0 / M * N;
            bool first = k0 == 0, last = k0 + kc == K;
            int64_t o = 0;
            for (; o + R <= rows; o += R)
                nm_block<TV, N, M, R>(o, kc, T, P, v, ix, per_row, bias, tile, y, act, first, last, clamp);
            for (; o < rows; o++)
                nm_block<TV, N, M, 1>(o, kc, T, P, v, ix, per_row, bias, tile, y, act, first, last, clamp);
        }
    } else {
        nm_rows_scalar<N, M>(rows, K, P, npix, values, idx, bias, x, y, act);
    }
    if (res) add_residual(rows, P, npix, res, y, out_act);
}

template <int N, int M>
static void spmm_nm_t(Pool* pool, int64_t rows, int64_t K, int64_t P, const float* values, const uint8_t* idx,
                      const float* bias, const float* x, float* y, Act act, const float* res) {
    constexpr int TV = VW == 16 ? 2 : csr_tv();
    constexpr int64_t T = TV * VW;
    int64_t full = P / T, rest = P - full * T;
    parallel_for(pool, full + (rest ? 1 : 0), [&](int64_t b, int64_t e, int) {
        for (int64_t u = b; u < e; u++) {
            int64_t off = u * T, npix = u < full ? T : rest;
            nm_rows<TV, N, M>(rows, K, P, npix, values, idx, bias, res ? res + off : nullptr, x + off, y + off, act);
        }
    });
}

void spmm_nm(Pool* pool, int n, int m, int64_t M, int64_t K, int64_t P, const float* values, const uint8_t* idx,
             const float* bias, const float* x, float* y, Act act, const float* res) {
    if (n == 2 && m == 4) return spmm_nm_t<2, 4>(pool, M, K, P, values, idx, bias, x, y, act, res);
    if (n == 1 && m == 4) return spmm_nm_t<1, 4>(pool, M, K, P, values, idx, bias, x, y, act, res);
    if (n == 4 && m == 8) return spmm_nm_t<4, 8>(pool, M, K, P, values, idx, bias, x, y, act, res);
    __builtin_trap();  // unreachable: the code generator emits only 2:4 (packing.FORMATS)
}

}  // namespace gprt
