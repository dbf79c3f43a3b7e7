// Dense kernels: a blocked, register-tiled GEMM (packed A and B panels, an MR x NR accumulator tile
// kept in vector registers), convolution on top of it (1x1 as GEMM; otherwise GEMM over im2col panels
// gathered as they are packed, per group; direct depthwise), batched matmul and transposed convolution.
#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "gprt/gprt.h"
#include "gprt/vec.h"

namespace gprt {

// Register tile: MR rows x NV vectors. Sized so that accumulators + B loads + one broadcast fit the
// register file: 32 registers on AVX-512 and NEON, 16 on AVX2 and on the x86 hosts running wasm.
#if defined(GPRT_MR)
constexpr int MR = GPRT_MR, NV = GPRT_NV;
#elif GPRT_VW == 16
constexpr int MR = 8, NV = 3;  // 24 accumulators: measured best of 8x2, 6x4, 8x3, 12x2, 14x2
#elif GPRT_VW == 8
constexpr int MR = 6, NV = 2;
#elif defined(__aarch64__)
constexpr int MR = 8, NV = 3;
#elif GPRT_VW == 4
constexpr int MR = 4, NV = 2;
#else
constexpr int MR = 4, NV = 4;
#endif
constexpr int NR = NV * VW;
#ifndef GPRT_KC
#define GPRT_KC 256
#define GPRT_MC 128
#define GPRT_NC 1024
#endif
constexpr int64_t KC = GPRT_KC, MC = GPRT_MC, NC = GPRT_NC;

static inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

static void gemm_dims(int64_t M, int64_t N, int64_t K, int64_t* kc, int64_t* mc, int64_t* nc) {
    *kc = std::min(K, KC);
    *mc = std::min(round_up(M, MR), round_up(MC, MR));  // packing pads to whole tiles
    *nc = std::min(round_up(N, NR), round_up(NC, NR));
}

size_t gemm_workspace(int64_t M, int64_t N, int64_t K, int threads) {
    int64_t kc, mc, nc;
    gemm_dims(M, N, K, &kc, &mc, &nc);
    return (size_t)threads * (size_t)(kc * nc + mc * kc + nc + 32) * sizeof(float);  // + PackIm2col's row
}

// Ap[ir][k][MR]: MR rows interleaved per k, rows past m zero.
static void pack_a(int64_t m, int64_t kc, const float* A, int64_t lda, float* Ap) {
    for (int64_t i0 = 0; i0 < m; i0 += MR) {
        int64_t mr = std::min<int64_t>(MR, m - i0);
        for (int64_t k = 0; k < kc; k++) {
            for (int64_t i = 0; i < mr; i++) Ap[i] = A[(i0 + i) * lda + k];
            for (int64_t i = mr; i < MR; i++) Ap[i] = 0.f;
            Ap += MR;
        }
    }
}

// Bp[jr][k][NR]: NR columns contiguous per k, columns past n zero.
static void pack_b(int64_t kc, int64_t n, const float* B, int64_t ldb, float* Bp) {
    for (int64_t j0 = 0; j0 < n; j0 += NR) {
        int64_t nr = std::min<int64_t>(NR, n - j0);
        for (int64_t k = 0; k < kc; k++) {
            const float* src = B + k * ldb + j0;
            if (nr == NR) {
                std::memcpy(Bp, src, sizeof(float) * NR);
            } else {
                for (int64_t j = 0; j < nr; j++) Bp[j] = src[j];
                for (int64_t j = nr; j < NR; j++) Bp[j] = 0.f;
            }
            Bp += NR;
        }
    }
}

struct Epilogue {
    const float* bias;  // already offset to this tile's first row / column
    BiasKind kind;
    bool first, last;
    Act act;
};

// NT vectors wide (NT <= NV): a strip's last tile is only as wide as its columns need, so the 49 pixels
// of a 7x7 layer cost 48 + 16 columns of FMAs instead of 2 x 48.
template <int NT>
static void ukernel(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int64_t mr, int64_t nr,
                    const Epilogue& ep) {
    constexpr int NV = NT, NR = NT * VW;  // this tile's width (the packed panel stays gprt::NR wide)
    vf acc[MR][NV];
    const bool full = mr == MR && nr == NR;
    float tile[MR * NR];
    if (ep.first && (ep.kind != kBiasCol || nr == NR)) {  // accumulators start at the bias (or zero)
        GPRT_UNROLL
        for (int i = 0; i < MR; i++) {
            vf r = vbcast(ep.kind == kBiasRow && i < mr ? ep.bias[i] : 0.f);
            GPRT_UNROLL
            for (int j = 0; j < NV; j++) acc[i][j] = ep.kind == kBiasCol ? vload(ep.bias + j * VW) : r;
        }
    } else {  // a partial tile (or a column bias on one) goes through a zero-padded copy
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) {
                bool in = i < mr && j < nr;
                tile[i * NR + j] = ep.first ? (in && ep.kind == kBiasCol ? ep.bias[j] : 0.f) : (in ? C[i * ldc + j] : 0.f);
            }
        GPRT_UNROLL
        for (int i = 0; i < MR; i++) {
            GPRT_UNROLL
            for (int j = 0; j < NV; j++) acc[i][j] = full ? vload(C + i * ldc + j * VW) : vload(tile + i * NR + j * VW);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        vf b[NV];
        GPRT_UNROLL
        for (int j = 0; j < NV; j++) b[j] = vload(Bp + j * VW);
        GPRT_UNROLL
        for (int i = 0; i < MR; i++) {
            vf a = vbcast(Ap[i]);
            GPRT_UNROLL
            for (int j = 0; j < NV; j++) acc[i][j] += a * b[j];
        }
        Ap += MR;
        Bp += gprt::NR;
    }
    const bool clamp = ep.last && (ep.act.lo != -kInf || ep.act.hi != kInf);
    GPRT_UNROLL
    for (int i = 0; i < MR; i++) {
        GPRT_UNROLL
        for (int j = 0; j < NV; j++) {
            vf v = clamp ? vclamp(acc[i][j], ep.act.lo, ep.act.hi) : acc[i][j];
            if (full)
                vstore(C + i * ldc + j * VW, v);
            else
                vstore(tile + i * NR + j * VW, v);
        }
    }
    if (!full)
        for (int64_t i = 0; i < mr; i++)
            for (int64_t j = 0; j < nr; j++) C[i * ldc + j] = tile[i * NR + j];
}

using Ukernel = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t, int64_t, const Epilogue&);
template <int... I>
static constexpr std::array<Ukernel, sizeof...(I)> ukernel_table(std::integer_sequence<int, I...>) {
    return {&ukernel<I + 1>...};
}
static constexpr auto ukernels = ukernel_table(std::make_integer_sequence<int, NV>{});  // by vectors needed

// B packers: pack(pc, kc, jc, nc, Bp, row) fills the panel of rows [pc, pc + kc) and columns
// [jc, jc + nc) of B in pack_b's layout; `row` is nc floats of scratch.
struct PackMatrix {
    const float* B;
    int64_t ldb;
    void operator()(int64_t pc, int64_t kc, int64_t jc, int64_t nc, float* Bp, float*) const {
        pack_b(kc, nc, B + pc * ldb + jc, ldb, Bp);
    }
};

// A convolution's im2col matrix (row k = input channel c, tap kh, kw; column = output pixel), gathered
// from the image panel by panel as it is packed: the whole matrix was KH*KW copies of the input (7 MB
// for a 3x3 layer of 64 channels on 56x56), written once and read back from memory by pack_b.
struct PackIm2col {
    const ConvShape* s;
    const float* x;  // the group's first input channel
    void operator()(int64_t pc, int64_t kc, int64_t jc, int64_t nc, float* Bp, float* row) const;
};

void PackIm2col::operator()(int64_t pc, int64_t kc, int64_t jc, int64_t nc, float* Bp, float* row) const {
    const ConvShape& c = *s;
    for (int64_t kk = 0; kk < kc; kk++) {
        const int64_t k = pc + kk, ch = k / (c.KH * c.KW), kh = k / c.KW % c.KH, kw = k % c.KW;
        const float* xc = x + ch * c.H * c.W;
        // output columns [lo, hi) read inside the input row: no bounds checks there
        const int64_t off = kw * c.DW - c.PW;  // column ow reads input column ow * SW + off
        const int64_t lo = std::min(c.OW, off >= 0 ? 0 : (-off + c.SW - 1) / c.SW);
        const int64_t hi = std::max(lo, std::min(c.OW, c.W - off > 0 ? (c.W - off + c.SW - 1) / c.SW : 0));
        for (int64_t j = jc; j < jc + nc;) {  // the panel's pixels, one output row at a time
            const int64_t oh = j / c.OW, ow0 = j % c.OW, ow1 = std::min(c.OW, ow0 + jc + nc - j);
            float* r = row + (j - jc) - ow0;  // r[ow]: pixel (oh, ow)
            const int64_t ih = oh * c.SH - c.PH + kh * c.DH;
            if (ih < 0 || ih >= c.H) {
                std::fill(r + ow0, r + ow1, 0.f);
            } else {
                const float* xr = xc + ih * c.W + off;
                const int64_t a = std::max(ow0, std::min(lo, ow1)), b = std::max(a, std::min(hi, ow1));
                std::fill(r + ow0, r + a, 0.f);
                if (c.SW == 1)
                    std::memcpy(r + a, xr + a, sizeof(float) * (b - a));
                else
                    for (int64_t ow = a; ow < b; ow++) r[ow] = xr[ow * c.SW];
                std::fill(r + b, r + ow1, 0.f);
            }
            j += ow1 - ow0;
        }
        for (int64_t j0 = 0; j0 < nc; j0 += NR) {  // into the column strips (strip t starts at t * NR * kc)
            const int64_t nr = std::min<int64_t>(NR, nc - j0);
            float* dst = Bp + j0 * kc + kk * NR;
            std::memcpy(dst, row + j0, sizeof(float) * nr);
            std::fill(dst + nr, dst + NR, 0.f);
        }
    }
}

// One thread's share: columns [n0, n1).
template <class PackB>
static void gemm_part(float* ws, int64_t M, int64_t n0, int64_t n1, int64_t K, const float* A, int64_t lda,
                      const PackB& pack, float* C, int64_t ldc, const float* bias, BiasKind bias_kind, Act act) {
    int64_t KCb, MCb, NCb;
    gemm_dims(M, n1 - n0, K, &KCb, &MCb, &NCb);
    float* Bp = ws;
    float* Ap = ws + KCb * NCb;
    float* row = Ap + MCb * KCb + 16;
    if (K == 0) {  // C = bias only
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = n0; j < n1; j++) {
                float v = bias_kind == kBiasRow ? bias[i] : bias_kind == kBiasCol ? bias[j] : 0.f;
                C[i * ldc + j] = std::min(std::max(v, act.lo), act.hi);
            }
        return;
    }
    for (int64_t jc = n0; jc < n1; jc += NCb) {
        int64_t nc = std::min(NCb, n1 - jc);
        for (int64_t pc = 0; pc < K; pc += KCb) {
            int64_t kc = std::min(KCb, K - pc);
            pack(pc, kc, jc, nc, Bp, row);
            for (int64_t ic = 0; ic < M; ic += MCb) {
                int64_t mc = std::min(MCb, M - ic);
                pack_a(mc, kc, A + ic * lda + pc, lda, Ap);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        Epilogue ep;
                        ep.kind = bias_kind;
                        ep.bias = bias_kind == kBiasRow ? bias + ic + ir : bias_kind == kBiasCol ? bias + jc + jr
                                                                                                  : nullptr;
                        ep.first = pc == 0;
                        ep.last = pc + kc == K;
                        ep.act = act;
                        int64_t nr = std::min<int64_t>(NR, nc - jr);
                        ukernels[(nr + VW - 1) / VW - 1](kc, Ap + ir * kc, Bp + jr * kc, C + (ic + ir) * ldc + jc + jr,
                                                         ldc, std::min<int64_t>(MR, mc - ir), nr, ep);
                    }
                }
            }
        }
    }
}

template <class PackB>
static void gemm_packed(Pool* pool, float* ws, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                        const PackB& pack, float* C, int64_t ldc, const float* bias, BiasKind bias_kind, Act act) {
    if (M == 0 || N == 0) return;
    int threads = pool_size(pool);
    int64_t strips = (N + NR - 1) / NR;
    int64_t parts = std::min<int64_t>(threads, strips);
    size_t per = gemm_workspace(M, N, K, 1) / sizeof(float);
    if (parts <= 1) {
        gemm_part(ws, M, 0, N, K, A, lda, pack, C, ldc, bias, bias_kind, act);
        return;
    }
    parallel_for(pool, parts, [&](int64_t b, int64_t e, int worker) {
        for (int64_t p = b; p < e; p++) {
            int64_t n0 = std::min(N, strips * p / parts * NR), n1 = std::min(N, strips * (p + 1) / parts * NR);
            if (n0 < n1)
                gemm_part(ws + per * worker, M, n0, n1, K, A, lda, pack, C, ldc, bias, bias_kind, act);
        }
    });
}

void gemm(Pool* pool, float* ws, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc, const float* bias, BiasKind bias_kind, Act act) {
    gemm_packed(pool, ws, M, N, K, A, lda, PackMatrix{B, ldb}, C, ldc, bias, bias_kind, act);
}

// ---- few-row linear ----

static inline float hsum(vf v) {
#if GPRT_VW == 1
    return v;
#else
    float s = 0.f;
    for (int l = 0; l < VW; l++) s += v[l];
    return s;
#endif
}

void gemv(Pool* pool, int64_t rows, int64_t OUT, int64_t IN, const float* x, const float* W, const float* bias,
          float* y, Act act) {
    constexpr int64_t OB = 4;  // output rows sharing each load of x
    const int64_t kv = IN / VW * VW;
    parallel_for(pool, (OUT + OB - 1) / OB, [&](int64_t b, int64_t e, int) {
        for (int64_t r = 0; r < rows; r++) {
            const float* xr = x + r * IN;
            for (int64_t o0 = b * OB; o0 < std::min(OUT, e * OB); o0 += OB) {
                int64_t ob = std::min(OB, OUT - o0);
                vf acc[OB];
                for (int i = 0; i < OB; i++) acc[i] = vbcast(0.f);
                for (int64_t k = 0; k < kv; k += VW) {
                    vf xv = vload(xr + k);
                    for (int64_t i = 0; i < ob; i++) acc[i] += xv * vload(W + (o0 + i) * IN + k);
                }
                for (int64_t i = 0; i < ob; i++) {
                    float s = hsum(acc[i]) + (bias ? bias[o0 + i] : 0.f);
                    for (int64_t k = kv; k < IN; k++) s += xr[k] * W[(o0 + i) * IN + k];
                    y[r * OUT + o0 + i] = std::min(std::max(s, act.lo), act.hi);
                }
            }
        }
    });
}

// ---- convolution ----

static bool is_pointwise(const ConvShape& s) {
    return s.KH == 1 && s.KW == 1 && s.SH == 1 && s.SW == 1 && s.PH == 0 && s.PW == 0 && s.G == 1 &&
           s.OH == s.H && s.OW == s.W;
}
static bool is_depthwise(const ConvShape& s) { return s.G == s.C && s.OC == s.C && s.G > 1; }

// Depthwise convolution, one channel at a time, as a 1-D stencil: the channel is copied into a
// zero-padded plane of width Wp, so output (oh, ow) reads plane[(oh*SH + kh*DH)*Wp + ow*SW + kw*DW]
// with no bounds checks. Over a grid of Gw = SH*Wp/SW columns per output row that index is
// SW*q + kh*DH*Wp + kw*DW for the flat grid position q = oh*Gw + ow, so whole vectors of q run at
// once, whatever the image width; the columns past OW are computed and dropped.
struct DwPlan {
    int64_t Wp, Hp, Gw, grid, plane;
};

static DwPlan dw_plan(const ConvShape& s) {
    DwPlan d;
    int64_t need_w = std::max(s.W + s.PW, (s.OW - 1) * s.SW + (s.KW - 1) * s.DW + 1);
    d.Wp = round_up(need_w, s.SW);
    if (s.SW == 2) {  // walked one output row at a time (a flat grid would compute every other column)
        d.Gw = d.Wp;
        d.grid = round_up(s.OW, VW);
        d.Hp = std::max(s.H + s.PH, (s.OH - 1) * s.SH + (s.KH - 1) * s.DH + 1) + 1;
        d.plane = d.Hp * d.Wp + 2 * d.grid + s.KW * s.DW + 2 * VW;  // slack: the last row's vectors run over
        return d;
    }
    d.Gw = s.SH * d.Wp / s.SW;
    d.grid = round_up(s.OH * d.Gw, VW);
    // the last vector of q reads up to SW*grid + (KH-1)*DH*Wp + (KW-1)*DW (+ VW*SW for the pairs)
    int64_t reach = s.SW * d.grid + (s.KH - 1) * s.DH * d.Wp + (s.KW - 1) * s.DW + 2 * VW * s.SW;
    d.Hp = std::max(s.H + s.PH, (reach + d.Wp - 1) / d.Wp);
    d.plane = d.Hp * d.Wp;
    return d;
}

// shuffle indices: even and odd lanes of two vectors; a shift one lane right (carrying the first
// vector's last lane in) and one lane left (the second vector's first lane in)
#if GPRT_VW == 4
#define GPRT_EVEN 0, 2, 4, 6
#define GPRT_ODD 1, 3, 5, 7
#define GPRT_SHIFT1 3, 4, 5, 6
#define GPRT_NEXT1 1, 2, 3, 4
#elif GPRT_VW == 8
#define GPRT_EVEN 0, 2, 4, 6, 8, 10, 12, 14
#define GPRT_ODD 1, 3, 5, 7, 9, 11, 13, 15
#define GPRT_SHIFT1 7, 8, 9, 10, 11, 12, 13, 14
#define GPRT_NEXT1 1, 2, 3, 4, 5, 6, 7, 8
#elif GPRT_VW == 16
#define GPRT_EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define GPRT_ODD 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define GPRT_SHIFT1 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
#define GPRT_NEXT1 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
#endif

static inline vf load_strided(const float* p, int64_t stride) {
#if GPRT_VW == 1
    (void)stride;
    return p[0];
#else
    if (stride == 1) return vload(p);
    if (stride == 2) {  // even lanes of two vectors
        vf a = vload(p), b = vload(p + VW);
        return __builtin_shufflevector(a, b, GPRT_EVEN);
    }
    vf v;
    for (int l = 0; l < VW; l++) v[l] = p[l * stride];
    return v;
#endif
}

// The stencil over the grid; KH/KW/SW are compile-time for the common shapes (0: taken from s).
template <int KH_, int KW_, int SW_>
static void dw_grid(const ConvShape& s, const DwPlan& d, const float* plane, const float* w, float bias, float* grid) {
    const int64_t KH = KH_ ? KH_ : s.KH, KW = KW_ ? KW_ : s.KW, SW = SW_ ? SW_ : s.SW;
    for (int64_t q = 0; q < d.grid; q += VW) {
        vf acc = vbcast(bias);
        const float* base = plane + SW * q;
        for (int64_t kh = 0; kh < KH; kh++) {
            const float* row = base + kh * s.DH * d.Wp;
                for (int64_t kw = 0; kw < KW; kw++) acc += vbcast(w[kh * KW + kw]) * load_strided(row + kw * s.DW, SW);
        }
        vstore(grid + q, acc);
    }
}

// Stride 2 across, one output row at a time: each tap loads two vectors of the row and keeps the even
// lanes; the lanes past OW are dropped.
template <int KH_, int KW_>
static void dw_rows_s2(const ConvShape& s, const DwPlan& d, const float* plane, const float* w, float bias,
                       float* y, Act act, float* row) {
    const int64_t KH = KH_ ? KH_ : s.KH, KW = KW_ ? KW_ : s.KW;
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    for (int64_t oh = 0; oh < s.OH; oh++) {
        for (int64_t ow = 0; ow < d.grid; ow += VW) {
            vf acc = vbcast(bias);
            for (int64_t kh = 0; kh < KH; kh++) {
                const float* r = plane + (oh * s.SH + kh * s.DH) * d.Wp + 2 * ow;
                for (int64_t kw = 0; kw < KW; kw++) acc += vbcast(w[kh * KW + kw]) * load_strided(r + kw * s.DW, 2);
            }
            vstore(row + ow, clamp ? vclamp(acc, act.lo, act.hi) : acc);
        }
        std::memcpy(y + oh * s.OW, row, sizeof(float) * s.OW);
    }
}

// n floats: inline vectors, the last one overlapping the one before (a libc memcpy call per short row
// cost as much as the copy itself)
static inline void copy_row(float* dst, const float* src, int64_t n) {
    if (n < VW) {
        for (int64_t i = 0; i < n; i++) dst[i] = src[i];
        return;
    }
    int64_t i = 0;
    for (; i + VW <= n; i += VW) vstore(dst + i, vload(src + i));
    if (i < n) vstore(dst + n - VW, vload(src + n - VW));
}

// The channel into the padded plane: rows copied, only the padding (and the slack) zeroed.
static void fill_plane(const ConvShape& s, const DwPlan& d, const float* x, float* plane) {
    std::fill(plane, plane + s.PH * d.Wp, 0.f);
    for (int64_t h = 0; h < s.H; h++) {
        float* r = plane + (h + s.PH) * d.Wp;
        std::fill(r, r + s.PW, 0.f);
        copy_row(r + s.PW, x + h * s.W, s.W);
        std::fill(r + s.PW + s.W, r + d.Wp, 0.f);
    }
    std::fill(plane + (s.H + s.PH) * d.Wp, plane + d.plane, 0.f);
}

// ---- the row kernel for the common shapes (dilation 1, stride 1 or 2 in both axes, 3x3 or 5x5) ----
// Output rows are computed straight into y, the activation fused, so no grid and no copy-out. Stride 1:
// two output rows at a time share the KH + 1 input rows they read (each loaded vector feeds two FMAs).
// Stride 2: the padded channel is split into its even and odd columns once (fill_split), so every tap
// is a plain vector load instead of two loads and a shuffle.
static bool dw_rowwise(const ConvShape& s) {
    // narrow images (OW < 2 vectors) waste most lanes of the row's last vector: the flat grid packs them
    return s.OW >= 2 * VW && s.DH == 1 && s.DW == 1 && s.SH == s.SW && (s.SW == 1 || s.SW == 2) && s.KH == s.KW &&
           (s.KH == 3 || s.KH == 5);
}

// plane rows hold Wr floats; a stride-2 plane is two half planes (even columns, then odd), Wr = Wp/2 each
static int64_t dw_row_width(const ConvShape& s, const DwPlan& d) { return s.SW == 2 ? d.Wp / 2 : d.Wp; }

// e[j] = x[2j] and o[j] = x[2j + 1] for lo <= j < hi: two vectors of x give one of each, the last pair
// overlapping the one before (no scalar tail) once there are VW or more
static void deinterleave(const float* x, float* e, float* o, int64_t lo, int64_t hi) {
    int64_t j = lo;
#if GPRT_VW > 1
    for (; j < hi && hi - lo >= VW; j += VW) {
        j = std::min(j, hi - VW);
        vf a = vload(x + 2 * j), b = vload(x + 2 * j + VW);
        vstore(e + j, __builtin_shufflevector(a, b, GPRT_EVEN));
        vstore(o + j, __builtin_shufflevector(a, b, GPRT_ODD));
    }
#endif
    for (; j < hi; j++) {
        e[j] = x[2 * j];
        o[j] = x[2 * j + 1];
    }
}

static void fill_split(const ConvShape& s, const DwPlan& d, const float* x, float* even, float* odd) {
    const int64_t Wr = d.Wp / 2;
    for (int64_t h = 0; h < d.Hp; h++) {
        float* e = even + h * Wr;
        float* o = odd + h * Wr;
        int64_t ih = h - s.PH;
        if (ih < 0 || ih >= s.H) {
            std::fill(e, e + Wr, 0.f);
            std::fill(o, o + Wr, 0.f);
            continue;
        }
        const float* xr = x + ih * s.W - s.PW;  // padded column c reads xr[c] when PW <= c < PW + W
        auto edge = [&](int64_t j) {
            int64_t c = 2 * j;
            e[j] = c >= s.PW && c < s.PW + s.W ? xr[c] : 0.f;
            o[j] = c + 1 >= s.PW && c + 1 < s.PW + s.W ? xr[c + 1] : 0.f;
        };
        // columns 2j and 2j + 1 both inside the image for lo <= j < hi: a plain deinterleave there
        int64_t lo = std::min((s.PW + 1) / 2, Wr), hi = std::max(lo, std::min((s.PW + s.W) / 2, Wr));
        for (int64_t j = 0; j < lo; j++) edge(j);
        deinterleave(xr, e, o, lo, hi);
        for (int64_t j = hi; j < Wr; j++) edge(j);
    }
    std::fill(odd + d.Hp * Wr, even + d.plane, 0.f);  // the slack the last vectors of a row read past the end
}

// One (RO = 1) or two (RO = 2, stride 1 only) output rows from output row oh: tap (kh, kw) of output
// column ow reads padded row oh*S + kh at column ow + kw (stride 2: ow + kw/2 of the even or odd half).
// A row ending inside a vector: unless these are the channel's last rows (final), that vector is done
// first and stored whole, running into the next row's first columns, which their own stores then
// overwrite (rows go down in order, the RO rows of one call top first); a memcpy of the few floats per
// row cost as much as the row's taps.
template <int K, int S, int RO>
static inline void dw_rows(const float* plane, const float* odd, int64_t Wr, int64_t oh, int64_t OW, const vf* wv,
                           float bias, float* y, Act act, bool clamp, bool final) {
    int64_t ow = 0;
    auto one = [&](int64_t at, vf* out) {
        // a partial sum per kernel column: one chain of K*K dependent FMAs would bound the loop by latency
        vf acc[RO][K];
        GPRT_UNROLL
        for (int r = 0; r < RO; r++) {
            GPRT_UNROLL
            for (int kw = 0; kw < K; kw++) acc[r][kw] = kw ? vf{} : vbcast(bias);
        }
        GPRT_UNROLL
        for (int kh = 0; kh < K + RO - 1; kh++) {
            int64_t row = (oh * S + kh) * Wr + at;
            GPRT_UNROLL
            for (int kw = 0; kw < K; kw++) {
                vf v = S == 1 ? vload(plane + row + kw) : vload((kw % 2 ? odd : plane) + row + kw / 2);
                GPRT_UNROLL
                for (int r = 0; r < RO; r++)
                    if (kh - r >= 0 && kh - r < K) acc[r][kw] += wv[(kh - r) * K + kw] * v;
            }
        }
        GPRT_UNROLL
        for (int r = 0; r < RO; r++) {
            vf a = acc[r][0];
            GPRT_UNROLL
            for (int kw = 1; kw < K; kw++) a += acc[r][kw];
            out[r] = clamp ? vclamp(a, act.lo, act.hi) : a;
        }
    };
    const int64_t last = OW - OW % VW;
    if (last < OW && !final) {
        vf out[RO];
        one(last, out);
        GPRT_UNROLL
        for (int r = 0; r < RO; r++) vstore(y + r * OW + last, out[r]);
    }
    for (; ow + VW <= OW; ow += VW) {
        vf out[RO];
        one(ow, out);
        GPRT_UNROLL
        for (int r = 0; r < RO; r++) vstore(y + r * OW + ow, out[r]);
    }
    if (ow < OW && final) {  // the last columns: one more vector (the plane has slack for it), partly stored
        vf out[RO];
        one(ow, out);
        GPRT_UNROLL
        for (int r = 0; r < RO; r++) vstore_part(y + r * OW + ow, out[r], OW - ow);
    }
}

template <int K, int S>
static void dw_rowwise_channel(const ConvShape& s, const DwPlan& d, const float* plane, const float* w, float bias,
                               float* y, Act act) {
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    const int64_t Wr = dw_row_width(s, d);
    const float* odd = plane + d.Hp * Wr;
    vf wv[K * K];
    for (int i = 0; i < K * K; i++) wv[i] = vbcast(w[i]);
    int64_t oh = 0;
    if (S == 1)
        for (; oh + 2 <= s.OH; oh += 2)
            dw_rows<K, S, 2>(plane, odd, Wr, oh, s.OW, wv, bias, y + oh * s.OW, act, clamp, oh + 2 == s.OH);
    for (; oh < s.OH; oh++)
        dw_rows<K, S, 1>(plane, odd, Wr, oh, s.OW, wv, bias, y + oh * s.OW, act, clamp, oh + 1 == s.OH);
}

// ---- stride 1, "same" width (OW == W, PW = K / 2): the channel as one flat run of pixels ----
// Output pixel q = oh*W + ow reads input q + (kh-PH)*W + (kw-PW) for every tap: linear in q across rows,
// so whole vectors run over row boundaries with no per-row setup, straight into y (rows of 7 on AVX-512,
// or of 14 on AVX2, fill one vector badly). Rows above and below the image read zero guards around a
// contiguous copy of the channel (one memcpy). A tap past a row's left or right edge would read the
// neighbouring row, so the taps of each kernel column are summed apart and that sum is masked once with
// the output columns whose tap column lies inside the image (K masks, shared by every channel).
struct DwFlat {
    int64_t front, span, Pr;  // zero guard before the channel, buffer floats per thread, output floats rounded
};
static bool dw_s1_direct(const ConvShape& s);
static bool dw_flat(const ConvShape& s) {
    return VW > 1 && s.SH == 1 && s.SW == 1 && s.DH == 1 && s.DW == 1 && s.OW == s.W && s.KH == s.KW &&
           (s.KH == 3 || s.KH == 5) && s.PW == s.KW / 2 && s.PH < s.KH && s.OW < 2 * VW && !dw_s1_direct(s);
}
static DwFlat dw_flat_plan(const ConvShape& s) {
    DwFlat f;
    f.Pr = round_up(s.OH * s.OW, VW);
    f.front = round_up(s.PH * s.W + s.PW, VW);
    // the last vector reads up to Pr - 1 + (KH-1-PH)*W + (KW-1-PW)
    f.span = f.front + std::max(s.H * s.W, f.Pr + (s.KH - 1 - s.PH) * s.W + s.KW) + VW;
    return f;
}
static size_t dw_flat_floats(const ConvShape& s, int threads) {
    DwFlat f = dw_flat_plan(s);
    return (size_t)(s.KW * f.Pr + 16 + threads * (f.span + 16));
}

template <int K, int PW>
static void dw_flat_channel(const ConvShape& s, const DwFlat& f, const float* x, const int32_t* masks,
                            const float* w, float bias, float* y, Act act, bool clamp) {
    const int64_t P = s.OH * s.OW, Pr = f.Pr;
    int64_t off[K];  // kernel row kh, column 0 of output pixel q reads x[q + off[kh]]
    for (int kh = 0; kh < K; kh++) off[kh] = (kh - s.PH) * s.W - PW;
    vf wv[K * K];
    for (int i = 0; i < K * K; i++) wv[i] = vbcast(w[i]);
    const vf vb = vbcast(bias);
    for (int64_t q = 0; q < Pr; q += VW) {
        vf col[K];
        GPRT_UNROLL
        for (int kw = 0; kw < K; kw++) col[kw] = vf{};
        GPRT_UNROLL
        for (int kh = 0; kh < K; kh++) {
            const float* r = x + q + off[kh];
            GPRT_UNROLL
            for (int kw = 0; kw < K; kw++) col[kw] += wv[kh * K + kw] * vload(r + kw);
        }
        vf acc = vb;
        GPRT_UNROLL
        for (int kw = 0; kw < K; kw++) acc += kw == PW ? col[kw] : vmask(col[kw], masks + kw * Pr + q);
        if (clamp) acc = vclamp(acc, act.lo, act.hi);
        if (q + VW <= P)
            vstore(y + q, acc);
        else
            vstore_part(y + q, acc, P - q);
    }
}

static void dw_flat_run(Pool* pool, const ConvShape& s, const float* x, const float* w, const float* b, float* y,
                        Act act, float* ws) {
    const DwFlat f = dw_flat_plan(s);
    int32_t* masks = (int32_t*)ws;
    for (int64_t kw = 0; kw < s.KW; kw++)
        for (int64_t q = 0, col = 0; q < f.Pr; q++, col = col + 1 == s.W ? 0 : col + 1) {  // col = q % W
            int64_t c = col - s.PW + kw;
            masks[kw * f.Pr + q] = c >= 0 && c < s.W ? -1 : 0;
        }
    float* bufs = ws + s.KW * f.Pr + 16;
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    const int64_t HW = s.H * s.W, P = s.OH * s.OW;
    parallel_for(pool, s.N * s.C, [&](int64_t b0, int64_t e0, int worker) {
        float* buf = bufs + worker * (f.span + 16);
        std::fill(buf, buf + f.front, 0.f);
        std::fill(buf + f.front + HW, buf + f.span, 0.f);
        for (int64_t nc = b0; nc < e0; nc++) {
            int64_t c = nc % s.C;
            std::memcpy(buf + f.front, x + nc * HW, sizeof(float) * HW);
            const float* xc = buf + f.front;
            const float bc = b ? b[c] : 0.f;
            float* yc = y + nc * P;
            if (s.KH == 3)
                dw_flat_channel<3, 1>(s, f, xc, masks, w + c * 9, bc, yc, act, clamp);
            else
                dw_flat_channel<5, 2>(s, f, xc, masks, w + c * 25, bc, yc, act, clamp);
        }
    });
}

// ---- stride 2, 3x3, left padding 1: read in place, no plane ----
// Output column ow reads input columns 2ow-1, 2ow, 2ow+1: two vectors of the input row give the even
// (2ow) and odd (2ow+1) columns, and the odd columns shifted one lane right, carrying the previous
// vector's last odd column in (0 at the left edge), give 2ow-1. Rows above or below the image are
// skipped. The last vectors of a row read past it: into the next row, whose values land only in lanes
// past OW, when W is even; from a zero-padded copy of the row's end when W is odd (column W is padding)
// or where the read would run past the channel's last row (past it may lie the end of the buffer; rows
// narrower than two vectors read into the rows after the next). A whole output vector is stored unless
// it would run past the last row being computed (the channel's, or a worker's band's). Replaces the
// even/odd split of the whole channel (fill_split), which moved every input float once more and took
// two thirds of the time of the 48 x 112 x 112 layer; on rows narrower than a vector (28 x 28 -> 14 x 14)
// it replaced the padded plane and its grid (35 -> 13 us on 192 channels).
static bool dw_s2_direct(const ConvShape& s) {
    return VW > 1 && s.KH == 3 && s.KW == 3 && s.SH == 2 && s.SW == 2 && s.DH == 1 && s.DW == 1 && s.PW == 1 &&
           s.PH <= 1 && 2 * (s.OW - 1) + 1 <= s.W;
}

// Output rows [oh0, oh1) only: workers may split a channel's rows (see conv2d).
static void dw_s2_direct_channel(const ConvShape& s, const float* x, const float* w, float bias, float* y, Act act,
                                 int64_t oh0, int64_t oh1) {
#if GPRT_VW > 1
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    vf wv[9];
    for (int i = 0; i < 9; i++) wv[i] = vbcast(w[i]);
    // vectors whose two input vectors lie inside the row
    const int64_t inside = s.W / (2 * VW);
    const int64_t nvec = (s.OW + VW - 1) / VW;
    alignas(64) float edge[2 * VW];
    for (int64_t oh = oh0; oh < oh1; oh++) {
        const float* rows[3];
        bool valid[3];
        for (int kh = 0; kh < 3; kh++) {
            int64_t ih = oh * 2 - s.PH + kh;
            valid[kh] = ih >= 0 && ih < s.H;
        rows[kh] = x + (valid[kh] ? ih : 0) * s.W;
        }
        vf carry = vf{};  // the previous vector's left-tap sum
        float* yr = y + oh * s.OW;
        for (int64_t v = 0; v < nvec; v++) {
            // a partial sum per kernel column; the left column's is summed over the kernel rows on the odd
            // columns unshifted and shifted once at the end (the shift is linear): 7 shuffles, not 9
            vf acc[3] = {vf{}, vbcast(bias), vf{}};
            GPRT_UNROLL
            for (int kh = 0; kh < 3; kh++) {
                if (!valid[kh]) continue;
                const float* src = rows[kh] + 2 * v * VW;
                // (rows narrower than two vectors: the read may run past the next row, up to the end)
                int64_t ih = oh * 2 - s.PH + kh;
                if (v >= inside && (s.W % 2 || 2 * (v + 1) * VW > (s.H - ih) * s.W)) {
                    // past the row's end: the next row's values only fall in lanes past OW (dropped) when
                    // W is even and a next row exists; else zeros (the right padding) in a copy
                    int64_t n = std::max<int64_t>(0, std::min<int64_t>(2 * VW, s.W - 2 * v * VW));
                    for (int64_t i = 0; i < 2 * VW; i++) edge[i] = i < n ? src[i] : 0.f;
                    src = edge;
                }
                vf a = vload(src), b = vload(src + VW);
                vf even = __builtin_shufflevector(a, b, GPRT_EVEN);
                vf odd = __builtin_shufflevector(a, b, GPRT_ODD);
                acc[0] += wv[kh * 3] * odd;
                acc[1] += wv[kh * 3 + 1] * even;
                acc[2] += wv[kh * 3 + 2] * odd;
            }
            vf out = __builtin_shufflevector(carry, acc[0], GPRT_SHIFT1) + acc[1] + acc[2];
            carry = acc[0];
            if (clamp) out = vclamp(out, act.lo, act.hi);
            int64_t at = v * VW;
            if ((oh * s.OW + at + VW) <= oh1 * s.OW)
                vstore(yr + at, out);  // past the row's end: the next rows' first columns, stored after this
            else
                vstore_part(yr + at, out, s.OW - at);
        }
    }
#else
    (void)s, (void)x, (void)w, (void)bias, (void)y, (void)act, (void)oh0, (void)oh1;
#endif
}

// ---- stride 2, 3x3, over rows split into their even and odd columns (the fused chains) ----
// A fused chain's expand is a 1x1 layer: it writes its pixels in the order it reads them, so reading its
// input with every row split into [even columns | odd columns] (split_columns: K channels, few) makes
// the expanded rows split too. Output column ow then reads column 2ow at even[ow], 2ow + 1 at odd[ow]
// and 2ow - 1 at odd[ow - 1]: three plain loads per input row, where the in-place kernel above needs two
// loads and two or three shuffles, and branches per tap (a band of 16 rows of MobileNetV2's 48 x 112 x
// 112 layer: 13.4 -> 9.7 us; the whole pruned model 1.00 -> 0.98 ms).
bool dw_split_columns(const ConvShape& s) {
    return VW > 1 && is_depthwise(s) && s.KH == 3 && s.KW == 3 && s.SH == 2 && s.SW == 2 && s.DH == 1 &&
           s.DW == 1 && s.PW == 1 && s.PH <= 1 && s.W % 2 == 0 && s.OW == s.W / 2 && s.OW >= VW;
}

void split_columns(int64_t rows, int64_t W, const float* x, float* out) {
    for (int64_t r = 0; r < rows; r++) deinterleave(x + r * W, out + r * W, out + r * W + W / 2, 0, W / 2);
}

// Rows above or below the image read `zeros` (at least W floats), so the vector loop has no branch: with
// a branch per tap and per vector the loop ran at about 21 cycles per output vector, decoding bound.
static void dw_s2_split_channel(const ConvShape& s, const float* x, const float* w, float bias, float* y, Act act,
                                const float* zeros) {
#if GPRT_VW > 1
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    const int64_t half = s.W / 2, full = s.OW / VW * VW;
    vf wv[9];
    for (int i = 0; i < 9; i++) wv[i] = vbcast(w[i]);
    const vf vb = vbcast(bias);
    for (int64_t oh = 0; oh < s.OH; oh++) {
        const float* e[3];
        for (int kh = 0; kh < 3; kh++) {
            const int64_t ih = oh * 2 - s.PH + kh;
            e[kh] = ih >= 0 && ih < s.H ? x + ih * s.W : zeros;
        }
        float* yr = y + oh * s.OW;
        // taps of output vector ow: even[ow], odd[ow], odd[ow - 1] of each row (the first vector's left tap:
        // its odd vector shifted a lane, 0 in); n < VW: the row's last few columns
        auto out = [&](int64_t ow, auto load, bool first) {
            vf a0 = vb, a1 = vf{}, a2 = vf{};
            GPRT_UNROLL
            for (int kh = 0; kh < 3; kh++) {
                vf o = load(e[kh] + half + ow);
                vf l = first ? __builtin_shufflevector(vf{}, o, GPRT_SHIFT1) : load(e[kh] + half + ow - 1);
                a0 += wv[kh * 3] * l;
                a1 += wv[kh * 3 + 1] * load(e[kh] + ow);
                a2 += wv[kh * 3 + 2] * o;
            }
            vf r = a0 + a1 + a2;
            return clamp ? vclamp(r, act.lo, act.hi) : r;
        };
        auto whole = [](const float* p) { return vload(p); };
        vstore(yr, out(0, whole, true));  // OW >= VW (dw_split_columns)
        for (int64_t ow = VW; ow < full; ow += VW) vstore(yr + ow, out(ow, whole, false));
        if (full < s.OW) {
            const int64_t n = s.OW - full;
            vstore_part(yr + full, out(full, [n](const float* p) { return vload_part(p, n); }, false), n);
        }
    }
#else
    (void)s, (void)x, (void)w, (void)bias, (void)y, (void)act, (void)zeros;
#endif
}

size_t dw_s2_split_workspace(const ConvShape& s) { return (size_t)(s.W + VW) * sizeof(float); }

void dw_s2_split(Pool* pool, float* ws, const ConvShape& s, const float* x, const float* w, const float* b, float* y,
                 Act act) {
    const int64_t HW = s.H * s.W, P = s.OH * s.OW;
    std::fill(ws, ws + s.W + VW, 0.f);  // the rows above and below the image
    parallel_for(pool, s.N * s.C, [&](int64_t b0, int64_t e0, int) {
        for (int64_t nc = b0; nc < e0; nc++) {
            const int64_t c = nc % s.C;
            dw_s2_split_channel(s, x + nc * HW, w + c * 9, b ? b[c] : 0.f, y + nc * P, act, ws);
        }
    });
}

// ---- stride 1, 3x3, 'same' width: read in place, no plane (rows of one vector or less below) ----
// Two (or four) output rows at a time from the (up to) four (six) input rows they share, rows outside the
// image skipped (any top padding: the fused chains' bands have none but the first).
// Output vector ow reads its input row at ow - 1, ow and ow + 1: plain loads inside the row; the left
// tap of the first vector is the row's first vector shifted a lane right (0 in), the right tap of the
// last vector the last one shifted a lane left (0 in). The last vector ends at the row's end,
// overlapping the one before when W is not a whole number of vectors (same values stored twice), so no
// read leaves the row. Replaces the copy of every channel into a zero-padded plane, and on AVX-512 the
// flat kernel below on rows of one to two vectors (96 x 28 x 28: 24 -> 19 us); with 4-wide vectors
// such rows stay flat (in place there, the pruned MobileNetV2 in wasm took 4.7 ms against 4.35).
static bool dw_s1_direct(const ConvShape& s) {
    return VW > 1 && s.KH == 3 && s.KW == 3 && s.SH == 1 && s.SW == 1 && s.DH == 1 && s.DW == 1 && s.PW == 1 &&
           s.OW == s.W && (VW == 16 ? s.W > VW / 2 : s.W >= 2 * VW);
}

template <int RO>
static inline void dw_s1_rows(const ConvShape& s, const float* x, const vf* wv, float bias, float* y, int64_t oh,
                              Act act, bool clamp) {
#if GPRT_VW > 1
    const float* rows[RO + 2];
    bool valid[RO + 2];
    GPRT_UNROLL
    for (int kh = 0; kh < RO + 2; kh++) {
        int64_t ih = oh - s.PH + kh;
        valid[kh] = ih >= 0 && ih < s.H;
        rows[kh] = x + (valid[kh] ? ih : 0) * s.W;
    }
    auto one = [&](int64_t ow, int edge) {  // edge: 0 the row's first vector, 1 inside, 2 its last
        vf acc[RO][3];
        GPRT_UNROLL
        for (int r = 0; r < RO; r++) {
            acc[r][0] = vbcast(bias);
            acc[r][1] = acc[r][2] = vf{};
        }
        GPRT_UNROLL
        for (int kh = 0; kh < RO + 2; kh++) {
            if (!valid[kh]) continue;
            const float* p = rows[kh] + ow;
            vf c = vload(p);
            vf l = edge == 0 ? __builtin_shufflevector(vf{}, c, GPRT_SHIFT1) : vload(p - 1);
            vf rt = edge == 2 ? __builtin_shufflevector(c, vf{}, GPRT_NEXT1) : vload(p + 1);
            GPRT_UNROLL
            for (int r = 0; r < RO; r++) {
                const int k = kh - r;
                if (k < 0 || k > 2) continue;
                acc[r][0] += wv[k * 3] * l;
                acc[r][1] += wv[k * 3 + 1] * c;
                acc[r][2] += wv[k * 3 + 2] * rt;
            }
        }
        GPRT_UNROLL
        for (int r = 0; r < RO; r++) {
            vf a = acc[r][0] + acc[r][1] + acc[r][2];
            vstore(y + (oh + r) * s.W + ow, clamp ? vclamp(a, act.lo, act.hi) : a);
        }
    };
    one(0, 0);
    int64_t ow = VW;
    for (; ow + VW < s.W; ow += VW) one(ow, 1);
    one(s.W - VW, 2);
#else
    (void)s, (void)x, (void)wv, (void)bias, (void)y, (void)oh, (void)act, (void)clamp;
#endif
}

// Rows narrower than a vector (14 x 14 on AVX-512): each row is one vector, read and written with lane
// masks (nothing past the row), and the left and right taps are that vector shifted a lane with zeros
// in: no unaligned tap loads, which the flat kernel split across cache lines (192 x 14 x 14: 15-18 ->
// 10 us). Three input rows roll down the channel. Rows of 8 or less stay flat: 480 x 7 x 7 took 24 us
// this way against 19.
static void dw_s1_narrow_channel(const ConvShape& s, const float* x, const float* w, float bias, float* y, Act act,
                                 int64_t oh0, int64_t oh1) {
#if GPRT_VW > 1
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    vf wv[9];
    for (int i = 0; i < 9; i++) wv[i] = vbcast(w[i]);
    struct Taps {
        vf l, c, r;
    };
    auto row = [&](int64_t ih) {
        if (ih < 0 || ih >= s.H) return Taps{vf{}, vf{}, vf{}};
        vf c = vload_part(x + ih * s.W, s.W);
        return Taps{__builtin_shufflevector(vf{}, c, GPRT_SHIFT1), c, __builtin_shufflevector(c, vf{}, GPRT_NEXT1)};
    };
    Taps a = row(oh0 - s.PH), b = row(oh0 - s.PH + 1);
    const vf vb = vbcast(bias);
    for (int64_t oh = oh0; oh < oh1; oh++) {
        Taps c = row(oh - s.PH + 2);
        vf out = (vb + wv[0] * a.l + wv[1] * a.c + wv[2] * a.r) + (wv[3] * b.l + wv[4] * b.c + wv[5] * b.r) +
                 (wv[6] * c.l + wv[7] * c.c + wv[8] * c.r);
        vstore_part(y + oh * s.W, clamp ? vclamp(out, act.lo, act.hi) : out, s.W);
        a = b;
        b = c;
    }
#else
    (void)s, (void)x, (void)w, (void)bias, (void)y, (void)act, (void)oh0, (void)oh1;
#endif
}

static void dw_s1_direct_channel(const ConvShape& s, const float* x, const float* w, float bias, float* y, Act act,
                                 int64_t oh0, int64_t oh1) {
    if (s.W <= VW) return dw_s1_narrow_channel(s, x, w, bias, y, act, oh0, oh1);
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    vf wv[9];
    for (int i = 0; i < 9; i++) wv[i] = vbcast(w[i]);
    int64_t oh = oh0;
#if GPRT_VW == 16 || defined(__aarch64__)
    // 32 vector registers: four rows (12 accumulators) from six input rows, 4.5 loads per output vector
    // instead of 6 (16 x 112 x 112: 45 -> 41 us; six rows were no faster)
    for (; oh + 4 <= oh1; oh += 4) dw_s1_rows<4>(s, x, wv, bias, y, oh, act, clamp);
#endif
    for (; oh + 2 <= oh1; oh += 2) dw_s1_rows<2>(s, x, wv, bias, y, oh, act, clamp);
    if (oh < oh1) dw_s1_rows<1>(s, x, wv, bias, y, oh, act, clamp);
}

// The kernels that read a channel in place and can compute any band of its rows.
static bool dw_direct(const ConvShape& s) { return dw_s2_direct(s) || dw_s1_direct(s); }
static void dw_direct_rows(const ConvShape& s, const float* x, const float* w, float bias, float* y, Act act,
                           int64_t oh0, int64_t oh1) {
    if (dw_s2_direct(s))
        dw_s2_direct_channel(s, x, w, bias, y, act, oh0, oh1);
    else
        dw_s1_direct_channel(s, x, w, bias, y, act, oh0, oh1);
}

static void depthwise_channel(const ConvShape& s, const DwPlan& d, const float* x, const float* w, float bias,
                              float* y, Act act, float* plane, float* grid) {
    if (dw_direct(s)) return dw_direct_rows(s, x, w, bias, y, act, 0, s.OH);
    if (dw_rowwise(s)) {
        if (s.SW == 2)
            fill_split(s, d, x, plane, plane + d.Hp * (d.Wp / 2));  // (and the slack the last vectors read)
        else
            fill_plane(s, d, x, plane);
        if (s.SW == 1)
            s.KH == 3 ? dw_rowwise_channel<3, 1>(s, d, plane, w, bias, y, act)
                      : dw_rowwise_channel<5, 1>(s, d, plane, w, bias, y, act);
        else
            s.KH == 3 ? dw_rowwise_channel<3, 2>(s, d, plane, w, bias, y, act)
                      : dw_rowwise_channel<5, 2>(s, d, plane, w, bias, y, act);
        return;
    }
    fill_plane(s, d, x, plane);
    if (s.SW == 2) {
        if (s.KH == 3 && s.KW == 3)
            dw_rows_s2<3, 3>(s, d, plane, w, bias, y, act, grid);
        else if (s.KH == 5 && s.KW == 5)
            dw_rows_s2<5, 5>(s, d, plane, w, bias, y, act, grid);
        else
            dw_rows_s2<0, 0>(s, d, plane, w, bias, y, act, grid);
        return;
    }
    if (s.KH == 3 && s.KW == 3 && s.SW == 1)
        dw_grid<3, 3, 1>(s, d, plane, w, bias, grid);
    else if (s.KH == 5 && s.KW == 5 && s.SW == 1)
        dw_grid<5, 5, 1>(s, d, plane, w, bias, grid);
    else
        dw_grid<0, 0, 0>(s, d, plane, w, bias, grid);
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    for (int64_t oh = 0; oh < s.OH; oh++) {
        const float* g = grid + oh * d.Gw;
        float* yr = y + oh * s.OW;
        if (clamp)
            for (int64_t ow = 0; ow < s.OW; ow++) yr[ow] = std::min(std::max(g[ow], act.lo), act.hi);
        else
            std::memcpy(yr, g, sizeof(float) * s.OW);
    }
}

// ---- small images (7x7): VW channels at a time as the vector dimension ----
// A row of a few pixels fills one vector poorly and the per-channel setup dominates, so a block of VW
// channels is transposed into a zero-padded [Hp][Wp][VW] tile, each output pixel is KH*KW FMAs with
// the taps' weights as per-channel vectors, and the result is transposed back.
struct DwTile {
    int64_t Hp, Wp;
};
static DwTile dw_tile(const ConvShape& s) {
    return {std::max(s.H + s.PH, (s.OH - 1) * s.SH + (s.KH - 1) * s.DH + 1),
            std::max(s.W + s.PW, (s.OW - 1) * s.SW + (s.KW - 1) * s.DW + 1)};
}
static bool dw_channels_last(const ConvShape& s) {
    // measured: 1.7x the flat grid on 7x7 planes, even on 14x14, slower on 28x28 (the scalar transposes)
    return VW > 1 && s.OH * s.OW <= 64 && s.C >= VW && s.KH * s.KW <= 25;
}
static size_t dw_tile_floats(const ConvShape& s) {
    DwTile t = dw_tile(s);
    return (size_t)((t.Hp * t.Wp + s.OH * s.OW) * VW);
}

static void dw_block_channels_last(const ConvShape& s, const DwTile& t, const float* x, const float* w,
                                   const float* b, float* y, Act act, float* tile) {
    const int64_t HW = s.H * s.W, P = s.OH * s.OW, KK = s.KH * s.KW;
    float* out = tile + t.Hp * t.Wp * VW;
    std::fill(tile, tile + t.Hp * t.Wp * VW, 0.f);
    // VW pixels of the VW channels at a time through a register transpose, the last few one by one;
    // pixel p = h * W + w goes to the tile at (h + PH, w + PW)
    int64_t p = 0, h = 0, w0 = 0;
    auto next = [&]() {
        if (++w0 == s.W) w0 = 0, h++;
    };
    for (; p + VW <= HW; p += VW) {
        vf r[VW];
        for (int c = 0; c < VW; c++) r[c] = vload(x + c * HW + p);
        vtranspose(r);
        for (int i = 0; i < VW; i++, next()) vstore(tile + ((h + s.PH) * t.Wp + w0 + s.PW) * VW, r[i]);
    }
    for (; p < HW; p++, next())
        for (int c = 0; c < VW; c++) tile[((h + s.PH) * t.Wp + w0 + s.PW) * VW + c] = x[c * HW + p];
    vf wv[25];
    float lane[VW];
    for (int64_t k = 0; k < KK; k++) {
        for (int c = 0; c < VW; c++) lane[c] = w[c * KK + k];
        wv[k] = vload(lane);
    }
    for (int c = 0; c < VW; c++) lane[c] = b ? b[c] : 0.f;
    const vf bias = vload(lane);
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    for (int64_t oh = 0; oh < s.OH; oh++)
        for (int64_t ow = 0; ow < s.OW; ow++) {
            vf acc = bias;
            for (int64_t kh = 0; kh < s.KH; kh++) {
                const float* r = tile + ((oh * s.SH + kh * s.DH) * t.Wp + ow * s.SW) * VW;
                for (int64_t kw = 0; kw < s.KW; kw++) acc += wv[kh * s.KW + kw] * vload(r + kw * s.DW * VW);
            }
            vstore(out + (oh * s.OW + ow) * VW, clamp ? vclamp(acc, act.lo, act.hi) : acc);
        }
    int64_t q = 0;
    for (; q + VW <= P; q += VW) {
        vf r[VW];
        for (int i = 0; i < VW; i++) r[i] = vload(out + (q + i) * VW);
        vtranspose(r);
        for (int c = 0; c < VW; c++) vstore(y + c * P + q, r[c]);
    }
    for (; q < P; q++)
        for (int c = 0; c < VW; c++) y[c * P + q] = out[q * VW + c];
}

// ---- a few input channels (the stem: RGB, 3x3, stride 2) ----
// im2col would write KH*KW copies of the image and the GEMM would pack them again; instead every input
// channel is padded (or split into even and odd columns) once, as for depthwise, and each output vector
// accumulates C*KH*KW taps for OB output channels at once (one input load feeds OB FMAs).
static bool conv_few_channels(const ConvShape& s) {
    return s.G == 1 && s.C <= 4 && s.OC % 4 == 0 && s.KH == 3 && s.KW == 3 && s.DH == 1 && s.DW == 1 &&
           s.SH == s.SW && (s.SW == 1 || s.SW == 2) && s.OW >= 2 * VW && VW > 1;
}

// RGB, stride 2 with every odd column inside the row (2 OW <= W: each vector's reads stay in its row)
// and left padding 1: read in place (measured on the MobileNetV2 stem, 3 -> 16 on 224 x 224: the split of
// the input into even and odd columns took a quarter of the layer).
static bool conv_few_direct(const ConvShape& s) {
    return s.C == 3 && s.SW == 2 && s.SH == 2 && s.PW == 1 && s.PH <= 1 && 2 * s.OW <= s.W;
}

// NV output vectors along the row for 4 output channels from column ow of output row oh, clamped and
// stored: every tap loads NV input vectors and 4 weight broadcasts for 4 * NV FMAs (FMA-bound, not
// load-bound), and the 4 * NV accumulators are independent chains enough to hide the FMA latency.
// C_: the input channels when compile-time (3, RGB), 0 to take them from s.
// D (direct, stride 2): the taps read the input in place, as dw_s2_direct_channel does: two vectors of
// the row give the even and odd columns, the odd ones shifted a lane right the left tap, carrying in
// column 2ow-1 (0 at the left edge); rows above or below the image are skipped. `planes` is then the
// input itself.
template <int S, int NV, int C_, bool D>
static void conv_few_store(const ConvShape& s, const DwPlan& d, int64_t Wr, const float* planes, const float* wo,
                           const float* bo, int64_t oh, int64_t ow, float* yr, int64_t P, Act act, bool clamp) {
    constexpr int OB = 4;
    const int64_t C = C_ ? C_ : s.C;
    vf acc[OB][NV];
    GPRT_UNROLL
    for (int o = 0; o < OB; o++) {
        GPRT_UNROLL
        for (int n = 0; n < NV; n++) acc[o][n] = vbcast(bo ? bo[o] : 0.f);
    }
#if GPRT_VW > 1
    auto direct = [&](int64_t c) {
        const float* xc = planes + c * s.H * s.W;
        GPRT_UNROLL
        for (int kh = 0; kh < 3; kh++) {
            int64_t ih = oh * 2 - s.PH + kh;
            if (ih < 0 || ih >= s.H) continue;
            const float* r = xc + ih * s.W + 2 * ow;
            vf ev[NV], od[NV], lf[NV];
            GPRT_UNROLL
            for (int n = 0; n < NV; n++) {
                vf a = vload(r + 2 * n * VW), b = vload(r + 2 * n * VW + VW);
                ev[n] = __builtin_shufflevector(a, b, GPRT_EVEN);
                od[n] = __builtin_shufflevector(a, b, GPRT_ODD);
            }
            lf[0] = __builtin_shufflevector(vbcast(ow > 0 ? r[-1] : 0.f), od[0], GPRT_SHIFT1);
            GPRT_UNROLL
            for (int n = 1; n < NV; n++) lf[n] = __builtin_shufflevector(od[n - 1], od[n], GPRT_SHIFT1);
            GPRT_UNROLL
            for (int o = 0; o < OB; o++) {
                const float* wk = wo + (o * C + c) * 9 + kh * 3;
                vf w0 = vbcast(wk[0]), w1 = vbcast(wk[1]), w2 = vbcast(wk[2]);
                GPRT_UNROLL
                for (int n = 0; n < NV; n++) acc[o][n] += w0 * lf[n] + w1 * ev[n] + w2 * od[n];
            }
        }
    };
#endif
    auto channel = [&](int64_t c) {
#if GPRT_VW > 1
        if (D) return direct(c);
#endif
        const float* even = planes + c * d.plane;
        const float* odd = even + d.Hp * Wr;
        GPRT_UNROLL
        for (int kh = 0; kh < 3; kh++) {
            int64_t row = (oh * S + kh) * Wr + ow;
            GPRT_UNROLL
            for (int kw = 0; kw < 3; kw++) {
                const float* src = S == 1 ? even + row + kw : (kw % 2 ? odd : even) + row + kw / 2;
                vf v[NV];
                GPRT_UNROLL
                for (int n = 0; n < NV; n++) v[n] = vload(src + n * VW);
                GPRT_UNROLL
                for (int o = 0; o < OB; o++) {
                    vf wv = vbcast(wo[(o * C + c) * 9 + kh * 3 + kw]);
                    GPRT_UNROLL
                    for (int n = 0; n < NV; n++) acc[o][n] += wv * v[n];
                }
            }
        }
    };
    if (C_) {
        GPRT_UNROLL
        for (int c = 0; c < C_; c++) channel(c);
    } else {
        for (int64_t c = 0; c < C; c++) channel(c);  // not unrolled: a runtime count would multiply the code
    }
    GPRT_UNROLL
    for (int o = 0; o < OB; o++) {
        GPRT_UNROLL
        for (int n = 0; n < NV; n++)
            vstore(yr + o * P + ow + n * VW, clamp ? vclamp(acc[o][n], act.lo, act.hi) : acc[o][n]);
    }
}

// Chunks of NV vectors along each output row; the last chunk ends at the row's end, overlapping the one
// before (its columns computed twice, to the same values), so no single-vector chains and no partial
// stores. The row is at least NV vectors wide (conv_few_channels asks 2).
template <int S, int NV, int C_, bool D>
static void conv_few_rows(const ConvShape& s, const DwPlan& d, const float* planes, const float* w, const float* b,
                          float* y, Act act, int64_t oh0, int64_t oh1) {
    const bool clamp = act.lo != -kInf || act.hi != kInf;
    const int64_t Wr = dw_row_width(s, d), P = s.OH * s.OW, chunk = NV * VW;
    for (int64_t oh = oh0; oh < oh1; oh++)
        for (int64_t o0 = 0; o0 < s.OC; o0 += 4) {  // every output channel from the same (L1) input rows
            float* yr = y + o0 * P + oh * s.OW;
            const float* wo = w + o0 * s.C * 9;
            const float* bo = b ? b + o0 : nullptr;
            int64_t ow = 0;
            for (; ow + chunk <= s.OW; ow += chunk)
                conv_few_store<S, NV, C_, D>(s, d, Wr, planes, wo, bo, oh, ow, yr, P, act, clamp);
            // the rest: in as few vectors as cover it, the last chunk ending at the row's end
            const int64_t rest = s.OW - ow;
            if (rest == 0) continue;
            if constexpr (NV == 4 && C_ == 3 && D) {  // (the RGB stem only: every variant is runtime code)
                if (rest <= 2 * VW) {
                    conv_few_store<S, 2, C_, D>(s, d, Wr, planes, wo, bo, oh, s.OW - 2 * VW, yr, P, act, clamp);
                    continue;
                }
                if (rest <= 3 * VW) {
                    conv_few_store<S, 3, C_, D>(s, d, Wr, planes, wo, bo, oh, s.OW - 3 * VW, yr, P, act, clamp);
                    continue;
                }
            }
            conv_few_store<S, NV, C_, D>(s, d, Wr, planes, wo, bo, oh, s.OW - chunk, yr, P, act, clamp);
        }
}

template <int S, bool D>
static void conv_few(Pool* pool, const ConvShape& s, const DwPlan& d, const float* planes, const float* w,
                     const float* b, float* y, Act act) {
    // 32 vector registers (AVX-512, NEON) hold 4 x 4 accumulators, 16 (AVX2, wasm) 4 x 2
#if GPRT_VW == 16 || defined(__aarch64__)
    const bool wide = s.OW >= 4 * VW;
#else
    const bool wide = false;
#endif
    parallel_for(pool, s.OH, [&](int64_t b0, int64_t e0, int) {
        if constexpr (D) {  // RGB only (conv_few_direct)
            if (wide)
                conv_few_rows<S, 4, 3, D>(s, d, planes, w, b, y, act, b0, e0);
            else
                conv_few_rows<S, 2, 3, D>(s, d, planes, w, b, y, act, b0, e0);
            return;
        }
        if (wide && s.C == 3)
            conv_few_rows<S, 4, 3, D>(s, d, planes, w, b, y, act, b0, e0);
        else if (wide)
            conv_few_rows<S, 4, 0, D>(s, d, planes, w, b, y, act, b0, e0);
        else if (s.C == 3)
            conv_few_rows<S, 2, 3, D>(s, d, planes, w, b, y, act, b0, e0);
        else
            conv_few_rows<S, 2, 0, D>(s, d, planes, w, b, y, act, b0, e0);
    });
}

size_t conv_workspace(const ConvShape& s, int threads) {
    int64_t P = s.OH * s.OW, Cg = s.C / s.G, OCg = s.OC / s.G;
    if (is_depthwise(s)) {
        if (dw_flat(s)) return dw_flat_floats(s, threads) * sizeof(float);
        DwPlan d = dw_plan(s);
        size_t per = (size_t)(d.plane + d.grid + 32);
        if (dw_channels_last(s)) per = std::max(per, dw_tile_floats(s));
        return (size_t)threads * per * sizeof(float);
    }
    if (conv_few_channels(s)) return (size_t)(s.C * dw_plan(s).plane + 16) * sizeof(float);
    return gemm_workspace(OCg, P, Cg * s.KH * s.KW, threads);
}

void conv2d(Pool* pool, float* ws, const ConvShape& s, const float* x, const float* w, const float* b, float* y,
            Act act) {
    int64_t P = s.OH * s.OW, Cg = s.C / s.G, OCg = s.OC / s.G, Kg = Cg * s.KH * s.KW;
    if (is_depthwise(s)) {
        if (dw_flat(s)) return dw_flat_run(pool, s, x, w, b, y, act, ws);
        const int workers = pool_size(pool);
        if (dw_direct(s) && split_in_bands(s.H * s.W, workers) && s.OH >= 4 * workers) {
            // each worker takes a band of rows of every channel (see split_in_bands)
            parallel_for(pool, workers, [&](int64_t b0, int64_t e0, int) {
                for (int64_t part = b0; part < e0; part++) {
                    int64_t oh0 = s.OH * part / workers, oh1 = s.OH * (part + 1) / workers;
                    for (int64_t nc = 0; nc < s.N * s.C; nc++) {
                        int64_t c = nc % s.C;
                        dw_direct_rows(s, x + nc * s.H * s.W, w + c * 9, b ? b[c] : 0.f, y + nc * P, act, oh0, oh1);
                    }
                }
            });
            return;
        }
        DwPlan d = dw_plan(s);
        int64_t per = d.plane + d.grid + 32;
        int64_t blocks = 0;  // channel blocks of VW done channels-last; the leftover channels one at a time
        if (dw_channels_last(s)) {
            per = std::max(per, (int64_t)dw_tile_floats(s));
            blocks = s.C / VW;
            DwTile t = dw_tile(s);
            parallel_for(pool, s.N * blocks, [&](int64_t b0, int64_t e0, int worker) {
                for (int64_t nb = b0; nb < e0; nb++) {
                    int64_t c = nb % blocks * VW, off = (nb / blocks * s.C + c);
                    dw_block_channels_last(s, t, x + off * s.H * s.W, w + c * s.KH * s.KW, b ? b + c : nullptr,
                                           y + off * P, act, ws + worker * per);
                }
            });
        }
        const int64_t rest = s.C - blocks * VW;
        parallel_for(pool, s.N * rest, [&](int64_t b0, int64_t e0, int worker) {
            float* plane = ws + worker * per;
            for (int64_t i = b0; i < e0; i++) {
                int64_t c = blocks * VW + i % rest, nc = i / rest * s.C + c;
                depthwise_channel(s, d, x + nc * s.H * s.W, w + c * s.KH * s.KW, b ? b[c] : 0.f, y + nc * P, act,
                                  plane, plane + d.plane + 16);
            }
        });
        return;
    }
    if (conv_few_channels(s)) {
        DwPlan d = dw_plan(s);
        for (int64_t n = 0; n < s.N; n++) {
            const float* xn = x + n * s.C * s.H * s.W;
            float* yn = y + n * s.OC * P;
            if (conv_few_direct(s)) {
                conv_few<2, true>(pool, s, d, xn, w, b, yn, act);
                continue;
            }
            for (int64_t c = 0; c < s.C; c++) {
                float* plane = ws + c * d.plane;
                if (s.SW == 2)
                    fill_split(s, d, xn + c * s.H * s.W, plane, plane + d.Hp * (d.Wp / 2));
                else
                    fill_plane(s, d, xn + c * s.H * s.W, plane);
            }
            s.SW == 2 ? conv_few<2, false>(pool, s, d, ws, w, b, yn, act) : conv_few<1, false>(pool, s, d, ws, w, b, yn, act);
        }
        return;
    }
    const bool pw = is_pointwise(s);
    for (int64_t n = 0; n < s.N; n++)
        for (int64_t g = 0; g < s.G; g++) {
            const float* xg = x + (n * s.C + g * Cg) * s.H * s.W;
            float* yg = y + (n * s.OC + g * OCg) * P;
            const float* wg = w + g * OCg * Kg;
            const float* bg = b ? b + g * OCg : nullptr;
            if (pw)
                gemm_packed(pool, ws, OCg, P, Kg, wg, Kg, PackMatrix{xg, P}, yg, P, bg, b ? kBiasRow : kNoBias, act);
            else
                gemm_packed(pool, ws, OCg, P, Kg, wg, Kg, PackIm2col{&s, xg}, yg, P, bg, b ? kBiasRow : kNoBias, act);
        }
}

void conv_transpose2d(const ConvShape& s, const float* x, const float* w, const float* b, float* y) {
    int64_t Cg = s.C / s.G, OCg = s.OC / s.G, P = s.OH * s.OW;
    for (int64_t n = 0; n < s.N; n++)
        for (int64_t oc = 0; oc < s.OC; oc++) std::fill(y + (n * s.OC + oc) * P, y + (n * s.OC + oc + 1) * P, b ? b[oc] : 0.f);
    for (int64_t n = 0; n < s.N; n++)
        for (int64_t ic = 0; ic < s.C; ic++) {
            int64_t g = ic / Cg;
            const float* xc = x + (n * s.C + ic) * s.H * s.W;
            for (int64_t oc = 0; oc < OCg; oc++) {
                const float* wk = w + (ic * OCg + oc) * s.KH * s.KW;
                float* yc = y + (n * s.OC + g * OCg + oc) * P;
                for (int64_t ih = 0; ih < s.H; ih++)
                    for (int64_t kh = 0; kh < s.KH; kh++) {
                        int64_t oh = ih * s.SH - s.PH + kh * s.DH;
                        if (oh < 0 || oh >= s.OH) continue;
                        for (int64_t iw = 0; iw < s.W; iw++) {
                            float xv = xc[ih * s.W + iw];
                            for (int64_t kw = 0; kw < s.KW; kw++) {
                                int64_t ow = iw * s.SW - s.PW + kw * s.DW;
                                if (ow >= 0 && ow < s.OW) yc[oh * s.OW + ow] += xv * wk[kh * s.KW + kw];
                            }
                        }
                    }
            }
        }
}

// ---- batched matmul ----

size_t matmul_workspace(int64_t M, int64_t N, int64_t K, int threads) { return gemm_workspace(M, N, K, threads); }

void matmul(Pool* pool, float* ws, int nbatch_dims, const int64_t* batch_shape, const int64_t* a_strides,
            const int64_t* b_strides, int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
    int64_t total = 1;
    for (int d = 0; d < nbatch_dims; d++) total *= batch_shape[d];
    for (int64_t t = 0; t < total; t++) {
        int64_t rem = t, ao = 0, bo = 0;
        for (int d = nbatch_dims - 1; d >= 0; d--) {
            int64_t i = rem % batch_shape[d];
            rem /= batch_shape[d];
            ao += i * a_strides[d];
            bo += i * b_strides[d];
        }
        gemm(pool, ws, M, N, K, A + ao, K, B + bo, N, C + t * M * N, N, nullptr, kNoBias, kNoAct);
    }
}

}  // namespace gprt
